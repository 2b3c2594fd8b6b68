"""`multi2cap info` in a real 80-column run: the file names and folders a user must act on are
printed whole, each missing asset is explained once (naming the metrics it stops), and
`info --json` carries the same report for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_info(*args: str, spice_lib: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "MULTI2CAP_SPICE_LIB": str(spice_lib)}
    return subprocess.run(
        [sys.executable, "-m", "multi2cap", "info", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_info_prints_names_whole_and_each_missing_asset_once(tmp_path: Path) -> None:
    spice_lib = tmp_path / "a-rather-long-folder-name-for-the-stanford-corenlp-jars" / "lib"
    spice_lib.mkdir(parents=True)
    result = run_info(spice_lib=spice_lib)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "…" not in text
    for name in (
        str(spice_lib),
        "stanford-corenlp-3.6.0.jar",
        "stanford-corenlp-3.6.0-models.jar",
        "MULTI2CAP_SPICE_LIB",
    ):
        assert name in text, name
    flat = " ".join(text.split())
    assert flat.count("multi2cap assets download spice") == 1
    assert "SPICE: Stanford CoreNLP 3.6.0 jars (needed by spice, spider, spider_fl, " in flat
    assert all(len(line) <= 80 or " " not in line.strip() for line in text.splitlines())


def test_info_json(tmp_path: Path) -> None:
    result = run_info("--json", spice_lib=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["versions"]["multi2cap"]
    spice = next(a for a in report["assets"] if a["name"].startswith("SPICE"))
    assert spice["available"] is False and str(tmp_path) in spice["detail"]
    assert {"spice", "spider"} <= set(spice["needed_by"])
    assert report["metrics"]["bleu_1"] is None and report["metrics"]["spice"]
