"""The web app over HTTP (FastAPI's TestClient, the real ASGI app and database): sessions, the
refusals the issue lists, security headers, the admin summary and export."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from multi2cap.human.app import create_app

BASE = "http://127.0.0.1:8080"


def _token(link: str) -> str:
    return link.rsplit("/", 1)[1]


class Rater:
    """A browser stand-in: a cookie jar, the page's CSRF token and same-origin headers."""

    def __init__(self, app, link: str) -> None:
        self.client = TestClient(app, base_url=BASE)
        self.client.__enter__()
        reply = self.client.get(f"/r/{_token(link)}", follow_redirects=False)
        assert reply.status_code == 303 and reply.headers["location"] == "/rate"
        page = self.client.get("/rate")
        self.csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)

    def state(self) -> dict:
        return self.client.get("/api/state").json()

    def post(self, body: dict, **headers: str):
        sent = {"X-CSRF-Token": self.csrf, "Origin": BASE, "Sec-Fetch-Site": "same-origin"}
        sent.update(headers)
        return self.client.post("/api/answer", json=body, headers=sent)

    def close(self) -> None:
        self.client.__exit__(None, None, None)


@pytest.fixture
def mos(make_study):
    study = make_study("mos", n=3, gold=1, listen_check=False)
    app = create_app(study.path)
    raters = {name: Rater(app, link) for name, link in study.links.items()}
    yield study, app, raters
    for rater in raters.values():
        rater.close()


def test_a_rater_answers_and_repeats_are_stored_once(mos) -> None:
    _, _, raters = mos
    alice = raters["alice"]
    state = alice.state()
    assert state["position"] == 1 and state["total"] == 4  # 3 items + 1 gold
    key = state["item"]["key"]
    assert alice.post({"key": key, "score": 4}).json()["stored"] is True
    repeat = alice.post({"key": key, "score": 4})
    assert repeat.status_code == 200 and repeat.json()["stored"] is False
    changed = alice.post({"key": key, "score": 1})
    assert changed.status_code == 409 and "locked" in changed.json()["error"]
    audio = alice.client.get(state["item"]["audio"])
    assert audio.status_code == 200 and audio.content[:4] == b"fLaC"
    assert audio.headers["content-type"] == "audio/flac"


def test_wrong_token_and_no_session_are_refused(mos) -> None:
    study, app, _ = mos
    with TestClient(app, base_url=BASE) as anonymous:
        wrong = anonymous.get("/r/" + "A" * 22, follow_redirects=False)
        assert wrong.status_code == 403 and "not valid" in wrong.text
        near = _token(study.links["alice"])[:-1] + "x"
        assert anonymous.get(f"/r/{near}", follow_redirects=False).status_code == 403
        assert anonymous.get("/api/state").status_code == 401
        assert anonymous.get("/rate").status_code == 401
        assert anonymous.post("/api/answer", json={"score": 3}).status_code == 401
        # A rater's link is not the admin's.
        assert (
            anonymous.get(f"/a/{_token(study.links['alice'])}", follow_redirects=False).status_code
            == 403
        )


def test_another_raters_item_is_not_found(mos) -> None:
    _, _, raters = mos
    bob_item = raters["bob"].state()["item"]
    alice = raters["alice"]
    reply = alice.post({"key": bob_item["key"], "score": 3})
    assert reply.status_code == 404
    assert alice.client.get(bob_item["audio"]).status_code == 404
    assert raters["bob"].client.get(bob_item["audio"]).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/media/../study.sqlite",
        "/media/%2e%2e/study.sqlite",
        "/media/..%2f..%2fstudy.sqlite/audio",
        "/media/%2e%2e%2fstudy.sqlite/audio",
        "/media/0000000000000000/..%2f..%2fstudy.sqlite",
        "/media/..%252f..%252fstudy.sqlite/audio",
        "/media/audio/",
        "/media/",
        "/static/..%2fstudy.py",
        "/static/%2e%2e%2fapp.py",
        "/static/",
        "/study.sqlite",
        "/links.csv",
    ],
)
def test_traversal_and_listing_are_refused(mos, path: str) -> None:
    _, _, raters = mos
    reply = raters["alice"].client.get(path)
    assert reply.status_code == 404
    assert b"SQLite format" not in reply.content and b"import" not in reply.content
    assert b"/r/" not in reply.content


