"""What the server accepts, and how an upload becomes a waveform without trusting the client.

Limits (`ServeSettings`): a request body of at most `max_upload_mb` MB (all its files together;
refused with 413 before it is read when its Content-Length says so, else as soon as the bytes
streamed in pass the limit: `BodyLimit`), at most `max_files` files per request (413), and per
clip (413, `media.audio.DecodeLimits`): at most `max_duration_s` seconds, a sample rate of at
most `max_sample_rate`, and at most `max_input_samples` samples to decode (rate x channels x
seconds: 0.95 MB of FLAC can hold 595 s of 192 kHz x 8 channels, 914 M samples). These are
read from the file's header and refused before decoding; a header that lies or is silent is
caught while decoding, which is bounded anyway (blocks, downmixed and resampled one at a time:
memory holds the 16-kHz output and one block). Decoding options within bounds (422), at most
`max_queue` clips held by the server (429 with `Retry-After`, see `serve/batcher.py`), and audio
the front end cannot read gets 400 with its reason.

Uploads are copied to a file the server names itself (`upload-<random><suffix>` in the server's
own temporary folder; the client's file name contributes only a short alphanumeric suffix, which
picks the decoder), decoded, and removed in a `finally`, so nothing the client sends names a
path on the server and no temporary file outlives its request.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multi2cap.media.audio import MAX_SAMPLE_RATE, DecodeLimits, load_audio
from multi2cap.media.errors import AudioTooLargeError, MediaError
from multi2cap.serve.openai_errors import is_openai_path, openai_error_body


class ServeSettings(BaseModel):
    """Batching and limits of `multi2cap serve` (the CLI's options map onto these fields)."""

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(32, ge=1, description="clips per model call")
    max_wait_ms: float = Field(20.0, ge=0, description="longest wait for companions, ms")
    max_queue: int = Field(256, ge=1, description="clips held at once (waiting or running)")
    max_upload_mb: float = Field(50.0, gt=0, description="request body limit, MB (10^6 bytes)")
    max_files: int = Field(32, ge=1, description="files per request")
    max_duration_s: float = Field(600.0, gt=0, description="longest clip, seconds")
    max_sample_rate: int = Field(MAX_SAMPLE_RATE, ge=8000, description="highest rate, Hz")
    max_input_samples: int = Field(
        115_200_000,
        ge=1,
        description="samples decoded per clip, all channels (rate x channels x seconds; the "
        "default is 600 s of 96 kHz stereo)",
    )
    max_num_beams: int = Field(8, ge=1)
    max_new_tokens_limit: int = Field(256, ge=1, description="largest `max_new_tokens` accepted")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @property
    def decode_limits(self) -> DecodeLimits:
        """What decoding one clip may cost (checked from its header, then while decoding)."""
        return DecodeLimits(
            max_sample_rate=self.max_sample_rate,
            max_duration_s=self.max_duration_s,
            max_input_samples=self.max_input_samples,
        )


class BodyLimit:
    """ASGI middleware: POST bodies over `max_bytes` get 413 with a JSON `detail` (in OpenAI's
    shape on the OpenAI-compatible route).

    A declared Content-Length over the limit is refused without reading the body; otherwise the
    bytes are counted as they arrive and the request fails with `HTTPException(413)` raised from
    `receive` (FastAPI re-raises HTTP errors raised while it parses a form), so a chunked upload
    is cut off at the limit and never spooled whole. FastAPI's own `max_body_size` answers in
    plain text instead of the API's JSON, hence this."""

    def __init__(self, app: ASGIApp, max_bytes: int, detail: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = detail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            body = (
                openai_error_body(413, self.detail)
                if is_openai_path(scope["path"])
                else {"detail": self.detail}
            )
            await JSONResponse(body, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self.detail)
            return message

        await self.app(scope, limited, send)


class UploadRejected(Exception):
    """An upload the server refuses: `status` is the HTTP code, `detail` the reason shown."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(detail)


_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")


def safe_suffix(filename: str | None) -> str:
    """The lower-cased extension of a client's file name when it is short and alphanumeric
    (`.ogg`, `.mp4`), else "": only the decoder choice depends on it (containers go to PyAV)."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if _SUFFIX.match(suffix) else ""


@contextmanager
def staged_upload(source: BinaryIO, filename: str | None, work_dir: Path) -> Iterator[Path]:
    """Copy an uploaded stream to a server-named file in `work_dir`; removed on exit."""
    path = work_dir / f"upload-{uuid.uuid4().hex}{safe_suffix(filename)}"
    try:
        with path.open("wb") as out:
            shutil.copyfileobj(source, out, length=1 << 20)
        yield path
    finally:
        path.unlink(missing_ok=True)


def read_clip(
    path: Path, filename: str, limits: DecodeLimits, sample_rate: int | None = None
) -> np.ndarray:
    """The staged upload as a mono float32 waveform `(n,)` (16 kHz unless `sample_rate`), as
    `Multi2Cap.caption` would read the same file. Raises `UploadRejected`: 413 past `limits`
    (from the header, before decoding, or as soon as decoding shows it), 400 unreadable; the
    reason names the client's file name, never the server path."""
    try:
        if sample_rate is None:
            return load_audio(path, limits=limits)
        return load_audio(path, sample_rate, limits=limits)
    except MediaError as err:
        # The decoders' messages quote the file they opened: show the client's name instead.
        problem = err.problem.replace(str(path), filename).replace(path.name, filename)
        status = 413 if isinstance(err, AudioTooLargeError) else 400
        raise UploadRejected(status, f"{filename}: {problem}") from None


def make_work_dir() -> Path:
    """A private temporary folder for one server's staged uploads (mode 0700)."""
    return Path(tempfile.mkdtemp(prefix="multi2cap-serve-"))
