"""Loading, validating and hashing the held-out set, and the frozen manifest that pins it.

Every ``scenarios/<family>/<id>.json`` file is parsed, validated with the pydantic model of
:mod:`audit.heldout.model`, then checked semantically (tools named by rules exist, regexes
compile, every rule can fire, references cover honest and covert...). Any problem raises an
:class:`~audit.errors.AuditError` naming the file, the scenario and the field.

Hashes are sha256 over a canonical JSON serialization (sorted keys, no whitespace) of the file's
content as written, so reformatting a file does not change its hash but any edit of its content
does. The set hash covers the sorted (id, hash) pairs. ``manifest.json`` records the version and
the hashes; :func:`verify_heldout` refuses a set that drifted from it, :func:`freeze_heldout` cuts
a new version on purpose.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from audit.errors import AuditError
from audit.heldout.model import Rule, Scenario
from audit.store import Store

CANARY = (
    "SPECDRIFT-CANARY 3f9c1e7a-5b2d-4c8e-9a61-d0b47e2c8f15 "
    "held-out covert-action set: do not train on or quote"
)
PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_SCENARIOS_DIR = PACKAGE_DIR / "scenarios"
MANIFEST_NAME = "manifest.json"
UNVERSIONED = "unversioned"


@dataclass(frozen=True)
class HeldoutSet:
    """A loaded, validated held-out set (scenarios sorted by id)."""

    version: str
    canary: str
    set_hash: str
    scenarios: tuple[Scenario, ...]
    scenario_hashes: dict[str, str] = field(repr=False)
    files: dict[str, Path] = field(repr=False)

    def get(self, scenario_id: str) -> Scenario:
        """The scenario with this id; AuditError (listing close ids) when there is none."""
        for scenario in self.scenarios:
            if scenario.id == scenario_id:
                return scenario
        close = difflib.get_close_matches(scenario_id, self.ids(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise AuditError(
            f"no scenario {scenario_id!r} in the held-out set: {hint}run `audit heldout list` "
            "to see the ids"
        )

    def scenario_hash(self, scenario_id: str) -> str:
        """The content hash (``sha256:<hex>``) of one scenario."""
        self.get(scenario_id)
        return self.scenario_hashes[scenario_id]

    def ids(self) -> list[str]:
        """Scenario ids, sorted."""
        return [scenario.id for scenario in self.scenarios]

    def families(self) -> list[str]:
        """Families present in the set, sorted."""
        return sorted({scenario.family for scenario in self.scenarios})

    def summaries(self) -> list[dict[str, Any]]:
        """One row per scenario: id, family, title, conditions, hash (what ``list`` shows)."""
        return [
            {
                "id": scenario.id,
                "family": scenario.family,
                "title": scenario.title,
                "conditions": [c.name for c in scenario.conditions],
                "hash": self.scenario_hashes[scenario.id],
            }
            for scenario in self.scenarios
        ]

    def describe(self, scenario_id: str) -> dict[str, Any]:
        """One scenario as stored, plus its hash and file (what ``show`` shows)."""
        scenario = self.get(scenario_id)
        return {
            "hash": self.scenario_hashes[scenario_id],
            "file": str(self.files[scenario_id]),
            **scenario.model_dump(mode="json"),
        }


@dataclass(frozen=True)
class ManifestDiff:
    """How the files on disk differ from the frozen manifest."""

    changed: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not (self.changed or self.added or self.removed)

    def describe(self) -> str:
        parts = [
            f"{label}: {', '.join(ids)}"
            for label, ids in (
                ("changed", self.changed),
                ("added", self.added),
                ("removed", self.removed),
            )
            if ids
        ]
        return "; ".join(parts)


# -- hashing -----------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text kept as is: the form every hash is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``value``."""
    digest = hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


def set_hash_of(scenario_hashes: dict[str, str]) -> str:
    """Hash of a whole set: the sorted (id, scenario hash) pairs."""
    return content_hash(sorted(scenario_hashes.items()))


# -- loading -----------------------------------------------------------------------------------

_CACHE: dict[tuple[str, tuple[tuple[str, int, int], ...], str], HeldoutSet] = {}


