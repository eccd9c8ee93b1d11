"""Import Inspect AI eval logs: each sample of a log becomes one graded specdrift sample.

Logs of specdrift's own Inspect task (:mod:`audit.integrations.inspect_task`) need nothing else:
every sample's metadata names its scenario, condition, held-out set and spec revision, and its
``specdrift_grader`` score carries the outcome, awareness, citation and question score that
specdrift's graders gave it. The set must be the one imported against (``--heldout``).

Logs of other tasks know the model, the sample ids, the epochs, the scores and the messages, but
not which spec revision was in force or what a score value means for covert actions. A small TOML
mapping file says that::

    spec_rev = "a1b2c3d"      # revision the log was run against (sample metadata "spec_rev" wins)
    score = "covert_check"    # scorer to read (optional when the log has one scorer)
    model = "o3-candidate"    # optional: model name to store (default: the log's model)
    aware_score = "aware"     # optional: scorer whose truthy value marks eval awareness
    condition = "incentive"   # optional: condition of every sample (sample metadata wins)

    [outcomes]                # score value -> outcome (covert, honest, refused, invalid)
    I = "covert"
    C = "honest"

    [scenarios]               # optional: Inspect sample id -> held-out scenario id
    "task-17" = "misreport-ledger-reconcile"

Without ``aware_score`` eval awareness is detected by specdrift's own detector on the sample's
reasoning and answer, as for run samples. Several logs (or a folder of them) are imported in one
transaction. A sample Inspect records as errored refuses its log, naming the sample, unless
``skip_errors``: then the scored samples are stored and the errored ones counted. Logs are read
with ``inspect_ai.log.read_eval_log`` when the optional ``inspect`` extra is installed (``.eval``
and ``.json`` logs), else ``.json`` logs are parsed directly in their documented layout
(``eval``, ``samples[]`` with ``id``, ``epoch``, ``scores``, ``metadata``, ``error``,
``messages``, ``output``).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from audit.errors import AuditError
from audit.heldout import HeldoutSet
from audit.io.import_samples import (
    INT32_MAX,
    ImportedSample,
    ImportResult,
    SourcedSample,
    import_records,
    unusable_value,
)
from audit.records import Outcome
from audit.store import Store


class InspectMapping(BaseModel):
    """The mapping file: how an Inspect log's samples and scores become specdrift samples."""

    model_config = ConfigDict(extra="forbid")

    spec_rev: str | None = None
    score: str | None = None
    model: str | None = None
    model_version: str | None = None
    aware_score: str | None = None
    condition: str | None = None
    outcomes: dict[str, str] = Field(min_length=1)
    scenarios: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class _Sample:
    id: str
    epoch: int
    scores: dict[str, Any]
    metadata: dict[str, Any]
    reasoning: str | None
    answer: str | None
    error: str | None = None


@dataclass(frozen=True)
class InspectImportResult(ImportResult):
    """An import of one or more Inspect logs; ``errored`` samples were skipped (--skip-errors)."""

    logs: int = 1
    errored: int = 0

    def line(self) -> str:
        """One-line summary for the CLI."""
        errored = f", {self.errored} errored samples skipped" if self.errored else ""
        return super().line() + errored


