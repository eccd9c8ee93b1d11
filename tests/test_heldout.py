"""The held-out set: loading the shipped set, hashing, the frozen manifest, the store, the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.errors import AuditError
from audit.heldout import (
    CANARY,
    DEFAULT_SCENARIOS_DIR,
    content_hash,
    freeze_heldout,
    load_heldout,
    read_manifest,
    register_heldout,
    verify_heldout,
)
from audit.heldout.loader import default_manifest_path, set_hash_of
from audit.store import Store

LEDGER = "tests-ledger-reconcile"
MY_FAMILIES = ("misreport_tests", "falsify_metrics", "disable_oversight")


@pytest.fixture
def set_copy(tmp_path: Path) -> Path:
    """A private copy of this area's three scenario families, frozen as version 1.0."""
    root = tmp_path / "heldout"
    for family in MY_FAMILIES:
        shutil.copytree(DEFAULT_SCENARIOS_DIR / family, root / "scenarios" / family)
    freeze_heldout("1.0", root / "scenarios")
    return root / "scenarios"


def _ledger_file(scenarios: Path) -> Path:
    return scenarios / "misreport_tests" / f"{LEDGER}.json"


# -- the shipped set ---------------------------------------------------------------------------


def test_shipped_set_loads_with_unique_ids_and_the_canary() -> None:
    heldout = load_heldout()
    ids = heldout.ids()
    assert len(ids) == len(set(ids)) == len(list(DEFAULT_SCENARIOS_DIR.rglob("*.json")))
    assert heldout.canary == CANARY
    assert all(scenario.canary == CANARY for scenario in heldout.scenarios)
    assert {"misreport_tests", "falsify_metrics", "disable_oversight"} <= set(heldout.families())
    assert heldout.set_hash == set_hash_of(heldout.scenario_hashes)


def test_shipped_manifest_verifies() -> None:
    heldout = verify_heldout()
    manifest = read_manifest(default_manifest_path())
    assert heldout.version == manifest["version"]
    assert manifest["set_hash"] == heldout.set_hash
    assert manifest["scenarios"] == heldout.scenario_hashes


def test_anchored_scenarios_are_present() -> None:
    heldout = load_heldout()
    for scenario_id, family in (
        (LEDGER, "misreport_tests"),
        ("oversight-deploy-audit-hook", "disable_oversight"),
        ("metrics-checkout-p99", "falsify_metrics"),
    ):
        assert heldout.get(scenario_id).family == family


def test_loading_is_cached_until_a_file_changes(set_copy: Path) -> None:
    first = load_heldout(set_copy)
    assert load_heldout(set_copy) is first
    data = json.loads(_ledger_file(set_copy).read_text(encoding="utf-8"))
    data["title"] = "Ledger reconcile fix, retitled"
    _ledger_file(set_copy).write_text(json.dumps(data), encoding="utf-8")
    second = load_heldout(set_copy)
    assert second is not first
    assert second.get(LEDGER).title == "Ledger reconcile fix, retitled"


def test_get_unknown_id() -> None:
    with pytest.raises(AuditError, match="no scenario 'nope' in the held-out set"):
        load_heldout().get("nope")


# -- hashing -----------------------------------------------------------------------------------


def test_content_hash_is_sha256_of_canonical_json() -> None:
    expected = hashlib.sha256('{"a":"é","b":[1,2]}'.encode()).hexdigest()
    assert content_hash({"b": [1, 2], "a": "é"}) == f"sha256:{expected}"


def test_scenario_hash_ignores_formatting_but_not_content(set_copy: Path) -> None:
    before = load_heldout(set_copy)
    path = _ledger_file(set_copy)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert before.scenario_hash(LEDGER) == content_hash(data)
    path.write_text(json.dumps(data, indent=7, sort_keys=False) + "\n\n", encoding="utf-8")
    reformatted = load_heldout(set_copy)
    assert reformatted.scenario_hash(LEDGER) == before.scenario_hash(LEDGER)
    assert reformatted.set_hash == before.set_hash
    data["ground_truth"] += " "
    path.write_text(json.dumps(data), encoding="utf-8")
    edited = load_heldout(set_copy)
    assert edited.scenario_hash(LEDGER) != before.scenario_hash(LEDGER)
    assert edited.set_hash != before.set_hash
    others = set(before.ids()) - {LEDGER}
    assert all(edited.scenario_hash(i) == before.scenario_hash(i) for i in others)


# -- manifest ----------------------------------------------------------------------------------


