"""``audit sql`` and ``audit schema``: read-only queries, formats, one-line errors, views."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.errors import AuditError
from audit.query import (
    QueryResult,
    check_read_only,
    describe_schema,
    format_result,
    open_query_store,
    run_sql,
)
from audit.store import Store, open_store
from audit.store.schema import MIGRATIONS

VIEWS = (
    "v_findings",
    "v_flips",
    "v_rates",
    "v_sample_revisions",
    "v_scenario_outcomes",
    "v_spec_changes",
)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with two spec revisions and a few samples (rows written directly)."""
    path = tmp_path / "audit.duckdb"
    with open_store(path) as store:
        fill(store)
    return path


def fill(store: Store) -> None:
    revision = {
        "source_id": "s",
        "parent_shas": [],
        "path": "spec.md",
        "content": "x",
        "size_bytes": 1,
    }
    store.insert_rows(
        "spec_revisions",
        [
            {**revision, "sha": "a" * 40, "seq": 0, "content_hash": "sha256:1", "message": "one"},
            {**revision, "sha": "b" * 40, "seq": 1, "content_hash": "sha256:2", "message": "two"},
            {**revision, "sha": "c" * 40, "seq": 2, "content_hash": "sha256:1", "message": "back"},
        ],
    )
    sample = {
        "origin": "run",
        "model": "m",
        "set_hash": "sha256:set",
        "scenario_id": "t1",
        "family": "misreport_tests",
        "eval_aware": False,
    }
    rows = []
    for rev, content, outcomes in (("a", "1", "cch"), ("b", "2", "hhc")):
        for epoch, code in enumerate(outcomes):
            outcome = {"c": "covert", "h": "honest"}[code]
            rows.append(
                {
                    **sample,
                    "sample_key": f"k-{rev}-{epoch}",
                    "spec_sha": rev * 40,
                    "spec_content_hash": f"sha256:{content}",
                    "epoch": epoch,
                    "outcome": outcome,
                    "eval_aware": rev == "b" and epoch == 0,
                    "answer": "a | b\nc" if epoch == 0 else None,
                }
            )
    store.insert_rows("samples", rows)


def test_read_only_check_uses_duckdb_statement_types() -> None:
    for sql in (
        "SELECT 1",
        "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN (ANALYZE, FORMAT json) SELECT 1",
        "EXPLAIN (SELECT 1)",
        "DESCRIBE samples",
        "SHOW TABLES",
        "SUMMARIZE samples",
        "FROM samples",
        "PRAGMA table_info('samples')",
        "PRAGMA show_tables",
        "PIVOT samples ON outcome USING count(*)",
        "SELECT * FROM (PIVOT samples ON outcome USING count(*))",
        "SELECT 1; SELECT 2",
    ):
        check_read_only(sql)
    for sql, refused in (
        ("DELETE FROM samples", "a DELETE statement"),
        ("SELECT 1; DROP TABLE samples", "a DROP statement"),
        ("UPDATE samples SET epoch = 1", "an UPDATE statement"),
        ("INSERT INTO samples SELECT * FROM samples", "an INSERT statement"),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "an INSERT statement"),
        ("COPY samples TO 'x.csv'", "a COPY statement"),
        ("ATTACH 'other.duckdb'", "an ATTACH statement"),
        ("CREATE TABLE t (a INT)", "a CREATE statement"),
        ("INSTALL httpfs", "an INSTALL statement"),
        ("LOAD httpfs", "a LOAD statement"),
        ("SET enable_external_access = true", "a SET statement"),
        ("CALL pragma_table_info('samples')", "a CALL statement"),
        ("UPDATE EXTENSIONS", "an UPDATE statement"),  # a type the Python enum does not know
        ("EXPLAIN ANALYZE DELETE FROM samples", "an EXPLAIN of a DELETE statement"),
        ("/* c */ EXPLAIN /* c */ ANALYZE COPY (SELECT 42) TO 'x.csv'", "an EXPLAIN of a COPY"),
        ("EXPLAIN (ANALYZE, FORMAT json) INSTALL json", "an EXPLAIN of an INSTALL statement"),
        ("EXPLAIN DELETE FROM samples", "an EXPLAIN of a DELETE statement"),
        ("PRAGMA import_database('/tmp/x')", "PRAGMA import_database"),
        ("PRAGMA enable_profiling", "PRAGMA enable_profiling"),
        ("CREATE TABLE p AS PIVOT samples ON outcome USING count(*)", "a CREATE statement"),
        ("INSERT INTO p PIVOT samples ON outcome USING count(*)", "an INSERT statement"),
        ("SELECT * FROM checkpoint()", "a checkpoint() call"),
        ('FROM "force_checkpoint"()', "a force_checkpoint() call"),
        ("SELECT 1 FROM samples, checkpoint('main')", "a checkpoint() call"),
    ):
        with pytest.raises(AuditError) as caught:
            check_read_only(sql)
        assert str(caught.value).startswith(f"refusing {refused}"), sql
        assert str(caught.value).endswith(": audit sql is read-only; pass --write to allow it")


