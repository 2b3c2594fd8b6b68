"""Publishing a checkpoint whose backbones are folders of this machine: `multi2cap push` refuses
them unless they are bundled into the repository or mapped to hub ids; a bundle pushed to a
(loopback) hub loads by id alone; `GET /v1/model` names backbones, never the server's paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from hub_cache import populate_hub_cache
from loopback_hub import loopback_hub
from multi2cap_testkit import move_machine, tones
from serve_helpers import live_server
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.model.card import checkpoint_summary
from multi2cap.model.config import CONFIG_FILE
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.serve.limits import ServeSettings

WAVES = list(tones(2, seconds=0.8))  # what `local_run` captioned
NAMES = {"audio": "ced-tiny", "vision": "clip-tiny", "llm": "llm-tiny"}


def _texts(folder: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in folder.rglob("*") if p.suffix in (".yaml", ".md")
    )


def _push(args: list[str]) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["push", *args])
    return result.exit_code, result.output


def test_push_refuses_local_backbones_unless_bundled_or_mapped(
    local_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run, _ = local_run
    checkpoint, out = run / "ckpt", tmp_path / "repo"
    code, output = _push([str(checkpoint), "org/name", "--to-folder", str(out)])
    assert code == 2 and "cannot push" in output, output
    for role in NAMES:
        assert f"{role} is the local folder '{run / 'models' / NAMES[role]}'" in output
    assert "--bundle-backbones" in output and "--map-backbone audio=org/name" in output
    assert not out.exists()
    code, output = _push([str(checkpoint), "org/name", "--to-folder", str(out),
                          "--map-backbone", f"llm={run / 'models'}"])  # fmt: skip
    assert code == 2 and "not a hub id" in output

    ids = {"audio": "mispeech/ced-tiny", "vision": "openai/clip-vit-base-patch32",
           "llm": "HuggingFaceTB/SmolLM2-135M"}  # fmt: skip
    mapped = [arg for role, repo in ids.items() for arg in ("--map-backbone", f"{role}={repo}")]
    code, output = _push([str(checkpoint), "org/name", "--to-folder", str(out), *mapped])
    assert code == 0, output
    config = yaml.safe_load((out / CONFIG_FILE).read_text())
    assert {role: config[role]["source"] for role in ids} == ids
    assert config["written_by"]["multi2cap_version"]  # the rest of the file is kept
    card = (out / "README.md").read_text()
    assert "| llm | `HuggingFaceTB/SmolLM2-135M` | hub id |" in card
    assert str(run.parent) not in _texts(out)  # nothing names this machine's folders
    assert not (out / "backbones").exists()

    mixed = tmp_path / "mixed"
    code, output = _push([str(checkpoint), "org/name", "--to-folder", str(mixed),
                          "--map-backbone", f"llm={ids['llm']}", "--bundle-backbones"])  # fmt: skip
    assert code == 0, output
    config = yaml.safe_load((mixed / CONFIG_FILE).read_text())
    assert config["llm"]["source"] == ids["llm"]
    assert config["audio"]["source"] == "./backbones/audio/ced-tiny"
    assert sorted(p.name for p in (mixed / "backbones" / "audio" / "ced-tiny").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert not (mixed / "backbones" / "llm").exists()
    card = (mixed / "README.md").read_text()
    assert "| audio | `ced-tiny` | bundled (`backbones/audio/ced-tiny`) |" in card
    assert str(run.parent) not in _texts(mixed)


def test_a_pushed_bundle_loads_by_id_with_no_local_backbone(
    local_run: tuple[Path, list[str]], tmp_path: Path, offline_cache: Path
) -> None:
    run, captions = local_run
    machine = move_machine(run, tmp_path / "machine")
    # The checkpoint names folders of the machine it came from; here its backbones are found
    # through the folder of backbones of the environment, and bundled from there.
    env = {**os.environ, "MULTI2CAP_BACKBONES": str(machine / "models")}
    with loopback_hub() as hub:
        result = subprocess.run(
            [sys.executable, "-m", "multi2cap.cli.main", "push", str(machine / "ckpt"),
             "org/bundled", "--bundle-backbones"],
            # The upload goes to the loopback hub only (the suite otherwise runs offline).
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
                 "OMP_NUM_THREADS": "1", "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_loopback0123456",
                 "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0"},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    received = hub.repos["org/bundled"]
    assert {f"backbones/{role}/{name}/config.json" for role, name in NAMES.items()} <= set(received)
    assert "backbones/llm/llm-tiny/tokenizer.json" in received
    card = received["README.md"].decode()
    assert "| llm | `llm-tiny` | bundled (`backbones/llm/llm-tiny`) |" in card
    shutil.rmtree(machine)  # no copy of the backbones is left where the config named them

    uploaded = tmp_path / "uploaded"
    for name, data in received.items():
        (uploaded / name).parent.mkdir(parents=True, exist_ok=True)
        (uploaded / name).write_bytes(data)
    populate_hub_cache(offline_cache, "org/bundled", uploaded)
    model = Multi2Cap.from_pretrained("org/bundled")
    for role in NAMES:  # every backbone came from the hub snapshot
        assert Path(getattr(model.config, role).source).is_relative_to(offline_cache)
    assert model.caption(WAVES, num_beams=2) == captions


def test_model_info_names_backbones_not_server_paths(
    local_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run, _ = local_run
    summary = checkpoint_summary(run / "ckpt")
    model = Multi2Cap.from_pretrained(run / "ckpt")
    settings = ServeSettings(max_batch=2, max_wait_ms=1)
    with live_server(model, settings, tmp_path, summary=summary) as server:
        reply = httpx.get(f"{server.url}/v1/model")
    assert reply.status_code == 200
    info = reply.json()
    assert info["backbones"] == NAMES
    assert info["backbone_origins"] == dict.fromkeys(NAMES, "local folder")
    assert info["recipe"]["model"]["llm"]["source"] == "llm-tiny"
    assert info["recipe"]["init_backbones"] == {"llm": "llm-tiny"}
    assert str(run.parent) not in reply.text and "/tmp" not in reply.text
