"""The connection-limit options of the two web servers, `serve` and `human serve` (one
declaration, one vocabulary; what they bound: `multi2cap.webserver`)."""

from __future__ import annotations

import typer

HEADER_TIMEOUT = typer.Option(
    10.0, "--header-timeout-s", min=0.1, help="Seconds a client has to send a request's headers."
)
BODY_TIMEOUT = typer.Option(
    120.0, "--body-timeout-s", min=0.1, help="Seconds a client has to send a request's body."
)
MAX_CONNECTIONS = typer.Option(
    256, "--max-connections", min=1, help="Open connections; one more gets 503 and is closed."
)
