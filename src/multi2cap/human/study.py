"""Creating a study (paper section 3.3): sample the items, bring their media, make the raters.

- **Sampling** is seeded: `random.Random(seed).sample` over the manifest's records of one split
  (sorted by id, so the sample depends on the seed and the records, not on the file's order).
  The sample, the seed and the manifest's SHA-256 are stored in the study.
- **Order**: every rater gets every item, in their own random order, seeded by the study seed
  and the rater's name (`random.Random(f"{seed}:{name}")`), stored as positions. In the systems'
  studies (`system-mos`, `ab`: items from `human/systems.py`) the systems' items are interleaved
  in that order, and no clip is played twice in a row where that can be avoided.
- **Gold items** (`gold`; not in the captions study): attention checks made of a sampled clip's
  audio with the caption of another sampled clip (of another category when there is one). A gold
  item rated above `GOLD_MAX_SCORE` (or, in A/B, whose other clip's caption is preferred) counts
  as failed; gold items are flagged in the exports and left out of the MOS and preferences.
- **Media**: audio is re-encoded to FLAC at its own rate and channels (one format every browser
  plays, tags and file names that could give the source away dropped); frames (captions study)
  become JPEG on white. Files are named by item number only.
- The folder is built under a temporary name and renamed when complete, so a failed `create`
  leaves no half study behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from pydantic import BaseModel, Field

from multi2cap import __version__
from multi2cap.data.manifest import ManifestRecord, read_manifest
from multi2cap.human.links import DEFAULT_BASE_URL, write_links
from multi2cap.human.security import new_token, token_digest
from multi2cap.human.store import DB_NAME, SAFE_NAME, STUDY_KINDS, StudyKind, connect, initialise
from multi2cap.human.systems import (
    SystemOutputs,
    check_captions,
    check_systems,
    load_systems,
    sides,
    system_items,
)
from multi2cap.media.audio import decode_audio

RATER_NAME = SAFE_NAME
#: The paper's numbers of raters: 10 scored captions (MOS), 8 wrote captions.
DEFAULT_RATERS: dict[str, int] = {"mos": 10, "captions": 8, "system-mos": 10, "ab": 10}
FRAME_MAX_SIDE = 1024


class StudySettings(BaseModel):
    """Everything that defines a study; stored as JSON in the database's `meta` table."""

    kind: StudyKind
    n: int = Field(gt=0)
    seed: int
    split: str
    manifest: str
    manifest_sha256: str
    gold: int = Field(ge=0)
    raters: list[str]
    sample: list[str]
    listen_check: bool = True
    #: The links' address given at creation; None: the links follow the server (`human/links.py`).
    base_url: str | None = None
    #: The systems compared (system-mos, ab; A then B), and each one's file and its SHA-256.
    systems: list[str] = Field(default_factory=list)
    system_files: dict[str, dict[str, str]] = Field(default_factory=dict)
    created_at: float
    multi2cap_version: str


@dataclass(frozen=True)
class CreatedStudy:
    """What `create_study` made: the folder, its settings, each rater's link and the admin's."""

    path: Path
    settings: StudySettings
    links: dict[str, str]
    admin_link: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rater_names(raters: int | None, names_file: Path | None, kind: StudyKind) -> list[str]:
    """`r01..rNN`, or the names in a file (one per line; letters, digits, `._-`; unique)."""
    if names_file is not None:
        if raters is not None:
            raise ValueError("give --raters or --rater-names, not both")
        lines = names_file.read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        bad = [n for n in names if not RATER_NAME.match(n)]
        if bad:
            raise ValueError(
                f"{names_file}: rater name(s) {bad[:5]} not allowed (use letters, digits, '.', "
                "'_', '-', at most 64 characters)"
            )
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{names_file}: duplicate rater name(s) {dupes}")
        if not names:
            raise ValueError(f"{names_file}: no rater names")
        return names
    count = DEFAULT_RATERS[kind] if raters is None else raters
    if count < 1:
        raise ValueError(f"--raters must be at least 1, found {count}")
    width = max(2, len(str(count)))
    return [f"r{i:0{width}d}" for i in range(1, count + 1)]


