"""Template captions from measured descriptors: the `offline` backend's text generator.

Not an LLM. Stage 1 combines the category with how loud and steady the audio is, when its onsets
happen, whether it grows or fades, and how bright it sounds; stage 2 appends what the frame looks
like (brightness, dominant hue). The template is picked by a hash of the clip id, so a clip always
gets the same sentence and different clips get different sentence shapes.
"""

from __future__ import annotations

import re

from multi2cap.vggcaps.descriptors import AudioDescriptors, ImageDescriptors
from multi2cap.vggcaps.split import unit_hash

# (template, whether it already says how steady the sound is); `{details}` holds at most two
# clauses about onsets, steadiness and trend, so sentences stay near VggCaps' ~21 words.
_STAGE1_TEMPLATES = (
    ("A {loud}, {tone} sound of {subject}{details}.", False),
    ("{Subject} comes through {loudly} with a {tone} quality{details}.", False),
    ("The {tone} sound of {subject} rings out {loudly}{details}.", False),
    ("{Subject} can be heard {loudly}, with a {tone} timbre{details}.", False),
    ("{Loud} and {steady_adj}, the {tone} sound of {subject} fills the air{details}.", True),
)
_STAGE2_TEMPLATES = (
    "{caption}, {light}, {colour}.",
    "{Light}, {caption_lower}, {colour}.",
    "Set {light}, {colour}, {caption_lower}.",
)


def natural_category(label: str) -> str:
    """A label as prose: the first of comma-separated synonyms, parentheses dropped.

    'bird chirping, tweeting' -> 'bird chirping'; 'police car (siren)' -> 'police car siren'.
    """
    first = label.split(",")[0]
    return re.sub(r"\s+", " ", first.replace("(", " ").replace(")", " ")).strip().lower()


def _loudness(rms_dbfs: float) -> tuple[str, str]:
    if rms_dbfs < -45:
        return "faint", "faintly"
    if rms_dbfs < -32:
        return "soft", "softly"
    if rms_dbfs < -20:
        return "clear", "clearly"
    return "loud", "loudly"


def _steadiness(desc: AudioDescriptors) -> tuple[str, str]:
    if desc.active_fraction < 0.5:
        return "sporadic", "breaking the silence only now and then"
    if desc.variation < 3.0:
        return "steady", "holding a steady level throughout"
    if desc.variation < 8.0:
        return "wavering", "rising and falling gently in level"
    return "intermittent", "coming and going in uneven waves"


def _tone(centroid_hz: float) -> str:
    if centroid_hz < 500:
        return "deep, low-pitched"
    if centroid_hz < 1500:
        return "warm, mid-range"
    if centroid_hz < 3500:
        return "bright"
    return "hissy, high-pitched"


def _when(time_s: float) -> str:
    seconds = round(time_s)
    if seconds == 0:
        return "right at the start"
    return f"about {seconds} second{'s' if seconds != 1 else ''} in"


def _onsets(onsets_s: tuple[float, ...]) -> str | None:
    if not onsets_s:
        return None
    if len(onsets_s) == 1:
        return f"with a sudden burst {_when(onsets_s[0])}"
    if len(onsets_s) <= 4:
        return f"with {len(onsets_s)} distinct bursts, the first {_when(onsets_s[0])}"
    return "punctuated by repeated sharp attacks"


def _trend(desc: AudioDescriptors) -> str | None:
    if desc.active_fraction < 0.5:  # mostly silence: a trend would only restate that
        return None
    if desc.trend_db > 6.0:
        return "growing louder towards the end"
    if desc.trend_db < -6.0:
        return "fading away towards the end"
    return None


def offline_stage1(clip_id: str, category: str, audio: AudioDescriptors) -> str:
    """An audio-only sentence for stage 1 (no visual words, the label as prose)."""
    subject = natural_category(category)
    loud, loudly = _loudness(audio.rms_dbfs)
    steady_adj, steady = _steadiness(audio)
    pick = int(unit_hash(f"offline1:{clip_id}") * len(_STAGE1_TEMPLATES))
    template, says_steadiness = _STAGE1_TEMPLATES[pick]
    clauses = [_onsets(audio.onsets_s), None if says_steadiness else steady, _trend(audio)]
    details = [c for c in clauses if c][:2]
    return template.format(
        subject=subject,
        Subject=subject[:1].upper() + subject[1:],
        loud=loud,
        Loud=loud.capitalize(),
        loudly=loudly,
        steady_adj=steady_adj,
        tone=_tone(audio.centroid_hz),
        details="".join(f", {c}" for c in details),
    )


def _light(brightness: float) -> str:
    if brightness < 0.25:
        return "in a dim, shadowy setting"
    if brightness < 0.5:
        return "in soft, muted light"
    if brightness < 0.75:
        return "in a well-lit space"
    return "under bright daylight"


def offline_stage2(clip_id: str, raw_caption: str, image: ImageDescriptors) -> str:
    """The stage-1 sentence extended with what the frame looks like."""
    caption = raw_caption.rstrip(" .")
    light = _light(image.brightness)
    colour = (
        "with muted, greyish tones" if image.saturation < 0.15 else f"amid {image.hue_name} hues"
    )
    template = _STAGE2_TEMPLATES[int(unit_hash(f"offline2:{clip_id}") * len(_STAGE2_TEMPLATES))]
    return template.format(
        caption=caption,
        caption_lower=caption[:1].lower() + caption[1:],
        light=light,
        Light=light[:1].upper() + light[1:],
        colour=colour,
    )