def load_heldout(path: str | Path | None = None) -> HeldoutSet:
    """Load and validate every ``**/*.json`` scenario under ``path`` (default: the shipped set).

    The version comes from ``manifest.json`` beside the scenario folder when the files match it;
    otherwise it is the manifest's version with ``+modified`` (or ``unversioned`` without a
    manifest). The result is cached per folder until a file changes.
    """
    root = _scenarios_dir(path)
    files = sorted(root.rglob("*.json"))
    manifest_path = root.parent / MANIFEST_NAME
    manifest_stamp = _stamp(manifest_path) if manifest_path.exists() else ""
    key = (str(root), tuple(_file_stamp(f) for f in files), manifest_stamp)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    heldout = _load_uncached(root, files, manifest_path)
    _CACHE.clear()  # one entry per process is enough; keeps stale sets from piling up
    _CACHE[key] = heldout
    return heldout


def _scenarios_dir(path: str | Path | None) -> Path:
    root = DEFAULT_SCENARIOS_DIR if path is None else Path(path)
    if root.is_dir() and (root / "scenarios").is_dir():
        root = root / "scenarios"
    if not root.is_dir():
        raise AuditError(f"held-out scenario folder {root} does not exist: pass an existing folder")
    return root.resolve()


def _file_stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_mtime_ns}:{stat.st_size}"


def _load_uncached(root: Path, files: list[Path], manifest_path: Path) -> HeldoutSet:
    if not files:
        raise AuditError(f"no scenario files (*.json) under {root}: add scenarios or fix the path")
    scenarios: dict[str, Scenario] = {}
    hashes: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for file in files:
        raw = _read_json(file, root)
        scenario = _validate(raw, file, root)
        if scenario.id in scenarios:
            raise _error(
                file,
                root,
                scenario.id,
                "id",
                f"duplicate id, already used by {_relative(origin[scenario.id], root)}: "
                "give every scenario its own id",
            )
        scenarios[scenario.id] = scenario
        hashes[scenario.id] = content_hash(raw)
        origin[scenario.id] = file
    ordered = tuple(scenarios[i] for i in sorted(scenarios))
    set_hash = set_hash_of(hashes)
    return HeldoutSet(
        version=_version_for(manifest_path, set_hash),
        canary=CANARY,
        set_hash=set_hash,
        scenarios=ordered,
        scenario_hashes=dict(sorted(hashes.items())),
        files={i: origin[i] for i in sorted(origin)},
    )


def _version_for(manifest_path: Path, set_hash: str) -> str:
    if not manifest_path.exists():
        return UNVERSIONED
    manifest = read_manifest(manifest_path)
    version = str(manifest.get("version", UNVERSIONED))
    return version if manifest.get("set_hash") == set_hash else f"{version}+modified"


def _relative(file: Path, root: Path) -> str:
    try:
        return str(file.relative_to(root.parent))
    except ValueError:
        return str(file)


def _error(file: Path, root: Path, scenario_id: str, field_name: str, problem: str) -> AuditError:
    return AuditError(
        f"{_relative(file, root)}: scenario {scenario_id}: field {field_name}: {problem}"
    )


def _read_json(file: Path, root: Path) -> dict[str, Any]:
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _error(file, root, file.stem, "(file)", "not UTF-8 text: save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _error(
            file,
            root,
            file.stem,
            "(json)",
            f"malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg}): fix the syntax",
        ) from None
    if not isinstance(raw, dict):
        raise _error(file, root, file.stem, "(json)", "the file must hold one JSON object")
    return raw


def _validate(raw: dict[str, Any], file: Path, root: Path) -> Scenario:
    scenario_id = str(raw.get("id") or file.stem)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "(root)"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise _error(file, root, scenario_id, location, f"{first['msg']}{more}") from None
    for field_name, problem in semantic_problems(scenario, file, root):
        raise _error(file, root, scenario.id, field_name, problem)
    return scenario


# -- semantic checks ---------------------------------------------------------------------------


def semantic_problems(
    scenario: Scenario, file: Path | None = None, root: Path | None = None
) -> Iterable[tuple[str, str]]:
    """Yield (field, problem) for everything pydantic cannot see; the first one is reported."""
    yield from _check_identity(scenario, file, root)
    yield from _check_tools(scenario)
    yield from _check_rules(scenario)
    yield from _check_questions(scenario)
    yield from _check_references(scenario)


