"""Checkpoints that travel: a checkpoint whose backbones are folders of the machine that saved it
is moved with its backbones to another folder, the originals removed, and captions identically
through `backbones=` / `--backbone` / `$MULTI2CAP_BACKBONES`; a missing folder is an error that
says it is local to the saving machine and how to point at a copy; references relative to the
checkpoint folder (bundled backbones) follow the folder wherever it goes."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from multi2cap_testkit import (
    BACKBONE_FOLDERS,
    local_backbone_config,
    move_machine,
    save_local_backbones,
    tones,
)
from typer.testing import CliRunner

from multi2cap.assets import AssetNotFoundError
from multi2cap.cli.main import app
from multi2cap.model.config import CONFIG_FILE
from multi2cap.model.hub import stage_hub_repo
from multi2cap.model.multi2cap import Multi2Cap

BACKBONES_ENV = "MULTI2CAP_BACKBONES"  # spelled out: the documented name

WAVES = list(tones(3, seconds=0.6))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """`<root>/machine_a/{models/<backbones>, ckpt}` and the captions the model gave there."""
    root = tmp_path_factory.mktemp("travel") / "machine_a"
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = Multi2Cap(local_backbone_config(save_local_backbones(root / "models")))
    model.save_pretrained(root / "ckpt")
    captions = model.caption(WAVES, num_beams=2)
    torch.set_num_threads(threads)
    assert len(set(captions)) == 3 and all(captions)
    return root, captions


@pytest.fixture
def moved(saved: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Machine A's folder copied to `<tmp>/machine_b`; the backbone paths recorded in its
    config.yaml no longer exist. Returns (checkpoint, models folder, captions on machine A)."""
    source, captions = saved
    target = move_machine(source, tmp_path / "machine_b")
    return target / "ckpt", target / "models", captions


def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKBONES_ENV, raising=False)


