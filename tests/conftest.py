"""Shared fixtures: the real media that registries ship (never made by us)."""

from __future__ import annotations

from pathlib import Path

import pytest

from multi2cap.assets import AssetNotFoundError, bigbuckbunny_path, tuxpaint_stamps_dir


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