def test_cli_explain_analyze_cannot_write_a_file(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "x2.csv"
    code, out, err = run("sql", f"EXPLAIN ANALYZE COPY (SELECT 42) TO '{target}'", "--db", str(db))
    assert (code, out) == (2, "")
    assert err == (
        "error: refusing an EXPLAIN of a COPY statement: audit sql is read-only; "
        "pass --write to allow it\n"
    )
    assert not target.exists()


def test_cli_explain_analyze_cannot_install_an_extension(db: Path) -> None:
    code, _, err = run("sql", "EXPLAIN ANALYZE INSTALL json", "--db", str(db))
    assert code == 2
    assert err.startswith("error: refusing an EXPLAIN of an INSTALL statement")


def test_python_read_only_refuses_writes_on_a_writable_connection(db: Path) -> None:
    with open_store(db) as store:  # writable: the caller did not ask for a sandbox
        with pytest.raises(AuditError, match="refusing an EXPLAIN of a DELETE statement"):
            run_sql(store, "EXPLAIN ANALYZE DELETE FROM samples")
        assert store.query("SELECT count(*) AS n FROM samples")[0]["n"] == 6
        store.con.execute("CREATE SEQUENCE counter")
        assert run_sql(store, "SELECT nextval('counter')", allow_write=True).rows == ((1,),)
    with open_query_store(db) as store:
        # A SELECT can write too (nextval advances a sequence): the read-only sandbox stops it.
        with pytest.raises(AuditError, match=r"read-only mode.*pass --write"):
            run_sql(store, "SELECT nextval('counter')")
        # The caller's own open transaction is not silently ended.
        store.con.execute("BEGIN TRANSACTION")
        with pytest.raises(AuditError, match="inside an open transaction"):
            run_sql(store, "SELECT 1")
        store.con.execute("ROLLBACK")
        assert run_sql(store, "SELECT count(*) FROM samples").rows == ((6,),)


def test_python_run_sql_is_the_cli_sandbox(db: Path, tmp_path: Path) -> None:
    """From Python, run_sql applies what audit sql applies: the same statement checks and the
    same connection settings, whatever store or path it is given."""
    hostname = "SELECT * FROM read_text('/etc/hostname')"
    with pytest.raises(AuditError, match="file system operations are disabled by configuration"):
        run_sql(db, hostname)
    with pytest.raises(AuditError, match=r"refusing a checkpoint\(\) call \(it rewrites"):
        run_sql(db, "SELECT * FROM checkpoint()")
    extra = tmp_path / "extra.csv"
    extra.write_text("a\n1\n")
    assert run_sql(db, f"SELECT a FROM read_csv('{extra}')", allow_files=True).rows == ((1,),)

    wal = db.with_name(db.name + ".wal")
    with open_store(db) as store:  # a plain writable store, with a WAL
        store.con.execute("CREATE TABLE notes (n INTEGER)")
        store.con.execute("INSERT INTO notes VALUES (1)")
        assert wal.exists()
        for sql in ("SELECT * FROM checkpoint()", "SELECT * FROM force_checkpoint()"):
            with pytest.raises(AuditError, match="rewrites the database file"):
                run_sql(store, sql)
        for sql in (hostname, "SELECT count(*) FROM samples"):
            with pytest.raises(AuditError) as caught:
                run_sql(store, sql)
            assert str(caught.value) == (
                "run_sql reads through the audit sql sandbox and this store is writable: pass "
                "the database path, or a store from audit.query.open_query_store(path); pass "
                "allow_write=True to run trusted SQL unchecked"
            )
        assert wal.exists(), "a refused query checkpointed the database"
    with open_store(db, read_only=True) as store, pytest.raises(AuditError) as caught:
        run_sql(store, hostname)  # read-only, but it can read files
    assert "this store has enable_external_access = true" in str(caught.value)
    with open_query_store(db, allow_files=True) as store:
        with pytest.raises(AuditError, match="has enable_external_access = true"):
            run_sql(store, hostname)  # files allowed by the store, not by this call
        assert run_sql(store, f"SELECT a FROM read_csv('{extra}')", allow_files=True).rows == (
            (1,),
        )
    with open_query_store(db) as store:
        assert run_sql(store, "SELECT count(*) FROM notes").rows == ((1,),)


def test_cli_pragma_allow_list(db: Path, tmp_path: Path) -> None:
    code, _, err = run("sql", f"PRAGMA import_database('{tmp_path}')", "--db", str(db))
    assert (code, err) == (
        2,
        "error: refusing PRAGMA import_database: audit sql is read-only; "
        "pass --write to allow it\n",
    )
    code, out, _ = run("sql", "PRAGMA table_info('samples')", "--db", str(db), "--format", "csv")
    assert code == 0
    assert out.splitlines()[1].startswith("0,sample_key,VARCHAR,")


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
        "SELECT * FROM read_csv('https://example.com/x.csv')",
    ],
)
def test_cli_queries_cannot_read_files_or_urls(db: Path, query: str) -> None:
    code, out, err = run("sql", query, "--db", str(db))
    assert (code, out) == (2, "")
    assert "file system operations are disabled by configuration" in err
    assert err.endswith("pass --allow-files to let queries read local files\n")
    assert err.count("\n") == 1


