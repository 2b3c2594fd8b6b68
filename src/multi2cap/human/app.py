"""The raters' and the admin's web app (ASGI, FastAPI): plain HTML and a little JavaScript, all
served by the app itself (no CDN, no fonts, no build step).

Routes:
- `GET /r/{token}` (a rater's personal link) and `GET /a/{token}` (the admin link) open a session
  (cookie `m2c_session`, HttpOnly, SameSite=Lax) and redirect to `/rate` or `/admin`, so the
  token leaves the address bar. The same link opens a new session on any device: progress lives
  in the database, not in the browser.
- `GET /api/state`: the rater's current item; `POST /api/answer` `{"key", "stage", "score" |
  "caption" | "choice"}` stores one answer and returns the next state (one round trip per
  answer). The page knows only what it shows: a system-MOS item is a MOS item, an A/B item two
  captions as A and B; system names and dataset ids never reach the browser.
- `GET /media/{key}/audio|frame`: an assignment's media, for its own rater only (the frame only
  after the stage-1 caption).
- `GET /admin/api/summary`, `GET /admin/export.zip`: progress, gold failures, the summary so far
  (`human/summary.py`: MOS, per system with the paired tests, or the A/B preferences), export.

Every database operation runs on the `StoreWorker` thread; every reply to an answer is sent after
the commit that stores it. Tokens never reach a log: the app logs no request line.
"""

from __future__ import annotations

import asyncio
import html
import io
import string
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multi2cap.human.security import confined_file, forgery_reason
from multi2cap.human.store import (
    ANSWER_COLUMN,
    DB_NAME,
    GOLD_MAX_SCORE,
    PAGE_MODES,
    Session,
    StudyError,
    StudyStore,
    open_study_db,
)
from multi2cap.human.worker import MAX_BATCH, StoreWorker

COOKIE = "m2c_session"
#: Files under human/static/ the app serves, with their media types (nothing else is reachable).
STATIC_FILES = {
    "rate.js": "text/javascript; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_MEDIA_TYPES = {"audio": "audio/flac", "frame": "image/jpeg"}


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers (and no-store) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _static_text(name: str) -> str:
    return resources.files("multi2cap.human").joinpath("static", name).read_text("utf-8")


def _page(name: str, **values: str) -> str:
    template = string.Template(_static_text(name))
    return template.substitute({k: html.escape(v, quote=True) for k, v in values.items()})


def _message_page(status: int, title: str, text: str) -> HTMLResponse:
    body = _page("message.html", title=title, text=text)
    return HTMLResponse(body, status_code=status)


def _error(err: StudyError) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.status)


# --- operations run on the database thread (each one transaction step) ----------------------
def _open_session(store: StudyStore, token: str, admin: bool, now: float) -> tuple[str, str]:
    if admin:
        if not store.is_admin_token(token):
            raise StudyError(403, "this admin link is not valid")
        return store.create_session(None, now)
    rater = store.rater_for_token(token)
    if rater is None:
        raise StudyError(403, "this link is not valid: check it against the one you were sent")
    return store.create_session(rater, now)


def _rater_session(store: StudyStore, sid: str | None) -> Session:
    session = store.session(sid)
    if session is None or session.rater_id is None:
        raise StudyError(401, "no rater session: open your personal link again")
    return session


def _admin_session(store: StudyStore, sid: str | None) -> Session:
    session = store.session(sid)
    if session is None or session.rater_id is not None:
        raise StudyError(401, "no admin session: open the admin link again")
    return session


def _page_op(store: StudyStore, sid: str | None) -> tuple[str, str, str]:
    session = _rater_session(store, sid)
    assert session.rater_id is not None
    return session.csrf, PAGE_MODES[store.kind], store.rater_name(session.rater_id)


def _state_op(store: StudyStore, sid: str | None, now: float) -> dict[str, Any]:
    session = _rater_session(store, sid)
    assert session.rater_id is not None
    return store.state(session.rater_id, now)


def _answer_op(
    store: StudyStore, sid: str | None, headers: dict[str, str], body: Any, now: float
) -> dict[str, Any]:
    session = _rater_session(store, sid)
    assert session.rater_id is not None
    reason = forgery_reason(headers, session.csrf)
    if reason is not None:
        raise StudyError(403, reason)
    if not isinstance(body, dict):
        raise StudyError(422, "expected a JSON object {key, stage, score | caption | choice}")
    raw = body.get(ANSWER_COLUMN[store.kind])
    return store.answer(session.rater_id, body.get("key"), body.get("stage"), raw, now)


def _media_op(store: StudyStore, sid: str | None, key: str, kind: str) -> str:
    session = _rater_session(store, sid)
    assert session.rater_id is not None
    return store.media_path(session.rater_id, key, kind)


def _summary_op(store: StudyStore, sid: str | None) -> dict[str, Any]:
    _admin_session(store, sid)
    return admin_summary(store)


def admin_summary(store: StudyStore) -> dict[str, Any]:
    """Progress per rater, and the study's summary so far (gold items left out)."""
    from multi2cap.human.summary import study_summary

    raters = [
        {
            "rater": p.name,
            "done": p.done,
            "total": p.total,
            "gold_done": p.gold_done,
            "gold_failed": p.gold_failed,
            "last_answer_at": p.last_answer_at,
        }
        for p in store.progress()
    ]
    out: dict[str, Any] = {"kind": store.kind, "raters": raters, "gold_max_score": GOLD_MAX_SCORE}
    if store.kind != "captions":
        out["summary"] = study_summary(store.kind, store.settings, store.answer_rows())
    return out


