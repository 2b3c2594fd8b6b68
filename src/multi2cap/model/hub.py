"""Loading backbones by hub id or folder, with errors that say how to supply a missing one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from multi2cap.assets import AssetNotFoundError


@contextmanager
def hub_asset(what: str, field: str, source: str) -> Iterator[None]:
    """Re-raise a failed load (transformers raises `OSError` for a missing folder, an id that is
    not cached offline, or no network) as `AssetNotFoundError` naming the asset, the config field
    and the way to provide it."""
    try:
        yield
    except AssetNotFoundError:
        raise
    except OSError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AssetNotFoundError(
            f"{what} {source!r} (config `{field}`) could not be loaded: {reason} "
            f"Set `{field}` to a local folder, or download it once on a machine with network: "
            f"`hf download {source}` (gated models need `hf auth login` first)."
        ) from err
