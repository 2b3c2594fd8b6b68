"""Audio-visual scenes for the offline demo, composed from real recordings and pictures.

Debian's `tuxpaint-stamps-default` ships real non-speech recordings, each with a picture of its
source. `sources.csv` (our own annotation, next to this module) names 61 of them with a noun
phrase, two verb phrases and a VGGSound-style category. A scene mixes 1-3 sources at varied levels
and times over a quiet noise floor into a 10-s clip and pastes their pictures into one frame; the
two are muxed into a real mp4 so the demo goes through video extraction as VGGSound does.

Vision matters by construction (the paper's premise, section 1): some visible sources are made
faint in the audio, and some scenes show a source that is silent. Reference captions describe only
what was actually mixed in, with several phrasings per clip. Source *combinations* never repeat
across train / validation / test, so test scenes are new mixtures of known sounds.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from multi2cap.assets import AssetNotFoundError, tuxpaint_stamps_dir
from multi2cap.io import write_jsonl

SAMPLE_RATE = 16_000
CLIP_SECONDS = 10.0
FRAME_SIZE = (320, 240)
FAINT_GAIN_DB = -26.0
_BACKGROUNDS = ((196, 222, 236), (214, 232, 196), (236, 226, 206), (222, 214, 236))


@dataclass(frozen=True)
class Source:
    """One real recording with its picture and our annotation of what it sounds like."""

    path: Path
    picture: Path
    name: str
    sound: str
    alt_sound: str
    category: str
    kind: str

    @property
    def key(self) -> str:
        return self.path.stem


@dataclass
class SceneSource:
    """A source placed in a scene; `gain_db` is None when it is visible but silent."""

    key: str
    name: str
    gain_db: float | None
    onsets_s: list[float] = field(default_factory=list)

    @property
    def audible(self) -> bool:
        return self.gain_db is not None

    @property
    def faint(self) -> bool:
        return self.gain_db is not None and self.gain_db <= FAINT_GAIN_DB


@dataclass
class Scene:
    """Everything about one composed clip; `references` are the evaluation captions."""

    id: str
    split: str
    category: str
    sources: list[SceneSource]
    references: list[str]
    video: str = ""

    @property
    def visible(self) -> list[str]:
        return [s.name for s in self.sources]


def load_sources(stamps_dir: Path | None = None) -> list[Source]:
    """Read `sources.csv` and resolve each entry in the Tux Paint stamps folder.

    Raises `AssetNotFoundError` naming the package when the stamps are not installed, or listing
    the entries whose recording or picture is missing.
    """
    root = stamps_dir if stamps_dir is not None else tuxpaint_stamps_dir()
    table = resources.files("multi2cap.demo").joinpath("sources.csv").read_text(encoding="utf-8")
    sources, missing = [], []
    for row in csv.DictReader(table.splitlines()):
        audio = root / row["path"]
        picture = audio.with_suffix(".png")
        if not audio.is_file() or not picture.is_file():
            missing.append(row["path"])
            continue
        sources.append(
            Source(
                path=audio,
                picture=picture,
                name=row["name"],
                sound=row["sound"],
                alt_sound=row["alt_sound"],
                category=row["category"],
                kind=row["kind"],
            )
        )
    if missing:
        raise AssetNotFoundError(
            f"{len(missing)} demo recordings missing under {root} (e.g. {missing[:3]}): reinstall "
            "`tuxpaint-stamps-default` (apt-get install --no-install-recommends "
            "tuxpaint-stamps-default)."
        )
    return sources


def _combination_split(keys: tuple[str, ...], fractions: dict[str, float]) -> str:
    """Assign a source combination to a split by a stable hash, so splits never share one."""
    digest = hashlib.sha256("+".join(sorted(keys)).encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for split, fraction in fractions.items():
        edge += fraction
        if u < edge:
            return split
    return next(reversed(fractions))


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def reference_captions(audible: list[tuple[Source, bool]], rng: np.random.Generator) -> list[str]:
    """Five phrasings of what is heard; `audible` pairs each source with whether it is faint."""
    loud = [s for s, faint in audible if not faint]
    faint = [s for s, faint in audible if faint]
    main = loud or faint
    rest = faint if loud else []
    captions = []
    lead = _join([f"{s.name} {s.sound}" for s in main])
    if rest:
        tail = _join([f"{s.name} {s.alt_sound}" for s in rest])
        captions += [
            f"{_capitalise(lead)} while {tail} faintly in the background.",
            f"{_capitalise(lead)}, and {tail} quietly in the distance.",
            f"In the distance {tail}, while {lead} nearby.",
        ]
    else:
        alt = _join([f"{s.name} {s.alt_sound}" for s in main])
        captions += [
            f"{_capitalise(lead)}.",
            f"{_capitalise(alt)} over a quiet background.",
            f"{_capitalise(lead)} several times.",
        ]
    heard = _join([s.name for s in main + rest])
    captions.append(f"The sound of {heard} can be heard.")
    captions.append(f"{_capitalise(heard)} making noise, recorded in a quiet place.")
    order = rng.permutation(len(captions))
    return [captions[i] for i in order]


def _place(
    wave: np.ndarray, clip: np.ndarray, gain_db: float, rng: np.random.Generator
) -> list[float]:
    """Add `wave` into `clip` 1-3 times at random onsets; return the onsets in seconds."""
    gain = 10 ** (gain_db / 20) / max(float(np.abs(wave).max()), 1e-6)
    n = len(clip)
    repeats = 1 if len(wave) > n // 3 else int(rng.integers(1, 4))
    onsets = []
    for _ in range(repeats):
        start = int(rng.integers(0, max(1, n - min(len(wave), n))))
        stop = min(n, start + len(wave))
        clip[start:stop] += gain * wave[: stop - start]
        onsets.append(round(start / SAMPLE_RATE, 2))
    return sorted(onsets)


def compose_frame(pictures: list[Image.Image], background: tuple[int, int, int]) -> Image.Image:
    """Paste the sources' pictures side by side on a plain background, keeping aspect ratio."""
    width, height = FRAME_SIZE
    frame = Image.new("RGB", FRAME_SIZE, background)
    slot = width // max(1, len(pictures))
    for index, picture in enumerate(pictures):
        rgba = picture.convert("RGBA")
        rgba.thumbnail((slot - 8, height - 16))
        x = index * slot + (slot - rgba.width) // 2
        y = (height - rgba.height) // 2
        frame.paste(rgba, (x, y), rgba)
    return frame