def sample_records(
    records: Sequence[ManifestRecord],
    kind: StudyKind,
    split: str,
    n: int,
    seed: int,
    systems: Sequence[SystemOutputs] = (),
) -> list[ManifestRecord]:
    """`n` records of `split` usable for `kind` (a caption; and a frame for captions; a caption
    from every system for the systems' studies), seeded."""
    in_split = [r for r in records if r.split == split]
    if not in_split:
        splits = sorted({r.split for r in records})
        raise ValueError(f"no record of split {split!r} in the manifest (it has {splits})")
    if systems:
        usable = [r for r in in_split if all(r.id in s.captions for s in systems)]
        covered = ", ".join(
            f"{s.name}: {sum(r.id in s.captions for r in in_split)}" for s in systems
        )
        need = f"a caption from every system ({covered})"
    else:
        usable = [r for r in in_split if r.captions and (kind == "mos" or r.image)]
        need = "a caption" + (" and a frame (`image`)" if kind == "captions" else "")
    if len(usable) < n:
        raise ValueError(
            f"--n {n} asks for more items than the {len(usable)} records of split {split!r} "
            f"with {need} ({len(in_split) - len(usable)} lack it); lower --n"
        )
    pool = sorted(usable, key=lambda r: r.id)
    return random.Random(seed).sample(pool, n)


def gold_pairs(
    sample: Sequence[ManifestRecord], k: int, seed: int
) -> list[tuple[ManifestRecord, ManifestRecord]]:
    """`k` (audio source, caption source) pairs of distinct sampled clips for attention checks."""
    if k > len(sample) or (k and len(sample) < 2):
        raise ValueError(f"--gold {k} needs at least {max(k, 2)} sampled items")
    rng = random.Random(f"{seed}:gold")
    pairs = []
    for audio_rec in rng.sample(list(sample), k):
        others = [r for r in sample if r.id != audio_rec.id]
        other_category = [r for r in others if r.category and r.category != audio_rec.category]
        pairs.append((audio_rec, rng.choice(other_category or others)))
    return pairs


def rater_order(
    n_items: int, seed: int, name: str, groups: Sequence[str] | None = None
) -> list[int]:
    """A rater's item order: a permutation of range(n_items) seeded by study seed and name.

    With `groups` (the clip each item plays), an item whose clip is the previous item's swaps
    places with the next later item of another clip, so the same clip does not play twice in a
    row unless nothing else is left."""
    order = list(range(n_items))
    random.Random(f"{seed}:{name}").shuffle(order)
    if groups is not None:
        for i in range(1, n_items):
            if groups[order[i]] != groups[order[i - 1]]:
                continue
            later = (j for j in range(i + 1, n_items) if groups[order[j]] != groups[order[i - 1]])
            j = next(later, None)
            if j is not None:
                order[i], order[j] = order[j], order[i]
    return order


def _write_audio(source: str, target: Path) -> float:
    """Re-encode to 16-bit FLAC; returns the duration in seconds."""
    samples, sr = decode_audio(source)  # (channels, n) float32
    pcm = np.clip(samples.T, -1.0, 1.0)
    sf.write(target, pcm, sr, format="FLAC", subtype="PCM_16")
    return samples.shape[1] / sr


def _write_frame(source: str, target: Path) -> None:
    from PIL import Image

    with Image.open(source) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
        else:
            flat = image.convert("RGB")
        flat.thumbnail((FRAME_MAX_SIDE, FRAME_MAX_SIDE))
        flat.save(target, format="JPEG", quality=90)