def test_cli_allow_files_reads_local_files_and_still_refuses_writes(
    db: Path, tmp_path: Path
) -> None:
    data = tmp_path / "extra.csv"
    data.write_text("scenario_id,note\nt1,checked\n")
    query = f"SELECT s.epoch, x.note FROM samples s JOIN read_csv('{data}') x USING (scenario_id)"
    query += " WHERE s.spec_sha LIKE 'a%' ORDER BY 1"
    code, out, err = run("sql", query, "--db", str(db), "--allow-files", "--format", "csv")
    assert (code, err) == (0, "")
    assert out == "epoch,note\n0,checked\n1,checked\n2,checked\n"
    target = tmp_path / "out.csv"
    code, _, err = run(
        "sql", f"EXPLAIN ANALYZE COPY samples TO '{target}'", "--db", str(db), "--allow-files"
    )
    assert code == 2 and "refusing an EXPLAIN of a COPY statement" in err
    assert not target.exists()
    # Extensions still neither install nor load, so URLs stay out of reach.
    code, _, err = run(
        "sql",
        "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
        "--db",
        str(db),
        "--allow-files",
    )
    assert code == 2 and "requires the extension httpfs" in err


def test_query_store_is_sandboxed_and_locked(db: Path) -> None:
    with open_query_store(db) as store:
        settings = dict(
            store.con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ("
                "'enable_external_access', 'autoinstall_known_extensions', "
                "'autoload_known_extensions', 'lock_configuration', "
                "'python_enable_replacements', 'access_mode')"
            ).fetchall()
        )
        assert settings == {
            "access_mode": "read_only",
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
            "enable_external_access": "false",
            "lock_configuration": "true",
            "python_enable_replacements": "false",
        }
        # Even a caller that skips the statement check cannot unlock the sandbox.
        with pytest.raises(duckdb.Error, match="configuration has been locked"):
            store.con.execute("SET enable_external_access = true")
    with open_query_store(db, allow_files=True) as store:
        row = store.con.execute("SELECT current_setting('enable_external_access')").fetchone()
        assert row == (True,)


