"""``audit run`` and ``audit sweep``: run the held-out set against spec revisions and models.

Both commands call :func:`audit.runner.run_matrix` (or :func:`audit.runner.plan_run` with
``--dry-run``). A rich progress bar shows done/total, rate and errors on a terminal; otherwise
only the one-line summary is printed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from audit.cli.options import (
    ConfigOption,
    DbOption,
    HeldoutOption,
    JsonOption,
    heldout_override,
    resolve_db,
    writable_store,
)
from audit.cli.progress import batch_progress, cli_progress
from audit.terminal import printable

if TYPE_CHECKING:
    from audit.analysis.failures import FailureReport
    from audit.analysis.usage import PlanEstimate
    from audit.config import AuditConfig
    from audit.runner import RunSummary
    from audit.store import Store

EpochsOption = Annotated[
    int | None, typer.Option("--epochs", min=1, help="Repetitions per cell (default: run.epochs).")
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="Send every request to this OpenAI-compatible endpoint."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the matrix and the number of calls; call nothing.")
]
ScenarioOption = Annotated[
    list[str] | None,
    typer.Option("--scenario", help="Scenario id to run (repeatable; default: the whole set)."),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=64,
        help="Runner processes (default: run.workers, 1); >1 only helps against fast servers.",
    ),
]
TwinsOption = Annotated[
    bool | None,
    typer.Option(
        "--twins/--no-twins",
        help="Run the sealed twins with the public scenarios (default: run.twins, on); the "
        "twin test of spec patching needs them.",
        show_default=False,
    ),
]
MaxTurnsOption = Annotated[
    int | None, typer.Option("--max-turns", min=1, help="Turn limit per sample (run.max_turns).")
]
BatchOption = Annotated[
    bool,
    typer.Option(
        "--batch",
        help="Run in waves through the server's Batch API (files.create, batches.create), "
        "polling until done; resumable. See [batch] in audit.toml.",
    ),
]


@dataclass(frozen=True)
class ModelFlags:
    """Flags that override the settings of every model a command runs (None: keep config)."""

    api_key_env: str | None = None
    version: str | None = None
    release_date: str | None = None
    spec_placement: str | None = None
    concurrency: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    reasoning_effort: str | None = None

    def overrides(self) -> dict[str, Any]:
        """As dotted paths of :class:`audit.config.ModelConfig`."""
        return {
            "api_key_env": self.api_key_env,
            "version": self.version,
            "release_date": self.release_date,
            "spec_placement": self.spec_placement,
            "concurrency": self.concurrency,
            "params.temperature": self.temperature,
            "params.max_tokens": self.max_tokens,
            "params.max_completion_tokens": self.max_completion_tokens,
            "params.reasoning_effort": self.reasoning_effort,
        }


ApiKeyEnvOption = Annotated[
    str | None,
    typer.Option("--api-key-env", help="NAME of the environment variable holding the key."),
]
ModelVersionOption = Annotated[
    str | None, typer.Option("--model-version", help="Version label stored with the samples.")
]
ReleaseDateOption = Annotated[
    str | None, typer.Option("--release-date", help="Model release date (YYYY-MM-DD).")
]
SpecPlacementOption = Annotated[
    str | None,
    typer.Option(
        "--spec-placement", help="Where the spec goes: system, developer or none (trained on it)."
    ),
]
ConcurrencyOption = Annotated[
    int | None, typer.Option("--concurrency", min=1, help="Requests in flight per model.")
]
TemperatureOption = Annotated[
    float | None, typer.Option("--temperature", min=0.0, help="Sampling temperature.")
]
MaxTokensOption = Annotated[
    int | None, typer.Option("--max-tokens", min=1, help="max_tokens sent with each request.")
]
MaxCompletionTokensOption = Annotated[
    int | None,
    typer.Option(
        "--max-completion-tokens",
        min=1,
        help="Sent instead of max_tokens (OpenAI reasoning models need it).",
    ),
]
ReasoningEffortOption = Annotated[
    str | None,
    typer.Option("--reasoning-effort", help="minimal, low, medium or high (reasoning models)."),
]


def _execute(
    *,
    command: str,
    models: list[str] | None,
    revisions: list[str] | None,
    scenarios: list[str] | None,
    epochs: int | None,
    workers: int | None,
    max_turns: int | None,
    twins: bool | None,
    base_url: str | None,
    model_flags: ModelFlags,
    heldout: Path | None,
    db: Path | None,
    config_path: Path | None,
    dry_run: bool,
    as_json: bool,
    batch: bool = False,
) -> None:
    from audit.analysis.usage import estimate_plan
    from audit.config import load_config, with_model_overrides, with_overrides
    from audit.runner import plan_run, run_matrix

    config = with_overrides(
        load_config(config_path),
        **{
            "run.epochs": epochs,
            "run.workers": workers,
            "run.max_turns": max_turns,
            "run.twins": twins,
            **heldout_override(heldout),
        },
    )
    # A model missing from the config can still be run when --base-url says where it is.
    config = with_model_overrides(
        config, models, add_unknown=base_url is not None, **model_flags.overrides()
    )
    with writable_store(resolve_db(db, config_path)) as store:
        if dry_run:
            plan = plan_run(
                store, config, models=models, revisions=revisions, scenario_ids=scenarios
            )
            estimate = estimate_plan(store, config, plan, batch=batch)
            _print_plan(plan.describe(), estimate, as_json)
            return
        summary: RunSummary
        if batch:
            from audit.runner.batch import run_batch

            summary = run_batch(
                store,
                config,
                models=models,
                revisions=revisions,
                scenario_ids=scenarios,
                progress=batch_progress(),
                base_url=base_url,
                command=command,
            )
        else:
            summary = run_matrix(
                store,
                config,
                models=models,
                revisions=revisions,
                scenario_ids=scenarios,
                progress=cli_progress(),
                base_url=base_url,
                command=command,
            )
        failures, usage = _outcome(store, config, summary)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    **asdict(summary),
                    "ok": summary.ok and not failures.exceeded,
                    "failures": failures.to_json(),
                    "usage": usage,
                }
            )
        )
    else:
        typer.echo(summary.line())
        if summary.stored and usage is not None:
            typer.echo(usage_line(usage))
    _report_unfinished(getattr(summary, "unfinished", 0), summary.abandoned)
    for model, error in summary.abandoned.items():  # the error is the server's text
        message = (
            f"error: model {model!r} refused its first requests ({error}): fix its name, key "
            "variable or parameters, then rerun (its other samples were not run)"
        )
        typer.echo(printable(message, multiline=False), err=True)
    if summary.abandoned and summary.ok:
        raise typer.Exit(2)
    if not summary.ok:
        message = (
            f"error: {summary.unstored} sample(s) could not be stored ({summary.store_error}); "
            "rerun to redo them"
        )
        typer.echo(printable(message, multiline=False), err=True)
        raise typer.Exit(1)
    if failures.exceeded:
        typer.echo(printable(f"error: {failures.message()}", multiline=False), err=True)
        raise typer.Exit(1)


def _outcome(
    store: Store, config: AuditConfig, summary: RunSummary
) -> tuple[FailureReport, dict[str, Any] | None]:
    """The run's failures by kind and its token totals, read back from the database; when the
    database cannot be read (rows could not be stored either), the counts the run kept."""
    import duckdb

    from audit.analysis.failures import FailureReport, failure_report
    from audit.analysis.usage import run_usage

    attempted, limit = summary.stored + summary.failed, config.run.max_failed_share
    try:
        failures = failure_report(store, summary.run_id, attempted=attempted, limit=limit)
        return failures, run_usage(store, config, summary.run_id)
    except duckdb.Error:
        return FailureReport(attempted, summary.failed, (), limit), None


def usage_line(usage: dict[str, Any]) -> str:
    """The tokens and cost of a run's ``usage`` (as :func:`audit.analysis.usage.run_usage`
    gives it) in one line."""
    total = usage["total"]
    text = f"tokens: prompt {total['prompt_tokens']:,}, completion {total['completion_tokens']:,}"
    if total["reasoning_tokens"] is not None:
        text += f" (reasoning {total['reasoning_tokens']:,})"
    cost = " + ".join(f"{v:,.4g} {c}" for c, v in total["cost"].items())
    if cost:
        text += f"; cost {cost}"
    if total["unpriced"]:
        text += f"; {total['unpriced']} samples without a price (set [models.price])"
    return text


def _report_unfinished(unfinished: int, abandoned: dict[str, str]) -> None:
    """Samples a batch run left neither stored nor failed, other than a given-up model's."""
    if unfinished and not abandoned:
        typer.echo(
            f"error: {unfinished} sample(s) wait on exported wave files: import the engine's "
            "outputs (audit batch import) or cancel them (audit batch cancel --all), then rerun",
            err=True,
        )
        raise typer.Exit(2)


