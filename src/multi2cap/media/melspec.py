"""The CED log-mel front end, batched on torch (no torchaudio).

CED (`mispeech/ced-*`) computes `AmplitudeToDB(top_db=120)(MelSpectrogram(...)(wave))` with
torchaudio: a periodic Hann window of 512 samples, n_fft 512, hop 160, centred STFT with reflect
padding, power spectrum, 64 triangular HTK-mel filters over 0-8000 Hz without area
normalisation, then `10 * log10(max(x, 1e-10))` and a floor at `max - 120 dB`. This module
rebuilds those formulas.

The one behaviour we choose: torchaudio takes the `max` of the top_db floor over the whole
`(B, n_mels, T)` tensor, so a clip's features would depend on which other clips share its
batch. `CedLogMel` applies the floor per example by default (`top_db_scope="example"`), which
makes batched output equal to one-by-one output and equal to CED's output on a batch of one;
`top_db_scope="batch"` reproduces torchaudio's batch-wide floor exactly.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from multi2cap.media.filterbank import mel_filterbank

TopDbScope = Literal["example", "batch"]


class CedLogMel(nn.Module):
    """`(B, n_samples)` float waveform at 16 kHz -> `(B, 64, n_samples // 160 + 1)` log-mel in dB.

    A 1-D input `(n_samples,)` gives `(64, n_frames)`. Inputs need more than `n_fft // 2` (256)
    samples for the reflect padding. The window and filterbank are float64 buffers that follow
    `.to(device)`; the computation runs in float64 for float64 input and in float32 otherwise
    (half precision and autocast would hurt the log), so keep the module's dtype as built.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int = 512,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        top_db: float | None = 120.0,
        amin: float = 1e-10,
        top_db_scope: TopDbScope = "example",
    ) -> None:
        super().__init__()
        if top_db_scope not in ("example", "batch"):
            raise ValueError(f"top_db_scope must be 'example' or 'batch', got {top_db_scope!r}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.top_db = top_db
        self.amin = amin
        self.top_db_scope: TopDbScope = top_db_scope
        self.register_buffer(
            "window",
            torch.hann_window(win_length, periodic=True, dtype=torch.float64),
            persistent=False,
        )
        self.register_buffer(
            "fbank",
            torch.from_numpy(mel_filterbank(n_fft // 2 + 1, sample_rate, n_mels, f_min, f_max)),
            persistent=False,
        )

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for `n_samples` input samples (centred STFT)."""
        return n_samples // self.hop_length + 1

    def forward(self, waves: Tensor) -> Tensor:
        squeeze = waves.dim() == 1
        if squeeze:
            waves = waves.unsqueeze(0)
        if waves.dim() != 2:
            raise ValueError(f"expected (B, n_samples) or (n_samples,), got {tuple(waves.shape)}")
        if waves.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"need more than {self.n_fft // 2} samples for centred reflect padding, "
                f"got {waves.shape[-1]}"
            )
        dtype = torch.float64 if waves.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=waves.device.type, enabled=False):
            spec = torch.stft(
                waves.to(dtype),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window.to(dtype),
                center=True,
                pad_mode="reflect",
                normalized=False,
                onesided=True,
                return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # (B, n_freqs, T)
            mel = torch.matmul(power.transpose(1, 2), self.fbank.to(dtype)).transpose(1, 2)
            db = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
            if self.top_db is not None:
                if self.top_db_scope == "example":
                    peak = db.amax(dim=(1, 2), keepdim=True)
                else:
                    peak = db.amax()
                db = torch.maximum(db, peak - self.top_db)
        return db.squeeze(0) if squeeze else db
