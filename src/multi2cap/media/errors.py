"""Typed errors of the media front end.

Every error carries the offending file (`path`) and a short description of the problem
(`problem`); `str(err)` is `"<path>: <problem>"`, so a batch job can log it as is and a CLI can
print it without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class MediaError(Exception):
    """Base class: a media file could not be used. `path` and `problem` say which and why."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Keeps the two-argument constructor picklable (errors cross DataLoader worker processes).
        return (type(self), (self.path, self.problem))


class MediaNotFoundError(MediaError, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class EmptyMediaError(MediaError):
    """The file has zero bytes, or decodes to zero samples."""


class AudioDecodeError(MediaError):
    """Neither soundfile nor PyAV could decode the file as audio (wrong format, damaged data)."""


class AudioTooLargeError(MediaError):
    """The audio is beyond what the caller decodes (`multi2cap.media.audio.DecodeLimits`):
    a sample rate, channel count, duration or decoding work over its limit, seen in the header
    before decoding or while decoding."""


class InvalidSamplesError(MediaError):
    """The decoded audio holds NaN or infinite samples (rejected by default, see `load_audio`)."""


class NoAudioStreamError(MediaError):
    """The container opened but has no audio stream (e.g. a video-only mp4)."""


class NoVideoStreamError(MediaError):
    """The container opened but has no video stream."""


class CorruptMediaError(MediaError):
    """The container could not be opened or demuxed, or a stream failed to decode."""


class SegmentOutOfRangeError(MediaError):
    """The requested segment starts at or after the end of the media."""
