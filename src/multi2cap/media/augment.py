"""The paper's four waveform augmentations (Appendix A.2.3), batched and seedable.

Every transform maps `waves: Tensor (B, n)` (or `(n,)`) to a tensor of the same shape and draws
its random parameters per example from the optional `torch.Generator`, so a fixed seed gives
the same output. `RandomAugment` composes them as the paper describes: each one is applied or
not, in a random order. The paper names the four techniques but gives neither parameter ranges
nor probabilities; the defaults here are our choices (documented in docs/media.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor


class WaveTransform(Protocol):
    """A batched waveform transform: `(B, n)` -> `(B, n)`."""

    def __call__(self, waves: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class LengthAwareTransform(Protocol):
    """A transform that also takes and returns each row's valid length in samples: rows of
    `waves (B, n)` are valid for their first `lengths[b]` (all n when None), and the returned
    `(B,)` lengths say how much of each output row is audio rather than padding."""

    def apply(
        self, waves: Tensor, lengths: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]: ...


def _uniform(
    low: float, high: float, size: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """`size` draws from U[low, high], drawn on the generator's device, returned on `device`."""
    draw_device = generator.device if generator is not None else device
    u = torch.rand(size, generator=generator, device=draw_device, dtype=torch.float64)
    return (low + (high - low) * u).to(device)


def _as_batch(waves: Tensor) -> tuple[Tensor, bool]:
    if waves.dim() == 1:
        return waves.unsqueeze(0), True
    if waves.dim() != 2:
        raise ValueError(f"expected waves of shape (B, n) or (n,), got {tuple(waves.shape)}")
    return waves, False


def _check_range(name: str, bounds: tuple[float, float]) -> None:
    if bounds[0] > bounds[1]:
        raise ValueError(f"{name}: lower bound {bounds[0]} exceeds upper bound {bounds[1]}")


