#!/usr/bin/env bash
# The 350m recipe: full-rank AdamW, Grass and the GaLore baseline, one after the other (OPTIMIZERS="grass" for one).
# See scripts/run_llama.sh for the recipe and the environment variables.
set -euo pipefail
cd "$(dirname "$0")/.."
for opt in ${OPTIMIZERS:-adamw grass galore}; do scripts/run_llama.sh 350m $opt; done
python3 dev/plot_logs.py out/350m_*/log.txt -o out/350m_loss.png
