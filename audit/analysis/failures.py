"""Failed samples: how many of a run's samples gave up after their retries and why, and which
failed samples are still missing from the history.

A run that stores nothing because the server is unreachable must not look like a success: the
runner records each sample that gives up in ``sample_failures``, ``audit run`` and ``audit
sweep`` exit 1 when the failed share exceeds ``run.max_failed_share`` (:class:`FailureReport`),
and the report and the gate name the failures that a later run has not made good
(:func:`missing_samples`), since rates computed without them may be biased (a scenario whose long
transcripts time out is under-counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from audit.store import Store


@dataclass(frozen=True)
class FailureKind:
    """Failures of one kind (``sample_failures.error_kind``) with one example message."""

    kind: str
    count: int
    example: str


@dataclass(frozen=True)
class FailureReport:
    """How many samples a run tried and how many of them failed, by kind."""

    attempted: int
    failed: int
    kinds: tuple[FailureKind, ...]
    limit: float
    """``run.max_failed_share``: the largest failed share that still passes."""

    @property
    def share(self) -> float:
        return self.failed / self.attempted if self.attempted else 0.0

    @property
    def exceeded(self) -> bool:
        """More samples failed than the limit allows (nothing tried: nothing failed)."""
        return self.failed > 0 and self.share > self.limit

    def reasons(self) -> str:
        """``connection 12 (Connection error.), timeout 2 (Request timed out.)``."""
        return ", ".join(f"{k.kind} {k.count} ({k.example})" for k in self.kinds)

    def message(self) -> str:
        """The one line ``audit run`` prints when the limit is exceeded."""
        return (
            f"{self.failed} of {self.attempted} samples failed after their retries "
            f"({100 * self.share:.0f}%, more than run.max_failed_share = "
            f"{100 * self.limit:g}%): {self.reasons()}; they are in sample_failures and a rerun "
            "retries them"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "failed": self.failed,
            "failed_share": self.share,
            "max_failed_share": self.limit,
            "exceeded": self.exceeded,
            "kinds": [{"kind": k.kind, "count": k.count, "example": k.example} for k in self.kinds],
        }


def failure_report(store: Store, run_id: str, *, attempted: int, limit: float) -> FailureReport:
    """The failures a run recorded, by kind (most frequent first), against ``limit``."""
    rows = store.query(
        """
        SELECT error_kind, count(*) AS n, min(error) AS example
        FROM sample_failures WHERE run_id = ? GROUP BY error_kind ORDER BY n DESC, error_kind
        """,
        [run_id],
    )
    kinds = tuple(FailureKind(r["error_kind"], r["n"], _shortened(r["example"])) for r in rows)
    return FailureReport(
        attempted=attempted, failed=sum(k.count for k in kinds), kinds=kinds, limit=limit
    )


def _shortened(text: str, limit: int = 120) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


@dataclass(frozen=True)
class MissingSamples:
    """Samples of one model at one spec text that failed and were never stored since."""

    model: str
    spec_content_hash: str
    count: int
    kinds: tuple[FailureKind, ...]

    def describe(self) -> str:
        kinds = ", ".join(f"{k.kind} {k.count}" for k in self.kinds)
        return f"{self.count} sample(s) failed and are not stored ({kinds})"


def missing_samples(
    store: Store,
    *,
    models: Sequence[str] | None = None,
    content_hashes: Sequence[str] | None = None,
) -> list[MissingSamples]:
    """Failed samples (of ``audit run``, ``sweep``, batch runs) that no later run stored, per
    model and spec text (revisions of equal text share samples). Counterfactual failures are
    left out: they are not part of any rate of the history."""
    rows = store.query(
        """
        WITH missing AS (
            SELECT DISTINCT ON (f.sample_key) f.sample_key, f.model, f.error_kind,
                   r.content_hash
            FROM sample_failures f
            JOIN runs ON runs.run_id = f.run_id AND runs.command <> 'counterfactual'
            JOIN spec_revisions r ON r.sha = f.spec_sha
            WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE s.sample_key = f.sample_key)
              AND (?::VARCHAR[] IS NULL OR list_contains(?, f.model))
              AND (?::VARCHAR[] IS NULL OR list_contains(?, r.content_hash))
            ORDER BY f.sample_key, f.failed_at DESC
        )
        SELECT model, content_hash, error_kind, count(*) AS n
        FROM missing GROUP BY ALL ORDER BY model, content_hash, n DESC, error_kind
        """,
        [models, models, content_hashes, content_hashes],
    )
    grouped: dict[tuple[str, str], list[FailureKind]] = {}
    for row in rows:
        slot = (row["model"], row["content_hash"])
        grouped.setdefault(slot, []).append(FailureKind(row["error_kind"], row["n"], ""))
    return [
        MissingSamples(model, content_hash, sum(k.count for k in kinds), tuple(kinds))
        for (model, content_hash), kinds in grouped.items()
    ]
