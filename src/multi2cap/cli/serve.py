"""`multi2cap serve` and `multi2cap push`: serve a checkpoint over HTTP; publish one to the hub
(parsing and printing only; the work is in `multi2cap.serve` and `multi2cap.model.hub`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer
from rich.console import Console

from multi2cap.cli.backbone_option import BACKBONE_OPTION, backbone_overrides
from multi2cap.cli.caption import Rerank, clap_reranker
from multi2cap.cli.connection_options import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS
from multi2cap.cli.errors import bad_input
from multi2cap.metrics.clap import CLAP_MODEL_ENV


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(
    checkpoint: str = typer.Option(
        ...,
        "--checkpoint",
        "-c",
        help="Checkpoint folder, or a hub id org/name (org/name@revision for a revision).",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind; a non-loopback one prints a warning."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="Clips per model call."),
    max_wait_ms: float = typer.Option(
        20.0, "--max-wait-ms", min=0, help="Longest a clip waits for companions (ms)."
    ),
    max_queue: int = typer.Option(
        256, "--max-queue", min=1, help="Clips held at once; beyond: 429 + Retry-After."
    ),
    max_upload_mb: float = typer.Option(50.0, "--max-upload-mb", min=0.001, help="Body limit."),
    max_duration_s: float = typer.Option(
        600.0, "--max-duration-s", min=0.1, help="Longest clip accepted (s)."
    ),
    header_timeout_s: float = HEADER_TIMEOUT,
    body_timeout_s: float = BODY_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda:0."),
    backbone: list[str] | None = BACKBONE_OPTION,
    rerank: Rerank = typer.Option(
        "none",
        "--rerank",
        help="`none` or `clap`: every caption is a CLAP model's choice among --candidates "
        "hypotheses of one beam search.",
    ),
    clap_model: str | None = typer.Option(
        None, "--clap-model", help=f"CLAP model for --rerank clap (env {CLAP_MODEL_ENV})."
    ),
    candidates: int | None = typer.Option(
        None, "--candidates", min=1, help="Beam hypotheses per clip for --rerank (default 8)."
    ),
    sampled: int | None = typer.Option(
        None, "--sampled", min=0, help="Sampled candidates added per clip for --rerank (default 0)."
    ),
) -> None:
    """Serve a checkpoint: POST /v1/captions, the OpenAI-style /v1/audio/transcriptions, a
    page to try it at /, docs at /docs."""
    from multi2cap.model.card import checkpoint_summary
    from multi2cap.model.hub import resolve_checkpoint
    from multi2cap.model.multi2cap import Multi2Cap
    from multi2cap.serve.limits import ServeSettings

    err = Console(stderr=True)
    if rerank.value == "none" and (clap_model, candidates, sampled) != (None, None, None):
        bad_input("--clap-model, --candidates and --sampled apply with --rerank clap only")
    reranker = None
    if rerank.value == "clap":
        reranker = clap_reranker(clap_model, candidates, sampled, None, device)
    settings = ServeSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max(max_queue, max_batch),
        max_upload_mb=max_upload_mb,
        max_duration_s=max_duration_s,
    )
    try:
        backbones = backbone_overrides(backbone)
        folder = resolve_checkpoint(checkpoint)
        model = Multi2Cap.from_pretrained(folder, device=device, backbones=backbones)
        summary = checkpoint_summary(folder)
    except (FileNotFoundError, ValueError, OSError) as error:
        bad_input(str(error))
    if not is_loopback(host):
        err.print(
            f"[yellow]warning:[/yellow] binding {host}: the API has no authentication; anyone "
            "who can reach this address can use it. Put it behind a proxy with authentication, "
            "or keep the default 127.0.0.1."
        )
    import uvicorn

    from multi2cap.serve.app import create_app
    from multi2cap.webserver import ConnectionLimits, uvicorn_options

    model_id = checkpoint if not Path(checkpoint).exists() else Path(checkpoint).resolve().name
    app = create_app(
        model, model_id=model_id, summary=summary, settings=settings, reranker=reranker
    )
    err.print(f"serving {model_id} on http://{host}:{port} (page at /, API docs at /docs)")
    limits = ConnectionLimits(
        header_timeout_s=header_timeout_s,
        body_timeout_s=body_timeout_s,
        max_connections=max_connections,
    )
    uvicorn.run(
        app, host=host, port=port, log_level="info", access_log=False, **uvicorn_options(limits)
    )


def push_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder (config.yaml ...)."),
    repo_id: str = typer.Argument(..., help="Hub repository, org/name."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    to_folder: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        "--to-folder",
        help="Write what would be uploaded here instead of uploading.",
    ),
    message: str = typer.Option("Upload Multi2Cap checkpoint", "--message", "-m"),
    bundle: bool = typer.Option(
        False,
        "--bundle-backbones",
        help="Copy every backbone named by a local folder into the repository (backbones/ROLE/"
        "NAME/, safetensors and config/tokenizer files), so the repo id alone loads it.",
    ),
    map_backbone: list[str] | None = typer.Option(
        None,
        "--map-backbone",
        metavar="ROLE=ORG/NAME",
        help="Publish a local backbone as the hub id it came from (repeatable); ROLE is one of "
        "audio, vision, llm.",
    ),
    backbone: list[str] | None = BACKBONE_OPTION,
) -> None:
    """Upload a checkpoint to the Hugging Face hub with a generated model card (token from
    HF_TOKEN or `hf auth login`; HF_ENDPOINT picks another hub). A backbone named by a folder of
    this machine is refused unless it is bundled (--bundle-backbones) or mapped to its hub id
    (--map-backbone)."""
    from multi2cap.model.backbones import parse_backbone_overrides
    from multi2cap.model.hub import push_checkpoint, stage_hub_repo

    console = Console()
    try:
        options = dict(
            bundle=bundle,
            hub_ids=parse_backbone_overrides(map_backbone or [], "--map-backbone"),
            overrides=backbone_overrides(backbone),
        )
        if to_folder is not None:
            stage_hub_repo(checkpoint, repo_id, to_folder, **options)
            console.print(f"wrote the repository contents for {repo_id} to {to_folder}")
            return
        url = push_checkpoint(checkpoint, repo_id, private=private, message=message, **options)
    except (FileNotFoundError, ValueError, OSError) as error:
        bad_input(str(error))
    console.print(f"pushed {checkpoint} to {url}")


def register(app: typer.Typer) -> None:
    """Add `multi2cap serve` and `multi2cap push` to the top-level app."""
    app.command("serve")(serve_command)
    app.command("push")(push_command)
