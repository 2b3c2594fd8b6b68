"""multi2cap.media exports: every public name resolves, and the torch-free parts stay torch-free."""

from __future__ import annotations

import subprocess
import sys

import multi2cap.media as media


def test_every_public_name_resolves() -> None:
    for name in media.__all__:
        assert getattr(media, name) is not None, name
    assert media.CedLogMel.__module__ == "multi2cap.media.melspec"


def test_audio_video_and_images_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from multi2cap.media import load_audio, extract_clip, spectrogram_image, MediaError\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
