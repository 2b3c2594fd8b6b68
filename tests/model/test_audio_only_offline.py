"""Audio-only captioning needs nothing of the CLIP tower: a checkpoint whose `vision.source`
is a hub id absent from the machine captions offline, in Python and through `multi2cap caption`.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from multi2cap_testkit import tiny, tones
from safetensors.torch import load_file, save_file

from multi2cap.assets import AssetNotFoundError
from multi2cap.model.config import BACKBONES_FILE, CONFIG_FILE
from multi2cap.model.multi2cap import Multi2Cap

ABSENT_CLIP = "multi2cap-tests/clip-vit-not-on-this-machine"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))


def _hub_clip_checkpoint(tmp_path: Path) -> tuple[Path, Multi2Cap]:
    """A grounded checkpoint as a run with CLIP from the hub leaves it: `vision.source` an id,
    no CLIP weights in the folder. (Trained here with an inline CLIP, then re-pointed.)"""
    model = tiny().eval()
    folder = model.save_pretrained(tmp_path / "ckpt")
    config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    assert config["vision"]["width"] == 32  # recorded at save time
    config["vision"].update(source=ABSENT_CLIP, config=None)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    inline = load_file(folder / BACKBONES_FILE)
    kept = {k: v for k, v in inline.items() if not k.startswith("vision.")}
    assert len(kept) < len(inline)
    save_file(kept, str(folder / BACKBONES_FILE), metadata={"format": "pt"})
    return folder, model


def test_checkpoint_with_an_absent_clip_captions_offline(tmp_path: Path, offline: None) -> None:
    folder, trained = _hub_clip_checkpoint(tmp_path)
    waves = tones(3, seconds=0.6)
    loaded = Multi2Cap.from_pretrained(folder)
    assert loaded.vision is None and loaded.grounding is not None
    captions = loaded.caption(waves, num_beams=2)
    assert captions == trained.caption(waves, num_beams=2) and all(captions)
    # Saved again, it still records the width (and still loads without CLIP).
    again = loaded.save_pretrained(tmp_path / "again")
    assert yaml.safe_load((again / CONFIG_FILE).read_text())["vision"]["width"] == 32
    assert Multi2Cap.from_pretrained(again).caption(waves, num_beams=2) == captions
    # Pre-training or probing does need the tower: the error names it.
    with pytest.raises(AssetNotFoundError, match=rf"vision\.source.*{ABSENT_CLIP}"):
        Multi2Cap.from_pretrained(folder, load_vision=True)


def test_old_checkpoint_without_the_width_names_the_missing_clip(
    tmp_path: Path, offline: None
) -> None:
    folder, _ = _hub_clip_checkpoint(tmp_path)
    config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    del config["vision"]["width"]  # as written before the width was recorded
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(
        AssetNotFoundError, match=rf"CLIP vision config.*{ABSENT_CLIP}.*vision\.source"
    ):
        Multi2Cap.from_pretrained(folder)


def test_cli_captions_offline_with_an_absent_clip(tmp_path: Path) -> None:
    folder, trained = _hub_clip_checkpoint(tmp_path)
    clips = tmp_path / "clips"
    clips.mkdir()
    waves = tones(2, seconds=0.6)
    for i, wave in enumerate(waves):
        sf.write(clips / f"tone{i}.wav", wave.numpy(), 16000, subtype="FLOAT")
    output = tmp_path / "captions.csv"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "empty-hub-cache"),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "multi2cap.cli.main", "caption", str(clips),
         "--checkpoint", str(folder), "--beams", "2", "--output", str(output)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    torch.set_num_threads(1)
    expected = trained.caption([str(clips / f"tone{i}.wav") for i in range(2)], num_beams=2)
    assert [r["caption"] for r in rows] == expected and all(expected)
