#!/usr/bin/env bash
# Rebuilds the bundled datasets under examples/data/ from Debian packages.
# Not needed for building or testing: the CSVs are committed. Needs r-base-core.
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
