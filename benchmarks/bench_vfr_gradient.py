"""Benchmark: how hard L_vfr pulls on the CED LoRA against L_cap, under each `vfr_reduction`.

The CED LoRA is the one trainable part that L_cap, L_align and L_vfr share: L_cap reaches it
through the adapter's audio tokens and (pre-training feeds g to the adapter) through the
grounding's audio projection; L_vfr through g_hat = psi(A) (g is detached); L_align through g
and A_mean. Eq. 3 writes L_vfr = ||g - g_hat||^2, a squared norm per clip (`sum`); `mean` divides
it by the K x d_g elements (4096 at K 4, d_g 1024), at the same beta 0.05. This script measures,
on one pre-training forward at the paper's widths with random weights,

    ratio = ||grad_CED-LoRA(beta L_vfr)|| / ||grad_CED-LoRA(L_cap)||

under each reduction (and alpha L_align's for scale). Widths: CED-base (d_a 768, 12 blocks, LoRA
r 8 on q/v, random weights), d_g 1024, K 4, VFR hidden 2048, CLIP ViT-L/14's patch map (width
1024, 224 px / 14 px = 16 x 16) from a 1-layer random tower (frozen: it only supplies V), and a
decoder: `--llm DIR` (any HF causal LM folder, e.g. SmolLM2-135M) or by default a random
2-layer Llama stand-in of width 576. LoRA B starts at zero, so at step 0 only LoRA B has a
gradient; the ratio is a property of the loss scales, and `sum` / `mean` differ by exactly
K x d_g in it (both forwards draw the same dropout masks). Clips: 10-s noise, one caption each.

    .venv/bin/python benchmarks/bench_vfr_gradient.py [--llm DIR] [--batch 2] [--seconds 10]
    .venv/bin/python benchmarks/bench_vfr_gradient.py --dry-run    # tiny model, seconds

Not a timing: the figures do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from multi2cap.model.config import (
    VFR_REDUCTIONS,
    LlmSpec,
    Multi2CapConfig,
    TokenizerSpec,
    VisionEncoderSpec,
)
from multi2cap.model.multi2cap import Multi2Cap

WORDS = [
    "a",
    "dog",
    "barks",
    "while",
    "rain",
    "falls",
    "on",
    "a",
    "roof",
    "and",
    "birds",
    "sing",
    "in",
    "the",
    "morning",
]
CLIP_PATCH_MAP = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=1,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
)
LLAMA_STAND_IN = dict(
    vocab_size=len(set(WORDS)) + 4,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=2,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def model_config(llm: str | None, dry_run: bool) -> Multi2CapConfig:
    """The paper's grounding widths with random CED-base and a CLIP patch map (see above)."""
    if dry_run:
        return Multi2CapConfig.tiny([" ".join(WORDS)])
    if llm is not None:
        decoder = LlmSpec(source=llm, dtype="float32")
    else:
        decoder = LlmSpec(
            source=None,
            family="llama",
            config=LLAMA_STAND_IN,
            tokenizer=TokenizerSpec(words=sorted(set(WORDS))),
            dtype="float32",
        )
    return Multi2CapConfig(
        audio={"source": None, "config": {"preset": "base"}},
        vision=VisionEncoderSpec(source=None, config=CLIP_PATCH_MAP),
        llm=decoder,
    )


def _batch(n: int, seconds: float, image_size: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    samples = round(seconds * 16000)
    return {
        "ids": [f"clip{i}" for i in range(n)],
        "audio": 0.1 * torch.randn(n, samples, generator=gen),
        "audio_lengths": torch.full((n,), samples),
        "images": torch.randn(n, 3, image_size, image_size, generator=gen),
        "captions": [" ".join(WORDS[i % 3 : i % 3 + 8]) for i in range(n)],
    }


def _norm(grads: tuple[torch.Tensor | None, ...]) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))


def measure(model: Multi2Cap, batch: dict[str, Any]) -> dict[str, Any]:
    """Per reduction: the losses, the CED-LoRA gradient norms of L_cap, beta L_vfr and
    alpha L_align, and the ratios to L_cap's."""
    lora = [p for n, p in model.audio_encoder.named_parameters() if "lora_" in n]
    model.set_stage("pretrain")
    model.train()
    config = model.config
    rows: dict[str, Any] = {}
    for reduction in VFR_REDUCTIONS:
        torch.manual_seed(1)  # the same LoRA-dropout masks for both reductions
        out = model(batch, "pretrain", vfr_reduction=reduction)
        assert out.loss_vfr is not None and out.loss_align is not None
        cap = _norm(torch.autograd.grad(out.loss_cap, lora, retain_graph=True, allow_unused=True))
        vfr = _norm(
            torch.autograd.grad(
                config.beta * out.loss_vfr, lora, retain_graph=True, allow_unused=True
            )
        )
        align = _norm(torch.autograd.grad(config.alpha * out.loss_align, lora, allow_unused=True))
        rows[reduction] = {
            "loss_cap": out.loss_cap.item(),
            "loss_vfr": out.loss_vfr.item(),
            "loss_align": out.loss_align.item(),
            "grad_cap": cap,
            "grad_beta_vfr": vfr,
            "grad_alpha_align": align,
            "ratio_vfr_to_cap": vfr / cap,
            "ratio_align_to_cap": align / cap,
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", help="HF causal LM folder or id (default: a random stand-in)")
    parser.add_argument("--batch", type=int, default=2, help="clips in the batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--dry-run", action="store_true", help="the tiny test model (seconds)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = model_config(args.llm, args.dry_run)
    model = Multi2Cap(config)
    assert model.vision is not None
    seconds = 1.0 if args.dry_run else args.seconds
    batch = _batch(args.batch, seconds, model.vision.image_size)
    rows = measure(model, batch)
    k_dg = config.k * config.d_g
    decoder = "tiny" if args.dry_run else (args.llm or "random 2-layer Llama stand-in, width 576")
    print(
        f"CED-LoRA gradient norms, one pre-training forward: K {config.k}, d_g {config.d_g} "
        f"(K x d_g = {k_dg}), beta {config.beta}, alpha {config.alpha}, grounding.pool "
        f"{config.grounding.pool}, {args.batch} clips of {seconds:g} s, decoder: {decoder}"
    )
    print(f"{'reduction':>9} {'L_vfr':>10} {'|g cap|':>10} {'|g bL_vfr|':>11} {'ratio':>10}")
    for reduction, row in rows.items():
        print(
            f"{reduction:>9} {row['loss_vfr']:>10.4g} {row['grad_cap']:>10.4g} "
            f"{row['grad_beta_vfr']:>11.4g} {row['ratio_vfr_to_cap']:>10.4g}"
        )
    align = rows["sum"]["ratio_align_to_cap"]
    print(f"alpha L_align / L_cap gradient ratio (either reduction): {align:.4g}")
    if args.json:
        summary = {"k": config.k, "d_g": config.d_g, "decoder": decoder, "rows": rows}
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
