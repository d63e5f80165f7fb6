#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds Attune and fine-tunes a BERT
# classifier on the bundled fine-food reviews, then prints the evaluation
# table and where the model and reports are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
export OMP_WAIT_POLICY=PASSIVE
build/bin/attune-worker train --spec examples/fine_foods.yaml --noresume
