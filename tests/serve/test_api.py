"""The API against a live uvicorn on loopback: captions equal the Python API's, concurrent
requests share model calls, the OpenAI SDK works as a client, the model is described."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from serve_helpers import LiveServer, live_server

from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.serve.limits import ServeSettings


@pytest.fixture(scope="module")
def server(model: Multi2Cap, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    # A long wait so that concurrent uploads on a busy machine still meet in one batch.
    settings = ServeSettings(max_batch=8, max_wait_ms=400)
    with live_server(model, settings, tmp_path_factory.mktemp("work")) as live:
        yield live


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (p.name, p.read_bytes(), "audio/ogg")) for p in paths]


def test_captions_equal_the_python_api_one_clip_at_a_time(
    server: LiveServer, model: Multi2Cap, sounds: list[Path]
) -> None:
    for beams in (None, 2):
        expected = [model.caption(p, num_beams=beams)[0] for p in sounds[:3]]
        data = {} if beams is None else {"num_beams": str(beams)}
        reply = httpx.post(
            f"{server.url}/v1/captions", files=_files(sounds[:3]), data=data, timeout=120
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model"] == "tiny"
        assert [c["caption"] for c in body["captions"]] == expected
        assert [c["file"] for c in body["captions"]] == [p.name for p in sounds[:3]]
        for item, path in zip(body["captions"], sounds[:3], strict=True):
            assert item["duration_s"] == pytest.approx(len(model_wave(path)) / 16000, abs=1e-3)


def model_wave(path: Path):
    from multi2cap.media.audio import load_audio

    return load_audio(path)


def test_concurrent_requests_are_served_in_fewer_model_calls(
    server: LiveServer, model: Multi2Cap, sounds: list[Path]
) -> None:
    paths = [sounds[i % len(sounds)] for i in range(8)]
    before = httpx.get(f"{server.url}/healthz").json()

    def one(path: Path) -> str:
        reply = httpx.post(f"{server.url}/v1/captions", files=_files([path]), timeout=120)
        assert reply.status_code == 200, reply.text
        return reply.json()["captions"][0]["caption"]

    with ThreadPoolExecutor(len(paths)) as pool:
        captions = list(pool.map(one, paths))
    after = httpx.get(f"{server.url}/healthz").json()
    calls = after["model_calls"] - before["model_calls"]
    assert after["clips"] - before["clips"] == len(paths)
    assert 1 <= calls < len(paths), f"{len(paths)} requests took {calls} model calls"
    assert after["largest_batch"] >= 2 and after["held"] == 0
    assert captions == [model.caption(p)[0] for p in paths]


def test_the_openai_sdk_gets_the_caption(
    server: LiveServer, model: Multi2Cap, sounds: list[Path]
) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0)
    with sounds[0].open("rb") as handle:
        result = client.audio.transcriptions.create(model="multi2cap", file=handle)
    assert result.text == model.caption(sounds[0])[0]
    reply = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        files=_files(sounds[:1]),
        data={"model": "x", "response_format": "text"},
        timeout=60,
    )
    assert reply.status_code == 200 and reply.text == result.text
    reply = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        files=_files(sounds[:1]),
        data={"model": "x", "response_format": "srt"},
    )
    assert reply.status_code == 400
    assert "response_format" in reply.json()["error"]["message"]  # OpenAI's error shape


def test_the_openai_sdk_shows_the_servers_reasons(
    server: LiveServer, model: Multi2Cap, tmp_path: Path
) -> None:
    """Errors of the OpenAI-compatible route reach the SDK's exception with their message (it
    showed only "Error code: 400" when they came as FastAPI's `{"detail": ...}`)."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not a wave file")
    with broken.open("rb") as handle, pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="multi2cap", file=handle)
    assert "broken.wav:" in str(caught.value) and caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.body["message"] == str(caught.value).split(" - ", 1)[1]
    with broken.open("rb") as handle, pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="m", file=handle, response_format="srt")
    assert "response_format must be json or text, got 'srt'" in str(caught.value)
    # a request the route cannot parse (no `model`): 400 naming the field, as OpenAI answers
    reply = httpx.post(f"{server.url}/v1/audio/transcriptions", files=_files([broken]))
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["param"] == "model"
    assert error["message"].startswith("model: ") and set(error) == {
        "message",
        "type",
        "param",
        "code",
    }
    # the upload limit (refused from Content-Length, before the body is read)
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * 5_000)
    with (
        live_server(model, ServeSettings(max_upload_mb=0.002), tmp_path) as small,
        big.open("rb") as handle,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        limited = openai.OpenAI(base_url=f"{small.url}/v1", api_key="x", max_retries=0)
        limited.audio.transcriptions.create(model="m", file=handle)
    assert caught.value.status_code == 413
    assert "over the 0.002 MB upload limit" in str(caught.value)
    # the other routes keep FastAPI's shape
    other = httpx.post(f"{server.url}/v1/captions", files=_files([broken]), data={"model": "m"})
    assert other.status_code == 400 and other.json()["detail"].startswith("broken.wav:")


def test_health_model_and_openapi_docs(server: LiveServer) -> None:
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and {"model_calls", "clips", "held"} <= set(health)
    info = httpx.get(f"{server.url}/v1/model").json()
    assert info["id"] == "tiny" and info["server"]["max_batch"] == 8
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/captions", "/v1/audio/transcriptions", "/healthz", "/v1/model"} <= set(
        spec["paths"]
    )
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "/static/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text and "https://" not in docs.text  # works offline
    bundle = httpx.get(f"{server.url}/static/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert (
        httpx.get(f"{server.url}/static/app.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert httpx.get(f"{server.url}/static/..%2Fapp.py").status_code == 404
    assert httpx.get(f"{server.url}/static/swagger-ui/../../app.py").status_code == 404
