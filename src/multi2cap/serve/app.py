"""The captioning HTTP API (FastAPI): routes, request handling, the try-it page.

Routes: `POST /v1/captions` (multipart `file`, repeatable, + `num_beams`, `max_new_tokens`),
`POST /v1/audio/transcriptions` (OpenAI's shape: multipart `file` + `model`, reply
`{"text": caption}`, so the `openai` SDK works as a client; its errors in OpenAI's shape, see
`serve/openai_errors.py`), `GET /healthz` (batching counters),
`GET /v1/model` (what is loaded, and the decoding `limits` this server accepts: the page takes its
beam and token bounds from there, so it never offers what the server refuses), `GET /` (the page) with `/static/app.js` and `/static/style.css`,
and the OpenAPI docs at `/docs` (FastAPI's Swagger UI page, its JS/CSS vendored in
`page/swagger-ui/`, see SOURCE.txt there) and `/openapi.json`. Limits: `serve/limits.py`; batching:
`serve/batcher.py`. A server started with a `ClapReranker` (`serve --rerank clap`) re-ranks every
caption with CLAP (`multi2cap.model.rerank`; `rerank_scores=true` adds the scores to the
reply). Every page asset is served from the package (no CDN: works offline), under a
Content-Security-Policy that allows this origin only.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from multi2cap.media.audio import SAMPLE_RATE
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.model.rerank import ClapReranker
from multi2cap.serve.batcher import DecodeOptions, DynamicBatcher, QueueFullError
from multi2cap.serve.limits import (
    BodyLimit,
    ServeSettings,
    UploadRejected,
    make_work_dir,
    read_clip,
    staged_upload,
)
from multi2cap.serve.openai_errors import install_openai_errors

# The only files served from the package (the request names a key, never a path).
_ASSETS = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "swagger-ui/swagger-ui-bundle.js": "text/javascript",
    "swagger-ui/swagger-ui.css": "text/css",
}
_CSP = "default-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'"


class ClipCaption(BaseModel):
    """One clip's caption; on a re-ranking server asked for `rerank_scores`, also the CLAP
    score of the caption, the candidates tied with it, and every candidate with its score."""

    file: str
    caption: str
    duration_s: float
    clap_score: float | None = None
    tied: list[str] | None = None
    candidates: list[dict[str, Any]] | None = None


class CaptionsReply(BaseModel):
    captions: list[ClipCaption]
    model: str


class TranscriptionReply(BaseModel):
    text: str


def _display_name(filename: str | None, index: int) -> str:
    """The client's file name for messages and replies only (never used as a path)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1][:200]
    return name or f"file {index + 1}"