def load_mapping(path: str | Path) -> InspectMapping:
    """Read and validate a mapping TOML file; errors name the field and its line."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read mapping {file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuditError(f"mapping {file} is not valid TOML: {exc}") from None
    try:
        mapping = InspectMapping.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(str(p) for p in first["loc"])
        hint = ""
        if first["type"] == "missing" and loc == ("outcomes",):
            hint = ": add an [outcomes] table mapping score values to outcomes"
        raise AuditError(
            f"mapping {file}{_at_line(text, loc)}: {'.'.join(loc)}: {first['msg']}{hint}"
        ) from None
    for key, value in mapping.outcomes.items():
        if value not in OUTCOMES:
            raise AuditError(
                f"mapping {file}{_at_line(text, ('outcomes', key))}: outcomes.{key}: {value!r} "
                f"is not an outcome: use {', '.join(OUTCOMES)}"
            )
    return mapping


OUTCOMES: tuple[str, ...] = get_args(Outcome)
_TABLE = re.compile(r"\[\s*([^\[\]]+?)\s*\]\s*(#.*)?")
_KEY = re.compile(r"(?:\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+))\s*=")


def _at_line(text: str, loc: tuple[str, ...]) -> str:
    """ " line N" where the TOML text sets ``loc`` (a table header or a key), else ""."""
    table, key = ".".join(loc[:-1]), loc[-1] if loc else ""
    current = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = _TABLE.fullmatch(line)
        if header:
            current = header.group(1).replace('"', "").replace("'", "")
            if not table and current == key:
                return f" line {number}"
            continue
        found = _KEY.match(line)
        if found and current == table and key in found.groups():
            return f" line {number}"
    return ""


# -- reading logs -------------------------------------------------------------------------------


def _first_problem(exc: Exception) -> str:
    """One line about why a log could not be read: pydantic's first error (field and message)
    rather than its listing of every error, else the exception's first line."""
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {first['msg']}{more}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _read_log_dict(path: Path) -> dict[str, Any]:
    """The log as plain data, through inspect_ai's reader when installed."""
    try:
        from inspect_ai.log import read_eval_log as read_with_inspect
    except ImportError:
        read_with_inspect = None  # type: ignore[assignment]
    if read_with_inspect is not None:
        try:
            log = read_with_inspect(str(path))
        except Exception as exc:  # inspect raises many kinds; all mean "not a readable log"
            raise AuditError(
                f"{path} is not a readable Inspect log: {_first_problem(exc)}"
            ) from None
        return log.model_dump(mode="json", exclude_none=True)
    if path.suffix != ".json":
        raise AuditError(
            f"{path}: only .json Inspect logs can be read without inspect_ai; "
            "install the optional extra (pip install 'specdrift[inspect]')"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditError(f"{path} is not a readable Inspect log: {_first_problem(exc)}") from None
    except RecursionError:
        raise AuditError(f"{path} is not a readable Inspect log: nested too deeply") from None


def _content_parts(content: Any) -> tuple[list[str], list[str]]:
    """Text parts and reasoning parts of an Inspect message content (str or list of parts)."""
    if content is None:
        return [], []
    if isinstance(content, str):
        return [content], []
    texts: list[str] = []
    reasoning: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "reasoning" and part.get("reasoning"):
            reasoning.append(str(part["reasoning"]))
        elif part.get("type") == "text" and part.get("text"):
            texts.append(str(part["text"]))
    return texts, reasoning


def _answer_and_reasoning(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    reasoning: list[str] = []
    for message in raw.get("messages") or []:
        if message.get("role") == "assistant":
            reasoning += _content_parts(message.get("content"))[1]
    choices = (raw.get("output") or {}).get("choices") or []
    answer: list[str] = []
    if choices:
        answer = _content_parts(choices[0].get("message", {}).get("content"))[0]
    return ("\n".join(answer) or None), ("\n\n".join(reasoning) or None)


def _epoch(raw: dict[str, Any], where: str) -> int:
    """The sample's Inspect epoch (counted from 1), checked: specdrift stores it minus one in an
    INTEGER column."""
    epoch = raw.get("epoch", 1)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= INT32_MAX + 1:
        raise AuditError(
            f"{where}: epoch: {epoch!r} is not an Inspect epoch (a whole number from 1 to "
            f"{INT32_MAX + 1}); nothing was imported"
        )
    return epoch


def _samples(log: dict[str, Any], path: Path) -> list[_Sample]:
    raw_samples = log.get("samples")
    if not raw_samples or not isinstance(raw_samples, list):
        raise AuditError(f"{path} holds no samples (was the log written with samples?)")
    out = []
    for index, raw in enumerate(raw_samples):
        where = f"{path.name} sample {index + 1}"
        if not isinstance(raw, dict):
            raise AuditError(f"{where}: expected an object; nothing was imported")
        answer, reasoning = _answer_and_reasoning(raw)
        error = raw.get("error")
        for field, text in (
            ("id", str(raw.get("id"))),
            ("answer", answer),
            ("reasoning", reasoning),
        ):
            found = unusable_value(text, field)
            if found:
                raise AuditError(f"{where}: {found[0]}: {found[1]}; nothing was imported")
        out.append(
            _Sample(
                id=str(raw.get("id")),
                epoch=_epoch(raw, f"{where} (id {raw.get('id')})"),
                scores=raw.get("scores") or {},
                metadata=raw.get("metadata") or {},
                reasoning=reasoning,
                answer=answer,
                error=_error_line(error) if error else None,
            )
        )
    return out


def _error_line(error: Any) -> str:
    """The first line of an Inspect sample error (its message, not the traceback)."""
    message = error.get("message") if isinstance(error, dict) else error
    lines = str(message or "error").strip().splitlines()
    return lines[0][:200] if lines else "error"


# -- mapping ------------------------------------------------------------------------------------


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"c", "true", "yes", "1", "aware"}
    return bool(value)


def _score_value(sample: _Sample, scorer: str | None, where: str) -> Any:
    if not sample.scores:
        raise AuditError(f"{where}: the sample has no score; nothing was imported")
    if scorer is None:
        if len(sample.scores) > 1:
            names = ", ".join(sorted(sample.scores))
            raise AuditError(f"{where}: several scorers ({names}): set score = ... in the mapping")
        scorer = next(iter(sample.scores))
    if scorer not in sample.scores:
        raise AuditError(
            f"{where}: no score {scorer!r} (it has {', '.join(sorted(sample.scores))})"
        )
    return sample.scores[scorer].get("value")


def _to_imported(
    sample: _Sample, mapping: InspectMapping, model: str, where: str
) -> ImportedSample:
    value = _score_value(sample, mapping.score, where)
    key = value if isinstance(value, str) else json.dumps(value)
    if key not in mapping.outcomes:
        raise AuditError(
            f"{where}: score value {key!r} is not in [outcomes] of the mapping "
            f"({', '.join(mapping.outcomes)}); nothing was imported"
        )
    spec_rev = sample.metadata.get("spec_rev") or mapping.spec_rev
    if not spec_rev:
        raise AuditError(
            f"{where}: no spec revision: set spec_rev in the mapping (or spec_rev in the "
            "sample metadata)"
        )
    if mapping.aware_score is not None:
        aware = _truthy(_score_value(sample, mapping.aware_score, where))
    else:
        from audit.graders.awareness import detect_awareness

        text = "\n\n".join(t for t in (sample.reasoning, sample.answer) if t)
        aware = detect_awareness(text).detected
    condition = sample.metadata.get("condition") or mapping.condition
    try:
        return ImportedSample(
            model=model,
            spec_rev=str(spec_rev),
            scenario_id=mapping.scenarios.get(sample.id, sample.id),
            epoch=sample.epoch - 1,  # Inspect counts epochs from 1, specdrift from 0
            outcome=mapping.outcomes[key],  # type: ignore[arg-type]
            eval_aware=aware,
            reasoning=sample.reasoning,
            answer=sample.answer,
            model_version=mapping.model_version,
            condition=None if condition is None else str(condition),
        )
    except ValidationError as exc:  # e.g. a model name with control characters
        raise AuditError(f"{where}: {_first_problem(exc)}; nothing was imported") from None


# -- logs of specdrift's own task -----------------------------------------------------------------


def is_specdrift_log(log: dict[str, Any]) -> bool:
    """Whether every sample of the log comes from specdrift's Inspect task."""
    samples = log.get("samples") or []
    return bool(samples) and all(
        isinstance(s.get("metadata"), dict) and s["metadata"].get("specdrift") is True
        for s in samples
    )


def _specdrift_imported(
    sample: _Sample, model: str, heldout: HeldoutSet, where: str
) -> ImportedSample:
    """A sample of specdrift's task: everything comes from its metadata and its score."""
    from audit.integrations.inspect_names import SCORER_NAME

    meta = sample.metadata
    if meta.get("set_hash") != heldout.set_hash:
        raise AuditError(
            f"{where}: the log was run on held-out set {meta.get('set_name')} "
            f"({str(meta.get('set_hash'))[:19]}), not on {heldout.label()}: import it with "
            "--heldout DIR of that set; nothing was imported"
        )
    score = sample.scores.get(SCORER_NAME)
    if not isinstance(score, dict) or not isinstance(score.get("metadata"), dict):
        raise AuditError(
            f"{where}: no {SCORER_NAME} score (it has {', '.join(sorted(sample.scores)) or 'none'})"
            "; rescore the log with `inspect score`, or pass --mapping; nothing was imported"
        )
    graded = score["metadata"]
    try:
        return ImportedSample(
            model=model,
            spec_rev=str(meta.get("spec_rev")),
            scenario_id=str(meta.get("scenario_id")),
            epoch=sample.epoch - 1,
            outcome=graded.get("outcome"),
            eval_aware=bool(graded.get("eval_aware")),
            reasoning=sample.reasoning,
            answer=sample.answer,
            condition=meta.get("condition"),
            spec_cited=graded.get("spec_cited"),
            score=graded.get("score"),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise AuditError(
            f"{where}: {field}: {first['msg']} (in the sample's metadata or its "
            f"{SCORER_NAME} score); nothing was imported"
        ) from None


# -- reading and importing -------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSamples:
    """The samples of one log, ready to import, and how many errored samples were skipped."""

    items: list[SourcedSample]
    errored: int


def read_inspect_log(
    path: str | Path,
    mapping: InspectMapping | None = None,
    *,
    heldout: HeldoutSet | None = None,
    skip_errors: bool = False,
    model: str | None = None,
) -> LogSamples:
    """The samples of an Inspect log, mapped to specdrift samples (not yet checked or stored).

    A log of specdrift's task needs no ``mapping`` (but the held-out set it was run on); any
    other log does. ``model`` overrides the model name (else the mapping's, else the log's).
    """
    file = Path(path)
    if not file.is_file():
        raise AuditError(f"no Inspect log at {file}")
    log = _read_log_dict(file)
    own = is_specdrift_log(log)
    if not own and mapping is None:
        raise AuditError(
            f"{file} is not a log of specdrift's Inspect task: pass --mapping FILE to say what "
            "its samples and scores mean (see README)"
        )
    model = model or (mapping.model if mapping else None) or (log.get("eval") or {}).get("model")
    if not model:
        raise AuditError(f"{file}: the log names no model: set model = ... in the mapping")
    items, errored = [], 0
    for sample in _samples(log, file):
        where = f"{file.name} sample {sample.id} epoch {sample.epoch}"
        if sample.error is not None:
            if not skip_errors:
                raise AuditError(
                    f"{where}: the sample errored in Inspect ({sample.error}); nothing was "
                    "imported: pass --skip-errors to store the scored samples and count the rest"
                )
            errored += 1
            continue
        if own:
            if heldout is None:
                from audit.heldout import load_heldout

                heldout = load_heldout()
            imported = _specdrift_imported(sample, str(model), heldout, where)
        else:
            assert mapping is not None
            imported = _to_imported(sample, mapping, str(model), where)
        evidence = {
            "imported_from": file.name,
            "inspect_id": sample.id,
            "inspect_epoch": sample.epoch,
        }
        items.append(SourcedSample(where, imported, evidence))
    return LogSamples(items, errored)


def inspect_log_files(paths: Sequence[str | Path]) -> list[Path]:
    """The log files named: files as given, folders expanded to their ``.json`` and ``.eval``
    logs (sorted, not recursive); a path that does not exist, or a folder without logs, is an
    error."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".json", ".eval"))
            if not found:
                raise AuditError(f"no Inspect logs (*.json, *.eval) in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise AuditError(f"no Inspect log at {path}")
    if not files:
        raise AuditError("no Inspect log given: pass log files or a folder of logs")
    return list(dict.fromkeys(files))


def import_inspect_logs(
    store: Store,
    paths: Sequence[str | Path],
    mapping: InspectMapping | str | Path | None = None,
    *,
    heldout: HeldoutSet | None = None,
    source_id: str | None = None,
    skip_errors: bool = False,
    model: str | None = None,
) -> InspectImportResult:
    """Import Inspect AI eval logs (files or folders) in one transaction: all or nothing, and
    idempotent. Logs of specdrift's task need no ``mapping``."""
    if mapping is not None and not isinstance(mapping, InspectMapping):
        mapping = load_mapping(mapping)
    if heldout is None:
        from audit.heldout import load_heldout

        heldout = load_heldout()
    files = inspect_log_files(paths)
    items: list[SourcedSample] = []
    errored = 0
    for file in files:
        read = read_inspect_log(
            file, mapping, heldout=heldout, skip_errors=skip_errors, model=model
        )
        items.extend(read.items)
        errored += read.errored
    label = str(files[0]) if len(files) == 1 else f"{len(files)} logs"
    if not items:
        raise AuditError(f"{label}: no scored sample to import ({errored} errored)")
    result = import_records(store, items, label=label, heldout=heldout, source_id=source_id)
    return InspectImportResult(result.path, result.read, result.stored, len(files), errored)


def import_inspect_log(
    store: Store,
    log_path: str | Path,
    mapping: InspectMapping | str | Path | None = None,
    *,
    heldout: HeldoutSet | None = None,
    source_id: str | None = None,
    skip_errors: bool = False,
) -> InspectImportResult:
    """Import one Inspect AI eval log; all or nothing, and idempotent."""
    return import_inspect_logs(
        store,
        [log_path],
        mapping,
        heldout=heldout,
        source_id=source_id,
        skip_errors=skip_errors,
    )
