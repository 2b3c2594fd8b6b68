"""`multi2cap assets download`: the metric assets no Python registry ships, fetched from their
public layouts into the assets folder that resources.py searches (layout in its docstring).

| asset | source (default base, mirror option) | check |
|---|---|---|
| `spice`: `stanford-corenlp-3.6.0.jar` and `-models.jar` | Maven Central's layout, `{base}/edu/stanford/nlp/stanford-corenlp/3.6.0/` (`https://repo1.maven.org/maven2`, `--maven-url`) | the `.sha1` Maven publishes beside each artifact |
| `fense`: `echecker_clotho_audiocaps_base.ckpt` | GitHub release V0.1 of blmoistawinde/fense, `{base}/blmoistawinde/fense/releases/download/V0.1/` (`https://github.com`, `--fense-url`) | the sha256 aac-metrics pins |
| `fense`: the echecker's base BERT (config + tokenizer; its weights are in the checkpoint) | Hugging Face hub, the checkpoint's `model_type` (`HF_ENDPOINT` or `https://huggingface.co`, `--hf-endpoint`) | the hub's own |
| `sbert`: `sentence-transformers/paraphrase-TinyBERT-L6-v2` | Hugging Face hub (same) | the hub's own |

Every file is fetched by `multi2cap.download.fetch` (resumable, retried, verified, renamed into
place) or `huggingface_hub.snapshot_download` (resumable) into a staging folder beside the
final one; a group of files (the two jars; the checkpoint and its base BERT) moves into its
final place only once all of it is there and verified, so the metrics and `multi2cap info`
never see half an asset. Nothing here runs unless the user asks for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from multi2cap.download import DownloadError, Progress, Retry, fetch, fetch_text
from multi2cap.metrics.resources import (
    CORENLP_360_JARS,
    ECHECKER_BASE_SHA256,
    ECHECKER_NAME,
    PAPER_SBERT_MODEL,
    assets_dir,
    installed_echecker,
    installed_echecker_bert,
    installed_sbert,
    installed_spice_lib,
)

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
GITHUB = "https://github.com"
HF_HUB = "https://huggingface.co"
CORENLP_PATH = "edu/stanford/nlp/stanford-corenlp/3.6.0"
FENSE_RELEASE_PATH = "blmoistawinde/fense/releases/download/V0.1"
ASSETS = ("spice", "sbert", "fense")
#: What of the echecker's base BERT is needed: config and tokenizer (the checkpoint has weights).
BERT_CONFIG_FILES = ["config.json", "tokenizer*", "vocab.txt", "special_tokens_map.json", "*.model"]
#: What of a sentence-transformers model is needed: configs, tokenizer, one weights format.
SBERT_FILES = ["*.json", "*.txt", "*.model"]
_STAGING = ".staging"


@dataclass(frozen=True)
class Sources:
    """Base addresses of the three layouts (each may point at a mirror)."""

    maven_url: str = MAVEN_CENTRAL
    fense_url: str = GITHUB
    hf_endpoint: str | None = None  # None: HF_ENDPOINT, else https://huggingface.co

    @property
    def hub(self) -> str:
        return (self.hf_endpoint or os.environ.get("HF_ENDPOINT") or HF_HUB).rstrip("/")


@dataclass
class Installed:
    """What one asset download did: `paths` installed (or found already there)."""

    asset: str
    paths: list[Path]
    skipped: bool = False


def _staging(root: Path, asset: str) -> Path:
    folder = root / asset / _STAGING
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _drop_if_empty(folder: Path) -> None:
    """Remove a staging folder once everything in it has moved into place (one that is not
    empty keeps a partial download for the next run to resume)."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def _move_into_place(staged: Path, final: Path) -> None:
    """Rename a verified file or folder to its final name (replacing an older copy)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(staged, final)


def parse_sha1(text: str, url: str) -> str:
    """The digest in a Maven `.sha1` file (40 hex digits, sometimes followed by a file name)."""
    token = text.strip().split()[0].lower() if text.strip() else ""
    if len(token) != 40 or any(c not in "0123456789abcdef" for c in token):
        raise DownloadError(f"{url}: not a SHA-1 checksum file (found {text.strip()[:80]!r})")
    return token


def install_spice(
    root: Path,
    sources: Sources,
    retry: Retry,
    force: bool = False,
    progress: Progress | None = None,
) -> Installed:
    """The two CoreNLP 3.6.0 jars, each checked against Maven's `.sha1`, into `spice/lib/`."""
    lib = installed_spice_lib(root)
    finals = [lib / name for name in CORENLP_360_JARS]
    if not force and all(p.is_file() for p in finals):
        return Installed("spice", finals, skipped=True)
    staging = _staging(root, "spice")
    base = sources.maven_url.rstrip("/")
    for name in CORENLP_360_JARS:
        url = f"{base}/{CORENLP_PATH}/{name}"
        sha1 = parse_sha1(fetch_text(f"{url}.sha1", retry), f"{url}.sha1")
        fetch(url, staging / name, ("sha1", sha1), retry, progress)
    for name, final in zip(CORENLP_360_JARS, finals, strict=True):
        _move_into_place(staging / name, final)
    _drop_if_empty(staging)
    return Installed("spice", finals)


