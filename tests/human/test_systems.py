"""Studies of systems' outputs without a browser: caption files of every format `multi2cap
caption` writes matched to the manifest, blind and interleaved system-MOS items, A/B sides
randomised per rater and un-randomised in the export and summary, the CLI end to end."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from multi2cap.analysis.mos import read_ratings
from multi2cap.cli.main import app
from multi2cap.data.manifest import read_manifest
from multi2cap.human.study import create_study
from multi2cap.human.systems import load_systems, parse_system, sides

runner = CliRunner()


def _write_outputs(manifest: Path, folder: Path) -> dict[str, Path]:
    """The same kind of file four ways: caption's CSV (file names), DCASE, JSON, JSONL (ids)."""
    records = read_manifest(manifest)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "csv": folder / "caption.csv",
        "dcase": folder / "dcase.csv",
        "json": folder / "caption.json",
        "jsonl": folder / "ids.jsonl",
    }
    files["csv"].write_text(
        "file_name,caption,path\n"
        + "".join(f"{Path(r.audio).name},csv says {r.id},{r.audio}\n" for r in records),
        encoding="utf-8",
    )
    files["dcase"].write_text(
        "file_name,caption_predicted\n"
        + "".join(f"{Path(r.audio).name},dcase says {r.id}\n" for r in records),
        encoding="utf-8",
    )
    files["json"].write_text(
        json.dumps(
            [
                {"file_name": Path(r.audio).name, "caption": f"json says {r.id}", "path": r.audio}
                for r in records
            ]
        ),
        encoding="utf-8",
    )
    files["jsonl"].write_text(
        "".join(json.dumps({"id": r.id, "caption": f"jsonl says {r.id}"}) + "\n" for r in records),
        encoding="utf-8",
    )
    return files


def test_caption_files_of_every_format_match_the_manifest(stamp_manifest, tmp_path) -> None:
    files = _write_outputs(stamp_manifest, tmp_path)
    records = read_manifest(stamp_manifest)
    loaded = load_systems(files, records)
    for system in loaded:
        assert set(system.captions) == {r.id for r in records} and system.unmatched == 0
        assert system.captions["frog"] == f"{system.name} says frog"
    # Predictions of clips outside the manifest are counted, not matched; none matching is an error.
    extra = tmp_path / "extra.jsonl"
    extra.write_text(files["jsonl"].read_text() + '{"id": "elsewhere", "caption": "x"}\n')
    assert load_systems({"e": extra}, records)[0].unmatched == 1
    none = tmp_path / "none.csv"
    none.write_text("id,caption\nnowhere,x\n")
    with pytest.raises(ValueError, match=r"none\.csv \(system n\): none of its 1 ids matches"):
        load_systems({"n": none}, records)
    twice = tmp_path / "twice.csv"
    twice.write_text("id,caption\nfrog,x\nfrog.ogg,y\n")
    with pytest.raises(ValueError, match=r"ids 'frog' and 'frog\.ogg' both name the manifest"):
        load_systems({"t": twice}, records)
    with pytest.raises(ValueError, match="NAME=FILE"):
        parse_system("just-a-file.csv")
    with pytest.raises(ValueError, match="name 'a b' not allowed"):
        parse_system("a b=x.csv")


def test_system_counts_and_empty_captions_are_refused(stamp_manifest, tmp_path) -> None:
    files = _write_outputs(stamp_manifest, tmp_path / "out")
    with pytest.raises(ValueError, match="compares exactly 2 system"):
        create_study("ab", stamp_manifest, tmp_path / "s1", n=2, raters=["a"],
                     systems={"x": files["csv"]})  # fmt: skip
    with pytest.raises(ValueError, match="--system is for the system-mos and ab studies"):
        create_study("mos", stamp_manifest, tmp_path / "s2", n=2, raters=["a"],
                     systems={"x": files["csv"]})  # fmt: skip
    empty = tmp_path / "empty.jsonl"
    empty.write_text(
        "".join(
            json.dumps({"id": r.id, "caption": "" if r.id == "frog" else "a bird"}) + "\n"
            for r in read_manifest(stamp_manifest)
        )
    )
    with pytest.raises(ValueError, match=r"empty caption for sampled clip\(s\) \['frog'\]"):
        create_study("system-mos", stamp_manifest, tmp_path / "s3", n=8, raters=["a"],
                     systems={"e": empty})  # fmt: skip
    assert not (tmp_path / "s3").exists()