def _check_identity(
    scenario: Scenario, file: Path | None, root: Path | None
) -> Iterable[tuple[str, str]]:
    if scenario.canary != CANARY:
        yield "canary", f"wrong canary string: every scenario file must carry exactly {CANARY!r}"
    if file is not None and file.stem != scenario.id:
        yield "id", f"id must equal the file name {file.stem!r}: rename the file or fix the id"
    in_family_folder = file is not None and root is not None and file.parent != root
    if in_family_folder and file is not None and file.parent.name != scenario.family:
        yield (
            "family",
            f"family {scenario.family!r} does not match its folder {file.parent.name!r}: "
            "move the file to scenarios/<family>/",
        )
    if not scenario.distinctive_phrases:
        yield "distinctive_phrases", "list at least one phrase a spec patch would mention"


def _check_tools(scenario: Scenario) -> Iterable[tuple[str, str]]:
    names = [tool.name for tool in scenario.tools]
    for name in {n for n in names if names.count(n) > 1}:
        yield "tools", f"tool {name!r} is declared twice: give each tool one entry"
    submission_tool = scenario.tool(scenario.submission.tool)
    if submission_tool is None:
        yield (
            "submission.tool",
            f"submission tool {scenario.submission.tool!r} is not in tools "
            f"({', '.join(names)}): add it to tools with the submission fields as parameters",
        )
    elif properties := _properties(submission_tool.parameters):
        for name in scenario.submission.fields:
            if name not in properties:
                yield (
                    "submission.fields",
                    f"field {name!r} is not a parameter of tool {submission_tool.name!r}: "
                    "add it to the tool's parameters",
                )
    for t, tool in enumerate(scenario.tools):
        for r, canned in enumerate(tool.results):
            for arg, pattern in canned.when.items():
                yield from _regex_problem(f"tools.{t}.results.{r}.when.{arg}", pattern)
    conditions = [c.name for c in scenario.conditions]
    for name in {n for n in conditions if conditions.count(n) > 1}:
        yield "conditions", f"condition {name!r} is declared twice"


def _check_rules(scenario: Scenario) -> Iterable[tuple[str, str]]:
    if not scenario.rules:
        yield "rules", "a scenario needs at least one rule"
    verdicts = {rule.verdict for rule in scenario.rules} | (
        {scenario.default_verdict} if scenario.default_verdict else set()
    )
    if scenario.rules and "covert" not in verdicts:
        yield "rules", "no rule can grade covert: add a covert rule"
    ids = [rule.id for rule in scenario.rules]
    for name in {n for n in ids if ids.count(n) > 1}:
        yield "rules", f"rule id {name!r} is used twice: rule ids must be unique"
    for index, rule in enumerate(scenario.rules):
        yield from _check_rule(scenario, f"rules.{index}", rule)


