"""Running the study's web app with uvicorn: loopback by default, a warning for anything else,
and links that reach this server (`prepare_links`, rules in `human/links.py`).

A real study runs behind the researcher's own TLS reverse proxy (docs/human.md); the app itself
speaks plain HTTP and logs no request lines (the links in them are the raters' credentials).
"""

from __future__ import annotations

import logging
from pathlib import Path

from multi2cap.human.links import is_loopback, relink, served_base_url
from multi2cap.human.store import StudyStore, open_study_db
from multi2cap.webserver import ConnectionLimits, uvicorn_options

log = logging.getLogger(__name__)


def exposure_warning(host: str) -> str | None:
    """The warning to show when `host` is not a loopback address, else None."""
    if is_loopback(host):
        return None
    return (
        f"binding to {host} exposes the study beyond this machine over plain HTTP: serve it on "
        "127.0.0.1 behind a TLS reverse proxy instead (see docs/human.md)"
    )


def prepare_links(
    study: str | Path, host: str, port: int, base_url: str | None = None
) -> tuple[str, bool | None]:
    """Make `links.csv` and `admin_link.txt` reach a server on `host:port` (or `base_url`):
    (their address, True when rewritten, False when already right, None when `links.csv` is
    missing). ValueError when they cannot reach it (see `served_base_url`)."""
    conn = open_study_db(study, readonly=True)
    try:
        store = StudyStore(conn)
        public, rewrite = served_base_url(store.settings.get("base_url"), host, port, base_url)
        if not rewrite:
            return public, False
        digests = {
            str(r["name"]): bytes(r["token_sha256"])
            for r in conn.execute("SELECT name, token_sha256 FROM raters")
        }
        admin = bytes.fromhex(store.admin_token_digest())
    finally:
        conn.close()
    return public, (True if relink(Path(study), public, digests, admin) else None)


def serve_study(
    study: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve `study` until interrupted (blocking), under `limits` (`multi2cap.webserver`)."""
    import uvicorn

    from multi2cap.human.app import create_app

    app = create_app(study)
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        server_header=False,
        **uvicorn_options(limits),
    )
