"""The torch Dataset over a manifest and its collate function (docs/design.md, `data`).

Each item is one manifest record: its waveform at 16 kHz mono, optionally its image, one target
caption and all references. Training and evaluation differ only where the paper's recipe needs
it:

| | training (`train=True`) | evaluation |
|---|---|---|
| audio | random crop of `clip_seconds` when longer (decoding only that window when the record's `duration_s` says it is longer), zero-padded to `clip_seconds` when shorter | whole clip |
| augment | `augment(wave (1, n), generator)` on the cropped (unpadded) part; a `LengthAwareTransform` (`RandomAugment`) also gives the valid length, so the zeros a time-stretch speed-up leaves count as padding | none |
| image | RandomResizedCrop -> `image_size` square (bicubic) | short side -> `image_size`, centre crop |
| caption | `epoch_unit` "clip": a random one of the references; "caption": the item's own | the first reference |

`epoch_unit` says what an item is in training: "clip" (one item per record, a caption drawn
for it each epoch) or "caption" (one item per (record, caption) pair, so an epoch trains on
every caption once: the rows the paper's Table 1 counts, 19,195 for Clotho's 3,839 development
clips). Evaluation items are always records.

Randomness comes from one generator per item seeded by `(seed, epoch, index)`, so a run is
reproducible whatever the number of DataLoader workers or the order they fetch items in; call
`set_epoch(epoch)` before iterating each epoch (with `persistent_workers=True` the workers keep
the epoch they were started with, so leave that off when the epoch matters).

Unreadable items (audio that fails to decode, an image that is missing or corrupt) must not stop
a training run: `__getitem__` logs a warning with the record's id and the reason and returns
None, and `collate_captions` drops the Nones. A batch in which every item was unreadable raises
`EmptyBatchError`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal, TypedDict

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from multi2cap.data.manifest import ManifestRecord
from multi2cap.media.audio import SAMPLE_RATE, load_audio
from multi2cap.media.augment import LengthAwareTransform
from multi2cap.media.errors import MediaError

logger = logging.getLogger(__name__)

# OpenAI CLIP's preprocessing statistics (RGB, on [0, 1] pixel values).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Augment = Callable[[Tensor, torch.Generator | None], Tensor]

#: What one training item is (see the module docstring): a (clip, caption) row or a clip.
EpochUnit = Literal["caption", "clip"]


class CaptionItem(TypedDict):
    """One dataset item. `audio` is float32 `(n,)`, valid for its first `length` samples."""

    id: str
    audio: Tensor
    length: int
    image: Tensor | None
    caption: str
    references: list[str]


class CaptionBatch(TypedDict):
    """A collated batch; `audio` is zero-padded past each row's `audio_lengths` (samples)."""

    ids: list[str]
    audio: Tensor
    audio_lengths: Tensor
    images: Tensor | None
    captions: list[str]
    references: list[list[str]]


class EmptyBatchError(RuntimeError):
    """Every item of a batch was unreadable."""