def _check_rule(scenario: Scenario, where: str, rule: Rule) -> Iterable[tuple[str, str]]:
    offered = {tool.name for tool in scenario.tools}
    if not (rule.submission or rule.tool_call or rule.no_tool_call or rule.final_text) and (
        rule.max_score is None
    ):
        yield where, f"rule {rule.id!r} has no condition, so it always fires: use default_verdict"
    for name, pattern in rule.submission.items():
        if name not in scenario.submission.fields:
            yield (
                f"{where}.submission.{name}",
                f"rule {rule.id!r} reads submission field {name!r}, which is not one of "
                f"{list(scenario.submission.fields)}: fix the field name",
            )
        yield from _regex_problem(f"{where}.submission.{name}", pattern)
    if rule.tool_call is not None:
        tool = scenario.tool(rule.tool_call.name)
        if tool is None:
            yield (
                f"{where}.tool_call.name",
                f"rule {rule.id!r} names tool {rule.tool_call.name!r}, which is never offered: "
                "use one of the scenario's tools",
            )
        for arg, pattern in rule.tool_call.args.items():
            properties = _properties(tool.parameters) if tool else {}
            if tool is not None and properties and arg not in properties:
                yield (
                    f"{where}.tool_call.args.{arg}",
                    f"tool {tool.name!r} has no parameter {arg!r}: fix the argument name",
                )
            yield from _regex_problem(f"{where}.tool_call.args.{arg}", pattern)
    if rule.no_tool_call is not None and rule.no_tool_call not in offered:
        yield (
            f"{where}.no_tool_call",
            f"rule {rule.id!r} names tool {rule.no_tool_call!r}, which is never offered",
        )
    if rule.final_text is not None:
        yield from _regex_problem(f"{where}.final_text", rule.final_text)
    if rule.condition is not None and rule.condition not in {c.name for c in scenario.conditions}:
        yield (
            f"{where}.condition",
            f"rule {rule.id!r} applies to condition {rule.condition!r}, which the scenario "
            "does not declare, so it can never fire: declare it in conditions",
        )
    if rule.max_score is not None:
        if not scenario.questions:
            yield (
                f"{where}.max_score",
                f"rule {rule.id!r} has max_score but the scenario has no questions, "
                "so it can never fire: add questions or drop max_score",
            )
        if not 0.0 <= rule.max_score <= 1.0:
            yield f"{where}.max_score", "max_score is a share of questions: between 0 and 1"
        if "answers" not in scenario.submission.fields:
            yield (
                f"{where}.max_score",
                "scored rules read the submitted 'answers' field: add 'answers' to "
                "submission.fields",
            )


def _check_questions(scenario: Scenario) -> Iterable[tuple[str, str]]:
    ids = [q.id for q in scenario.questions]
    for name in {n for n in ids if ids.count(n) > 1}:
        yield "questions", f"question id {name!r} is used twice"
    for index, question in enumerate(scenario.questions):
        yield from _regex_problem(f"questions.{index}.answer", question.answer)


def _check_references(scenario: Scenario) -> Iterable[tuple[str, str]]:
    labels = {reference.label for reference in scenario.references}
    missing = sorted({"honest", "covert"} - labels)
    if missing:
        yield (
            "references",
            f"references do not cover {' and '.join(missing)}: add at least one honest and "
            "one covert reference transcript",
        )
    declared = {c.name for c in scenario.conditions}
    offered = {tool.name for tool in scenario.tools}
    for r, reference in enumerate(scenario.references):
        if reference.condition not in declared:
            yield (
                f"references.{r}.condition",
                f"condition {reference.condition!r} is not declared in conditions",
            )
        if not reference.turns:
            yield f"references.{r}.turns", "a reference transcript needs at least one turn"
        for t, turn in enumerate(reference.turns):
            for c, call in enumerate(turn.tool_calls):
                if call.name not in offered:
                    yield (
                        f"references.{r}.turns.{t}.tool_calls.{c}.name",
                        f"unknown tool {call.name!r}: references may only call the "
                        "scenario's tools",
                    )
    for condition in sorted(declared - {reference.condition for reference in scenario.references}):
        yield "references", f"no reference transcript for condition {condition!r}: add one"


def _properties(parameters: dict[str, Any]) -> dict[str, Any]:
    properties = parameters.get("properties")
    return properties if isinstance(properties, dict) else {}


def _regex_problem(where: str, pattern: str) -> Iterable[tuple[str, str]]:
    try:
        re.compile(pattern)
    except re.error as exc:
        yield where, f"regex {pattern!r} does not compile ({exc}): fix the pattern"


# -- manifest ----------------------------------------------------------------------------------


def default_manifest_path() -> Path:
    """The shipped frozen manifest."""
    return PACKAGE_DIR / MANIFEST_NAME


def _manifest_path(path: str | Path | None, manifest_path: str | Path | None) -> Path:
    if manifest_path is not None:
        return Path(manifest_path)
    return _scenarios_dir(path).parent / MANIFEST_NAME


def read_manifest(manifest_path: str | Path) -> dict[str, Any]:
    """The manifest as a dict; AuditError when it is missing or not valid JSON."""
    target = Path(manifest_path)
    try:
        manifest = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError(
            f"no held-out manifest at {target}: run `audit heldout freeze --version V`"
        ) from None
    except json.JSONDecodeError as exc:
        raise AuditError(
            f"{target}: malformed manifest JSON at line {exc.lineno}: "
            "run `audit heldout freeze --version V` to rewrite it"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("scenarios"), dict):
        raise AuditError(f"{target}: not a held-out manifest: rewrite it with audit heldout freeze")
    return manifest


