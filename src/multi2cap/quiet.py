"""No "Loading weights" bars: transformers 5 draws a tqdm bar every time it loads a model's
weights (`core_model_loading.py`, `desc="Loading weights"`), even for a local folder in a
fraction of a second, so `multi2cap caption` printed one before its table, and commands that load
several backbones printed several. `hide_weight_loading_bars()` is called once, by the CLI's root
(`multi2cap.cli.main`), before any command runs.

Only those bars go: downloads keep theirs (huggingface_hub's bars, which a user waiting for a
model wants to see), and so does every bar of our own. transformers offers the hook for this
(`transformers.utils.logging.set_tqdm_hook`); because the CLI imports transformers only inside
the commands that need it, the hook is installed when transformers' logging module is first
imported (a one-shot import finder), so commands that never touch transformers pay nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

# The `desc` of the transformers bars that report loading, not downloading.
HIDDEN_BARS = frozenset({"Loading weights"})

_LOGGING_MODULE = "transformers.utils.logging"


def hide_weight_loading_bars() -> None:
    """Silence transformers' `HIDDEN_BARS` in this process, now or when transformers loads."""
    module = sys.modules.get(_LOGGING_MODULE)
    if module is not None:
        _install(module)
    elif not any(isinstance(finder, _InstallOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _InstallOnImport())


def _install(module: ModuleType) -> None:
    set_hook = getattr(module, "set_tqdm_hook", None)
    if set_hook is None:  # a transformers without the hook (< 5) draws no such bar
        return
    previous: Callable[..., Any] | None = None

    def hook(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("desc") in HIDDEN_BARS:
            kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous else factory(*args, **kwargs)

    if getattr(module, "_multi2cap_quiet", False):
        return
    previous = set_hook(hook)
    module._multi2cap_quiet = True  # type: ignore[attr-defined]


class _InstallOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when `transformers.utils.logging` is imported, it lets the other
    finders locate it, removes itself, and installs the hook right after the module runs."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _LOGGING_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            _install(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
