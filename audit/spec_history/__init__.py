"""Spec history: the revisions of a spec file in git, stored in DuckDB with their changes.

Public API: :func:`sync_spec_history` (ingest, idempotent; or :func:`open_spec_file` to check
the repository, ref and path first, then :func:`sync_spec_file`), :func:`list_revisions` and
:func:`stored_revisions` (:class:`audit.records.SpecRevision` records), :func:`resolve_revision`
(index, tag or sha prefix), :func:`revision_at`, :func:`diff_revisions` (clause-level and
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
    RevisionDiff,
    SpecFile,
    SyncResult,
    diff_revisions,
    list_revisions,
    open_spec_file,
    pick_source,
    resolve_revision,
    revision_at,
    stored_revisions,
    sync_spec_file,
    sync_spec_history,
)

__all__ = [
    "MAX_SPEC_BYTES",
    "REWORD_THRESHOLD",
    "Clause",
    "ClauseChange",
    "RevisionDiff",
    "SpecFile",
    "SyncResult",
    "diff_clauses",
    "diff_revisions",
    "list_revisions",
    "open_spec_file",
    "pick_source",
    "resolve_revision",
    "revision_at",
    "split_clauses",
    "stored_revisions",
    "sync_spec_file",
    "sync_spec_history",
]
