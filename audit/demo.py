"""The offline demo: the whole pipeline on the shipped data, with simulated models.

:func:`run_demo` replays ``specs_history/`` into a real git repository, syncs it into DuckDB,
registers the held-out set, serves the shipped model organisms (a SIMULATOR, not real models)
on a free loopback port, sweeps every spec revision x every organism version, grades, runs the
counterfactual awareness experiments (ablation, injection, control) on the watcher and steady
organisms, detects and attributes changes, and writes the HTML report. Every step is a library
call that a user can make on their own data; the demo only chooses the inputs.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from audit.analysis import detect
from audit.analysis.findings import Finding
from audit.config import AuditConfig, ModelConfig, RequestParams, RunConfig, SpecConfig
from audit.counterfactual import MODES, CounterfactualResult, run_counterfactual
from audit.errors import AuditError
from audit.heldout import HeldoutSet, load_heldout
from audit.heldout.loader import register_heldout
from audit.organisms.config import OrganismModel, load_organisms
from audit.organisms.server import ServerProcess
from audit.progress import NullProgress, Progress
from audit.report import render_report
from audit.runner import RunSummary, run_matrix
from audit.spec_history import sync_spec_history
from audit.spec_history.replay import replay_specs_history
from audit.store import Store, open_store

DEMO_SOURCE_ID = "demo-spec"
DEMO_SPEC_PATH = "spec/model-spec.md"
DEFAULT_EPOCHS = 4
# The quick demo sweeps the revisions that carry the story: the first version, the two patches
# that name held-out scenarios, the section about being observed, and the latest revision.
QUICK_REVISIONS = ("0", "2", "4", "6", "-1")
# Three epochs is the least at which the spec patches stay significant after FDR correction over
# the ~370 comparisons of a demo pass (two give 8 samples per patched scenario: not enough).
QUICK_EPOCHS = 3
# Requests in flight across all models. The organisms answer instantly, so this keeps both cores
# busy; far more connections than this makes httpcore's pool bookkeeping the bottleneck.
DEMO_CONCURRENCY = 32
# The runner is CPU-bound against the instant organisms (the openai client costs ~2 ms a call):
# two runner processes beside the server process use both cores (1.5x measured).
DEMO_WORKERS = 2
# The counterfactual experiments: the organism whose good behaviour is awareness (watcher) and
# the one awareness does not move (steady), at their latest version and the latest revision,
# where watcher is most often aware (ablation needs aware samples, injection unaware ones).
COUNTERFACTUAL_LINES = ("watcher", "steady")
COUNTERFACTUAL_REVISION = "-1"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo put things and what it found."""

    db_path: Path
    report_path: Path
    spec_repo: Path
    revisions: int
    models: tuple[str, ...]
    scenarios: int
    run: RunSummary
    findings: tuple[Finding, ...]
    elapsed_s: float
    counterfactuals: tuple[CounterfactualResult, ...] = ()


