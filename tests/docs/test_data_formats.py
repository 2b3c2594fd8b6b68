"""docs/data_formats.md lists exactly the keys the on-disk record types declare, in their order,
with the right required flags: the page cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from multi2cap.data.manifest import ManifestJson
from multi2cap.model.caption_files import CaptionRow
from multi2cap.vggcaps.records import FailureRecord, VggCapsRecord

PAGE = Path(__file__).resolve().parents[2] / "docs" / "data_formats.md"


def _table(section: str) -> list[tuple[str, bool]]:
    text = PAGE.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+(?:\\\|[^|]+)* \| (yes|no) \|", body, re.M)
    return [(key, flag == "yes") for key, flag in rows]


@pytest.mark.parametrize(
    ("section", "declared"),
    [
        ("Manifest record", ManifestJson),
        ("VggCaps record", VggCapsRecord),
        ("Failure record", FailureRecord),
        ("Caption file", CaptionRow),
    ],
)
def test_each_table_is_its_typeddict(section: str, declared: Any) -> None:
    expected = [(key, key in declared.__required_keys__) for key in declared.__annotations__]
    assert _table(section) == expected


def test_no_source_file_cites_a_document_outside_the_repository() -> None:
    src = PAGE.parents[1] / "src"
    offenders = [
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if "ARCHITECTURE.md" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