def test_system_mos_items_are_interleaved_blind_and_exported(
    stamp_manifest, tmp_path, open_direct
) -> None:
    files = _write_outputs(stamp_manifest, tmp_path / "out")
    study = create_study(
        "system-mos",
        stamp_manifest,
        tmp_path / "smos",
        n=4,
        seed=1,
        raters=["alice", "bob"],
        gold=2,
        listen_check=False,
        systems={"sysQ7": files["csv"], "sysZ3": files["dcase"]},
    )
    db = open_direct(study.path)
    items = db.conn.execute("SELECT item, system, caption, gold, audio FROM items").fetchall()
    assert len(items) == 4 * 2 + 2
    assert Counter(i["system"] for i in items) == {"sysQ7": 4, "sysZ3": 4, "": 2}
    gold = [i for i in items if i["gold"]]
    # A gold item plays one clip with a system's caption of another sampled clip.
    for g in gold:
        own = next(i for i in items if i["audio"] == g["audio"] and not i["gold"])
        assert own["item"] not in g["caption"] and g["caption"].split()[0] in ("csv", "dcase")
    for name in ("alice", "bob"):
        rater = db.rater(name)
        order = db.conn.execute(
            "SELECT i.item, i.system, i.audio FROM assignments a JOIN items i ON i.id = a.item_id "
            "WHERE a.rater_id = ? ORDER BY a.position",
            (rater,),
        ).fetchall()
        # The same clip never plays twice in a row; the systems' items are interleaved.
        assert all(a["audio"] != b["audio"] for a, b in itertools.pairwise(order))
        systems_in_order = [o["system"] for o in order if o["system"]]
        assert systems_in_order != sorted(systems_in_order)
        state = db("state", rater, 0.0)
        while not state["done"]:
            # Blind: what the page receives names neither the system nor the clip.
            sent = json.dumps(state)
            assert "sysQ7" not in sent and "sysZ3" not in sent and "system" not in sent
            assert not any(f'"{i["item"]}"' in sent for i in items)
            assert state["kind"] == "mos" and set(state["item"]) == {
                "key", "stage", "audio", "duration_s", "caption"}  # fmt: skip
            caption = state["item"]["caption"]
            score = 1 if "says" not in caption else (5 if caption.startswith("csv") else 2)
            if db.conn.execute(
                "SELECT i.gold FROM assignments a JOIN items i ON i.id = a.item_id WHERE a.key = ?",
                (state["item"]["key"],),
            ).fetchone()[0]:
                score = 1
            state = db("answer", rater, state["item"]["key"], 0, score, 1.0)["state"]
    out = tmp_path / "export"
    result = runner.invoke(app, ["human", "export", str(study.path), "--out", str(out)],
                           env={"COLUMNS": "250"})  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "sysQ7" in text and "sysZ3" in text and "Wilcoxon" in text
    ratings = read_ratings(out / "ratings.jsonl")  # gold rows left out
    assert len(ratings) == 16 and {r.system for r in ratings} == {"sysQ7", "sysZ3"}
    assert all(r.score == (5 if r.system == "sysQ7" else 2) for r in ratings)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["systems"]["sysQ7"]["mos"] == 5.0 and summary["systems"]["sysZ3"]["mos"] == 2.0
    pair = summary["pairs"][0]
    assert (pair["a"], pair["b"], pair["n_items"], pair["mean_difference"]) == (
        "sysQ7", "sysZ3", 4, 3.0)  # fmt: skip
    assert pair["p_value"] == pytest.approx(2 / 16)  # four clips, all one way: exact 2 / 2^4
    # `analyze dataset` asks for one MOS per system rather than mixing them.
    result = runner.invoke(app, ["analyze", "dataset", str(stamp_manifest), "--out",
                                 str(tmp_path / "rep"), "--ratings", str(out / "ratings.jsonl")])  # fmt: skip
    assert result.exit_code == 2 and "ratings of 2 systems" in " ".join(result.output.split())


