"""Stage 0 of the demo: pretrain each backbone on its own modality, as the world does before the
paper starts (CED on AudioSet, CLIP on image-text pairs, the LLM on text).

The paper adapts *pretrained* backbones with LoRA; nothing pretrained can be fetched offline, and
frozen random backbones leave LoRA nothing to adapt (the demo then captions every clip with the
same sentence). So the demo first trains, on the training split only:

- the **CED-shaped audio encoder** as a tagger of the scenes' audible sources (the analogue of
  CED's AudioSet tagging): per-token logits max-pooled over time, binary cross-entropy;
- the **CLIP-shaped vision tower** as a tagger of the sources shown in each frame, on its CLS
  token (the V_cls that L_align and the probes use);
- the **decoder** as a causal language model on the training captions (VggCaps-style and
  reference-style), with a word-level tokenizer over the same text.

Each is saved as an ordinary backbone folder (`load_ced`'s CED layout, `save_pretrained` for CLIP
and the LM with its tokenizer), which the recipes then load by path (`model.audio.source=DIR`,
`model.vision.source=DIR`, `model.llm.source=DIR`), the path real users take with downloaded
weights. What made these learn in seconds (docs/demo.md, "Stage 0"): the tagger's input
normalised with fixed per-mel-bin statistics of the training clips (CED's AudioSet normaliser),
the classifiers' biases started at the log-odds of each source's frequency (otherwise the first
hundred steps only learn the prior and the loss sits at it), max pooling over time (a bark fills
a tenth of the clip), warm-up then cosine.

Every trainer appends `step,loss` rows to `train_log.csv` in its folder (the demo polls them for
its progress lines) and writes `stage0.json` last, so a finished backbone is reused by a rerun.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from multi2cap.io import atomic_write_text

DONE_FILE = "stage0.json"
LOG_FILE = "train_log.csv"
HEAD_FILE = "tagger_head.safetensors"
QUIET_TAG = "tag_quiet"  # the tag transcript's word for a time token where no source sounds
LLM_CAPTION_TOKENS = 32  # captions cut as the recipes' `max_caption_tokens` cuts them
# Bumped when a trainer changes what a backbone learns (2: the LM reads tag transcripts), so a
# work folder's backbones from an older design are retrained, not reused.
DESIGN = 2


@dataclass
class Stage0Config:
    """Sizes and budgets of the three stage-0 trainers (epochs over the training split).
    `llm_tag_noise`: the share of the LM's transcript tags replaced by random ones (0 reads
    best: noise taught the LM to overlook short sources; docs/demo.md)."""

    audio_width: int = 64
    audio_depth: int = 2
    audio_heads: int = 4
    audio_epochs: int = 8
    audio_lr: float = 2e-3
    audio_batch: int = 8
    vision_image_size: int = 64
    vision_patch: int = 8
    vision_width: int = 64
    vision_depth: int = 2
    vision_epochs: int = 6
    vision_lr: float = 3e-3
    vision_batch: int = 32
    llm_width: int = 64
    llm_layers: int = 2
    llm_epochs: int = 6
    llm_lr: float = 3e-3
    llm_batch: int = 64
    llm_tag_noise: float = 0.0
    seed: int = 0


@dataclass
class LmCorpus:
    """The language model's training text: each caption with its clip's strong labels.

    A real LLM decoder arrives knowing how to read what its context holds and write about it;
    a tiny LM trained on captions alone never saw a context and does not learn to read the audio
    prefix in the demo's budget (docs/demo.md measures it). So each caption is put after the
    prompt with the audio slot filled by a *tag transcript* of its clip: one word per CED time
    token (0.16 s), the key of a source sounding then or `QUIET_TAG`, drawn afresh each time the
    caption is used (`tag_transcripts`). The slot has the length and the time layout of the audio
    prefix; stages 1-2 then teach the adapter to write what the LM reads there. `clip_of[i]` is
    caption i's row of `token_targets` `(N_clips, T', n_sources)`; without `token_targets` the
    slot stays empty (a plain LM on the captions)."""

    captions: list[str]
    keys: list[str] = field(default_factory=list)
    token_targets: Tensor | None = None
    clip_of: list[int] = field(default_factory=list)


@dataclass
class TaggingSet:
    """Training inputs with their multi-hot targets `(N, n_sources)` over `keys`; for audio,
    optionally per time token `(N, T', n_sources)` (a source is on in the tokens its recording
    spans after each onset: the scenes' strong labels)."""

    paths: list[str]
    targets: Tensor
    keys: list[str]
    token_targets: Tensor | None = None


# ----------------------------------------------------------------------------- shared pieces


def _schedule(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up over `warmup` steps, then cosine to 0 at `total` (a factor on the lr)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def _prior_bias(head: nn.Linear, targets: Tensor) -> None:
    """Start each logit at the log-odds of its label's frequency (see the module docstring)."""
    prior = targets.float().mean(0).clamp(1e-3, 0.5)
    with torch.no_grad():
        head.bias.copy_(torch.log(prior / (1 - prior)))


class _Log:
    """`step,total,loss` rows in `train_log.csv`, flushed per row (the demo polls the file)."""

    def __init__(self, folder: Path, total: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOG_FILE
        self.total = total
        self.path.write_text("step,total,loss\n", encoding="utf-8")

    def __call__(self, step: int, loss: float) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(f"{step},{self.total},{loss:.5f}\n")


def _fit(
    params: Sequence[nn.Parameter],
    loss_of: Callable[[Tensor], Tensor],
    n_items: int,
    batch: int,
    epochs: int,
    lr: float,
    log: _Log,
    generator: torch.Generator,
) -> float:
    """AdamW over shuffled index batches; returns the mean loss of the last epoch."""
    steps_per_epoch = max(1, n_items // batch)
    total = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(total, max(1, steps_per_epoch // 2))
    )
    step, last = 0, []
    for _epoch in range(epochs):
        order = torch.randperm(n_items, generator=generator)
        last = []
        for i in range(steps_per_epoch):
            loss = loss_of(order[i * batch : (i + 1) * batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            last.append(float(loss.detach()))
            log(step, last[-1])
    return float(np.mean(last)) if last else float("nan")


def settings(config: Stage0Config, part: str) -> dict[str, Any]:
    """What a trained backbone depends on: `DESIGN`, the seed and the config fields of its
    trainer (`part`: "audio", "vision" or "llm")."""
    fields = dataclasses.asdict(config)
    return {
        "design": DESIGN,
        "seed": config.seed,
        **{k: v for k, v in fields.items() if k.startswith(f"{part}_")},
    }


def _finish(
    folder: Path, started: float, config: Stage0Config, part: str, **summary: Any
) -> dict[str, Any]:
    done = {"wall_s": time.perf_counter() - started, "settings": settings(config, part), **summary}
    atomic_write_text(folder / DONE_FILE, json.dumps(done, indent=2))
    return done


def finished(
    folder: Path, config: Stage0Config | None = None, part: str | None = None
) -> dict[str, Any] | None:
    """The summary of a finished stage-0 backbone folder, or None; with `config` and `part`,
    also None when the folder was trained under other settings (another design, seed or config),
    so that a rerun retrains it instead of reusing a stale backbone."""
    path = folder / DONE_FILE
    if not path.is_file():
        return None
    done = json.loads(path.read_text(encoding="utf-8"))
    if config is not None and part is not None and done.get("settings") != settings(config, part):
        return None
    return done


def steps_total(n_items: int, batch: int, epochs: int) -> int:
    """Optimizer steps of a stage-0 trainer (what its progress line counts to)."""
    return max(1, n_items // batch) * epochs


# ----------------------------------------------------------------------------- audio tagger


def log_mels(paths: Sequence[str], n_mels: int = 64) -> Tensor:
    """CED's log-mel of each clip, `(N, n_mels, frames)` float16 (all clips equal length)."""
    from multi2cap.media.audio import load_audio
    from multi2cap.media.melspec import CedLogMel

    front_end = CedLogMel(n_mels=n_mels)
    with torch.no_grad():
        mels = [front_end(torch.from_numpy(load_audio(p))).half() for p in paths]
    width = min(m.shape[-1] for m in mels)
    return torch.stack([m[..., :width] for m in mels])


def token_logits(encoder: Any, head: nn.Linear, mel: Tensor) -> Tensor:
    """Per-token logits `(B, T', n_sources)`."""
    frames = torch.full((mel.shape[0],), mel.shape[-1])
    tokens, _mask = encoder.forward_mel(mel.float(), frames)
    return head(tokens)


def tag_logits(encoder: Any, head: nn.Linear, mel: Tensor) -> Tensor:
    """Clip logits `(B, n_sources)`: per-token logits max-pooled over the time tokens."""
    return token_logits(encoder, head, mel).amax(dim=1)


def pretrain_audio(data: TaggingSet, config: Stage0Config, out: Path) -> dict[str, Any]:
    """Train a CED-shaped encoder from scratch as a source tagger; save it as a CED folder."""
    from multi2cap.model.ced import CedConfig, CedEncoder, save_ced

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    mels = log_mels(data.paths)
    encoder = CedEncoder(
        CedConfig(
            embed_dim=config.audio_width,
            depth=config.audio_depth,
            num_heads=config.audio_heads,
            mlp_ratio=2.0,
        )
    )
    # CED's input normaliser holds AudioSet statistics; ours are the training clips'.
    with torch.no_grad():
        encoder.init_bn.running_mean.copy_(mels.float().mean(dim=(0, 2)))
        encoder.init_bn.running_var.copy_(mels.float().var(dim=(0, 2)))
    encoder.train()
    head = nn.Linear(config.audio_width, len(data.keys))
    _prior_bias(head, data.targets)

    patch = encoder.config.patch_size
    n_tokens = mels.shape[-1] // patch

    def loss_of(index: Tensor) -> Tensor:
        # A random circular shift by whole tokens: onsets vary, the labels move with them.
        shift = int(torch.randint(n_tokens, (1,), generator=generator))
        mel = torch.roll(mels[index, :, : n_tokens * patch].float(), shift * patch, -1)
        logits = token_logits(encoder, head, mel)
        loss = F.binary_cross_entropy_with_logits(logits.amax(dim=1), data.targets[index])
        if data.token_targets is not None:
            strong = torch.roll(data.token_targets[index, :n_tokens], shift, 1)
            loss = loss + F.binary_cross_entropy_with_logits(logits, strong)
        return loss

    total = steps_total(len(mels), config.audio_batch, config.audio_epochs)
    loss = _fit(
        [*encoder.parameters(), *head.parameters()],
        loss_of,
        len(mels),
        config.audio_batch,
        config.audio_epochs,
        config.audio_lr,
        _Log(out, total),
        generator,
    )
    encoder.eval()
    save_ced(encoder, out)
    # The tagging head is no part of the backbone; kept to score the tagger on the test clips.
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / HEAD_FILE))
    atomic_write_text(out / "sources.json", json.dumps(data.keys))
    return _finish(out, started, config, "audio", loss=loss, steps=total, clips=len(mels))


def audio_tagger_predictions(folder: Path, paths: Sequence[str]) -> Tensor:
    """Source probabilities `(N, n_sources)` of a stage-0 tagger on clips (a diagnostic: how much
    the frozen encoder knows, against what the captions then say)."""
    from multi2cap.model.ced import load_ced

    encoder = load_ced(folder)
    state = load_file(str(folder / HEAD_FILE))
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    mels = log_mels(paths)
    with torch.no_grad():
        return torch.cat(
            [
                torch.sigmoid(tag_logits(encoder, head, mels[i : i + 32]))
                for i in range(0, len(mels), 32)
            ]
        )


# ----------------------------------------------------------------------------- vision tagger


def _frames(paths: Sequence[str], size: int, generator: np.random.Generator | None) -> Tensor:
    """Frames as CLIP input `(N, 3, size, size)`: the trainer's evaluation view (centred square),
    or with a generator a RandomResizedCrop of at least half the frame."""
    from PIL import Image

    from multi2cap.data.dataset import center_square_box, clip_normalize, random_resized_crop_box

    out = []
    for path in paths:
        with Image.open(path) as raw:
            picture = raw.convert("RGB")
        if generator is None:
            box = center_square_box(picture.width, picture.height)
        else:
            box = random_resized_crop_box(picture.width, picture.height, generator, (0.5, 1.0))
        out.append(clip_normalize(picture.resize((size, size), Image.Resampling.BICUBIC, box=box)))
    return torch.stack(out)


def pretrain_vision(data: TaggingSet, config: Stage0Config, out: Path) -> dict[str, Any]:
    """Train a CLIP-shaped vision tower from scratch to tag the sources shown in each frame from
    its CLS token; save it with `save_pretrained` (a `CLIPVisionModel` folder)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    size = config.vision_image_size
    # Two views per frame, drawn once: the centred square the trainer shows at evaluation and a
    # random crop like its training crops.
    views = torch.cat(
        [
            _frames(data.paths, size, None),
            _frames(data.paths, size, np.random.default_rng(config.seed)),
        ]
    )
    targets = torch.cat([data.targets, data.targets])
    model = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=config.vision_width,
            intermediate_size=2 * config.vision_width,
            num_hidden_layers=config.vision_depth,
            num_attention_heads=4,
            image_size=size,
            patch_size=config.vision_patch,
        )
    )
    model.train()
    head = nn.Linear(config.vision_width, len(data.keys))
    _prior_bias(head, targets)

    def loss_of(index: Tensor) -> Tensor:
        cls = model(pixel_values=views[index]).last_hidden_state[:, 0]
        return F.binary_cross_entropy_with_logits(head(cls), targets[index])

    total = steps_total(len(views), config.vision_batch, config.vision_epochs)
    loss = _fit(
        [*model.parameters(), *head.parameters()],
        loss_of,
        len(views),
        config.vision_batch,
        config.vision_epochs,
        config.vision_lr,
        _Log(out, total),
        generator,
    )
    model.eval()
    model.save_pretrained(out)
    return _finish(out, started, config, "vision", loss=loss, steps=total, frames=len(data.paths))


# ----------------------------------------------------------------------------- language model


def tag_transcripts(on: Tensor, generator: torch.Generator, noise: float) -> Tensor:
    """One tag per time token `(B, T')` from strong labels `on (B, T', n_sources)`: a source
    sounding in that token (drawn at random where several overlap), `n_sources` (the quiet tag)
    where none does; with probability `noise` a token's tag is replaced by a uniformly drawn one
    (an ablation: the demo uses 0, see `Stage0Config`)."""
    n_sources = on.shape[-1]
    draw = torch.rand(on.shape, generator=generator) * on
    tags = torch.where(on.any(-1), draw.argmax(-1), n_sources)
    flip = torch.rand(tags.shape, generator=generator) < noise
    return torch.where(flip, torch.randint(n_sources + 1, tags.shape, generator=generator), tags)


def pretrain_llm(corpus: LmCorpus, prompt: str, config: Stage0Config, out: Path) -> dict[str, Any]:
    """Train a Llama-shaped decoder from scratch as a language model on the training captions,
    each after the prompt with the audio slot filled by its clip's tag transcript (see
    `LmCorpus`), with a word-level tokenizer over the captions, the prompt and the tags; the loss
    is on the caption and its EOS. Saves model and tokenizer with `save_pretrained` (an ordinary
    causal-LM folder)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from multi2cap.model.config import (
        AUDIO_PLACEHOLDER,
        SPECIAL_TOKENS,
        TokenizerSpec,
        word_vocabulary,
    )
    from multi2cap.model.llm import word_level_tokenizer

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    tags = [*corpus.keys, QUIET_TAG] if corpus.token_targets is not None else []
    words = word_vocabulary([prompt.replace(AUDIO_PLACEHOLDER, " "), *corpus.captions, *tags])
    tokenizer = word_level_tokenizer(TokenizerSpec(words=words))
    width = config.llm_width
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(words) + len(SPECIAL_TOKENS),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=config.llm_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.train()
    left, _, right = prompt.partition(AUDIO_PLACEHOLDER)
    left_ids = tokenizer(left.strip())["input_ids"]  # with BOS, as `CaptionDecoder` assembles
    right_ids = tokenizer(right.strip(), add_special_tokens=False)["input_ids"]
    tag_ids = torch.tensor(tokenizer.convert_tokens_to_ids(tags), dtype=torch.long)
    eos = tokenizer.eos_token_id
    captions = [
        [*ids[: LLM_CAPTION_TOKENS - 1], eos]
        for ids in tokenizer(list(corpus.captions), add_special_tokens=False)["input_ids"]
    ]

    def loss_of(index: Tensor) -> Tensor:
        rows = index.tolist()
        slots: list[list[int]] = [[] for _ in rows]
        if corpus.token_targets is not None:
            on = corpus.token_targets[[corpus.clip_of[i] for i in rows]] > 0
            slots = tag_ids[tag_transcripts(on, generator, config.llm_tag_noise)].tolist()
        contexts = [[*left_ids, *slot, *right_ids] for slot in slots]
        width_ = max(len(c) + len(captions[i]) for c, i in zip(contexts, rows, strict=True))
        ids = torch.full((len(rows), width_), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width_), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width_), dtype=torch.long)
        for b, (context, i) in enumerate(zip(contexts, rows, strict=True)):
            n, sequence = len(context), [*context, *captions[i]]
            ids[b, : len(sequence)] = torch.tensor(sequence)
            labels[b, n : len(sequence)] = ids[b, n : len(sequence)]
            mask[b, : len(sequence)] = 1
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    total = steps_total(len(captions), config.llm_batch, config.llm_epochs)
    loss = _fit(
        list(model.parameters()),
        loss_of,
        len(captions),
        config.llm_batch,
        config.llm_epochs,
        config.llm_lr,
        _Log(out, total),
        generator,
    )
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return _finish(
        out, started, config, "llm", loss=loss, steps=total, texts=len(captions), vocab=len(words)
    )
