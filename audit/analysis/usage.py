"""Tokens and cost: what the samples of a run, a model or a revision used, and what it cost.

Every sample stores the tokens its model calls used as the server reported them (prompt,
completion, and reasoning where the server reports it: OpenAI's
``completion_tokens_details.reasoning_tokens``, a part of the completion tokens). Totals add
up the samples and the counterfactual samples (``audit counterfactual`` calls models too), one
SQL aggregate over both tables. A model's ``[models.price]`` turns tokens into cost; samples of
batch runs (``runs.mode = 'batch'``: ``audit sweep --batch`` and ``audit batch import``) are
priced at its batch prices. A cost is never guessed: without a price (or, for batch runs, a batch
price) the samples are counted as unpriced and the cost covers the priced ones only.

:func:`usage_totals` is what ``audit run --json``, ``audit detect`` (its ``estimates``) and the
report call; :func:`estimate_plan` is ``audit sweep --dry-run``'s forecast from stored averages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audit.config import AuditConfig, ModelConfig, ModelPrice
from audit.store import Store

if TYPE_CHECKING:
    from audit.runner.matrix import RunPlan

GROUP_COLUMNS = (
    "kind",
    "run_id",
    "model",
    "source_id",
    "spec_sha",
    "spec_content_hash",
    "set_hash",
)
"""Columns totals can be grouped by; ``kind`` is ``sample`` or ``counterfactual``."""

PER_MILLION = 1_000_000

_USAGE_ROWS = """
SELECT 'sample' AS kind, s.run_id, s.model, s.source_id, s.spec_sha, s.spec_content_hash,
       s.set_hash, s.scenario_id, s.prompt_tokens, s.completion_tokens, s.reasoning_tokens,
       coalesce(r.mode, 'live') AS mode
FROM samples s LEFT JOIN runs r ON r.run_id = s.run_id
UNION ALL
SELECT 'counterfactual', c.run_id, c.model, c.source_id, c.spec_sha, c.spec_content_hash,
       c.set_hash, c.scenario_id, c.prompt_tokens, c.completion_tokens, c.reasoning_tokens,
       coalesce(r.mode, 'live')
FROM counterfactual_samples c LEFT JOIN runs r ON r.run_id = c.run_id
"""


@dataclass
class Usage:
    """Token totals of some samples, and their cost where prices are known."""

    samples: int = 0
    #: Samples whose server reported no token counts (imported without them): not in the sums.
    unreported: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: None when no sample of the group had reasoning tokens reported.
    reasoning_tokens: int | None = None
    scenarios: int = 0
    #: Cost per currency of the priced samples.
    cost: dict[str, float] = field(default_factory=dict)
    #: Samples with counts but no applicable price (no [models.price], or a batch run without
    #: batch prices): their cost is unknown, not zero.
    unpriced: int = 0

    def add(self, other: Usage) -> None:
        """Add another group's totals to this one (scenario counts cannot be added: kept max)."""
        self.samples += other.samples
        self.unreported += other.unreported
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        if other.reasoning_tokens is not None:
            self.reasoning_tokens = (self.reasoning_tokens or 0) + other.reasoning_tokens
        self.scenarios = max(self.scenarios, other.scenarios)
        for currency, amount in other.cost.items():
            self.cost[currency] = self.cost.get(currency, 0.0) + amount
        self.unpriced += other.unpriced

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "unreported": self.unreported,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost": dict(sorted(self.cost.items())),
            "unpriced": self.unpriced,
        }

    def cost_text(self) -> str:
        """``1.23 USD``, ``1.23 USD (40 samples unpriced)``, or ``unknown (no price)``."""
        if not self.cost:
            return "unknown (no price)" if self.unpriced else "0"
        text = " + ".join(f"{amount:,.4g} {currency}" for currency, amount in self.cost.items())
        return text + (f" ({self.unpriced} samples unpriced)" if self.unpriced else "")

    def tokens_text(self) -> str:
        """``prompt 1,234, completion 567 (reasoning 120)``."""
        text = f"prompt {self.prompt_tokens:,}, completion {self.completion_tokens:,}"
        if self.reasoning_tokens is not None:
            text += f" (reasoning {self.reasoning_tokens:,})"
        return text


@dataclass(frozen=True)
class UsageRow:
    """The totals of one group (its columns named as in :data:`GROUP_COLUMNS`)."""

    group: dict[str, Any]
    usage: Usage

    def to_json(self) -> dict[str, Any]:
        return {**self.group, **self.usage.to_json()}


def price_of(config: AuditConfig, model: str) -> ModelPrice | None:
    """The configured prices of a model, if any (a model not in the config has none)."""
    found: ModelConfig | None = next((m for m in config.models if m.name == model), None)
    return None if found is None else found.price


