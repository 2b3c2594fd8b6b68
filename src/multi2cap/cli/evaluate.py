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

from multi2cap.cli import judge_options as judge
from multi2cap.cli.errors import EXIT_ITEMS_FAILED, bad_input
from multi2cap.cli.vocabulary import metrics_help
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
    metrics: str = typer.Option("offline", "--metrics", "-m", help=metrics_help()),
    output: Path | None = typer.Option(
        None, "--out", "-o", "--output", help="Write scores.json here."
    ),
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
    judge_model: str | None = judge.JUDGE_MODEL,
    base_url: str | None = judge.BASE_URL,
    api_key_env: str = judge.KEY_ENV,
    concurrency: int = judge.CONCURRENCY,
    rpm: float | None = judge.RPM,
    tpm: float | None = judge.TPM,
    timeout: float = judge.TIMEOUT,
    max_retries: int = judge.MAX_RETRIES,
    max_tokens: int = judge.MAX_TOKENS,
    max_tokens_param: judge.MaxTokensParamChoice = judge.MAX_TOKENS_PARAM,
    temperature: float = judge.TEMPERATURE,
    response_format: judge.ResponseFormatChoice = judge.RESPONSE_FORMAT,
    content_retries: int = judge.CONTENT_RETRIES,
    tie_break: judge.TieBreakChoice = judge.TIE_BREAK,
    judge_cache: Path | None = judge.JUDGE_CACHE,
    price_input: float | None = judge.PRICE_IN,
    price_output: float | None = judge.PRICE_OUT,
    reasons: Path | None = judge.REASONS,
    confirm_above: int = judge.CONFIRM_ABOVE,
    yes: bool = judge.YES,
    dry_run: bool = judge.DRY_RUN,
) -> None:
    """Score predicted captions against references (BLEU, ROUGE-L, METEOR, CIDEr-D, ...)."""
    from multi2cap.io import check_output
    from multi2cap.metrics import MetricUnavailableError, MetricWarning, evaluate, resolve_metrics
    from multi2cap.metrics.clair_a import ClairAJudge
    from multi2cap.metrics.files import (
        CaptionFileError,
        align,
        empty_predictions,
        read_predictions,
        read_references,
        scores_document,
        write_details,
        write_per_item,
        write_scores,
    )

    console = Console()
    err = Console(stderr=True)
    for path, option in ((output, "--out"), (per_item, "--per-item")):
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
        status = err.status(f"Scoring {len(ids)} items (METEOR's JVM takes 10-30 s to start)")
        clair_a = None
        if judge_model is not None and "clair_a" in resolve_metrics(metrics):
            clair_a = judge.judge_config(
                judge_model=judge_model, base_url=base_url, api_key_env=api_key_env,
                concurrency=concurrency, rpm=rpm, tpm=tpm, timeout=timeout,
                max_retries=max_retries, max_tokens=max_tokens,
                max_tokens_param=max_tokens_param.value, temperature=temperature,
                response_format=response_format.value, content_retries=content_retries,
                tie_break=tie_break.value, judge_cache=judge_cache, price_input=price_input,
                price_output=price_output, confirm_above=confirm_above, yes=yes,
                progress=lambda done, total: status.update(
                    f"clair_a: {done}/{total} verdicts received"
                ),
            )  # fmt: skip
            estimate = ClairAJudge(clair_a).estimate(candidates, mult_references)
            judge.print_estimate(err, estimate)
            if dry_run:
                raise typer.Exit(0)
            if estimate.requests > confirm_above and not yes:
                bad_input(
                    f"clair_a would send {estimate.requests:,} judge requests, more than "
                    f"--confirm-above {confirm_above}: pass --yes to go ahead"
                )
        elif dry_run:
            bad_input("--dry-run estimates the clair_a judge: request clair_a and --judge-model")
        elif judge_model is not None:
            err.print("[yellow]warning:[/yellow] --judge-model is for clair_a, not requested")
        with status, warnings.catch_warnings():
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
                clair_a=clair_a,
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
    if "clair_a" in result.settings:
        judge.print_summary(err, result.settings["clair_a"])
        where = judge.reasons_path(reasons, output)
        if where is not None and "clair_a" in result.details:
            write_details(where, ids, result, "clair_a")
            console.print(f"clair_a scores and reasons written to {where}")
        failed = result.settings["clair_a"]["failed"]
        if failed:
            err.print(
                f"[yellow]clair_a: {failed} of {len(ids)} items have no verdict[/yellow] "
                + (f"(reasons in {where})" if where is not None else "(pass --reasons FILE)")
            )
            raise typer.Exit(EXIT_ITEMS_FAILED)


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
