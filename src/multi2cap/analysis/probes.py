"""Grounding probes of a trained Multi2Cap: semantic fidelity (paper Table 4); the t-SNE of the
same embeddings (Figure 6) is `multi2cap.analysis.tsne`.

For every clip of a manifest with frames, `collect_probe_set` gathers five kinds of embedding:

| kind | what | native space |
|---|---|---|
| `g` | AV-grounding tokens (audio + image) | `(K, d_g)` |
| `g_hat` | VFR reconstruction from audio alone | `(K, d_g)` |
| `a_mean` | masked mean of the CED audio tokens | `(1, d_a)` |
| `random` | Gaussian directions with the norms of the clip's g tokens | `(K, d_g)` |
| `v_cls` | CLIP CLS token of the frame (the gallery) | `(1, d_v)` |

and `fidelity` scores them (docs/probes.md has the precise definitions):

- **R@1 / R@5**: each query against the gallery of all clips' V_cls, in the L_align shared space
  (g, g_hat and random through `align.g_proj`, a_mean through `align.audio_proj`, V_cls through
  `align.visual_proj`). A K-token query scores a gallery item by the mean over its K tokens of the
  cosine similarity (the ranking of cosine similarity with the mean of the normalised tokens).
- **CLIP score**: `100 * max(cos(m(x), t), 0)` between an embedding mapped into CLIP's joint space
  and the CLIP text embedding `t` of its category prompt. The map m is a ridge regression from the
  (K-averaged, L2-normalised) embedding to the CLIP image embedding of the same frame, fitted with
  two-fold cross-fitting, so every clip is scored by a map that never saw it.
- **Attention entropy**: each embedding, brought to d_g (a_mean through the grounding's audio
  projection, V_cls through its visual projection), is scored against the frame's patch tokens
  with the grounding cross-attention's learned query/key projections, the embedding on the audio
  side (the query under `grounding.pool: time`, the key under `space`); per head, the softmax
  over the P patches has entropy H in nats; reported is `H / log P` (0 = one patch,
  1 = uniform), averaged over heads, the K tokens and the clips.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from multi2cap.analysis.probe_tables import format_cell, markdown_table, write_table
from multi2cap.data.dataset import (
    CaptionDataset,
    center_square_box,
    clip_normalize,
    collate_captions,
)
from multi2cap.data.manifest import ManifestRecord
from multi2cap.io import atomic_write_text
from multi2cap.model.grounding import AVGrounding

KINDS = ("g", "g_hat", "a_mean", "random", "v_cls")
KIND_LABELS = {
    "g": "g",
    "g_hat": "ĝ",
    "a_mean": "a_mean (audio)",
    "random": "random",
    "v_cls": "V_cls",
    "clip_image": "CLIP image embedding (reference)",
}
QUERY_KINDS = ("g", "g_hat", "a_mean", "random")
#: What the model's own grounding attention normalises over, per `grounding.pool`.
_OWN_ATTENTION = {"time": "audio steps over patches", "space": "patches over audio steps"}
DEFAULT_PROMPT = "a photo of {category}"

#: The paper's Table 4 (VggCaps test set, CLIP ViT-L/14, full-size model): R@1, R@5, CLIP score,
#: attention entropy. Their exact definitions of the last two are not published.
PAPER_TABLE4 = {
    "g": (89.5, 99.7, 44.5, 0.38),
    "g_hat": (71.8, 91.3, 38.3, 0.44),
    "a_mean": (1.2, 7.3, 16.8, 1.62),
    "random": (0.0, 0.3, 8.3, 6.14),
}


@dataclass
class ProbeSet:
    """Embeddings of one manifest, as numpy arrays (rows in `ids` order).

    `native[kind]` `(N, Q, d)` and `shared[kind]` `(N, Q, E)` (Q = K for g, g_hat and random, 1
    for a_mean and v_cls; `shared` is the L_align space, not normalised); `entropy[kind]` `(N,)`
    normalised attention entropy; `grounding_entropy` `(N,)` the normalised entropy of the
    model's own cross-attention along its softmax (`grounding_attention_entropy`); `pool` the
    model's `grounding.pool`.
    """

    ids: list[str]
    categories: list[str | None]
    images: list[str]
    native: dict[str, np.ndarray]
    shared: dict[str, np.ndarray]
    entropy: dict[str, np.ndarray]
    grounding_entropy: np.ndarray
    n_patches: int
    k: int
    pool: str = "space"

    def __len__(self) -> int:
        return len(self.ids)


def load_probe_model(
    checkpoint: str | Path,
    device: str | torch.device = "cpu",
    backbones: Mapping[str, str] | None = None,
) -> Any:
    """A Multi2Cap checkpoint with its CLIP tower, ready to probe (eval mode); `backbones` as
    in `Multi2Cap.from_pretrained`.

    Raises ValueError for the audio-only baseline, which has no grounding tokens."""
    from multi2cap.model.multi2cap import Multi2Cap

    model = Multi2Cap.from_pretrained(
        checkpoint, load_vision=True, device=device, backbones=backbones
    )
    if not model.config.grounding:
        raise ValueError(
            f"{checkpoint} is an audio-only baseline (grounding: false): no g to probe"
        )
    return model


def attention_weights(grounding: AVGrounding, queries: Tensor, patches: Tensor) -> Tensor:
    """Softmax over `patches (B, P, d_v)` of the grounding cross-attention's own query-key
    scores with each embedding of `queries (B, Q, d_g)` on the audio side: `(B, H, Q, P)`, per
    head (not averaged). Under `pool: time` the embedding is projected as a query and the
    patches as keys (exactly the module's attention for audio-token queries); under `space`
    the patches are the queries and the embedding a key, the module's scores, normalised over
    the patches instead of over the audio steps."""
    mha = grounding.attn
    heads = mha.num_heads
    head_dim = mha.embed_dim // heads
    w_q, w_k, _ = mha.in_proj_weight.chunk(3)
    b_q, b_k, _ = mha.in_proj_bias.chunk(3)
    visual = grounding.visual_proj(patches.to(queries.dtype))
    audio_side, patch_side = ((w_q, b_q), (w_k, b_k))
    if grounding.pool == "space":
        audio_side, patch_side = patch_side, audio_side
    b, q_len, _ = queries.shape
    q = F.linear(queries, *audio_side).view(b, q_len, heads, head_dim).transpose(1, 2)
    k = F.linear(visual, *patch_side).view(b, visual.shape[1], heads, head_dim).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)


def grounding_attention_entropy(attention: Tensor, audio_mask: Tensor, pool: str) -> Tensor:
    """`(B,)` normalised entropy of the model's own head-averaged grounding attention along
    the axis it normalises, averaged over its queries: under `time` `attention (B, T, P)`, each
    valid audio step over the P patches (`/ log P`); under `space` `(B, P, T)`, each patch over
    the sample's L valid audio steps (`/ log L`, padded steps carry no weight; 0 when L = 1)."""
    mask = audio_mask.to(attention.dtype)
    if pool == "time":
        per_step = normalised_entropy(attention)  # (B, T)
        return (per_step * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    probs = attention.clamp_min(1e-30)
    nats = -(attention * probs.log()).sum(dim=-1).mean(dim=1)  # (B,)
    valid = mask.sum(1)
    return torch.where(valid > 1, nats / valid.clamp_min(2.0).log(), torch.zeros_like(nats))


def normalised_entropy(probs: Tensor) -> Tensor:
    """Entropy over the last axis in nats divided by log(size): 0 = one-hot, 1 = uniform."""
    size = probs.shape[-1]
    if size < 2:
        return torch.zeros(probs.shape[:-1], dtype=probs.dtype, device=probs.device)
    ent = -(probs * probs.clamp_min(1e-30).log()).sum(dim=-1)
    return ent / math.log(size)


@torch.no_grad()
def collect_probe_set(
    model: Any,
    records: Sequence[ManifestRecord],
    *,
    batch_size: int = 16,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> ProbeSet:
    """Run `model.probe_embeddings` over `records` (each needs an `image`) and add the random
    vectors and attention entropies. Unreadable clips are left out (CaptionDataset logs them).
    `on_batch(n_done)` reports progress."""
    if model.vision is None or model.grounding is None or model.align is None:
        raise ValueError("probing needs a grounding model loaded with its CLIP tower")
    dataset = CaptionDataset(
        list(records), train=False, with_images=True, image_size=model.vision.image_size
    )
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=_collate_or_none)
    by_id = {r.id: r for r in records}
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[np.ndarray]] = {}
    ids: list[str] = []
    n_patches = 0
    for batch in loader:
        if batch is None:
            continue
        emb = model.probe_embeddings(batch)
        patches = model.vision(batch["images"].to(model.device)).patches
        n_patches = patches.shape[1]
        noise = torch.randn(emb.g.shape, generator=generator).to(emb.g)
        random = F.normalize(noise, dim=-1) * emb.g.norm(dim=-1, keepdim=True)
        grounding = model.grounding
        queries = {
            "g": emb.g,
            "g_hat": emb.g_hat,
            "a_mean": grounding.audio_proj(emb.a_mean).unsqueeze(1),
            "random": random,
            "v_cls": grounding.visual_proj(emb.v_cls.to(emb.g.dtype)).unsqueeze(1),
        }
        native = {
            "g": emb.g,
            "g_hat": emb.g_hat,
            "a_mean": emb.a_mean.unsqueeze(1),
            "random": random,
            "v_cls": emb.v_cls.unsqueeze(1),
        }
        shared = {
            "g": emb.g_shared,
            "g_hat": emb.g_hat_shared,
            "a_mean": emb.a_mean_shared.unsqueeze(1),
            "random": model.align.g_proj(random),
            "v_cls": emb.v_cls_shared.unsqueeze(1),
        }
        for kind in KINDS:
            ent = normalised_entropy(attention_weights(grounding, queries[kind], patches))
            _append(parts, f"entropy/{kind}", ent.mean(dim=(1, 2)))
            _append(parts, f"native/{kind}", native[kind])
            _append(parts, f"shared/{kind}", shared[kind])
        pool = model.config.grounding.pool
        _append(
            parts, "grounding", grounding_attention_entropy(emb.attention, emb.audio_mask, pool)
        )
        ids.extend(batch["ids"])
        if on_batch is not None:
            on_batch(len(ids))
    if not ids:
        raise ValueError("no readable clip with an image to probe")
    arrays = {key: np.concatenate(chunks) for key, chunks in parts.items()}
    return ProbeSet(
        ids=ids,
        categories=[by_id[i].category for i in ids],
        images=[str(by_id[i].image) for i in ids],
        native={k: arrays[f"native/{k}"] for k in KINDS},
        shared={k: arrays[f"shared/{k}"] for k in KINDS},
        entropy={k: arrays[f"entropy/{k}"] for k in KINDS},
        grounding_entropy=arrays["grounding"],
        n_patches=n_patches,
        k=int(model.config.k),
        pool=str(model.config.grounding.pool),
    )


def _collate_or_none(items: list[Any]) -> Any:
    """`collate_captions`, or None when every clip of the batch was unreadable."""
    return collate_captions(items) if any(item is not None for item in items) else None


def _append(parts: dict[str, list[np.ndarray]], key: str, value: Tensor) -> None:
    parts.setdefault(key, []).append(value.detach().float().cpu().numpy())


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval_ranks(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """1-based rank of each query's own gallery item: `queries (N, Q, E)`, `gallery (N, E)`.

    Score(i, j) = mean over the Q tokens of cos(query_i,q, gallery_j); rank = 1 + the number of
    gallery items scoring strictly higher than the query's own (so identical frames tie)."""
    scores = np.einsum("nqe,me->nm", _unit(queries), _unit(gallery)) / queries.shape[1]
    own = np.diag(scores)
    return 1 + (scores > own[:, None]).sum(axis=1)


def recall_at(ranks: np.ndarray, k: int) -> float:
    """Percentage of queries whose own item is within the top `k`."""
    return float(100.0 * np.mean(ranks <= k))


def pooled(x: np.ndarray) -> np.ndarray:
    """`(N, Q, d)` -> `(N, d)`: mean over the Q tokens, then L2-normalised."""
    return _unit(x.mean(axis=1))


def cross_fitted_ridge(
    x: np.ndarray, y: np.ndarray, *, alpha: float = 1.0, folds: int = 2, seed: int = 0
) -> np.ndarray:
    """Held-out predictions of a ridge map `x (N, d)` -> `y (N, D)` (with intercept).

    Rows are shuffled by `seed` and split into `folds`; each fold is predicted by a map fitted on
    the others, so no row is predicted by a map that saw it."""
    from sklearn.linear_model import Ridge

    n = x.shape[0]
    if n < 2 * folds:
        raise ValueError(f"cross-fitting needs at least {2 * folds} clips, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    pred = np.zeros((n, y.shape[1]), dtype=np.float64)
    for held in np.array_split(order, folds):
        train_rows = np.setdiff1d(order, held)
        reg = Ridge(alpha=alpha).fit(x[train_rows], y[train_rows])
        pred[held] = reg.predict(x[held])
    return pred


class ClipJointSpace:
    """A full CLIP model (`CLIPModel`: text and image towers with their projections) by hub id
    or folder, e.g. `openai/clip-vit-large-patch14`.

    Text embeddings of prompts are the targets of the CLIP score; image embeddings of the frames
    are what the ridge maps regress onto."""

    def __init__(self, source: str | Path, device: str | torch.device = "cpu") -> None:
        from transformers import AutoTokenizer, CLIPModel

        self.source = str(source)
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.model = CLIPModel.from_pretrained(self.source).to(self.device).eval()

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @torch.no_grad()
    def embed_texts(self, prompts: Sequence[str]) -> np.ndarray:
        """`(C, D)` L2-normalised text embeddings."""
        max_len = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        out = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device),
        )
        return _unit(out.pooler_output.float().cpu().numpy())

    @torch.no_grad()
    def embed_images(self, paths: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """`(N, D)` L2-normalised image embeddings of the frames (short side resized, centre
        crop, CLIP normalisation, as in evaluation)."""
        from PIL import Image

        size = self.image_size
        rows = []
        for start in range(0, len(paths), batch_size):
            pixels = []
            for path in paths[start : start + batch_size]:
                with Image.open(path) as raw:
                    picture = raw.convert("RGB")
                box = center_square_box(picture.width, picture.height)
                resized = picture.resize((size, size), Image.Resampling.BICUBIC, box=box)
                pixels.append(clip_normalize(resized))
            out = self.model.get_image_features(pixel_values=torch.stack(pixels).to(self.device))
            rows.append(out.pooler_output.float().cpu().numpy())
        return _unit(np.concatenate(rows))


@dataclass
class FidelityRow:
    """One row of the Table 4 analogue; percentages for R@k and top-1, CLIP score on 0-100."""

    kind: str
    n: int
    r1: float | None
    r5: float | None
    cos_to_vcls: float | None
    clip_score: float | None
    clip_top1: float | None
    attn_entropy: float | None


@dataclass
class FidelityResult:
    """Rows for g, g_hat, a_mean, random, v_cls (and the CLIP image reference with a CLIP model);
    `settings` records every choice that produced them."""

    rows: list[FidelityRow]
    n: int
    chance_r1: float
    chance_r5: float
    grounding_entropy: float
    settings: dict[str, Any] = field(default_factory=dict)

    def row(self, kind: str) -> FidelityRow:
        return next(r for r in self.rows if r.kind == kind)


def fidelity(
    probe: ProbeSet,
    clip: ClipJointSpace | None = None,
    *,
    prompt: str = DEFAULT_PROMPT,
    ridge_alpha: float = 1.0,
    seed: int = 0,
) -> FidelityResult:
    """Score a probe set (see the module docstring). Without `clip`, the CLIP columns are None.

    Clips without a category are left out of the CLIP score; R@k and entropy use all clips."""
    n = len(probe)
    gallery = probe.shared["v_cls"][:, 0]
    clip_cols: dict[str, tuple[float, float]] = {}
    clip_n = 0
    if clip is not None:
        clip_cols, clip_n = _clip_scores(probe, clip, prompt, ridge_alpha, seed)
    rows = []
    for kind in KINDS:
        ranks = retrieval_ranks(probe.shared[kind], gallery) if kind in QUERY_KINDS else None
        cos = float(
            np.mean(np.einsum("nqe,ne->n", _unit(probe.shared[kind]), _unit(gallery)))
            / probe.shared[kind].shape[1]
        )
        score, top1 = clip_cols.get(kind, (None, None))
        rows.append(
            FidelityRow(
                kind=kind,
                n=n,
                r1=recall_at(ranks, 1) if ranks is not None else None,
                r5=recall_at(ranks, 5) if ranks is not None else None,
                cos_to_vcls=cos,
                clip_score=score,
                clip_top1=top1,
                attn_entropy=float(np.mean(probe.entropy[kind])),
            )
        )
    if "clip_image" in clip_cols:
        score, top1 = clip_cols["clip_image"]
        rows.append(FidelityRow("clip_image", clip_n, None, None, None, score, top1, None))
    settings = {
        "n_clips": n,
        "k": probe.k,
        "grounding_pool": probe.pool,
        "n_patches": probe.n_patches,
        "retrieval_space": "L_align shared space (align.g_proj / audio_proj / visual_proj)",
        "k_token_score": "mean over the K tokens of the cosine similarity",
        "clip_model": clip.source if clip is not None else None,
        "clip_prompt": prompt,
        "clip_map": "ridge (intercept) from the K-mean L2-normalised embedding to the CLIP image "
        "embedding, two-fold cross-fitted",
        "ridge_alpha": ridge_alpha,
        "clip_clips": clip_n,
        "entropy": "grounding cross-attention query/key projections over the P patch tokens "
        "(the embedding on the audio side), per-head entropy / log(P), mean over heads, tokens "
        "and clips",
        "seed": seed,
    }
    return FidelityResult(
        rows=rows,
        n=n,
        chance_r1=100.0 * min(1, n) / n,
        chance_r5=100.0 * min(5, n) / n,
        grounding_entropy=float(np.mean(probe.grounding_entropy)),
        settings=settings,
    )


def _clip_scores(
    probe: ProbeSet, clip: ClipJointSpace, prompt: str, ridge_alpha: float, seed: int
) -> tuple[dict[str, tuple[float, float]], int]:
    """Per kind: (mean CLIP score, category top-1 %) over the clips that have a category."""
    rows = [i for i, c in enumerate(probe.categories) if c]
    if len(rows) < 4:
        return {}, 0
    cats = [str(probe.categories[i]) for i in rows]
    names = sorted(set(cats))
    texts = clip.embed_texts([prompt.format(category=c) for c in names])
    target = np.array([names.index(c) for c in cats])
    images = clip.embed_images([probe.images[i] for i in rows])
    result = {}
    for kind in KINDS:
        mapped = cross_fitted_ridge(
            pooled(probe.native[kind][rows]), images, alpha=ridge_alpha, seed=seed
        )
        result[kind] = _score_against(_unit(mapped), texts, target)
    result["clip_image"] = _score_against(images, texts, target)
    return result, len(rows)


def _score_against(emb: np.ndarray, texts: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    sims = emb @ texts.T  # (N, C) cosines
    own = sims[np.arange(len(target)), target]
    score = float(np.mean(100.0 * np.maximum(own, 0.0)))
    top1 = float(100.0 * np.mean(sims.argmax(axis=1) == target))
    return score, top1


def fidelity_markdown(result: FidelityResult, title: str = "") -> str:
    """Our table, then the paper's Table 4 for orientation (different model, data and scale)."""
    columns = ["Token", "R@1", "R@5", "cos to V_cls", "CLIP score", "CLIP top-1", "Attn-Entropy"]
    body = [
        [
            KIND_LABELS[r.kind],
            r.r1,
            r.r5,
            r.cos_to_vcls,
            r.clip_score,
            r.clip_top1,
            r.attn_entropy,
        ]
        for r in result.rows
    ]
    s = result.settings
    if s["clip_model"] is None:
        clip_text = "CLIP columns empty: no CLIP model given"
    else:
        clip_text = (
            f"CLIP score = 100·max(cos, 0) with the category prompt '{s['clip_prompt']}' "
            f"({s['clip_model']}, {s['clip_clips']} clips with a category)"
        )
    own = _OWN_ATTENTION.get(str(s.get("grounding_pool")), "")
    text = [
        f"# Semantic fidelity of the grounding tokens{': ' + title if title else ''}",
        "",
        f"{result.n} clips, K = {s['k']} (grounding.pool: {s.get('grounding_pool')}), "
        f"{s['n_patches']} patches. R@k in % (chance R@1 "
        f"{result.chance_r1:.1f}, R@5 {result.chance_r5:.1f}); cos to V_cls in the L_align space "
        f"(mean over tokens); {clip_text}; attention entropy normalised to [0, 1]. "
        f"The model's own grounding attention ({own}) has entropy "
        f"{result.grounding_entropy:.3f}. Definitions: docs/probes.md.",
        "",
        _markdown_with_digits(columns, body),
        "Paper, Table 4 (VggCaps test set, full-size model and CLIP ViT-L/14; a different "
        "model, data and scale, and the paper does not define its CLIP score or entropy "
        "precisely, so only the ordering is comparable):",
        "",
        markdown_table(
            ["Token", "R@1", "R@5", "CLIP Score", "Attn-Entropy"],
            [[KIND_LABELS[k], *v] for k, v in PAPER_TABLE4.items()],
            digits=2,
        ),
    ]
    return "\n".join(text)


def _markdown_with_digits(columns: list[str], rows: list[list[Any]]) -> str:
    """Percentages with one decimal, cosines and entropies with three."""
    formatted = [
        [row[0], *(format_cell(v, 1) for v in row[1:3]), format_cell(row[3], 3)]
        + [format_cell(v, 1) for v in row[4:6]]
        + [format_cell(row[6], 3)]
        for row in rows
    ]
    return markdown_table(columns, formatted)


def write_fidelity(result: FidelityResult, out_dir: Path, title: str = "") -> list[Path]:
    """`fidelity.csv`, `fidelity.md` and `fidelity.json` (rows + settings) under `out_dir`."""
    rows = [asdict(r) for r in result.rows]
    columns = list(rows[0])
    files = write_table(out_dir, "fidelity", columns, rows, fidelity_markdown(result, title))
    summary = {
        "rows": rows,
        "n": result.n,
        "chance_r1": result.chance_r1,
        "chance_r5": result.chance_r5,
        "grounding_entropy": result.grounding_entropy,
        "settings": result.settings,
        "paper_table4": {
            k: dict(zip(("r1", "r5", "clip_score", "attn_entropy"), v, strict=True))
            for k, v in PAPER_TABLE4.items()
        },
    }
    atomic_write_text(out_dir / "fidelity.json", json.dumps(summary, indent=2) + "\n")
    return [*files, out_dir / "fidelity.json"]