def create_app(
    model: Multi2Cap,
    *,
    model_id: str,
    summary: dict[str, Any] | None = None,
    settings: ServeSettings | None = None,
    work_dir: Path | None = None,
    reranker: ClapReranker | None = None,
) -> FastAPI:
    """The app serving `model` under the name `model_id` (`summary`: `GET /v1/model`'s extra
    fields, see `multi2cap.model.card.checkpoint_summary`). Staged uploads go to `work_dir`
    (a fresh private temporary folder, removed at shutdown, when None). With a `reranker`,
    every caption is its CLAP choice among one beam search's candidates; each upload is then
    also read at the CLAP's rate."""
    settings = settings or ServeSettings()
    generation = model.config.generation
    default_beams = generation.num_beams
    if reranker is not None:
        default_beams = reranker.config.beams_for(generation.num_beams)
    # The checkpoint's (and the reranker's) defaults are always accepted, even above the caps.
    beam_cap = max(settings.max_num_beams, default_beams)
    token_cap = max(settings.max_new_tokens_limit, generation.max_new_tokens)

    def caption_fn(clips: list[Any], options: DecodeOptions) -> list[Any]:
        if reranker is not None:
            return reranker.caption_waves(
                model,
                [wave for wave, _ in clips],
                [clap_wave for _, clap_wave in clips],
                batch_size=settings.max_batch,
                max_new_tokens=options.max_new_tokens,
                num_beams=options.num_beams,
            )
        return model.caption(
            clips,
            sampling_rate=SAMPLE_RATE,  # read_clip's rate
            num_beams=options.num_beams,
            max_new_tokens=options.max_new_tokens,
            batch_size=settings.max_batch,
        )

    batcher = DynamicBatcher(
        caption_fn,
        max_batch=settings.max_batch,
        max_wait_s=settings.max_wait_ms / 1000,
        max_queue=settings.max_queue,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_dir = work_dir is None
        app.state.work_dir = make_work_dir() if own_dir else work_dir
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()
            if own_dir:
                for leftover in app.state.work_dir.iterdir():
                    leftover.unlink(missing_ok=True)
                app.state.work_dir.rmdir()

    app = FastAPI(
        title="multi2cap",
        summary="Audio captioning with Multi2Cap, batched across concurrent requests.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # replaced below by the same Swagger UI, served from the package
        redoc_url=None,
    )
    app.state.batcher = batcher
    install_openai_errors(app)  # /v1/audio/...: errors as {"error": {"message", "type", ...}}

    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        detail=f"request body over the {settings.max_upload_mb:g} MB upload limit",
    )

    def options_from(num_beams: int | None, max_new_tokens: int | None) -> DecodeOptions:
        beams = num_beams if num_beams is not None else default_beams
        tokens = max_new_tokens if max_new_tokens is not None else generation.max_new_tokens
        low = reranker.config.candidates if reranker is not None else 1
        if not low <= beams <= beam_cap:
            why = f" (this server re-ranks {low} candidates per clip)" if low > 1 else ""
            raise HTTPException(422, f"num_beams must be {low}..{beam_cap}, got {beams}{why}")
        if not 1 <= tokens <= token_cap:
            raise HTTPException(422, f"max_new_tokens must be 1..{token_cap}, got {tokens}")
        return DecodeOptions(num_beams=beams, max_new_tokens=tokens)

    def load(upload: UploadFile, name: str) -> Any:
        """The clip at 16 kHz, and at the CLAP's rate when re-ranking (read from the file)."""
        limits = settings.decode_limits
        with staged_upload(upload.file, upload.filename, app.state.work_dir) as path:
            wave = read_clip(path, name, limits)
            if reranker is None:
                return wave
            return wave, read_clip(path, name, limits, reranker.scorer.sampling_rate)

    async def caption_uploads(
        uploads: list[UploadFile], options: DecodeOptions, scores: bool = False
    ) -> list[ClipCaption]:
        if len(uploads) > settings.max_files:
            raise HTTPException(
                413, f"{len(uploads)} files in one request; this server takes {settings.max_files}"
            )
        try:
            batcher.check_room(len(uploads))  # before decoding: refuse early under overload
            names = [_display_name(u.filename, i) for i, u in enumerate(uploads)]
            with batcher.arriving():  # batches forming now wait for these clips
                waves = [
                    await run_in_threadpool(load, u, n) for u, n in zip(uploads, names, strict=True)
                ]
                futures = batcher.submit(waves, options)
        except UploadRejected as err:
            raise HTTPException(err.status, err.detail) from None
        except QueueFullError as err:
            raise HTTPException(
                429, str(err), headers={"Retry-After": str(err.retry_after_s)}
            ) from None
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        replies = []
        for name, result, clip in zip(names, results, waves, strict=True):
            wave = clip if reranker is None else clip[0]
            reply = ClipCaption(
                file=name,
                caption=result if reranker is None else result.caption,
                duration_s=round(wave.shape[0] / SAMPLE_RATE, 3),
            )
            if scores:
                reply = reply.model_copy(update=result.to_record())
            replies.append(reply)
        return replies

    @app.post("/v1/captions", response_model=CaptionsReply, response_model_exclude_none=True)
    async def captions(
        file: list[UploadFile] = File(..., description="audio/video files (repeat the field)"),
        num_beams: int | None = Form(None, description="beam size; default: the checkpoint's"),
        max_new_tokens: int | None = Form(None, description="caption length budget in tokens"),
        rerank_scores: bool = Form(
            False, description="re-ranking servers: add clap_score, tied and candidates"
        ),
    ) -> CaptionsReply:
        """Caption one or more uploaded files (any format the front end reads)."""
        if rerank_scores and reranker is None:
            raise HTTPException(
                422, "rerank_scores: this server does not re-rank (start it with --rerank clap)"
            )
        options = options_from(num_beams, max_new_tokens)
        results = await caption_uploads(file, options, scores=rerank_scores)
        return CaptionsReply(captions=results, model=model_id)

    @app.post("/v1/audio/transcriptions", response_model=TranscriptionReply)
    async def transcriptions(
        file: UploadFile = File(..., description="one audio/video file"),
        model_name: str = Form(
            ..., alias="model", description="any name: this server serves one model"
        ),
        response_format: str = Form("json", description="json or text"),
        language: str | None = Form(None, description="ignored (captions are English)"),
        prompt: str | None = Form(None, description="ignored"),
        temperature: float | None = Form(None, description="ignored (decoding is greedy/beam)"),
    ) -> Any:
        """OpenAI's transcription shape: the caption of the file as `{"text": ...}`."""
        if response_format not in ("json", "text"):
            raise HTTPException(
                400, f"response_format must be json or text, got {response_format!r}"
            )
        (result,) = await caption_uploads([file], options_from(None, None))
        if response_format == "text":
            return PlainTextResponse(result.caption)
        return TranscriptionReply(text=result.caption)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and batching counters (model calls, clips, clips held, largest batch)."""
        return {"status": "ok", **vars(batcher.stats())}

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        """What is loaded: backbones, K, stage, decoding defaults, recorded validation scores,
        this server's batching and limits (and its re-ranking), and the decoding options'
        accepted ranges."""
        server = settings.model_dump()
        if reranker is not None:
            server["rerank"] = {
                "kind": "clap",
                "clap_model": reranker.scorer.source,
                **reranker.config.model_dump(),
            }
        return {
            "id": model_id,
            **(summary or {}),
            "server": server,
            "limits": {"num_beams": [1, beam_cap], "max_new_tokens": [1, token_cap]},
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_asset("index.html"), headers={"Content-Security-Policy": _CSP})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="multi2cap API",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in _ASSETS:  # a fixed set: the name never reaches the file system
            raise HTTPException(404, "not found")
        return Response(_asset(name), media_type=_ASSETS[name])

    return app


@functools.cache
def _asset(name: str) -> str:
    """A page file's text (read once: the Swagger UI bundle is 1.7 MB)."""
    return files("multi2cap.serve").joinpath("page", *name.split("/")).read_text(encoding="utf-8")


def _version() -> str:
    from multi2cap import __version__

    return __version__
