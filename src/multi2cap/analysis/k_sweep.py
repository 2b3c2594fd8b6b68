"""The number of grounding tokens K (paper Table 5): cells that train one K each, or given
checkpoints, evaluated with the caption metrics of `multi2cap.analysis.ablations` plus V-CLS
R@1, FLOPs and latency (`measure_cost`), and the FLOPs slope per grounding token.

The sweep runs under `grounding.pool: space` by default, where K = 1, 4, 16, 64, 256 are the
1x1 ... 16x16 poolings of CLIP ViT-L/14's 16 x 16 patch map (docs/model.md, "Readings of the
paper").

**What the FLOPs count** (`flop_counter`): `torch.utils.flop_counter.FlopCounterMode`, i.e. the
matrix products (`mm`, `addmm`, `bmm`, `baddbmm`, convolutions) and scaled-dot-product
attention at 2 FLOPs per multiply-add, plus the CPU flash-attention kernel torch leaves
uncounted (`aten._scaled_dot_product_flash_attention_for_cpu`, counted with torch's own SDPA
formula). Element-wise work (LayerNorm, GELU, softmax, masking, average pooling) is not counted.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from multi2cap.analysis.ablations import (
    PAPER_NOTE,
    RESULT_FILE,
    AblationSpec,
    Cell,
    CellResult,
    Log,
    caption_metrics,
    metric_keys,
    x100,
)
from multi2cap.analysis.probe_tables import markdown_table, write_table
from multi2cap.data.dataset import CaptionDataset
from multi2cap.data.manifest import read_manifest
from multi2cap.io import atomic_write_text
from multi2cap.media.audio import SAMPLE_RATE
from multi2cap.metrics import PAPER_LABELS
from multi2cap.model.config import CONFIG_FILE, GroundingPool, Multi2CapConfig

#: Paper Table 5 (K; CIDEr VggCaps, CIDEr Clotho, V-CLS R@1, GFLOPs, latency ms). The last row's K
#: is missing from the published table.
PAPER_TABLE5 = (
    ("1", 53.5, 51.7, 66.3, 0.67, 23.2),
    ("4", 54.2, 52.5, 71.8, 0.77, 24.7),
    ("16", 54.1, 52.6, 71.6, 1.18, 28.8),
    ("64", 53.7, 52.1, 71.3, 2.83, 34.3),
    ("(not given)", 53.4, 51.8, 70.7, 9.72, 41.9),
)
#: The K values of Table 5 under the spatial reading (the fifth row's 9.72 G lies at K ~ 265 on
#: the line through the other four).
PAPER_KS = (1, 4, 16, 64, 256)

#: Cost columns of the sweep: GFLOPs of each part for one clip, then R@1 and latency.
FLOPS_KEYS = ("gflops_av_grounding", "gflops_vfr_adapter", "gflops_grounding", "gflops_prefill")
COST_KEYS = ("vcls_r1", *FLOPS_KEYS, "latency_ms")
FLOPS_LABELS = {
    "gflops_av_grounding": "AV-grounding",
    "gflops_vfr_adapter": "VFR + adapter",
    "gflops_grounding": "grounding path",
    "gflops_prefill": "prefill",
}


def _cpu_flash_flops(
    query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any, **kw: Any
) -> int:
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def flop_counter() -> FlopCounterMode:
    """A `FlopCounterMode` (no printout) that also counts the CPU flash-attention kernel (see the
    module docstring for what is and is not counted)."""
    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops},
    )


def paper_slope() -> tuple[float, float]:
    """(GFLOPs per grounding token, intercept) of the least-squares line through Table 5's four
    rows with a K (1, 4, 16, 64): about 0.0343 and 0.633."""
    ks = [float(row[0]) for row in PAPER_TABLE5[:4]]
    flops = [row[4] for row in PAPER_TABLE5[:4]]
    slope, intercept = np.polyfit(ks, flops, 1)
    return float(slope), float(intercept)


def flops_slope(ks: Sequence[int], gflops: Sequence[float]) -> float | None:
    """Least-squares GFLOPs per grounding token over the sweep's K values (None with fewer than
    two distinct K)."""
    if len(set(ks)) < 2:
        return None
    return float(np.polyfit([float(k) for k in ks], [float(f) for f in gflops], 1)[0])


# ---------------------------------------------------------------------------------- cost
@dataclass
class CostSettings:
    """Where and how `measure_cost` times and counts: one clip of `seconds` (cropped or
    zero-padded), `warmup` untimed then `runs` timed captioning calls (greedy, at most
    `max_new_tokens`; None = the model's default). `backbones`: where the checkpoint's
    backbones are on this machine (`Multi2Cap.from_pretrained`)."""

    probe_manifest: Path
    seconds: float = 10.0
    warmup: int = 2
    runs: int = 5
    max_new_tokens: int | None = None
    device: str = "cpu"
    batch_size: int = 16
    backbones: dict[str, str] = field(default_factory=dict)


def measure_cost(checkpoint: Path, settings: CostSettings) -> dict[str, Any]:
    """V-CLS R@1 of g_hat, FLOPs and captioning latency for one checkpoint (docs/probes.md).

    - `vcls_r1`: R@1 (%) of g_hat against V_cls over `probe_manifest` (Table 4's g_hat row).
    - `gflops_av_grounding`: the AV-grounding module (g from the clip's tokens and the frame's
      patches; pre-training and probes only, inference has no frame).
    - `gflops_vfr_adapter`: the VFR (g_hat) and the Ground Adapter (K grounding + T' audio
      tokens to the LLM width): the grounding work of audio-only captioning.
    - `gflops_grounding`: their sum, for one clip, given the encoder's tokens and the patches.
    - `gflops_prefill`: the audio-only forward of one clip with an empty caption (CED encoder,
      VFR, adapter and one LLM pass over prompt + prefix + EOS).
    - `latency_ms`: median wall time of `Multi2Cap.caption` on the clip after warm-up.
    """
    from multi2cap.analysis.probes import (
        collect_probe_set,
        load_probe_model,
        recall_at,
        retrieval_ranks,
    )

    records = read_manifest(settings.probe_manifest)
    model = load_probe_model(checkpoint, device=settings.device, backbones=settings.backbones)
    probe = collect_probe_set(model, records, batch_size=settings.batch_size)
    ranks = retrieval_ranks(probe.shared["g_hat"], probe.shared["v_cls"][:, 0])

    dataset = CaptionDataset(
        records[:1], train=False, with_images=True, image_size=model.vision.image_size
    )
    item = dataset[0]
    if item is None:
        raise ValueError(f"{records[0].audio}: unreadable, cannot time the model on it")
    n = round(settings.seconds * 16000)
    wave = torch.zeros(n)
    wave[: min(n, item["length"])] = item["audio"][:n]
    audio = wave.unsqueeze(0).to(model.device)
    lengths = torch.tensor([n])
    image = item["image"].unsqueeze(0).to(model.device)
    with torch.no_grad():
        tokens, mask = model.encode_audio(audio, lengths)
        patches = model.vision(image).patches
        parts = grounding_path_flops(
            model.grounding, model.vfr, model.adapter, tokens, mask, patches, model.vision.grid
        )
        batch = {"audio": audio, "audio_lengths": lengths, "captions": [""]}
        with flop_counter() as prefill_count:
            model(batch, "finetune")
    times = []
    for i in range(settings.warmup + settings.runs):
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.caption(
            [wave], sampling_rate=SAMPLE_RATE, num_beams=1, max_new_tokens=settings.max_new_tokens
        )
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= settings.warmup:
            times.append(1000.0 * (time.perf_counter() - start))
    return {
        "vcls_r1": recall_at(ranks, 1),
        "gflops_av_grounding": parts["av_grounding"] / 1e9,
        "gflops_vfr_adapter": (parts["vfr"] + parts["adapter"]) / 1e9,
        "gflops_grounding": sum(parts.values()) / 1e9,
        "gflops_prefill": prefill_count.get_total_flops() / 1e9,
        "latency_ms": statistics.median(times),
        "latency_runs": len(times),
        "device": _device_name(model.device),
        "cost_clip_seconds": settings.seconds,
    }


@torch.no_grad()
def grounding_path_flops(
    grounding: Any,
    vfr: Any,
    adapter: Any,
    tokens: Tensor,
    mask: Tensor,
    patches: Tensor,
    grid: tuple[int, int],
) -> dict[str, int]:
    """FLOPs (`flop_counter`) of the AV-grounding (g), the VFR (g_hat) and the Ground Adapter
    (g_hat and the audio tokens) for CED tokens `(B, T, d_a)` with `mask (B, T)` and CLIP
    patches `(B, P, d_v)` on a `grid` of rows x columns: `{"av_grounding", "vfr", "adapter"}`.
    Works on meta tensors too (shapes only: counts at any width for free)."""
    counts = {}
    with flop_counter() as counter:
        grounding(tokens, mask, patches, grid=grid)
    counts["av_grounding"] = int(counter.get_total_flops())
    with flop_counter() as counter:
        g_hat = vfr(tokens, mask)
    counts["vfr"] = int(counter.get_total_flops())
    with flop_counter() as counter:
        adapter(tokens, mask, g_hat)
    counts["adapter"] = int(counter.get_total_flops())
    return counts


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------- cells
def k_cells(ks: Sequence[int], pool: GroundingPool = "space") -> list[Cell]:
    """One cell per K (`model.k=K`, `model.grounding.pool=pool`)."""
    return [
        Cell(f"k_{k}", {"k": k, "pool": pool}, [f"model.k={k}", f"model.grounding.pool={pool}"])
        for k in ks
    ]


def evaluate_checkpoints(
    spec: AblationSpec,
    checkpoints: Sequence[Path],
    out_dir: Path,
    *,
    measure: Callable[[Path], dict[str, Any]] | None = None,
    log: Log | None = None,
) -> list[CellResult]:
    """The K-sweep table from given checkpoints instead of training (K and the pooling read
    from each config); results are cached in
    `<out>/cells/k_<K>_<hash of the checkpoint path>/result.json` like trained cells."""

    say = log or (lambda _: None)
    results = []
    for i, checkpoint in enumerate(checkpoints, 1):
        config = Multi2CapConfig.load(Path(checkpoint) / CONFIG_FILE)
        digest = hashlib.sha1(str(Path(checkpoint).resolve()).encode()).hexdigest()[:8]
        name = f"k_{config.k}_{digest}"
        done = out_dir / "cells" / name / RESULT_FILE
        if done.is_file():
            say(f"checkpoint {i}/{len(checkpoints)} {checkpoint}: evaluated earlier, skipped")
            results.append(CellResult(**json.loads(done.read_text(encoding="utf-8"))))
            continue
        say(f"checkpoint {i}/{len(checkpoints)} {checkpoint}: evaluating")
        metrics, unavailable = caption_metrics(
            Path(checkpoint), spec, captions_path=done.parent / "captions.jsonl"
        )
        result = CellResult(
            name=name,
            labels={"k": config.k, "pool": config.grounding.pool},
            checkpoint=str(checkpoint),
            pretrain_checkpoint=str(checkpoint),
            metrics=metrics,
            unavailable=unavailable,
            extra=measure(Path(checkpoint)) if measure is not None else {},
        )
        atomic_write_text(done, json.dumps(asdict(result), indent=2) + "\n")
        results.append(result)
    return results


# ---------------------------------------------------------------------------------- table
def sweep_slopes(results: Sequence[CellResult]) -> dict[str, float | None]:
    """GFLOPs per grounding token of each FLOPs column (`flops_slope` over the cells that have
    it)."""
    slopes: dict[str, float | None] = {}
    for key in FLOPS_KEYS:
        measured = [(r.labels["k"], r.extra[key]) for r in results if r.extra.get(key) is not None]
        slopes[key] = flops_slope([k for k, _ in measured], [f for _, f in measured])
    return slopes


def write_k_sweep(results: Sequence[CellResult], out_dir: Path) -> list[Path]:
    """`k_sweep.csv` (raw values), `k_sweep.md` (x100, with the slope per grounding token and
    the paper's Table 5) and `k_sweep_slopes.json` (the slopes beside the paper's)."""
    results = sorted(results, key=lambda r: r.labels["k"])
    keys = metric_keys(results)
    rows = [
        {
            "k": r.labels["k"],
            "pool": r.labels.get("pool"),
            **r.metrics,
            **{c: r.extra.get(c) for c in COST_KEYS},
        }
        for r in results
    ]
    columns = ["k", "pool", *keys, *COST_KEYS]
    devices = sorted({str(r.extra.get("device")) for r in results})
    table = markdown_table(
        [
            "K",
            "pool",
            *(PAPER_LABELS.get(m, m) for m in keys),
            "V-CLS R@1",
            *(f"GFLOPs {FLOPS_LABELS[c]}" for c in FLOPS_KEYS),
            "Latency (ms)",
        ],
        [
            [
                r.labels["k"],
                r.labels.get("pool", "time"),
                *(x100(m, r.metrics.get(m)) for m in keys),
                r.extra.get("vcls_r1"),
                *(_fmt_small(r.extra.get(c)) for c in FLOPS_KEYS),
                r.extra.get("latency_ms"),
            ]
            for r in results
        ],
    )
    slopes = sweep_slopes(results)
    paper, intercept = paper_slope()
    slope_text = ", ".join(
        f"{FLOPS_LABELS[c]} {_fmt_small(v) if v is not None else 'n/a'}" for c, v in slopes.items()
    )
    paper_table = markdown_table(
        ["K", "CIDEr VggCaps", "CIDEr Clotho", "V-CLS R@1", "FLOPs (G)", "Latency (ms)"],
        [list(row) for row in PAPER_TABLE5],
        digits=2,
    )
    md = (
        "# Number of ground tokens K (Table 5)\n\n"
        "Caption metrics x100 (audio only); V-CLS R@1 = R@1 (%) of g_hat against V_cls; FLOPs "
        "for one clip (matrix products and attention, 2 per multiply-add; element-wise work not "
        "counted; docs/probes.md): AV-grounding (needs the frame: pre-training, probes), VFR + "
        "adapter (audio-only captioning), their sum, and the whole audio-only prefill; latency "
        f"= median captioning time per clip after warm-up on {', '.join(devices)}.\n\n{table}\n"
        f"Measured slope, GFLOPs per grounding token (least squares over K): {slope_text}. "
        f"Paper: {paper:.4f} (least squares over Table 5's K = 1, 4, 16, 64 rows; its fifth "
        f"row, 9.72 G, lies at K = {(9.72 - intercept) / paper:.0f} on that line).\n\n"
        f"{PAPER_NOTE}\n\n{paper_table}"
    )
    files = write_table(out_dir, "k_sweep", columns, rows, md)
    summary = {"measured": slopes, "paper": paper, "unit": "GFLOPs per grounding token"}
    slopes_file = out_dir / "k_sweep_slopes.json"
    atomic_write_text(slopes_file, json.dumps(summary, indent=2) + "\n")
    return [*files, slopes_file]


def _fmt_small(value: float | None) -> str | None:
    """GFLOPs of tiny models are far below 0.1: print three significant digits."""
    return None if value is None else f"{value:.3g}"
