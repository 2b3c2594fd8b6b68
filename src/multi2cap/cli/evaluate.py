"""`multi2cap evaluate`: score predicted captions against references (parsing and printing only;
the work is in `multi2cap.metrics`)."""

from __future__ import annotations

import warnings
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from multi2cap.cli.errors import bad_input
from multi2cap.metrics.clap import CLAP_MODEL_ENV, MACE_METHODS

MaceMethod = StrEnum("MaceMethod", {name: name for name in MACE_METHODS})


def evaluate_command(
    predictions: Path = typer.Option(
        ...,
        "--predictions",
        "-p",
        help="CSV `id,caption` (or `file_name,caption`), JSONL, or a .json array of {id, caption}.",
    ),
    references: Path = typer.Option(
        ...,
        "--references",
        "-r",
        help="CSV wide `id,caption_1..caption_N`, CSV long `id,caption`, JSONL or a .json array "
        "of {id, captions}.",
    ),
    metrics: str = typer.Option(
        "offline",
        "--metrics",
        "-m",
        help="A set (offline, paper, default, dcase2020, dcase2023, dcase2024, bleu, all) or "
        "keys: bleu_1,meteor,... (docs/metrics.md lists them).",
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write scores.json here."),
    per_item: Path | None = typer.Option(None, "--per-item", help="Write per-item CSV here."),
    skip_unavailable: bool = typer.Option(
        False, "--skip-unavailable", help="Report metrics whose assets are missing as null."
    ),
    no_tokenize: bool = typer.Option(
        False, "--no-tokenize", help="Captions are already PTB-tokenized: skip tokenization."
    ),
    java: str | None = typer.Option(
        None, "--java", help="java executable (default: JAVA_HOME/PATH)."
    ),
    spice_lib: str | None = typer.Option(
        None, "--spice-lib", help="Folder with the CoreNLP 3.6.0 jars (env MULTI2CAP_SPICE_LIB)."
    ),
    sbert_model: str | None = typer.Option(
        None, "--sbert-model", help="Sentence-BERT folder or cached id (env MULTI2CAP_SBERT_MODEL)."
    ),
    echecker: str | None = typer.Option(
        None, "--echecker", help="FENSE echecker .ckpt (env MULTI2CAP_FENSE_ECHECKER)."
    ),
    echecker_bert: str | None = typer.Option(
        None, "--echecker-bert", help="Echecker base BERT folder (env MULTI2CAP_FENSE_BERT)."
    ),
    bert_score_model: str | None = typer.Option(
        None,
        "--bert-score-model",
        help="BERTScore encoder folder (env MULTI2CAP_BERT_SCORE_MODEL; default roberta-large).",
    ),
    clap_model: str | None = typer.Option(
        None,
        "--clap-model",
        help="transformers CLAP (folder or cached hub id) for clap_sim, clap_sim_audio, mace "
        f"(env {CLAP_MODEL_ENV}).",
    ),
    audio_dir: Path | None = typer.Option(
        None,
        "--audio-dir",
        help="Folder of the clips, each at <audio-dir>/<id> (clap_sim_audio; mace unless "
        "--mace-method text).",
    ),
    mace_method: MaceMethod = typer.Option(
        "combined",
        "--mace-method",
        help="Which CLAP-sim MACE uses: combined (mean of text and audio), text, audio.",
    ),
    device: str = typer.Option(
        "cpu", "--device", help="torch device for SBERT / echecker / BERTScore / CLAP."
    ),
    allow_network: bool = typer.Option(
        False, "--allow-network", help="Let Hugging Face download models that are not cached."
    ),
) -> None:
    """Score predicted captions against references (BLEU, ROUGE-L, METEOR, CIDEr-D, ...)."""
    from multi2cap.io import check_output
    from multi2cap.metrics import MetricUnavailableError, MetricWarning, evaluate
    from multi2cap.metrics.files import (
        CaptionFileError,
        align,
        empty_predictions,
        read_predictions,
        read_references,
        scores_document,
        write_per_item,
        write_scores,
    )

    console = Console()
    err = Console(stderr=True)
    for path, option in ((output, "--output"), (per_item, "--per-item")):
        if path is not None:
            check_output(path, "file", option)  # before the metrics load (minutes)
    try:
        predicted = read_predictions(predictions)
        ids, candidates, mult_references = align(predicted, read_references(references))
        empty = empty_predictions(predicted)
        if empty:
            err.print(
                f"[yellow]warning:[/yellow] {len(empty)} of {len(ids)} predictions are empty "
                "(scored as captions without words): "
                + escape(", ".join(repr(key) for key in empty[:10]))
                + (" ..." if len(empty) > 10 else "")
            )
        audio_paths = _audio_paths(audio_dir, ids)
        with (
            err.status(f"Scoring {len(ids)} items (METEOR's JVM takes 10-30 s to start)"),
            warnings.catch_warnings(),
        ):
            # A metric left out (one item) is listed below with its reason: no Python warning.
            warnings.simplefilter("ignore", MetricWarning)
            result = evaluate(
                candidates,
                mult_references,
                metrics=metrics,
                tokenize=not no_tokenize,
                skip_unavailable=skip_unavailable,
                java=java,
                spice_lib=spice_lib,
                sbert_model=sbert_model,
                echecker=echecker,
                echecker_bert=echecker_bert,
                bert_score_model=bert_score_model,
                clap_model=clap_model,
                mace_method=mace_method.value,
                audio_paths=audio_paths,
                device=device,
                allow_network=allow_network,
            )
    except (CaptionFileError, MetricUnavailableError, ValueError) as error:
        bad_input(str(error))
    # Anything else (a jar that crashes, a bug) is an internal error: exit 3 with a crash log.

    # x100 as the paper prints them; scores.json keeps the raw values.
    title = f"{len(ids)} items" + (f", {len(empty)} empty predictions" if empty else "")
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("score x100", justify="right")
    for key, value in result.corpus.items():
        if key.startswith("vocab.ratio"):
            table.add_row(f"{key} (ratio, not x100)", f"{value:.3f}")
        elif key.startswith("vocab"):
            table.add_row(f"{key} (words, not x100)", f"{value:.1f}".removesuffix(".0"))
        else:
            table.add_row(key, f"{100 * value:.2f}")
    for key in result.unavailable:
        table.add_row(key, "[yellow]unavailable[/yellow]")
    console.print(table)
    for keys, reason in result.unavailable_grouped():  # each missing asset explained once
        err.print(f"[yellow]{', '.join(keys)} unavailable:[/yellow] {escape(reason)}")
    if output is not None:
        write_scores(
            output,
            scores_document(
                result,
                len(ids),
                empty,
                predictions=str(predictions),
                references=str(references),
            ),
        )
        console.print(f"raw scores written to {output}")
    if per_item is not None:
        write_per_item(per_item, ids, result)
        console.print(f"per-item scores written to {per_item}")


def _audio_paths(audio_dir: Path | None, ids: list[str]) -> list[str] | None:
    """`<audio_dir>/<id>` for every id, or a bad-input exit naming the clips that are missing."""
    if audio_dir is None:
        return None
    if not audio_dir.is_dir():
        bad_input(f"--audio-dir {audio_dir}: not a folder")
    paths = [audio_dir / key for key in ids]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" ... ({len(missing)} in all)" if len(missing) > 5 else ""
        )
        bad_input(f"--audio-dir {audio_dir}: no audio file for {len(missing)} item(s): {shown}")
    return [str(p) for p in paths]


def register(app: typer.Typer) -> None:
    """Add `multi2cap evaluate` to the top-level app."""
    app.command("evaluate")(evaluate_command)
