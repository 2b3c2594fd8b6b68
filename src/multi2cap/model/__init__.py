"""The Multi2Cap model: CED audio encoder, CLIP vision tower, AV-Grounding, VFR, Ground Adapter
and an LLM decoder. `from multi2cap.model import Multi2Cap, Multi2CapConfig` (loaded lazily so
that importing a submodule such as `multi2cap.model.ced` does not import transformers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multi2cap.model.config import Multi2CapConfig
    from multi2cap.model.multi2cap import Multi2Cap, Multi2CapOutput, ProbeEmbeddings

__all__ = ["Multi2Cap", "Multi2CapConfig", "Multi2CapOutput", "ProbeEmbeddings"]


def __getattr__(name: str) -> Any:
    if name == "Multi2CapConfig":
        from multi2cap.model.config import Multi2CapConfig

        return Multi2CapConfig
    if name in __all__:
        from multi2cap.model import multi2cap

        return getattr(multi2cap, name)
    raise AttributeError(f"module 'multi2cap.model' has no attribute {name!r}")
