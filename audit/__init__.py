"""specdrift: audit model-spec drift on a fixed held-out covert-action set.

The package is organised by the stages of the data flow (see README): ``spec_history``,
``heldout``, ``graders``, ``runner``, ``organisms``, ``analysis``, ``report``, ``store`` and the
thin ``cli`` on top. Every CLI command calls one library function that is usable from Python.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("specdrift")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
