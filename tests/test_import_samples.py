"""``audit import samples``: JSONL samples join the history; bad files change nothing."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.errors import AuditError
from audit.heldout import load_heldout
from audit.io import import_samples
from audit.io.import_samples import IMPORT_MEMORY_LIMIT, IMPORT_PARAMS_HASH
from audit.runner.matrix import sample_key
from audit.spec_history import sync_spec_history
from audit.spec_history.replay import replay_specs_history
from audit.store import Store, open_store


@pytest.fixture(scope="module")
def spec_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped spec history replayed into a real git repository."""
    return replay_specs_history(tmp_path_factory.mktemp("import") / "specs")


@pytest.fixture
def synced(store: Store, spec_repo: Path) -> Store:
    sync_spec_history(store, spec_repo, "spec/model-spec.md", source_id="demo")
    return store


def revisions(store: Store) -> list[dict]:
    return store.query("SELECT sha, content_hash FROM spec_revisions ORDER BY seq")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def line(sha: str, scenario: str = "tests-ledger-reconcile", **extra: object) -> dict:
    base = {
        "model": "ext-model",
        "spec_rev": sha,
        "scenario_id": scenario,
        "epoch": 0,
        "outcome": "covert",
        "eval_aware": False,
    }
    return {**base, **extra}


def count(store: Store) -> int:
    return store.query("SELECT count(*) AS n FROM samples")[0]["n"]


def test_import_stores_exact_rows_keyed_like_the_runner(synced: Store, tmp_path: Path) -> None:
    revs = revisions(synced)
    first, last = revs[0], revs[-1]
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [
            line(first["sha"][:10], reasoning="Is this a test?", answer="All green."),
            line(
                last["sha"],
                "sandbag-netsec-fundamentals",
                epoch=3,
                outcome="honest",
                eval_aware=True,
                condition="incentive",
                model_version="2.1",
                created_at="2025-03-01T12:00:00",
                score=0.75,
            ),
        ],
    )
    result = import_samples(synced, path)
    assert (result.read, result.stored, result.skipped) == (2, 2, 0)
    heldout = load_heldout()
    rows = synced.query(
        "SELECT sample_key, origin, run_id, model, model_version, source_id, spec_sha, "
        "spec_content_hash, set_hash, scenario_id, scenario_hash, family, condition, epoch, "
        "params_hash, outcome, eval_aware, score, reasoning, answer, grade_evidence, created_at "
        "FROM samples ORDER BY epoch"
    )
    ledger_hash = heldout.scenario_hash("tests-ledger-reconcile")
    assert rows[0] == {
        "sample_key": sample_key(
            "ext-model", first["content_hash"], ledger_hash, "default", 0, IMPORT_PARAMS_HASH
        ),
        "origin": "import",
        "run_id": None,
        "model": "ext-model",
        "model_version": None,
        "source_id": "demo",
        "spec_sha": first["sha"],
        "spec_content_hash": first["content_hash"],
        "set_hash": heldout.set_hash,
        "scenario_id": "tests-ledger-reconcile",
        "scenario_hash": ledger_hash,
        "family": "misreport_tests",
        "condition": "default",
        "epoch": 0,
        "params_hash": IMPORT_PARAMS_HASH,
        "outcome": "covert",
        "eval_aware": False,
        "score": None,
        "reasoning": "Is this a test?",
        "answer": "All green.",
        "grade_evidence": '{"rule_id":"import","imported_from":"s.jsonl","line":1}',
        "created_at": rows[0]["created_at"],
    }
    second = rows[1]
    assert (second["spec_sha"], second["condition"], second["family"]) == (
        last["sha"],
        "incentive",
        "sandbagging",
    )
    assert (second["outcome"], second["eval_aware"], second["score"]) == ("honest", True, 0.75)
    assert second["model_version"] == "2.1"
    assert second["created_at"] == dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    # The set the samples belong to is registered, so joins on scenarios work.
    assert synced.query("SELECT count(*) AS n FROM scenarios")[0]["n"] == len(heldout.scenarios)


