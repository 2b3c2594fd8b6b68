"""Multi2Cap at real size on one GPU, random weights: training and captioning throughput.

Builds CED-base + CLIP ViT-L/14 + a Llama-3.2-3B-shaped decoder (bf16, LoRA on q,k,v,o) from
configs alone (nothing is downloaded) and measures

* pre-training step (L_cap + alpha L_align + beta L_vfr, bf16 autocast, AdamW on the trainable
  parameters, gradient checkpointing as in the recipe pretrain_vggcaps) at the largest batch
  that fits among 8, 16, 32, ...: samples/s, LLM tokens/s, MFU, peak memory;
* the gradient cache's extra pass (`optim.align_batch: effective` under accumulation: CED,
  CLIP and the grounding without graph, `Multi2Cap.alignment_rows`) at that batch, as a
  fraction of the step;
* captioning (greedy, audio only): latency for one 10-s clip, throughput at batch 64.

MFU = model FLOPs per step / step time / peak dense bf16 FLOP/s of the card. Model FLOPs are
counted by `torch.utils.flop_counter.FlopCounterMode` over one forward+backward at a small batch
without gradient checkpointing (so recomputation is not counted, as MFU's definition asks) and
scaled by the batch size (inputs have fixed lengths). The frozen backbones have no weight
gradients, so their backward costs about one forward, not two: the counter sees that.

Random weights rarely emit EOS, so every caption runs to `--caption-tokens` new tokens; the
paper's 24.7 ms per clip at K=4 (Table 5) is for its trained model and its decoding lengths.

    python benchmarks/bench_gpu.py                 # on a CUDA machine
    python benchmarks/bench_gpu.py --dry-run       # tiny version of the same path on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of the device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}

CLIP_VIT_L14 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=768,
)
DECODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-3.2-3b": (
        "llama",
        dict(
            vocab_size=128256,
            hidden_size=3072,
            intermediate_size=8192,
            num_hidden_layers=28,
            num_attention_heads=24,
            num_key_value_heads=8,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
        ),
    ),
    "llama-3.2-1b": (
        "llama",
        dict(
            vocab_size=128256,
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
        ),
    ),
    "llama-3.1-8b": (
        "llama",
        dict(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
        ),
    ),
    "qwen2.5-3b": (
        "qwen2",
        dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
        ),
    ),
}
WORDS = [
    "a",
    "dog",
    "barks",
    "while",
    "cars",
    "pass",
    "by",
    "on",
    "a",
    "busy",
    "street",
    "and",
    "birds",
    "sing",
    "in",
    "the",
    "distance",
    "water",
    "flows",
    "rain",
    "falls",
    "wind",
    "blows",
    "people",
    "talk",
    "music",
    "plays",
    "engine",
    "idles",
    "door",
    "slams",
]


@dataclass
class Settings:
    device: str
    decoder: str
    k: int
    clip_seconds: float
    batches: list[int]
    steps: int
    warmup: int
    caption_tokens: int
    caption_batch: int
    gradient_checkpointing: bool
    pool: str = "space"


def model_config(settings: Settings, dry_run: bool) -> Any:
    """The benchmarked architecture; with `dry_run` the tiny model of the tests."""
    from multi2cap.model.config import (
        AudioEncoderSpec,
        GenerationSpec,
        LlmSpec,
        Multi2CapConfig,
        TokenizerSpec,
        VisionEncoderSpec,
    )

    generation = GenerationSpec(num_beams=1, max_new_tokens=settings.caption_tokens)
    if dry_run:
        return Multi2CapConfig.tiny(
            [" ".join(WORDS)],
            k=settings.k,
            grounding={"pool": settings.pool},
            generation=generation,
        )
    family, llm = DECODERS[settings.decoder]
    return Multi2CapConfig(
        audio=AudioEncoderSpec(source=None, config={"preset": "base"}),
        vision=VisionEncoderSpec(source=None, config=CLIP_VIT_L14),
        llm=LlmSpec(
            source=None,
            family=family,
            config={**llm, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
            tokenizer=TokenizerSpec(words=sorted(set(WORDS))),
            dtype="bfloat16",
        ),
        grounding={"pool": settings.pool},
        k=settings.k,
        generation=generation,
    )


def synthetic_batch(
    batch: int, settings: Settings, image_size: int, generator: torch.Generator
) -> dict[str, Any]:
    """A collated batch as `collate_captions` makes it: 10-s noise, images, 12-word captions."""
    n = round(settings.clip_seconds * 16000)
    words = torch.randint(len(WORDS), (batch, 12), generator=generator).tolist()
    return {
        "ids": [f"clip{i}" for i in range(batch)],
        "audio": 0.1 * torch.randn(batch, n, generator=generator),
        "audio_lengths": torch.full((batch,), n, dtype=torch.long),
        "images": torch.randn(batch, 3, image_size, image_size, generator=generator),
        "captions": [" ".join(WORDS[w] for w in row) for row in words],
        "references": [[" ".join(WORDS[w] for w in row)] for row in words],
    }


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def llm_tokens(model: Any) -> Iterator[Callable[[], int]]:
    """While active, count the LLM's real (unpadded) input tokens of the last forward."""
    seen = {"tokens": 0}

    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        if mask is not None:
            seen["tokens"] = int(mask.sum())

    handle = model.decoder.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield lambda: seen["tokens"]
    finally:
        handle.remove()


