"""Prompts (verbatim paper listings, versioning), the hash split and shards, the CSV catalog."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from multi2cap.vggcaps.catalog import (
    CatalogError,
    CatalogWarning,
    index_videos,
    read_categories,
)
from multi2cap.vggcaps.prompts import PromptSet, load_prompts
from multi2cap.vggcaps.split import assign_split, in_shard, parse_shard

PAPER = Path("/work/shared/paper/paper.md")


def paper_listing(caption: str) -> str:
    """The text of a listing in the paper: the block that ends just before its caption."""
    text = PAPER.read_text(encoding="utf-8")
    end = text.index(caption)
    start_marker = {
        "Listing 1": "The image is an audio spectrum",
        "Listing 2": "Revise the caption",
    }
    start = text.rindex(start_marker[caption.split(":")[0]], 0, end)
    return text[start:end].strip()


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper text is not on this machine")
def test_prompt_files_are_the_paper_listings_with_marked_slots() -> None:
    prompts = load_prompts("v1")
    assert prompts.stage1.strip().replace("{category}", "{}") == paper_listing(
        "Listing 1: Input Prompt Template"
    )
    without_slot = prompts.stage2.replace("{raw_caption}\n\n", "").strip()
    assert without_slot == paper_listing("Listing 2: Post Prompt Template")


def test_rendering_fills_the_slots() -> None:
    prompts = load_prompts()
    stage1 = prompts.render_stage1("dog barking")
    assert "categorized into dog barking category." in stage1 and "{" not in stage1
    stage2 = prompts.render_stage2("A dog barks twice.")
    paragraphs = stage2.split("\n\n")
    assert paragraphs[0].startswith("Revise the caption below")
    assert paragraphs[1] == "A dog barks twice."
    assert stage2.endswith(">>> Caption:")


def test_prompt_version_follows_the_file_contents() -> None:
    base = load_prompts()
    assert re.fullmatch(r"v1-[0-9a-f]{8}", base.version)
    edited = PromptSet(base.name, base.stage1.replace("clear", "plain"), base.stage2)
    assert edited.version != base.version and edited.version.startswith("v1-")
    with pytest.raises(ValueError, match="unknown prompt version"):
        load_prompts("v999")


def test_split_is_about_one_percent_and_stable_when_the_set_grows() -> None:
    ids = [f"id{i:06d}_000000" for i in range(20000)]
    small = {i: assign_split(i) for i in ids[:5000]}
    full = {i: assign_split(i) for i in ids}
    assert all(full[i] == s for i, s in small.items())
    share = sum(s == "test" for s in full.values()) / len(full)
    assert 0.008 < share < 0.012
    assert {assign_split(i, seed=1) for i in ids[:500]} <= {"train", "test"}
    assert [assign_split(i, seed=1) for i in ids] != [full[i] for i in ids]


def test_shards_partition_the_ids() -> None:
    ids = [f"clip{i}" for i in range(1000)]
    owners = [[s for s in range(4) if in_shard(i, (s, 4))] for i in ids]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(o == [s] for o in owners) for s in range(4)]
    assert min(sizes) > 200
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_vggsound_csv_with_quoted_commas_and_leading_dashes(tmp_path: Path) -> None:
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text(
        "---g-f_I2yQ,1,people marching,test\n"
        "--0PQM4-hqg,30,waterfall burbling,train\n"
        'abc_def-123,5,"male speech, man speaking",train\n'
    )
    specs = read_categories(csv_path)
    assert [s.id for s in specs] == [
        "---g-f_I2yQ_000001",
        "--0PQM4-hqg_000030",
        "abc_def-123_000005",
    ]
    assert specs[0].youtube_id == "---g-f_I2yQ" and specs[0].start_s == 1.0
    assert specs[2].category == "male speech, man speaking"
    assert [s.vggsound_split for s in specs] == ["test", "train", "train"]


def test_generic_csv_and_errors_name_the_file(tmp_path: Path) -> None:
    csv_path = tmp_path / "cats.csv"
    csv_path.write_text("id,category\nclipA,dog barking\nyt_x_000040,rain\ntrain_00001,cow\n")
    specs = read_categories(csv_path)
    # Only VGGSound's `{ytid}_{start:06d}` names carry a start; `train_00001` is a plain id.
    assert [(s.id, s.youtube_id, s.start_s) for s in specs] == [
        ("clipA", None, None),
        ("train_00001", None, None),
        ("yt_x_000040", "yt_x", 40.0),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("abc,notanumber,dog,train\n")
    with pytest.raises(CatalogError, match=r"bad\.csv:1"):
        read_categories(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("id,category\na,x\nb,z\nb,z\na,y\n")
    with pytest.warns(CatalogWarning, match="1 clip ids appear with different categories"):
        specs = read_categories(dup)
    assert [(s.id, s.category) for s in specs] == [("a", "x"), ("b", "z")]
    unsafe = tmp_path / "unsafe.csv"
    unsafe.write_text("id,category\n../etc/x,dog\n")
    with pytest.raises(CatalogError, match="cannot be a file name"):
        read_categories(unsafe)
    with pytest.raises(CatalogError, match="not found"):
        read_categories(tmp_path / "missing.csv")


def test_video_index_is_recursive_and_ignores_other_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x_000001.mp4").write_bytes(b"")
    (tmp_path / "y_000002.MKV").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    found = index_videos(tmp_path)
    assert sorted(found) == ["x_000001", "y_000002"]
