"""The one test of whether a scenario is a sealed twin, for every reader that must withhold one.

A sealed twin's prompts (and the model's words about them) are never shown to the people who
edit the spec: not in the report, not in exports, not in the viewer. All three ask here. A
scenario is sealed when a registered held-out set marks it so (``scenarios.sealed``, in any set:
withholding too much is safe, too little is not), or when its id ends with ``--twin``, as every
twin of the shipped set is named, so a sample imported without its set registered is withheld
too.
"""

from __future__ import annotations

from collections.abc import Collection

import duckdb

TWIN_SUFFIX = "--twin"
"""Sealed twins of the shipped set are named ``<public id>--twin``."""


def sealed_sql(scenario: str) -> str:
    """SQL that is true when the scenario id ``scenario`` (a column or expression) is sealed."""
    return (
        f"(ends_with({scenario}, '{TWIN_SUFFIX}') OR {scenario} IN "
        "(SELECT sealed_twin.scenario_id FROM scenarios sealed_twin WHERE sealed_twin.sealed))"
    )


def sealed_ids(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """The ids registered sets mark sealed (with :func:`is_sealed`, for ids already read)."""
    rows = con.execute("SELECT DISTINCT scenario_id FROM scenarios WHERE sealed").fetchall()
    return frozenset(row[0] for row in rows)


def is_sealed(scenario_id: str, registered: Collection[str]) -> bool:
    """The Python side of :func:`sealed_sql`; ``registered`` is :func:`sealed_ids`."""
    return scenario_id.endswith(TWIN_SUFFIX) or scenario_id in registered