def _print_plan(described: dict, estimate: PlanEstimate | None, as_json: bool) -> None:
    if as_json:
        forecast = None if estimate is None else estimate.to_json()
        typer.echo(json.dumps({**described, "estimate": forecast}))
        return
    text = (
        f"models     {', '.join(described['models'])}\n"
        f"revisions  {len(described['revisions'])}: {' '.join(described['revisions'])}\n"
        f"scenarios  {described['scenarios']} (with their conditions; "
        f"{described['sealed_twins']} of them sealed twins)\n"
        f"epochs     {described['epochs']}\n"
        f"matrix     {described['matrix_cells']} cells, {described['distinct_samples']} distinct "
        f"samples, {described['already_stored']} already stored\n"
        f"to run     {described['to_run']} samples, at most {described['max_calls']} calls"
    )
    typer.echo(printable(text))  # model names come from the config and flags
    typer.echo(_estimate_lines(estimate, described["to_run"]))


def _estimate_lines(estimate: PlanEstimate | None, to_run: int) -> str:
    if not to_run:
        return "estimate   nothing to run"
    if estimate is None or not estimate.estimated:
        return "estimate   none: no stored samples of these scenarios to average tokens over"
    forecast = estimate.to_json()
    tokens = (
        f"estimate   prompt {forecast['prompt_tokens']:,}, completion "
        f"{forecast['completion_tokens']:,} tokens"
    )
    if forecast["reasoning_tokens"] is not None:
        tokens += f" (reasoning {forecast['reasoning_tokens']:,})"
    basis = (
        f"           from stored means per scenario: {estimate.from_model} samples by the same "
        f"model, {estimate.from_other_models} by other models, "
        f"{estimate.pending - estimate.estimated} without any"
    )
    cost = " + ".join(f"{v:,.4g} {c}" for c, v in forecast["cost"].items())
    priced = f"cost       {cost or 'unknown'}" + (
        f" ({estimate.unpriced} samples without a price)" if estimate.unpriced else ""
    )
    return "\n".join((tokens, basis, priced))


