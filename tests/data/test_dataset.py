"""CaptionDataset and collate_captions on real Tux Paint recordings and pictures."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import correlate
from torch.utils.data import DataLoader

from multi2cap.data.dataset import (
    CLIP_MEAN,
    CLIP_STD,
    CaptionDataset,
    EmptyBatchError,
    collate_captions,
    random_resized_crop_box,
)
from multi2cap.data.manifest import ManifestRecord
from multi2cap.data.readers import read_dataset
from multi2cap.media.audio import load_audio
from multi2cap.media.augment import PolarityFlip, RandomAugment, TimeStretch

SR = 16000


@pytest.fixture
def records(tux: dict[str, Path]) -> list[ManifestRecord]:
    """blackbird is 7.9 s long, crow 1.96 s, hen 1.45 s; five references each."""
    return [
        ManifestRecord(
            id=name,
            dataset="test",
            split="dev",
            audio=str(tux[name]),
            captions=[f"{name} reference {i}" for i in range(5)],
        )
        for name in ("blackbird", "crow", "hen")
    ]


def test_eval_items_are_whole_clips_with_first_reference(records):
    dataset = CaptionDataset(records, train=False)
    item = dataset[0]
    expected = load_audio(records[0].audio, SR)
    assert item["length"] == len(expected) == item["audio"].shape[0]
    assert len(expected) > 7.5 * SR
    np.testing.assert_array_equal(item["audio"].numpy(), expected)
    assert item["caption"] == "blackbird reference 0"
    assert item["references"] == records[0].captions
    assert item["image"] is None


def test_caption_epochs_train_every_caption_of_every_clip_once(records):
    # `data.epoch_unit: caption`: one item per (clip, caption) row, the rows the paper's
    # Table 1 counts; `clip` (CaptionDataset's default): one item per clip, a random caption.
    rows = CaptionDataset(records, train=True, clip_seconds=1.0, epoch_unit="caption")
    assert len(rows) == 15
    pairs = [(records[rows.record_index(i)].id, rows[i]["caption"]) for i in range(len(rows))]
    assert sorted(pairs) == sorted((r.id, c) for r in records for c in r.captions)
    clips = CaptionDataset(records, train=True, clip_seconds=1.0)
    assert len(clips) == 3 and clips.record_index(2) == 2
    with pytest.raises(ValueError, match="evaluation items are clips"):
        CaptionDataset(records, train=False, epoch_unit="caption")


def test_training_crops_long_clips_and_pads_short_ones(records):
    dataset = CaptionDataset(records, train=True, clip_seconds=2.0, seed=3)
    full = load_audio(records[0].audio, SR)
    item = dataset[0]
    assert item["audio"].shape == (2 * SR,) and item["length"] == 2 * SR
    crop = item["audio"].numpy()
    starts = [s for s in range(len(full) - 2 * SR + 1) if full[s] == crop[0]]
    assert any(np.array_equal(full[s : s + 2 * SR], crop) for s in starts)
    hen = dataset[2]
    n_hen = len(load_audio(records[2].audio, SR))
    assert hen["length"] == n_hen < 2 * SR
    assert hen["audio"].shape == (2 * SR,)
    assert torch.count_nonzero(hen["audio"][n_hen:]) == 0
    assert torch.count_nonzero(hen["audio"][:n_hen]) > n_hen // 2


def test_training_decodes_only_a_window_when_the_duration_is_known(records):
    full = load_audio(records[0].audio, SR)
    timed = replace(records[0], duration_s=len(full) / SR)
    dataset = CaptionDataset([timed], train=True, clip_seconds=2.0)
    starts = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        item = dataset[0]
        assert item["audio"].shape == (2 * SR,) and item["length"] >= 2 * SR - 1
        crop = item["audio"].numpy()[: item["length"]]
        # where the window sits in the fully decoded clip: the peak of the cross-correlation
        score = correlate(full, crop, mode="valid")
        start = int(np.argmax(score))
        segment = full[start : start + len(crop)]
        norms = np.linalg.norm(segment), np.linalg.norm(crop)
        # the window starts between two 16 kHz samples of the full decode (a sub-sample shift
        # that decorrelates the bird's high partials a little), hence 0.9 and not 0.99
        assert np.dot(segment, crop) / (norms[0] * norms[1]) > 0.9
        assert abs(norms[0] / norms[1] - 1) < 0.02
        starts.append(start)
    assert len(set(starts)) == 3
    # the stated duration is trusted: one far too long puts windows past the end of the file
    overstated = CaptionDataset([replace(timed, duration_s=1000.0)], train=True, clip_seconds=2.0)
    assert overstated[0] is None


def test_training_randomness_is_seeded_per_epoch_and_item(records):
    dataset = CaptionDataset(records, train=True, clip_seconds=2.0, seed=7)
    first = dataset[0]
    again = CaptionDataset(records, train=True, clip_seconds=2.0, seed=7)[0]
    assert torch.equal(first["audio"], again["audio"]) and first["caption"] == again["caption"]
    captions, crops = set(), set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        item = dataset[0]
        captions.add(item["caption"])
        crops.add(float(item["audio"][:100].abs().sum()))
    assert len(captions) >= 3 and captions <= set(records[0].captions)
    assert len(crops) == 12
    other_seed = CaptionDataset(records, train=True, clip_seconds=2.0, seed=8)[0]
    assert not torch.equal(first["audio"], other_seed["audio"])


def test_augment_runs_on_the_unpadded_crop_and_is_refitted(records):
    seen = []

    def stretch_twice(waves: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        seen.append((waves.shape, generator))
        return torch.cat([waves, waves], dim=1) * -1.0

    dataset = CaptionDataset(records, train=True, clip_seconds=2.0, augment=stretch_twice)
    plain = CaptionDataset(records, train=True, clip_seconds=2.0)
    hen, hen_plain = dataset[2], plain[2]
    n_hen = hen_plain["length"]
    assert seen[0][0] == (1, n_hen) and isinstance(seen[0][1], torch.Generator)
    assert hen["length"] == 2 * SR  # lengthened by the augment, cut back to the clip
    assert torch.equal(hen["audio"][:n_hen], -hen_plain["audio"][:n_hen])
    with pytest.raises(ValueError, match="augment is for training only"):
        CaptionDataset(records, train=False, augment=stretch_twice)


def test_time_stretch_padding_is_not_valid_audio(records):
    """A sped-up crop is zero-padded back to the clip: the padding must count as padding in
    `length` (and so in the encoder's mask), not as silent audio."""
    speed_up = RandomAugment([TimeStretch(factor=(0.8, 0.8))], 1.0)
    dataset = CaptionDataset(records, train=True, clip_seconds=2.0, augment=speed_up)
    long_clip, short_clip = dataset[0], dataset[2]  # blackbird cropped to 2 s; hen 1.45 s
    plain_short = CaptionDataset(records, train=True, clip_seconds=2.0)[2]["length"]
    assert long_clip["length"] == round(0.8 * 2 * SR)
    assert short_clip["length"] == round(0.8 * plain_short)
    for item in (long_clip, short_clip):
        assert float(item["audio"][item["length"] :].abs().max()) == 0.0
        assert float(item["audio"][item["length"] - 800 : item["length"]].abs().max()) > 0.0
    batch = collate_captions([long_clip, short_clip])
    assert batch["audio_lengths"].tolist() == [long_clip["length"], short_clip["length"]]


def test_media_random_augment_plugs_in_and_is_reproducible(records):
    flip = RandomAugment([PolarityFlip()], 1.0)
    flipped = CaptionDataset(records, train=True, clip_seconds=2.0, augment=flip)[0]
    plain = CaptionDataset(records, train=True, clip_seconds=2.0)[0]
    assert torch.equal(flipped["audio"], -plain["audio"])
    paper = RandomAugment()  # the paper's four transforms, each with p = 0.5
    first, second, bare = (
        CaptionDataset(records, train=True, clip_seconds=2.0, augment=augment, seed=5)
        for augment in (paper, paper, None)
    )
    changed = 0
    for epoch in range(4):
        for dataset in (first, second, bare):
            dataset.set_epoch(epoch)
        a, b = first[1], second[1]
        assert torch.equal(a["audio"], b["audio"]) and a["length"] == b["length"]
        changed += not torch.equal(a["audio"], bare[1]["audio"])
    assert changed >= 1


def test_collate_pads_and_keeps_references(records):
    dataset = CaptionDataset(records, train=False)
    batch = collate_captions([dataset[1], dataset[0], dataset[2]])
    assert batch["ids"] == ["crow", "blackbird", "hen"]
    lengths = batch["audio_lengths"]
    assert lengths.dtype == torch.long and batch["audio"].dtype == torch.float32
    assert batch["audio"].shape == (3, int(lengths.max()))
    assert int(lengths[1]) == batch["audio"].shape[1]
    for row in (0, 2):
        assert torch.count_nonzero(batch["audio"][row, int(lengths[row]) :]) == 0
    assert batch["captions"] == ["crow reference 0", "blackbird reference 0", "hen reference 0"]
    assert batch["references"][2] == records[2].captions
    assert batch["images"] is None


def test_unreadable_items_are_logged_and_dropped(records, tmp_path: Path, caplog):
    fake = tmp_path / "not_audio.wav"
    fake.write_text("this is a text file, not audio\n")
    bad = ManifestRecord(id="bad-clip", dataset="t", split="dev", audio=str(fake), captions=["x"])
    gone = ManifestRecord(
        id="gone-clip", dataset="t", split="dev", audio=str(tmp_path / "gone.flac"), captions=["y"]
    )
    dataset = CaptionDataset([records[1], bad, gone], train=True, clip_seconds=1.0)
    with caplog.at_level(logging.WARNING, logger="multi2cap.data.dataset"):
        items = [dataset[i] for i in range(3)]
    assert items[1] is None and items[2] is None
    assert "bad-clip" in caplog.text and "gone-clip" in caplog.text
    batch = collate_captions(items)
    assert batch["ids"] == ["crow"] and batch["audio"].shape == (1, SR)
    with pytest.raises(EmptyBatchError, match="all 2 item"):
        collate_captions(items[1:])


def test_corrupt_image_skips_the_item(vggcaps_dir: Path, caplog):
    records = read_dataset("vggcaps", vggcaps_dir).records
    Path(records[1].image).write_text("not a JPEG")
    dataset = CaptionDataset(records, train=True, with_images=True, image_size=32)
    with caplog.at_level(logging.WARNING, logger="multi2cap.data.dataset"):
        assert dataset[1] is None
    assert records[1].id in caplog.text
    assert dataset[0]["image"].shape == (3, 32, 32)


def test_dataloader_workers_give_the_same_batches(records):
    dataset = CaptionDataset(records * 2, train=True, clip_seconds=1.5, seed=11)
    dataset.set_epoch(4)

    def batches(workers: int) -> list:
        loader = DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=collate_captions)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert a["ids"] == b["ids"] and a["captions"] == b["captions"]
        assert torch.equal(a["audio"], b["audio"])
        assert torch.equal(a["audio_lengths"], b["audio_lengths"])