def _hf_snapshot(
    repo_id: str,
    dest: Path,
    patterns: list[str],
    sources: Sources,
    retry: Retry,
    weights: bool = False,
) -> None:
    """`snapshot_download` of `patterns` of `repo_id` (and with `weights` its first of
    model.safetensors, pytorch_model.bin) into `dest`, a staging folder, retried;
    huggingface_hub resumes its own partial files there."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    address = f"{sources.hub}/{repo_id}"
    if constants.is_offline_mode():
        raise DownloadError(
            f"{address}: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set; unset it for "
            "`multi2cap assets download`, the one command that uses the network"
        )
    last = "no attempt"
    for attempt in range(retry.attempts):
        retry.wait(attempt)
        try:
            extra: list[str] = []
            if weights:
                files = HfApi(endpoint=sources.hub).list_repo_files(repo_id)
                extra = [w for w in ("model.safetensors", "pytorch_model.bin") if w in files][:1]
            snapshot_download(
                repo_id,
                local_dir=dest,
                endpoint=sources.hub,
                allow_patterns=patterns + extra,
                etag_timeout=retry.timeout_s,
            )
            return
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as err:
            raise DownloadError(f"{address} not found on the hub: {_first_line(err)}") from err
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else None
            if status in (401, 403, 404):  # the hub answers 401 for a repo it does not know
                raise DownloadError(f"{address} not found on the hub: {_first_line(err)}") from err
            last = _first_line(err)
        except OSError as err:
            last = _first_line(err)
        except Exception as err:  # httpx's transport errors (connection reset, timeouts)
            if type(err).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore"):
                raise
            last = _first_line(err)
    raise DownloadError(f"could not download {address} after {retry.attempts} attempts: {last}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def install_sbert(
    root: Path,
    sources: Sources,
    retry: Retry,
    force: bool = False,
    progress: Progress | None = None,
) -> Installed:
    """The paper's Sentence-BERT model (configs, tokenizer, one weights file)."""
    final = installed_sbert(root)
    if not force and final.is_dir():
        return Installed("sbert", [final], skipped=True)
    staged = _staging(root, "sbert") / final.name
    _hf_snapshot(PAPER_SBERT_MODEL, staged, SBERT_FILES, sources, retry, weights=True)
    if not (staged / "config.json").is_file():
        raise DownloadError(f"{sources.hub}/{PAPER_SBERT_MODEL}: the snapshot has no config.json")
    _move_into_place(staged, final)
    _drop_if_empty(staged.parent)
    return Installed("sbert", [final])


def checkpoint_model_type(checkpoint: Path) -> str:
    """The base model id an echecker checkpoint names (`model_type`), read without executing
    any pickled code (`weights_only=True`)."""
    import torch

    try:
        states = torch.load(checkpoint, map_location="cpu", weights_only=True)
        return str(states["model_type"])
    except Exception as err:  # not a torch file, or not the echecker's layout
        raise DownloadError(
            f"{checkpoint}: not an echecker checkpoint with a `model_type` ({_first_line(err)})"
        ) from err


def install_fense(
    root: Path,
    sources: Sources,
    retry: Retry,
    force: bool = False,
    progress: Progress | None = None,
    sha256: str = ECHECKER_BASE_SHA256,
) -> Installed:
    """The echecker checkpoint (checked against `sha256`) and its base BERT's config and
    tokenizer; the checkpoint is moved into place last, as it marks FENSE installed."""
    final = installed_echecker(root)
    if not force and final.is_file():
        return Installed("fense", [final], skipped=True)
    staging = _staging(root, "fense")
    url = f"{sources.fense_url.rstrip('/')}/{FENSE_RELEASE_PATH}/{ECHECKER_NAME}.ckpt"
    staged = fetch(url, staging / final.name, ("sha256", sha256), retry, progress)
    model_type = checkpoint_model_type(staged)
    bert_final = installed_echecker_bert(model_type, root)
    if force or not bert_final.is_dir():
        bert_staged = staging / bert_final.name
        _hf_snapshot(model_type, bert_staged, BERT_CONFIG_FILES, sources, retry)
        _move_into_place(bert_staged, bert_final)
    _move_into_place(staged, final)
    _drop_if_empty(staging)
    return Installed("fense", [final, bert_final])


INSTALLERS: dict[str, Callable[..., Installed]] = {
    "spice": install_spice,
    "sbert": install_sbert,
    "fense": install_fense,
}


def install(
    assets: list[str],
    root: Path | None = None,
    sources: Sources | None = None,
    retry: Retry | None = None,
    force: bool = False,
    progress: Progress | None = None,
    report: Callable[[str, Installed | DownloadError], None] | None = None,
) -> dict[str, Installed | DownloadError]:
    """Install each asset in turn; one failing does not stop the others. Returns asset ->
    `Installed` or the `DownloadError` (which names the address)."""
    root = root or assets_dir()
    results: dict[str, Installed | DownloadError] = {}
    for name in assets:
        if name not in INSTALLERS:
            raise ValueError(f"unknown asset {name!r}: choose from {', '.join(ASSETS)} or all")
        start = time.monotonic()
        try:
            outcome: Installed | DownloadError = INSTALLERS[name](
                root, sources or Sources(), retry or Retry(), force, progress
            )
        except DownloadError as err:
            outcome = err
        results[name] = outcome
        if report is not None:
            report(f"{name} ({time.monotonic() - start:.0f} s)", outcome)
    return results
