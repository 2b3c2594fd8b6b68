"""Stable, hash-based assignment of clips to the test split and to shards.

Both depend only on the clip id (and a seed), never on the order or size of the clip set, so a
clip keeps its split when the dataset grows and every machine of a sharded run agrees on who does
what.
"""

from __future__ import annotations

import hashlib

TEST_FRACTION = 0.01
DEFAULT_SPLIT_SEED = 0


def unit_hash(text: str) -> float:
    """Map a string to a uniform number in [0, 1) (first 8 bytes of its sha256)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(
    clip_id: str, seed: int = DEFAULT_SPLIT_SEED, test_fraction: float = TEST_FRACTION
) -> str:
    """'test' for about `test_fraction` of ids (the paper's random 1 %), else 'train'."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    return "test" if unit_hash(f"split:{seed}:{clip_id}") < test_fraction else "train"


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `--shard i/N` (0 <= i < N) into (i, N)."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as err:
        raise ValueError(f"shard must look like i/N (e.g. 0/4), got {text!r}") from err
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need 0 <= i < N")
    return index, count


def in_shard(clip_id: str, shard: tuple[int, int]) -> bool:
    """Whether `clip_id` belongs to shard (i, N)."""
    index, count = shard
    return int(unit_hash(f"shard:{clip_id}") * count) == index