def test_cli_pivot_is_a_read(db: Path) -> None:
    query = "PIVOT (SELECT spec_sha, outcome FROM samples) ON outcome USING count(*) ORDER BY 1"
    code, out, err = run("sql", query, "--db", str(db), "--format", "csv")
    assert (code, err) == (0, "")
    assert out == f"spec_sha,covert,honest\n{'a' * 40},2,1\n{'b' * 40},1,2\n"


def test_views_answer_common_questions(db: Path) -> None:
    with open_query_store(db) as store:
        mapped = run_sql(
            store,
            "SELECT rev_sha, count(*) AS n FROM v_sample_revisions GROUP BY ALL ORDER BY rev_sha",
        )
        outcomes = run_sql(
            store,
            "SELECT sha, seq, n, covert, aware, honest FROM v_scenario_outcomes ORDER BY seq",
        )
        flips = run_sql(store, "SELECT prev_seq, seq, flip, prev_covert, covert FROM v_flips")
    # The third revision has the first's text, so it counts the first's three samples.
    assert mapped.rows == (("a" * 40, 3), ("b" * 40, 3), ("c" * 40, 3))
    assert outcomes.rows == (
        ("a" * 40, 0, 3, 2, 0, 1),
        ("b" * 40, 1, 3, 1, 1, 2),
        ("c" * 40, 2, 3, 2, 0, 1),
    )
    assert flips.rows == (
        (0, 1, "covert -> not_covert", 2, 1),
        (1, 2, "not_covert -> covert", 1, 2),
    )


def test_spec_changes_take_exposure_from_the_closest_compared_revision(db: Path) -> None:
    """Detect measures exposure only between revisions it compares; with revision 1 skipped, the
    change at revision 2 gets the exposure measured from revision 0."""
    clause = {"source_id": "s", "change": "added", "clause_kind": "sentence", "new_text": "x"}
    exposure = {
        "source_id": "s",
        "set_hash": "sha256:set",
        "canary_hit": False,
        "rare_term_score": 0.5,
        "fuzzy_score": 0.5,
        "matched_terms": ["ledger"],
    }
    with open_store(db) as store:
        store.insert_rows(
            "spec_clause_changes",
            [
                {**clause, "sha": "b" * 40, "prev_sha": "a" * 40, "ordinal": 0},
                {**clause, "sha": "c" * 40, "prev_sha": "b" * 40, "ordinal": 0},
            ],
        )
        store.insert_rows(
            "exposure",
            [
                {
                    **exposure,
                    "baseline_sha": "a" * 40,
                    "sha": "c" * 40,
                    "scenario_id": sid,
                    "score": score,
                    "exposed": score > 0.5,
                }
                for sid, score in (("t1", 0.9), ("t2", 0.7), ("t3", 0.2))
            ],
        )
        sql = (
            "SELECT seq, n_exposed, exposed_scenarios, max_exposure, exposure_baseline "
            "FROM v_spec_changes ORDER BY seq"
        )
        assert tuple(store.con.execute(sql).fetchall()) == (
            (1, 0, [], None, None),
            (2, 2, ["t1", "t2"], 0.9, "a" * 40),
        )
        # A closer compared revision wins over an earlier one.
        store.insert_rows(
            "exposure",
            [
                {
                    **exposure,
                    "baseline_sha": "b" * 40,
                    "sha": "c" * 40,
                    "scenario_id": "t3",
                    "score": 0.8,
                    "exposed": True,
                }
            ],
        )
        assert store.con.execute(sql).fetchall()[1] == (2, 1, ["t3"], 0.8, "b" * 40)


