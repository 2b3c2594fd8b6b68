"""Cost of the real SmolLM2-135M-Instruct decoder (30 layers, width 576, vocabulary 49,152) on
this machine: one LoRA training step (forward, backward, AdamW) and caption decoding (greedy and
beam search), for a batch of prefixes of a given length, per prompt format and weight dtype.

The prefix is a trainable random tensor standing in for the adapter's output (the audio
encoder's cost is not included: `bench_ced.py` has it); captions are the tests' eight. The
decoder comes from `multi2cap backbones prepare` (converted into `--workdir` once). Decoding
stops at the end of turn, so an untrained model's captions vary in length: the mean number of
generated tokens is printed beside each time.

    .venv/bin/python benchmarks/bench_real_llm.py [--prefix 62] [--batch 8] [--threads 2]
        [--formats chat plain] [--dtypes float32 bfloat16] [--repeats 3]

`--prefix 3 --threads 1` is the setting of tests/model/test_real_llm.py; `--prefix 62` is a
10-s clip's CED tokens (the demo's audio). bf16 runs the step under CPU autocast too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from multi2cap.model.config import LlmSpec, LoraSpec
from multi2cap.model.convert.packages import prepared_folder
from multi2cap.model.llm import CaptionDecoder

CAPTIONS = [
    "A dog barks loudly.",
    "Rain falls on a tin roof.",
    "A bell rings twice.",
    "Birds sing in the morning.",
    "A car engine starts.",
    "Water drips into a sink.",
    "People clap and cheer.",
    "A cat meows softly.",
]
PROMPT = "Describe the sound. <audio>"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(folder: Path, args: argparse.Namespace, prompt_format: str, dtype: str) -> None:
    spec = LlmSpec(
        source=str(folder),
        dtype=dtype,
        prompt_format=prompt_format,
        system_prompt="" if prompt_format == "chat" else None,
        lora=LoraSpec(r=8, alpha=16.0, dropout=0.0, targets=args.lora_targets),
    )
    decoder = CaptionDecoder(spec, PROMPT, max_caption_tokens=32)
    for param in decoder.parameters():
        if param.requires_grad:
            param.data = param.data.float()  # as Multi2Cap keeps every trainable tensor
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch)]
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randn(args.batch, args.prefix, decoder.hidden_size, generator=generator)
    prefix = (prefix * 0.02).requires_grad_(True)
    mask = torch.ones(args.batch, args.prefix, dtype=torch.bool)
    params = [prefix, *(p for p in decoder.parameters() if p.requires_grad)]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    autocast = dtype == "bfloat16"
    positions = decoder.left_ids.numel() + args.prefix + decoder.right_ids.numel()
    caption_tokens = sum(len(ids) for ids in decoder.caption_ids(captions)) / args.batch

    def step() -> None:
        decoder.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = decoder.loss(prefix, mask, captions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    label = f"{prompt_format:5s} {dtype:8s}"
    seconds = median_seconds(step, args.repeats)
    print(
        f"{label} train step: {seconds:.2f} s  (batch {args.batch} x {positions} context + "
        f"{caption_tokens:.1f} caption positions)",
        flush=True,
    )
    decoder.eval()
    for beams in (1, 3):
        texts: list[str] = []

        def decode(beams: int = beams, texts: list[str] = texts) -> None:
            texts[:] = decoder.generate(
                prefix.detach(), mask, num_beams=beams, max_new_tokens=args.max_new_tokens
            )

        seconds = median_seconds(decode, args.repeats)
        generated = decoder.tokenizer(texts, add_special_tokens=False)["input_ids"]
        mean = sum(len(ids) for ids in generated) / len(generated)
        print(
            f"{label} decode beams={beams}: {seconds:.2f} s for {args.batch} clips "
            f"(mean {mean:.1f} tokens, at most {args.max_new_tokens})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=int, default=62, help="prefix positions per clip")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument(
        "--formats", nargs="+", default=["chat", "plain"], choices=["chat", "plain"]
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument(
        "--lora-targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "multi2cap-bench"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    folder = prepared_folder(args.workdir, "smollm2-135m-instruct")
    print(
        f"SmolLM2-135M-Instruct from {folder}; CPU {torch.backends.cpu.get_cpu_capability()}, "
        f"{args.threads} thread(s), median of {args.repeats}"
    )
    for dtype in args.dtypes:
        for prompt_format in args.formats:
            run(folder, args, prompt_format, dtype)


if __name__ == "__main__":
    main()