@dataclass(frozen=True)
class AddWhiteNoise:
    """Add Gaussian white noise at an SNR drawn uniformly from `snr_db` (dB) per example.

    The noise is rescaled to its exact target power, so the realised SNR
    `10 log10(mean(x^2) / mean(noise^2))` equals the drawn value. Silent examples stay silent
    (their SNR is undefined).
    """

    snr_db: tuple[float, float] = (10.0, 40.0)

    def __post_init__(self) -> None:
        _check_range("snr_db", self.snr_db)

    def __call__(self, waves: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch, squeeze = _as_batch(waves)
        b = batch.shape[0]
        snr = _uniform(*self.snr_db, b, generator, batch.device)
        draw_device = generator.device if generator is not None else batch.device
        noise = torch.randn(batch.shape, generator=generator, device=draw_device).to(batch)
        signal_power = batch.double().square().mean(dim=1)
        noise_power = noise.double().square().mean(dim=1).clamp_min(1e-30)
        scale = torch.sqrt(signal_power / (10.0 ** (snr / 10.0)) / noise_power)
        out = batch + noise * scale.to(batch.dtype).unsqueeze(1)
        return out.squeeze(0) if squeeze else out


@dataclass(frozen=True)
class TimeShift:
    """Shift each example in time by up to `max_fraction` of its length, either way.

    `mode="roll"` wraps the samples that fall off one end around to the other (the clip's
    content is kept); `mode="pad"` fills the vacated part with zeros.
    """

    max_fraction: float = 0.2
    mode: Literal["roll", "pad"] = "roll"

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {self.max_fraction}")
        if self.mode not in ("roll", "pad"):
            raise ValueError(f"mode must be 'roll' or 'pad', got {self.mode!r}")

    def shifts(self, batch: int, n: int, generator: torch.Generator | None) -> Tensor:
        """Per-example shifts in samples (positive = later), `(batch,)` int64 on CPU."""
        limit = self.max_fraction * n
        return torch.round(_uniform(-limit, limit, batch, generator, torch.device("cpu"))).long()

    def __call__(self, waves: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch, squeeze = _as_batch(waves)
        b, n = batch.shape
        shift = self.shifts(b, n, generator).to(batch.device)
        source = torch.arange(n, device=batch.device).unsqueeze(0) - shift.unsqueeze(1)
        if self.mode == "roll":
            out = torch.gather(batch, 1, source % n)
        else:
            inside = (source >= 0) & (source < n)
            out = torch.gather(batch, 1, source.clamp(0, n - 1)) * inside.to(batch.dtype)
        return out.squeeze(0) if squeeze else out


def _nearest_peak(magnitude: Tensor) -> Tensor:
    """For every bin of every frame, the index of the nearest spectral peak in that frame.

    `magnitude` is `(F, T)`; peaks are local maxima over frequency. Bins of a frame without a
    peak (silence) map to themselves.
    """
    n_bins = magnitude.shape[0]
    bins = torch.arange(n_bins, device=magnitude.device).unsqueeze(1).expand_as(magnitude)
    padded = torch.nn.functional.pad(magnitude, (0, 0, 1, 1), value=-1.0)
    is_peak = (magnitude > padded[:-2]) & (magnitude >= padded[2:])
    before = torch.where(is_peak, bins, torch.full_like(bins, -1)).cummax(dim=0).values
    after = torch.where(is_peak, bins, torch.full_like(bins, 2 * n_bins))
    after = after.flip(0).cummin(dim=0).values.flip(0)
    use_after = (before < 0) | ((after < n_bins) & (after - bins < bins - before))
    nearest = torch.where(use_after, after, before)
    return torch.where((nearest < 0) | (nearest >= n_bins), bins, nearest)


def phase_vocoder_stretch(
    wave: Tensor, factor: float, n_fft: int = 512, hop_length: int = 128
) -> Tensor:
    """Make a 1-D waveform `factor` times longer (factor > 1 slows down) keeping its pitch.

    Phase vocoder with identity phase locking (Laroche & Dolson, 1999): STFT with a Hann window;
    output frames are read at analysis positions spaced `1 / factor` frames apart, magnitudes
    interpolated linearly; each bin's phase advances by its measured instantaneous frequency,
    and every bin then keeps its analysis phase offset to the nearest spectral peak, which
    keeps the bins of one partial coherent (without it a stretched pure tone loses up to half
    its level). Inverse STFT with the same hop. Output length is `round(len(wave) * factor)`.
    """
    n = wave.shape[-1]
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(
        wave, n_fft, hop_length, window=window, center=True, return_complex=True
    )  # (F, T)
    n_bins, n_frames = spec.shape
    steps = torch.arange(0, n_frames, 1.0 / factor, device=wave.device, dtype=torch.float64)
    spec = torch.nn.functional.pad(spec, (0, 2))  # zero frames so index + 1 stays valid
    left = steps.floor().long()
    frac = (steps - left).to(wave.dtype).unsqueeze(0)
    spec_magnitude, spec_phase = spec.abs(), spec.angle()  # once per analysis frame
    magnitude = (1.0 - frac) * spec_magnitude[:, left] + frac * spec_magnitude[:, left + 1]
    analysis_phase = spec_phase[:, left]
    expected = torch.linspace(0.0, math.pi * hop_length, n_bins, device=wave.device)
    expected = expected.to(wave.dtype).unsqueeze(1)  # phase advance of bin k per hop
    deviation = spec_phase[:, left + 1] - analysis_phase - expected
    deviation = deviation - 2.0 * math.pi * torch.round(deviation / (2.0 * math.pi))
    increment = deviation + expected
    start = spec_phase[:, :1]
    accumulated = torch.cat([start, start + torch.cumsum(increment, dim=1)[:, :-1]], dim=1)
    peak = _nearest_peak(magnitude)
    phase = (
        torch.gather(accumulated, 0, peak) + analysis_phase - torch.gather(analysis_phase, 0, peak)
    )
    stretched = torch.polar(magnitude, phase)
    return torch.istft(
        stretched, n_fft, hop_length, window=window, center=True, length=round(n * factor)
    )


@dataclass(frozen=True)
class TimeStretch:
    """Change speed by a factor drawn per example from `factor` (duration multiplier), same pitch.

    `factor` 1.25 makes a clip 25 % longer (slower), 0.8 shorter. With `keep_length=True`
    (default, so batches keep their shape) the result is cut at the original length (the tail
    of a slowed clip is dropped) or zero-padded at the end (a sped-up clip; `apply` also
    returns the valid lengths, which `RandomAugment.apply` passes on); with
    `keep_length=False` a `(B, n)` batch must hold one example, or the factors must all produce
    the same length, and the stretched length is returned.
    """

    factor: tuple[float, float] = (0.8, 1.25)
    keep_length: bool = True
    n_fft: int = 512
    hop_length: int = 128

    def __post_init__(self) -> None:
        _check_range("factor", self.factor)
        if self.factor[0] <= 0:
            raise ValueError(f"factor must be positive, got {self.factor}")

    def __call__(self, waves: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch, squeeze = _as_batch(waves)
        if self.keep_length:
            out = self.apply(batch, None, generator)[0]
        else:
            factors = self._factors(batch, generator)
            outs = [self._stretch(w, f) for w, f in zip(batch, factors, strict=True)]
            if len({o.shape[0] for o in outs}) > 1:
                raise ValueError("keep_length=False gave different lengths within one batch")
            out = torch.stack(outs).to(batch.dtype)
        return out.squeeze(0) if squeeze else out

    def apply(
        self, waves: Tensor, lengths: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Stretch the valid part of each row of `waves (B, n)` (its first `lengths[b]` samples;
        all n when None) and fit it back into n samples: a slowed row is cut at n, a sped-up
        one zero-padded. Returns the rows and their new valid lengths `(B,)` int64
        `min(n, round(length * factor))`, so the padding a speed-up leaves is not counted as
        audio (it would otherwise reach the encoder's mask as valid silence)."""
        b, n = waves.shape
        if lengths is None:
            lengths = torch.full((b,), n, dtype=torch.long)
        out = torch.zeros_like(waves)
        new_lengths = torch.empty(b, dtype=torch.long)
        factors = self._factors(waves, generator)
        rows = zip(waves, lengths.tolist(), factors, strict=True)
        for row, (wave, length, factor) in enumerate(rows):
            # The STFT's reflect padding needs more than n_fft / 2 samples: shorter rows stay.
            valid = wave[:length]
            stretched = self._stretch(valid, factor)[:n] if length > self.n_fft // 2 else valid
            out[row, : stretched.shape[0]] = stretched.to(waves.dtype)
            new_lengths[row] = stretched.shape[0]
        return out, new_lengths

    def _factors(self, batch: Tensor, generator: torch.Generator | None) -> list[float]:
        return _uniform(*self.factor, batch.shape[0], generator, torch.device("cpu")).tolist()

    def _stretch(self, wave: Tensor, factor: float) -> Tensor:
        dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
        return phase_vocoder_stretch(wave.to(dtype), factor, self.n_fft, self.hop_length)


@dataclass(frozen=True)
class PolarityFlip:
    """Invert the waveform's sign (x -> -x): inaudible, but a different signal to the model."""

    def __call__(self, waves: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return -waves


class RandomAugment:
    """Apply each transform with its probability, in an order drawn at random (paper A.2.3).

    Per call, one random order of the transforms is drawn for the batch; then each transform is
    applied to the examples whose own Bernoulli(p) draw selected it, so examples in one batch
    get different subsets. `probabilities` is one value for all or one per transform.
    """

    def __init__(
        self,
        transforms: Sequence[WaveTransform] | None = None,
        probabilities: float | Sequence[float] = 0.5,
    ) -> None:
        self.transforms: list[WaveTransform] = list(
            transforms
            if transforms is not None
            else (AddWhiteNoise(), TimeShift(), TimeStretch(), PolarityFlip())
        )
        if isinstance(probabilities, float | int):
            probabilities = [float(probabilities)] * len(self.transforms)
        self.probabilities = [float(p) for p in probabilities]
        if len(self.probabilities) != len(self.transforms):
            raise ValueError(
                f"{len(self.probabilities)} probabilities for {len(self.transforms)} transforms"
            )
        if any(not 0.0 <= p <= 1.0 for p in self.probabilities):
            raise ValueError(f"probabilities must be in [0, 1], got {self.probabilities}")

    def __repr__(self) -> str:
        return f"RandomAugment(transforms={self.transforms!r}, probabilities={self.probabilities})"

    def plan(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[list[int], Tensor]:
        """Draw `(order, selected)`: transform indices in application order, and a
        `(len(transforms), batch)` bool mask of which examples each transform touches."""
        order = torch.randperm(len(self.transforms), generator=generator).tolist()
        probs = torch.tensor(self.probabilities, dtype=torch.float64).unsqueeze(1)
        draws = torch.rand(len(self.transforms), batch, generator=generator, dtype=torch.float64)
        return order, draws < probs

    def __call__(self, waves: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch, squeeze = _as_batch(waves)
        out = self.apply(batch, None, generator)[0]
        return out.squeeze(0) if squeeze else out

    def apply(
        self, waves: Tensor, lengths: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Augment rows of `waves (B, n)` that are valid for their first `lengths[b]` samples
        (all n when None); returns the rows and their valid lengths after the transforms.

        A `LengthAwareTransform` (`TimeStretch`) updates the lengths; the others see only the
        valid part of a partly padded row, so noise is not added to, and a shift does not roll,
        the padding. Rows without padding are transformed together, as by `__call__`, which
        is this with the lengths dropped. What `CaptionDataset` calls."""
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("RandomAugment draws its plan on the CPU: pass a CPU generator")
        b, n = waves.shape
        lengths = (
            torch.full((b,), n, dtype=torch.long) if lengths is None else lengths.clone().long()
        )
        order, selected = self.plan(b, generator)
        out = waves.clone()
        for index in order:
            transform = self.transforms[index]
            rows = selected[index].nonzero().flatten()
            if not rows.numel():
                continue
            if isinstance(transform, LengthAwareTransform):
                stretched, new_lengths = transform.apply(out[rows], lengths[rows], generator)
                out[rows.to(out.device)], lengths[rows] = stretched, new_lengths
                continue
            full = rows[lengths[rows] == n]
            if full.numel():
                out[full.to(out.device)] = transform(out[full.to(out.device)], generator)
            for row in rows[(lengths[rows] < n) & (lengths[rows] > 0)].tolist():
                valid = int(lengths[row])
                out[row, :valid] = transform(out[row, :valid].unsqueeze(0), generator)[0]
        return out, lengths
