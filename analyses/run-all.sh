#!/usr/bin/env bash
# Runs every analysis on the built-in default and gathers tables and figures into reports/.
# Usage: analyses/run-all.sh [extra flags passed to every command, e.g. --task shapes]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
bin=target/release/copra-lab
[ -x "$bin" ] || bin="${CARGO_TARGET_DIR:-target}/release/copra-lab"
cfg=analyses/default.toml
"$bin" connectivity --config "$cfg" --seeds 1,2 --out reports/connectivity "$@"
"$bin" shapley --config "$cfg" --samples 512 --out reports/shapley "$@"
for t in hue frequency; do
  "$bin" shapley --config "$cfg" --task "$t" --samples 512 --out reports/shapley "$@"
done
for cmd in federated multitask prune; do
  "$bin" "$cmd" --out "reports/$cmd" "$@"
done
# The estimator benchmark against shapiq needs shapiq from pip (see docs/shapley.md):
#   python analyses/synthetic_games.py /tmp/synth.parquet
#   python analyses/bench_shapiq.py --bin "$bin" --seeds 10 --out reports/shapley-bench \
#     lighting=reports/shapley/lighting/shapley_coalitions.parquet \
#     hue=reports/shapley/hue/shapley_coalitions.parquet \
#     frequency=reports/shapley/frequency/shapley_coalitions.parquet synthetic=/tmp/synth.parquet
# The multi-seed analyses (each writes reports/<name>/ with a README; see docs/analyses.md).
# On two cores, run two shards side by side: RAYON_NUM_THREADS=1 "$bin" analyze SPEC --shard 0/2 & ... --shard 1/2
for spec in claims oq1-multilinear oq1-learning-rate oq2-iterations oq3-heterogeneous; do
  "$bin" analyze "analyses/$spec.toml"
done
# The reruns with validated learning rates (long: claims-10 took 128 min on 2 cores; the others are
# estimated in their headers and have not been run yet).
for spec in claims-10 oq2-iterations-8000 oq3-clients-learn budget-8000; do
  "$bin" analyze "analyses/$spec.toml" --yes
done
# The real pretrained transformer (all-MiniLM-L6-v2 on text; fetch it first with analyses/fetch-assets.sh).
minilm="$HOME/.cache/copra-lab/assets/all-MiniLM-L6-v2"
if [ -d "$minilm" ]; then
  "$bin" --backbone "$minilm" analyze analyses/minilm.toml
  "$bin" --backbone "$minilm" analyze analyses/minilm-1000.toml --yes
  # Slow on two cores: unfinished after 53 min (one thread, 21 points) and 12 min (two threads, 5 and 3 points).
  "$bin" --backbone "$minilm" connectivity --config analyses/minilm-run.toml --seeds 1,2 --alphas 5 --layer-alphas 3 \
    --out reports/minilm-connectivity
  "$bin" --backbone "$minilm" shapley --config analyses/minilm-run.toml --estimators permutation,stratified-cv \
    --budget 32 --out reports/minilm-shapley
else
  echo "skipping the MiniLM analyses: run analyses/fetch-assets.sh first" >&2
fi