def cost_of(
    price: ModelPrice | None, mode: str, prompt_tokens: float, completion_tokens: float
) -> float | None:
    """What the tokens cost at the live or batch price, or None when that price is unknown.
    Reasoning tokens are part of the completion tokens and billed with them."""
    if price is None:
        return None
    if mode == "batch":
        if price.batch_input is None or price.batch_output is None:
            return None
        rates = (price.batch_input, price.batch_output)
    else:
        rates = (price.input, price.output)
    return (prompt_tokens * rates[0] + completion_tokens * rates[1]) / PER_MILLION


def usage_totals(
    store: Store,
    config: AuditConfig,
    *,
    by: Sequence[str] = ("model",),
    run_ids: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    kinds: Sequence[str] = ("sample", "counterfactual"),
) -> list[UsageRow]:
    """Token totals and cost of the stored samples (and counterfactual samples), grouped by the
    given columns of :data:`GROUP_COLUMNS`, optionally only of some runs or models; sorted by
    the group's values."""
    unknown = [c for c in by if c not in GROUP_COLUMNS]
    if unknown:
        raise ValueError(f"cannot group usage by {unknown}; choose from {GROUP_COLUMNS}")
    columns = ", ".join(by)
    select = f"{columns}, " if by else ""
    rows = store.query(
        f"""
        SELECT {select}model AS _model, mode AS _mode,
               count(*) AS samples,
               count(*) FILTER (WHERE prompt_tokens IS NULL) AS unreported,
               coalesce(sum(prompt_tokens), 0)::BIGINT AS prompt_tokens,
               coalesce(sum(completion_tokens), 0)::BIGINT AS completion_tokens,
               sum(reasoning_tokens)::BIGINT AS reasoning_tokens,
               count(DISTINCT scenario_id) AS scenarios
        FROM ({_USAGE_ROWS}) u
        WHERE list_contains(?, kind)
          AND (?::VARCHAR[] IS NULL OR list_contains(?, run_id))
          AND (?::VARCHAR[] IS NULL OR list_contains(?, model))
        GROUP BY ALL
        """,
        [list(kinds), run_ids and list(run_ids), run_ids and list(run_ids), models, models],
    )
    grouped: dict[tuple, UsageRow] = {}
    for row in rows:
        group = {c: row[c] for c in by}
        slot = tuple(group.values())
        part = _priced(row, price_of(config, row["_model"]))
        if slot not in grouped:
            grouped[slot] = UsageRow(group, part)
        else:
            grouped[slot].usage.add(part)
    return [grouped[k] for k in sorted(grouped, key=lambda k: tuple(str(v) for v in k))]


def _priced(row: Mapping[str, Any], price: ModelPrice | None) -> Usage:
    usage = Usage(
        samples=row["samples"],
        unreported=row["unreported"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        reasoning_tokens=row["reasoning_tokens"],
        scenarios=row["scenarios"],
    )
    counted = usage.samples - usage.unreported
    if not counted:
        return usage
    cost = cost_of(price, row["_mode"], usage.prompt_tokens, usage.completion_tokens)
    if cost is None:
        usage.unpriced = counted
    else:
        assert price is not None
        usage.cost[price.currency] = cost
    return usage


def total(rows: Iterable[UsageRow]) -> Usage:
    """The sum of several groups' totals."""
    overall = Usage()
    for row in rows:
        overall.add(row.usage)
    return overall


def run_usage(store: Store, config: AuditConfig, run_id: str) -> dict[str, Any]:
    """A run's token totals and cost (JSON-ready): in all, per model, and per model and
    revision. Counterfactual runs count their continuations."""
    by_revision = usage_totals(store, config, by=("model", "spec_sha"), run_ids=[run_id])
    by_model = usage_totals(store, config, by=("model",), run_ids=[run_id])
    return {
        "total": total(by_model).to_json(),
        "by_model": [row.to_json() for row in by_model],
        "by_revision": [row.to_json() for row in by_revision],
    }


# -- estimates rows for audit detect ------------------------------------------------------------


USAGE_METRICS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cost")
"""The ``estimates`` metrics :func:`usage_estimate_rows` writes (totals, no interval)."""


def usage_by_point(store: Store, config: AuditConfig) -> dict[tuple[str, str, str], Usage]:
    """The samples' totals per (model, spec content hash, set hash): a point of the history, as
    detection's cells are keyed (counterfactual samples are not part of a point's rates, so
    not of its totals either)."""
    rows = usage_totals(
        store, config, by=("model", "spec_content_hash", "set_hash"), kinds=("sample",)
    )
    return {
        (r.group["model"], r.group["spec_content_hash"], r.group["set_hash"]): r.usage for r in rows
    }


def usage_estimate_rows(usage: Usage) -> list[dict[str, Any]]:
    """A point's totals as ``estimates`` rows (scope all; value a total, no interval). The cost
    row holds the priced samples' cost when there is one currency, else NULL. No rows when no
    sample of the point has token counts (imported without them): a total of 0 would be false."""
    counted = usage.samples - usage.unreported
    if not counted:
        return []
    cost = next(iter(usage.cost.values())) if len(usage.cost) == 1 else None
    values = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost": cost,
    }
    return [
        {
            "metric": metric,
            "scope": "all",
            "scope_id": "*",
            "value": value,
            "ci_low": None,
            "ci_high": None,
            "n_samples": counted - usage.unpriced if metric == "cost" else counted,
            "n_scenarios": usage.scenarios,
        }
        for metric, value in values.items()
    ]


