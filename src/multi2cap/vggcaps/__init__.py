"""The VggCaps dataset builder (paper section 3.1, Appendix A.3.1): videos + categories ->
frame, audio and mel-spectrogram image -> two-stage vision-LLM captions -> post-processing ->
1 % test split -> vggcaps.jsonl, manifest.jsonl, vggcaps.parquet.

Entry point: `build_vggcaps(BuildConfig(...)) -> BuildSummary` (see `multi2cap.vggcaps.pipeline`).
"""

from multi2cap.vggcaps.backends import OpenAISettings
from multi2cap.vggcaps.cost import Prices
from multi2cap.vggcaps.finalize import finalize_dataset
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.records import BatchSettings, BuildConfig, BuildSummary

__all__ = [
    "BatchSettings",
    "BuildConfig",
    "BuildSummary",
    "OpenAISettings",
    "Prices",
    "build_vggcaps",
    "finalize_dataset",
]
