#!/usr/bin/env bash
# The main job of README.md: set up what is missing, then run the offline end-to-end demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/multi2cap demo "$@"
