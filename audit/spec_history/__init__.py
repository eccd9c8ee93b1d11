"""Spec history: the revisions of a spec file in git, stored in DuckDB with their changes.

Public API: :func:`sync_spec_history` (ingest, idempotent), :func:`list_revisions`,
:func:`resolve_revision` (index, tag or sha prefix), :func:`diff_revisions` (clause-level and
line-level), and :func:`audit.spec_history.replay.replay_specs_history`, which rebuilds the
shipped ``specs_history/`` folder into a real git repository.
"""

from audit.spec_history.clauses import (
    REWORD_THRESHOLD,
    Clause,
    ClauseChange,
    diff_clauses,
    split_clauses,
)
from audit.spec_history.sync import (
    MAX_SPEC_BYTES,
    Revision,
    RevisionDiff,
    SyncResult,
    diff_revisions,
    list_revisions,
    pick_source,
    resolve_revision,
    sync_spec_history,
)

__all__ = [
    "MAX_SPEC_BYTES",
    "REWORD_THRESHOLD",
    "Clause",
    "ClauseChange",
    "Revision",
    "RevisionDiff",
    "SyncResult",
    "diff_clauses",
    "diff_revisions",
    "list_revisions",
    "pick_source",
    "resolve_revision",
    "split_clauses",
    "sync_spec_history",
]
