"""Where the metrics' external assets live, how a user supplies a missing one, and what can run.

Nothing here downloads anything (`multi2cap assets download`, in `install.py`, does, and only
when asked). Every asset is a named input: a keyword argument of `evaluate`/`Evaluator`, or else
an environment variable, or else what `multi2cap assets download` installed in the assets folder
(`MULTI2CAP_ASSETS_DIR`, default `~/.cache/multi2cap/assets`), or else a default location (the
`pycocoevalcap` wheel for the jars, the local Hugging Face cache for models).

Assets folder layout (written by `install.py`, read here; a file appears under its final name
only once it is whole and verified):

    spice/lib/stanford-corenlp-3.6.0.jar, spice/lib/stanford-corenlp-3.6.0-models.jar
    fense/echecker_clotho_audiocaps_base.ckpt, fense/<model_type>/ (its base BERT's config and
        tokenizer; `<model_type>` is the checkpoint's, "/" written as "--")
    sbert/sentence-transformers--paraphrase-TinyBERT-L6-v2/
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from multi2cap.assets import AssetNotFoundError

ASSETS_DIR_ENV = "MULTI2CAP_ASSETS_DIR"
SPICE_LIB_ENV = "MULTI2CAP_SPICE_LIB"
SBERT_MODEL_ENV = "MULTI2CAP_SBERT_MODEL"
ECHECKER_ENV = "MULTI2CAP_FENSE_ECHECKER"
ECHECKER_BERT_ENV = "MULTI2CAP_FENSE_BERT"
BERT_SCORE_MODEL_ENV = "MULTI2CAP_BERT_SCORE_MODEL"

#: The Sentence-BERT model of FENSE and of the paper's "SB" column (sentence-transformers hub id).
PAPER_SBERT_MODEL = "sentence-transformers/paraphrase-TinyBERT-L6-v2"
#: The FENSE error detector the paper's FENSE/SPIDEr-FL use (GitHub release V0.1) and its sha256.
ECHECKER_NAME = "echecker_clotho_audiocaps_base"
ECHECKER_BASE_SHA256 = "1a719f090af70614bbdb9f9437530b7e133c48cfa4a58d964de0d47fc974a2fa"
CORENLP_360_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
#: BERTScore's default model (BERTScore paper and aac-metrics), a hub id.
BERT_SCORE_MODEL = "roberta-large"

_SPICE_HOWTO = (
    "run `multi2cap assets download spice` (both jars from Maven Central, `--maven-url` for a "
    f"mirror), or put {CORENLP_360_JARS[0]} and {CORENLP_360_JARS[1]} in one folder and set "
    f"{SPICE_LIB_ENV} to that folder (or pass spice_lib=... / --spice-lib)"
)
_SBERT_HOWTO = (
    "run `multi2cap assets download sbert` (Hugging Face hub, `--hf-endpoint` for a mirror), or "
    f"save {PAPER_SBERT_MODEL} to a folder and set {SBERT_MODEL_ENV}=DIR (or pass "
    "sbert_model=... / --sbert-model)"
)
_ECHECKER_HOWTO = (
    "run `multi2cap assets download fense` (the checkpoint from GitHub release V0.1 of "
    "blmoistawinde/fense and its base BERT's config and tokenizer), or set "
    f"{ECHECKER_ENV} to {ECHECKER_NAME}.ckpt (or pass echecker=... / --echecker) with its base "
    f"BERT in the local Hugging Face cache or in a folder named by {ECHECKER_BERT_ENV}"
)


def assets_dir() -> Path:
    """The folder `multi2cap assets download` installs into and the metrics search:
    `$MULTI2CAP_ASSETS_DIR`, else `$XDG_CACHE_HOME/multi2cap/assets`, else
    `~/.cache/multi2cap/assets`."""
    override = os.environ.get(ASSETS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "multi2cap" / "assets"


def installed_spice_lib(root: Path | None = None) -> Path:
    """Where the CoreNLP 3.6.0 jars go in an assets folder (default: `assets_dir()`)."""
    return (root or assets_dir()) / "spice" / "lib"


def installed_echecker(root: Path | None = None) -> Path:
    """Where the FENSE error detector checkpoint goes in an assets folder."""
    return (root or assets_dir()) / "fense" / f"{ECHECKER_NAME}.ckpt"


def installed_echecker_bert(model_type: str, root: Path | None = None) -> Path:
    """Where the echecker's base BERT (config + tokenizer) goes in an assets folder."""
    return (root or assets_dir()) / "fense" / model_type.replace("/", "--")


def installed_sbert(root: Path | None = None) -> Path:
    """Where the paper's Sentence-BERT model goes in an assets folder."""
    return (root or assets_dir()) / "sbert" / PAPER_SBERT_MODEL.replace("/", "--")


class MetricUnavailableError(RuntimeError):
    """A requested metric cannot run here; the message says which asset is missing and how to
    provide it."""


@dataclass(frozen=True)
class CocoJars:
    """The jars that ship inside the `pycocoevalcap==1.2` wheel."""

    ptb_tokenizer: Path
    meteor: Path
    spice: Path