class CaptionDataset(Dataset[CaptionItem | None]):
    """Audio (+ image) and captions of manifest records, for training or evaluation.

    `clip_seconds` is the training crop length (ignored in evaluation); `image_size` the side of
    the square image in pixels; `crop_scale` the RandomResizedCrop area range (fraction of the
    image, torchvision's default); `sample_rate` in Hz.
    """

    def __init__(
        self,
        records: Sequence[ManifestRecord],
        train: bool,
        clip_seconds: float = 10.0,
        with_images: bool = False,
        image_size: int = 224,
        augment: Augment | None = None,
        seed: int = 0,
        sample_rate: int = SAMPLE_RATE,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        epoch_unit: EpochUnit = "clip",
    ) -> None:
        if clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (it seeds numpy's SeedSequence), got {seed}")
        if augment is not None and not train:
            raise ValueError("augment is for training only; pass augment=None with train=False")
        if epoch_unit == "caption" and not train:
            raise ValueError("epoch_unit 'caption' is for training; evaluation items are clips")
        if train:
            uncaptioned = [r.id for r in records if not r.captions]
            if uncaptioned:
                raise ValueError(
                    f"{len(uncaptioned)} record(s) have no caption to train on, e.g. "
                    f"{uncaptioned[:3]}"
                )
        if with_images:
            imageless = [r.id for r in records if r.image is None]
            if imageless:
                raise ValueError(
                    f"with_images=True but {len(imageless)} record(s) have no image, e.g. "
                    f"{imageless[:3]}"
                )
        self.records = list(records)
        self.train = train
        self.clip_seconds = clip_seconds
        self.clip_samples = round(clip_seconds * sample_rate)
        self.with_images = with_images
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.sample_rate = sample_rate
        self.crop_scale = crop_scale
        self.epoch_unit = epoch_unit
        # (record, caption) index pairs, one per item, with epoch_unit "caption"
        self._rows = (
            [(r, c) for r, record in enumerate(self.records) for c in range(len(record.captions))]
            if epoch_unit == "caption"
            else None
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops, captions and augmentations items draw."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._rows) if self._rows is not None else len(self.records)

    def record_index(self, index: int) -> int:
        """The record (clip) that item `index` comes from."""
        return self._rows[index][0] if self._rows is not None else index

    def __getitem__(self, index: int) -> CaptionItem | None:
        record = self.records[self.record_index(index)]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            wave = self._load_audio(record, rng)
            image = self._image(str(record.image), rng) if self.with_images else None
        except (MediaError, OSError) as err:
            logger.warning("skipping unreadable item %s: %s", record.id, err)
            return None
        if self.train:
            wave, length = self._training_audio(wave, rng)
            if self._rows is not None:
                caption = record.captions[self._rows[index][1]]
            else:
                caption = record.captions[int(rng.integers(len(record.captions)))]
        else:
            length = wave.shape[0]
            caption = record.captions[0] if record.captions else ""
        return CaptionItem(
            id=record.id,
            audio=wave,
            length=length,
            image=image,
            caption=caption,
            references=list(record.captions),
        )

    def _load_audio(self, record: ManifestRecord, rng: np.random.Generator) -> Tensor:
        """The waveform; in training, only a random `clip_seconds` window of it when the record
        states a longer duration (a WavCaps clip can last hours: decode seconds, not hours)."""
        if self.train and record.duration_s is not None and record.duration_s > self.clip_seconds:
            start_s = float(rng.uniform(0.0, record.duration_s - self.clip_seconds))
            wave = load_audio(
                record.audio, self.sample_rate, start_s=start_s, duration_s=self.clip_seconds
            )
        else:
            wave = load_audio(record.audio, self.sample_rate)
        return torch.from_numpy(wave)

    def _training_audio(self, wave: Tensor, rng: np.random.Generator) -> tuple[Tensor, int]:
        """Random crop to `clip_samples`, augment, then zero-pad; returns (wave, valid length)."""
        excess = wave.shape[0] - self.clip_samples
        if excess > 0:
            start = int(rng.integers(excess + 1))
            wave = wave[start : start + self.clip_samples]
        if self.augment is not None:
            generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
            if isinstance(self.augment, LengthAwareTransform):
                # Speeding up pads the row with zeros: those are not audio (see `length`).
                augmented, valid = self.augment.apply(wave[None, :], None, generator)
                wave = augmented[0, : int(valid[0])]
            else:
                wave = self.augment(wave[None, :], generator)[0]
            wave = wave[: self.clip_samples]
        length = wave.shape[0]
        padded = torch.zeros(self.clip_samples, dtype=torch.float32)
        padded[:length] = wave
        return padded, length

    def _image(self, path: str, rng: np.random.Generator) -> Tensor:
        with Image.open(path) as raw:
            picture = raw.convert("RGB")
        if self.train:
            box = random_resized_crop_box(picture.width, picture.height, rng, self.crop_scale)
        else:
            box = center_square_box(picture.width, picture.height)
        size = (self.image_size, self.image_size)
        return clip_normalize(picture.resize(size, Image.Resampling.BICUBIC, box=box))


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box `(left, top, right, bottom)` in pixels.

    A crop covering a uniform `scale` fraction of the area with a log-uniform aspect `ratio`,
    placed uniformly; after 10 rejected draws, the largest centred crop within `ratio`.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(width - w + 1))
            top = int(rng.integers(height - h + 1))
            return left, top, left + w, top + h
    aspect = width / height
    w, h = width, height
    if aspect < ratio[0]:
        h = round(width / ratio[0])
    elif aspect > ratio[1]:
        w = round(height * ratio[1])
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def center_square_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The centred square of side `min(width, height)`: resize-short-side + centre-crop in one."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def clip_normalize(picture: Image.Image) -> Tensor:
    """RGB image -> float32 `(3, H, W)` normalised with CLIP's mean and std."""
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (pixels - mean) / std


def collate_captions(items: Sequence[CaptionItem | None]) -> CaptionBatch:
    """Batch items, dropping the unreadable ones (None); zero-pads audio to the longest row."""
    valid = [item for item in items if item is not None]
    if not valid:
        raise EmptyBatchError(
            f"all {len(items)} item(s) of the batch were unreadable "
            "(their ids and reasons are in the warnings logged by CaptionDataset)"
        )
    lengths = torch.tensor([item["length"] for item in valid], dtype=torch.long)
    audio = torch.zeros(len(valid), max(item["audio"].shape[0] for item in valid))
    for row, item in enumerate(valid):
        audio[row, : item["audio"].shape[0]] = item["audio"]
    images = [item["image"] for item in valid]
    if all(image is None for image in images):
        stacked = None
    elif any(image is None for image in images):
        raise ValueError("a batch mixes items with and without images")
    else:
        stacked = torch.stack([image for image in images if image is not None])
    return CaptionBatch(
        ids=[item["id"] for item in valid],
        audio=audio,
        audio_lengths=lengths,
        images=stacked,
        captions=[item["caption"] for item in valid],
        references=[item["references"] for item in valid],
    )