def test_images_eval_resize_centre_crop_and_clip_normalisation(vggcaps_dir: Path):
    records = read_dataset("vggcaps", vggcaps_dir).records
    dataset = CaptionDataset(records, train=False, with_images=True, image_size=64)
    item = dataset[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    # the same picture through another route: resize the short side, then crop the centre
    picture = Image.open(records[0].image).convert("RGB")
    w, h = picture.size
    scale = 64 / min(w, h)
    resized = picture.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
    left, top = (resized.width - 64) // 2, (resized.height - 64) // 2
    reference = np.asarray(resized.crop((left, top, left + 64, top + 64)), dtype=np.float32) / 255
    mean, std = np.array(CLIP_MEAN), np.array(CLIP_STD)
    pixels = item["image"].permute(1, 2, 0).numpy() * std + mean
    assert np.abs(pixels - reference).mean() < 0.03
    batch = collate_captions([dataset[0], dataset[1]])
    assert batch["images"].shape == (2, 3, 64, 64)


def test_images_training_random_resized_crop_varies_by_epoch(vggcaps_dir: Path):
    records = read_dataset("vggcaps", vggcaps_dir).records
    dataset = CaptionDataset(records, train=True, with_images=True, image_size=32)
    crops = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        crops.append(dataset[0]["image"])
    assert all(c.shape == (3, 32, 32) for c in crops)
    assert not torch.equal(crops[0], crops[1]) and not torch.equal(crops[1], crops[2])
    lo = (0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    hi = (1 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    for c in crops:
        for channel in range(3):
            assert lo[channel] - 1e-4 <= float(c[channel].min()) <= float(c[channel].max())
            assert float(c[channel].max()) <= hi[channel] + 1e-4


def test_random_resized_crop_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(300):
        left, top, right, bottom = random_resized_crop_box(200, 120, rng, scale=(0.2, 0.9))
        w, h = right - left, bottom - top
        assert min(left, top) >= 0 and right <= 200 and bottom <= 120
        assert 0.19 <= w * h / (200 * 120) <= 0.91
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    # a strip no crop in the ratio range fits: the centred fallback within 4:3
    assert random_resized_crop_box(1000, 10, rng) == (493, 0, 506, 10)


def test_construction_rejects_records_it_cannot_serve(records):
    uncaptioned = [*records, ManifestRecord(id="u", dataset="t", split="dev", audio="u.wav")]
    with pytest.raises(ValueError, match="no caption to train on"):
        CaptionDataset(uncaptioned, train=True)
    assert CaptionDataset(uncaptioned, train=False)[0] is not None
    with pytest.raises(ValueError, match="no image"):
        CaptionDataset(records, train=False, with_images=True)