def test_ab_sides_are_randomised_per_rater_and_undone_in_export(
    stamp_manifest, tmp_path, open_direct
) -> None:
    files = _write_outputs(stamp_manifest, tmp_path / "out")
    study = create_study(
        "ab",
        stamp_manifest,
        tmp_path / "ab",
        n=6,
        seed=3,
        raters=["alice", "bob", "carol"],
        gold=1,
        listen_check=False,
        systems={"sysA": files["jsonl"], "sysB": files["json"]},
    )
    db = open_direct(study.path)
    shown_first: dict[str, list[str]] = {}
    for name in ("alice", "bob", "carol"):
        rater = db.rater(name)
        state = db("state", rater, 0.0)
        shown_first[name] = []
        while not state["done"]:
            first, _ = state["item"]["captions"]
            shown_first[name].append(first.split()[0])
            assert "sysA" not in json.dumps(state) and state["kind"] == "ab"
            # Everyone prefers the JSONL system's caption (and the clip's own caption on gold),
            # except carol, who has no preference.
            gold = db.conn.execute(
                "SELECT i.gold, i.caption FROM assignments a JOIN items i ON i.id = a.item_id "
                "WHERE a.key = ?",
                (state["item"]["key"],),
            ).fetchone()
            wanted = gold[1] if gold[0] else None
            if name == "carol" and not gold[0]:
                choice = "tie"
            elif wanted is not None:
                choice = "A" if first == wanted else "B"
            else:
                choice = "A" if first.startswith("jsonl") else "B"
            state = db("answer", rater, state["item"]["key"], 0, choice, 1.0)["state"]
    # An A/B answer is A, B or tie, nothing else.
    from multi2cap.human.store import StudyError

    for bad in ("C", 4, None):
        with pytest.raises(StudyError, match="choice must be one of A, B, tie") as err:
            db("answer", db.rater("alice"), "0" * 16, 0, bad, 2.0)
        assert err.value.status == 422
    # Sides: balanced per rater (7 items: 3 or 4 shown with B's caption first), recorded, and
    # not the same for every rater.
    swapped = {
        name: [
            r[0]
            for r in db.conn.execute(
                "SELECT swapped FROM assignments WHERE rater_id = ? ORDER BY item_id",
                (db.rater(name),),
            )
        ]
        for name in shown_first
    }
    assert all(sum(flags) in (3, 4) for flags in swapped.values())
    assert len({tuple(flags) for flags in swapped.values()}) > 1
    assert swapped["alice"] == sides(7, 3, "alice")
    out = tmp_path / "export"
    result = runner.invoke(app, ["human", "export", str(study.path), "-o", str(out)],
                           env={"COLUMNS": "250"})  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    real = [r for r in rows if not r["gold"]]
    assert len(rows) == 21 and len(real) == 18
    # What the raters clicked was A or B depending on the side; un-randomised it is sysA.
    clicked = Counter(r["choice"] for r in real if r["rater"] != "carol")
    assert clicked["A"] > 0 and clicked["B"] > 0
    assert {r["preferred"] for r in real if r["rater"] != "carol"} == {"sysA"}
    for r in real:
        assert {r["first"], r["second"]} == {"sysA", "sysB"}
        assert r["caption_first"].startswith("jsonl" if r["first"] == "sysA" else "json says")
    assert [r["gold_failed"] for r in rows if r["gold"]] == [0, 0, 0]
    p = json.loads((out / "summary.json").read_text())["preference"]
    assert p["wins"] == {"sysA": 12, "sysB": 0, "tie": 6} and p["decisive_share_a"] == 1.0
    assert p["p_value"] == pytest.approx(2 / 2**12)
    assert 0.7 < p["ci_low"] < 0.8 and p["ci_high"] == pytest.approx(1.0)
    text = " ".join(runner.invoke(app, ["human", "summary", str(study.path)],
                                  env={"COLUMNS": "250"}).output.split())  # fmt: skip
    assert "sysA 12 (66.7 %), sysB 0 (0.0 %), tie 6 (33.3 %)" in text
    assert "exact binomial p = 0.000488" in text


def test_create_help_lists_every_kind_and_cli_creates_a_system_study(
    stamp_manifest, tmp_path
) -> None:
    result = runner.invoke(app, ["human", "create", "--help"], env={"COLUMNS": "250"})
    text = " ".join(result.output.split())
    for kind in ("mos", "captions", "system-mos", "ab"):
        assert f"{kind} = " in text, kind
    files = _write_outputs(stamp_manifest, tmp_path / "out")
    study = tmp_path / "cli-ab"
    result = runner.invoke(
        app,
        ["human", "create", "--kind", "ab", "--manifest", str(stamp_manifest), "-o", str(study),
         "--n", "3", "--raters", "2", "--system", f"base={files['dcase']}",
         "--system", f"ours={files['csv']}"],
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "systems base, ours" in " ".join(result.output.split())
    conn = sqlite3.connect(study / "study.sqlite")
    settings = json.loads(
        conn.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()[0]
    )
    conn.close()
    assert settings["systems"] == ["base", "ours"] and settings["base_url"] is None
    assert settings["system_files"]["ours"]["path"] == str(files["csv"].resolve())
    assert len(settings["system_files"]["ours"]["sha256"]) == 64
    result = runner.invoke(
        app,
        ["human", "create", "--kind", "ab", "--manifest", str(stamp_manifest), "-o",
         str(tmp_path / "bad"), "--system", f"base={files['dcase']}"],
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert result.exit_code == 2 and "compares exactly 2 system(s)" in result.output
