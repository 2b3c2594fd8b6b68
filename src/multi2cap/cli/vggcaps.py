"""`multi2cap vggcaps build|extract|caption|split`: parsing only; the work is in
`multi2cap.vggcaps.pipeline` and its stages."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from multi2cap.fsnames import printable
from multi2cap.llm_client.prices import dollars
from multi2cap.llm_client.settings import BackendConfigError, MaxTokensParam
from multi2cap.llm_client.transport import DEFAULT_MAX_REPLY_BYTES
from multi2cap.media.spectrogram_image import FrequencyAxis, SpectrogramImageSettings
from multi2cap.vggcaps.backends import ImageDetail, OpenAISettings
from multi2cap.vggcaps.catalog import CatalogError
from multi2cap.vggcaps.cost import GPT4O_INPUT_PER_M, GPT4O_OUTPUT_PER_M, Prices
from multi2cap.vggcaps.pipeline import build_vggcaps
from multi2cap.vggcaps.prompts import prompt_versions
from multi2cap.vggcaps.records import BackendName, BatchSettings, BuildConfig, BuildSummary
from multi2cap.vggcaps.split import parse_shard
from multi2cap.vggcaps.store import StoreWriteError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # paths stay whole, copyable

sub = typer.Typer(
    help="Build a VggCaps-style dataset: extract media, caption with a vision LLM (two stages), "
    "post-process, split 1 % test, export.",
    no_args_is_help=True,
)

VIDEOS = typer.Option(
    None, "--videos", help="Folder of clips ({ytid}_{start:06d}.mp4 or {id}.<ext>)."
)
CATEGORIES = typer.Option(
    None, "--categories", help="VGGSound's header-less CSV, or a CSV with header id,category."
)
OUT = typer.Option(..., "--out", "-o", help="Output folder (resumable: rerun the same command).")
BACKEND = typer.Option(
    "openai", "--backend", help="LLM backend (`offline` is a rule-based stand-in, not an LLM)."
)
BASE_URL = typer.Option(
    None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1."
)
MODEL = typer.Option("gpt-4o", "--model", help="Model name sent to the endpoint.")
KEY_ENV = typer.Option(
    "OPENAI_API_KEY", "--api-key-env", help="Name of the variable holding the key."
)
CONCURRENCY = typer.Option(16, "--concurrency", min=1, help="Requests in flight.")
RPM = typer.Option(None, "--rpm", help="Requests per minute limit (> 0; unset: no limit).")
TPM = typer.Option(
    None, "--tpm", help="Tokens per minute limit (> 0, estimated before sending; unset: none)."
)
TIMEOUT = typer.Option(
    60.0,
    "--timeout",
    help="Seconds one request may take in all (connect, first byte and the whole reply); > 0.",
)
MAX_REPLY = typer.Option(
    DEFAULT_MAX_REPLY_BYTES,
    "--max-reply-bytes",
    help="Most bytes read from one reply; more is a failed try, retried (>= 1024).",
)
MAX_RETRIES = typer.Option(
    6, "--max-retries", min=0, help="Retries per request (429/5xx/timeouts)."
)
CONTENT_RETRIES = typer.Option(2, "--content-retries", min=0, help="Re-asks per rejected output.")
DETAIL = typer.Option("low", "--image-detail", help="OpenAI's image detail level.")
TEMPERATURE = typer.Option(None, "--temperature", help=">= 0; omitted from requests unless set.")
MAX_TOKENS = typer.Option(300, "--max-tokens", help="Reply length cap in tokens (>= 1).")
MAX_TOKENS_PARAM = typer.Option(
    "max_tokens",
    "--max-tokens-param",
    help="Request field of the reply cap (o-series models: max_completion_tokens).",
)
PRICE_IN = typer.Option(GPT4O_INPUT_PER_M, "--price-input", help="$ per 1M input tokens (>= 0).")
PRICE_OUT = typer.Option(
    GPT4O_OUTPUT_PER_M, "--price-output", help="$ per 1M output tokens (>= 0)."
)
PROMPT_VERSION = typer.Option(
    "v1",
    "--prompt-version",
    help=f"Prompt version shipped with the package ({', '.join(prompt_versions())}).",
)
SHARD = typer.Option("0/1", "--shard", help="i/N: this machine's share, by stable hash of the id.")
LIMIT = typer.Option(None, "--limit", min=1, help="At most N clips (in id order).")
WORKERS = typer.Option(None, "--workers", min=1, help="Extraction processes (default: all cores).")
POLL = typer.Option(60.0, "--poll-interval", help="Seconds between Batch API status polls.")
SPLIT_SEED = typer.Option(0, "--split-seed", help="Seed of the 1 % test split hash.")
TEST_FRACTION = typer.Option(
    0.01, "--test-fraction", help="Share of clips in the test split, in [0, 1]."
)
NO_PROGRESS = typer.Option(False, "--no-progress", help="Hide the progress bar.")
SPEC_SIZE = typer.Option("800x400", "--spectrogram-size", help="Spectrogram image WIDTHxHEIGHT.")
COLORMAP = typer.Option("magma", "--colormap", help="Matplotlib colour map of the spectrogram.")
FREQ_AXIS = typer.Option("mel", "--frequency-axis", help="Frequency axis of the spectrogram image.")


def _spectrogram(size: str, colormap: str, axis: FrequencyAxis) -> SpectrogramImageSettings:
    try:
        width, height = (int(v) for v in size.lower().split("x"))
        return SpectrogramImageSettings(
            width=width,
            height=height,
            colormap=colormap,
            frequency_axis=axis,
        )
    except ValueError as err:
        raise typer.BadParameter(f"spectrogram settings: {err}") from err


def _run(config_args: dict, steps: tuple[str, ...], dry_run: bool = False) -> None:
    try:
        shard = parse_shard(config_args.pop("shard"))
        workers = config_args.pop("workers")
        settings = OpenAISettings(**config_args.pop("openai"))
        prices = Prices(
            input_per_m=config_args.pop("price_input"), output_per_m=config_args.pop("price_output")
        )
        batch = BatchSettings(poll_interval_s=config_args.pop("poll_interval"))
        config = BuildConfig(
            openai=settings,
            prices=prices,
            batch=batch,
            shard=shard,
            steps=steps,
            dry_run=dry_run,
            **({"workers": workers} if workers else {}),
            **config_args,
        )
        summary = build_vggcaps(config)
    except (
        CatalogError,
        BackendConfigError,
        ValueError,
        FileNotFoundError,
        StoreWriteError,
    ) as err:
        err_console.print(f"[red]error:[/red] {escape(printable(err))}")
        raise typer.Exit(2) from None
    _print_summary(summary, dry_run)
    raise typer.Exit(summary.exit_code)


def _print_summary(summary: BuildSummary, dry_run: bool) -> None:
    table = Table(title="VggCaps dry run" if dry_run else "VggCaps build", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    rows: list[tuple[str, str]] = [
        ("clips selected", str(summary.selected)),
        ("videos missing", str(summary.missing_videos)),
    ]
    if dry_run and summary.estimate is not None:
        est = summary.estimate
        rows += [
            ("requests", f"{est.requests:,}"),
            ("prompt tokens", f"{est.prompt_tokens:,}"),
            ("completion tokens", f"{est.completion_tokens:,}"),
            ("cost", dollars(est.cost_usd)),
            ("time", f"{est.hours:.1f} h" if est.hours >= 1 else f"{est.hours * 60:.1f} min"),
        ]
    else:
        rows += [
            ("extracted", str(summary.extracted)),
            ("captioned", str(summary.captioned)),
            ("already done", str(summary.skipped_done)),
            ("failed", str(summary.failed)),
            ("dataset size (test)", f"{summary.dataset_size} ({summary.test_size})"),
            ("backend / model", f"{summary.backend} / {summary.model}"),
            ("prompt version", summary.prompt_version),
            ("requests / retries", f"{summary.requests} / {summary.retries}"),
            ("tokens in / out", f"{summary.prompt_tokens:,} / {summary.completion_tokens:,}"),
            ("cost", dollars(summary.cost_usd)),
            ("time", f"{summary.elapsed_s:.1f} s"),
        ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if dry_run:
        console.print(
            "Estimate only: nothing was extracted and no API was called (about 4 "
            "characters per token, 60 reply tokens per request; see docs/vggcaps.md)."
        )
    if summary.failed:
        console.print(
            f"[yellow]{summary.failed} clips failed; reasons in "
            f"{Path(summary.out) / 'failures.jsonl'}[/yellow]"
        )


def _common(
    out: Path,
    backend: BackendName,
    base_url: str | None,
    model: str,
    api_key_env: str,
    concurrency: int,
    rpm: float | None,
    tpm: float | None,
    timeout: float,
    max_retries: int,
    content_retries: int,
    image_detail: ImageDetail,
    temperature: float | None,
    max_tokens: int,
    max_tokens_param: MaxTokensParam,
    price_input: float,
    price_output: float,
    prompt_version: str,
    poll_interval: float,
    no_progress: bool,
    max_reply_bytes: int,
) -> dict:
    return {
        "out": out,
        "backend": backend,
        "content_retries": content_retries,
        "prompt_version": prompt_version,
        "price_input": price_input,
        "price_output": price_output,
        "poll_interval": poll_interval,
        "progress": not no_progress,
        "openai": {
            "base_url": base_url,
            "model": model,
            "api_key_env": api_key_env,
            "concurrency": concurrency,
            "rpm": rpm,
            "tpm": tpm,
            "timeout_s": timeout,
            "max_retries": max_retries,
            "image_detail": image_detail,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "max_tokens_param": max_tokens_param,
            "max_reply_bytes": max_reply_bytes,
        },
    }


@sub.command("build")
def build(
    videos: Path = VIDEOS,
    categories: Path = CATEGORIES,
    out: Path = OUT,
    backend: BackendName = BACKEND,
    base_url: str | None = BASE_URL,
    model: str = MODEL,
    api_key_env: str = KEY_ENV,
    concurrency: int = CONCURRENCY,
    rpm: float | None = RPM,
    tpm: float | None = TPM,
    timeout: float = TIMEOUT,
    max_retries: int = MAX_RETRIES,
    content_retries: int = CONTENT_RETRIES,
    image_detail: ImageDetail = DETAIL,
    temperature: float | None = TEMPERATURE,
    max_tokens: int = MAX_TOKENS,
    max_tokens_param: MaxTokensParam = MAX_TOKENS_PARAM,
    max_reply_bytes: int = MAX_REPLY,
    price_input: float = PRICE_IN,
    price_output: float = PRICE_OUT,
    prompt_version: str = PROMPT_VERSION,
    shard: str = SHARD,
    limit: int | None = LIMIT,
    workers: int | None = WORKERS,
    poll_interval: float = POLL,
    split_seed: int = SPLIT_SEED,
    test_fraction: float = TEST_FRACTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate cost and time; call nothing."),
    spectrogram_size: str = SPEC_SIZE,
    colormap: str = COLORMAP,
    frequency_axis: FrequencyAxis = FREQ_AXIS,
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Extract, caption (stage 1 + 2), post-process, split and export; rerun to resume."""
    args = _common(
        out,
        backend,
        base_url,
        model,
        api_key_env,
        concurrency,
        rpm,
        tpm,
        timeout,
        max_retries,
        content_retries,
        image_detail,
        temperature,
        max_tokens,
        max_tokens_param,
        price_input,
        price_output,
        prompt_version,
        poll_interval,
        no_progress,
        max_reply_bytes,
    )
    args.update(
        videos=videos,
        categories=categories,
        shard=shard,
        limit=limit,
        workers=workers,
        split_seed=split_seed,
        test_fraction=test_fraction,
        spectrogram=_spectrogram(spectrogram_size, colormap, frequency_axis),
    )
    _run(args, ("extract", "caption", "split"), dry_run=dry_run)