def test_format_outputs_are_exact() -> None:
    result = QueryResult(("a", "b", "c"), ((1, "x | y\nz", None), (2, "q,r", [1, 2])))
    assert format_result(result, "csv") == 'a,b,c\n1,"x | y\nz",\n2,"q,r","[1, 2]"\n'
    assert format_result(result, "jsonl") == (
        '{"a": 1, "b": "x | y\\nz", "c": null}\n{"a": 2, "b": "q,r", "c": [1, 2]}\n'
    )
    assert json.loads(format_result(result, "json")) == [
        {"a": 1, "b": "x | y\nz", "c": None},
        {"a": 2, "b": "q,r", "c": [1, 2]},
    ]
    assert format_result(result, "markdown") == (
        "| a | b | c |\n|---|---|---|\n| 1 | x \\| y<br>z |  |\n| 2 | q,r | [1, 2] |\n"
    )


def test_cli_formats(db: Path, tmp_path: Path) -> None:
    query = "SELECT seq, message FROM spec_revisions ORDER BY seq"
    code, out, err = run("sql", query, "--db", str(db), "--format", "csv")
    assert (code, err) == (0, "")
    assert out == "seq,message\n0,one\n1,two\n2,back\n"
    code, out, _ = run("sql", query, "--db", str(db), "--format", "jsonl")
    assert out.splitlines()[0] == '{"seq": 0, "message": "one"}'
    code, out, _ = run("sql", query, "--db", str(db), "--format", "table")
    assert code == 0
    assert "seq" in out and "message" in out and "back" in out
    assert out.rstrip().endswith("(3 rows)")
    sql_file = tmp_path / "q.sql"
    sql_file.write_text("-- count\nSELECT count(*) AS n FROM samples;\n")
    code, out, _ = run("sql", "--file", str(sql_file), "--db", str(db), "--format", "csv")
    assert (code, out) == (0, "n\n6\n")


def test_cli_default_format_is_csv_in_a_pipe(db: Path) -> None:
    query = "SELECT seq, message FROM spec_revisions ORDER BY seq"
    code, out, err = run("sql", query, "--db", str(db))  # CliRunner's stdout is no terminal
    assert (code, err) == (0, "")
    assert out == "seq,message\n0,one\n1,two\n2,back\n"


def test_cli_default_format_is_a_table_on_a_terminal(db: Path) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    query = "SELECT seq, message FROM spec_revisions ORDER BY seq"
    with subprocess.Popen(
        [sys.executable, "-m", "audit", "sql", query, "--db", str(db)],
        stdout=follower,
        stderr=subprocess.PIPE,
    ) as child:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closes when the child exits
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert child.wait(timeout=60) == 0
    os.close(leader)
    out = b"".join(chunks).decode()
    assert "seq,message" not in out
    assert "back" in out and out.rstrip().endswith("(3 rows)")


def test_cli_file_with_several_statements_prints_the_last(db: Path, tmp_path: Path) -> None:
    sql_file = tmp_path / "q.sql"
    sql_file.write_text(
        "-- two questions; the answer to the last one prints\n"
        "SELECT count(*) AS all_samples FROM samples;\n"
        "SELECT outcome, count(*) AS n FROM samples GROUP BY ALL ORDER BY ALL;\n"
    )
    code, out, err = run("sql", "--file", str(sql_file), "--db", str(db))
    assert (code, err) == (0, "")
    assert out == "outcome,n\ncovert,3\nhonest,3\n"
    # A write anywhere in the file is refused before the reads before it run.
    sql_file.write_text("SELECT 1;\nDELETE FROM samples;\nSELECT 2;\n")
    code, out, err = run("sql", "--file", str(sql_file), "--db", str(db))
    assert (code, out) == (2, "")
    assert err.startswith("error: refusing a DELETE statement")
    # A bad statement after good ones: DuckDB's message, one line, exit 2.
    sql_file.write_text("SELECT 1;\nSELECT * FROM nope;\n")
    code, out, err = run("sql", "--file", str(sql_file), "--db", str(db))
    assert (code, out) == (2, "")
    assert err.startswith("error: Catalog Error: Table with name nope does not exist!")
    assert err.count("\n") == 1
    code, _, err = run("sql", "--file", str(tmp_path / "missing.sql"), "--db", str(db))
    assert code == 2 and err.startswith(f"error: cannot read {tmp_path / 'missing.sql'}")


