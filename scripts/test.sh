#!/usr/bin/env bash
# The test command of README.md: set up what is missing, lint, check the built wheel, then run the
# whole test suite (arguments go to pytest and skip the wheel check).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
# The whole run (no arguments, as CI calls it) also checks that the built wheel, installed into a
# fresh venv, works from outside the checkout; before pytest, so pytest's summary closes the run.
if [ $# -eq 0 ]; then
  bash scripts/check_wheel.sh
fi
# One pytest worker per core (pytest-xdist; the tests are independent and each sets torch to one
# thread): the suite took 765 s on one worker on the 2-core machine.
.venv/bin/python -m pytest -n auto "$@"
