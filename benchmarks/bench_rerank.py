"""CLAP re-ranking cost: multi2cap's one beam pass + batched CLAP against SLAM-AAC's CLAP-Refine
procedure, at the same number of candidates N, on the same clips, in one run.

- **multi2cap** (`ClapReranker.caption`): each file read at 16 kHz (captioner) and at the CLAP's
  rate; **one** beam search of width `--num-beams` returns N hypotheses per clip
  (`num_return_sequences`); the clips are embedded by the CLAP `--clap-batch-size` at a time,
  each distinct candidate once; the highest cosine wins.
- **SLAM-AAC's way** (X-LANCE/SLAM-LLM, examples/slam_aac: `scripts/inference_*_CLAP_Refine.sh`
  then `utils/clap_refine.py`): N full decoding passes over the clips with beam sizes 2, 3, ...,
  N + 1 (2..8 for N = 7), each keeping its top hypothesis; then every clip's first 10 s are
  embedded at **audio batch size 1** (its comment: batching "will harm" the scores through zero
  padding), the N x clips captions in text batches of 512, and the highest dot product wins.
  SLAM-AAC runs its own HTS-AT CLAP at 32 kHz; here both sides use the same `--clap-model`, so
  only the procedure differs (and the scorer embeds each distinct caption once on both sides).
  Its decodes re-read the audio each pass, as its separate inference runs do.

Both sides include audio decoding. Default: a demo-sized Multi2Cap with random weights (the
vocabulary and decoding of `bench_serve.py`) and a tiny random CLAP, so it runs anywhere; pass
`--checkpoint` (e.g. the demo's checkpoint folder) and `--clap-model` (e.g.
laion/clap-htsat-unfused, cached) for real figures. Clips are `--clip-seconds`-long WAV files
made from real Tux Paint sounds when installed, else from tones.

    .venv/bin/python benchmarks/bench_rerank.py [--checkpoint DIR] [--clap-model ID_OR_DIR]
        [--clips 32] [--candidates 7] [--num-beams 8] [--batch-size 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import demo_sized_checkpoint, make_clips
from multi2cap.media.audio import load_audio
from multi2cap.metrics.clap import ClapScorer, save_tiny_clap
from multi2cap.model import Multi2Cap
from multi2cap.model.rerank import ClapReranker, RerankConfig


def ours(
    model: Multi2Cap, reranker: ClapReranker, clips: list[Path], batch_size: int
) -> tuple[list[str], dict[str, float]]:
    """multi2cap's re-ranking; (captions, seconds per phase)."""
    start = time.perf_counter()
    waves = [load_audio(p) for p in clips]
    clap_waves = [reranker.scorer.load(p) for p in clips]
    loaded = time.perf_counter()
    found = reranker.candidates(model, waves, batch_size=batch_size)
    decoded = time.perf_counter()
    chosen = reranker.rerank(clap_waves, found)
    done = time.perf_counter()
    phases = {"audio": loaded - start, "decode": decoded - loaded, "clap": done - decoded}
    return [c.caption for c in chosen], phases


def slam_aac(
    model: Multi2Cap, scorer: ClapScorer, clips: list[Path], n: int, batch_size: int
) -> tuple[list[str], dict[str, float]]:
    """SLAM-AAC's CLAP-Refine procedure (module docstring); (captions, seconds per phase).
    `scorer` keeps the first window of each clip (`long_audio="first"`)."""
    start = time.perf_counter()
    passes = [
        model.caption([str(p) for p in clips], num_beams=beams, batch_size=batch_size)
        for beams in range(2, n + 2)
    ]
    decoded = time.perf_counter()
    audio = torch.cat([scorer.embed_audio([scorer.load(p)]) for p in clips])  # batch 1
    scorer.text_batch_size = 512
    texts = scorer.embed_texts([caption for captions in passes for caption in captions])
    texts = texts.view(n, len(clips), -1)
    scores = (texts * audio[None]).sum(-1)  # (N, clips)
    best = scores.argmax(0).tolist()
    done = time.perf_counter()
    return [passes[b][i] for i, b in enumerate(best)], {"decode": decoded - start,
                                                       "clap": done - decoded}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: demo-sized")
    parser.add_argument("--clap-model", default=None, help="default: a tiny random CLAP")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--candidates", type=int, default=7, help="N, both sides")
    parser.add_argument("--num-beams", type=int, default=None, help="ours; default N + 1")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per decoding batch")
    parser.add_argument("--clap-batch-size", type=int, default=16, help="ours")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.candidates
    beams = args.num_beams or n + 1  # the widest of SLAM-AAC's passes

    with tempfile.TemporaryDirectory(prefix="bench-rerank-") as tmp:
        root = Path(tmp)
        checkpoint = args.checkpoint or demo_sized_checkpoint(root)
        model = Multi2Cap.from_pretrained(checkpoint, device=args.device)
        clap = args.clap_model or str(save_tiny_clap(root / "clap", ["the sound of a dog"]))
        reranker = ClapReranker(
            clap, RerankConfig(candidates=n, num_beams=beams), device=args.device,
            audio_batch_size=args.clap_batch_size,
        )  # fmt: skip
        first_window = ClapScorer(clap, device=args.device, long_audio="first")
        clips = make_clips(root, args.clips, args.clip_seconds)
        gen = model.config.generation
        print(
            f"{len(clips)} clips of {args.clip_seconds:g} s, N = {n} candidates, <= "
            f"{gen.max_new_tokens} new tokens, decoding batch {args.batch_size}, device "
            f"{args.device}, torch threads {args.threads}, {os.cpu_count()} CPUs (load average "
            f"{os.getloadavg()[0]:.1f} at start)"
        )
        print(f"checkpoint: {args.checkpoint or 'demo-sized, random weights'}")
        print(f"CLAP: {args.clap_model or 'tiny, random weights'}")
        ours(model, reranker, clips[:2], args.batch_size)  # warm-up
        slam_aac(model, first_window, clips[:2], 2, args.batch_size)
        ours_captions, ours_t = ours(model, reranker, clips, args.batch_size)
        slam_captions, slam_t = slam_aac(model, first_window, clips, n, args.batch_size)
        ours_s, slam_s = sum(ours_t.values()), sum(slam_t.values())
        rows = (
            (f"multi2cap: 1 beam pass (width {beams}, {n} returned) + CLAP batch "
             f"{args.clap_batch_size}", ours_s, ours_t),
            (f"SLAM-AAC: {n} passes (beams 2..{n + 1}) + CLAP batch 1, first 10 s", slam_s, slam_t),
        )  # fmt: skip
        for name, seconds, phases in rows:
            detail = ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
            print(f"{name}: {len(clips) / seconds:.2f} clips/s ({seconds:.2f} s: {detail})")
        print(f"throughput ratio (multi2cap / SLAM-AAC): {slam_s / ours_s:.2f}x")
        same = np.mean([a == b for a, b in zip(ours_captions, slam_captions, strict=True)])
        print(f"same caption chosen for {100 * same:.0f} % of the clips (candidate sets differ)")


if __name__ == "__main__":
    main()