def run_command(
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            help="Model name (repeatable): a configured one, or any name with --base-url.",
        ),
    ],
    rev: Annotated[
        list[str] | None,
        typer.Option(
            "--rev",
            help="Spec revision: sha prefix, tag, index, or a range A..B (repeatable; "
            "default: all).",
        ),
    ] = None,
    epochs: EpochsOption = None,
    scenario: ScenarioOption = None,
    base_url: BaseUrlOption = None,
    workers: WorkersOption = None,
    max_turns: MaxTurnsOption = None,
    twins: TwinsOption = None,
    api_key_env: ApiKeyEnvOption = None,
    model_version: ModelVersionOption = None,
    release_date: ReleaseDateOption = None,
    spec_placement: SpecPlacementOption = None,
    concurrency: ConcurrencyOption = None,
    temperature: TemperatureOption = None,
    max_tokens: MaxTokensOption = None,
    max_completion_tokens: MaxCompletionTokensOption = None,
    reasoning_effort: ReasoningEffortOption = None,
    batch: BatchOption = False,
    dry_run: DryRunOption = False,
    heldout: HeldoutOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the held-out set for one model against one or more spec revisions."""
    _execute(
        command="run",
        models=model,
        revisions=rev,
        scenarios=scenario,
        epochs=epochs,
        workers=workers,
        max_turns=max_turns,
        twins=twins,
        base_url=base_url,
        model_flags=ModelFlags(
            api_key_env=api_key_env,
            version=model_version,
            release_date=release_date,
            spec_placement=spec_placement,
            concurrency=concurrency,
            temperature=temperature,
            max_tokens=max_tokens,
            max_completion_tokens=max_completion_tokens,
            reasoning_effort=reasoning_effort,
        ),
        heldout=heldout,
        db=db,
        config_path=config,
        dry_run=dry_run,
        as_json=as_json,
        batch=batch,
    )


def sweep_command(
    epochs: EpochsOption = None,
    scenario: ScenarioOption = None,
    base_url: BaseUrlOption = None,
    workers: WorkersOption = None,
    max_turns: MaxTurnsOption = None,
    twins: TwinsOption = None,
    spec_placement: SpecPlacementOption = None,
    concurrency: ConcurrencyOption = None,
    temperature: TemperatureOption = None,
    max_tokens: MaxTokensOption = None,
    max_completion_tokens: MaxCompletionTokensOption = None,
    reasoning_effort: ReasoningEffortOption = None,
    batch: BatchOption = False,
    dry_run: DryRunOption = False,
    heldout: HeldoutOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the whole matrix from config: every model x every stored spec revision.

    Model flags apply to every configured model.
    """
    _execute(
        command="sweep",
        models=None,
        revisions=None,
        scenarios=scenario,
        epochs=epochs,
        workers=workers,
        max_turns=max_turns,
        twins=twins,
        base_url=base_url,
        model_flags=ModelFlags(
            spec_placement=spec_placement,
            concurrency=concurrency,
            temperature=temperature,
            max_tokens=max_tokens,
            max_completion_tokens=max_completion_tokens,
            reasoning_effort=reasoning_effort,
        ),
        heldout=heldout,
        db=db,
        config_path=config,
        dry_run=dry_run,
        as_json=as_json,
        batch=batch,
    )


def register(app: typer.Typer) -> None:
    """Add ``audit run`` and ``audit sweep``."""
    app.command("run")(run_command)
    app.command("sweep")(sweep_command)