# -- forecast for sweep --dry-run ---------------------------------------------------------------


@dataclass(frozen=True)
class PlanEstimate:
    """Tokens and cost a plan's pending samples would use, from stored averages per scenario."""

    pending: int
    #: Pending samples with an average of the same model, scenario and condition.
    from_model: int
    #: Pending samples with only other models' average for the scenario and condition.
    from_other_models: int
    prompt_tokens: float
    completion_tokens: float
    reasoning_tokens: float | None
    cost: dict[str, float]
    unpriced: int

    @property
    def estimated(self) -> int:
        return self.from_model + self.from_other_models

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.pending,
            "estimated_samples": self.estimated,
            "from_same_model": self.from_model,
            "from_other_models": self.from_other_models,
            "prompt_tokens": round(self.prompt_tokens),
            "completion_tokens": round(self.completion_tokens),
            "reasoning_tokens": None
            if self.reasoning_tokens is None
            else round(self.reasoning_tokens),
            "cost": dict(sorted(self.cost.items())),
            "unpriced": self.unpriced,
        }


def estimate_plan(
    store: Store, config: AuditConfig, plan: RunPlan, *, batch: bool = False
) -> PlanEstimate | None:
    """Forecast the tokens and cost of a plan's pending samples from the stored samples' mean
    tokens per (model, scenario, condition), else per (scenario, condition) over every model;
    None when nothing is stored to average. Means are over every stored revision, so a spec
    much longer than the stored ones makes the forecast low. ``batch`` prices at batch prices."""
    averages = store.query(
        """
        SELECT model, scenario_id, condition, avg(prompt_tokens) AS prompt,
               avg(completion_tokens) AS completion, avg(reasoning_tokens) AS reasoning
        FROM samples WHERE prompt_tokens IS NOT NULL GROUP BY ALL
        """
    )
    if not averages:
        return None
    by_model = {(a["model"], a["scenario_id"], a["condition"]): a for a in averages}
    pooled = _pooled(averages)
    prompt = completion = 0.0
    reasoning: float | None = None
    from_model = from_others = unpriced = 0
    cost: dict[str, float] = {}
    for sample in plan.pending:
        slot = (sample.scenario.id, sample.condition)
        mean = by_model.get((sample.model.name, *slot))
        if mean is not None:
            from_model += 1
        else:
            mean = pooled.get(slot)
            if mean is None:
                continue
            from_others += 1
        prompt += mean["prompt"]
        completion += mean["completion"]
        if mean["reasoning"] is not None:
            reasoning = (reasoning or 0.0) + mean["reasoning"]
        price = sample.model.price
        amount = cost_of(price, "batch" if batch else "live", mean["prompt"], mean["completion"])
        if amount is None or price is None:
            unpriced += 1
        else:
            cost[price.currency] = cost.get(price.currency, 0.0) + amount
    return PlanEstimate(
        pending=len(plan.pending),
        from_model=from_model,
        from_other_models=from_others,
        prompt_tokens=prompt,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        cost=cost,
        unpriced=unpriced,
    )


def _pooled(averages: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (scenario, condition), the plain mean of the models' means (each model one vote, so
    a model with many samples does not stand for the others)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for a in averages:
        groups.setdefault((a["scenario_id"], a["condition"]), []).append(a)
    pooled = {}
    for slot, means in groups.items():
        reasoned = [m["reasoning"] for m in means if m["reasoning"] is not None]
        pooled[slot] = {
            "prompt": sum(m["prompt"] for m in means) / len(means),
            "completion": sum(m["completion"] for m in means) / len(means),
            "reasoning": sum(reasoned) / len(reasoned) if reasoned else None,
        }
    return pooled
