"""Audio and video front end: loading, resampling, the CED log-mel, augmentations, video clips.

Names are exported lazily so that `import multi2cap.media` stays cheap (no torch, no FFmpeg)
until a torch-based name (`CedLogMel`, the augmentations) is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "MediaError": "errors",
    "MediaNotFoundError": "errors",
    "EmptyMediaError": "errors",
    "AudioDecodeError": "errors",
    "InvalidSamplesError": "errors",
    "NoAudioStreamError": "errors",
    "NoVideoStreamError": "errors",
    "SegmentOutOfRangeError": "errors",
    "CorruptMediaError": "errors",
    "SAMPLE_RATE": "audio",
    "load_audio": "audio",
    "decode_audio": "audio",
    "resample": "audio",
    "CedLogMel": "melspec",
    "mel_filterbank": "filterbank",
    "AddWhiteNoise": "augment",
    "TimeShift": "augment",
    "TimeStretch": "augment",
    "PolarityFlip": "augment",
    "RandomAugment": "augment",
    "VideoClip": "video",
    "MediaInfo": "video",
    "extract_clip": "video",
    "probe_media": "video",
    "mux_image_audio_to_mp4": "video",
    "SpectrogramImageSettings": "spectrogram_image",
    "spectrogram_image": "spectrogram_image",
}

__all__ = [
    "SAMPLE_RATE",
    "AddWhiteNoise",
    "AudioDecodeError",
    "CedLogMel",
    "CorruptMediaError",
    "EmptyMediaError",
    "InvalidSamplesError",
    "MediaError",
    "MediaInfo",
    "MediaNotFoundError",
    "NoAudioStreamError",
    "NoVideoStreamError",
    "PolarityFlip",
    "RandomAugment",
    "SegmentOutOfRangeError",
    "SpectrogramImageSettings",
    "TimeShift",
    "TimeStretch",
    "VideoClip",
    "decode_audio",
    "extract_clip",
    "load_audio",
    "mel_filterbank",
    "mux_image_audio_to_mp4",
    "probe_media",
    "resample",
    "spectrogram_image",
]

if TYPE_CHECKING:
    from multi2cap.media.audio import SAMPLE_RATE, decode_audio, load_audio, resample
    from multi2cap.media.augment import (
        AddWhiteNoise,
        PolarityFlip,
        RandomAugment,
        TimeShift,
        TimeStretch,
    )
    from multi2cap.media.errors import (
        AudioDecodeError,
        CorruptMediaError,
        EmptyMediaError,
        InvalidSamplesError,
        MediaError,
        MediaNotFoundError,
        NoAudioStreamError,
        NoVideoStreamError,
        SegmentOutOfRangeError,
    )
    from multi2cap.media.filterbank import mel_filterbank
    from multi2cap.media.melspec import CedLogMel
    from multi2cap.media.spectrogram_image import SpectrogramImageSettings, spectrogram_image
    from multi2cap.media.video import (
        MediaInfo,
        VideoClip,
        extract_clip,
        mux_image_audio_to_mp4,
        probe_media,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'multi2cap.media' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"multi2cap.media.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