def create_app(study: str | Path, max_batch: int = MAX_BATCH) -> FastAPI:
    """The web app for the study folder `study` (which must hold `study.sqlite`); `max_batch`
    bounds the answers committed together (see `StoreWorker`)."""
    root = Path(study).resolve()
    conn = open_study_db(root, readonly=True)  # a folder that is no study fails here, clearly
    try:
        StudyStore(conn)
    finally:
        conn.close()
    holder: dict[str, Any] = {"users": 0}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Counted: several servers (or test clients) may run one app object at once.
        if holder["users"] == 0:
            holder["worker"] = StoreWorker(root / DB_NAME, max_batch)
        holder["users"] += 1
        try:
            yield
        finally:
            holder["users"] -= 1
            if holder["users"] == 0:
                holder.pop("worker").close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def route(path: str, method: str = "GET") -> Any:
        """Register a plain Starlette endpoint: the handlers parse and validate their own input,
        so FastAPI's per-request dependency solving would be pure cost (measured: about a third
        of the server's time per answer in bench_human.py)."""

        def register(handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                return await handler(request, **request.path_params)

            app.router.add_route(path, endpoint, methods=[method], include_in_schema=False)
            return handler

        return register

    async def run(fn: Any, *args: Any) -> Any:
        return await holder["worker"].call(fn, *args)

    def secure_cookie(request: Request) -> bool:
        return request.url.scheme == "https"

    async def open_link(request: Request, token: str, admin: bool) -> Response:
        if len(token) > 64:
            return _message_page(403, "Link not valid", "This link is not valid.")
        try:
            sid, _ = await run(_open_session, token, admin, time.time())
        except StudyError as err:
            return _message_page(err.status, "Link not valid", err.message)
        response = RedirectResponse("/admin" if admin else "/rate", status_code=303)
        response.set_cookie(
            COOKIE, sid, httponly=True, samesite="lax", secure=secure_cookie(request), path="/"
        )
        return response

    @route("/")
    async def index(request: Request) -> HTMLResponse:
        return _message_page(200, "Listening study", "Open the personal link you were sent.")

    @route("/r/{token}")
    async def rater_link(request: Request, token: str) -> Response:
        return await open_link(request, token, admin=False)

    @route("/a/{token}")
    async def admin_link(request: Request, token: str) -> Response:
        return await open_link(request, token, admin=True)

    @route("/rate")
    async def rate_page(request: Request) -> HTMLResponse:
        try:
            csrf, kind, name = await run(_page_op, request.cookies.get(COOKIE))
        except StudyError as err:
            return _message_page(err.status, "Session ended", err.message)
        return HTMLResponse(_page("rate.html", csrf=csrf, kind=kind, rater=name))

    @route("/api/state")
    async def api_state(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await run(_state_op, request.cookies.get(COOKIE), time.time()))
        except StudyError as err:
            return _error(err)

    @route("/api/answer", "POST")
    async def api_answer(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None  # reported after the session and forgery checks
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            sid = request.cookies.get(COOKIE)
            return JSONResponse(await run(_answer_op, sid, headers, body, time.time()))
        except StudyError as err:
            return _error(err)

    @route("/media/{key}/{kind}")
    async def media(request: Request, key: str, kind: str) -> Response:
        try:
            relative = await run(_media_op, request.cookies.get(COOKIE), key, kind)
        except StudyError as err:
            return _error(err)
        inside = relative.removeprefix("media/") if relative.startswith("media/") else ""
        path = confined_file(root / "media", inside)
        if path is None:
            return _error(StudyError(404, "not found"))
        return FileResponse(
            path, media_type=_MEDIA_TYPES[kind], headers={"cache-control": "private, no-store"}
        )

    @route("/static/{name}")
    async def static(request: Request, name: str) -> Response:
        if name not in STATIC_FILES:
            return _error(StudyError(404, "not found"))
        return Response(_static_text(name), media_type=STATIC_FILES[name])

    @route("/admin")
    async def admin_page(request: Request) -> HTMLResponse:
        try:
            await run(_admin_session, request.cookies.get(COOKIE))
        except StudyError as err:
            return _message_page(err.status, "Session ended", err.message)
        return HTMLResponse(_page("admin.html"))

    @route("/admin/api/summary")
    async def admin_api(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await run(_summary_op, request.cookies.get(COOKIE)))
        except StudyError as err:
            return _error(err)

    @route("/admin/export.zip")
    async def admin_export(request: Request) -> Response:
        try:
            await run(_admin_session, request.cookies.get(COOKIE))
        except StudyError as err:
            return _error(err)
        data = await asyncio.to_thread(export_zip, root)
        return Response(
            data,
            media_type="application/zip",
            headers={"content-disposition": 'attachment; filename="export.zip"'},
        )

    app.add_middleware(SecurityHeaders)
    return app


def export_zip(study: Path) -> bytes:
    """The `export` command's files for `study`, zipped in memory (the admin's download)."""
    from multi2cap.human.export import export_study

    with tempfile.TemporaryDirectory() as tmp:
        files = export_study(study, Path(tmp))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.relative_to(tmp).as_posix())
    return buffer.getvalue()