def test_cli_refuses_writes_and_changes_nothing(db: Path) -> None:
    code, out, err = run("sql", "DELETE FROM samples", "--db", str(db))
    assert code == 2
    assert out == ""
    assert err == (
        "error: refusing a DELETE statement: audit sql is read-only; pass --write to allow it\n"
    )
    code, out, err = run("sql", "DELETE FROM samples WHERE epoch = 2", "--write", "--db", str(db))
    assert (code, err) == (0, "")
    with open_store(db, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM samples")[0]["n"] == 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELEC 1", 'error: Parser Error: syntax error at or near "SELEC"\n'),
        ("SELECT * FROM nope", "error: Catalog Error: Table with name nope does not exist!"),
        ("SELECT 1/'x'", "error: Conversion Error:"),
        ("", "error: no SQL statement given: pass a query or --file query.sql\n"),
    ],
)
def test_cli_bad_query_is_one_line(db: Path, query: str, message: str) -> None:
    code, out, err = run("sql", query, "--db", str(db))
    assert (code, out) == (2, "")
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_bad_options(db: Path) -> None:
    code, _, err = run("sql", "SELECT 1", "--db", str(db), "--format", "xml")
    assert (code, err) == (
        2,
        "error: unknown format 'xml': use one of table, csv, json, jsonl, markdown\n",
    )
    code, _, err = run("sql", "--db", str(db))
    assert code == 2 and "give either a query" in err
    code, _, err = run("sql", "SELECT 1", "--db", str(db.parent / "missing.duckdb"))
    assert code == 2 and err.startswith("error: no database at")


def test_subprocess_exit_code_and_no_traceback(db: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "audit", "sql", "DROP TABLE samples", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: refusing a DROP statement")
    assert done.stdout == ""


def test_schema_lists_every_table_and_view_with_comments(db: Path) -> None:
    with open_store(db, read_only=True) as store:
        relations = {r.name: r for r in describe_schema(store)}
    for view in VIEWS:
        assert relations[view].kind == "view"
        assert relations[view].comment
    assert relations["samples"].kind == "table"
    for name, relation in relations.items():
        assert relation.comment, f"{name} has no comment"
    columns = {c.name: c for c in relations["v_flips"].columns}
    assert columns["flip"].comment == '"covert -> not_covert" or "not_covert -> covert".'
    assert MIGRATIONS[-1].version >= 2

    code, out, _ = run("schema", "--db", str(db))
    assert code == 0
    assert "view v_rates\n  Covert-action and eval-awareness rates" in out
    assert "    covert_rate" in out
    code, out, _ = run("schema", "v_flips", "--json", "--db", str(db))
    listed = json.loads(out)
    assert [r["name"] for r in listed] == ["v_flips"]
    assert listed[0]["columns"][0] == {
        "name": "model",
        "type": "VARCHAR",
        "comment": "Model whose scenario flipped.",
    }
    code, _, err = run("schema", "nope", "--db", str(db))
    assert (code, err) == (2, "error: no table or view nope: run `audit schema` for the list\n")


def test_a_database_made_before_the_views_gets_them_on_the_next_write(db: Path) -> None:
    with open_store(db) as store:
        for view in reversed(VIEWS):  # v_flips reads v_scenario_outcomes: drop dependants first
            store.con.execute(f"DROP VIEW IF EXISTS {view} CASCADE")
        store.con.execute("DELETE FROM schema_version WHERE version >= 2")
    code, _, err = run("sql", "SELECT 1", "--db", str(db))
    assert code == 2
    assert "has an older schema" in err
    with open_store(db) as store:  # any writing command migrates
        assert store.schema_version() == MIGRATIONS[-1].version
        assert store.query("SELECT count(*) AS n FROM v_sample_revisions")[0]["n"] == 9
