#!/usr/bin/env bash
# What a user of the released package gets: build the sdist and the wheel, install the wheel (not
# editable) into a fresh venv, and from a folder outside the checkout run `multi2cap info`,
# `python -m multi2cap --help`, load a training recipe by name and run one `caption` with a tiny
# checkpoint. A package-data file
# missing from the wheel, or an import of something under tests/, fails here and never ships.
# Called by scripts/test.sh after the test suite; needs .venv from scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '\033[1;34m[wheel]\033[0m %s\n' "$*"; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

log "building sdist and wheel"
"$ROOT/.venv/bin/python" -m build --sdist --wheel --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log"; exit 1; }
WHEEL=$(ls "$WORK"/dist/multi2cap-*.whl)
ls "$WORK"/dist/multi2cap-*.tar.gz >/dev/null

log "installing $(basename "$WHEEL") into a fresh venv"
"${PYTHON:-python3}" -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check)
# torch first, as setup.sh does (the CPU wheel on disk), then the wheel and its dependencies.
"${PIP[@]}" "torch==2.13.0" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
"${PIP[@]}" "$WHEEL" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }

mkdir "$WORK/outside"
cd "$WORK/outside"
BIN="$WORK/venv/bin"
# The installed package, not the checkout's src/, must be what runs.
"$BIN/python" - "$ROOT" <<'PY'
import pathlib, sys
import multi2cap
where = pathlib.Path(multi2cap.__file__).resolve()
assert pathlib.Path(sys.argv[1]).resolve() not in where.parents, f"imported from the checkout: {where}"
print(f"multi2cap {multi2cap.__version__} from {where.parent}")
PY
log "multi2cap info"
"$BIN/multi2cap" info >"$WORK/info.txt"
grep -q "multi2cap" "$WORK/info.txt"
log "python -m multi2cap --help"
"$BIN/python" -m multi2cap --help >/dev/null
log "a training recipe by name, from the wheel (no checkout, no configs/ folder)"
"$BIN/python" - <<'PY'
from pathlib import Path

from multi2cap.recipes import RECIPES_DIR, recipe_names
from multi2cap.train import load_train_config

assert "site-packages" in str(RECIPES_DIR), RECIPES_DIR
assert {"pretrain_vggcaps", "finetune_clotho", "tiny_pretrain"} <= set(recipe_names())
config = load_train_config("pretrain_vggcaps")
assert (config.optim.lr, config.optim.batch_size) == (5e-5, 320)
# its relative paths are the project's (the current folder), not the installed package's
assert config.runtime.output_dir == str(Path.cwd() / "runs" / "pretrain_vggcaps")
print("recipes:", ", ".join(recipe_names()))
PY
"$BIN/multi2cap" train --help | grep -q "pretrain_vggcaps"
log "multi2cap caption with a tiny checkpoint"
"$BIN/python" - <<'PY'
import numpy as np
import soundfile as sf
from multi2cap.model import Multi2Cap, Multi2CapConfig

config = Multi2CapConfig.tiny(["a dog barks", "a bell rings"])
Multi2Cap(config).save_pretrained("ckpt")
t = np.arange(16000 * 2) / 16000
sf.write("tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
PY
HF_HUB_OFFLINE=1 "$BIN/multi2cap" caption tone.wav --checkpoint ckpt --out captions.csv >/dev/null
grep -q "tone.wav" captions.csv
log "the installed wheel works outside the checkout"
