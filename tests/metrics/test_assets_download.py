"""`multi2cap assets download` against loopback servers speaking each layout (Maven Central with
`.sha1` files, a GitHub release behind a redirect, the Hugging Face hub API), then the installed
assets found by `multi2cap info` and the metrics without any flag.

The files served are stand-ins (class-less jars, a tiny random SBERT and echecker): what is
tested is the transport (resume, retries, checksums, atomic install) and that what lands in the
assets folder is what the metrics load.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asset_servers import FENSE_DIR, MAVEN_DIR, StaticServer, fake_jar, static_server
from loopback_hub import LoopbackHub, loopback_hub
from typer.testing import CliRunner

from multi2cap.assets import AssetNotFoundError, java_executable
from multi2cap.cli.main import app
from multi2cap.download import DownloadError, Retry, fetch
from multi2cap.metrics import evaluate, metric_availability
from multi2cap.metrics.install import Sources, install_fense, install_sbert
from multi2cap.metrics.resources import (
    CORENLP_360_JARS,
    ECHECKER_NAME,
    PAPER_SBERT_MODEL,
    spice_lib_dir,
)

SRC = Path(__file__).resolve().parents[2] / "src"
MODELS_JAR = f"{MAVEN_DIR}/{CORENLP_360_JARS[1]}"
ECHECKER_FILE = f"{ECHECKER_NAME}.ckpt"
BASE_BERT_ID = "loopback/tiny-bert-base"
FAST = Retry(attempts=3, backoff_s=0.05)


def _env(assets: Path, **extra: str) -> dict[str, str]:
    """The environment of a `multi2cap` subprocess: this tree's code, the assets folder, the
    network allowed (the servers are loopback only), no writes to the user's HF cache."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    return {
        **env,
        "PYTHONPATH": str(SRC),
        "MULTI2CAP_ASSETS_DIR": str(assets),
        "HF_HOME": str(assets.parent / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "COLUMNS": "400",
        **extra,
    }


def _java() -> str | None:
    try:
        return str(java_executable())
    except AssetNotFoundError:
        return None


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multi2cap", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def tiny_sbert(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers folder (tiny random BERT + mean pooling) standing in for the
    paper's SBERT on the loopback hub."""
    st = pytest.importorskip("sentence_transformers", reason="SBERT needs sentence-transformers")
    folder = tmp_path_factory.mktemp("tiny-sbert")
    # A plain transformers folder loads as Transformer + mean pooling; saved, it is an SBERT one.
    st.SentenceTransformer(str(tiny_bert), device="cpu").save(str(folder))
    assert (folder / "modules.json").is_file()
    return folder


@pytest.fixture(scope="module")
def echecker_ckpt(echecker_factory: Any) -> Path:
    return echecker_factory("served", model_type=BASE_BERT_ID)


@dataclass
class Servers:
    files: StaticServer
    hub: LoopbackHub


@pytest.fixture
def servers(tiny_sbert: Path, tiny_bert: Path, echecker_ckpt: Path) -> Iterator[Servers]:
    with static_server() as files, loopback_hub() as hub:
        files.add_maven(CORENLP_360_JARS[0], fake_jar("code", 40_000, seed=1))
        files.add_maven(CORENLP_360_JARS[1], fake_jar("models", 300_000, seed=2))
        files.add_release(ECHECKER_FILE, echecker_ckpt.read_bytes())
        hub.add_folder(PAPER_SBERT_MODEL, tiny_sbert)
        hub.add_folder(BASE_BERT_ID, tiny_bert)
        yield Servers(files, hub)