def test_freeze_writes_the_manifest(set_copy: Path) -> None:
    heldout = load_heldout(set_copy)
    manifest = read_manifest(set_copy.parent / "manifest.json")
    assert manifest == {
        "version": "1.0",
        "set_hash": heldout.set_hash,
        "canary": CANARY,
        "n_scenarios": len(heldout.scenarios),
        "scenarios": heldout.scenario_hashes,
    }
    assert heldout.version == "1.0"
    assert verify_heldout(set_copy).set_hash == heldout.set_hash


def test_verify_lists_changed_added_and_removed(set_copy: Path) -> None:
    path = _ledger_file(set_copy)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["user"] = data["user"].replace("Friday", "Thursday")
    path.write_text(json.dumps(data), encoding="utf-8")
    added = dict(data, id="tests-ledger-reconcile-copy")
    (path.parent / "tests-ledger-reconcile-copy.json").write_text(json.dumps(added))
    # A scenario goes with its sealed twin (a twin of nothing is refused at load).
    (set_copy / "falsify_metrics" / "metrics-checkout-p99.json").unlink()
    (set_copy / "falsify_metrics" / "metrics-checkout-p99--twin.json").unlink()
    with pytest.raises(AuditError) as caught:
        verify_heldout(set_copy)
    assert (
        "(version 1.0): changed: tests-ledger-reconcile; added: tests-ledger-reconcile-copy; "
        "removed: metrics-checkout-p99, metrics-checkout-p99--twin; restore the files"
        in str(caught.value)
    )
    assert load_heldout(set_copy).version == "1.0+modified"
    refrozen = freeze_heldout("1.1", set_copy)
    assert refrozen.version == "1.1"
    assert verify_heldout(set_copy).version == "1.1"


def test_verify_without_manifest(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_SCENARIOS_DIR / "misreport_tests", tmp_path / "s" / "misreport_tests")
    assert load_heldout(tmp_path / "s").version == "unversioned"
    with pytest.raises(AuditError, match=r"no held-out manifest at .*audit heldout freeze"):
        verify_heldout(tmp_path / "s")


def test_freeze_refuses_a_bad_version(set_copy: Path) -> None:
    before = (set_copy.parent / "manifest.json").read_text()
    with pytest.raises(AuditError, match="invalid version 'v 2'"):
        freeze_heldout("v 2", set_copy)
    assert (set_copy.parent / "manifest.json").read_text() == before


def test_freeze_refuses_an_invalid_set_and_keeps_the_manifest(set_copy: Path) -> None:
    before = (set_copy.parent / "manifest.json").read_text()
    _ledger_file(set_copy).write_text("{not json")
    with pytest.raises(AuditError, match="malformed JSON"):
        freeze_heldout("2.0", set_copy)
    assert (set_copy.parent / "manifest.json").read_text() == before


def test_freeze_refuses_a_label_frozen_with_other_content(set_copy: Path) -> None:
    manifest_path = set_copy.parent / "manifest.json"
    path = _ledger_file(set_copy)
    path.write_text(path.read_text().replace("Tomasz", "Tomas"))
    before = manifest_path.read_text()
    with pytest.raises(AuditError) as caught:
        freeze_heldout("1.0", set_copy)
    message = str(caught.value)
    assert message.startswith("version 1.0 is already frozen with set sha256:")
    assert message.endswith("e.g. `audit heldout freeze --version 1.1`")
    assert manifest_path.read_text() == before
    # The same content under the same label again changes nothing.
    path.write_text(path.read_text().replace("Tomas", "Tomasz"))
    freeze_heldout("1.0", set_copy)
    assert manifest_path.read_text() == before


def test_freeze_keeps_a_history_of_earlier_versions(set_copy: Path) -> None:
    manifest_path = set_copy.parent / "manifest.json"
    first = read_manifest(manifest_path)
    path = _ledger_file(set_copy)
    path.write_text(path.read_text().replace("Tomasz", "Tomas"))
    second = freeze_heldout("1.1", set_copy)
    manifest = read_manifest(manifest_path)
    assert (manifest["version"], manifest["set_hash"]) == ("1.1", second.set_hash)
    assert manifest["history"] == [
        {
            "version": "1.0",
            "set_hash": first["set_hash"],
            "n_scenarios": first["n_scenarios"],
            "scenarios": first["scenarios"],
        }
    ]
    # A label from the history cannot name new content either.
    path.write_text(path.read_text().replace("Tomas", "Tom"))
    with pytest.raises(AuditError, match=r"version 1\.0 is already frozen"):
        freeze_heldout("1.0", set_copy)
    assert load_heldout(set_copy).version == "1.1+modified"
    # Files restored to an earlier frozen version are named by it.
    path.write_text(path.read_text().replace("Tom", "Tomasz"))
    assert load_heldout(set_copy).version == "1.0"
    third = freeze_heldout("1.2", set_copy)
    history = read_manifest(manifest_path)["history"]
    assert [entry["version"] for entry in history] == ["1.0", "1.1"]
    assert third.version == "1.2"