def coco_jars() -> CocoJars:
    """Locate the CoreNLP 3.4.1 tokenizer, METEOR 1.5 and SPICE 1.0 jars of the pycocoevalcap
    wheel without importing it (its `__init__` pulls pycocotools)."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise AssetNotFoundError(
            "pycocoevalcap not installed: `pip install pycocoevalcap==1.2` (it ships the PTB "
            "tokenizer, METEOR and SPICE jars)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    jars = CocoJars(
        ptb_tokenizer=root / "tokenizer" / "stanford-corenlp-3.4.1.jar",
        meteor=root / "meteor" / "meteor-1.5.jar",
        spice=root / "spice" / "spice-1.0.jar",
    )
    for jar in (jars.ptb_tokenizer, jars.meteor, root / "meteor" / "data" / "paraphrase-en.gz"):
        if not jar.is_file():
            raise AssetNotFoundError(
                f"{jar} missing: reinstall the wheel (`pip install --force-reinstall "
                "pycocoevalcap==1.2`)"
            )
    return jars


def spice_lib_dir(spice_lib: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the two CoreNLP 3.6.0 jars SPICE needs (in no Python registry): the
    argument, `MULTI2CAP_SPICE_LIB`, or the assets folder's `spice/lib` once both jars are in."""
    value = spice_lib if spice_lib is not None else os.environ.get(SPICE_LIB_ENV)
    if not value:
        installed = installed_spice_lib()
        if all((installed / name).is_file() for name in CORENLP_360_JARS):
            return installed
        raise AssetNotFoundError(f"SPICE needs Stanford CoreNLP 3.6.0: {_SPICE_HOWTO}")
    folder = Path(value)
    missing = [name for name in CORENLP_360_JARS if not (folder / name).is_file()]
    if missing:
        raise AssetNotFoundError(f"SPICE: {', '.join(missing)} missing in {folder}: {_SPICE_HOWTO}")
    return folder


def _hf_cached(repo_id: str) -> Path | None:
    """The local snapshot of a hub model, or None; never touches the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a hub id at all (e.g. a local path that does not exist)
        return None
    return Path(found).parent if isinstance(found, str) else None


def resolve_sbert_model(sbert_model: str | os.PathLike[str] | None = None) -> str:
    """A local folder (or, if already cached, hub id) for the Sentence-BERT model.

    Order: the argument, `MULTI2CAP_SBERT_MODEL`, the paper's model in the assets folder, then in
    the local HF cache.
    """
    value = str(sbert_model) if sbert_model is not None else os.environ.get(SBERT_MODEL_ENV)
    if value and Path(value).is_dir():
        return value
    repo_id = value or PAPER_SBERT_MODEL
    if "/" not in repo_id:
        repo_id = f"sentence-transformers/{repo_id}"
    if repo_id == PAPER_SBERT_MODEL and installed_sbert().is_dir():
        return str(installed_sbert())
    cached = _hf_cached(repo_id)
    if cached is not None:
        return str(cached)
    raise AssetNotFoundError(
        f"Sentence-BERT model {value or PAPER_SBERT_MODEL!r} is neither a local folder nor in "
        f"the local Hugging Face cache: {_SBERT_HOWTO}"
    )


def resolve_echecker(echecker: str | os.PathLike[str] | None = None) -> Path:
    """The FENSE error-detector checkpoint (`torch.save({"model_type", "num_classes",
    "state_dict"})`), from the argument, `MULTI2CAP_FENSE_ECHECKER`, or the assets folder."""
    value = echecker if echecker is not None else os.environ.get(ECHECKER_ENV)
    if not value:
        if installed_echecker().is_file():
            return installed_echecker()
        raise AssetNotFoundError(f"FENSE error detector not configured: {_ECHECKER_HOWTO}")
    path = Path(value)
    if not path.is_file():
        raise AssetNotFoundError(f"FENSE error detector {path} not found: {_ECHECKER_HOWTO}")
    return path


def resolve_echecker_bert(model_type: str, echecker_bert: str | None = None) -> str:
    """The echecker's base BERT (config + tokenizer): the argument, `MULTI2CAP_FENSE_BERT`, the
    assets folder's copy of the checkpoint's `model_type`, else `model_type` itself (a hub id
    the local Hugging Face cache may hold)."""
    value = echecker_bert or os.environ.get(ECHECKER_BERT_ENV)
    if value:
        return value
    installed = installed_echecker_bert(model_type)
    return str(installed) if installed.is_dir() else model_type


def resolve_bert_score_model(model: str | os.PathLike[str] | None = None) -> str:
    """A local folder (or cached hub id) for BERTScore's encoder: the argument,
    `MULTI2CAP_BERT_SCORE_MODEL`, else roberta-large from the local HF cache."""
    value = str(model) if model is not None else os.environ.get(BERT_SCORE_MODEL_ENV)
    if value and Path(value).is_dir():
        return value
    for repo_id in (value,) if value else (BERT_SCORE_MODEL, f"FacebookAI/{BERT_SCORE_MODEL}"):
        cached = _hf_cached(repo_id)
        if cached is not None:
            return str(cached)
    raise AssetNotFoundError(
        f"BERTScore model {value or BERT_SCORE_MODEL!r} is neither a local folder nor in the "
        f"local Hugging Face cache: save it to a folder (`hf download {value or BERT_SCORE_MODEL}"
        f" --local-dir DIR` on a machine with network) and set {BERT_SCORE_MODEL_ENV}=DIR (or "
        "pass bert_score_model=... / --bert-score-model)"
    )


def asset_statuses() -> list[tuple[str, bool, str]]:
    """(asset, available, path or how to provide it) for every external asset of the metrics."""
    rows: list[tuple[str, bool, str]] = []
    checks = (
        (
            "pycocoevalcap jars (PTB tokenizer, METEOR 1.5)",
            lambda: str(coco_jars().meteor.parent.parent),
        ),
        ("SPICE: Stanford CoreNLP 3.6.0 jars", lambda: str(spice_lib_dir())),
        ("Sentence-BERT paraphrase-TinyBERT-L6-v2", resolve_sbert_model),
        ("FENSE error detector (echecker)", lambda: str(resolve_echecker())),
        ("BERTScore model (roberta-large)", resolve_bert_score_model),
    )
    for name, locate in checks:
        try:
            rows.append((name, True, locate()))
        except AssetNotFoundError as err:
            rows.append((name, False, str(err)))
    return rows
