"""Fixtures for the model tests (helpers live in multi2cap_testkit)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_seeded() -> Iterator[None]:
    """One intra-op thread: tiny matmuls on a shared 2-core machine are many times slower with
    two threads competing with other processes; and a fixed seed for the random backbones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