@dataclass
class SceneSetConfig:
    """How many scenes of each split, and how often vision is needed to tell what is there."""

    n_train: int = 2000
    n_val: int = 200
    n_test: int = 200
    seed: int = 0
    p_faint: float = 0.35
    p_silent_visible: float = 0.2
    max_sources: int = 3


def plan_scenes(sources: list[Source], config: SceneSetConfig) -> list[Scene]:
    """Draw scenes until each split has its count; combinations never cross splits."""
    rng = np.random.default_rng(config.seed)
    wanted = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    total = sum(wanted.values())
    fractions = {k: v / total for k, v in wanted.items()}
    counts = dict.fromkeys(wanted, 0)
    scenes: list[Scene] = []
    by_key = {s.key: s for s in sources}
    attempts = 0
    while any(counts[k] < wanted[k] for k in wanted):
        attempts += 1
        if attempts > 200 * total + 1000:
            raise RuntimeError(f"could not draw {wanted} scenes from {len(sources)} sources")
        n_audible = int(rng.integers(1, config.max_sources + 1))
        picks = [sources[i] for i in rng.choice(len(sources), n_audible, replace=False)]
        keys = tuple(s.key for s in picks)
        split = _combination_split(keys, fractions)
        if counts[split] >= wanted[split]:
            continue
        faint_flags = [False] * n_audible
        if n_audible > 1 and rng.random() < config.p_faint:
            faint_flags[int(rng.integers(1, n_audible))] = True
        placed = [
            SceneSource(
                key=s.key,
                name=s.name,
                gain_db=float(FAINT_GAIN_DB if faint else rng.uniform(-9.0, -3.0)),
            )
            for s, faint in zip(picks, faint_flags, strict=True)
        ]
        if len(picks) < config.max_sources and rng.random() < config.p_silent_visible:
            others = [s for s in sources if s.key not in keys]
            silent = others[int(rng.integers(len(others)))]
            placed.append(SceneSource(key=silent.key, name=silent.name, gain_db=None))
        references = reference_captions(list(zip(picks, faint_flags, strict=True)), rng)
        loudest = max(placed[: len(picks)], key=lambda p: p.gain_db or -99.0)
        counts[split] += 1
        scenes.append(
            Scene(
                id=f"{split}_{counts[split]:05d}",
                split=split,
                category=by_key[loudest.key].category,
                sources=placed,
                references=references,
            )
        )
    return scenes


def render_scene(
    scene: Scene, sources: dict[str, Source], rng: np.random.Generator, load_wave: Callable
) -> tuple[np.ndarray, Image.Image]:
    """Mix the audible sources over a noise floor and draw the frame of the visible ones.

    `load_wave(path) -> float32 mono at 16 kHz` is the media front end's loader.
    Returns the 10-s waveform (float32, peak 0.9 at most) and the RGB frame.
    """
    n = int(CLIP_SECONDS * SAMPLE_RATE)
    clip = (rng.standard_normal(n) * 10 ** (-50 / 20)).astype(np.float32)
    for placed in scene.sources:
        if placed.audible:
            wave = load_wave(sources[placed.key].path)
            placed.onsets_s = _place(wave, clip, placed.gain_db, rng)
    peak = float(np.abs(clip).max())
    if peak > 0.9:
        clip *= 0.9 / peak
    order = rng.permutation(len(scene.sources))
    pictures = [Image.open(sources[scene.sources[i].key].picture) for i in order]
    background = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    return clip.astype(np.float32), compose_frame(pictures, background)


def write_scene_index(scenes: list[Scene], out_dir: Path) -> None:
    """`scenes.jsonl` (everything), `categories.csv` (for the VggCaps builder) and
    `references.jsonl` per split (for the evaluator)."""
    write_jsonl(out_dir / "scenes.jsonl", (asdict(s) for s in scenes))
    lines = ["id,category"] + [f'{s.id},"{s.category}"' for s in scenes]
    (out_dir / "categories.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split in ("train", "val", "test"):
        write_jsonl(
            out_dir / f"references_{split}.jsonl",
            ({"id": s.id, "captions": s.references} for s in scenes if s.split == split),
        )


def read_scene_index(out_dir: Path) -> list[Scene]:
    scenes = []
    for line in (out_dir / "scenes.jsonl").read_text(encoding="utf-8").splitlines():
        raw = json.loads(line)
        raw["sources"] = [SceneSource(**s) for s in raw["sources"]]
        scenes.append(Scene(**raw))
    return scenes
