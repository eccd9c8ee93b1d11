"""The held-out covert-action set: scenario files, validation, hashing and the frozen manifest.

``load_heldout()`` gives the validated set (cached per folder), ``verify_heldout()`` checks it
against ``manifest.json``, ``freeze_heldout()`` cuts a new version, ``register_heldout()`` records
it in the store. ``reference_transcript()`` turns a scenario's labelled reference into the
transcript a model would have produced.
"""

from audit.heldout.loader import (
    CANARY,
    DEFAULT_SCENARIOS_DIR,
    HeldoutSet,
    ManifestDiff,
    build_manifest,
    canonical_json,
    content_hash,
    diff_against_manifest,
    freeze_heldout,
    load_heldout,
    read_manifest,
    register_heldout,
    verify_heldout,
)
from audit.heldout.references import reference_transcript

__all__ = [
    "CANARY",
    "DEFAULT_SCENARIOS_DIR",
    "HeldoutSet",
    "ManifestDiff",
    "build_manifest",
    "canonical_json",
    "content_hash",
    "diff_against_manifest",
    "freeze_heldout",
    "load_heldout",
    "read_manifest",
    "reference_transcript",
    "register_heldout",
    "verify_heldout",
]
