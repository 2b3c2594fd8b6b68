"""End to end in a real headless Chromium (Debian's, driven by Playwright) against a real
`multi2cap human serve` process: keyboard-only rating, resuming from a new browser, SIGKILL of the
server mid-study, the captions study's frame withheld until stage 1 is in, and the exports."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from browser import browser_missing_reason
from multi2cap.cli.main import app

if browser_missing_reason():  # say why, rather than fail on the import below
    pytest.skip(browser_missing_reason(), allow_module_level=True)
from playwright.sync_api import expect

# The 5-s default is tight on a loaded 2-core machine (a server restart, a JVM next door).
expect.set_options(timeout=15_000)
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "human_rating_page.png"
DOCS_AB_SCREENSHOT = DOCS_SCREENSHOT.with_name("human_ab_page.png")
LISTEN_TIMEOUT_MS = 30_000


def _answers(study: Path) -> int:
    conn = sqlite3.connect(study / "study.sqlite")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
    finally:
        conn.close()


def _listen(page) -> None:
    page.get_by_role("button", name="Play clip").click()
    expect(page.locator("#listen-hint")).to_have_text(
        "You can answer now.", timeout=LISTEN_TIMEOUT_MS
    )


def _rate(page, score: int, expect_next: str) -> None:
    _listen(page)
    page.get_by_role("radio", name=str(score), exact=True).check()
    page.get_by_role("button", name="Next").click()
    if expect_next == "done":  # the progress stays "5 / 5": wait for the end page itself
        expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    else:
        expect(page.locator("#progress")).to_have_text(expect_next)
    expect(page.locator("#error")).to_have_text("")


def _open(browser, link: str):
    context = browser.new_context(viewport={"width": 900, "height": 760})
    page = context.new_page()
    page.goto(link)
    page.wait_for_selector("#intro:not([hidden])")
    return context, page


def _open_admin(browser, link: str):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(link)
    expect(page.get_by_role("heading", name="Study admin")).to_be_visible()
    return context, page


@pytest.mark.slow
def test_mos_study_two_raters_resume_and_sigkill(
    browser, make_study, short_manifest, live_server, tmp_path
):
    study = make_study("mos", short_manifest, n=5, raters=["alice", "bob"])
    server = live_server(study.path)
    links = {
        name: link.replace("http://127.0.0.1:8080", server.base)
        for name, link in study.links.items()
    }

    # Alice, keyboard only: Start, play, choose 4 with the arrows, Next.
    context, page = _open(browser, links["alice"])
    assert page.url.endswith("/rate")  # the token left the address bar
    assert page.get_by_text("how accurately the caption describes what you hear").is_visible()
    page.keyboard.press("Enter")  # "Start" has the focus
    page.wait_for_selector("#task:not([hidden])")
    assert page.text_content("#progress") == "1 / 5"
    assert page.get_by_role("button", name="Next").is_disabled()
    page.keyboard.press("Enter")  # "Play clip" has the focus
    expect(page.locator("#listen-hint")).to_have_text(
        "You can answer now.", timeout=LISTEN_TIMEOUT_MS
    )
    page.keyboard.press("Tab")  # into the radio group
    page.keyboard.press("Space")  # 1
    for _ in range(3):
        page.keyboard.press("ArrowRight")  # 2, 3, 4
    assert page.get_by_role("radio", name="4", exact=True).is_checked()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Next
    expect(page.locator("#progress")).to_have_text("2 / 5")

    # The screenshot for docs/human.md: the rating page with an answer chosen.
    _listen(page)
    page.get_by_role("radio", name="5", exact=True).check()
    shot = tmp_path / "rating_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("MULTI2CAP_DOCS_SCREENSHOTS"):
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#progress")).to_have_text("3 / 5")
    context.close()  # Alice closes the browser halfway

    # Bob rates two items; the server is killed with SIGKILL; restarted, it has both.
    context_b, page_b = _open(browser, links["bob"])
    page_b.get_by_role("button", name="Start").click()
    _rate(page_b, 3, "2 / 5")
    _rate(page_b, 2, "3 / 5")
    server.kill()
    assert _answers(study.path) == 4  # every acknowledged answer is on disk
    # Bob's next clip fails to load while the server is down (as when its preload had not
    # finished at the kill); once the server is back, "Play clip" must load it afresh.
    page_b.evaluate("const a = document.getElementById('audio'); a.src = a.src + '?retry'")
    expect(page_b.locator("#listen-hint")).to_contain_text("could not be loaded")
    server.start()  # same port: Bob's open page carries on with its session
    _rate(page_b, 4, "4 / 5")
    _rate(page_b, 5, "5 / 5")
    _rate(page_b, 1, "done")
    assert page_b.get_by_role("heading", name="Thank you").is_visible()
    context_b.close()

    # Alice resumes from a "new device" with the same link, where she stopped.
    context, page = _open(browser, links["alice"])
    assert page.text_content("#progress") == "3 / 5"
    assert page.get_by_role("button", name="Continue").is_visible()
    page.get_by_role("button", name="Continue").click()
    for expected in ("4 / 5", "5 / 5", "done"):
        _rate(page, 3, expected)
    assert page.get_by_role("heading", name="Thank you").is_visible()
    context.close()
    assert _answers(study.path) == 10

    # The admin page: progress per rater, the MOS so far, the export as a download.
    context, page = _open_admin(
        browser, study.admin_link.replace("http://127.0.0.1:8080", server.base)
    )
    rows = page.locator("#raters tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("alice")
    expect(rows.nth(0)).to_contain_text("5 / 5")
    expect(page.locator("#summary-lines")).to_contain_text("from 10 ratings of 5 items")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the export (zip)").click()
    assert download.value.suggested_filename == "export.zip"
    context.close()

    # The export holds every answer (export -> analyze -> Figure 4 is test_cli.py's).
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["human", "export", str(study.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = (out / "ratings.csv").read_text().splitlines()
    assert len(rows) == 11 and rows[1].startswith("alice,") and rows[1].split(",")[2] == "4"


@pytest.mark.slow
def test_captions_study_frame_only_after_stage_one(
    browser, make_study, short_manifest, live_server, tmp_path
):
    study = make_study("captions", short_manifest, n=3, raters=["carol"])
    server = live_server(study.path)
    link = study.links["carol"].replace("http://127.0.0.1:8080", server.base)
    context, page = _open(browser, link)
    events: list[str] = []
    page.on(
        "request",
        lambda r: events.append(
            f"POST stage {r.post_data_json['stage']}"
            if r.method == "POST"
            else ("GET frame" if r.url.endswith("/frame") else "")
        ),
    )
    page.get_by_role("button", name="Start").click()
    for number in (1, 2, 3):
        page.wait_for_selector("#task:not([hidden])")
        assert page.text_content("#progress") == f"{number} / 3"
        assert page.is_hidden("#stage2-part") and page.get_attribute("#frame", "src") is None
        key = page.evaluate("document.getElementById('audio').src").split("/")[-2]
        frame = page.request.get(f"{server.base}/media/{key}/frame")
        assert frame.status == 403  # not even by typing the URL
        _listen(page)
        page.get_by_label("Describe what you hear").fill(f"  a bird sings number {number} ")
        page.get_by_role("button", name="Next").click()
        page.wait_for_selector("#stage2-part:not([hidden])")
        expect(page.locator("#frame")).to_be_visible()
        assert page.locator("#frame").evaluate("img => img.decode().then(() => img.naturalWidth)")
        assert page.text_content("#stage1-caption") == f"a bird sings number {number}"
        page.get_by_label("Describe what you hear, now with the video frame").fill(
            f"a black bird sings on a branch, number {number}"
        )
        page.get_by_role("button", name="Next").click()
        if number < 3:
            expect(page.locator("#progress")).to_have_text(f"{number + 1} / 3")
    page.wait_for_selector("#done:not([hidden])")
    context.close()
    order = [e for e in events if e]
    # Each frame request comes after that item's stage-1 caption, never before.
    assert order == ["POST stage 1", "GET frame", "POST stage 2"] * 3
    assert _answers(study.path) == 6

    result = CliRunner().invoke(
        app, ["human", "score", str(study.path), "-m", "bleu_1,rouge_l"], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert "Human, audio only (w/o visual), ours (1 raters)" in " ".join(result.output.split())


def test_a_second_tab_out_of_turn_catches_up(browser, make_study, short_manifest, live_server):
    """Answered in one tab, the same item answered differently in another is refused (locked)
    and that tab moves on to where the study really is."""
    study = make_study("mos", short_manifest, n=2, raters=["dan"])
    server = live_server(study.path)
    link = study.links["dan"].replace("http://127.0.0.1:8080", server.base)
    context, first = _open(browser, link)
    second = context.new_page()  # same browser, same session cookie
    second.goto(f"{server.base}/rate")
    for page in (first, second):
        page.get_by_role("button", name="Start").click()
        _listen(page)
    first.get_by_role("radio", name="4", exact=True).check()
    first.get_by_role("button", name="Next").click()
    expect(first.locator("#progress")).to_have_text("2 / 2")
    second.get_by_role("radio", name="2", exact=True).check()
    second.get_by_role("button", name="Next").click()
    expect(second.locator("#error")).to_contain_text("answers are locked")
    expect(second.locator("#progress")).to_have_text("2 / 2")
    context.close()
    assert _answers(study.path) == 1


def _links_csv(study: Path) -> dict[str, str]:
    """links.csv as `human serve` left it (rewritten for the server's own address)."""
    rows = (study / "links.csv").read_text().splitlines()[1:]
    return dict(row.split(",", 1) for row in rows)


def _item_of_key(study: Path, key: str) -> sqlite3.Row:
    conn = sqlite3.connect(study / "study.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(
            "SELECT i.*, a.swapped FROM assignments a JOIN items i ON i.id = a.item_id "
            "WHERE a.key = ?",
            (key,),
        ).fetchone()
    finally:
        conn.close()


def _current_key(page) -> str:
    return page.evaluate("document.getElementById('audio').src").split("/")[-2]


def _system_files(short_manifest: Path, folder: Path) -> tuple[Path, Path]:
    """A good system (the manifest's caption) as `caption` writes it, a poor one as DCASE's."""
    from multi2cap.data.manifest import read_manifest

    records = read_manifest(short_manifest)
    good, poor = folder / "good.csv", folder / "poor.csv"
    good.write_text("file_name,caption,path\n" + "".join(
        f"{Path(r.audio).name},good: {r.captions[0]},{r.audio}\n" for r in records))  # fmt: skip
    poor.write_text("file_name,caption_predicted\n" + "".join(
        f"{Path(r.audio).name},poor: a car passes by\n" for r in records))  # fmt: skip
    return good, poor


@pytest.mark.slow
def test_system_mos_study_blind_in_chromium(browser, short_manifest, live_server, tmp_path) -> None:
    from multi2cap.human.study import create_study

    good, poor = _system_files(short_manifest, tmp_path)
    study = create_study("system-mos", short_manifest, tmp_path / "smos", n=2, seed=4,
                         raters=["eve"], gold=1, systems={"sysQ7": good, "sysZ3": poor})  # fmt: skip
    live_server(study.path)  # rewrites links.csv for its own port
    context, page = _open(browser, _links_csv(study.path)["eve"])
    page.get_by_role("button", name="Start").click()
    given = []
    for number in range(1, 6):
        page.wait_for_selector("#task:not([hidden])")
        expect(page.locator("#progress")).to_have_text(f"{number} / 5")
        html = page.content()
        assert "sysQ7" not in html and "sysZ3" not in html  # blind: never a system's name
        item = _item_of_key(study.path, _current_key(page))
        caption = page.text_content("#caption")
        assert caption == item["caption"]
        score = 1 if item["gold"] else (5 if caption.startswith("good") else 2)
        given.append((item["system"], score))
        _rate(page, score, "done" if number == 5 else f"{number + 1} / 5")
    context.close()
    assert sorted(given) == [("", 1), ("sysQ7", 5), ("sysQ7", 5), ("sysZ3", 2), ("sysZ3", 2)]

    context, page = _open_admin(browser, (study.path / "admin_link.txt").read_text().strip())
    expect(page.locator("#summary-lines")).to_contain_text("sysQ7: MOS 5.00")
    expect(page.locator("#summary-lines")).to_contain_text("sysZ3: MOS 2.00")
    context.close()
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["human", "export", str(study.path), "--out", str(out)],
                                env={"COLUMNS": "250"})  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "ratings.jsonl").read_text().splitlines()]
    assert sorted((r["system"], r["score"], r["gold"]) for r in rows) == [
        ("", 1, 1), ("sysQ7", 5, 0), ("sysQ7", 5, 0), ("sysZ3", 2, 0), ("sysZ3", 2, 0)]  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["systems"]["sysQ7"]["mos"] == 5.0 and summary["systems"]["sysZ3"]["mos"] == 2.0
    assert summary["pairs"][0]["mean_difference"] == 3.0


