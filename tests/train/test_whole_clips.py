"""Fine-tuning trains on what it evaluates: the Clotho and AudioCaps recipes feed whole clips
(Clotho 15-30 s, AudioCaps 10 s), and a batch carries no padding past its longest clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from multi2cap.data.manifest import ManifestRecord
from multi2cap.recipes import RECIPES_DIR
from multi2cap.train import load_train_config
from multi2cap.train.batches import collate, train_dataset

CONFIGS = RECIPES_DIR
RATE = 16_000


def _clip(folder: Path, name: str, seconds: float) -> ManifestRecord:
    """A tone of `seconds` written as FLAC, with its duration in the record (as readers do)."""
    t = np.arange(round(seconds * RATE)) / RATE
    path = folder / f"{name}.flac"
    soundfile.write(path, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)
    return ManifestRecord(
        id=name,
        dataset="test",
        split="train",
        audio=str(path),
        captions=["a tone"],
        duration_s=seconds,
    )


@pytest.mark.parametrize(
    ("recipe", "durations"),
    [
        ("finetune_clotho.yaml", (15.0, 22.5, 30.0)),
        ("finetune_clotho_whisper.yaml", (15.0, 22.5, 30.0)),
        ("finetune_audiocaps.yaml", (7.0, 10.0)),
    ],
)
def test_fine_tuning_recipes_train_on_whole_clips(
    recipe: str, durations: tuple[float, ...], tmp_path: Path
) -> None:
    config = load_train_config(CONFIGS / recipe, ["data.num_workers=0", "augment.enabled=false"])
    records = [_clip(tmp_path, f"c{i}", s) for i, s in enumerate(durations)]
    dataset = train_dataset(config, records, model=None)
    items = [dataset[i] for i in range(len(records))]
    for item, seconds in zip(items, durations, strict=True):
        assert item["length"] == round(seconds * RATE)  # not a crop
    batch = collate(items[:-1])  # without the longest clip
    assert batch["audio"].shape[1] == max(batch["audio_lengths"].tolist())
    assert batch["audio"].shape[1] == round(durations[-2] * RATE) < dataset.dataset.clip_samples