@sub.command("extract")
def extract(
    videos: Path = VIDEOS,
    categories: Path = CATEGORIES,
    out: Path = OUT,
    shard: str = SHARD,
    limit: int | None = LIMIT,
    workers: int | None = WORKERS,
    spectrogram_size: str = SPEC_SIZE,
    colormap: str = COLORMAP,
    frequency_axis: FrequencyAxis = FREQ_AXIS,
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Write each clip's frame (JPEG), 16-kHz audio (FLAC) and mel-spectrogram image (PNG)."""
    args = {
        "out": out,
        "spectrogram": _spectrogram(spectrogram_size, colormap, frequency_axis),
        "videos": videos,
        "categories": categories,
        "shard": shard,
        "limit": limit,
        "workers": workers,
        "progress": not no_progress,
        "openai": {},
        "price_input": GPT4O_INPUT_PER_M,
        "price_output": GPT4O_OUTPUT_PER_M,
        "poll_interval": 60.0,
    }
    _run(args, ("extract",))


@sub.command("caption")
def caption(
    out: Path = OUT,
    backend: BackendName = BACKEND,
    base_url: str | None = BASE_URL,
    model: str = MODEL,
    api_key_env: str = KEY_ENV,
    concurrency: int = CONCURRENCY,
    rpm: float | None = RPM,
    tpm: float | None = TPM,
    timeout: float = TIMEOUT,
    max_retries: int = MAX_RETRIES,
    content_retries: int = CONTENT_RETRIES,
    image_detail: ImageDetail = DETAIL,
    temperature: float | None = TEMPERATURE,
    max_tokens: int = MAX_TOKENS,
    max_tokens_param: MaxTokensParam = MAX_TOKENS_PARAM,
    max_reply_bytes: int = MAX_REPLY,
    price_input: float = PRICE_IN,
    price_output: float = PRICE_OUT,
    prompt_version: str = PROMPT_VERSION,
    limit: int | None = LIMIT,
    poll_interval: float = POLL,
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Caption the extracted clips of --out (stage 1 and 2) that have no caption yet."""
    args = _common(
        out,
        backend,
        base_url,
        model,
        api_key_env,
        concurrency,
        rpm,
        tpm,
        timeout,
        max_retries,
        content_retries,
        image_detail,
        temperature,
        max_tokens,
        max_tokens_param,
        price_input,
        price_output,
        prompt_version,
        poll_interval,
        no_progress,
        max_reply_bytes,
    )
    args.update(shard="0/1", limit=limit, workers=None)
    _run(args, ("caption",))


@sub.command("split")
def split(
    out: Path = OUT,
    split_seed: int = SPLIT_SEED,
    test_fraction: float = TEST_FRACTION,
) -> None:
    """Assign the 1 % test split and write vggcaps.jsonl, manifest.jsonl, vggcaps.parquet and
    failures.jsonl from the work files of --out."""
    args = {
        "out": out,
        "split_seed": split_seed,
        "test_fraction": test_fraction,
        "shard": "0/1",
        "workers": None,
        "openai": {},
        "price_input": GPT4O_INPUT_PER_M,
        "price_output": GPT4O_OUTPUT_PER_M,
        "poll_interval": 60.0,
        "progress": False,
    }
    _run(args, ("split",))


def register(app: typer.Typer) -> None:
    """Add `multi2cap vggcaps ...` to the top-level app."""
    app.add_typer(sub, name="vggcaps")