def create_study(
    kind: StudyKind,
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    n: int = 100,
    seed: int = 0,
    split: str = "test",
    raters: Sequence[str] = (),
    gold: int = 0,
    listen_check: bool = True,
    base_url: str | None = None,
    systems: Mapping[str, str | os.PathLike[str]] | None = None,
) -> CreatedStudy:
    """Sample, copy media, create `study.sqlite`, `links.csv` and `admin_link.txt` under `out`.

    `systems` (system-mos: one or more; ab: exactly two, A then B) maps each system's name to
    its caption file. `base_url` None: the links follow the server (`human/links.py`); until a
    server rewrites them they point at `DEFAULT_BASE_URL`."""
    if kind not in STUDY_KINDS:
        raise ValueError(f"--kind must be one of {', '.join(STUDY_KINDS)}, found {kind!r}")
    if gold and kind == "captions":
        raise ValueError("--gold adds attention items to the rating studies, not to captions")
    check_systems(kind, systems or {})
    if n < 1:
        raise ValueError(f"--n must be at least 1, found {n}")
    names = list(raters) or rater_names(None, None, kind)
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not empty: a study is never overwritten")
    manifest_path = Path(manifest)
    records = read_manifest(manifest_path)
    outputs = load_systems(systems or {}, [r for r in records if r.split == split])
    sample = sample_records(records, kind, split, n, seed, outputs)
    check_captions(outputs, sample)
    pairs = gold_pairs(sample, gold, seed)
    settings = StudySettings(
        kind=kind,
        n=n,
        seed=seed,
        split=split,
        manifest=str(manifest_path.resolve()),
        manifest_sha256=file_sha256(manifest_path),
        gold=gold,
        raters=names,
        sample=[r.id for r in sample],
        listen_check=listen_check,
        base_url=base_url.rstrip("/") if base_url else None,
        systems=[o.name for o in outputs],
        system_files={
            o.name: {"path": str(o.path.resolve()), "sha256": file_sha256(o.path)} for o in outputs
        },
        created_at=time.time(),
        multi2cap_version=__version__,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    build = target.parent / f".{target.name}.partial-{secrets.token_hex(4)}"
    try:
        links, admin_link = _build(build, settings, sample, pairs, outputs)
        if target.exists():
            target.rmdir()
        os.replace(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return CreatedStudy(target, settings, links, admin_link)


def _dataset_items(
    kind: StudyKind,
    sample: Sequence[ManifestRecord],
    audio_of: Mapping[str, tuple[str, float]],
    frames: Mapping[str, str],
    pairs: Sequence[tuple[ManifestRecord, ManifestRecord]],
) -> list[dict[str, Any]]:
    """The items of a MOS or captions study: the dataset's own captions."""
    items = []
    for record in sample:
        audio, duration = audio_of[record.id]
        items.append(
            {
                "item": record.id,
                "audio": audio,
                "frame": frames.get(record.id),
                "caption": record.captions[0] if kind == "mos" else None,
                "refs": list(record.captions),
                "duration_s": duration,
                "gold": 0,
                "gold_source": None,
                "group": record.id,
            }
        )
    for number, (audio_rec, caption_rec) in enumerate(pairs, start=1):
        audio, duration = audio_of[audio_rec.id]
        items.append(
            {
                "item": f"gold-{number:02d}",
                "audio": audio,
                "frame": None,
                "caption": caption_rec.captions[0],
                "refs": [],
                "duration_s": duration,
                "gold": 1,
                "gold_source": f"audio of {audio_rec.id}, caption of {caption_rec.id}",
                "group": audio_rec.id,
            }
        )
    return items


def _build(
    folder: Path,
    settings: StudySettings,
    sample: Sequence[ManifestRecord],
    pairs: Sequence[tuple[ManifestRecord, ManifestRecord]],
    outputs: Sequence[SystemOutputs],
) -> tuple[dict[str, str], str]:
    (folder / "media" / "audio").mkdir(parents=True)
    if settings.kind == "captions":
        (folder / "media" / "frames").mkdir()
    audio_of: dict[str, tuple[str, float]] = {}
    frames: dict[str, str] = {}
    for number, record in enumerate(sample, start=1):
        audio = f"media/audio/{number:04d}.flac"
        audio_of[record.id] = (audio, _write_audio(record.audio, folder / audio))
        if settings.kind == "captions":
            frames[record.id] = f"media/frames/{number:04d}.jpg"
            _write_frame(str(record.image), folder / frames[record.id])
    if outputs:
        items = system_items(settings.kind, sample, audio_of, outputs, pairs, settings.seed)
        groups: list[str] | None = [item["group"] for item in items]
    else:
        items = _dataset_items(settings.kind, sample, audio_of, frames, pairs)
        groups = None  # the orders of MOS and captions studies stay what they were
    admin_token = new_token()
    conn = connect(folder / DB_NAME)
    try:
        initialise(conn, settings.model_dump(), admin_token)
        conn.execute("BEGIN IMMEDIATE")
        for ident, item in enumerate(items, start=1):
            conn.execute(
                "INSERT INTO items (id, item, system, audio, frame, caption, caption_b, refs, "
                "duration_s, gold, gold_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ident,
                    item["item"],
                    item.get("system", ""),
                    item["audio"],
                    item["frame"],
                    item["caption"],
                    item.get("caption_b"),
                    json.dumps(item["refs"], ensure_ascii=False),
                    item["duration_s"],
                    item["gold"],
                    item["gold_source"],
                ),
            )
        tokens: dict[str, str] = {}
        for rater_id, name in enumerate(settings.raters, start=1):
            tokens[name] = new_token()
            conn.execute(
                "INSERT INTO raters (id, name, token_sha256, total) VALUES (?, ?, ?, ?)",
                (rater_id, name, token_digest(tokens[name]), len(items)),
            )
            order = rater_order(len(items), settings.seed, name, groups)
            swapped = sides(len(items), settings.seed, name) if settings.kind == "ab" else None
            for position, index in enumerate(order, 1):
                conn.execute(
                    "INSERT INTO assignments (rater_id, position, item_id, key, swapped) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        rater_id,
                        position,
                        index + 1,
                        secrets.token_hex(8),
                        swapped[index] if swapped else 0,
                    ),
                )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    # The links are the raters' credentials: readable by the researcher only.
    return write_links(folder, settings.base_url or DEFAULT_BASE_URL, tokens, admin_token)
