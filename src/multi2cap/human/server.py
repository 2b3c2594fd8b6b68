"""Running the study's web app with uvicorn: loopback by default, a warning for anything else.

A real study runs behind the researcher's own TLS reverse proxy (docs/human.md); the app itself
speaks plain HTTP and logs no request lines (the links in them are the raters' credentials).
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from multi2cap.webserver import ConnectionLimits, uvicorn_options

log = logging.getLogger(__name__)
LOOPBACK_NAMES = frozenset(("localhost", "127.0.0.1", "::1"))


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """The warning to show when `host` is not a loopback address, else None."""
    if is_loopback(host):
        return None
    return (
        f"binding to {host} exposes the study beyond this machine over plain HTTP: serve it on "
        "127.0.0.1 behind a TLS reverse proxy instead (see docs/human.md)"
    )


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
