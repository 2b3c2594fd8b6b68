"""The README's Python example runs as written, on a tiny checkpoint and real Tux Paint sounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_one_python_example() -> None:
    assert len(_python_blocks()) == 1


def test_readme_python_example_runs(tmp_path, tuxpaint_dir, monkeypatch, capsys) -> None:
    from multi2cap.model import Multi2Cap, Multi2CapConfig

    (code,) = _python_blocks()
    checkpoint = tmp_path / "runs" / "finetune_clotho" / "best"
    Multi2Cap(Multi2CapConfig.tiny(["ref one", "ref two"]), load_vision=False).save_pretrained(
        checkpoint
    )
    # The example's file names, as real audio: one ogg recoded to wav, one copied to flac.
    import soundfile

    from multi2cap.media.audio import load_audio

    wave = load_audio(tuxpaint_dir / "animals/mammals/dogs/dog.ogg")
    soundfile.write(tmp_path / "a.wav", wave, 16000)
    soundfile.write(tmp_path / "b.flac", wave[: len(wave) // 2], 16000)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert len(namespace["captions"]) == 2
    assert namespace["scores"].corpus["cider_d"] >= 0.0
    printed = capsys.readouterr().out.strip()
    assert float(printed) == pytest.approx(namespace["scores"].corpus["cider_d"])
