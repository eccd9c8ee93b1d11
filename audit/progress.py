"""Progress reporting without printing from the core.

Library functions accept a :class:`Progress`; the CLI passes one that drives a rich progress bar
(or prints a plain summary when not on a terminal). The default does nothing.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, label: str) -> None: ...

    def advance(self, done: int = 1, errors: int = 0) -> None: ...

    def message(self, text: str) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Progress sink that ignores everything (the library default)."""

    def start(self, total: int, label: str) -> None:
        pass

    def advance(self, done: int = 1, errors: int = 0) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass
