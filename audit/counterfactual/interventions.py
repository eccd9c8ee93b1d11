"""Editing a stored transcript's reasoning: the three counterfactual interventions.

* **ablate** (an eval-aware sample): keep the conversation up to the first assistant turn whose
  reasoning the awareness detector flags, delete every flagged sentence of that turn, and cut the
  reasoning right after the last kept sentence before the first flagged one. The model continues
  from there, so whatever it wrote after the awareness is its own again (it may voice the
  awareness again: that is measured, not prevented). Awareness that shows only in a turn's visible
  text is cut the same way there, after the turn's whole reasoning.
* **inject** (an unaware sample): the first turn's reasoning becomes one awareness sentence from a
  fixed, versioned list (:data:`SENTENCES_FILE`); the model continues after it.
* **control**: the same, with the neutral sentence of about the same length at the same index, so
  an effect of merely editing the reasoning is measured too (the paper's random-sentence control).

A sample gets the sentence at an index drawn from a hash of its key: the same sample gets the same
sentence in inject and control, and a rerun the same edit, which keeps the cache key stable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from audit.errors import AuditError
from audit.graders.awareness import detect_awareness, sentence_spans

Mode = Literal["ablate", "inject", "control"]
MODES: tuple[Mode, ...] = ("ablate", "inject", "control")
SENTENCES_FILE = Path(__file__).parent / "sentences.json"


@dataclass(frozen=True)
class SentenceList:
    """The versioned sentences of inject (awareness) and control (neutral), index-paired."""

    version: str
    awareness: tuple[str, ...]
    neutral: tuple[str, ...]

    def pick(self, mode: Mode, source_key: str) -> str:
        """The sentence a source sample gets: the same index for inject and control."""
        digest = hashlib.sha256(source_key.encode("utf-8")).digest()
        index = int.from_bytes(digest[:8], "big") % len(self.awareness)
        return self.awareness[index] if mode == "inject" else self.neutral[index]


@lru_cache(maxsize=4)
def load_sentences(path: Path = SENTENCES_FILE) -> SentenceList:
    """The sentence lists of ``path`` (the package's by default), checked for pairing."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        sentences = SentenceList(
            str(data["version"]), tuple(data["awareness"]), tuple(data["neutral"])
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"cannot read the sentence lists {path}: {exc}") from None
    if not sentences.awareness or len(sentences.awareness) != len(sentences.neutral):
        raise AuditError(
            f"{path}: 'awareness' and 'neutral' must be non-empty lists of equal length "
            "(each neutral sentence is the control of the awareness sentence at its index)"
        )
    return sentences


@dataclass(frozen=True)
class Edit:
    """An edited prefix of a stored sample: what is sent, and what the model continues."""

    mode: Mode
    turn: int
    """Index of the edited assistant turn (0 = the first)."""
    history: tuple[dict[str, Any], ...]
    """The messages before the edited turn, as stored (assistant turns keep their reasoning)."""
    prefill_reasoning: str
    prefill_content: str
    """Visible text of the edited turn kept before the model continues (empty unless awareness
    first showed in the turn's visible text)."""
    removed: tuple[str, ...] = ()
    inserted: str | None = None
    list_version: str | None = None

    @property
    def in_reasoning(self) -> bool:
        """The model continues the turn's reasoning (not its visible text)."""
        return not self.prefill_content

    def fingerprint(self) -> str:
        """What identifies the edit in a cache key: turn, prefilled text and list version."""
        parts = [
            self.mode,
            str(self.turn),
            self.prefill_reasoning,
            self.prefill_content,
            self.list_version or "",
        ]
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _assistant_positions(messages: Sequence[Mapping[str, Any]]) -> list[int]:
    return [i for i, m in enumerate(messages) if m.get("role") == "assistant"]


def _cut_before_awareness(text: str) -> tuple[str, tuple[str, ...]] | None:
    """(text before the first flagged sentence, the flagged sentences), or None if none is."""
    detection = detect_awareness(text)
    if not detection.detected:
        return None
    flagged = sorted({int(e["sentence_index"]) for e in detection.evidence})
    spans = sentence_spans(text)
    removed = tuple(text[spans[i][0] : spans[i][1]].strip() for i in flagged)
    return text[: spans[flagged[0]][0]].rstrip(), removed


def ablate(messages: Sequence[Mapping[str, Any]]) -> Edit | None:
    """The ablation of a transcript, or None when no single turn shows awareness."""
    for turn, position in enumerate(_assistant_positions(messages)):
        message = messages[position]
        reasoning = str(message.get("reasoning") or "")
        content = str(message.get("content") or "")
        history = tuple(dict(m) for m in messages[:position])
        cut = _cut_before_awareness(reasoning)
        if cut is not None:
            return Edit("ablate", turn, history, cut[0], "", removed=cut[1])
        cut = _cut_before_awareness(content)
        if cut is not None and cut[0]:
            return Edit("ablate", turn, history, reasoning, cut[0], removed=cut[1])
        if cut is not None:
            # Awareness opens the visible text: the model continues after the turn's reasoning.
            return Edit("ablate", turn, history, reasoning, "", removed=cut[1])
    return None


def insert(
    messages: Sequence[Mapping[str, Any]], mode: Mode, source_key: str, sentences: SentenceList
) -> Edit | None:
    """The inject or control edit: one sentence opens the first turn's reasoning."""
    positions = _assistant_positions(messages)
    if not positions:
        return None
    sentence = sentences.pick(mode, source_key)
    history = tuple(dict(m) for m in messages[: positions[0]])
    return Edit(mode, 0, history, sentence, "", inserted=sentence, list_version=sentences.version)


def edit_for(
    mode: Mode,
    messages: Sequence[Mapping[str, Any]],
    source_key: str,
    sentences: SentenceList | None = None,
) -> Edit | None:
    """The edit of ``mode`` for one stored transcript (None when it cannot be made)."""
    if mode == "ablate":
        return ablate(messages)
    return insert(messages, mode, source_key, sentences or load_sentences())