def train_step(model: Any, optimizer: Any, batch: dict[str, Any], device: torch.device) -> None:
    with autocast(device):
        output = model(batch, "pretrain")
    output.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def flops_per_sample(
    model: Any, settings: Settings, image_size: int, device: torch.device
) -> float:
    """Model FLOPs of one pre-training forward+backward per sample; call it before gradient
    checkpointing is enabled, so that recomputation is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    model.set_stage("pretrain")
    model.train()
    batch = to_device(synthetic_batch(2, settings, image_size, torch.Generator()), device)
    counter = FlopCounterMode(display=False)
    with counter, autocast(device):
        model(batch, "pretrain").loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def fits(
    model: Any, optimizer: Any, batch_size: int, settings: Settings, device: torch.device
) -> bool:
    """Whether two training steps at `batch_size` run without running out of memory."""
    image_size = model.vision.image_size
    try:
        generator = torch.Generator().manual_seed(batch_size)
        batch = to_device(synthetic_batch(batch_size, settings, image_size, generator), device)
        for _ in range(2):
            train_step(model, optimizer, batch, device)
        synchronize(device)
        return True
    except torch.OutOfMemoryError:
        optimizer.zero_grad(set_to_none=True)
        return False
    finally:
        batch = None
        if device.type == "cuda":
            torch.cuda.empty_cache()


def time_steps(
    model: Any, optimizer: Any, batch_size: int, settings: Settings, device: torch.device
) -> tuple[float, int]:
    """(median step seconds, LLM tokens per step) at `batch_size`; raises OutOfMemoryError."""
    generator = torch.Generator().manual_seed(0)
    batch = to_device(
        synthetic_batch(batch_size, settings, model.vision.image_size, generator), device
    )
    for _ in range(settings.warmup):
        train_step(model, optimizer, batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with llm_tokens(model) as tokens:
        for _ in range(settings.steps):
            synchronize(device)
            start = time.perf_counter()
            train_step(model, optimizer, batch, device)
            synchronize(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times), tokens()


def time_alignment_rows(
    model: Any, batch_size: int, settings: Settings, device: torch.device
) -> float:
    """Median seconds of `Multi2Cap.alignment_rows` at `batch_size`: the extra no-graph pass
    (CED, CLIP, grounding) that `optim.align_batch: effective` adds per micro-batch."""
    generator = torch.Generator().manual_seed(0)
    batch = to_device(
        synthetic_batch(batch_size, settings, model.vision.image_size, generator), device
    )
    times = []
    for index in range(settings.warmup + settings.steps):
        synchronize(device)
        start = time.perf_counter()
        with autocast(device):
            model.alignment_rows(batch)
        synchronize(device)
        if index >= settings.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_training(
    model: Any, settings: Settings, device: torch.device, flops_sample: float
) -> dict[str, Any]:
    """Largest batch of `settings.batches` that fits, then timed steps at it (or, should the
    timed run itself run out of memory after fragmentation, at the next smaller size)."""
    model.set_stage("pretrain")
    model.train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=5e-5, weight_decay=1e-6)
    fitting = []
    for size in settings.batches:
        if not fits(model, optimizer, size, settings, device):
            print(f"  batch {size}: out of memory", flush=True)
            break
        print(f"  batch {size}: fits", flush=True)
        fitting.append(size)
    for size in reversed(fitting):
        try:
            step, tokens = time_steps(model, optimizer, size, settings, device)
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        peak_mem = (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        )
        cache_pass = time_alignment_rows(model, size, settings, device)
        flops = flops_sample * size
        peak = next((v for k, v in PEAK_BF16.items() if k in device_name(device)), None)
        return {
            "batch": size,
            "largest_tried": settings.batches[-1],
            "step_s_median": step,
            "samples_per_s": size / step,
            "llm_tokens_per_s": tokens / step,
            "model_tflops_per_step": flops / 1e12,
            "achieved_tflops": flops / step / 1e12,
            "mfu": flops / step / peak if peak else None,
            "peak_memory_gib": peak_mem,
            "gradient_cache_pass_s": cache_pass,
            "gradient_cache_overhead": cache_pass / step,
        }
    return {"error": f"even batch {settings.batches[0]} does not fit"}


def bench_captioning(model: Any, settings: Settings, device: torch.device) -> dict[str, Any]:
    model.eval()
    n = round(settings.clip_seconds * 16000)
    generator = torch.Generator().manual_seed(1)
    one = [0.1 * torch.randn(n, generator=generator)]
    many = [0.1 * torch.randn(n, generator=generator) for _ in range(settings.caption_batch)]

    def run(waves: list[torch.Tensor], batch_size: int) -> tuple[float, list[str]]:
        synchronize(device)
        start = time.perf_counter()
        with autocast(device):
            texts = model.caption(waves, sampling_rate=16000, batch_size=batch_size)
        synchronize(device)
        return time.perf_counter() - start, texts

    run(one, 1)
    latencies = [run(one, 1)[0] for _ in range(max(settings.steps, 3))]
    run(many, settings.caption_batch)
    seconds, texts = run(many, settings.caption_batch)
    return {
        "latency_ms_one_clip_median": 1000 * statistics.median(latencies),
        "batch": settings.caption_batch,
        "clips_per_s": settings.caption_batch / seconds,
        "ms_per_clip_batched": 1000 * seconds / settings.caption_batch,
        "mean_words_per_caption": statistics.mean(len(t.split()) for t in texts),
        "max_new_tokens": settings.caption_tokens,
    }


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny model on CPU, same path")
    parser.add_argument("--decoder", choices=sorted(DECODERS), default="llama-3.2-3b")
    parser.add_argument("--k", type=int, default=4, help="grounding tokens K")
    parser.add_argument(
        "--pool", choices=["space", "time"], default="space", help="model.grounding.pool"
    )
    parser.add_argument("--max-batch", type=int, default=512, help="largest batch to try")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--caption-tokens", type=int, default=20, help="new tokens per caption")
    parser.add_argument("--caption-batch", type=int, default=64)
    parser.add_argument(
        "--no-gradient-checkpointing", action="store_true", help="keep all LLM activations"
    )
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "bench_gpu: no CUDA device here; run it on a GPU machine, or pass --dry-run to check "
            "the same path with a tiny model on CPU.",
            file=sys.stderr,
        )
        return 1
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes, size = [], 2 if args.dry_run else 8
    while size <= (4 if args.dry_run else args.max_batch):
        sizes.append(size)
        size *= 2
    settings = Settings(
        device=device_name(device),
        decoder="tiny" if args.dry_run else args.decoder,
        k=args.k,
        clip_seconds=2.0 if args.dry_run else 10.0,
        batches=sizes,
        steps=2 if args.dry_run else args.steps,
        warmup=1 if args.dry_run else args.warmup,
        caption_tokens=4 if args.dry_run else args.caption_tokens,
        caption_batch=4 if args.dry_run else args.caption_batch,
        gradient_checkpointing=not args.no_gradient_checkpointing,
        pool=args.pool,
    )
    from multi2cap.model.multi2cap import Multi2Cap

    torch.manual_seed(0)
    start = time.perf_counter()
    with device:
        model = Multi2Cap(model_config(settings, args.dry_run))
    model.to(device)
    build_s = time.perf_counter() - start
    flops_sample = flops_per_sample(model, settings, model.vision.image_size, device)
    if settings.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    print(
        f"{settings.device}: model {params / 1e6:.1f} M parameters ({trainable / 1e6:.2f} M "
        f"trainable), built in {build_s:.1f} s; {flops_sample / 1e12:.3f} TFLOP per sample "
        "(pre-training forward+backward)",
        flush=True,
    )
    results = {
        "settings": asdict(settings),
        "parameters": params,
        "trainable_parameters": trainable,
        "pretrain_step": bench_training(model, settings, device, flops_sample),
        "captioning": bench_captioning(model, settings, device),
    }
    for section in ("pretrain_step", "captioning"):
        print(section)
        for key, value in results[section].items():
            shown = f"{value:.4g}" if isinstance(value, float) else value
            print(f"  {key:28s} {shown}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