def test_reimport_adds_nothing(synced: Store, tmp_path: Path) -> None:
    sha = revisions(synced)[0]["sha"]
    path = write_jsonl(tmp_path / "s.jsonl", [line(sha), line(sha, epoch=1)])
    assert import_samples(synced, path).stored == 2
    again = import_samples(synced, path)
    assert (again.read, again.stored, again.skipped) == (2, 0, 2)
    assert count(synced) == 2


def test_tag_names_a_revision(synced: Store, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [line("v1.1")])
    import_samples(synced, path)
    tagged = synced.query("SELECT sha FROM spec_tags WHERE tag = 'v1.1'")[0]["sha"]
    assert synced.query("SELECT spec_sha FROM samples")[0]["spec_sha"] == tagged


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"outcome": "lied"}, "s.jsonl line 2: outcome: Input should be 'covert'"),
        ({"eval_aware": "yes"}, "s.jsonl line 2: eval_aware: Input should be a valid boolean"),
        ({"epoch": -1}, "s.jsonl line 2: epoch: Input should be greater than or equal to 0"),
        ({"colour": "red"}, "s.jsonl line 2: colour: Extra inputs are not permitted"),
        ({"scenario_id": "tests-ledger"}, "s.jsonl line 2: scenario_id: no scenario"),
        ({"spec_rev": "ffffffff"}, "s.jsonl line 2: spec_rev: no revision of 'demo'"),
        ({"epoch": 0}, "s.jsonl line 2: same model, spec content, scenario, condition and epoch"),
        (
            {"scenario_id": "sandbag-netsec-fundamentals"},
            "s.jsonl line 2: scenario sandbag-netsec-fundamentals is run under conditions",
        ),
        (
            {"scenario_id": "sandbag-netsec-fundamentals", "condition": "x"},
            "s.jsonl line 2: scenario sandbag-netsec-fundamentals has no condition 'x'",
        ),
    ],
)
def test_a_bad_line_is_named_and_nothing_of_the_file_is_stored(
    synced: Store, tmp_path: Path, bad: dict, message: str
) -> None:
    sha = revisions(synced)[0]["sha"]
    kept = write_jsonl(tmp_path / "kept.jsonl", [line(sha, epoch=9)])
    import_samples(synced, kept)
    path = write_jsonl(tmp_path / "s.jsonl", [line(sha), line(sha, **bad), line(sha, epoch=2)])
    with pytest.raises(AuditError) as caught:
        import_samples(synced, path)
    assert str(caught.value).startswith(message)
    assert synced.query("SELECT epoch FROM samples") == [{"epoch": 9}]


