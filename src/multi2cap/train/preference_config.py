"""The `preference` section of a recipe: how `stage: preference` builds its pairs and trains.

Defaults are those of the DPO paper (Rafailov et al. 2023: sequence log-probabilities summed over
the caption's tokens) with EGPL-AAC's beta 0.05 and its choice of training the existing LoRA only
(the decoder's); the `preference_*` recipes copy EGPL-AAC's learning rates, update counts and
length-normalised log-probabilities. docs/training.md ("Preference tuning") has the evidence.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from multi2cap.metrics.candidates import CandidateScorer

#: Parts of a fine-tuned Multi2Cap that preference tuning may train: the decoder's LoRA, the
#: audio encoder's LoRA, the Ground Adapter.
PreferencePart = Literal["llm_lora", "audio_lora", "adapter"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CandidateConfig(_Section):
    """The fine-tuned model's candidates for each training clip: the `beams` best hypotheses of
    one beam search of width `num_beams` (`num_return_sequences`) plus `sampled` ancestral
    samples (`temperature`, `top_p`), decoded `batch_size` clips at a time from the whole clip
    (no augmentation). `max_clips`: candidates for that many clips drawn by `seed` (None: every
    training clip). `max_new_tokens` None: the model's `generation.max_new_tokens`."""

    num_beams: int = Field(4, ge=1)
    beams: int = Field(4, ge=1, description="hypotheses kept from the beam search")
    sampled: int = Field(4, ge=0, description="ancestral samples added")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1, description="clips per decoding batch")
    max_clips: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> CandidateConfig:
        if self.beams > self.num_beams:
            raise ValueError(
                f"beams ({self.beams}) must be at most num_beams ({self.num_beams}): they are the "
                "best hypotheses of one beam search"
            )
        return self


class PreferenceConfig(_Section):
    """Pairs and the DPO objective of `stage: preference`.

    Pairs: each clip's candidates are scored against its references by `scorer` (CIDEr-D by
    default, its IDF over every training clip's references); the best and the worst candidate
    make a (chosen, rejected) pair when their scores differ by more than `margin` (in the
    scorer's units: CIDEr-D's are 0-10). `max_pairs` keeps the pairs of largest gap.
    `chosen_from: references` takes the clip's first reference as the chosen caption instead
    (then the worst candidate is rejected and no margin applies); by default only the model's
    own candidates are ever chosen.

    Loss: -log sigmoid(beta ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l)))),
    log-probabilities over the caption's tokens and EOS, `logp` `sum` (the DPO paper) or `mean`
    per token (EGPL-AAC), the reference being the `init_from` model (its log-probabilities are
    computed once, before training). `anchor_weight` adds EGPL-AAC's one-sided chosen-caption
    anchor: weight x max(0, (log ref(y_w) - log pi(y_w)) / tokens - `anchor_tolerance`)^2,
    i.e. a penalty when the chosen caption's per-token log-probability falls more than the
    tolerance below the reference's. `train` names what trains (`llm_lora` as EGPL-AAC)."""

    candidates: CandidateConfig = Field(default_factory=CandidateConfig)
    scorer: CandidateScorer = "cider_d"
    clap_model: str | None = Field(
        None, description="transformers CLAP (hub id or folder) for scorer clap_sim(_audio)"
    )
    margin: float = Field(0.1, ge=0)
    max_pairs: int | None = Field(None, ge=1)
    chosen_from: Literal["candidates", "references"] = "candidates"
    beta: float = Field(0.05, gt=0)
    logp: Literal["sum", "mean"] = "sum"
    anchor_weight: float = Field(0.0, ge=0)
    anchor_tolerance: float = Field(0.02, ge=0, description="nats per token")
    train: list[PreferencePart] = Field(default_factory=lambda: ["llm_lora"], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PreferenceConfig:
        if len(set(self.train)) != len(self.train):
            raise ValueError(f"train lists a part twice: {self.train}")
        if self.chosen_from == "candidates" and self.candidates.beams + self.candidates.sampled < 2:
            raise ValueError(
                "a pair needs two candidates per clip: candidates.beams + candidates.sampled "
                "must be at least 2 (or chosen_from: references)"
            )
        return self
