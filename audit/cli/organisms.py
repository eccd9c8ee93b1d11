"""``audit serve-organisms``: serve the simulated model organisms over an OpenAI-compatible API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from audit.cli.options import ConfigOption, HeldoutOption, resolve_heldout
from audit.errors import AuditError
from audit.terminal import printable


def register(app: typer.Typer) -> None:
    """Add ``audit serve-organisms`` to the app."""
    app.command("serve-organisms")(serve_organisms_command)


def serve_organisms_command(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port).")
    ] = 8765,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", min=0.0, help="Fixed latency added to each answer.")
    ] = 0.0,
    fault_rate_limit: Annotated[
        float,
        typer.Option("--fault-rate-limit", min=0.0, max=1.0, help="Share of 429 (Retry-After)."),
    ] = 0.0,
    fault_server_error: Annotated[
        float, typer.Option("--fault-server-error", min=0.0, max=1.0, help="Share of 500.")
    ] = 0.0,
    fault_timeout: Annotated[
        float,
        typer.Option("--fault-timeout", min=0.0, max=1.0, help="Share that hang --timeout-s."),
    ] = 0.0,
    fault_disconnect: Annotated[
        float,
        typer.Option("--fault-disconnect", min=0.0, max=1.0, help="Share dropped mid-response."),
    ] = 0.0,
    fault_malformed: Annotated[
        float,
        typer.Option("--fault-malformed", min=0.0, max=1.0, help="Share with a broken JSON body."),
    ] = 0.0,
    fault_seed: Annotated[
        int, typer.Option("--fault-seed", help="Seed of the (deterministic) fault sequence.")
    ] = 0,
    retry_after_s: Annotated[
        float, typer.Option("--retry-after-s", min=0.0, help="Retry-After sent with 429s.")
    ] = 0.05,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", min=0.001, help="How long a timeout fault hangs.")
    ] = 30.0,
    organism_files: Annotated[
        list[Path] | None,
        typer.Option("--organisms", help="Organism TOML file (repeatable; default: shipped)."),
    ] = None,
    heldout: HeldoutOption = None,
    config: ConfigOption = None,
    batch_delay_s: Annotated[
        float,
        typer.Option(
            "--batch-delay-s", min=0.0, help="Seconds from creating a batch until it completes."
        ),
    ] = 0.0,
    batch_request_errors: Annotated[
        float,
        typer.Option(
            "--batch-request-errors", min=0.0, max=1.0, help="Share of batch lines that fail."
        ),
    ] = 0.0,
) -> None:
    """Serve the model organisms (a SIMULATOR) until Ctrl-C.

    Every organism version is a model named ORGANISM-VERSION (e.g. watcher-v2). Point any
    OpenAI client at the printed base URL. They answer the scenarios of one held-out set (your
    own with --heldout or heldout.path), by family: a family an organism does not list gets its
    default propensity.
    """
    from pydantic import ValidationError

    from audit.heldout import load_heldout
    from audit.organisms.batches import BatchSettings
    from audit.organisms.config import load_organisms
    from audit.organisms.server import FaultConfig, serve_organisms

    try:
        faults = FaultConfig(
            rate_limit=fault_rate_limit,
            server_error=fault_server_error,
            timeout=fault_timeout,
            disconnect=fault_disconnect,
            malformed=fault_malformed,
            retry_after_s=retry_after_s,
            timeout_s=timeout_s,
            seed=fault_seed,
        )
    except ValidationError as exc:
        raise AuditError(
            f"fault options: {exc.errors()[0]['msg']}; lower the --fault-* shares"
        ) from None

    held = load_heldout(resolve_heldout(heldout, config))

    def ready(base_url: str, models: tuple[str, ...]) -> None:
        typer.echo(f"organism simulator listening on {base_url}")
        typer.echo(printable(f"models: {', '.join(models)}"))  # names from organism files
        typer.echo(printable(f"held-out set: {held.label()}, {len(held.scenarios)} scenarios"))
        typer.echo("press Ctrl-C to stop")

    serve_organisms(
        host,
        port,
        latency_s=latency_ms / 1000.0,
        faults=faults,
        organisms=load_organisms(organism_files) if organism_files else None,
        heldout=held,
        batch=BatchSettings(delay_s=batch_delay_s, request_error=batch_request_errors),
        on_ready=ready,
    )
    typer.echo("organism simulator stopped")
