"""Systems' captions for the system-MOS and A/B studies: reading each system's prediction file,
matching its ids to the manifest, and making the study's items.

- **Files**: whatever `multi2cap caption` writes and `multi2cap evaluate --predictions` reads
  (`multi2cap.metrics.files.read_predictions`, the one reader): CSV `id,caption` or
  `file_name,caption[,path]`, DCASE's `file_name,caption_predicted`, JSON and JSON lines.
- **Matching**: a prediction belongs to the manifest record whose `id` it names, else to the one
  whose audio path ends with it (`multi2cap caption` names a file by its shortest unique
  trailing path, e.g. `frog.ogg` or `birds/frog.ogg`); a trailing path that two records share
  matches neither. Predictions of clips outside the manifest are ignored (and counted).
- **Items**: system-MOS has one item per sampled clip and system (the clip's audio, that
  system's caption); A/B one item per clip with system A's caption in `caption` and system B's
  in `caption_b`. Gold items pair a clip's audio with a caption of another sampled clip written
  by a randomly chosen system (so it reads like the others); in A/B the gold item sets that
  system's caption of this clip against its caption of the other clip.
- **Sides (A/B)**: each rater sees system A's caption first on a seeded, balanced half of their
  items (`sides`), recorded per assignment so that the analysis un-randomises the answers.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multi2cap.data.manifest import ManifestRecord
from multi2cap.human.store import SAFE_NAME, StudyKind
from multi2cap.metrics.files import read_predictions

#: How many systems each kind compares (at least, at most).
SYSTEM_COUNTS: dict[str, tuple[int, int]] = {"system-mos": (1, 64), "ab": (2, 2)}


@dataclass(frozen=True)
class SystemOutputs:
    """One system's captions: `captions[manifest id]`, read from `path`."""

    name: str
    path: Path
    captions: dict[str, str]
    unmatched: int


def parse_system(spec: str) -> tuple[str, Path]:
    """`NAME=FILE` (the `--system` option) -> (name, path); a clear error otherwise."""
    name, sep, file = spec.partition("=")
    if not sep or not name or not file:
        raise ValueError(f"--system takes NAME=FILE (a system's caption file), found {spec!r}")
    if not SAFE_NAME.match(name):
        raise ValueError(
            f"--system {spec!r}: name {name!r} not allowed (letters, digits, '.', '_', '-', "
            "at most 64 characters, starting with a letter or digit)"
        )
    return name, Path(file)


def check_systems(kind: StudyKind, systems: Mapping[str, Any]) -> None:
    """Refuse a number of systems the kind cannot compare, or systems for a kind that has none."""
    if kind not in SYSTEM_COUNTS:
        if systems:
            raise ValueError(f"--system is for the system-mos and ab studies, not {kind}")
        return
    low, high = SYSTEM_COUNTS[kind]
    if not low <= len(systems) <= high:
        wanted = f"exactly {low}" if low == high else f"{low} to {high}"
        raise ValueError(
            f"a {kind} study compares {wanted} system(s) (--system NAME=FILE), found {len(systems)}"
        )


def _trailing_keys(audio: str) -> list[str]:
    parts = Path(os.path.abspath(audio)).parts[1:]
    return ["/".join(parts[-depth:]) for depth in range(1, len(parts) + 1)]


