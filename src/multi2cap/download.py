"""Fetch one file over HTTP(S) so that a half-written file is never taken for a whole one.

`fetch(url, target, digest=...)` writes into `<target>.part` beside the target, resumes a
`.part` left by an earlier attempt or a dropped connection with an HTTP Range request
(`Range: bytes=N-`, answered `206 Partial Content`; a server that ignores it answers 200 and the
file restarts), retries dropped connections, timeouts and 408/429/5xx answers with exponential
backoff, checks the digest, and only then renames the file to `target` (`os.replace`, atomic
within one file system). A wrong digest deletes the `.part`: nothing is installed. Every error
(`DownloadError`) names the address.

Standard library only (urllib follows redirects and honours HTTP(S)_PROXY / NO_PROXY); imports
nothing of multi2cap, so every layer may use it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Called as bytes arrive: (url, bytes on disk, total bytes or None when the server does not say).
Progress = Callable[[str, int, int | None], None]

_CHUNK = 1 << 16
_USER_AGENT = "multi2cap-assets (+https://pypi.org/project/multi2cap/)"


class DownloadError(RuntimeError):
    """A file could not be fetched or failed its check; the message names the address."""


class _Retryable(Exception):
    """A failure worth another attempt (dropped connection, timeout, 408/429/5xx)."""


@dataclass(frozen=True)
class Retry:
    """`attempts` tries per file; the wait before try k+1 is `backoff_s * 2**(k-1)`, at most
    `max_wait_s`; `timeout_s` bounds each socket operation (connect, each read)."""

    attempts: int = 5
    backoff_s: float = 1.0
    max_wait_s: float = 30.0
    timeout_s: float = 60.0

    def wait(self, attempt: int) -> None:
        """Sleep before attempt number `attempt` (0-based; no wait before the first)."""
        if attempt > 0:
            time.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_wait_s))


def _open(url: str, headers: dict[str, str], timeout: float) -> http.client.HTTPResponse:
    """The response, or `_Retryable` / `DownloadError` by kind of failure."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **headers})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code in (408, 429) or err.code >= 500:
            raise _Retryable(f"HTTP {err.code} {err.reason}") from err
        if err.code == 416:
            raise  # the caller handles "range not satisfiable"
        raise DownloadError(f"HTTP {err.code} {err.reason} for {url}") from err
    except urllib.error.URLError as err:
        if isinstance(err.reason, OSError):
            raise _Retryable(f"cannot connect ({err.reason})") from err
        raise DownloadError(f"{url}: {err.reason}") from err
    except ValueError as err:  # not a URL urllib can open ("unknown url type")
        raise DownloadError(f"{url}: {err}") from err
    except (OSError, http.client.HTTPException) as err:
        raise _Retryable(f"{type(err).__name__}: {err}") from err


def fetch_text(url: str, retry: Retry | None = None, limit: int = 1 << 20) -> str:
    """A small text file (a `.sha1` beside a Maven artifact), with the same retries."""
    retry = retry or Retry()
    last = "no attempt"
    for attempt in range(retry.attempts):
        retry.wait(attempt)
        try:
            with _open(url, {}, retry.timeout_s) as response:
                return response.read(limit).decode("utf-8", "replace")
        except urllib.error.HTTPError as err:  # 416 is not expected without a Range
            raise DownloadError(f"HTTP {err.code} {err.reason} for {url}") from err
        except (_Retryable, OSError, http.client.HTTPException) as err:
            last = str(err)
    raise DownloadError(f"could not download {url} after {retry.attempts} attempts: {last}")


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """(first byte, total or None) from `Content-Range: bytes a-b/total`."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if match is None:
        return None
    return int(match[1]), None if match[2] == "*" else int(match[2])


def _transfer(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    """Bring `part` to the whole file, resuming from its current size. Raises `_Retryable` on
    a connection that ends early (what is on disk stays for the next attempt)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = _open(url, headers, timeout)
    except urllib.error.HTTPError as err:  # 416: the .part already holds every byte, or more
        size = re.search(r"/(\d+)\s*$", err.headers.get("Content-Range") or "")
        if size is not None and int(size[1]) == offset:
            return
        part.unlink(missing_ok=True)
        raise _Retryable(f"HTTP 416 for a resume at byte {offset}: starting again") from err
    with response:
        total: int | None = None
        span = _content_range(response.headers.get("Content-Range"))
        if offset and response.status == 206 and span is not None and span[0] == offset:
            mode, total = "ab", span[1]
        else:  # a fresh download, or the server ignored the Range: start from byte 0
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        with open(part, mode) as handle:
            try:
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    offset += len(chunk)
                    if progress is not None:
                        progress(url, offset, total)
            except (OSError, http.client.HTTPException) as err:
                raise _Retryable(f"connection lost after {offset} bytes ({err})") from err
            finally:
                handle.flush()
                os.fsync(handle.fileno())
    if total is not None and offset != total:
        raise _Retryable(f"connection closed after {offset} of {total} bytes")


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file (`algorithm` as hashlib names it: "sha1", "sha256")."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    url: str,
    target: Path,
    digest: tuple[str, str] | None,
    retry: Retry | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download `url` to `target` through `<target>.part` (resumable, retried, then checked
    against `digest` = (algorithm, expected hex) and renamed into place). Returns `target`.

    Raises `DownloadError` naming `url`: a 4xx answer at once; connection failures after
    `retry.attempts` tries (the `.part` stays, and the next call resumes it); a digest mismatch
    after deleting the `.part` (nothing installed).
    """
    retry = retry or Retry()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last = "no attempt"
    for attempt in range(retry.attempts):
        retry.wait(attempt)
        try:
            _transfer(url, part, retry.timeout_s, progress)
            break
        except _Retryable as err:
            last = str(err)
    else:
        raise DownloadError(
            f"could not download {url} after {retry.attempts} attempts: {last}; "
            f"{part.stat().st_size if part.exists() else 0} bytes kept in {part}, the next run "
            "resumes from there"
        )
    if digest is not None:
        algorithm, expected = digest
        found = file_digest(part, algorithm)
        if found != expected.lower():
            part.unlink()
            raise DownloadError(
                f"{url}: {algorithm} mismatch (expected {expected.lower()}, downloaded file has "
                f"{found}); the file was deleted and nothing installed"
            )
    os.replace(part, target)
    return target