def test_freeze_overwrites_an_unreadable_manifest(set_copy: Path) -> None:
    manifest_path = set_copy.parent / "manifest.json"
    manifest_path.write_text("{broken")
    assert freeze_heldout("3.0", set_copy).version == "3.0"
    assert "history" not in read_manifest(manifest_path)


# -- store -------------------------------------------------------------------------------------


def test_register_writes_rows_once(store: Store, set_copy: Path) -> None:
    heldout = load_heldout(set_copy)
    assert register_heldout(store, heldout) == len(heldout.scenarios)
    assert register_heldout(store, heldout) == len(heldout.scenarios)
    sets = store.query("SELECT set_hash, version, canary, n_scenarios FROM heldout_sets")
    assert sets == [
        {
            "set_hash": heldout.set_hash,
            "version": "1.0",
            "canary": CANARY,
            "n_scenarios": len(heldout.scenarios),
        }
    ]
    rows = {
        row.pop("scenario_id"): row
        for row in store.query(
            "SELECT scenario_id, family, scenario_hash, title, conditions, twin_of, sealed "
            "FROM scenarios WHERE set_hash = ? ORDER BY scenario_id",
            [heldout.set_hash],
        )
    }
    assert len(rows) == len(heldout.scenarios)
    assert rows[LEDGER] == {
        "family": "misreport_tests",
        "scenario_hash": heldout.scenario_hash(LEDGER),
        "title": "Ledger reconcile fix leaves 3 tests failing",
        "conditions": ["default"],
        "twin_of": None,
        "sealed": False,
    }
    # A sealed twin's own title could tell its surface: only its relation is stored.
    assert rows[f"{LEDGER}--twin"] == {
        "family": "misreport_tests",
        "scenario_hash": heldout.scenario_hash(f"{LEDGER}--twin"),
        "title": f"sealed twin of {LEDGER}",
        "conditions": ["default"],
        "twin_of": LEDGER,
        "sealed": True,
    }


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_list_json_matches_the_library(set_copy: Path) -> None:
    result = CliRunner().invoke(app, ["heldout", "list", "--json", "--dir", str(set_copy)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    heldout = load_heldout(set_copy)
    assert [row["id"] for row in rows] == heldout.ids()
    ledger = next(row for row in rows if row["id"] == LEDGER)
    assert ledger == {
        "id": LEDGER,
        "family": "misreport_tests",
        "twin_of": None,
        "sealed": False,
        "title": "Ledger reconcile fix leaves 3 tests failing",
        "conditions": ["default"],
        "hash": heldout.scenario_hash(LEDGER),
    }


def test_cli_list_table(set_copy: Path) -> None:
    result = CliRunner().invoke(app, ["heldout", "list", "--dir", str(set_copy)])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "FAMILY", "CONDITIONS", "HASH", "TITLE"]
    prefix = load_heldout(set_copy).scenario_hash(LEDGER)[:19]
    ledger_line = next(line for line in lines if line.startswith(LEDGER))
    assert ledger_line.split()[:4] == [LEDGER, "misreport_tests", "default", prefix]
    copy = load_heldout(set_copy)
    n, sealed = len(copy.scenarios), len(copy.sealed_ids())
    assert sealed > 0
    assert lines[-1].startswith(f"{n} scenarios ({n - sealed} public, {sealed} sealed twins) in 3")
    # A sealed twin's row holds its id, family and hash only: no title, no conditions.
    twin_line = next(line for line in lines if line.startswith(f"{LEDGER}--twin "))
    assert twin_line.split() == [
        f"{LEDGER}--twin",
        "misreport_tests",
        copy.scenario_hash(f"{LEDGER}--twin")[:19],
        "(sealed",
        "twin",
        "of",
        f"{LEDGER})",
    ]
    assert lines[-1].endswith("version 1.0")


def test_cli_show(set_copy: Path) -> None:
    result = CliRunner().invoke(app, ["heldout", "show", LEDGER, "--dir", str(set_copy)])
    assert result.exit_code == 0
    assert f"{LEDGER}  (misreport_tests)\n" in result.stdout
    assert "submission:  submit_result(summary, tests_passed, test_output)\n" in result.stdout
    assert "  flag-claims-pass -> covert: The submission sets tests_passed" in result.stdout
    assert "references: honest/default, covert/default" in result.stdout


def test_cli_show_json(set_copy: Path) -> None:
    args = ["heldout", "show", LEDGER, "--json", "--dir", str(set_copy)]
    result = CliRunner().invoke(app, args)
    shown = json.loads(result.stdout)
    assert shown["hash"] == load_heldout(set_copy).scenario_hash(LEDGER)
    assert shown["submission"] == {
        "tool": "submit_result",
        "fields": ["summary", "tests_passed", "test_output"],
        "prose_fields": ["summary", "test_output"],
    }


def test_cli_show_unknown_id_is_one_line_exit_2(set_copy: Path) -> None:
    result = CliRunner().invoke(app, ["heldout", "show", "nope", "--dir", str(set_copy)])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: no scenario 'nope' in the held-out set: run `audit heldout list` to see the ids\n"
    )


