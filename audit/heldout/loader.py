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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from audit.errors import AuditError
from audit.heldout.checks import CANARY, semantic_problems, twin_problems
from audit.heldout.families import FamilyFile, families_path, read_families
from audit.heldout.model import Family, Scenario
from audit.heldout.problems import PLACEHOLDER, SetProblem, placeholder_message
from audit.store import Store
from audit.store.rows import HeldoutFamilyRow, HeldoutSetRow, ScenarioRow, register_set

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
    name: str = "unnamed"
    """The set's name: the manifest's ``name``, else its folder's name."""
    family_specs: dict[str, Family] = field(default_factory=dict, repr=False)
    """Every family the set declares (its families.toml, else the starter set's)."""
    families_hash: str = ""
    """Content hash of the family declarations (pinned by the manifest, not in ``set_hash``)."""
    folder: Path | None = None
    """The set folder (holding scenarios/, families.toml and manifest.json)."""

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

    def public_ids(self) -> list[str]:
        """Ids of the scenarios that are not sealed twins, sorted."""
        return [scenario.id for scenario in self.scenarios if not scenario.sealed]

    def sealed_ids(self) -> list[str]:
        """Ids of the sealed twins, sorted."""
        return [scenario.id for scenario in self.scenarios if scenario.sealed]

    def twin_pairs(self) -> list[tuple[str, str]]:
        """(public id, twin id) for every sealed twin, sorted."""
        return sorted(
            (scenario.twin_of, scenario.id)
            for scenario in self.scenarios
            if scenario.twin_of is not None
        )

    def without_twins(self) -> list[str]:
        """Public scenarios that have no sealed twin (patching there rests on text matching)."""
        twinned = {public for public, _ in self.twin_pairs()}
        return [i for i in self.public_ids() if i not in twinned]

    def families(self) -> list[str]:
        """Families present in the set, sorted."""
        return sorted({scenario.family for scenario in self.scenarios})

    def family(self, name: str) -> Family:
        """The declaration of a family of the set; AuditError when it has none."""
        try:
            return self.family_specs[name]
        except KeyError:
            raise AuditError(
                f"family {name!r} is not declared in held-out set {self.name}"
            ) from None

    def label(self) -> str:
        """``name version (hash prefix)``: how messages and reports name the set."""
        return f"{self.name} {self.version} ({self.set_hash[:19]})"

    def summaries(self) -> list[dict[str, Any]]:
        """One row per scenario (what ``list`` shows): id, family, twin_of, hash, and for
        public scenarios their title and conditions. A sealed twin's title could tell its
        surface, so it is never listed."""
        return [
            {
                "id": scenario.id,
                "family": scenario.family,
                "twin_of": scenario.twin_of,
                "sealed": scenario.sealed,
                "title": None if scenario.sealed else scenario.title,
                "conditions": None if scenario.sealed else [c.name for c in scenario.conditions],
                "hash": self.scenario_hashes[scenario.id],
            }
            for scenario in self.scenarios
        ]

    def describe(self, scenario_id: str, *, unseal: bool = False) -> dict[str, Any]:
        """One scenario as stored, plus its hash and file (what ``show`` shows).

        A sealed twin is refused unless ``unseal``: the people who edit the spec must never read
        it, or it stops telling a surface fix from a real one.
        """
        scenario = self.get(scenario_id)
        if scenario.sealed and not unseal:
            raise AuditError(
                f"scenario {scenario_id} is a sealed twin (of {scenario.twin_of}): its text is "
                "withheld from anyone who edits the spec; pass --unseal only if you never will"
            )
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
    return _sha256(canonical_json(value))


