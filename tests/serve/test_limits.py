"""Each limit refuses with its code, against a live uvicorn; no staged upload outlives its
request and the client's file name never becomes a server path. Memory is the peak of the
process's traced allocations while the server (a thread of this process) answers."""

from __future__ import annotations

import io
import math
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from media_helpers import write_silent_flac
from serve_helpers import LiveServer, live_server

from multi2cap.media.audio import load_audio
from multi2cap.media.errors import MediaError
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.serve.limits import ServeSettings

LIMITS = ServeSettings(
    max_batch=1, max_wait_ms=0, max_queue=1, max_upload_mb=0.3, max_files=2, max_duration_s=30
)


@pytest.fixture(scope="module")
def server(model: Multi2Cap, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    with live_server(model, LIMITS, tmp_path_factory.mktemp("work")) as live:
        yield live


def _wav(seconds: float, freq: float = 440.0) -> bytes:
    """A tone as 8-kHz 8-bit WAV: 30 s fit under the 0.3 MB body limit."""
    t = np.arange(int(seconds * 8000)) / 8000
    buffer = io.BytesIO()
    wave = (0.3 * np.sin(2 * math.pi * freq * t)).astype(np.float32)
    sf.write(buffer, wave, 8000, format="WAV", subtype="PCM_U8")
    return buffer.getvalue()


def _post(server: LiveServer, files: list[tuple[str, bytes]], **data: str) -> httpx.Response:
    parts = [("file", (name, payload, "application/octet-stream")) for name, payload in files]
    return httpx.post(f"{server.url}/v1/captions", files=parts, data=data, timeout=120)


def test_a_body_over_the_upload_limit_is_refused_with_413(server: LiveServer) -> None:
    big = b"\0" * 400_000  # over 0.3 MB
    reply = _post(server, [("big.wav", big)])
    assert reply.status_code == 413
    assert "0.3 MB upload limit" in reply.json()["detail"]

    # Streamed without Content-Length (chunked): refused while it arrives.
    boundary = "multi2capboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def chunks():
        yield head
        for _ in range(40):
            yield b"\0" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    reply = httpx.post(
        f"{server.url}/v1/captions",
        content=chunks(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=60,
    )
    assert reply.status_code == 413
    assert list(server.work_dir.iterdir()) == []


def test_too_long_too_many_and_bad_options_are_refused(server: LiveServer) -> None:
    reply = _post(server, [("long.wav", _wav(31.0))])
    assert reply.status_code == 413 and "long.wav: longer than the 30-s limit" in reply.text
    reply = _post(server, [("a.wav", _wav(0.5))] * 3)
    assert reply.status_code == 413 and "3 files" in reply.text
    reply = _post(server, [("a.wav", _wav(0.5))], num_beams="99")
    assert reply.status_code == 422 and "num_beams must be 1..8" in reply.text
    reply = _post(server, [("a.wav", _wav(0.5))], max_new_tokens="0")
    assert reply.status_code == 422
    assert _post(server, [("ok.wav", _wav(29.0))]).status_code == 200  # just under the limit
    assert list(server.work_dir.iterdir()) == []


def test_unreadable_audio_gets_400_with_the_front_ends_reason(
    server: LiveServer, tmp_path: Path
) -> None:
    payload = b"RIFF this is not a wave file at all"
    local = tmp_path / "x.wav"
    local.write_bytes(payload)
    with pytest.raises(MediaError) as err:
        load_audio(local)
    # The client names a path; the server uses only its last component, for messages.
    reply = _post(server, [("../../../tmp/evil.wav", payload)])
    assert reply.status_code == 400
    detail = reply.json()["detail"]
    assert detail == f"evil.wav: {err.value.problem.replace(str(local), 'evil.wav')}"
    assert str(server.work_dir) not in detail and "upload-" not in detail
    assert _post(server, [("empty.ogg", b"")]).status_code == 400
    assert list(server.work_dir.iterdir()) == []
    assert not Path("/tmp/evil.wav").exists()


def test_a_full_queue_answers_429_with_retry_after(server: LiveServer) -> None:
    """With room for one clip, a request arriving while another is captioned is refused. The
    long request is restarted when it finished before the second could arrive."""
    long_clip = _wav(29.0, freq=300.0)
    for _ in range(10):
        results: list[httpx.Response] = []

        def caption_long(into: list[httpx.Response] = results) -> None:
            into.append(
                _post(server, [("long.wav", long_clip)], num_beams="8", max_new_tokens="256")
            )

        worker = threading.Thread(target=caption_long)
        worker.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/healthz").json()["held"] == 0 and worker.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        reply = _post(server, [("short.wav", _wav(0.5))])
        worker.join()
        assert results and results[0].status_code == 200, results
        if reply.status_code == 429:
            assert int(reply.headers["Retry-After"]) >= 1
            assert "queue is full" in reply.json()["detail"]
            break
        assert reply.status_code == 200
    else:
        pytest.fail("never saw 429 while the only queue slot was taken")
    assert list(server.work_dir.iterdir()) == []


def _traced_post(server: LiveServer, name: str, payload: bytes) -> tuple[httpx.Response, int]:
    """The reply, and the peak memory traced in this process while the server answered."""
    tracemalloc.start()
    try:
        reply = _post(server, [(name, payload)])
        return reply, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def decoding_server(model: Multi2Cap, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    """LIMITS, and at most 20 M samples to decode per clip (the default is 115.2 M)."""
    settings = ServeSettings(**{**LIMITS.model_dump(), "max_input_samples": 20_000_000})
    with live_server(model, settings, tmp_path_factory.mktemp("work")) as live:
        yield live


def test_small_uploads_of_huge_audio_are_refused_from_the_header(
    decoding_server: LiveServer, tmp_path: Path
) -> None:
    """Issue 26 item 4: 0.25 MB of FLAC holding 595 s of 192 kHz x 8 channels (3.6 GB as
    float32) made the server allocate GBs before refusing it; a 655,350-Hz file was captioned.
    Each is refused with 413 and its reason, before decoding (the review: 4.2-7.4 GB)."""
    cases = [
        (write_silent_flac(tmp_path / "bomb.flac", 192_000, 8, 595.0, block=16384),
         "bomb.flac: longer than the 30-s limit (595.0 s, as its header says)"),
        (write_silent_flac(tmp_path / "wide.flac", 192_000, 8, 20.0, block=16384),
         "wide.flac: 30.7 M samples to decode (192000 Hz x 8 channels x 20.0 s, its header "
         "says), more than the 20 M accepted per file"),
        (write_silent_flac(tmp_path / "fast.flac", 655_350, 1, 1.0),
         "fast.flac: sample rate 655350 Hz is above the 384000 Hz accepted"),
    ]  # fmt: skip
    for path, reason in cases:
        reply, peak = _traced_post(decoding_server, path.name, path.read_bytes())
        assert reply.status_code == 413, reply.text
        assert reply.json()["detail"] == reason
        assert peak < 8 * 2**20, f"{path.name}: {peak / 2**20:.1f} MB"
    assert list(decoding_server.work_dir.iterdir()) == []


def test_wide_audio_within_the_limits_is_decoded_in_bounded_memory(
    server: LiveServer, tmp_path: Path
) -> None:
    """12 s of 192 kHz x 8 channels (74 MB as float32) is accepted; the server holds its
    16-kHz mono samples (0.8 MB) and a block, not the file's."""
    path = write_silent_flac(tmp_path / "wide.flac", 192_000, 8, 12.0, block=16384)
    reply, peak = _traced_post(server, "wide.flac", path.read_bytes())
    assert reply.status_code == 200, reply.text
    assert reply.json()["captions"][0]["duration_s"] == 12.0
    assert peak < 16 * 2**20, f"{peak / 2**20:.1f} MB"
