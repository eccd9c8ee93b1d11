"""specdrift: audit model-spec drift on a fixed held-out covert-action set.

The package is organised by the stages of the data flow (see README): ``spec_history``,
``heldout``, ``graders``, ``runner``, ``organisms``, ``analysis``, ``report``, ``store`` and the
thin ``cli`` on top. Every CLI command calls one library function that is usable from Python.
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # ``__version__`` is looked up on first use: importlib.metadata costs about 40 ms, a sixth
    # of the time budget of `audit --help`, and no command needs it.
    if name != "__version__":
        raise AttributeError(f"module 'audit' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("specdrift")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0+source"
