"""Audio given to `Multi2Cap.caption` and `caption_candidates` (paths, arrays, tensors) as the
model's 1-D 16-kHz waveforms: files decoded at their own rate, arrays resampled from the
`sampling_rate` the caller names. Without one, arrays are read as 16 kHz with a warning
(`NO_RATE_WARNING`): a 44.1-kHz array read as 16 kHz gives wrong captions without any error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from multi2cap.media.audio import SAMPLE_RATE, load_audio, resample

AudioInput = str | os.PathLike[str] | np.ndarray | Tensor
"""One input: a file path, or a 1-D waveform (numpy or torch)."""

NO_RATE_WARNING = (
    f"caption() got waveforms without sampling_rate: read as {SAMPLE_RATE} Hz; pass "
    "sampling_rate=<their rate> (they are resampled)"
)
"""The warning for arrays without `sampling_rate` (pyproject's filterwarnings makes it an error
when the package itself is the caller)."""


def check_rate(sampling_rate: int | None) -> None:
    """ValueError unless `sampling_rate` is None or a positive number of Hz."""
    if sampling_rate is not None and (isinstance(sampling_rate, bool) or sampling_rate <= 0):
        raise ValueError(f"sampling_rate must be a positive number of Hz, got {sampling_rate!r}")


def _iter_inputs(
    waves_or_paths: AudioInput | Sequence[AudioInput],
) -> Iterator[AudioInput]:
    single_wave = isinstance(waves_or_paths, np.ndarray | Tensor) and waves_or_paths.ndim == 1
    if single_wave or isinstance(waves_or_paths, str | os.PathLike):
        yield waves_or_paths
    else:
        yield from waves_or_paths


def as_waves(
    waves_or_paths: AudioInput | Sequence[AudioInput],
    lengths: Sequence[int] | Tensor | None,
    sampling_rate: int | None = None,
) -> list[Tensor]:
    """1-D float32 16-kHz waveforms: files decoded, arrays cut to `lengths` (samples at
    `sampling_rate`) and resampled from `sampling_rate` (see `Multi2Cap.caption`)."""
    check_rate(sampling_rate)
    waves, from_file = [], []
    for item in _iter_inputs(waves_or_paths):
        if isinstance(item, str | os.PathLike):
            waves.append(torch.from_numpy(load_audio(item)))
        else:
            wave = torch.as_tensor(item, dtype=torch.float32)
            if wave.ndim != 1:
                raise ValueError(f"expected 1-D waveforms, got shape {tuple(wave.shape)}")
            waves.append(wave)
        from_file.append(isinstance(item, str | os.PathLike))
    if lengths is not None:
        lens = [int(n) for n in lengths]
        if len(lens) != len(waves):
            raise ValueError(f"{len(lens)} lengths for {len(waves)} waveforms")
        waves = [w[:n] for w, n in zip(waves, lens, strict=True)]
    if not waves:
        raise ValueError("no audio to caption")
    if not all(from_file):
        if sampling_rate is None:
            # caption's or caption_candidates' caller (past torch.no_grad's wrapper)
            warnings.warn(NO_RATE_WARNING, UserWarning, stacklevel=4)
        elif sampling_rate != SAMPLE_RATE:
            waves = [
                w if file else _resampled(w, sampling_rate)
                for w, file in zip(waves, from_file, strict=True)
            ]
    return waves


def _resampled(wave: Tensor, sampling_rate: int) -> Tensor:
    """`wave` at `sampling_rate` Hz as 16 kHz (on its device)."""
    data = resample(wave.detach().cpu().numpy(), sampling_rate, SAMPLE_RATE)
    return torch.from_numpy(data).to(wave.device)
