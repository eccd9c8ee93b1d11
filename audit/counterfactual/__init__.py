"""Counterfactual awareness experiments: what verbalized evaluation awareness *causes*.

Attribution by decomposition says how much of a drop coincides with samples that voice awareness.
A counterfactual measures it directly, as the anti-scheming paper did on o3 (removing eval-aware
sentences from the reasoning raised covert actions from 13.2% to 24.2%; injecting one lowered them
from 24.5% to 18.6%; a random-sentence control stayed at 24.9%): take stored samples, edit their
reasoning (:mod:`.interventions`), let the same model continue the edited turn (:mod:`.prefill`
knows how each server continues a prefilled assistant turn), finish the conversation, grade it with
the same graders, and compare each counterfactual with its source
(:mod:`audit.analysis.counterfactual`).

:func:`run_counterfactual` is what ``audit counterfactual`` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.analysis.counterfactual import (
    CounterfactualEstimate,
    estimate,
    estimate_rows,
    load_pair_counts,
    store_estimates,
)
from audit.config import AuditConfig
from audit.counterfactual.interventions import MODES, Mode
from audit.counterfactual.prefill import probe
from audit.counterfactual.run import (
    CounterfactualPlan,
    Execution,
    execute,
    finish_run,
    plan_counterfactuals,
    start_run,
)
from audit.errors import AuditError
from audit.progress import NullProgress, Progress
from audit.runner.client import Scrubber, api_key_for, endpoint_of
from audit.runner.matrix import resolve_revisions
from audit.runner.writer import BatchWriter
from audit.store import Store

if TYPE_CHECKING:
    from audit.heldout import HeldoutSet

__all__ = ["MODES", "CounterfactualResult", "Mode", "plan_counterfactuals", "run_counterfactual"]


@dataclass(frozen=True)
class CounterfactualResult:
    """What one command did and what the stored pairs of its mode say."""

    model: str
    revision: str
    mode: Mode
    n_samples: int
    n_eligible: int
    planned: int
    skipped: int
    stored: int
    failed: int
    unstored: int
    protocol: str | None
    estimate: CounterfactualEstimate | None
    note: str | None = None
    abandoned: str | None = None
    run_id: str | None = None
    """The ``runs`` row of the continuations (None when nothing was left to run)."""

    def to_json(self) -> dict[str, Any]:
        """``audit counterfactual --json``: the issue's fields first, then the run's counts."""
        stats = (
            self.estimate.to_json()
            if self.estimate is not None
            else {
                "mode": self.mode,
                "n_pairs": 0,
                "covert_rate_original": None,
                "covert_rate_counterfactual": None,
                "effect": None,
                "effect_ci": [None, None],
                "p_value": None,
                "reverbalized_share": None,
            }
        )
        return {
            **stats,
            "model": self.model,
            "revision": self.revision,
            "samples_at_revision": self.n_samples,
            "eligible_samples": self.n_eligible,
            "planned": self.planned,
            "skipped": self.skipped,
            "stored": self.stored,
            "failed": self.failed,
            "unstored": self.unstored,
            "prefill_protocol": self.protocol,
            "note": self.note,
            "run_id": self.run_id,
        }


def run_counterfactual(
    store: Store,
    config: AuditConfig,
    *,
    model: str,
    revision: str,
    mode: Mode,
    scenario_ids: Sequence[str] | None = None,
    epochs: int = 1,
    base_url: str | None = None,
    progress: Progress | None = None,
    heldout: HeldoutSet | None = None,
) -> CounterfactualResult:
    """Run one mode's counterfactuals of (model, revision), store them and their statistics.

    The statistics cover every stored pair of the model, revision and mode (earlier runs and
    other ``--scenario`` selections included), like ``audit detect`` covers every stored
    sample. A model without samples the mode applies to gives an empty result with a note;
    a revision the model was never run on, or a server that cannot continue a prefilled turn,
    an :class:`AuditError`.
    """
    if mode not in MODES:
        raise AuditError(f"unknown mode {mode!r}: use ablate, inject or control")
    progress = progress or NullProgress()
    if heldout is None:
        from audit.heldout import load_heldout

        heldout = load_heldout()
    model_config = config.model(model)
    rev = resolve_revisions(store, [revision], config.spec.source_id)[0]
    plan = plan_counterfactuals(
        store, model_config, rev, mode, heldout, scenario_ids=scenario_ids, epochs=epochs
    )
    execution = _execute(store, config, plan, base_url, progress) if plan.pending else None
    written = execution.writer.written if execution else {}
    counts = load_pair_counts(
        store,
        model=model_config.name,
        spec_content_hash=plan.spec_content_hash,
        set_hash=plan.set_hash,
        mode=mode,
    )
    result = estimate(mode, counts, resamples=config.detect.bootstrap, seed=config.detect.seed)
    if result is not None:
        shas = _equal_revisions(store, rev.source_id, rev.content_hash, rev.sha)
        rows = estimate_rows(result, model=model_config.name, source_id=rev.source_id, shas=shas)
        store_estimates(store, rows, model=model_config.name, source_id=rev.source_id, mode=mode)
    return CounterfactualResult(
        model=model_config.name,
        revision=rev.sha,
        mode=mode,
        n_samples=plan.n_samples,
        n_eligible=plan.n_eligible,
        planned=len(plan.items),
        skipped=plan.skipped,
        stored=written.get("counterfactual_samples", 0),
        failed=written.get("sample_failures", 0),
        unstored=sum(execution.writer.unstored.values()) if execution else 0,
        protocol=execution.protocol if execution else None,
        estimate=result,
        note=plan.note() if result is None else None,
        abandoned=execution.abandoned if execution else None,
        run_id=execution.run_id if execution else None,
    )


def _execute(
    store: Store,
    config: AuditConfig,
    plan: CounterfactualPlan,
    base_url: str | None,
    progress: Progress,
) -> Execution:
    """Ask the server how it continues a prefill, then run the pending continuations.

    Nothing is written before the server is known to continue a prefilled turn.
    """
    from audit.runner import run_coroutine

    model = plan.model
    endpoint = endpoint_of(model, base_url)
    key = api_key_for(model, endpoint)
    scrub = Scrubber({key})
    protocol = probe(
        endpoint, key, model.name, model.prefill, timeout_s=config.run.timeout_s, scrub=scrub
    )
    if protocol == "llama-cpp-python" and model.chat_template is None:
        raise AuditError(
            f"{endpoint} is llama-cpp-python's server, which cannot continue a prefilled turn "
            'through chat completions: set chat_template = "gemma" or "chatml" for model '
            f"{model.name!r} (or pass --chat-template) so specdrift renders the chat and "
            "continues it through /v1/completions"
        )
    execution = Execution(
        plan=plan,
        protocol=protocol,
        chat_template=model.chat_template,
        run=config.run,
        run_id=start_run(store, plan, endpoint, protocol),
        spec_text=None if model.spec_placement == "none" else plan.revision.content,
        writer=BatchWriter(store),
        scrub=scrub,
        progress=progress,
    )
    progress.start(len(plan.pending), f"counterfactual {plan.mode}: {len(plan.pending)}")
    try:
        run_coroutine(execute(endpoint, key, execution))
    finally:
        progress.finish()
        finish_run(
            store,
            execution.run_id,
            execution.writer.written.get("counterfactual_samples", 0),
            execution.writer.written.get("sample_failures", 0),
            completed=execution.abandoned is None,
        )
    return execution


def _equal_revisions(store: Store, source_id: str, content_hash: str, sha: str) -> list[str]:
    """The revision and every revision of its source with the same text (they share samples)."""
    rows = store.query(
        "SELECT sha FROM spec_revisions WHERE source_id = ? AND content_hash = ? ORDER BY seq",
        [source_id, content_hash],
    )
    return sorted({sha, *(row["sha"] for row in rows)})
