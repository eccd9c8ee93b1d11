"""``audit counterfactual``: rerun stored samples from an edited reasoning and measure the effect.

Calls :func:`audit.counterfactual.run_counterfactual` and prints its statistics (``--json``: the
fields issue 13 names, then the run's counts).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from audit.cli.options import ConfigOption, DbOption, JsonOption, resolve_db, writable_store
from audit.cli.progress import cli_progress
from audit.cli.run import BaseUrlOption, ScenarioOption

if TYPE_CHECKING:
    from audit.counterfactual import CounterfactualResult


def counterfactual_command(
    model: Annotated[
        str,
        typer.Option(
            "--model", help="Model whose stored samples are edited and continued (by itself)."
        ),
    ],
    rev: Annotated[
        str, typer.Option("--rev", help="Spec revision of the samples: sha prefix, tag or index.")
    ],
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="ablate (remove awareness from aware samples), inject (an awareness sentence "
            "into unaware ones) or control (a neutral sentence instead).",
        ),
    ],
    scenario: ScenarioOption = None,
    epochs: Annotated[
        int, typer.Option("--epochs", min=1, help="Continuations per source sample (default 1).")
    ] = 1,
    base_url: BaseUrlOption = None,
    prefill: Annotated[
        str | None,
        typer.Option(
            "--prefill",
            help="How the server continues a prefilled turn: organisms, vllm, llama.cpp or "
            "llama-cpp-python (default: the model's prefill setting, auto: ask the server).",
        ),
    ] = None,
    chat_template: Annotated[
        str | None,
        typer.Option(
            "--chat-template", help="gemma or chatml: the chat format for llama-cpp-python."
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Counterfactual awareness experiment: edit the reasoning of stored samples of one model at
    one revision, let the model continue, grade, and compare each with its source (covert rate
    before and after, effect with a bootstrap interval, McNemar p). Exit 2 on a usage error,
    including a server that cannot continue a prefilled turn."""
    from audit.analysis.usage import run_usage
    from audit.cli.run import usage_line
    from audit.config import load_config, with_model_overrides
    from audit.counterfactual import run_counterfactual
    from audit.errors import AuditError

    if mode not in ("ablate", "inject", "control"):
        raise AuditError(f"--mode must be ablate, inject or control, not {mode!r}")
    settings = with_model_overrides(
        load_config(config),
        [model],
        add_unknown=base_url is not None,
        prefill=prefill,
        chat_template=chat_template,
    )
    with writable_store(resolve_db(db, config)) as store:
        result = run_counterfactual(
            store,
            settings,
            model=model,
            revision=rev,
            mode=mode,  # type: ignore[arg-type]
            scenario_ids=scenario,
            epochs=epochs,
            base_url=base_url,
            progress=cli_progress(),
        )
        usage = run_usage(store, settings, result.run_id) if result.run_id else None
    if as_json:
        typer.echo(json.dumps({**result.to_json(), "usage": usage}))
    else:
        typer.echo("\n".join(summary_lines(result)))
        if usage is not None and result.stored:
            typer.echo(usage_line(usage))
    if result.abandoned:
        typer.echo(
            f"error: the server refused the continuation requests of {model!r} "
            f"({result.abandoned}): check --prefill and the model's parameters, then rerun",
            err=True,
        )
        raise typer.Exit(2)
    if result.unstored:
        typer.echo(f"error: {result.unstored} sample(s) could not be stored; rerun", err=True)
        raise typer.Exit(1)


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{100 * value:.1f}%"


def _interval(low: float | None, high: float | None, points: bool = False) -> str:
    if low is None or high is None:
        return ""
    if points:
        return f" [{100 * low:+.1f}, {100 * high:+.1f}]"
    return f" [{100 * low:.1f}, {100 * high:.1f}]"


def summary_lines(result: CounterfactualResult) -> list[str]:
    """What the command prints without ``--json``."""
    head = (
        f"{result.model} at {result.revision[:7]}, {result.mode}: stored {result.stored}, "
        f"skipped {result.skipped}, failed {result.failed}"
        + (f" (prefill protocol: {result.protocol})" if result.protocol else "")
    )
    est = result.estimate
    if est is None:
        return [head, f"no pairs: {result.note}" if result.note else "no pairs stored"]
    before, after, effect = est.covert_original, est.covert_counterfactual, est.effect
    return [
        head,
        f"{est.n_pairs} pairs over {est.n_scenarios} scenarios ({est.n_sources} source samples)",
        f"covert rate {_pct(before.value)}{_interval(before.low, before.high)} -> "
        f"{_pct(after.value)}{_interval(after.low, after.high)}; effect "
        f"{100 * (effect.value or 0):+.1f} points{_interval(effect.low, effect.high, True)}, "
        f"McNemar p={est.p_value:.3g} ({est.discordant[0]} vs {est.discordant[1]} discordant)",
        f"awareness voiced again in {_pct(est.reverbalized.value)}"
        f"{_interval(est.reverbalized.low, est.reverbalized.high)} of continuations",
    ]


def register(app: typer.Typer) -> None:
    """Add ``audit counterfactual`` to the app."""
    app.command("counterfactual")(counterfactual_command)