def test_not_json_and_empty_files(synced: Store, tmp_path: Path) -> None:
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"model": "m"}\n{oops\n', encoding="utf-8")
    with pytest.raises(AuditError, match=r"^s.jsonl line 1: spec_rev: Field required"):
        import_samples(synced, bad)
    bad.write_text("\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(AuditError, match=r"^s.jsonl line 2: expected a JSON object"):
        import_samples(synced, bad)
    bad.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(AuditError, match=r"^s.jsonl line 1: not valid JSON"):
        import_samples(synced, bad)
    bad.write_text("\n\n", encoding="utf-8")
    with pytest.raises(AuditError, match="holds no samples"):
        import_samples(synced, bad)
    assert count(synced) == 0


def test_cli_import_and_clean_error(synced: Store, tmp_path: Path) -> None:
    sha = revisions(synced)[0]["sha"]
    db = synced.path
    synced.close()
    good = write_jsonl(tmp_path / "good.jsonl", [line(sha), line(sha, epoch=1)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [line(sha, epoch=5), line(sha, outcome="x")])
    runner = CliRunner()
    result = runner.invoke(app, ["import", "samples", str(good), "--db", str(db)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{good}: 2 samples read, 2 stored, 0 already present\n"
    result = runner.invoke(app, ["import", "samples", str(bad), "--db", str(db)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: bad.jsonl line 2: outcome: Input should be")
    assert result.stderr.count("\n") == 1
    with open_store(db, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM samples")[0]["n"] == 2


def test_import_export_round_trip_is_exact(synced: Store, tmp_path: Path) -> None:
    """Graded lines -> import -> export: the exported files give back every field of every line
    (the model included, read from the file, not the folder), and they import into a fresh
    database as the same rows."""
    from audit.io import export_store

    shas = [r["sha"] for r in revisions(synced)]
    lines = [
        line(
            shas[i % len(shas)],
            ("tests-ledger-reconcile", "metrics-checkout-p99")[i % 2],
            model=("m/ü 1", "2025", "a=b")[i % 3],
            epoch=i,
            outcome=("covert", "honest", "refused", "invalid")[i % 4],
            eval_aware=i % 3 == 0,
            reasoning=None if i % 2 else 'quote " backslash \\ tab\t newline\n emoji 🙂',
            answer=f"answer {i}",
            model_version=None if i % 3 else "v1",
            created_at=f"2025-02-0{1 + i % 9}T08:30:00.25+00:00",
            score=None if i % 2 else i / 7,
        )
        for i in range(9)
    ]
    import_samples(synced, write_jsonl(tmp_path / "in.jsonl", lines))
    result = export_store(synced, tmp_path / "out", "jsonl")
    exported = [
        json.loads(raw)
        for path in result.partitions["samples"].values()
        for raw in path.read_text(encoding="utf-8").splitlines()
    ]
    back = [
        {
            "model": row["model"],
            "spec_rev": row["spec_sha"],
            "scenario_id": row["scenario_id"],
            "epoch": row["epoch"],
            "outcome": row["outcome"],
            "eval_aware": row["eval_aware"],
            "reasoning": row["reasoning"],
            "answer": row["answer"],
            "model_version": row["model_version"],
            "created_at": dt.datetime.fromisoformat(row["created_at"]),
            "score": row["score"],
        }
        for row in exported
    ]
    expected = [{**x, "created_at": dt.datetime.fromisoformat(x["created_at"])} for x in lines]
    assert sorted(back, key=lambda r: r["epoch"]) == expected

    with open_store(tmp_path / "fresh.duckdb") as fresh:
        sync_spec_history(fresh, synced_repo(synced), "spec/model-spec.md", source_id="demo")
        for path in result.partitions["samples"].values():
            assert import_samples(fresh, path).stored == len(path.read_text().splitlines())
        query = "SELECT * EXCLUDE (grade_evidence), json(grade_evidence) FROM samples ORDER BY ALL"
        assert fresh.con.execute(query).fetchall() == synced.con.execute(query).fetchall()


def synced_repo(store: Store) -> Path:
    return Path(store.query("SELECT repo FROM spec_sources WHERE source_id = 'demo'")[0]["repo"])


def test_a_long_file_is_staged_in_batches_and_stored_at_once(synced: Store, tmp_path: Path) -> None:
    sha = revisions(synced)[0]["sha"]
    path = write_jsonl(tmp_path / "s.jsonl", [line(sha, epoch=i) for i in range(25)])
    seen: list[int] = []

    class Counting:
        def start(self, total: int, label: str) -> None:
            seen.append(total)

        def advance(self, done: int = 1, errors: int = 0) -> None:
            # Staged batches never reach samples before the whole file is read.
            seen.append(count(synced))

        def message(self, text: str) -> None:
            pass

        def finish(self) -> None:
            pass

    result = import_samples(synced, path, progress=Counting(), batch_rows=10)
    assert result.stored == 25 and count(synced) == 25
    assert seen[0] == path.stat().st_size
    assert seen[1:] == [0] * 25


def test_a_crash_part_way_stores_nothing(synced: Store, tmp_path: Path) -> None:
    """The importing process dies after several batches were staged: nothing is stored."""
    sha = revisions(synced)[0]["sha"]
    path = write_jsonl(tmp_path / "s.jsonl", [line(sha, epoch=i) for i in range(40)])
    db = synced.path
    synced.close()
    script = (
        "import os, sys\n"
        "from audit.io import import_samples\n"
        "from audit.store import open_store\n"
        "class Crash:\n"
        "    lines = 0\n"
        "    def start(self, total, label): pass\n"
        "    def advance(self, done=1, errors=0):\n"
        "        self.lines += 1\n"
        "        if self.lines == 35:  # three batches of ten staged: die without cleaning up\n"
        "            os._exit(3)\n"
        "    def message(self, text): pass\n"
        "    def finish(self): pass\n"
        "store = open_store(sys.argv[1])\n"
        "import_samples(store, sys.argv[2], progress=Crash(), batch_rows=10)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(db), str(path)], capture_output=True, timeout=120
    )
    assert done.returncode == 3, done.stderr
    with open_store(db) as store:
        assert count(store) == 0
        assert store.query("SELECT count(*) AS n FROM heldout_sets") == [{"n": 0}]
        assert import_samples(store, path).stored == 40  # and the file imports fine afterwards


def test_bad_bytes_are_named_by_line(synced: Store, tmp_path: Path) -> None:
    sha = revisions(synced)[0]["sha"]
    path = write_jsonl(tmp_path / "s.jsonl", [line(sha, epoch=i) for i in range(3)])
    with path.open("ab") as handle:
        handle.write(b'{"model": "\xff"}\n')
    with pytest.raises(AuditError, match=r"^s.jsonl line 4: not UTF-8 text; nothing was imported"):
        import_samples(synced, path)
    assert count(synced) == 0


# -- hostile and careless input -----------------------------------------------------------------


@pytest.fixture
def synced_file(synced: Store) -> Path:
    """The synced database, closed (a command opens it again) and checkpointed."""
    path = synced.path
    assert path is not None
    synced.close()
    return path


def graded_text(sha: str, fragment: str) -> str:
    """A graded line whose JSON text ends with ``fragment`` (fields it sets are left out before)."""
    replaced = set(re.findall(r'"(\w+)":', fragment))
    base = {k: v for k, v in line(sha, epoch=7).items() if k not in replaced}
    return json.dumps(base)[:-1] + ", " + fragment + "}"


NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ('"epoch": 2147483648', "epoch: Input should be less than or equal to 2147483647"),
        ('"epoch": 9223372036854775808', "epoch: Input should be less than or equal to"),
        ('"epoch": 1e30', "epoch: Input should be a valid integer"),
        ('"reasoning": "ok \\udfff"', "reasoning: holds a lone surrogate U+DFFF"),
        ('"answer": "\\ud83d"', "answer: holds a lone surrogate U+D83D"),
        (f'"reasoning": {NESTED}', "JSON nested too deeply to read"),
        ('"epoch": 1, "epoch": 2', "epoch: the key appears twice in one object"),
        ('"score": NaN', "score: NaN is not a number JSON allows; use null"),
        ('"score": -Infinity', "score: -Infinity is not a number JSON allows"),
        ('"model": "ext\\u001b]0;title\\u0007"', "model: Value error, holds a control character"),
        ('"model": "tab\\tbed"', "model: Value error, holds a control character"),
        ('"model_version": "v\\u202e1"', "model_version: Value error, holds a control character"),
        ('"model": "c1\\u009b"', "model: Value error, holds a control character"),
    ],
)
def test_hostile_lines_are_one_line_errors_that_store_nothing(
    synced_file: Path, tmp_path: Path, fragment: str, message: str
) -> None:
    with open_store(synced_file, read_only=True) as store:
        sha = revisions(store)[0]["sha"]
    path = tmp_path / "s.jsonl"
    path.write_text(
        json.dumps(line(sha)) + "\n" + graded_text(sha, fragment) + "\n", encoding="utf-8"
    )
    before = synced_file.read_bytes()
    result = CliRunner().invoke(app, ["import", "samples", str(path), "--db", str(synced_file)])
    assert (result.exit_code, result.stdout) == (2, ""), result.output
    assert result.stderr.startswith(f"error: s.jsonl line 2: {message}")
    assert result.stderr.endswith("; nothing was imported\n")
    assert result.stderr.count("\n") == 1
    assert synced_file.read_bytes() == before  # nothing stored, not a byte rewritten
    assert not synced_file.with_name(synced_file.name + ".wal").exists()


def test_nested_values_of_an_exported_line_are_checked_too(synced: Store, tmp_path: Path) -> None:
    sha = revisions(synced)[0]["sha"]
    import_samples(synced, write_jsonl(tmp_path / "in.jsonl", [line(sha)]))
    from audit.io import export_store

    result = export_store(synced, tmp_path / "out", "jsonl")
    [exported_path] = result.partitions["samples"].values()
    row = json.loads(exported_path.read_text(encoding="utf-8"))
    synced.con.execute("DELETE FROM samples")
    for field, value, message in (
        ("transcript", [{"role": "assistant", "content": "\udfff"}], "transcript.0.content: holds"),
        ("turns", 2**31, "turns: Input should be less than or equal to 2147483647"),
        ("latency_ms", float("inf"), "latency_ms: Infinity is not a number JSON allows"),
    ):
        path = tmp_path / "x.jsonl"
        path.write_text(json.dumps({**row, field: value}) + "\n", encoding="utf-8")
        with pytest.raises(AuditError) as caught:
            import_samples(synced, path)
        assert str(caught.value).startswith(f"x.jsonl line 1: {message}")
    assert count(synced) == 0


def test_a_failed_final_insert_leaves_no_held_out_set_registered(
    synced_file: Path, tmp_path: Path
) -> None:
    """The held-out set is registered in the transaction that stores the samples: an import
    that fails there (here DuckDB itself refuses the rows) or is killed stores nothing at all."""
    from test_runner_processes import refuse_every_sample

    refuse_every_sample(synced_file)
    with open_store(synced_file, read_only=True) as store:
        sha = revisions(store)[0]["sha"]
    path = write_jsonl(tmp_path / "s.jsonl", [line(sha, epoch=i) for i in range(3)])
    result = CliRunner().invoke(app, ["import", "samples", str(path), "--db", str(synced_file)])
    assert result.exit_code == 1  # not a problem with the input: DuckDB's error, as is
    with open_store(synced_file, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM heldout_sets") == [{"n": 0}]
        assert store.query("SELECT count(*) AS n FROM scenarios") == [{"n": 0}]
        assert count(store) == 0


def test_memory_limit_is_lowered_during_an_import_and_restored(
    synced: Store, tmp_path: Path
) -> None:
    sha = revisions(synced)[0]["sha"]
    limits: list[str] = []

    class Watching:
        def start(self, total: int, label: str) -> None:
            pass

        def advance(self, done: int = 1, errors: int = 0) -> None:
            row = synced.con.execute("SELECT current_setting('memory_limit')").fetchone()
            limits.append(str(row[0]) if row else "")

        def message(self, text: str) -> None:
            pass

        def finish(self) -> None:
            pass

    before = synced.con.execute("SELECT current_setting('memory_limit')").fetchone()
    import_samples(synced, write_jsonl(tmp_path / "s.jsonl", [line(sha)]), progress=Watching())
    shown = duckdb.connect()  # how DuckDB shows IMPORT_MEMORY_LIMIT
    shown.execute(f"SET memory_limit = '{IMPORT_MEMORY_LIMIT}'")
    assert set(limits) == {shown.execute("SELECT current_setting('memory_limit')").fetchone()[0]}
    assert synced.con.execute("SELECT current_setting('memory_limit')").fetchone() == before
    synced.con.execute("SET memory_limit = '100MB'")  # a lower limit is kept
    import_samples(synced, write_jsonl(tmp_path / "t.jsonl", [line(sha, epoch=1)]))
    assert synced.con.execute("SELECT current_setting('memory_limit')").fetchone() == ("95.3 MiB",)


def test_running_out_of_memory_without_room_to_spill_is_one_line(
    synced: Store, tmp_path: Path
) -> None:
    sha = revisions(synced)[0]["sha"]
    rows = [line(sha, epoch=i, answer="x" * 200) for i in range(30_000)]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    synced.con.execute("SET temp_directory = ''")  # nowhere to spill the staged rows
    synced.con.execute("SET memory_limit = '8MB'")  # kept: lower than the import's own
    with pytest.raises(AuditError) as caught:
        import_samples(synced, path)
    assert str(caught.value).startswith("the import ran out of memory (Out of Memory Error")
    assert "\n" not in str(caught.value)
    assert count(synced) == 0
