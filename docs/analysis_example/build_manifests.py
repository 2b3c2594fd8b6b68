"""Build the two small real manifests behind docs/analysis_example (run from the repo root).

- `vggcaps_paper.jsonl`: the 12 VggCaps captions printed in the paper (Table 10 and the three
  examples of Listing 2), 10-s clips with a frame each (media paths are placeholders: the
  analysis never opens them).
- `tuxpaint.jsonl`: every Tux Paint stamp that has a sound effect, with its English description
  as the caption, its picture as the image and the sound's duration read from the Ogg header.

    .venv/bin/python docs/analysis_example/build_manifests.py
    .venv/bin/multi2cap analyze dataset docs/analysis_example/vggcaps_paper.jsonl \
        docs/analysis_example/tuxpaint.jsonl --out docs/analysis_example/report
"""

from __future__ import annotations

from pathlib import Path

import soundfile

from multi2cap.assets import tuxpaint_stamps_dir
from multi2cap.data.manifest import ManifestRecord, write_manifest

HERE = Path(__file__).resolve().parent
PAPER_CAPTIONS = [
    "Her fingers dance gracefully on the sitar strings, weaving a tapestry of sound that resonates"
    " with the serene and soulful essence of the music.",
    "The joyful bleats of sheep mingle with the soft rustling of grass and the occasional bark of"
    " an energetic dog, bringing a lively atmosphere to the green pastures.",
    "The thunderous crack of the ball against the wall reverberates as two players immerse"
    " themselves in the rhythm of their squash game.",
    "The lively hum of the festival is accompanied by the drummer's rhythmic beats, their sticks"
    " creating a pulsating rhythm that resonates through the crowd.",
    "A canopy alive with song as the harmonious tweets and chirps of birds enliven the"
    " surroundings, weaving a vibrant tapestry of nature's own symphony.",
    "The invigorating sounds of a volleyball match fill the air, blending cheers with the sharp"
    " slap of the ball.",
    "The thunderous crescendo of a train horn slices through the stillness of the night, a wild"
    " call that reverberates along the tracks.",
    "In the cacophony of urban sounds, the police car's siren pierces the night air, signaling"
    " urgency and command.",
    "In the stillness of the night, a lone frog's persistent ribbit pierces the quiet, adding a"
    " rhythm to the tranquil scene.",
    "A vibrant outdoor volleyball match in full swing, with the ball soaring over the net amidst"
    " cheers from an enthusiastic crowd and the rhythmic thump of the volleyball meeting players'"
    " hands.",
    "A quiet forest, where a gentle breeze rustles the leaves and a bird's melodious song weaves"
    " through the tranquil air.",
    "An energetic street performance, the rhythmic beat of drums accompanied by the cheering"
    " crowd, and the colorful dance moves creating a festive atmosphere.",
]


def main() -> None:
    paper = [
        ManifestRecord(
            id=f"paper{i:02d}",
            dataset="VggCaps (paper examples)",
            split="test",
            audio=str(HERE / f"media/paper{i:02d}.flac"),
            captions=[caption],
            image=str(HERE / f"media/paper{i:02d}.jpg"),
            duration_s=10.0,
        )
        for i, caption in enumerate(PAPER_CAPTIONS)
    ]
    write_manifest(paper, HERE / "vggcaps_paper.jsonl")

    stamps = []
    for text in sorted(tuxpaint_stamps_dir().rglob("*.txt")):
        sound = text.with_suffix(".ogg")
        if not sound.is_file():
            continue
        caption = text.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
        picture = next(
            (p for p in (text.with_suffix(".png"), text.with_suffix(".svg")) if p.is_file()), None
        )
        stamps.append(
            ManifestRecord(
                id=text.stem,
                dataset="Tux Paint stamps",
                split="all",
                audio=str(sound),
                captions=[caption],
                image=str(picture) if picture else None,
                duration_s=soundfile.info(str(sound)).duration,
            )
        )
    write_manifest(stamps, HERE / "tuxpaint.jsonl")
    print(f"wrote {len(paper)} paper captions and {len(stamps)} Tux Paint stamps")


if __name__ == "__main__":
    main()
