"""`multi2cap serve`: the captioning HTTP API with dynamic batching and its try-it page.

`create_app(model, model_id=...)` builds the FastAPI app (`serve/app.py`); `DynamicBatcher`
groups concurrent clips into batched model calls (`serve/batcher.py`); `ServeSettings` holds the
batching options and limits (`serve/limits.py`). See docs/serve.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multi2cap.serve.app import create_app
    from multi2cap.serve.batcher import DecodeOptions, DynamicBatcher, QueueFullError
    from multi2cap.serve.limits import ServeSettings

__all__ = ["DecodeOptions", "DynamicBatcher", "QueueFullError", "ServeSettings", "create_app"]

_HOMES = {
    "create_app": "app",
    "DecodeOptions": "batcher",
    "DynamicBatcher": "batcher",
    "QueueFullError": "batcher",
    "ServeSettings": "limits",
}


def __getattr__(name: str) -> Any:
    """Lazy exports: importing the package (e.g. for its page assets) loads no torch/FastAPI."""
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"multi2cap.serve.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'multi2cap.serve' has no attribute {name!r}")
