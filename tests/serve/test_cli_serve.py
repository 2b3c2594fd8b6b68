"""`multi2cap serve` as users start it: a hub id resolved offline, a live server answering,
its temporary folder gone after a clean shutdown; a missing checkpoint is a clear error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from hub_cache import populate_hub_cache
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.cli.serve import is_loopback
from multi2cap.model.hub import stage_hub_repo
from multi2cap.model.multi2cap import Multi2Cap
from slow_clients import assert_cut_off, open_slow, trickle_until_closed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_a_hub_checkpoint_offline(run_best: Path, tmp_path: Path, sounds: list[Path]) -> None:
    cache, tmp = tmp_path / "hub", tmp_path / "tmp"
    tmp.mkdir()
    # The repository as `multi2cap push` lays it out (the recipe beside the weights).
    populate_hub_cache(cache, "org/name", stage_hub_repo(run_best, "org/name", tmp_path / "repo"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
           "OMP_NUM_THREADS": "1", "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "TMPDIR": str(tmp), "COLUMNS": "300"}  # fmt: skip
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "multi2cap.cli.main", "serve", "--checkpoint", "org/name",
         "--port", str(port), "--max-batch", "4", "--max-wait-ms", "5",
         "--header-timeout-s", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        info = httpx.get(f"{url}/v1/model").json()
        assert info["id"] == "org/name" and info["stage"] == "finetune" and info["k"] == 2
        assert info["validation"]["scores"]["cider_d"] == 0.1234
        assert info["server"]["max_batch"] == 4
        files = [("file", (sounds[1].name, sounds[1].read_bytes()))]
        reply = httpx.post(f"{url}/v1/captions", files=files, timeout=120)
        assert reply.status_code == 200, reply.text
        expected = Multi2Cap.from_pretrained(run_best).caption(sounds[1])[0]
        assert reply.json()["captions"][0]["caption"] == expected
        slow = trickle_until_closed(open_slow(port, 2, "header", "/healthz"), within_s=20)
        assert_cut_off(slow, 2.0, b"408 Request Timeout", b"not received within 2 s")
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert "serving org/name on http://127.0.0.1" in err and "warning" not in err
    assert "closing a connection from 127.0.0.1" in err  # the operator sees slow clients go
    assert list(tmp.iterdir()) == []  # the server's upload folder is removed at shutdown


def test_serve_a_missing_hub_checkpoint_is_a_clear_error(offline_cache: Path) -> None:
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["serve", "-c", "org/missing"])
    assert result.exit_code == 2 and "'org/missing' does not exist" in result.output
    assert "Traceback" not in result.output


def test_only_loopback_hosts_count_as_local() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.org"]))
