"""Fixtures of the metrics tests: the public oracle, one warm METEOR evaluator per session, the
CLI run on the oracle, a tiny random BERT (config, tokenizer, weights) with echecker checkpoints
around it, and an empty assets folder for every test.

Each METEOR JVM needs 10-35 s to load its paraphrase table on a busy 2-core machine, so both JVMs
the tests need (the shared evaluator and the CLI's own) start in the background when the session
begins and load while the other tests run.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from multi2cap.assets import AssetNotFoundError, java_executable
from multi2cap.metrics import Evaluator

ORACLE = Path("/work/shared/oracle/metrics_public.json")
# The same numbers, kept in the repository so the tests run where /work/shared is absent.
ORACLE_COPY = Path(__file__).with_name("metrics_public.json")


def _java() -> str | None:
    try:
        return str(java_executable())
    except AssetNotFoundError:
        return None


@pytest.fixture(autouse=True)
def _empty_assets_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test sees assets a developer downloaded into ~/.cache/multi2cap/assets."""
    monkeypatch.setenv("MULTI2CAP_ASSETS_DIR", str(tmp_path_factory.mktemp("no-assets")))


WORDS = [
    *("a", "dog", "barks", "man", "speaks", "rain", "falls", "on", "roof"),
    *("car", "engine", "runs", "loudly", "the", "while"),
]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny random BertModel: config, tokenizer (a 20-word vocabulary) and
    weights, loadable with `AutoModel` / `AutoTokenizer` from the folder."""
    torch = pytest.importorskip("torch", reason="needs torch")
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    # transformers 5 takes the vocabulary itself (`vocab_file=` is silently ignored: every
    # word would become [UNK]).
    tokenizer = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(tokens)})
    assert tokenizer("a dog")["input_ids"] == [2, 5, 6, 3]
    tokenizer.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def echecker_factory(tiny_bert: Path) -> Any:
    """Writes echecker checkpoints around the tiny random BERT (its config + tokenizer)."""
    import torch
    from transformers import BertConfig

    from multi2cap.metrics.neural import _FlatClassifier

    config = BertConfig.from_pretrained(tiny_bert)

    def make(name: str, bias: list[float] | None = None, model_type: str = str(tiny_bert)) -> Path:
        torch.manual_seed(0)
        model = _FlatClassifier(config, 6)
        if bias is not None:
            with torch.no_grad():
                model.clf.weight.zero_()
                model.clf.bias.copy_(torch.tensor(bias))
        state = dict(model.state_dict())
        # Checkpoints saved by older transformers carry this buffer; loading must drop it.
        state["encoder.embeddings.position_ids"] = torch.arange(64)[None]
        path = tiny_bert / f"{name}.ckpt"
        torch.save({"model_type": model_type, "num_classes": 6, "state_dict": state}, path)
        return path

    return make


@pytest.fixture(scope="session")
def oracle() -> dict[str, Any]:
    return json.loads((ORACLE if ORACLE.is_file() else ORACLE_COPY).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def java() -> str:
    found = _java()
    if found is None:
        pytest.skip("needs Java for the PTB tokenizer / METEOR jars (no java on PATH/JAVA_HOME)")
    return found


@dataclass
class CliRun:
    """`multi2cap evaluate` on the oracle files, running in a subprocess."""

    process: subprocess.Popen[str]
    scores: Path
    items: Path
    returncode: int | None = None

    def wait(self) -> str:
        output, _ = self.process.communicate(timeout=600)
        self.returncode = self.process.returncode
        return output


def _write_oracle_files(folder: Path, oracle: dict[str, Any]) -> tuple[Path, Path]:
    """Clotho-style predictions CSV (`file_name,caption`) and JSONL references, shuffled."""
    predictions = folder / "predictions.csv"
    with open(predictions, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption"])
        for i, caption in enumerate(oracle["candidates"]):
            writer.writerow([f"clip_{i}.wav", caption])
    references = folder / "references.jsonl"
    references.write_text(
        "".join(
            json.dumps({"id": f"clip_{i}.wav", "captions": refs}) + "\n"
            for i, refs in reversed(list(enumerate(oracle["mult_references"])))
        ),
        encoding="utf-8",
    )
    return predictions, references


@pytest.fixture(scope="session", autouse=True)
def _start_jvms(request: pytest.FixtureRequest) -> None:
    if _java() is not None:
        request.getfixturevalue("offline_evaluator")
        request.getfixturevalue("cli_oracle_run")


@pytest.fixture(scope="session")
def cli_oracle_run(
    tmp_path_factory: pytest.TempPathFactory, oracle: dict[str, Any], java: str
) -> Iterator[CliRun]:
    folder = tmp_path_factory.mktemp("cli")
    predictions, references = _write_oracle_files(folder, oracle)
    scores, items = folder / "scores.json", folder / "items.csv"
    cmd = [sys.executable, "-m", "multi2cap.cli.main", "evaluate", "-p", str(predictions)]
    cmd += ["-r", str(references), "-o", str(scores), "--per-item", str(items), "--java", java]
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    run = CliRun(process, scores, items)
    yield run
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="session")
def offline_evaluator(java: str) -> Iterator[Evaluator]:
    """BLEU, ROUGE-L, METEOR, CIDEr-D and vocab with one JVM start for the whole session."""
    with Evaluator("offline", java=java) as evaluator:
        yield evaluator


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Within this folder, run the tests that wait for a METEOR JVM last, so the JVMs load
    while the others run (other folders' tests keep their places)."""
    waiting = ("offline_evaluator", "cli_oracle_run")
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if here in Path(str(item.path)).parents]

    def waits(item: pytest.Item) -> int:
        return sum(name in getattr(item, "fixturenames", ()) for name in waiting)

    for slot, item in zip(slots, sorted((items[i] for i in slots), key=waits), strict=True):
        items[slot] = item
