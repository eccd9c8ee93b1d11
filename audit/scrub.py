"""Keeping API keys out of everything specdrift stores, prints or reports.

A model server sees the key in every request and may send it back: in an error body ("Incorrect
API key provided: ..."), in a completion (a proxy or a hostile server echoing headers), base64- or
URL-encoded, or cut short. :class:`Scrubber` removes the key in all of those forms from every text
that comes back from a server, before it is stored or printed; the runner
(:mod:`audit.runner`) and the LLM judge (:mod:`audit.graders.judge`) both use it.
:func:`checked_key` refuses keys too short to scrub without mangling ordinary words, and
:func:`checked_base_url` refuses base URLs that carry a user name or password (they would be
stored with the run, and httpx would send them as Basic auth instead of the key).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from audit.errors import AuditError

MIN_KEY_LENGTH = 8
"""Shortest key accepted, and shortest piece of a key that is scrubbed: any prefix or suffix of
the key (or of its encodings) this long or longer is removed."""

REDACTED = "***"

# Keys of the OpenAI shape are removed even when they are not ours (a server naming another key).
_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,})")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def _base64_forms(raw: bytes) -> set[str]:
    """The key's base64 text however it is aligned inside a longer encoded value.

    ``Bearer KEY`` or ``user:KEY`` encoded together puts the key at byte offset 0, 1 or 2 of a
    3-byte group; for each offset this keeps the characters that only the key's bits decide.
    """
    forms = {base64.b64encode(raw).decode()}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        first = -(-8 * offset // 6)  # the first character holding no bit of the padding bytes
        last = 8 * (offset + len(raw)) // 6  # characters past this one mix in following bytes
        forms.add(encoded[first:last])
    forms |= {form.replace("+", "-").replace("/", "_") for form in forms}  # base64url
    return forms


def secret_forms(secret: str) -> set[str]:
    """The secret as text may carry it: itself, URL-encoded (upper- and lower-case escapes,
    ``quote`` and ``quote_plus``) and base64 (standard and URL-safe, at every alignment)."""
    quoted = {quote(secret, safe=""), quote_plus(secret, safe="")}
    quoted |= {_PERCENT_ESCAPE.sub(lambda m: m.group().lower(), q) for q in quoted}
    forms = {secret} | quoted | _base64_forms(secret.encode("utf-8"))
    return {form for form in forms if len(form) >= MIN_KEY_LENGTH}


class Scrubber:
    """Removes secrets from text: each in every form of :func:`secret_forms`, and any prefix or
    suffix of those forms at least :data:`MIN_KEY_LENGTH` characters long (a key cut short by a
    length limit, or missing its first characters), plus anything shaped like an OpenAI key.

    Shorter secrets (the ``EMPTY`` placeholder local servers get) are not secrets and are left
    alone: scrubbing them would mangle ordinary words. Cost: one regular-expression search per
    text when no piece of a key is present (the usual case).
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._forms = sorted(
            {f for s in secrets if len(s) >= MIN_KEY_LENGTH for f in secret_forms(s)}
        )
        anchors = {f[:MIN_KEY_LENGTH] for f in self._forms} | {
            f[-MIN_KEY_LENGTH:] for f in self._forms
        }
        self._anchor = (
            re.compile("|".join(re.escape(a) for a in sorted(anchors))) if anchors else None
        )

    def __call__(self, text: str) -> str:
        if self._anchor is not None and self._anchor.search(text):
            text = _cut(text, self._spans(text))
        return _KEY_LIKE.sub("sk-" + REDACTED, text)

    def value(self, value: Any) -> Any:
        """``value`` with every string in it scrubbed (dicts, lists and tuples walked)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value

    def _spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for form in self._forms:
            spans += _prefix_spans(text, form) + _suffix_spans(text, form)
        return spans


def _prefix_spans(text: str, form: str) -> list[tuple[int, int]]:
    """Where ``text`` holds a prefix of ``form`` at least MIN_KEY_LENGTH long."""
    spans = []
    start = text.find(form[:MIN_KEY_LENGTH])
    while start != -1:
        length = MIN_KEY_LENGTH
        while (
            length < len(form)
            and start + length < len(text)
            and text[start + length] == form[length]
        ):
            length += 1
        spans.append((start, start + length))
        start = text.find(form[:MIN_KEY_LENGTH], start + 1)
    return spans


def _suffix_spans(text: str, form: str) -> list[tuple[int, int]]:
    """Where ``text`` holds a suffix of ``form`` at least MIN_KEY_LENGTH long."""
    spans = []
    tail = form[-MIN_KEY_LENGTH:]
    found = text.find(tail)
    while found != -1:
        end = found + MIN_KEY_LENGTH
        length = MIN_KEY_LENGTH
        while (
            length < len(form) and end - length > 0 and text[end - length - 1] == form[-length - 1]
        ):
            length += 1
        spans.append((end - length, end))
        found = text.find(tail, found + 1)
    return spans


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with the spans replaced; overlapping or touching spans become one mark."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces: list[str] = []
    position = 0
    for start, end in merged:
        pieces += [text[position:start], REDACTED]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def checked_key(key: str, variable: str) -> str:
    """``key`` if it is long enough to scrub safely; else an AuditError naming ``variable``
    (never the key)."""
    if len(key) < MIN_KEY_LENGTH:
        raise AuditError(
            f"the key in {variable} is shorter than {MIN_KEY_LENGTH} characters, too short to "
            "scrub from what servers send back: use the real key (a local server that needs none "
            f"gets a placeholder when {variable} is unset)"
        )
    return key


def checked_base_url(url: str) -> str:
    """``url`` if it carries no user name or password; else an AuditError that shows the URL
    without them."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    shown = parts._replace(netloc=f"{REDACTED}@{host}").geturl()
    raise AuditError(
        f"base URL {shown} carries a user name or password, which would be stored with the run "
        "and sent instead of the API key: remove them from the URL and put the key in the "
        "model's api_key_env variable"
    )
