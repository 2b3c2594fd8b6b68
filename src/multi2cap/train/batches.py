"""Training data for the loop: the augmented dataset, unreadable-clip tracking, collation, the
step-ordered DataLoader and the silent stand-in batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from multi2cap.data.manifest import ManifestRecord
from multi2cap.train.config import TrainConfig
from multi2cap.train.signals import ignore_stop_signals


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_dataset(config: TrainConfig, records: list[ManifestRecord], model: Any) -> Any:
    """Training items (clips, or (clip, caption) rows: `data.epoch_unit`) with the recipe's
    augmentations; frames only when pre-training with grounding, at the loaded vision
    encoder's input size unless `data.image_size` says."""
    from multi2cap.data.dataset import CaptionDataset

    augment = None
    if config.augment.enabled:
        from multi2cap.media.augment import (
            AddWhiteNoise,
            PolarityFlip,
            RandomAugment,
            TimeShift,
            TimeStretch,
        )

        a = config.augment
        augment = RandomAugment(
            [
                AddWhiteNoise(snr_db=a.snr_db),
                TimeShift(max_fraction=a.shift_max_fraction),
                TimeStretch(factor=a.stretch_factor),
                PolarityFlip(),
            ],
            [a.p_white_noise, a.p_shift, a.p_stretch, a.p_flip],
        )
    with_images = config.stage == "pretrain" and model.vision is not None
    dataset = CaptionDataset(
        records,
        train=True,
        clip_seconds=config.data.clip_seconds,
        with_images=with_images,
        image_size=config.data.image_size or (model.vision.image_size if with_images else 224),
        augment=augment,
        seed=config.seed,
        epoch_unit=config.data.epoch_unit,
    )
    return SkipTracking(dataset)


class SkipTracking(torch.utils.data.Dataset):
    """Wraps `CaptionDataset` so that the ids of unreadable items (which it returns as None and
    logs with the reason) reach the training loop and `skipped.jsonl`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if item is not None:
            return item
        return Skipped(self.dataset.records[self.dataset.record_index(index)].id)


@dataclass
class Skipped:
    id: str


def collate(items: list[Any]) -> dict[str, Any]:
    """`collate_captions` over the readable items, plus the `skipped` ids; only `ids` (empty)
    and `skipped` when nothing was readable.

    The audio is cut to the longest clip of the batch: training items come padded to
    `data.clip_seconds`, which for whole-clip training (Clotho's 15-30 s, `clip_seconds: 30`)
    is the longest clip of the dataset, and a batch of shorter clips need not carry (nor the
    encoder run over) that padding. The masks come from `audio_lengths` either way."""
    from multi2cap.data.dataset import collate_captions

    skipped = [item.id for item in items if isinstance(item, Skipped)]
    valid = [item for item in items if not isinstance(item, Skipped)]
    if not valid:
        return {"ids": [], "skipped": skipped}
    batch = dict(collate_captions(valid))
    longest = int(batch["audio_lengths"].max())
    batch["audio"] = batch["audio"][:, :longest].contiguous()
    return {**batch, "skipped": skipped}


def step_loader(
    dataset: Any, batch_sampler: Any, config: TrainConfig, collate_fn: Any = collate
) -> DataLoader:
    # A private generator keeps DataLoader from drawing its worker seed from the global RNG,
    # which would otherwise shift dropout randomness between a run and its resumption.
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_fn,
        num_workers=config.data.num_workers,
        generator=torch.Generator().manual_seed(config.seed),
        persistent_workers=False,
        worker_init_fn=ignore_stop_signals,
    )


def stand_in(seconds: float, image_size: int | None = None) -> dict[str, Any]:
    """A one-clip batch of silence (and a black frame of `image_size` pixels): what a process
    with no readable clip runs so that the others are not left waiting; its result is unused."""
    samples = round(seconds * 16_000)
    batch = {
        "ids": [],
        "audio": torch.zeros(1, samples),
        "audio_lengths": torch.tensor([samples]),
        "captions": ["silence"],
        "references": [["silence"]],
    }
    if image_size is not None:
        batch["images"] = torch.zeros(1, 3, image_size, image_size)
    return batch
