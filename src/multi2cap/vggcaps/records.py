"""The records every stage of the VggCaps build shares: the build's config and summary, the
selected clip, the caption identity, and the shapes of the records written to disk.

Each record that goes to disk is one `TypedDict` (`VggCapsRecord` for `vggcaps.jsonl` and
`vggcaps.parquet`, `FailureRecord` for the failure logs); column lists are derived from them,
never written out a second time. Choice sets are `Literal`s with their tuples from `get_args`.

Both the pipeline stages (`extract`, `caption`, `finalize`, `pipeline`) and the Batch API backend
(`batch`) import this module; it imports none of them, so there is no cycle.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, get_args

from multi2cap.fsnames import printable
from multi2cap.vggcaps.backends import OpenAISettings
from multi2cap.vggcaps.catalog import ClipSpec
from multi2cap.vggcaps.cost import Estimate, Prices
from multi2cap.vggcaps.prompts import PromptSet
from multi2cap.vggcaps.split import DEFAULT_SPLIT_SEED, TEST_FRACTION
from multi2cap.vggcaps.store import stage_key

BackendName = Literal["openai", "openai-batch", "offline"]
Step = Literal["extract", "caption", "split"]
FailureStage = Literal["extract", "stage1", "stage2"]
BACKENDS: tuple[BackendName, ...] = get_args(BackendName)
STEPS: tuple[Step, ...] = get_args(Step)
DATASET_NAME = "vggcaps"
CLIP_SECONDS = 10.0


@dataclass
class BatchSettings:
    """Batch API limits (OpenAI: <= 50,000 requests and <= 200 MB per input file) and polling."""

    max_requests: int = 50_000
    max_bytes: int = 200_000_000
    poll_interval_s: float = 60.0
    max_wait_s: float = 26 * 3600.0


@dataclass
class BuildConfig:
    """Everything one build needs.

    `videos`/`categories`: the clip folder and its CSV (see `multi2cap.vggcaps.catalog`);
    `out`: the output folder. `backend`: 'openai', 'openai-batch' or 'offline'. `content_retries`:
    how many times a rejected output is re-asked per stage. `shard`: (i, N) by stable hash of the
    id. `limit`: at most this many clips (after sharding, in id order). `workers`: extraction
    processes. `spectrogram`: `multi2cap.media.spectrogram_image.SpectrogramImageSettings`
    (None: its defaults). `offline_concurrency`: threads computing offline captions.
    """

    out: Path
    videos: Path | None = None
    categories: Path | None = None
    backend: BackendName = "openai"
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    prices: Prices = field(default_factory=Prices)
    prompt_version: str = "v1"
    content_retries: int = 2
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None
    dry_run: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    clip_seconds: float = CLIP_SECONDS
    spectrogram: Any = None
    jpeg_quality: int = 90
    split_seed: int = DEFAULT_SPLIT_SEED
    test_fraction: float = TEST_FRACTION
    progress: bool = True
    steps: tuple[Step, ...] = STEPS
    offline_concurrency: int = 4

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if printable(self.out) != str(self.out):
            raise ValueError(
                f"--out {printable(self.out)}: the output folder's name is not UTF-8 (shown "
                "with \\xNN escapes); its paths go into manifest.jsonl as text and to "
                "decoders that need UTF-8: pick or rename a folder with a UTF-8 name (video "
                "folders may have any name)"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        unknown = set(self.steps) - set(STEPS)
        if unknown:
            raise ValueError(f"unknown steps {sorted(unknown)}; known: {STEPS}")
        # checked here, not at the split step: that runs after every request was paid for
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ValueError(
                "--test-fraction / test_fraction must be in [0, 1] (0: no test split, 1: all "
                f"test), found {self.test_fraction!r}"
            )


@dataclass
class BuildSummary:
    """What a run did. `failed` counts selected clips that are unfinished after the run
    (listed in failures.jsonl); `missing_videos` counts CSV rows without a video file."""

    selected: int = 0
    missing_videos: int = 0
    extracted: int = 0
    captioned: int = 0
    skipped_done: int = 0
    failed: int = 0
    dataset_size: int = 0
    test_size: int = 0
    requests: int = 0
    retries: int = 0
    retry_wait_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    backend: str = ""
    model: str = ""
    prompt_version: str = ""
    estimate: Estimate | None = None
    out: str = ""

    @property
    def exit_code(self) -> int:
        """0 when every selected clip finished, 1 when some failed."""
        return 1 if self.failed else 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Clip:
    """A selected clip: its CSV row and its video file."""

    spec: ClipSpec
    video: Path


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StageUsage(TypedDict):
    """Tokens of one stage, summed over its asks (re-asks included)."""

    prompt_tokens: int
    completion_tokens: int


class Usage(TypedDict):
    stage1: StageUsage
    stage2: StageUsage


class VggCapsRecord(TypedDict):
    """One released record of `vggcaps.jsonl` (docs/data_formats.md); paths
    are relative to the output folder, `duration_s` is the source file's duration."""

    id: str
    youtube_id: str | None
    start_s: float | None
    category: str
    vggsound_split: str | None
    split: str
    audio: str
    frame: str
    spectrogram: str
    duration_s: float | None
    raw_caption: str
    caption: str
    backend: str
    model: str
    prompt_version: str
    usage: Usage


VGGCAPS_COLUMNS: tuple[str, ...] = tuple(VggCapsRecord.__annotations__)


class _RejectionBase(TypedDict):
    output: str | None
    reason: str


class Rejection(_RejectionBase, total=False):
    """One output that post-processing rejected, and why: `output` is its first 4,096
    characters, `output_chars` its full length."""

    output_chars: int


class _FailureBase(TypedDict):
    id: str
    stage: FailureStage
    reason: str
    time: str


class FailureRecord(_FailureBase, total=False):
    """One line of `work/failures_log.jsonl` and `failures.jsonl`: a clip that failed a stage.
    Caption failures also carry the rejected outputs, the tokens paid and who answered.
    (Optional keys by `total=False`: `NotRequired` is not seen under postponed annotations.)"""

    rejected: list[Rejection]
    usage: StageUsage
    backend: str
    model: str
    prompt_version: str


def failure_record(clip_id: str, stage: FailureStage, reason: str, **extra: Any) -> FailureRecord:
    """A failure-log record (UTC time stamp included); `extra`: the optional `FailureRecord`
    fields (an unknown one is a bug, so it raises)."""
    unknown = set(extra) - FailureRecord.__optional_keys__
    if unknown:
        raise TypeError(f"not FailureRecord fields: {sorted(unknown)}")
    record: FailureRecord = {"id": clip_id, "stage": stage, "reason": reason, "time": _now()}
    record.update(extra)  # type: ignore[typeddict-item]
    return record


@dataclass
class Identity:
    """Who answers the caption requests (backend, model) with which prompts; part of every
    resume key, so changing any of them redoes the captions instead of mixing them."""

    backend: str
    model: str
    prompts: PromptSet

    def key(self, clip_id: str, stage: int) -> str:
        return stage_key(clip_id, stage, self.prompts.version, self.backend, self.model)
