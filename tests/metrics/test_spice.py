"""SPICE: the missing-asset message, and that the jar is launched correctly on this Java."""

from __future__ import annotations

from pathlib import Path

import pytest

from multi2cap.assets import AssetNotFoundError
from multi2cap.metrics.resources import CORENLP_360_JARS, spice_lib_dir
from multi2cap.metrics.spice import java_flags, java_major_version, parse_java_major, spice


def test_missing_corenlp_jars_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MULTI2CAP_SPICE_LIB", raising=False)
    with pytest.raises(AssetNotFoundError, match="MULTI2CAP_SPICE_LIB"):
        spice_lib_dir()
    (tmp_path / CORENLP_360_JARS[0]).write_bytes(b"")
    with pytest.raises(AssetNotFoundError, match=r"stanford-corenlp-3\.6\.0-models\.jar missing"):
        spice_lib_dir(tmp_path)
    monkeypatch.setenv("MULTI2CAP_SPICE_LIB", str(tmp_path))
    (tmp_path / CORENLP_360_JARS[1]).write_bytes(b"")
    assert spice_lib_dir() == tmp_path


def test_spice_jar_starts_and_reports_the_missing_corenlp_classes(
    tmp_path: Path, java: str
) -> None:
    """Empty stand-ins for the CoreNLP jars: SpiceScorer starts (no -cache, Java 17 flags) and
    fails on the first CoreNLP class, with Java's message in our error."""
    for name in CORENLP_360_JARS:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(RuntimeError, match=r"SPICE failed .*edu[./]stanford[./]nlp"):
        spice(["a dog barks", "rain"], [["a dog is barking"], ["rain falls"]], tmp_path, java)


def test_java_flags_follow_the_java_version(java: str) -> None:
    """Java 8 refuses `--add-opens`; Java >= 9 needs it for what FST/CoreNLP open by reflection."""
    assert parse_java_major('openjdk version "1.8.0_392"') == 8
    assert parse_java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert parse_java_major('java version "25" 2025-09-16 LTS') == 25
    with pytest.raises(ValueError, match="cannot read a Java version"):
        parse_java_major("command not found")
    assert java_flags(8) == []
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in java_flags(17)
    assert java_major_version(java) >= 8