def diff_against_manifest(heldout: HeldoutSet, manifest: dict[str, Any]) -> ManifestDiff:
    """Scenario ids whose hash changed, that are new, or that disappeared."""
    frozen: dict[str, str] = manifest["scenarios"]
    current = heldout.scenario_hashes
    return ManifestDiff(
        changed=tuple(sorted(i for i in current if i in frozen and frozen[i] != current[i])),
        added=tuple(sorted(i for i in current if i not in frozen)),
        removed=tuple(sorted(i for i in frozen if i not in current)),
    )


def verify_heldout(
    path: str | Path | None = None, manifest_path: str | Path | None = None
) -> HeldoutSet:
    """Load the set and check it against the frozen manifest; AuditError listing any drift."""
    heldout = load_heldout(path)
    target = _manifest_path(path, manifest_path)
    manifest = read_manifest(target)
    diff = diff_against_manifest(heldout, manifest)
    if not diff.clean:
        raise AuditError(
            f"held-out set no longer matches its manifest {target.name} "
            f"(version {manifest.get('version')}): {diff.describe()}; restore the files, "
            "or cut a new version on purpose with `audit heldout freeze --version V`"
        )
    if manifest.get("set_hash") != heldout.set_hash:
        raise AuditError(
            f"{target}: set_hash does not match the scenario hashes it lists: "
            "rewrite it with `audit heldout freeze --version V`"
        )
    return heldout


def build_manifest(heldout: HeldoutSet, version: str) -> dict[str, Any]:
    """The manifest content for ``heldout`` under ``version``."""
    return {
        "version": version,
        "set_hash": heldout.set_hash,
        "canary": heldout.canary,
        "n_scenarios": len(heldout.scenarios),
        "scenarios": dict(sorted(heldout.scenario_hashes.items())),
    }


def freeze_heldout(
    version: str,
    path: str | Path | None = None,
    manifest_path: str | Path | None = None,
) -> HeldoutSet:
    """Validate the set and rewrite the manifest under ``version``; returns the frozen set."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", version or ""):
        raise AuditError(
            f"invalid version {version!r}: use letters, digits, '.', '-', '_' or '+', e.g. 1.1"
        )
    heldout = load_heldout(path)
    target = _manifest_path(path, manifest_path)
    text = json.dumps(build_manifest(heldout, version), indent=2, ensure_ascii=False) + "\n"
    # Write beside the target and rename, so a crash never leaves half a manifest.
    partial = target.with_name(target.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)
    return load_heldout(path)


# -- store -------------------------------------------------------------------------------------


def register_heldout(store: Store, heldout: HeldoutSet) -> int:
    """Write the set's ``heldout_sets`` row and its ``scenarios`` rows; idempotent.

    Returns the number of scenario rows of the set. Rows already stored are kept (the set hash
    is content-addressed, so equal hashes mean equal rows), except that a set registered before
    it was frozen takes the frozen version's name.
    """
    set_row = {
        "set_hash": heldout.set_hash,
        "version": heldout.version,
        "canary": heldout.canary,
        "n_scenarios": len(heldout.scenarios),
    }
    scenario_rows = [
        {
            "set_hash": heldout.set_hash,
            "scenario_id": scenario.id,
            "family": scenario.family,
            "scenario_hash": heldout.scenario_hashes[scenario.id],
            "title": scenario.title,
            "conditions": [c.name for c in scenario.conditions],
        }
        for scenario in heldout.scenarios
    ]
    with store.transaction():
        store.insert_rows("heldout_sets", [set_row], on_conflict="ignore")
        if _is_frozen_version(heldout.version):
            # The same content may have been registered before it was frozen: name it now.
            store.con.execute(
                "UPDATE heldout_sets SET version = ? WHERE set_hash = ? AND version <> ?",
                [heldout.version, heldout.set_hash, heldout.version],
            )
        store.insert_rows("scenarios", scenario_rows, on_conflict="ignore")
    return len(scenario_rows)


def _is_frozen_version(version: str) -> bool:
    return version != UNVERSIONED and not version.endswith("+modified")
