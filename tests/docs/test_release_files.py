"""The release files agree with the package: version, license, citation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

import multi2cap

ROOT = Path(__file__).resolve().parents[2]


def test_changelog_has_a_dated_entry_for_this_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    heading = re.search(
        rf"^## \[{re.escape(multi2cap.__version__)}\] - (\d{{4}}-\d\d-\d\d)$", text, re.M
    )
    assert heading, f"CHANGELOG.md has no '## [{multi2cap.__version__}] - YYYY-MM-DD' entry"
    section = text[heading.end() :].split("\n## ", 1)[0]
    assert re.search(r"^### (Added|Changed|Fixed)$", section, re.M)


def test_citation_matches_the_package_and_the_readme() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == multi2cap.__version__
    assert cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    bibtex_title = (
        re.search(r"title\s*=\s*\{(.+)\},", readme).group(1).replace("{", "").replace("}", "")
    )
    assert paper["title"] == bibtex_title
    assert paper["year"] == 2025 and (paper["start"], paper["end"]) == (14168, 14186)


def test_license_is_the_declared_one() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
