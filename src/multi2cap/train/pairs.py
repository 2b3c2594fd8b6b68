"""Preference data of `stage: preference`: the fine-tuned model's own candidates for each
training clip, scored against the clip's references, (best, worst) pairs, and the reference
model's log-probabilities of both captions, in the run folder so that the stage resumes without
decoding again.

```
<output_dir>/preference/
  candidates.jsonl      one line per clip: {id, candidates, sources (beam|sample)} or
                        {id, error}; appended a chunk of clips at a time (resumable)
  candidates_meta.json  what the candidates depend on (checked on --resume)
  pairs.jsonl           {id, chosen, rejected, scores, sources, ref_logp [2], tokens [2]}
  pairs_summary.json    settings and counts; written last: its presence marks the pairs done
```

The reference log-probabilities are those of the `init_from` model, computed once here, before
any update: the frozen fine-tuned model is exactly the reference policy, and no second copy of
it is held during training (`multi2cap.train.dpo`). Under several processes each decodes and
scores its share of the clips; the main process writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from multi2cap.data.manifest import ManifestRecord
from multi2cap.io import append_jsonl, atomic_write_text, read_jsonl, write_jsonl
from multi2cap.media.audio import SAMPLE_RATE
from multi2cap.metrics import MetricUnavailableError
from multi2cap.metrics.candidates import score_candidates
from multi2cap.train.batches import Skipped
from multi2cap.train.config import ConfigError, TrainConfig
from multi2cap.train.dpo import caption_logprobs

log = logging.getLogger("multi2cap.train")

FOLDER = "preference"
CANDIDATES = "candidates.jsonl"
CANDIDATES_META = "candidates_meta.json"
PAIRS = "pairs.jsonl"
PAIRS_SUMMARY = "pairs_summary.json"

T = TypeVar("T")


def folder(config: TrainConfig) -> Path:
    return Path(config.runtime.output_dir) / FOLDER


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def candidate_settings(
    config: TrainConfig, records: Sequence[ManifestRecord], init_sha256: str
) -> dict[str, Any]:
    """What the candidates depend on: the model (its trainable weights' digest), the clips, the
    decoding settings and the seed."""
    return {
        "init_from": config.init_from,
        "init_trainable_sha256": init_sha256,
        "train_manifest": config.data.train_manifest,
        "clips": len(records),
        "seed": config.seed,
        "candidates": config.preference.candidates.model_dump(mode="json"),
    }


def pair_settings(config: TrainConfig, candidates: dict[str, Any]) -> dict[str, Any]:
    """What the pairs depend on beyond the candidates."""
    p = config.preference
    keys = ("scorer", "clap_model", "margin", "max_pairs", "chosen_from")
    return {"candidates": candidates, **{k: getattr(p, k) for k in keys}}


def clip_order(n: int, config: TrainConfig) -> list[int]:
    """The clips that get candidates, in decoding order: all in manifest order, or
    `candidates.max_clips` of them drawn by `seed` (then in manifest order)."""
    limit = config.preference.candidates.max_clips
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(config.seed).permutation(n)[:limit].tolist())


# ----------------------------------------------------------------------------- candidates


def read_candidates(path: Path) -> list[dict[str, Any]]:
    """The complete chunks of a candidates file (a chunk cut short by a crash is dropped, so
    decoding resumes at a chunk boundary and draws the same samples as an uninterrupted run)."""
    if not path.is_file():
        return []
    lines = list(read_jsonl(path))
    counts: dict[int, int] = {}
    for line in lines:
        counts[line["chunk"]] = counts.get(line["chunk"], 0) + 1
    return [line for line in lines if counts[line["chunk"]] == line["chunk_size"]]


def generate_candidates(
    model: Any,
    records: Sequence[ManifestRecord],
    config: TrainConfig,
    accelerator: Accelerator,
    settings: dict[str, Any],
    dataset: Any,
    resume: bool,
) -> dict[str, dict[str, Any]]:
    """Decode the missing candidates (all processes; each takes its share of every chunk) and
    return them by clip id (main process; the others get an empty dict)."""
    out = folder(config)
    path, meta = out / CANDIDATES, out / CANDIDATES_META
    main = accelerator.is_main_process

    def start() -> list[dict[str, Any]]:
        """The complete chunks to keep (main process), the file rewritten to them."""
        out.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, Any]] = []
        if resume and meta.is_file():
            _same_settings(json.loads(meta.read_text(encoding="utf-8")), settings, meta)
            kept = read_candidates(path)
        elif path.exists():
            log.warning("not resuming: the candidates in %s are decoded again", path)
        write_jsonl(path, kept)  # drops a torn chunk, or empties the file
        atomic_write_text(meta, json.dumps(settings, indent=1))
        return kept

    done: list[dict[str, Any]] = on_main(accelerator, start)
    finished = {line["id"] for line in done}
    order = [i for i in clip_order(len(records), config) if records[i].id not in finished]
    cand = config.preference.candidates
    per_process = cand.batch_size
    chunk = per_process * accelerator.num_processes
    first_chunk = 1 + max((line["chunk"] for line in done), default=-1)
    n_chunks = math.ceil(len(order) / chunk)
    if n_chunks:
        log.info(
            "preference candidates: %d clips to decode (%d done), %d beams + %d samples each",
            len(order),
            len(finished),
            cand.beams,
            cand.sampled,
        )
    for k in range(n_chunks):
        start = k * chunk + accelerator.process_index * per_process
        mine = order[start : min(start + per_process, (k + 1) * chunk)]
        # Seeded by the position in the whole clip order: a resumed run draws the same samples.
        seed = len(finished) + start
        lines = _decode_chunk(model, records, mine, dataset, config, accelerator, seed)
        parts = gather_object([lines]) if accelerator.num_processes > 1 else [lines]
        if main:
            written = [line for part in parts for line in part]
            for line in written:
                line.update(chunk=first_chunk + k, chunk_size=len(written))
            append_jsonl(path, written)
            done += written
            if (k + 1) % 10 == 0 or k + 1 == n_chunks:
                log.info("preference candidates: %d/%d chunks", k + 1, n_chunks)
    return {line["id"]: line for line in done} if main else {}


def _decode_chunk(
    model: Any,
    records: Sequence[ManifestRecord],
    indices: list[int],
    dataset: Any,
    config: TrainConfig,
    accelerator: Accelerator,
    seed: int,
) -> list[dict[str, Any]]:
    """Candidates of the clips `indices` (one line each; an unreadable clip gets its error)."""
    from multi2cap.model.llm import Sampling

    cand = config.preference.candidates
    lines: list[dict[str, Any]] = []
    waves, readable = [], []
    for i in indices:
        item = dataset[i]
        if isinstance(item, Skipped):
            lines.append({"id": records[i].id, "error": "unreadable audio (see the log)"})
            continue
        waves.append(item["audio"][: item["length"]])
        readable.append(records[i].id)
    if waves:
        with accelerator.autocast():
            groups = model.caption_candidates(
                waves,
                sampling_rate=SAMPLE_RATE,  # the data module's rate
                num_return_sequences=cand.beams,
                num_beams=cand.num_beams,
                max_new_tokens=cand.max_new_tokens,
                sampled=cand.sampled,
                sampling=Sampling(cand.temperature, cand.top_p, config.seed * 1_000_003 + seed),
                batch_size=len(waves),
            )
        sources = ["beam"] * cand.beams + ["sample"] * cand.sampled
        for clip, group in zip(readable, groups, strict=True):
            lines.append({"id": clip, "candidates": group, "sources": sources})
    order = {records[i].id: n for n, i in enumerate(indices)}
    return sorted(lines, key=lambda line: order[line["id"]])


def on_main(accelerator: Accelerator, work: Callable[[], T]) -> T:
    """`work()` on the main process, its result (or its `ConfigError`, raised on every process,
    so that none is left waiting in a collective) broadcast to the others."""
    result: list[Any] = [None, None]
    if accelerator.is_main_process:
        try:
            result = [work(), None]
        except ConfigError as err:
            result = [None, str(err)]
    if accelerator.num_processes > 1:
        result = broadcast_object_list(result)
    if result[1] is not None:
        raise ConfigError(result[1])
    return result[0]


def _same_settings(saved: dict[str, Any], settings: dict[str, Any], where: Path) -> None:
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ConfigError(
            f"--resume: {where} was made with other settings ({details}); run without --resume "
            "(or with another output folder) to build the preference data again"
        )


# ----------------------------------------------------------------------------- pairs


@dataclass
class Pair:
    """One preference pair: the clip, its chosen and rejected captions with their scores and
    sources (`beam`, `sample`, `reference`), and the reference model's summed log-probabilities
    and token counts of both (filled by `reference_logprobs`)."""

    id: str
    chosen: str
    rejected: str
    scores: tuple[float, float]
    sources: tuple[str, str]
    ref_logp: tuple[float, float] = (0.0, 0.0)
    tokens: tuple[int, int] = (0, 0)


def select_pairs(
    records: Sequence[ManifestRecord],
    candidates: dict[str, dict[str, Any]],
    config: TrainConfig,
) -> tuple[list[Pair], dict[str, Any]]:
    """Score every clip's candidates against its references and keep (best, worst) pairs whose
    gap exceeds `margin` (or, `chosen_from: references`, (first reference, worst candidate));
    returns the pairs in manifest order and counts for the summary. CIDEr-D's IDF is that of
    every training clip's references, clips without candidates included."""
    p = config.preference
    groups = [candidates.get(r.id, {}).get("candidates", []) for r in records]
    try:
        scores = score_candidates(
            groups,
            [r.captions for r in records],
            p.scorer,
            audio_paths=[r.audio for r in records],
            clap_model=p.clap_model,
        )
    except (MetricUnavailableError, OSError) as err:  # the asset named, and the option
        raise ConfigError(f"preference.scorer {p.scorer}: {err}") from err
    pairs: list[tuple[float, Pair]] = []
    for record, group, values in zip(records, groups, scores, strict=True):
        if not group:
            continue
        sources = candidates[record.id]["sources"]
        best, worst = int(np.argmax(values)), int(np.argmin(values))
        gap = values[best] - values[worst]
        if p.chosen_from == "references":
            chosen, chosen_source, chosen_score = record.captions[0], "reference", math.nan
            if chosen == group[worst]:  # the model already says it word for word
                continue
        elif gap > p.margin:
            chosen, chosen_source, chosen_score = group[best], sources[best], values[best]
        else:
            continue
        pair = Pair(
            record.id,
            chosen,
            group[worst],
            (chosen_score, values[worst]),
            (chosen_source, sources[worst]),
        )
        pairs.append((gap, pair))
    if p.max_pairs is not None and len(pairs) > p.max_pairs:
        ranked = sorted(range(len(pairs)), key=lambda i: -pairs[i][0])[: p.max_pairs]
        pairs = [pairs[i] for i in sorted(ranked)]
    counts = {
        "clips": len(records),
        "clips_with_candidates": sum(1 for g in groups if g),
        "candidates": sum(len(g) for g in groups),
        "pairs": len(pairs),
        "mean_gap": float(np.mean([g for g, _ in pairs])) if pairs else None,
        "chosen_sources": _count(pair.sources[0] for _, pair in pairs),
        "rejected_sources": _count(pair.sources[1] for _, pair in pairs),
    }
    return [pair for _, pair in pairs], counts


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out


@torch.no_grad()
def reference_logprobs(
    model: Any,
    pairs: list[Pair],
    index: dict[str, int],
    dataset: Any,
    config: TrainConfig,
    accelerator: Accelerator,
) -> list[Pair]:
    """Fill each pair's reference log-probabilities with `model` (the `init_from` model, before
    any update; under the trainer's autocast and without dropout, as the policy runs). Process r
    takes pairs r, r + N, ...; a pair whose clip cannot be read now is dropped. Returns the
    pairs in order on the main process."""
    from multi2cap.train.dpo import dropout_off

    n, rank = accelerator.num_processes, accelerator.process_index
    mine = list(range(rank, len(pairs), n))
    size = config.preference.candidates.batch_size
    was_training = model.training
    dropout_off(model)
    done: dict[int, Pair] = {}
    for start in range(0, len(mine), size):
        batch = [(i, dataset[index[pairs[i].id]]) for i in mine[start : start + size]]
        batch = [(i, item) for i, item in batch if not isinstance(item, Skipped)]
        if not batch:
            continue
        audio = torch.nn.utils.rnn.pad_sequence(
            [item["audio"][: item["length"]] for _, item in batch], batch_first=True
        )
        lengths = torch.tensor([item["length"] for _, item in batch])
        captions = [(pairs[i].chosen, pairs[i].rejected) for i, _ in batch]
        with accelerator.autocast():
            logp, tokens = caption_logprobs(model, audio, lengths, captions)
        for (i, _), row, count in zip(batch, logp.tolist(), tokens.tolist(), strict=True):
            pair = pairs[i]
            done[i] = Pair(
                pair.id,
                pair.chosen,
                pair.rejected,
                pair.scores,
                pair.sources,
                tuple(row),
                tuple(count),
            )
    model.train(was_training)
    parts = gather_object([done]) if n > 1 else [done]
    merged = {i: pair for part in parts for i, pair in part.items()}
    if len(merged) < len(pairs):
        log.warning("preference: %d pair(s) dropped, clip unreadable", len(pairs) - len(merged))
    return [merged[i] for i in sorted(merged)]


def write_pairs(out: Path, pairs: list[Pair], summary: dict[str, Any]) -> None:
    write_jsonl(out / PAIRS, [_record(pair) for pair in pairs])
    atomic_write_text(out / PAIRS_SUMMARY, json.dumps(summary, indent=1))


def read_pairs(out: Path) -> tuple[list[Pair], dict[str, Any]] | None:
    """The finished pairs and their summary, or None when they are not (all) written."""
    if not (out / PAIRS_SUMMARY).is_file() or not (out / PAIRS).is_file():
        return None
    summary = json.loads((out / PAIRS_SUMMARY).read_text(encoding="utf-8"))
    pairs = [
        Pair(
            r["id"],
            r["chosen"],
            r["rejected"],
            tuple(r["scores"]),
            tuple(r["sources"]),
            tuple(r["ref_logp"]),
            tuple(r["tokens"]),
        )
        for r in read_jsonl(out / PAIRS, skip_torn_tail=False)
    ]
    return pairs, summary


def _record(pair: Pair) -> dict[str, Any]:
    return {
        "id": pair.id,
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "scores": [None if math.isnan(s) else s for s in pair.scores],
        "sources": list(pair.sources),
        "ref_logp": list(pair.ref_logp),
        "tokens": list(pair.tokens),
    }


# ----------------------------------------------------------------------------- training data


class PairDataset(torch.utils.data.Dataset):
    """One item per pair: its clip's whole audio (no augmentation, as the candidates were
    decoded), the two captions and the reference log-probabilities; `Skipped` for a clip that
    cannot be read."""

    def __init__(self, pairs: list[Pair], index: dict[str, int], clips: Any) -> None:
        self.pairs, self.index, self.clips = pairs, index, clips

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:  # nothing random: the audio is read whole
        del epoch

    def __getitem__(self, i: int) -> Any:
        pair = self.pairs[i]
        item = self.clips[self.index[pair.id]]
        if isinstance(item, Skipped):
            return item
        return {
            "id": pair.id,
            "audio": item["audio"][: item["length"]],
            "chosen": pair.chosen,
            "rejected": pair.rejected,
            "reference": torch.tensor(pair.ref_logp, dtype=torch.float32),
        }


def collate_pairs(items: list[Any]) -> dict[str, Any]:
    """Pad the readable items' audio; `ids` empty (and `skipped` listing them) when none is."""
    skipped = [item.id for item in items if isinstance(item, Skipped)]
    valid = [item for item in items if not isinstance(item, Skipped)]
    if not valid:
        return {"ids": [], "skipped": skipped}
    return {
        "ids": [item["id"] for item in valid],
        "audio": torch.nn.utils.rnn.pad_sequence([i["audio"] for i in valid], batch_first=True),
        "audio_lengths": torch.tensor([i["audio"].shape[0] for i in valid]),
        "chosen": [item["chosen"] for item in valid],
        "rejected": [item["rejected"] for item in valid],
        "reference": torch.stack([item["reference"] for item in valid]),
        "skipped": skipped,
    }


def stand_in_pair(seconds: float = 1.0) -> dict[str, Any]:
    """A one-pair batch of silence: what a process with no readable clip runs (loss times 0)."""
    samples = round(seconds * 16_000)
    return {
        "ids": [],
        "audio": torch.zeros(1, samples),
        "audio_lengths": torch.tensor([samples]),
        "chosen": ["silence"],
        "rejected": ["noise"],
        "reference": torch.zeros(1, 2),
    }
