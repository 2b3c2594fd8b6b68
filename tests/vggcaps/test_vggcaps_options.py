"""Options and keys are checked before anything is extracted or paid for (issue 26, item 8):
each bad value exits 2 with a message naming the option (or the key's variable, never the key),
and the loopback endpoint sees no request and the output folder gets no media."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai_loopback import LoopbackServer
from typer.testing import CliRunner
from vgg_helpers import API_KEY, clip_items, make_extracted, make_videos

from multi2cap.cli.main import app

KEY_ENV = "M2C_TEST_OPENAI_KEY"
ITEMS = [("clip_a", "dog barking"), ("clip_b", "rain falling")]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("videos")
    make_videos(root / "clips", ITEMS, root / "clips.csv")
    return root / "clips", root / "clips.csv"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    with LoopbackServer(API_KEY) as srv:
        yield srv


def build(videos: tuple[Path, Path], out: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "vggcaps",
        "build",
        "--videos",
        str(videos[0]),
        "--categories",
        str(videos[1]),
        "--out",
        str(out),
        "--base-url",
        base_url,
        "--api-key-env",
        KEY_ENV,
        "--workers",
        "1",
        "--no-progress",
        *extra,
    ]


def assert_nothing_done(out: Path, server: LoopbackServer) -> None:
    assert server.state.chat_seen == 0
    assert not (out / "media").exists() and not (out / "work" / "extract.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "named", "found"),
    [
        (["--timeout", "0"], "--timeout", "0.0"),
        (["--timeout", "-1"], "--timeout", "-1.0"),
        (["--max-tokens", "0"], "--max-tokens", "0"),
        (["--max-tokens", "-5"], "--max-tokens", "-5"),
        (["--image-detail", "ultra"], "--image-detail", "ultra"),
        (["--max-tokens-param", "max_tokenz"], "--max-tokens-param", "max_tokenz"),
        (["--temperature", "-0.5"], "--temperature", "-0.5"),
        (["--price-input", "-1"], "--price-input", "-1.0"),
        (["--price-output", "-0.01"], "--price-output", "-0.01"),
        (["--test-fraction", "1.5"], "--test-fraction", "1.5"),
        (["--test-fraction", "-0.1"], "--test-fraction", "-0.1"),
        (["--max-reply-bytes", "10"], "--max-reply-bytes", "10"),
        (["--colormap", "magmaa"], "colormap", "magmaa"),
    ],
)
def test_a_bad_option_stops_the_build_before_any_work(
    videos, tmp_path, server, extra, named, found
) -> None:
    result = CliRunner().invoke(app, build(videos, tmp_path, server.base_url, *extra))
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert named in output and found in output and "Traceback" not in output
    assert_nothing_done(tmp_path, server)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("localhost:8000/v1", "the scheme must be http or https"),
        ("127.0.0.1:8000", "no scheme"),
        ("http://", "names no host"),
        ("ftp://example.org/v1", "the scheme must be http or https"),
        ("http://127.0.0.1:99999/v1", "not a URL"),
    ],
)
def test_a_malformed_base_url_is_refused_at_start(videos, tmp_path, server, url, problem) -> None:
    result = CliRunner().invoke(app, build(videos, tmp_path, url))
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "--base-url" in output and problem in output
    assert_nothing_done(tmp_path, server)


@pytest.mark.parametrize(
    ("key", "found"),
    [
        (API_KEY + "\r", "line break"),
        (API_KEY + "\r\n", "line break"),
        (" " + API_KEY, "whitespace"),
        (API_KEY[:-2] + "é1", "non-ASCII"),
        (API_KEY[:8] + " " + API_KEY[8:], "spaces"),
    ],
)
def test_an_unusable_key_is_refused_naming_its_variable_not_its_value(
    videos, tmp_path, server, monkeypatch, key, found
) -> None:
    monkeypatch.setenv(KEY_ENV, key)
    result = CliRunner().invoke(app, build(videos, tmp_path, server.base_url))
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert KEY_ENV in output and found in output
    assert API_KEY[6:20] not in result.output  # no piece of the key is shown
    assert_nothing_done(tmp_path, server)


def test_the_caption_step_checks_its_options_too(tmp_path, server) -> None:
    make_extracted(tmp_path, clip_items(2))
    args = ["vggcaps", "caption", "--out", str(tmp_path), "--api-key-env", KEY_ENV]
    args += ["--base-url", server.base_url, "--no-progress"]
    for extra in (["--timeout", "0"], ["--base-url", "localhost:1/v1"], ["--max-tokens", "0"]):
        result = CliRunner().invoke(app, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert extra[0] in result.output
    assert server.state.chat_seen == 0
    assert not (tmp_path / "work" / "stage1.jsonl").exists()


def test_the_split_step_refuses_a_test_fraction_outside_0_1(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["vggcaps", "split", "--out", str(tmp_path), "--test-fraction", "2"]
    )
    assert result.exit_code == 2 and "--test-fraction" in result.output
