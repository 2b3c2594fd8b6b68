"""Errors of the OpenAI-compatible route in OpenAI's shape.

The `openai` SDK (and any client written against OpenAI's API) reads a failed call's reason from
`{"error": {"message", "type", "param", "code"}}`; FastAPI's own `{"detail": ...}` left it
showing only "Error code: 400". Every error under `OPENAI_PATHS` (`/v1/audio/...`) takes that
shape: our refusals (`HTTPException`), request validation (a missing `model` or `file`: 400, as
OpenAI answers, with `param` naming the field), the upload limit (`serve/limits.py`), unknown
routes, and unexpected failures (500). The other routes keep FastAPI's `detail`.

`type` follows OpenAI's classes: `invalid_request_error` for 4xx, `rate_limit_error` (code
`rate_limit_exceeded`) for 429, `server_error` for 5xx.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

OPENAI_PATHS = ("/v1/audio/",)


def is_openai_path(path: str) -> bool:
    """Whether `path` is served in OpenAI's shape."""
    return path.startswith(OPENAI_PATHS)


def openai_error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """`{"error": {...}}` for an HTTP `status` and its human-readable `message`."""
    if status == 429:
        kind, code = "rate_limit_error", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", None
    else:
        kind, code = "invalid_request_error", None
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    """(message, param) of the first problem, e.g. ("model: Field required", "model")."""
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    param = location[0] if location else None
    text = str(first.get("msg", "invalid request"))
    return (f"{param}: {text}" if param else text), param


def install_openai_errors(app: FastAPI) -> None:
    """Answer errors under `OPENAI_PATHS` in OpenAI's shape (the module docstring)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not is_openai_path(request.url.path):
            return await http_exception_handler(request, exc)
        return JSONResponse(
            openai_error_body(exc.status_code, str(exc.detail)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if not is_openai_path(request.url.path):
            return await request_validation_exception_handler(request, exc)
        message, param = _validation_message(exc)
        return JSONResponse(openai_error_body(400, message, param), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # Starlette still logs the traceback (it re-raises after sending this answer).
        if not is_openai_path(request.url.path):  # Starlette's own answer
            return PlainTextResponse("Internal Server Error", status_code=500)
        message = f"internal error ({type(exc).__name__}); see the server's log"
        return JSONResponse(openai_error_body(500, message), status_code=500)
