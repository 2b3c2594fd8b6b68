"""Fixtures for the serving tests: a saved tiny checkpoint, its model, real sounds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from multi2cap_testkit import tiny

from multi2cap.model.multi2cap import Multi2Cap


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return tiny().save_pretrained(tmp_path_factory.mktemp("serve") / "ckpt")


@pytest.fixture(scope="session")
def model(checkpoint: Path) -> Multi2Cap:
    return Multi2Cap.from_pretrained(checkpoint)


@pytest.fixture(scope="session")
def sounds(tuxpaint_dir: Path) -> list[Path]:
    """The six shortest real Tux Paint sounds (ogg), distinct files."""
    found = sorted(
        (p for p in tuxpaint_dir.rglob("*.ogg") if "_desc" not in p.name),
        key=lambda p: (p.stat().st_size, str(p)),
    )
    return found[:6]