def test_all_in_one_command_resumes_refuses_a_bad_checksum_and_is_found(
    servers: Servers, tmp_path: Path, tiny_sbert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java = _java()
    """`assets download all` through the three layouts: SPICE's models jar is cut after 100 kB
    and resumed; the FENSE file served is not the paper's checkpoint, so its sha256 is refused and
    nothing of FENSE is installed; SBERT comes through the hub API. Exit 1 lists the failure."""
    files, hub = servers.files, servers.hub
    files.drop_after[MODELS_JAR] = 100_000
    assets = tmp_path / "assets"
    args = ["assets", "download", "all", "--dir", str(assets)]
    args += ["--maven-url", f"{files.url}/maven2", "--fense-url", files.url]
    args += ["--hf-endpoint", hub.url]
    proc = _run(args, _env(assets))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert files.ranges(MODELS_JAR) == [None, "bytes=100000-"], output  # resumed, not restarted
    assert f"{files.url}{FENSE_DIR}/{ECHECKER_FILE}: sha256 mismatch" in output
    assert "1 of 3 asset(s) failed: fense" in output

    lib = assets / "spice" / "lib"
    assert sorted(p.name for p in lib.iterdir()) == sorted(CORENLP_360_JARS)  # no .part
    assert not (assets / "spice" / ".staging").exists()
    assert (lib / CORENLP_360_JARS[1]).read_bytes() == files.files[MODELS_JAR]
    sbert = assets / "sbert" / PAPER_SBERT_MODEL.replace("/", "--")
    assert (sbert / "model.safetensors").read_bytes() == (
        tiny_sbert / "model.safetensors"
    ).read_bytes()
    assert not (assets / "fense" / ECHECKER_FILE).exists()
    assert not list((assets / "fense").glob("*--*"))  # nor its base BERT
    assert not list(assets.rglob("*.part"))  # the refused checkpoint was deleted

    info = _run(["info", "--json"], _env(assets))
    rows = {row["name"]: row for row in json.loads(info.stdout)["assets"]}
    assert rows["SPICE: Stanford CoreNLP 3.6.0 jars"]["available"]
    assert str(lib) in rows["SPICE: Stanford CoreNLP 3.6.0 jars"]["detail"]
    assert rows["Sentence-BERT paraphrase-TinyBERT-L6-v2"]["available"]
    assert not rows["FENSE error detector (echecker)"]["available"]
    printed = " ".join(_run(["info"], _env(assets)).stdout.split())
    assert f"available SPICE: Stanford CoreNLP 3.6.0 jars {lib}" in printed

    # The metrics find them with no flag: the paper's set needs nothing more than FENSE now.
    monkeypatch.setenv("MULTI2CAP_ASSETS_DIR", str(assets))
    availability = metric_availability()
    assert availability["spice"] is None and availability["spider"] is None
    assert availability["sbert_sim"] is None
    assert "assets download fense" in availability["fense"]
    assert spice_lib_dir() == lib
    if java is not None:  # SPICE starts with the installed jars on its class path (stand-ins:
        # no CoreNLP classes in them, so it stops at the first one)
        with pytest.raises(RuntimeError, match=r"SPICE failed .*edu[./]stanford[./]nlp"):
            evaluate(["a dog", "rain"], [["a dog barks"], ["rain falls"]], metrics="spice")
    cands, mrefs = ["a dog barks", "rain falls on the roof"], [["a dog"], ["rain on a roof"]]
    result = evaluate(cands, mrefs, metrics="sbert_sim", tokenize=False)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_sbert), device="cpu")
    emb = model.encode(cands + [r[0] for r in mrefs], normalize_embeddings=True)
    want = [float(emb[0] @ emb[2]), float(emb[1] @ emb[3])]
    assert result.per_item["sbert_sim"] == pytest.approx(want, abs=1e-6)  # the paper's key
    assert result.settings["sbert_model"] == str(sbert)