def demo_models(
    organisms: dict[str, OrganismModel], base_url: str, *, quick: bool
) -> tuple[ModelConfig, ...]:
    """One model entry per organism version; ``quick`` keeps only each line's first and last."""
    by_line: dict[str, list[OrganismModel]] = {}
    for model in organisms.values():
        by_line.setdefault(model.organism.name, []).append(model)
    chosen: list[OrganismModel] = []
    for versions in by_line.values():
        versions.sort(key=lambda m: m.index)
        chosen.extend([versions[0], versions[-1]] if quick and len(versions) > 2 else versions)
    per_model = max(2, DEMO_CONCURRENCY // len(chosen))
    return tuple(
        ModelConfig(
            name=model.name,
            base_url=base_url,
            api_key_env="SPECDRIFT_DEMO_API_KEY",
            version=model.params.version,
            release_date=model.params.release_date,
            family=model.organism.name,
            params=RequestParams(temperature=1.0, max_tokens=512),
            concurrency=per_model,
        )
        for model in chosen
    )


def run_demo(
    *,
    db_path: str | Path = "audit.duckdb",
    report_path: str | Path = "reports/drift.html",
    workdir: str | Path = ".audit-work/demo",
    epochs: int | None = None,
    quick: bool = False,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the whole offline pipeline on the shipped data and return what it produced.

    Rerunning is cheap: samples already stored are skipped, so only detection and the report
    are redone.
    """
    progress = progress or NullProgress()
    started = time.perf_counter()
    epochs = epochs or (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)
    spec_repo = Path(workdir) / "spec-repo"
    if spec_repo.exists():
        # Replay is deterministic (same SHAs), so a fresh copy equals the old one.
        shutil.rmtree(spec_repo)
    # A child process serves the organisms, so the runner and the simulator each get a core;
    # it starts first and loads while the spec history is replayed and synced.
    with ServerProcess() as server, open_store(db_path) as store:
        _refuse_foreign_sources(store, Path(db_path))
        progress.message(f"replaying specs_history/ into {spec_repo}")
        replay_specs_history(spec_repo)
        heldout = load_heldout()
        sync = sync_spec_history(
            store, spec_repo, DEMO_SPEC_PATH, source_id=DEMO_SOURCE_ID, progress=progress
        )
        register_heldout(store, heldout)
        organisms = load_organisms()
        progress.message(f"model organisms (simulated) serving at {server.base_url}")
        config = AuditConfig(
            db=str(db_path),
            spec=SpecConfig(source_id=DEMO_SOURCE_ID),
            models=demo_models(organisms, server.base_url, quick=quick),
            run=RunConfig(epochs=epochs, workers=DEMO_WORKERS),
        )
        run = run_matrix(
            store,
            config,
            models=None,
            revisions=QUICK_REVISIONS if quick else None,
            epochs=epochs,
            progress=progress,
            command="demo",
            heldout=heldout,
        )
        progress.message("counterfactual awareness experiments (simulated organisms)")
        counterfactuals = demo_counterfactuals(store, config, heldout, progress)
        progress.message("detecting and attributing changes")
        findings = detect(store, config, heldout=heldout, progress=progress)
        progress.message("writing the report")
        report = render_report(store, report_path, config=config)
    return DemoResult(
        db_path=Path(db_path),
        report_path=report,
        spec_repo=spec_repo,
        revisions=sync.total,
        models=tuple(m.name for m in config.models),
        scenarios=len(heldout.scenarios),
        run=run,
        findings=tuple(findings),
        elapsed_s=time.perf_counter() - started,
        counterfactuals=counterfactuals,
    )


def demo_counterfactuals(
    store: Store, config: AuditConfig, heldout: HeldoutSet, progress: Progress
) -> tuple[CounterfactualResult, ...]:
    """Ablation, injection and control on the latest version of each of
    :data:`COUNTERFACTUAL_LINES`, at the latest revision (cached like every run)."""
    latest: dict[str, ModelConfig] = {}
    for model in config.models:
        if model.family in COUNTERFACTUAL_LINES:
            latest[model.family] = model  # configured oldest first
    return tuple(
        run_counterfactual(
            store,
            config,
            model=model.name,
            revision=COUNTERFACTUAL_REVISION,
            mode=mode,
            progress=progress,
            heldout=heldout,
        )
        for model in latest.values()
        for mode in MODES
    )


def _refuse_foreign_sources(store: Store, db_path: Path) -> None:
    # The demo's samples are simulated; they must never land beside a real audit history.
    rows = store.query("SELECT source_id FROM spec_sources WHERE source_id <> ?", [DEMO_SOURCE_ID])
    if rows:
        others = ", ".join(sorted(r["source_id"] for r in rows))
        raise AuditError(
            f"{db_path} already tracks other spec sources ({others}) and the demo writes "
            "simulated samples: pass --db demo.duckdb (a file of its own)"
        )
