"""Where the metrics' external assets live, how a user supplies a missing one, and what can run.

Nothing here downloads anything. Every asset is a named input: a keyword argument of
`evaluate`/`Evaluator`, or else an environment variable, or else a default location (the
`pycocoevalcap` wheel for the jars, the local Hugging Face cache for models).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from multi2cap.assets import AssetNotFoundError

SPICE_LIB_ENV = "MULTI2CAP_SPICE_LIB"
SBERT_MODEL_ENV = "MULTI2CAP_SBERT_MODEL"
ECHECKER_ENV = "MULTI2CAP_FENSE_ECHECKER"
ECHECKER_BERT_ENV = "MULTI2CAP_FENSE_BERT"

#: The Sentence-BERT model of FENSE and of the paper's "SB" column (sentence-transformers hub id).
PAPER_SBERT_MODEL = "sentence-transformers/paraphrase-TinyBERT-L6-v2"
#: sha256 of the FENSE error detector the paper's FENSE/SPIDEr-FL use (GitHub release V0.1).
ECHECKER_BASE_SHA256 = "1a719f090af70614bbdb9f9437530b7e133c48cfa4a58d964de0d47fc974a2fa"
CORENLP_360_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")

_SPICE_HOWTO = (
    f"put {CORENLP_360_JARS[0]} and {CORENLP_360_JARS[1]} (both inside "
    "stanford-corenlp-full-2015-12-09.zip from the Stanford NLP site) in one folder and set "
    f"{SPICE_LIB_ENV} to that folder (or pass spice_lib=... / --spice-lib)"
)
_SBERT_HOWTO = (
    f"download {PAPER_SBERT_MODEL} on a machine with internet "
    "(`SentenceTransformer(...).save(DIR)`) and set "
    f"{SBERT_MODEL_ENV}=DIR (or pass sbert_model=... / --sbert-model)"
)
_ECHECKER_HOWTO = (
    "download echecker_clotho_audiocaps_base.ckpt (GitHub release V0.1 of blmoistawinde/fense) "
    f"and set {ECHECKER_ENV} to the file (or pass echecker=... / --echecker); its base BERT "
    f"(config + tokenizer, e.g. bert-base-uncased) must be in the local Hugging Face cache or in "
    f"a folder named by {ECHECKER_BERT_ENV}"
)


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
    """The user's folder holding the two CoreNLP 3.6.0 jars SPICE needs (not in any registry)."""
    value = spice_lib if spice_lib is not None else os.environ.get(SPICE_LIB_ENV)
    if not value:
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

    Order: the argument, `MULTI2CAP_SBERT_MODEL`, the paper's model in the local HF cache.
    """
    value = str(sbert_model) if sbert_model is not None else os.environ.get(SBERT_MODEL_ENV)
    if value and Path(value).is_dir():
        return value
    repo_id = value or PAPER_SBERT_MODEL
    if "/" not in repo_id:
        repo_id = f"sentence-transformers/{repo_id}"
    cached = _hf_cached(repo_id)
    if cached is not None:
        return str(cached)
    raise AssetNotFoundError(
        f"Sentence-BERT model {value or PAPER_SBERT_MODEL!r} is neither a local folder nor in "
        f"the local Hugging Face cache: {_SBERT_HOWTO}"
    )


def resolve_echecker(echecker: str | os.PathLike[str] | None = None) -> Path:
    """The FENSE error-detector checkpoint (`torch.save({"model_type", "num_classes",
    "state_dict"})`), from the argument or `MULTI2CAP_FENSE_ECHECKER`."""
    value = echecker if echecker is not None else os.environ.get(ECHECKER_ENV)
    if not value:
        raise AssetNotFoundError(f"FENSE error detector not configured: {_ECHECKER_HOWTO}")
    path = Path(value)
    if not path.is_file():
        raise AssetNotFoundError(f"FENSE error detector {path} not found: {_ECHECKER_HOWTO}")
    return path


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
    )
    for name, locate in checks:
        try:
            rows.append((name, True, locate()))
        except AssetNotFoundError as err:
            rows.append((name, False, str(err)))
    return rows
