"""Names shared by specdrift's Inspect task and the log importer (no inspect_ai import here, so
importing logs works without the optional extra)."""

TASK_NAME = "specdrift"
"""The task's name (``inspect eval audit/specdrift``)."""

SCORER_NAME = "specdrift_grader"
"""The scorer's name in the log: ``audit import inspect`` reads this score without a mapping."""