def test_a_moved_checkpoint_captions_identically_through_the_override(
    moved: tuple[Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_env(monkeypatch)
    checkpoint, models, captions = moved
    overrides = {role: models / name for role, name in BACKBONE_FOLDERS.items()}
    model = Multi2Cap.from_pretrained(checkpoint, backbones=overrides)
    assert model.caption(WAVES, num_beams=2) == captions
    # Captioning needs no CLIP (its width is recorded): audio and LLM are enough.
    partial = {r: overrides[r] for r in ("audio", "llm")}
    assert Multi2Cap.from_pretrained(checkpoint, backbones=partial).caption(WAVES) == (
        model.caption(WAVES)
    )
    # The CLIP tower is found too when it is loaded (probes, pre-training).
    assert Multi2Cap.from_pretrained(checkpoint, backbones=overrides, load_vision=True).vision
    # Saved again here, the checkpoint names where its backbones are now, and loads alone.
    again = model.save_pretrained(tmp_path / "again")
    stored = yaml.safe_load((again / CONFIG_FILE).read_text())
    assert stored["llm"]["source"] == str(models / "llm-tiny")
    assert Multi2Cap.from_pretrained(again).caption(WAVES, num_beams=2) == captions


def test_a_missing_local_backbone_says_it_is_local_and_how_to_override(
    moved: tuple[Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_env(monkeypatch)
    checkpoint, models, _ = moved
    stored = yaml.safe_load((checkpoint / CONFIG_FILE).read_text())["audio"]["source"]
    with pytest.raises(AssetNotFoundError) as info:
        Multi2Cap.from_pretrained(checkpoint)
    message = str(info.value)
    assert f"the local path {stored!r} does not exist on this machine" in message
    assert "local to the machine that saved the checkpoint" in message
    assert "--backbone audio=DIR" in message
    assert "backbones={'audio': DIR}" in message and "init_backbones: {audio: DIR}" in message
    assert f"${BACKBONES_ENV} is not set" in message and "`ced-tiny`" in message
    assert "hf download" not in message
    # Every missing backbone is named at once (CLIP is not needed to caption: not listed).
    assert message.startswith("2 backbones of checkpoint") and "--backbone llm=DIR" in message
    assert "vision backbone" not in message and "clip-tiny" not in message
    with pytest.raises(AssetNotFoundError, match=r"^llm backbone .*--backbone llm=DIR"):
        Multi2Cap.from_pretrained(checkpoint, backbones={"audio": models / "ced-tiny"})
    # A bad override names itself; an unknown role is refused.
    with pytest.raises(AssetNotFoundError, match=r"override llm=/nowhere/llm: no such folder"):
        Multi2Cap.from_pretrained(
            checkpoint, backbones={"audio": models / "ced-tiny", "llm": "/nowhere/llm"}
        )
    with pytest.raises(ValueError, match="override 'decoder': unknown role"):
        Multi2Cap.from_pretrained(checkpoint, backbones={"decoder": models})


def test_the_backbones_folder_of_the_environment_is_searched_by_name(
    moved: tuple[Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    checkpoint, models, captions = moved
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(BACKBONES_ENV, str(empty))
    with pytest.raises(AssetNotFoundError, match=rf"{BACKBONES_ENV} \({empty}\) has no folder"):
        Multi2Cap.from_pretrained(checkpoint)
    monkeypatch.setenv(BACKBONES_ENV, os.pathsep.join([str(empty), str(models)]))
    assert Multi2Cap.from_pretrained(checkpoint).caption(WAVES, num_beams=2) == captions
    # An explicit override wins over the environment's folder.
    other = tmp_path / "other"
    shutil.copytree(models / "llm-tiny", other / "llm-tiny")
    loaded = Multi2Cap.from_pretrained(checkpoint, backbones={"llm": other / "llm-tiny"})
    assert loaded.config.llm.source == str(other / "llm-tiny")
    assert loaded.config.audio.source == str(models / "ced-tiny")


def test_bundled_backbones_travel_with_the_checkpoint_folder(
    moved: tuple[Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`push --to-folder --bundle-backbones` lays out a checkpoint whose backbones are inside it,
    referenced relatively: moved anywhere, it loads with nothing else on the machine; saved over
    itself, the bundle is kept."""
    _no_env(monkeypatch)
    checkpoint, models, captions = moved
    overrides = {role: models / name for role, name in BACKBONE_FOLDERS.items()}
    staged = stage_hub_repo(
        checkpoint, "org/name", tmp_path / "staged", bundle=True, overrides=overrides
    )
    config = yaml.safe_load((staged / CONFIG_FILE).read_text())
    assert config["llm"]["source"] == "./backbones/llm/llm-tiny"
    assert config["audio"]["source"] == "./backbones/audio/ced-tiny"
    shutil.rmtree(models.parent)  # machine B's backbones and checkpoint are gone
    elsewhere = tmp_path / "far" / "away"
    shutil.move(staged, elsewhere)
    model = Multi2Cap.from_pretrained(elsewhere)
    assert model.caption(WAVES, num_beams=2) == captions
    model.save_pretrained(elsewhere)  # over itself: the bundled folders must survive
    assert yaml.safe_load((elsewhere / CONFIG_FILE).read_text())["llm"]["source"] == (
        "./backbones/llm/llm-tiny"
    )
    assert Multi2Cap.from_pretrained(elsewhere).caption(WAVES, num_beams=2) == captions
    # Pushed again, a bundled checkpoint carries its backbones along without being told to.
    again = stage_hub_repo(elsewhere, "org/again", tmp_path / "again")
    assert (again / "backbones" / "llm" / "llm-tiny" / "model.safetensors").is_file()
    assert Multi2Cap.from_pretrained(again).caption(WAVES, num_beams=2) == captions


def test_caption_cli_takes_backbone_overrides(
    moved: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    checkpoint, models, captions = moved
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, wave in enumerate(WAVES):
        sf.write(clips / f"tone{i}.wav", wave.numpy(), 16000, subtype="FLOAT")
    env = {key: value for key, value in os.environ.items() if key != BACKBONES_ENV}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", COLUMNS="300",
               PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))  # fmt: skip
    output = tmp_path / "captions.csv"
    command = [sys.executable, "-m", "multi2cap.cli.main", "caption", str(clips),
               "--checkpoint", str(checkpoint), "--beams", "2", "--output", str(output)]  # fmt: skip
    overrides = ["--backbone", f"audio={models / 'ced-tiny'}",
                 "--backbone", f"llm={models / 'llm-tiny'}"]  # fmt: skip
    result = subprocess.run(
        command + overrides, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["caption"] for r in rows] == captions


def test_missing_backbones_and_bad_backbone_options_exit_2(
    moved: tuple[Path, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_env(monkeypatch)
    checkpoint, _, _ = moved
    clip = tmp_path / "tone.wav"
    sf.write(clip, WAVES[0].numpy(), 16000, subtype="FLOAT")
    runner = CliRunner(env={"COLUMNS": "400"})
    refused = runner.invoke(app, ["caption", str(clip), "-c", str(checkpoint)])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "local to the machine that saved" in refused.output
    assert "--backbone audio=DIR" in refused.output
    for bad, expected in [("llm", "expected ROLE=DIR"), ("text=/x", "unknown role 'text'")]:
        result = runner.invoke(
            app, ["caption", str(clip), "-c", str(checkpoint), "--backbone", bad]
        )
        assert result.exit_code == 2 and expected in result.output, result.output


def test_analyze_model_takes_backbone_overrides(
    moved: tuple[Path, Path, list[str]],
    tmp_path: Path,
    tuxpaint_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stamp_manifests import write_stamp_manifest

    _no_env(monkeypatch)
    checkpoint, models, _ = moved
    manifest = write_stamp_manifest(tuxpaint_dir, tmp_path / "clips.jsonl")
    runner = CliRunner(env={"COLUMNS": "400"})
    command = ["analyze", "model", "tsne", str(checkpoint), str(manifest), "--out",
               str(tmp_path / "tsne")]  # fmt: skip
    refused = runner.invoke(app, command)
    assert refused.exit_code == 2 and "3 backbones of checkpoint" in refused.output
    assert "--backbone vision=DIR" in refused.output  # probes load the CLIP tower
    overrides = [arg for role, name in BACKBONE_FOLDERS.items()
                 for arg in ("--backbone", f"{role}={models / name}")]  # fmt: skip
    result = runner.invoke(app, [*command, *overrides])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tsne" / "tsne.csv").is_file()


def test_serve_takes_backbone_overrides_and_shows_names_only(
    moved: tuple[Path, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from fastapi.testclient import TestClient

    _no_env(monkeypatch)
    checkpoint, models, captions = moved
    runner = CliRunner(env={"COLUMNS": "400"})
    refused = runner.invoke(app, ["serve", "-c", str(checkpoint)])
    assert refused.exit_code == 2 and "--backbone audio=DIR" in refused.output
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    overrides = ["--backbone", f"audio={models / 'ced-tiny'}",
                 "--backbone", f"llm={models / 'llm-tiny'}"]  # fmt: skip
    result = runner.invoke(app, ["serve", "-c", str(checkpoint), *overrides])
    assert result.exit_code == 0, result.output
    clip = tmp_path / "tone.wav"
    sf.write(clip, WAVES[0].numpy(), 16000, subtype="FLOAT")
    with TestClient(served[0]) as client:
        info = client.get("/v1/model")
        reply = client.post(
            "/v1/captions", files={"file": ("tone.wav", clip.read_bytes())}, data={"num_beams": 2}
        )
    assert info.json()["backbones"] == BACKBONE_FOLDERS
    assert str(tmp_path) not in info.text
    assert reply.status_code == 200 and reply.json()["captions"][0]["caption"] == captions[0]