def test_a_symlink_escaping_the_study_is_not_served(mos, tmp_path: Path) -> None:
    study, _, raters = mos
    alice = raters["alice"]
    item = alice.state()["item"]
    assert alice.client.get(item["audio"]).status_code == 200
    secret = tmp_path / "outside.flac"
    secret.write_bytes(b"fLaC outside the study")
    for audio in (study.path / "media" / "audio").iterdir():
        audio.unlink()
        os.symlink(secret, audio)
    reply = alice.client.get(item["audio"])
    assert reply.status_code == 404 and b"outside" not in reply.content


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Origin": "https://evil.example"}, "another origin"),
        ({"Origin": "null"}, "another origin"),
        ({"Sec-Fetch-Site": "cross-site"}, "cross-site"),
        ({"Sec-Fetch-Site": "same-site"}, "cross-site"),
        ({"X-CSRF-Token": ""}, "CSRF"),
        ({"X-CSRF-Token": "A" * 22}, "CSRF"),
    ],
)
def test_forged_cross_site_posts_are_refused(mos, headers: dict, reason: str) -> None:
    _, _, raters = mos
    alice = raters["alice"]
    key = alice.state()["item"]["key"]
    reply = alice.post({"key": key, "score": 5}, **headers)
    assert reply.status_code == 403 and reason in reply.json()["error"]
    assert alice.state()["position"] == 1  # nothing stored


def test_a_form_post_from_another_site_is_refused(mos) -> None:
    """What a cross-site HTML form can send: urlencoded body, the cookie, no custom header."""
    _, _, raters = mos
    alice = raters["alice"]
    key = alice.state()["item"]["key"]
    reply = alice.client.post(
        "/api/answer",
        content=f"key={key}&score=5",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "https://evil.example",
        },
    )
    assert reply.status_code == 403
    # Even without Origin / Sec-Fetch-Site (an old browser), no CSRF header means no answer.
    reply = alice.client.post(
        "/api/answer",
        content=f"key={key}&score=5",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 403 and alice.state()["position"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"score": 6}, "integer from 1 to 5"),
        ({"score": 0}, "integer from 1 to 5"),
        ({"score": "5"}, "integer from 1 to 5"),
        ({"score": 2.5}, "integer from 1 to 5"),
        ({}, "integer from 1 to 5"),
        ({"score": 3, "stage": 2}, "one stage"),
    ],
)
def test_bad_scores_get_a_clear_422(mos, body: dict, message: str) -> None:
    _, _, raters = mos
    alice = raters["alice"]
    reply = alice.post({"key": alice.state()["item"]["key"], **body})
    assert reply.status_code == 422 and message in reply.json()["error"]


def test_bad_captions_get_a_clear_422(make_study) -> None:
    study = make_study("captions", n=2, listen_check=False)
    rater = Rater(create_app(study.path), study.links["alice"])
    try:
        item = rater.state()["item"]
        for body, message in (
            ({"caption": ""}, "empty"),
            ({"caption": "   "}, "empty"),
            ({"caption": "x" * 501}, "at most 500"),
            ({"caption": 5}, "must be text"),
            ({"caption": "ok", "stage": 3}, "stage must be 1"),
        ):
            reply = rater.post({"key": item["key"], "stage": body.pop("stage", 1), **body})
            assert reply.status_code == 422 and message in reply.json()["error"], body
        frame = f"/media/{item['key']}/frame"
        assert rater.client.get(frame).status_code == 403  # before the stage-1 caption
        assert rater.post({"key": item["key"], "stage": 1, "caption": "a frog"}).status_code == 200
        shown = rater.client.get(frame)
        assert shown.status_code == 200 and shown.content[:3] == b"\xff\xd8\xff"  # JPEG
    finally:
        rater.close()


def test_security_headers(mos) -> None:
    _, _, raters = mos
    page = raters["alice"].client.get("/rate")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    cookie = TestClient(raters["alice"].client.app, base_url=BASE).get(
        f"/r/{'A' * 22}", follow_redirects=False
    )
    assert "set-cookie" not in cookie.headers
    # No external resource: every script, style, image and medium comes from the app.
    assert not re.search(r'(src|href)="(https?:)?//', page.text)


def test_admin_summary_and_export(mos) -> None:
    study, app, raters = mos
    for name, score in (("alice", 5), ("bob", 3)):
        rater = raters[name]
        state = rater.state()
        while not state["done"]:
            state = rater.post({"key": state["item"]["key"], "score": score}).json()["state"]
    assert raters["alice"].client.get("/admin/api/summary").status_code == 401
    with TestClient(app, base_url=BASE) as admin:
        assert admin.get(f"/a/{_token(study.admin_link)}").status_code == 200
        summary = admin.get("/admin/api/summary").json()
        assert [r["done"] for r in summary["raters"]] == [4, 4]
        # Each rated the gold item 5 or 3 (> 2): one failure each.
        assert [r["gold_failed"] for r in summary["raters"]] == [1, 1]
        assert summary["summary"]["mos"]["n_ratings"] == 6  # gold excluded
        assert summary["summary"]["mos"]["mos"] == pytest.approx(4.0)
        archive = zipfile.ZipFile(io.BytesIO(admin.get("/admin/export.zip").content))
        assert {"ratings.csv", "raters.csv", "study.json"} <= set(archive.namelist())
        ratings = archive.read("ratings.csv").decode()
        assert ratings.count("\n") == 1 + 8 and "gold-01" in ratings
