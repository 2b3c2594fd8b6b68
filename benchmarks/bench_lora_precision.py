"""Benchmark: how much of one AdamW step a LoRA weight keeps, bf16 vs fp32 master weights.

peft creates LoRA weights in their base layer's dtype, so with `llm.dtype: bfloat16` the decoder's
`lora_A` was bf16 (8 significant bits): an AdamW step of about lr (Adam's first steps move each
entry by ~lr) is below half a bf16 ulp for most entries of a kaiming-initialised `lora_A`, and
rounds away. `Multi2Cap` now keeps every trainable weight in fp32 (`_trainable_to_fp32`). This
script measures, on one peft-initialised `lora_A` of an `r x 2048` LoRA on a bf16 2048 x 2048
Linear, the fraction of entries that one AdamW step (random normal gradient, weight decay 1e-6)
leaves exactly unchanged, for the learning rates of the recipes' warm-up and cosine tail:
bf16 as peft makes it (before) and fp32 as the model holds it now (after), the latter from a real
`Multi2Cap` with a bf16 decoder of that width.

    .venv/bin/python benchmarks/bench_lora_precision.py [--lrs 5e-5 1e-5] [--rank 8]
"""

from __future__ import annotations

import argparse

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from multi2cap.model.config import Multi2CapConfig
from multi2cap.model.multi2cap import Multi2Cap

WIDTH = 2048


def unmoved_fraction(weight: torch.Tensor, lr: float, seed: int = 0) -> float:
    """Fraction of entries of `weight` unchanged by one AdamW step on a random gradient."""
    param = nn.Parameter(weight.detach().clone())
    optimizer = torch.optim.AdamW([param], lr=lr, weight_decay=1e-6)
    param.grad = torch.randn(param.shape, generator=torch.Generator().manual_seed(seed)).to(
        param.dtype
    )
    before = param.detach().clone()
    optimizer.step()
    return float((param.detach() == before).float().mean())


def peft_lora_a(rank: int) -> torch.Tensor:
    """`lora_A` as peft initialises it on a bf16 Linear (before: what the model trained)."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(WIDTH, WIDTH, bias=False, dtype=torch.bfloat16))
    inject_adapter_in_model(LoraConfig(r=rank, target_modules=["q_proj"]), model)
    return model.q_proj.lora_A["default"].weight


def model_lora_a(rank: int) -> torch.Tensor:
    """A decoder `lora_A` of a `Multi2Cap` with a bf16 decoder of width 2048 (after)."""
    torch.manual_seed(0)
    config = Multi2CapConfig.tiny(["a dog barks"], grounding=False)
    llm_config = {
        **config.llm.config,
        "hidden_size": WIDTH,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
    }
    lora = config.llm.lora.model_copy(update={"r": rank, "targets": ["q_proj"]})
    llm = config.llm.model_copy(update={"config": llm_config, "dtype": "bfloat16", "lora": lora})
    model = Multi2Cap(config.model_copy(update={"llm": llm}))
    name = next(n for n, _ in model.decoder.named_parameters() if "lora_A" in n)
    return model.decoder.get_parameter(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-5])
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    before, after = peft_lora_a(args.rank), model_lora_a(args.rank)
    print(f"lora_A {tuple(before.shape)}: entries unchanged by one AdamW step")
    print(
        f"{'lr':>8} {'before (' + str(before.dtype)[6:] + ')':>18} {'after (' + str(after.dtype)[6:] + ')':>18}"
    )
    for lr in args.lrs:
        print(
            f"{lr:>8.0e} {unmoved_fraction(before, lr):>18.1%} {unmoved_fraction(after, lr):>18.1%}"
        )


if __name__ == "__main__":
    main()