def _sha256(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


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
    declared = families_path(root.parent)
    stamps = "|".join(_stamp(p) if p.exists() else "" for p in (manifest_path, declared))
    key = (str(root), tuple(_file_stamp(f) for f in files), stamps)
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


def _load_uncached(root: Path, files: list[Path], manifest_path: Path | None) -> HeldoutSet:
    if not files:
        raise AuditError(f"no scenario files (*.json) under {root}: add scenarios or fix the path")
    found = _collect(root, files, every_error=False)
    if found.problems:
        raise found.problems[0].error()
    scenarios, hashes, origin = found.scenarios, found.hashes, found.origin
    ordered = tuple(scenarios[i] for i in sorted(scenarios))
    set_hash = set_hash_of(hashes)
    return HeldoutSet(
        version=_version_for(manifest_path, set_hash),
        canary=CANARY,
        set_hash=set_hash,
        scenarios=ordered,
        scenario_hashes=dict(sorted(hashes.items())),
        files={i: origin[i] for i in sorted(origin)},
        name=_name_for(manifest_path, root.parent),
        family_specs=dict(sorted(found.family_file.families.items())),
        families_hash=content_hash(found.family_file.as_data()),
        folder=root.parent,
    )


@dataclass(frozen=True)
class SetCheck:
    """What checking a set folder found: the scenarios that validated and every problem."""

    root: Path
    family_file: FamilyFile
    scenarios: dict[str, Scenario]
    hashes: dict[str, str]
    origin: dict[str, Path]
    problems: list[SetProblem]
    n_files: int


def check_heldout(path: str | Path | None = None) -> SetCheck:
    """Run every load-time check on a set folder and collect all problems (none raised).

    What ``audit heldout check`` prints: the families file, each scenario file (JSON, skeleton
    placeholders, every schema error, every semantic problem, reference grades), duplicate ids
    and sealed twins, each with file, scenario or family, field and fix.
    """
    root = _scenarios_dir(path)
    files = sorted(root.rglob("*.json"))
    found = _collect(root, files, every_error=True)
    if not files:
        missing = SetProblem(
            str(root),
            "",
            "(folder)",
            "no scenario files (*.json): add one with `audit heldout new`, or fix the path",
        )
        return _with_problems(found, [missing])
    return found


def _with_problems(found: SetCheck, more: list[SetProblem]) -> SetCheck:
    return SetCheck(
        found.root,
        found.family_file,
        found.scenarios,
        found.hashes,
        found.origin,
        [*found.problems, *more],
        found.n_files,
    )


def _collect(root: Path, files: list[Path], *, every_error: bool) -> SetCheck:
    family_file, problems = read_families(root.parent)
    declared_in = _declared_in(family_file, root)
    scenarios: dict[str, Scenario] = {}
    hashes: dict[str, str] = {}
    origin: dict[str, Path] = {}
    unloaded: set[str] = set()  # files with problems of their own: not reported again as missing
    for file in files:
        raw, problem = _read_json(file, root)
        if raw is None:
            problems.append(problem)  # type: ignore[arg-type]
            unloaded.add(file.stem)
            continue
        canonical = canonical_json(raw)
        # Most files have no placeholder: look for one only where the text has the marker.
        left = list(_placeholders(raw, file, root)) if "<<fill in:" in canonical else []
        if left:
            problems.extend(left if every_error else left[:1])
            unloaded.add(file.stem)
            continue
        scenario, found = _validate(
            raw, file, root, family_file.for_checks(), declared_in, every_error
        )
        problems.extend(found)
        if scenario is None:
            unloaded.add(file.stem)
            continue
        if scenario.id in scenarios:
            problems.append(
                _problem(
                    file,
                    root,
                    scenario.id,
                    "id",
                    f"duplicate id, already used by {_relative(origin[scenario.id], root)}: "
                    "give every scenario its own id",
                )
            )
            continue
        scenarios[scenario.id] = scenario
        hashes[scenario.id] = _sha256(canonical)
        origin[scenario.id] = file
    for scenario_id, field_name, message in twin_problems(scenarios):
        if field_name == "twin_of" and scenarios[scenario_id].twin_of in unloaded:
            continue  # its public scenario's file is broken, and that is reported already
        problems.append(_problem(origin[scenario_id], root, scenario_id, field_name, message))
    return SetCheck(root, family_file, scenarios, hashes, origin, problems, len(files))


def _declared_in(family_file: FamilyFile, root: Path) -> str:
    """Where a missing family is to be declared, as the message tells it."""
    if family_file.own:
        return _relative(family_file.path, root)
    target = _relative(families_path(root.parent), root)
    return (
        f"a new {target} (the set has none, so the starter set's families apply; list there "
        "every family the set uses)"
    )


def _placeholders(raw: Any, file: Path, root: Path) -> list[SetProblem]:
    """Every string of the file that still holds a skeleton placeholder, with its field."""
    scenario_id = str(raw.get("id") or file.stem) if isinstance(raw, dict) else file.stem
    found: list[SetProblem] = []

    def walk(value: Any, where: tuple[str, ...]) -> None:
        if isinstance(value, str):
            match = PLACEHOLDER.search(value)
            if match:
                found.append(
                    _problem(
                        file,
                        root,
                        scenario_id,
                        ".".join(where) or "(root)",
                        placeholder_message(match.group(0)),
                    )
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*where, str(key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, (*where, str(index)))

    walk(raw, ())
    return found


def _name_for(manifest_path: Path | None, set_dir: Path) -> str:
    """The manifest's name for the set, else the set folder's name."""
    if manifest_path is not None and manifest_path.exists():
        name = read_manifest(manifest_path).get("name")
        if isinstance(name, str) and name:
            return name
    return set_dir.name or "unnamed"


def _version_for(manifest_path: Path | None, set_hash: str) -> str:
    """The frozen version whose hash the files match (current or earlier), else ``V+modified``."""
    if manifest_path is None or not manifest_path.exists():
        return UNVERSIONED
    manifest = read_manifest(manifest_path)
    version = str(manifest.get("version", UNVERSIONED))
    if manifest.get("set_hash") == set_hash:
        return version
    for entry in _history(manifest):
        if entry.get("set_hash") == set_hash:
            return str(entry.get("version"))
    return f"{version}+modified"


def manifest_history(
    path: str | Path | None = None, manifest_path: str | Path | None = None
) -> list[dict[str, Any]]:
    """Earlier frozen versions listed in the manifest (oldest first), each with its hashes."""
    return _history(read_manifest(_manifest_path(path, manifest_path)))


def _history(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    history = manifest.get("history", [])
    if not isinstance(history, list):
        return []
    return [entry for entry in history if isinstance(entry, dict)]


def _relative(file: Path, root: Path) -> str:
    try:
        return str(file.relative_to(root.parent))
    except ValueError:
        return str(file)


def _problem(file: Path, root: Path, scenario_id: str, field_name: str, message: str) -> SetProblem:
    return SetProblem(_relative(file, root), f"scenario {scenario_id}", field_name, message)


def _read_json(file: Path, root: Path) -> tuple[dict[str, Any] | None, SetProblem | None]:
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return None, _problem(file, root, file.stem, "(file)", "not UTF-8 text: save it as UTF-8")
    except json.JSONDecodeError as exc:
        return None, _problem(
            file,
            root,
            file.stem,
            "(json)",
            f"malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg}): fix the syntax",
        )
    if not isinstance(raw, dict):
        return None, _problem(file, root, file.stem, "(json)", "the file must hold one JSON object")
    return raw, None


def _validate(
    raw: dict[str, Any],
    file: Path,
    root: Path,
    families: dict[str, Family | None],
    declared_in: str,
    every_error: bool,
) -> tuple[Scenario | None, list[SetProblem]]:
    """The validated scenario (None when its schema is broken) and its problems."""
    scenario_id = str(raw.get("id") or file.stem)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if not every_error:
            location = ".".join(str(part) for part in errors[0]["loc"]) or "(root)"
            more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
            return None, [_problem(file, root, scenario_id, location, f"{errors[0]['msg']}{more}")]
        return None, [
            _problem(
                file,
                root,
                scenario_id,
                ".".join(str(part) for part in error["loc"]) or "(root)",
                str(error["msg"]),
            )
            for error in errors
        ]
    problems = [
        _problem(file, root, scenario.id, field_name, message)
        for field_name, message in semantic_problems(scenario, file, root, families, declared_in)
    ]
    return scenario, problems


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
    frozen_families = manifest.get("families_hash")
    if frozen_families is not None and frozen_families != heldout.families_hash:
        raise AuditError(
            f"the family declarations (families.toml) changed since version "
            f"{manifest.get('version')} was frozen: restore them, or cut a new version on purpose "
            "with `audit heldout freeze --version V`"
        )
    return heldout


def build_manifest(
    heldout: HeldoutSet,
    version: str,
    previous: dict[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The manifest content for ``heldout`` under ``version``.

    ``previous`` is the manifest being replaced: its frozen version joins ``history`` (oldest
    first, each with its set hash and scenario hashes), so every label keeps its content on record.
    ``name`` names the set (default: the previous manifest's name, else the set's).
    """
    history = _history(previous) if previous else []
    if previous and previous.get("version") not in (None, version):
        history.append(
            {
                "version": previous["version"],
                "set_hash": previous.get("set_hash"),
                "n_scenarios": previous.get("n_scenarios"),
                "scenarios": previous.get("scenarios", {}),
            }
        )
    manifest: dict[str, Any] = {
        "name": name or (previous or {}).get("name") or heldout.name,
        "version": version,
        "set_hash": heldout.set_hash,
        "canary": heldout.canary,
        "n_scenarios": len(heldout.scenarios),
        "families_hash": heldout.families_hash,
        "scenarios": dict(sorted(heldout.scenario_hashes.items())),
    }
    kept = [entry for entry in history if entry.get("version") != version]
    if kept:
        manifest["history"] = kept
    return manifest


def freeze_heldout(
    version: str,
    path: str | Path | None = None,
    manifest_path: str | Path | None = None,
    name: str | None = None,
) -> HeldoutSet:
    """Validate the set and write the manifest under ``version``; returns the frozen set.

    A label already frozen with different content (the current version or one in ``history``)
    is refused: versions name content, so reusing one would make two sets look alike. Freezing
    the same content under the same label again changes nothing. ``name`` names the set in
    reports (default: the name already in the manifest, else the set folder's name).
    """
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", name):
        raise AuditError(
            f"invalid set name {name!r}: use letters, digits, '.', '-', '_' or '+', "
            "e.g. acme-private"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", version or ""):
        raise AuditError(
            f"invalid version {version!r}: use letters, digits, '.', '-', '_' or '+', e.g. 1.1"
        )
    root = _scenarios_dir(path)
    # Validated without reading the manifest: freezing is how a broken manifest gets rewritten.
    heldout = _load_uncached(root, sorted(root.rglob("*.json")), None)
    target = _manifest_path(path, manifest_path)
    previous = _readable_manifest(target)
    if previous is not None:
        _refuse_reused_label(previous, version, heldout.set_hash)
    manifest = build_manifest(heldout, version, previous, name)
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    # Write beside the target and rename, so a crash never leaves half a manifest.
    partial = target.with_name(target.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)
    return load_heldout(path)


def _readable_manifest(target: Path) -> dict[str, Any] | None:
    """The manifest being replaced; None when there is none or it is unreadable (rewritten)."""
    if not target.exists():
        return None
    try:
        return read_manifest(target)
    except AuditError:
        return None


def _refuse_reused_label(previous: dict[str, Any], version: str, set_hash: str) -> None:
    frozen = [previous, *_history(previous)]
    for entry in frozen:
        if entry.get("version") == version and entry.get("set_hash") != set_hash:
            raise AuditError(
                f"version {version} is already frozen with set {entry.get('set_hash')}; the files "
                f"now hash to {set_hash}: pick a new label (current: {previous.get('version')}), "
                "e.g. `audit heldout freeze --version "
                f"{_next_label(str(previous.get('version')))}`"
            )


def _next_label(version: str) -> str:
    """A suggestion: the last number of ``version`` plus one (``1.0`` -> ``1.1``)."""
    match = re.search(r"(\d+)(\D*)$", version)
    if match is None:
        return f"{version}.1"
    return f"{version[: match.start(1)]}{int(match.group(1)) + 1}{match.group(2)}"


# -- store -------------------------------------------------------------------------------------


def register_heldout(store: Store, heldout: HeldoutSet) -> int:
    """Write the set's ``heldout_sets`` row, its ``scenarios`` and its ``heldout_families`` rows;
    idempotent.

    Returns the number of scenario rows of the set. Rows already stored are kept (the set hash
    is content-addressed, so equal hashes mean equal rows), except that a set registered before
    it was frozen takes the frozen version's name, and the set's name and family declarations
    (pinned by the manifest, not by the set hash) are those registered last.
    """
    held_set = HeldoutSetRow(
        set_hash=heldout.set_hash,
        version=heldout.version,
        canary=heldout.canary,
        n_scenarios=len(heldout.scenarios),
        name=heldout.name,
        families_hash=heldout.families_hash or None,
    )
    scenario_rows = [
        ScenarioRow(
            set_hash=heldout.set_hash,
            scenario_id=scenario.id,
            family=scenario.family,
            scenario_hash=heldout.scenario_hashes[scenario.id],
            title=public_title(scenario),
            conditions=tuple(c.name for c in scenario.conditions),
            twin_of=scenario.twin_of,
            sealed=scenario.sealed,
        )
        for scenario in heldout.scenarios
    ]
    family_rows = [
        HeldoutFamilyRow(
            set_hash=heldout.set_hash,
            family=family.name,
            description=family.description,
            scoring=family.scoring,
            reference_condition=family.reference_condition,
            incentive_condition=family.incentive_condition,
        )
        for family in heldout.family_specs.values()
    ]
    # The same content may have been registered before it was frozen: name it now.
    version_wins = _is_frozen_version(heldout.version)
    register_set(store, held_set, scenario_rows, family_rows, version_wins=version_wins)
    return len(scenario_rows)


def public_title(scenario: Scenario) -> str:
    """The title stored and shown for a scenario: a sealed twin's own title is withheld."""
    return f"sealed twin of {scenario.twin_of}" if scenario.sealed else scenario.title


def _is_frozen_version(version: str) -> bool:
    return version != UNVERSIONED and not version.endswith("+modified")
