"""The raters' and the admin's links (`links.csv`, `admin_link.txt`): where they point.

A link is the address raters reach plus `/r/<token>` (`/a/<token>` for the admin); the tokens
are the credentials, so both files are the researcher's only (mode 0600), and the database keeps
only their digests. Links must reach the server that serves the study:

- A study created without `--base-url` has links that **follow the server**: `human serve`
  rewrites both files for the address it listens on (`http://HOST:PORT`), or for its own
  `--base-url`. Two studies served on two ports each get links to their own port.
- A study created with `--base-url URL` keeps URL (a TLS proxy's public address, docs/human.md);
  if URL is a loopback address whose port is not the one `serve` would listen on, the links
  would reach another server (or none): `serve` refuses to start and says what to do.
- `serve --host 0.0.0.0` (any address) cannot tell which address raters use: give `--base-url`.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from multi2cap.human.security import token_digest
from multi2cap.io import atomic_write_text

#: Where the links of a study point before any server has served it (`human serve`'s default).
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
LINKS_FILE = "links.csv"
ADMIN_FILE = "admin_link.txt"
LOOPBACK_NAMES = frozenset(("localhost", "127.0.0.1", "::1"))
_ANY_ADDRESS = frozenset(("0.0.0.0", "::", ""))


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_links(
    folder: Path, base_url: str, rater_tokens: Mapping[str, str], admin_token: str
) -> tuple[dict[str, str], str]:
    """Write `links.csv` (`rater,link`) and `admin_link.txt` for `base_url`, readable by the
    owner only; returns (the raters' links, the admin link)."""
    base = base_url.rstrip("/")
    links = {name: f"{base}/r/{token}" for name, token in rater_tokens.items()}
    admin_link = f"{base}/a/{admin_token}"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rater", "link"])
    writer.writerows(links.items())
    atomic_write_text(folder / LINKS_FILE, buffer.getvalue())
    atomic_write_text(folder / ADMIN_FILE, admin_link + "\n")
    for name in (LINKS_FILE, ADMIN_FILE):
        os.chmod(folder / name, 0o600)
    return links, admin_link


def served_base_url(
    study_base_url: str | None, host: str, port: int, override: str | None = None
) -> tuple[str, bool]:
    """(the address the links must start with, whether `links.csv` is to be rewritten for it)
    for a server on `host:port`; ValueError when the study's links cannot reach that server."""
    if override:
        parts = urlsplit(override)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--base-url must be an http(s) address, found {override!r}")
        return override.rstrip("/"), True
    if study_base_url is None:
        if host in _ANY_ADDRESS:
            raise ValueError(
                f"serving on {host or 'every address'}, the links cannot name the address "
                "raters reach: pass --base-url (e.g. http://this-machine.example:PORT)"
            )
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}", True
    parts = urlsplit(study_base_url)
    link_port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.hostname and is_loopback(parts.hostname) and link_port != port:
        raise ValueError(
            f"this study's links start with {study_base_url} (its --base-url), but this server "
            f"would listen on port {port}: the links would reach another server or none. Serve "
            f"it with --port {link_port}, or pass --base-url http://127.0.0.1:{port} to rewrite "
            "links.csv and admin_link.txt for this port"
        )
    return study_base_url, False


def relink(
    folder: Path, base_url: str, rater_digests: Mapping[str, bytes], admin_digest: bytes
) -> bool:
    """Rewrite `links.csv` and `admin_link.txt` for `base_url`, keeping their tokens (checked
    against the study's digests). False when `links.csv` is missing (nothing to rewrite)."""
    links_file = folder / LINKS_FILE
    if not links_file.is_file():
        return False
    tokens: dict[str, str] = {}
    with open(links_file, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            name, link = row.get("rater") or "", row.get("link") or ""
            token = link.rpartition("/r/")[2]
            if rater_digests.get(name) != token_digest(token):
                raise ValueError(
                    f"{links_file}: the link of rater {name!r} is not one of this study's"
                )
            tokens[name] = token
    if set(tokens) != set(rater_digests):
        raise ValueError(
            f"{links_file}: lists {len(tokens)} raters, the study has {len(rater_digests)}"
        )
    admin_file = folder / ADMIN_FILE
    if not admin_file.is_file():
        raise ValueError(f"{admin_file} is missing: links.csv cannot be rewritten without it")
    admin_text = admin_file.read_text(encoding="utf-8").strip()
    admin_token = admin_text.rpartition("/a/")[2]
    if token_digest(admin_token) != admin_digest:
        raise ValueError(f"{admin_file}: not this study's admin link")
    write_links(folder, base_url, tokens, admin_token)
    return True