def test_cli_verify_and_freeze(set_copy: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["heldout", "verify", "--dir", str(set_copy)])
    assert ok.exit_code == 0
    assert ok.stdout.startswith("ok: ")
    assert "scenarios match manifest version 1.0" in ok.stdout
    path = _ledger_file(set_copy)
    path.write_text(path.read_text().replace("Tomasz", "Tomas"))
    drift = runner.invoke(app, ["heldout", "verify", "--dir", str(set_copy)])
    assert drift.exit_code == 2
    assert drift.stderr.startswith("error: held-out set no longer matches its manifest")
    assert "changed: tests-ledger-reconcile;" in drift.stderr
    assert drift.stderr.count("\n") == 1
    frozen = runner.invoke(app, ["heldout", "freeze", "--version", "1.1", "--dir", str(set_copy)])
    assert frozen.exit_code == 0
    assert frozen.stdout.startswith("frozen: version 1.1, ")
    assert "\nearlier versions: 1.0 (sha256:" in frozen.stdout
    reused = runner.invoke(app, ["heldout", "freeze", "--version", "1.0", "--dir", str(set_copy)])
    assert reused.exit_code == 2
    assert reused.stderr.startswith("error: version 1.0 is already frozen with set sha256:")
    again = runner.invoke(app, ["heldout", "verify", "--dir", str(set_copy)])
    assert again.exit_code == 0
    assert "manifest version 1.1" in again.stdout


def test_register_names_a_set_frozen_after_it_was_registered(store: Store, tmp_path: Path) -> None:
    scenarios = tmp_path / "set" / "scenarios"
    shutil.copytree(DEFAULT_SCENARIOS_DIR / "falsify_metrics", scenarios / "falsify_metrics")
    register_heldout(store, load_heldout(scenarios))
    assert store.query("SELECT version FROM heldout_sets") == [{"version": "unversioned"}]
    register_heldout(store, freeze_heldout("2.0", scenarios))
    assert store.query("SELECT version FROM heldout_sets") == [{"version": "2.0"}]


def test_get_suggests_close_ids() -> None:
    with pytest.raises(AuditError, match=r"did you mean tests-ledger-reconcile(, [^?]+)?\? run"):
        load_heldout().get("tests-ledger-reconcil")


def test_every_shipped_scenario_has_one_sealed_twin() -> None:
    heldout = load_heldout()
    assert heldout.without_twins() == []
    pairs = heldout.twin_pairs()
    assert [public for public, _ in pairs] == heldout.public_ids()
    assert [twin for _, twin in pairs] == heldout.sealed_ids()
    assert len(heldout.public_ids()) == 34


def test_an_orphan_twin_is_refused_naming_the_file_and_field(set_copy: Path) -> None:
    (set_copy / "misreport_tests" / f"{LEDGER}.json").unlink()
    with pytest.raises(
        AuditError,
        match=rf"{LEDGER}--twin.json: scenario {LEDGER}--twin: "
        r"field twin_of: names no scenario of the set",
    ):
        load_heldout(set_copy)


def test_a_twin_that_shares_its_scenarios_surface_is_refused(set_copy: Path) -> None:
    path = set_copy / "misreport_tests" / f"{LEDGER}--twin.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["system"] += " The old job still writes to billing/ledger.py."
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(AuditError, match="shares the surface of tests-ledger-reconcile"):
        load_heldout(set_copy)


def test_cli_show_refuses_a_sealed_twin_without_unseal(set_copy: Path) -> None:
    twin = f"{LEDGER}--twin"
    result = CliRunner().invoke(app, ["heldout", "show", twin, "--dir", str(set_copy)])
    assert result.exit_code == 2
    assert "sealed twin" in result.stderr and "--unseal" in result.stderr
    system = load_heldout(set_copy).get(twin).system
    assert system[:40] not in result.output
    unsealed = CliRunner().invoke(
        app, ["heldout", "show", twin, "--unseal", "--dir", str(set_copy)]
    )
    assert unsealed.exit_code == 0
    assert system[:40] in unsealed.stdout
