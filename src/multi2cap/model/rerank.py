"""CLAP re-ranking of caption candidates from one decoding pass (SLAM-AAC's "CLAP-Refine", done
in one pass).

For each clip, **one** beam search returns its `candidates` best hypotheses
(`num_return_sequences`, with `num_beams` >= `candidates`); optionally `sampled` more are drawn
from the same audio prefix. A CLAP model (`multi2cap.metrics.clap.ClapScorer`, any transformers
`ClapModel`) embeds the clip at its own sample rate and every distinct candidate; the candidate
with the highest audio-text cosine is the caption. Clips are scored in batches, and a clip's
scores never depend on its batch (see `multi2cap.metrics.clap`).

SLAM-AAC's published procedure (X-LANCE/SLAM-LLM, examples/slam_aac: `clap_refine.py` and the
`inference_*_CLAP_Refine.sh` scripts) instead decodes the whole test set seven times, with beam
sizes 2, 3, ..., 8, keeps the top hypothesis of each pass, then encodes each clip's first 10 s
at 32 kHz with its CLAP at audio batch size 1 ("performance will be harmed due to zero
padding"). `benchmarks/bench_rerank.py` compares both at the same number of candidates.

Duplicates (two hypotheses that decode to the same text) are scored once and listed once, at
their first place. **Ties**: candidates whose score is within `tie_tolerance` of the best are
tied; the first of them in candidate order (beams by beam score, then samples in draw order)
wins, so a tie resolves toward the decoder's own preference, and the others are reported.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from multi2cap.media.audio import SAMPLE_RATE, load_audio, resample
from multi2cap.metrics.clap import ClapScorer, LongAudio
from multi2cap.model.audio_input import NO_RATE_WARNING, check_rate
from multi2cap.model.llm import Sampling

if TYPE_CHECKING:
    from multi2cap.model.multi2cap import Multi2Cap

CandidateSource = Literal["beam", "sample"]


class RerankConfig(BaseModel):
    """How candidates are made and chosen.

    `candidates`: beam hypotheses per clip (N). `num_beams`: the beam width of that one search
    (default: N, or the checkpoint's own width when larger); must be >= N. `sampled`: extra
    candidates drawn by sampling (`temperature`, `top_p`, `seed`; 0 = none). `tie_tolerance`:
    scores this close to the best count as tied (0 = exactly equal)."""

    model_config = ConfigDict(extra="forbid")

    candidates: int = Field(8, ge=1)
    num_beams: int | None = Field(None, ge=1)
    sampled: int = Field(0, ge=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    tie_tolerance: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _beams_cover_candidates(self) -> RerankConfig:
        if self.num_beams is not None and self.num_beams < self.candidates:
            raise ValueError(
                f"num_beams ({self.num_beams}) must be >= candidates ({self.candidates}): one "
                "beam search returns at most num_beams hypotheses"
            )
        return self

    def beams_for(self, checkpoint_beams: int) -> int:
        """The beam width used with a checkpoint whose own default is `checkpoint_beams`."""
        if self.num_beams is not None:
            return self.num_beams
        return max(self.candidates, checkpoint_beams)


@dataclass
class Candidate:
    """One distinct candidate: its text, where it came from (`rank`: 0-based position among the
    beams, best first, or among the samples) and its CLAP audio-text cosine."""

    text: str
    source: CandidateSource
    rank: int
    clap: float


@dataclass
class RerankedCaption:
    """The chosen caption of one clip, its CLAP score, the candidates tied with it (other texts
    within the tolerance of the best score) and every distinct candidate in candidate order."""

    caption: str
    score: float
    tied: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready fields for an output row: `clap_score`, `tied`, `candidates`."""
        return {
            "clap_score": self.score,
            "tied": list(self.tied),
            "candidates": [asdict(c) for c in self.candidates],
        }


def choose(
    texts: Sequence[tuple[str, CandidateSource, int]],
    scores: Sequence[float],
    tie_tolerance: float = 0.0,
) -> RerankedCaption:
    """The re-ranking decision for one clip: `texts` are distinct `(text, source, rank)` in
    candidate order, `scores` their CLAP cosines. The highest score wins; among candidates
    within `tie_tolerance` of it, the first in candidate order."""
    if not texts or len(texts) != len(scores):
        raise ValueError(f"{len(texts)} candidates and {len(scores)} scores")
    best = max(scores)
    tied = [i for i, s in enumerate(scores) if s >= best - tie_tolerance]
    winner = tied[0]
    return RerankedCaption(
        caption=texts[winner][0],
        score=float(scores[winner]),
        tied=[texts[i][0] for i in tied[1:]],
        candidates=[
            Candidate(text, source, rank, float(score))
            for (text, source, rank), score in zip(texts, scores, strict=True)
        ],
    )


class ClapReranker:
    """Captions re-ranked by a CLAP model: `reranker.caption(model, inputs)`.

    `clap`: a `ClapScorer`, or a hub id / folder to build one (with `device`, `allow_network`,
    `audio_batch_size`, `long_audio`). `config`: a `RerankConfig` (or its fields as keywords).
    """

    def __init__(
        self,
        clap: ClapScorer | str | os.PathLike[str],
        config: RerankConfig | None = None,
        *,
        device: str = "cpu",
        allow_network: bool = False,
        audio_batch_size: int = 16,
        long_audio: LongAudio = "model",
        **config_fields: Any,
    ) -> None:
        if config is not None and config_fields:
            raise ValueError("give `config` or its fields as keywords, not both")
        self.config = config or RerankConfig(**config_fields)
        self.scorer = (
            clap
            if isinstance(clap, ClapScorer)
            else ClapScorer(
                clap,
                device=device,
                allow_network=allow_network,
                audio_batch_size=audio_batch_size,
                long_audio=long_audio,
            )
        )

    def candidates(
        self,
        model: Multi2Cap,
        waves: Sequence[np.ndarray],
        *,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
    ) -> list[list[tuple[str, CandidateSource, int]]]:
        """Distinct `(text, source, rank)` candidates of each 16-kHz waveform, in candidate
        order: one beam search (N hypotheses, `num_beams` wide when given, else as the config
        says), then the samples."""
        config = self.config
        groups = model.caption_candidates(
            list(waves),
            sampling_rate=SAMPLE_RATE,
            num_return_sequences=config.candidates,
            num_beams=num_beams or config.beams_for(model.config.generation.num_beams),
            max_new_tokens=max_new_tokens,
            sampled=config.sampled,
            sampling=Sampling(config.temperature, config.top_p, config.seed),
            batch_size=batch_size,
        )
        out = []
        for group in groups:
            seen: dict[str, tuple[str, CandidateSource, int]] = {}
            for position, text in enumerate(group):
                source: CandidateSource = "beam" if position < config.candidates else "sample"
                rank = position if source == "beam" else position - config.candidates
                seen.setdefault(text, (text, source, rank))
            out.append(list(seen.values()))
        return out

    def rerank(
        self,
        clap_waves: Sequence[np.ndarray],
        candidates: Sequence[Sequence[tuple[str, CandidateSource, int]]],
    ) -> list[RerankedCaption]:
        """Choose among each clip's candidates by CLAP audio-text cosine (`clap_waves` at the
        CLAP's rate, one per clip; clips are embedded `audio_batch_size` at a time)."""
        scores = self.scorer.audio_text(clap_waves, [[c[0] for c in group] for group in candidates])
        return [
            choose(group, group_scores, self.config.tie_tolerance)
            for group, group_scores in zip(candidates, scores, strict=True)
        ]

    def caption_waves(
        self,
        model: Multi2Cap,
        waves: Sequence[np.ndarray],
        clap_waves: Sequence[np.ndarray] | None = None,
        *,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
    ) -> list[RerankedCaption]:
        """Re-ranked captions of 16-kHz waveforms. `clap_waves`: the same clips at the CLAP's
        rate (read from the files by `caption`); when None, `waves` are resampled to it, which
        leaves nothing above 8 kHz for the CLAP to hear."""
        if clap_waves is None:
            clap_waves = [self.scorer.from_rate(w, SAMPLE_RATE) for w in waves]
        if len(clap_waves) != len(waves):
            raise ValueError(f"{len(waves)} clips but {len(clap_waves)} CLAP waveforms")
        found = self.candidates(
            model, waves, batch_size=batch_size, max_new_tokens=max_new_tokens, num_beams=num_beams
        )
        return self.rerank(clap_waves, found)

    def caption(
        self,
        model: Multi2Cap,
        inputs: str | os.PathLike[str] | np.ndarray | Sequence[str | os.PathLike[str] | np.ndarray],
        *,
        sampling_rate: int | None = None,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
    ) -> list[RerankedCaption]:
        """Re-ranked captions of files (read at 16 kHz for the captioner and at the CLAP's rate
        for the CLAP) or 1-D waveforms (numpy or CPU tensors) at `sampling_rate` Hz, one per
        input, in input order. Waveforms are resampled from their own rate to the captioner's
        16 kHz and to the CLAP's rate; without `sampling_rate` they are read as 16 kHz with a
        warning, as `Multi2Cap.caption` does."""
        check_rate(sampling_rate)
        single = isinstance(inputs, str | os.PathLike) or getattr(inputs, "ndim", None) == 1
        items = [inputs] if single else list(inputs)  # type: ignore[list-item, arg-type]
        if not items:
            raise ValueError("no audio to caption")
        if sampling_rate is None and not all(isinstance(i, str | os.PathLike) for i in items):
            warnings.warn(NO_RATE_WARNING, UserWarning, stacklevel=2)
        rate = sampling_rate or SAMPLE_RATE
        waves, clap_waves = [], []
        for item in items:
            if isinstance(item, str | os.PathLike):
                waves.append(load_audio(item))
                clap_waves.append(self.scorer.load(item))
            else:
                wave = np.asarray(item, dtype=np.float32)
                if wave.ndim != 1:
                    raise ValueError(f"expected 1-D waveforms, got shape {wave.shape}")
                waves.append(wave if rate == SAMPLE_RATE else resample(wave, rate, SAMPLE_RATE))
                clap_waves.append(self.scorer.from_rate(wave, rate))
        return self.caption_waves(
            model, waves, clap_waves, batch_size=batch_size, max_new_tokens=max_new_tokens
        )
