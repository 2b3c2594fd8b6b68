"""`serve` with CLAP re-ranking (a tiny random CLAP saved to a folder): the captions and scores
equal `ClapReranker.caption` on the same files, the beam width must cover the candidates, and
scores are refused by a server that does not re-rank."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from multi2cap_testkit import CAPTIONS
from serve_helpers import LiveServer, live_server

from multi2cap.metrics.clap import save_tiny_clap
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.model.rerank import ClapReranker
from multi2cap.serve.limits import ServeSettings


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> ClapReranker:
    folder = save_tiny_clap(tmp_path_factory.mktemp("clap") / "clap", CAPTIONS)
    return ClapReranker(folder, candidates=3)


@pytest.fixture(scope="module")
def server(
    model: Multi2Cap, reranker: ClapReranker, tmp_path_factory: pytest.TempPathFactory
) -> LiveServer:
    settings = ServeSettings(max_batch=4, max_wait_ms=50)
    with live_server(model, settings, tmp_path_factory.mktemp("work"), reranker=reranker) as live:
        yield live


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (p.name, p.read_bytes(), "audio/ogg")) for p in paths]


def test_reranked_captions_equal_the_python_api(
    server: LiveServer, model: Multi2Cap, reranker: ClapReranker, sounds: list[Path]
) -> None:
    expected = reranker.caption(model, sounds[:2])
    reply = httpx.post(
        f"{server.url}/v1/captions", files=_files(sounds[:2]), data={"rerank_scores": "true"},
        timeout=120,
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    items = reply.json()["captions"]
    assert [c["caption"] for c in items] == [e.caption for e in expected]
    for item, choice in zip(items, expected, strict=True):
        assert item["clap_score"] == pytest.approx(choice.score, abs=1e-5)
        assert item["tied"] == choice.tied
        assert [c["text"] for c in item["candidates"]] == [c.text for c in choice.candidates]
    plain = httpx.post(f"{server.url}/v1/captions", files=_files(sounds[:1]), timeout=120)
    assert plain.json()["captions"][0].keys() == {"file", "caption", "duration_s"}
    assert plain.json()["captions"][0]["caption"] == expected[0].caption

    narrow = httpx.post(
        f"{server.url}/v1/captions", files=_files(sounds[:1]), data={"num_beams": "2"}, timeout=60
    )
    assert narrow.status_code == 422
    assert "re-ranks 3 candidates" in narrow.json()["detail"]
    info = httpx.get(f"{server.url}/v1/model").json()
    assert info["server"]["rerank"]["candidates"] == 3
    assert info["server"]["rerank"]["clap_model"] == reranker.scorer.source


def test_a_plain_server_refuses_rerank_scores(
    model: Multi2Cap, sounds: list[Path], tmp_path: Path
) -> None:
    with live_server(model, ServeSettings(), tmp_path) as plain:
        reply = httpx.post(
            f"{plain.url}/v1/captions", files=_files(sounds[:1]), data={"rerank_scores": "true"},
            timeout=60,
        )  # fmt: skip
    assert reply.status_code == 422
    assert "does not re-rank" in reply.json()["detail"]


def test_serve_command_wires_the_reranker(
    checkpoint: Path, reranker: ClapReranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --rerank clap ...` builds the app with the reranker (uvicorn.run is replaced by a
    function that keeps the app, queried in-process); bad combinations exit 2 before serving."""
    import uvicorn
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from multi2cap.cli.main import app

    monkeypatch.delenv("MULTI2CAP_CLAP_MODEL", raising=False)
    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda served, **_: started.append(served))
    runner = CliRunner(env={"COLUMNS": "400"})
    base = ["serve", "-c", str(checkpoint)]
    clap = reranker.scorer.source
    for args, message in (
        (["--candidates", "3"], "apply with --rerank clap only"),
        (["--rerank", "clap"], "no CLAP model given"),
    ):
        refused = runner.invoke(app, [*base, *args])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    assert started == []
    result = runner.invoke(
        app, [*base, "--rerank", "clap", "--clap-model", clap, "--candidates", "4"]
    )
    assert result.exit_code == 0, result.output
    (served,) = started
    with TestClient(served) as client:
        rerank = client.get("/v1/model").json()["server"]["rerank"]
    assert rerank["kind"] == "clap" and rerank["candidates"] == 4 and rerank["clap_model"] == clap