def test_fense_from_its_release_layout_is_used_without_flags(
    servers: Servers,
    tmp_path: Path,
    echecker_ckpt: Path,
    tiny_bert: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The echecker behind GitHub's redirect, cut mid-transfer and resumed at the asset host,
    checked against its sha256; then its base BERT's config and tokenizer (not its weights) from
    the hub; then FER runs from the assets folder alone."""
    files, hub = servers.files, servers.hub
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    asset_host = f"/release-assets/{ECHECKER_FILE}"
    files.drop_after[asset_host] = 20_000
    assets = tmp_path / "assets"
    digest = hashlib.sha256(echecker_ckpt.read_bytes()).hexdigest()
    sources = Sources(fense_url=files.url, hf_endpoint=hub.url)
    installed = install_fense(assets, sources, FAST, sha256=digest)
    assert files.ranges(asset_host) == [None, "bytes=20000-"]
    ckpt, base = installed.paths
    assert ckpt == assets / "fense" / ECHECKER_FILE
    assert ckpt.read_bytes() == echecker_ckpt.read_bytes()
    assert base == assets / "fense" / BASE_BERT_ID.replace("/", "--")
    assert (base / "config.json").is_file() and (base / "vocab.txt").is_file()
    assert not (base / "model.safetensors").exists()  # the checkpoint carries the weights

    monkeypatch.setenv("MULTI2CAP_ASSETS_DIR", str(assets))
    monkeypatch.delenv("MULTI2CAP_FENSE_ECHECKER", raising=False)
    monkeypatch.delenv("MULTI2CAP_FENSE_BERT", raising=False)
    sentences = ["a dog barks loudly", "the car engine runs"]
    result = evaluate(sentences, [["a dog"], ["a car"]], metrics="fer", tokenize=False)
    assert result.settings["echecker"] == str(ckpt)
    from multi2cap.metrics.neural import ErrorDetector

    want = ErrorDetector(echecker_ckpt, bert=str(tiny_bert)).fer(sentences)
    assert (result.corpus["fer"], result.per_item["fer"]) == want


def test_a_missing_file_names_its_address(servers: Servers, tmp_path: Path) -> None:
    url = f"{servers.files.url}/not-maven"
    result = CliRunner().invoke(
        app,
        [
            "assets",
            "download",
            "spice",
            "--maven-url",
            url,
            "--dir",
            str(tmp_path),
            "--retries",
            "1",
        ],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 1
    assert f"HTTP 404 Not Found for {url}/edu/stanford/nlp/stanford-corenlp/3.6.0/" in result.output
    assert not (tmp_path / "spice" / "lib").exists()


def test_the_hub_side_names_its_address_and_respects_offline_mode(
    servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = servers.hub
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert Sources().hub == hub.url  # HF_ENDPOINT when --hf-endpoint is not given
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        install_sbert(tmp_path, Sources(hf_endpoint=hub.url), FAST)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    del hub.repos[PAPER_SBERT_MODEL]
    with pytest.raises(DownloadError, match=f"{hub.url}/{PAPER_SBERT_MODEL} not found on the hub"):
        install_sbert(tmp_path, Sources(hf_endpoint=hub.url), FAST)
    assert not (tmp_path / "sbert" / PAPER_SBERT_MODEL.replace("/", "--")).exists()


def test_fetch_retries_restarts_and_checks(tmp_path: Path) -> None:
    data = os.urandom(50_000)
    sha1 = hashlib.sha1(data).hexdigest()
    with static_server() as server:
        server.files["/f.bin"] = data
        # Two 503s, then a server that ignores Range after a cut: the file restarts from 0.
        server.fail_times["/f.bin"] = 2
        server.drop_after["/f.bin"] = 10_000
        server.honour_range = False
        target = tmp_path / "a" / "f.bin"
        assert fetch(f"{server.url}/f.bin", target, ("sha1", sha1), Retry(4, 0.01)) == target
        assert target.read_bytes() == data and not target.with_name("f.bin.part").exists()

        # A .part already whole (an earlier run died before the rename): 416, then checked.
        server.honour_range = True
        done = tmp_path / "b" / "f.bin"
        done.parent.mkdir()
        done.with_name("f.bin.part").write_bytes(data)
        fetch(f"{server.url}/f.bin", done, ("sha1", sha1), FAST)
        assert done.read_bytes() == data
        assert server.ranges("/f.bin")[-1] == "bytes=50000-"

        # A wrong digest deletes what was downloaded: nothing installed, nothing to resume.
        bad = tmp_path / "c" / "f.bin"
        with pytest.raises(DownloadError, match=r"/f\.bin: sha1 mismatch .* nothing installed"):
            fetch(f"{server.url}/f.bin", bad, ("sha1", "0" * 40), FAST)
        assert not bad.parent.exists() or not any(bad.parent.iterdir())

        # Connection refused on every try: the error names the address and the tries.
        with pytest.raises(
            DownloadError, match=r"could not download http://127\.0\.0\.1:9/x after 2"
        ):
            fetch("http://127.0.0.1:9/x", tmp_path / "d", None, Retry(2, 0.01))