def test_ab_study_sides_randomised_in_chromium(
    browser, short_manifest, live_server, tmp_path
) -> None:
    from multi2cap.human.study import create_study

    good, poor = _system_files(short_manifest, tmp_path)
    study = create_study("ab", short_manifest, tmp_path / "ab", n=3, seed=0, raters=["fay"],
                         systems={"sysA": good, "sysB": poor})  # fmt: skip
    live_server(study.path)  # rewrites links.csv for its own port
    context, page = _open(browser, _links_csv(study.path)["fay"])
    assert page.get_by_text("the order of A and B means nothing").is_visible()
    page.get_by_role("button", name="Start").click()
    clicked = []
    for number in range(1, 4):
        page.wait_for_selector("#task:not([hidden])")
        expect(page.locator("#progress")).to_have_text(f"{number} / 3")
        assert "sysA" not in page.content() and "sysB" not in page.content()
        first, second = page.text_content("#caption-a"), page.text_content("#caption-b")
        item = _item_of_key(study.path, _current_key(page))
        assert (first, second) == ((item["caption_b"], item["caption"]) if item["swapped"]
                                   else (item["caption"], item["caption_b"]))  # fmt: skip
        _listen(page)
        # The good caption on the first two items, no preference on the third.
        choice = "No preference" if number == 3 else ("A" if first.startswith("good") else "B")
        clicked.append(choice)
        page.get_by_role("radio", name=choice, exact=True).check()
        if number == 1:  # the A/B page for docs/human.md
            shot = tmp_path / "ab_page.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("MULTI2CAP_DOCS_SCREENSHOTS"):
                shutil.copyfile(shot, DOCS_AB_SCREENSHOT)
        page.get_by_role("button", name="Next").click()
        if number < 3:
            expect(page.locator("#progress")).to_have_text(f"{number + 1} / 3")
    page.wait_for_selector("#done:not([hidden])")
    context.close()
    context, page = _open_admin(browser, (study.path / "admin_link.txt").read_text().strip())
    expect(page.locator("#summary-lines")).to_contain_text(
        "sysA 2 (66.7 %), sysB 0 (0.0 %), tie 1 (33.3 %) of 3 judgements"
    )
    context.close()
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["human", "export", str(study.path), "--out", str(out)],
                                env={"COLUMNS": "250"})  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert [r["choice"] for r in rows] == [c if c != "No preference" else "tie" for c in clicked]
    assert [r["preferred"] for r in rows] == ["sysA", "sysA", "tie"]
    for row in rows:  # the sides as shown, recorded: A is `first`
        assert row["caption_first"].startswith("good" if row["first"] == "sysA" else "poor")
    p = json.loads((out / "summary.json").read_text())["preference"]
    assert p["wins"] == {"sysA": 2, "sysB": 0, "tie": 1} and p["p_value"] == 0.5
