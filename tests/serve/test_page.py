"""The try-it page in a real headless Chromium: choose a Tux Paint sound, the caption appears
(the same as the Python API's); an unreadable file shows the server's reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serve_helpers import live_server

from browser import FAKE_MICROPHONE_ARGS, headless_chromium
from multi2cap.model.card import checkpoint_summary
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.serve.limits import ServeSettings

SCREENSHOT_ENV = "MULTI2CAP_SERVE_SCREENSHOT"  # set to a path to keep the screenshot (docs)


def test_the_page_captions_an_uploaded_sound(
    model: Multi2Cap, checkpoint: Path, sounds: list[Path], tmp_path: Path
) -> None:
    sound = max(sounds, key=lambda p: p.stat().st_size)
    expected = model.caption(sound)[0]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not a wave file")
    work = tmp_path / "work"
    work.mkdir()
    summary = checkpoint_summary(checkpoint)
    with (
        live_server(model, ServeSettings(), work, summary=summary) as server,
        headless_chromium() as browser,
    ):
        page = browser.new_page(viewport={"width": 900, "height": 640})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(server.url)
        page.wait_for_selector("#model:has-text('tiny')")
        page.set_input_files("#file", str(sound))
        caption = page.wait_for_selector("#results li .caption", timeout=60_000)
        assert caption.inner_text() == expected
        assert sound.name in page.inner_text("#results li .file")
        page.set_input_files("#file", str(broken))
        error = page.wait_for_selector("#results li .error", timeout=60_000)
        assert error.inner_text().startswith("400: broken.wav:")
        screenshot = tmp_path / "serve_page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert [e for e in errors if "status of 400" not in e] == [], errors
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(screenshot, os.environ[SCREENSHOT_ENV])
    assert list(work.iterdir()) == []


def test_the_api_docs_render_offline(model: Multi2Cap, tmp_path: Path) -> None:
    """/docs is Swagger UI from the package: it renders the routes with no network."""
    with live_server(model, ServeSettings(), tmp_path) as server, headless_chromium() as browser:
        page = browser.new_page()
        outside: list[str] = []
        page.on(
            "request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url)
        )
        page.goto(f"{server.url}/docs")
        page.wait_for_selector("[data-path='/v1/audio/transcriptions']", timeout=60_000)
        assert page.is_visible("[data-path='/v1/captions']")
        assert outside == []


def test_the_page_records_from_the_microphone(model: Multi2Cap, tmp_path: Path) -> None:
    """Chromium's fake microphone (a tone) recorded with MediaRecorder (webm/opus), uploaded,
    decoded by the server's front end (PyAV), captioned."""
    with (
        live_server(model, ServeSettings(), tmp_path) as server,
        headless_chromium(FAKE_MICROPHONE_ARGS) as browser,
    ):
        context = browser.new_context()
        context.grant_permissions(["microphone"], origin=server.url)
        page = context.new_page()
        page.goto(server.url)
        page.click("#record")
        page.wait_for_selector("#record:has-text('Stop')")
        page.wait_for_timeout(1500)
        page.click("#record")
        item = page.wait_for_selector("#results li", timeout=60_000)
        assert item.query_selector(".error") is None, item.inner_text()
        assert item.query_selector(".caption").inner_text()
        name = item.query_selector(".file").inner_text()
        assert name.startswith("recording.") and " s" in name
        seconds = float(name.split("·")[1].strip().removesuffix(" s"))
        assert 0.5 < seconds < 5
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("asset", ["/static/app.js", "/static/style.css"])
def test_page_assets_come_from_the_app(model: Multi2Cap, tmp_path: Path, asset: str) -> None:
    import httpx

    with live_server(model, ServeSettings(), tmp_path) as server:
        page = httpx.get(server.url).text
        assert asset in page and "http" not in page.split("<body>")[0].replace(
            'name="viewport"', ""
        )
        assert httpx.get(server.url + asset).status_code == 200


def test_the_page_offers_the_beams_the_server_accepts(model: Multi2Cap, tmp_path: Path) -> None:
    """The beam field's bounds come from the server (`GET /v1/model` `limits`): stepping up in
    Chromium stops at the server's cap, and the server refuses one more."""
    cap = max(3, model.config.generation.num_beams)
    with (
        live_server(model, ServeSettings(max_num_beams=cap), tmp_path) as server,
        headless_chromium() as browser,
    ):
        page = browser.new_page()
        page.goto(server.url)
        page.wait_for_selector("#model:has-text('tiny')")
        page.click("summary")
        field = page.locator("#num_beams")
        assert field.get_attribute("max") == str(cap)
        field.focus()
        for _ in range(cap + 5):
            page.keyboard.press("ArrowUp")
        assert field.input_value() == str(cap)
        assert page.locator("#max_new_tokens").get_attribute("max") == str(
            max(ServeSettings().max_new_tokens_limit, model.config.generation.max_new_tokens)
        )
        limits = page.evaluate("fetch('/v1/model').then((r) => r.json())")["limits"]
        assert limits["num_beams"] == [1, cap]
        refused = page.evaluate(
            """async (beams) => {
                const form = new FormData();
                form.append("file", new Blob(["x"]), "x.wav");
                form.append("num_beams", String(beams));
                return (await fetch("/v1/captions", {method: "POST", body: form})).status;
            }""",
            cap + 1,
        )
        assert refused == 422
