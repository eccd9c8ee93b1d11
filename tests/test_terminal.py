"""Hostile text reaches the terminal shown, never obeyed: every CLI path that prints text from a
repository, a model, an import, a scenario file or the database, in a pipe and on a real tty."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
from pathlib import Path

import git
import pytest
from analysis_fixtures import BASE_SPEC, GENERIC_EDIT, add_revisions, add_samples, planted, uniform
from typer.testing import CliRunner

from audit.cli import app
from audit.heldout.loader import DEFAULT_SCENARIOS_DIR
from audit.store import open_store
from audit.terminal import printable

# Clear screen, set the window title, an OSC 8 hyperlink, an 8-bit CSI, a right-to-left
# override and a carriage return that would hide what the line said.
PAYLOAD = (
    "ok\x1b[2J\x1b]0;HIJACKED\x07 "
    "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\ \x9b31m \u202eevil\r"
)
# rich's own colours are SGR sequences; anything else after ESC came from the payload.
_FOREIGN_ESCAPE = re.compile(rb"\x1b(?!\[[0-9;]*m)")


def assert_harmless(output: bytes, *, tty: bool) -> str:
    """No control sequence of the payload survives, and the payload is shown instead."""
    if tty:
        output = output.replace(b"\r\n", b"\n")  # the terminal's own line discipline
    assert _FOREIGN_ESCAPE.search(output) is None, output
    assert b"\x07" not in output and b"\r" not in output
    text = output.decode("utf-8")
    assert "\x9b" not in text and "\u202e" not in text
    return text


def test_printable_shows_every_control_character() -> None:
    assert printable(PAYLOAD) == (
        "ok^[[2J^[]0;HIJACKED^G ^[]8;;http://evil.example/^[\\click^[]8;;^[\\ "
        "\\u009b31m \\u202eevil^M"
    )
    assert printable("a\tb\nc\x00\x7f") == "a\tb\nc^@^?"
    assert printable("a\tb\nc", multiline=False) == "a\tb^Jc"
    assert printable("plain ünïcode – text") == "plain ünïcode – text"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every source at once: a git history, a database of samples, an import file whose name
    carries the payload, a scenario folder and a database comment."""
    root = tmp_path_factory.mktemp("hostile")
    repo_dir = root / "specs"
    repo = git.Repo.init(repo_dir)
    author = git.Actor("Mallory" + PAYLOAD, "m@example.org")
    for text in ("# Spec\n\nBe honest.\n", f"# Spec\n\nBe honest.\n\nNew rule {PAYLOAD} here.\n"):
        (repo_dir / "spec.md").write_text(text, encoding="utf-8")
        repo.index.add(["spec.md"])
        repo.index.commit(PAYLOAD, author=author, committer=author)
    from audit.spec_history import sync_spec_history

    synced = root / "synced.duckdb"
    with open_store(synced) as store:
        sync_spec_history(store, repo_dir, "spec.md", source_id="demo")
        store.con.execute(f"COMMENT ON TABLE runs IS '{PAYLOAD.replace(chr(39), chr(39) * 2)}'")
    samples = root / "samples.duckdb"
    with open_store(samples) as store:
        add_revisions(store, [BASE_SPEC, BASE_SPEC + GENERIC_EDIT])
        for text in (BASE_SPEC, BASE_SPEC + GENERIC_EDIT):
            add_samples(store, "m" + PAYLOAD, text, planted(uniform(0.5)), epochs=4)
    bad_import = root / f"lines{PAYLOAD.replace('/', '_')}.jsonl"
    bad_import.write_text('{"model": "m"}\n', encoding="utf-8")
    scenarios = root / "scenarios"
    shutil.copytree(DEFAULT_SCENARIOS_DIR, scenarios)
    scenario = scenarios / "misreport_tests" / "tests-ledger-reconcile.json"
    data = json.loads(scenario.read_text(encoding="utf-8"))
    data["title"] = PAYLOAD + " title"
    scenario.write_text(json.dumps(data), encoding="utf-8")
    return {"synced": synced, "samples": samples, "import": bad_import, "scenarios": scenarios}


def commands(paths: dict[str, Path]) -> list[list[str]]:
    """Each command that prints text from one of the sources, with its arguments."""
    synced, samples = str(paths["synced"]), str(paths["samples"])
    query = "SELECT message, author_name, content FROM spec_revisions ORDER BY seq"
    return [
        ["specs", "log", "--db", synced],
        ["specs", "diff", "0", "1", "--db", synced],
        ["sql", query, "--db", synced, "--format", "table"],
        ["sql", query, "--db", synced, "--format", "csv"],
        ["sql", query, "--db", synced, "--format", "markdown"],
        ["schema", "runs", "--db", synced],
        ["detect", "--db", samples],
        ["gate", "--db", samples, "--baseline", "0", "--candidate", "1"],
        ["import", "samples", str(paths["import"]), "--db", synced],
        ["heldout", "list", "--dir", str(paths["scenarios"])],
        ["heldout", "show", "tests-ledger-reconcile", "--dir", str(paths["scenarios"])],
    ]


def test_every_output_path_shows_control_characters_in_a_pipe(hostile: dict[str, Path]) -> None:
    for args in commands(hostile):
        result = CliRunner().invoke(app, args)
        assert result.exit_code in (0, 1, 2), (args, result.output)  # gate 1, import 2
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        out = assert_harmless(result.stdout_bytes, tty=False)
        err = assert_harmless(result.stderr_bytes, tty=False)
        assert "^[]0;HIJACKED^G" in out + err, args  # the payload was printed, made visible


_DRIVER = """
import json, sys
from audit.cli import app
for args in json.loads(sys.argv[1]):
    print("=== " + " ".join(args[:2]), flush=True)
    try:
        app(args, prog_name="audit", standalone_mode=False)
    except SystemExit:
        pass
    sys.stdout.flush()
"""


def run_on_a_terminal(argv_lists: list[list[str]]) -> tuple[bytes, bytes]:
    """Run the commands in one child whose stdout is a real terminal (a pty); returns what it
    printed there and on stderr (a pipe: on a terminal it would carry progress bars, whose
    cursor movements are ours)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    with (
        tempfile.TemporaryFile() as err_file,  # a file, not a pipe: it cannot fill up and block
        subprocess.Popen(
            [sys.executable, "-c", _DRIVER, json.dumps(argv_lists)],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=err_file,
            env=env,
        ) as child,
    ):
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closes when the child exits
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert child.wait(timeout=300) == 0
        err_file.seek(0)
        err = err_file.read()
    os.close(leader)
    return b"".join(chunks), err


def test_every_output_path_shows_control_characters_on_a_terminal(
    hostile: dict[str, Path],
) -> None:
    argv_lists = commands(hostile)
    output, err = run_on_a_terminal(argv_lists)
    text = assert_harmless(output, tty=True)
    assert "HIJACKED" in assert_harmless(err, tty=False)  # the import's error quotes its file
    sections = text.split("=== ")[1:]
    assert len(sections) == len(argv_lists)
    for args, section in zip(argv_lists, sections, strict=True):
        assert "Traceback" not in section, section
        if args[0] != "import":  # the import fails: its message is on stderr
            assert "HIJACKED" in section, (args, section)
    table = sections[2]
    assert "\x1b[" in table, "rich drew the table with its own colours: a real terminal"
