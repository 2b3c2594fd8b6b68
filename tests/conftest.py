"""Shared fixtures: the real media that registries ship (never made by us)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from multi2cap.assets import AssetNotFoundError, bigbuckbunny_path, tuxpaint_stamps_dir

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


@pytest.fixture
def default_csv_limit() -> Iterator[None]:
    """The csv module's default field limit (131,072), whatever an earlier test raised the
    process-wide limit to; restored afterwards."""
    previous = csv.field_size_limit(131_072)
    yield
    csv.field_size_limit(previous)
