"""The web app's security primitives: secret tokens, request-origin checks, confined media paths.

- **Tokens** are 128 random bits (`secrets.token_urlsafe(16)`, 22 characters). Only their SHA-256
  is stored; a presented token is hashed and compared against every stored hash with
  `hmac.compare_digest`, with no early exit, so the time taken says nothing about which hash (or
  how much of one) matched.
- **Cross-site forgery**: a state-changing request must carry the session's CSRF token in the
  `X-CSRF-Token` header (a cross-site page can neither read it nor set custom headers without a
  CORS preflight the app never grants), must be JSON, and, when the browser says where it comes
  from (`Origin`, `Sec-Fetch-Site`), must come from this very origin. The session cookie is
  `HttpOnly; SameSite=Lax` as a further layer.
- **Media** are looked up by opaque keys, never by a path from the URL; the file a key names is
  resolved (symlinks included) and served only when it lies inside the study's `media/` folder.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

TOKEN_BYTES = 16  # 128 bits
CSRF_HEADER = "x-csrf-token"
#: `Sec-Fetch-Site` values a state-changing request may carry ("none": typed in the address bar).
ALLOWED_FETCH_SITES = frozenset(("same-origin", "none"))


def new_token() -> str:
    """A fresh URL-safe secret of 128 random bits."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> bytes:
    """SHA-256 of a token: what the database stores instead of the token itself."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def match_token(token: str, digests: Iterable[tuple[int, bytes]]) -> int | None:
    """The id whose stored digest matches `token`, comparing every candidate in constant time."""
    presented = token_digest(token)
    found: int | None = None
    for ident, digest in digests:
        if hmac.compare_digest(presented, digest) and found is None:
            found = ident
    return found


def same_secret(presented: str | None, expected: str) -> bool:
    """Constant-time equality of a presented secret (None or empty never matches)."""
    if not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def forgery_reason(headers: Mapping[str, str], csrf_expected: str) -> str | None:
    """Why a state-changing request looks forged, or None when it passes every check.

    `headers` are the request's headers with lower-case names (Starlette's `Headers` is).
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ALLOWED_FETCH_SITES:
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    host = headers.get("host", "")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()):
        return f"request from another origin refused (Origin: {origin}, host: {host})"
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return f"expected a JSON body (Content-Type: application/json), found {content_type!r}"
    if not same_secret(headers.get(CSRF_HEADER), csrf_expected):
        return "missing or wrong CSRF token (reload the page)"
    return None


def confined_file(root: Path, relative: str) -> Path | None:
    """`root/relative` when it is a regular file whose real path lies inside `root`'s real path.

    Returns None for absolute or `..` paths, and for a symlink (anywhere on the way) that leads
    outside `root`: such files are never served, whatever the database says.
    """
    if not relative or os.path.isabs(relative) or ".." in Path(relative).parts:
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([real_root, real]) != real_root or not os.path.isfile(real):
        return None
    return Path(real)
