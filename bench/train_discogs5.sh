#!/usr/bin/env bash
# Accuracy and wall time of the whole path on the 5,000 discogs5 covers, in a scratch folder:
# scrape → dataset build → train (head on cached embeddings) → a second, cached training run.
# Usage: bench/train_discogs5.sh [EPOCHS]   (from the repo root, after `make install`)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kit="$root/../shared"
epochs="${1:-10}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export SLEEVE_DATABASE_URL="sqlite:///$work/sleeve.db" SLEEVE_STORE_URL="file://$work/store"
export SLEEVE_DATA_DIR="$work/var" SLEEVE_LOG_LEVEL=WARNING TF_CPP_MIN_LOG_LEVEL=2
export SLEEVE_BASE_WEIGHTS="$kit/weights/mobilenet_v2_1.0_224_imagenet_no_top.h5"
sleeve="$root/.venv/bin/sleeve"
step() { local t0=$SECONDS; "$sleeve" "$@" 2> >(grep -v '^\[' >&2); echo "  ($((SECONDS - t0)) s: sleeve $1 $2)"; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
step db upgrade
step scrape --source folder --path "$kit/datasets/discogs5"
step dataset build --name discogs5
step train --dataset discogs5 --epochs "$epochs"
echo "second run, embeddings cached:"
step train --dataset discogs5 --epochs "$epochs" --seed 1
"$sleeve" models list
