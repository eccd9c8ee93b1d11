"""Points of the history and the comparisons a detection pass (or the gate) plans between them.

A point is one model at one spec revision with the per-scenario counts of its samples there.
Revisions with equal text share samples, so a model's distinct points drop a revision whose cell
is the previous one's. Model lines (``ModelConfig.family`` or a ``-vN`` name suffix) decide which
models are compared as versions of each other.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from audit.analysis.estimates import Cell, CellKey
from audit.config import AuditConfig
from audit.errors import AuditError
from audit.model_lines import model_lines
from audit.records import ComparisonKind, SpecRevision
from audit.spec_history import resolve_revision, stored_revisions
from audit.store import Store


@dataclass(frozen=True)
class Point:
    """One model at one spec revision, with the counts of its samples there."""

    model: str
    revision: SpecRevision
    cell: Cell


@dataclass(frozen=True)
class Comparison:
    """Two points to compare; ``kind`` is consecutive, baseline, model_version or gate."""

    kind: ComparisonKind
    before: Point
    after: Point

    @property
    def family(self) -> tuple[str, str, str]:
        """The false-discovery-rate family: (source, model, history or model_version)."""
        group = "model_version" if self.kind == "model_version" else "history"
        return (self.after.revision.source_id, self.after.model, group)


# -- loading -----------------------------------------------------------------------------------


def refuse_mixed_sets(cells: dict[CellKey, Cell]) -> None:
    """Refuse samples of several held-out sets: their rates are not comparable."""
    hashes = sorted({k.set_hash for k in cells})
    if len(hashes) > 1:
        raise AuditError(
            f"samples were made on {len(hashes)} versions of the held-out set (or other sets) "
            f"({', '.join(h[:19] for h in hashes)}): comparing across them is refused; "
            "pass --heldout DIR (or --set-hash) to analyse one"
        )


def set_label(store: Store, set_hash: str) -> str:
    """``name version (hash prefix)`` of a registered set, else its hash prefix."""
    rows = store.query("SELECT name, version FROM heldout_sets WHERE set_hash = ?", [set_hash])
    if not rows:
        return set_hash[:19]
    return f"{rows[0]['name'] or 'unnamed'} {rows[0]['version']} ({set_hash[:19]})"


def load_revisions(store: Store, source_id: str | None) -> dict[str, list[SpecRevision]]:
    """Every stored revision with its text, per spec source (one source, or all), in order."""
    revisions = stored_revisions(store, source_id, with_content=True)
    if not revisions:
        where = f"source {source_id!r}" if source_id else "any spec source"
        raise AuditError(f"no spec revisions stored for {where}: run `audit specs sync` first")
    sources: dict[str, list[SpecRevision]] = {}
    for revision in revisions:
        sources.setdefault(revision.source_id, []).append(revision)
    return sources


def resolve_ref(
    store: Store, ref: str, source_id: str, revisions: Sequence[SpecRevision]
) -> SpecRevision:
    """A revision reference (sha prefix, tag, index) resolved to one of ``revisions``."""
    found = resolve_revision(store, ref, source_id=source_id)
    for revision in revisions:
        if revision.sha == found.sha:
            return revision
    raise AuditError(f"revision {ref!r} is not among the stored revisions of {source_id!r}")


def points_by_model(
    cells: dict[CellKey, Cell], revisions: Sequence[SpecRevision]
) -> dict[str, list[Point]]:
    """For each model, its points along the history in revision order."""
    by_hash: dict[str, list[Cell]] = {}
    for key, cell in cells.items():
        by_hash.setdefault(key.content_hash, []).append(cell)
    points: dict[str, list[Point]] = {}
    for revision in revisions:
        for cell in by_hash.get(revision.content_hash, []):
            points.setdefault(cell.key.model, []).append(Point(cell.key.model, revision, cell))
    return points


# -- comparisons -------------------------------------------------------------------------------


def history_comparisons(
    points: dict[str, list[Point]], config: AuditConfig, baseline: SpecRevision | None
) -> list[Comparison]:
    """Every comparison of a detection pass: each model's consecutive distinct points, each
    later point against the baseline (the first point when ``baseline`` is None), and
    consecutive versions of one model line at the same revision."""
    comparisons: list[Comparison] = []
    for model_points in points.values():
        # Revisions with equal text share samples: comparing them would compare a cell to itself.
        distinct = distinct_points(model_points)
        consecutive = [Comparison("consecutive", b, a) for b, a in itertools.pairwise(distinct)]
        comparisons.extend(consecutive)
        anchor = anchor_point(distinct, baseline)
        if anchor is None:
            continue
        # Only this model's own consecutive pairs: every model gets its baseline comparisons.
        consecutive_pairs = {(c.before.revision.sha, c.after.revision.sha) for c in consecutive}
        for point in distinct:
            if point.revision.seq <= anchor.revision.seq or point.cell is anchor.cell:
                continue
            if (anchor.revision.sha, point.revision.sha) not in consecutive_pairs:
                comparisons.append(Comparison("baseline", anchor, point))
    comparisons.extend(_version_comparisons(points, config))
    return comparisons


def anchor_point(points: Sequence[Point], baseline: SpecRevision | None) -> Point | None:
    """The point at ``baseline`` (the first point when None), or None without samples there."""
    if not points:
        return None
    if baseline is None:
        return points[0]
    return next((p for p in points if p.revision.sha == baseline.sha), None)


def _version_comparisons(points: dict[str, list[Point]], config: AuditConfig) -> list[Comparison]:
    comparisons = []
    for members in model_lines(sorted(points), config).values():
        for older, newer in itertools.pairwise(members):
            old_at = {p.revision.sha: p for p in points[older]}
            for point in points[newer]:
                if point.revision.sha in old_at:
                    comparisons.append(
                        Comparison("model_version", old_at[point.revision.sha], point)
                    )
    return comparisons


def distinct_points(model_points: Sequence[Point]) -> list[Point]:
    """A model's points, without revisions whose text (and so samples) equals the previous."""
    return [
        p for i, p in enumerate(model_points) if i == 0 or p.cell is not model_points[i - 1].cell
    ]