def load_systems(
    systems: Mapping[str, str | os.PathLike[str]], records: Sequence[ManifestRecord]
) -> list[SystemOutputs]:
    """Read each system's file and key its captions by manifest id (see the module docstring)."""
    ids = {r.id for r in records}
    trailing: dict[str, str | None] = {}
    for record in records:
        for key in _trailing_keys(record.audio):
            trailing[key] = record.id if trailing.get(key, record.id) == record.id else None
    loaded = []
    for name, file in systems.items():
        path = Path(file)
        predictions = read_predictions(path)  # CaptionFileError (a ValueError) names the file
        captions: dict[str, str] = {}
        source: dict[str, str] = {}
        unmatched = 0
        for key, caption in predictions.items():
            normal = key.replace("\\", "/").removeprefix("./")
            record_id = key if key in ids else trailing.get(normal)
            if record_id is None:
                unmatched += 1
                continue
            if record_id in captions:
                raise ValueError(
                    f"{path}: ids {source[record_id]!r} and {key!r} both name the manifest "
                    f"record {record_id!r}"
                )
            captions[record_id], source[record_id] = caption, key
        if not captions:
            example = next(iter(predictions))
            raise ValueError(
                f"{path} (system {name}): none of its {len(predictions)} ids matches a manifest "
                f"record's id or audio file name (its first id: {example!r}; manifest ids look "
                f"like {next(iter(sorted(ids)), '')!r})"
            )
        loaded.append(SystemOutputs(name, path, captions, unmatched))
    return loaded


def check_captions(systems: Sequence[SystemOutputs], sample: Sequence[ManifestRecord]) -> None:
    """Refuse a sampled clip that a system left without a caption: nothing to judge."""
    for system in systems:
        empty = [r.id for r in sample if not system.captions[r.id].strip()]
        if empty:
            raise ValueError(
                f"{system.path} (system {system.name}): empty caption for sampled clip(s) "
                f"{empty[:10]}: raters cannot judge an empty caption; caption them again or "
                "drop them from the manifest"
            )


def system_items(
    kind: StudyKind,
    sample: Sequence[ManifestRecord],
    audio_of: Mapping[str, tuple[str, float]],
    systems: Sequence[SystemOutputs],
    pairs: Sequence[tuple[ManifestRecord, ManifestRecord]],
    seed: int,
) -> list[dict[str, Any]]:
    """The items of a system-MOS or A/B study (the `items` table's columns, and `group`: the
    clip whose audio the item plays, for the order)."""
    items: list[dict[str, Any]] = []

    def add(record_id: str, item: str, **columns: Any) -> None:
        audio, duration = audio_of[record_id]
        row = {"item": item, "audio": audio, "frame": None, "refs": [], "duration_s": duration}
        row.update(gold=0, gold_source=None, system="", caption_b=None, group=record_id)
        items.append({**row, **columns})

    for record in sample:
        if kind == "ab":
            a, b = systems
            add(
                record.id, record.id, caption=a.captions[record.id], caption_b=b.captions[record.id]
            )
            continue
        for system in systems:
            caption = system.captions[record.id]
            add(record.id, record.id, caption=caption, system=system.name, refs=record.captions)
    rng = random.Random(f"{seed}:gold-systems")
    for number, (audio_rec, caption_rec) in enumerate(pairs, start=1):
        writer = rng.choice(list(systems))
        other = writer.captions[caption_rec.id]
        if kind == "ab":
            source = (
                f"audio of {audio_rec.id}; {writer.name}'s caption of it against its caption "
                f"of {caption_rec.id} (caption_b)"
            )
            own = writer.captions[audio_rec.id]
            add(audio_rec.id, f"gold-{number:02d}", caption=own, caption_b=other, gold=1)
        else:
            source = f"audio of {audio_rec.id}, {writer.name}'s caption of {caption_rec.id}"
            add(audio_rec.id, f"gold-{number:02d}", caption=other, gold=1)
        items[-1]["gold_source"] = source
    return items


def sides(n_items: int, seed: int, name: str) -> list[int]:
    """For each item (by index), 1 when system B's caption is shown first to rater `name`:
    a seeded shuffle of half ones (balanced; an odd count's last side by a seeded coin)."""
    rng = random.Random(f"{seed}:{name}:sides")
    flags = [1] * (n_items // 2) + [0] * (n_items // 2)
    if n_items % 2:
        flags.append(rng.randrange(2))
    rng.shuffle(flags)
    return flags
