"""``audit specs``: track the revisions of a spec file in git (sync, log, diff)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from audit.cli.options import (
    ConfigOption,
    DbOption,
    JsonOption,
    SourceIdAlias,
    chosen_source,
    resolve_db,
)
from audit.errors import AuditError
from audit.terminal import printable

specs_app = typer.Typer(help="Track the revisions of a spec file in git.", no_args_is_help=True)

SourceOption = Annotated[
    str | None,
    typer.Option(
        "--source", help="Spec source id (needed when the database tracks several specs)."
    ),
]
REVISION_NAMES = (
    "an index (0 = oldest, -1 = newest), a tag or a sha prefix (4+ hex digits). A number is "
    "an index when that index exists (0..n-1 or -1..-n), else a tag or a sha prefix: in a "
    "short history, 112565 names the commit 112565a."
)
"""How ``audit.spec_history.resolve_revision`` reads a revision name, for help texts."""
_SUBJECT_WIDTH = 60
_TEXT_WIDTH = 100
_MARKS = {"added": "+", "removed": "-", "reworded": "~", "moved": ">"}


def register(app: typer.Typer) -> None:
    """Add ``audit specs`` to the app."""
    app.add_typer(specs_app, name="specs")


@specs_app.command("sync")
def sync_command(
    repo: Annotated[
        Path | None,
        typer.Option("--repo", help="Git repository (working tree or bare); config spec.repo."),
    ] = None,
    path: Annotated[
        str | None,
        typer.Option("--path", help="Spec file path inside the repository; config spec.path."),
    ] = None,
    ref: Annotated[
        str | None, typer.Option("--ref", help="Branch, tag or sha to sync (default HEAD).")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="Id to store the spec source under (config spec.source_id)."),
    ] = None,
    source_alias: SourceIdAlias = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Store every commit that changed the spec file (renames followed, merges first-parent)."""
    from audit.cli.progress import cli_progress
    from audit.config import load_config, with_overrides
    from audit.spec_history import open_spec_file, sync_spec_file
    from audit.store import open_store

    settings = with_overrides(
        load_config(config),
        **{
            "spec.repo": None if repo is None else str(repo),
            "spec.path": path,
            "spec.ref": ref,
            "spec.source_id": chosen_source(source, source_alias),
        },
    )
    spec = settings.spec
    # Repository, ref and path are checked before the database is opened: a mistyped flag
    # must not leave a new (or freshly migrated) database file behind.
    spec_file = open_spec_file(spec.repo, spec.path, spec.ref)
    db_path = resolve_db(db, config)
    created = not db_path.exists()
    store = open_store(db_path)
    try:
        with store:
            result = sync_spec_file(store, spec_file, spec.source_id, progress=cli_progress())
    except AuditError:
        if created:
            # Only this process had the file (DuckDB locks it): a failed first sync leaves none.
            _remove_database(db_path)
        raise
    if as_json:
        typer.echo(json.dumps(asdict(result), ensure_ascii=False))
        return
    typer.echo(
        printable(
            f"synced {result.source_id}: {result.added} new revisions, {result.total} in total "
            f"(tip {result.tip_sha[:7]}, {result.tags} tags)"
        )
    )


@specs_app.command("log")
def log_command(
    source: SourceOption = None,
    source_alias: SourceIdAlias = None,
    json_output: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List the stored revisions: index, sha, date, author, +/- lines, path, message."""
    from audit.spec_history import list_revisions
    from audit.store import open_store

    with open_store(resolve_db(db, config), read_only=True) as store:
        revisions = list_revisions(store, chosen_source(source, source_alias))
    if json_output:
        typer.echo(json.dumps([r.as_dict() for r in revisions], ensure_ascii=False))
        return
    typer.echo(f"{'#':>3}  {'sha':7}  {'date':10}  {'author':18}  {'+/-':>9}  {'path':20}  message")
    for r in revisions:
        changed = f"+{r.lines_added}/-{r.lines_removed}"
        tags = f" ({', '.join(r.tags)})" if r.tags else ""
        # Author, path, message and tags come from the repository: shown, never obeyed.
        typer.echo(
            printable(
                f"{r.seq:>3}  {r.short_sha}  {r.committed_at:%Y-%m-%d}  {r.author_name[:18]:18}  "
                f"{changed:>9}  {r.path:20}  {_clip(r.subject, _SUBJECT_WIDTH)}{tags}",
                multiline=False,
            )
        )


@specs_app.command(
    "diff",
    # Negative indexes (-1 = newest) are revisions, not options.
    context_settings={"ignore_unknown_options": True},
    epilog=f"Revisions are named by {REVISION_NAMES}",
)
def diff_command(
    rev_a: Annotated[str, typer.Argument(help="Old revision: index, tag or sha prefix.")],
    rev_b: Annotated[
        str, typer.Argument(help="New revision: index (-1 = newest), tag or sha prefix.")
    ],
    unified: Annotated[
        bool, typer.Option("--unified", help="Print the line-level unified diff instead.")
    ] = False,
    source: SourceOption = None,
    source_alias: SourceIdAlias = None,
    json_output: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show what changed between two revisions, clause by clause (or line by line)."""
    from audit.spec_history import diff_revisions
    from audit.store import open_store

    for rev in (rev_a, rev_b):
        if rev.startswith("--"):  # let through as an argument by ignore_unknown_options
            raise AuditError(f"unknown option {rev}: see `audit specs diff --help`")
    with open_store(resolve_db(db, config), read_only=True) as store:
        diff = diff_revisions(store, rev_a, rev_b, chosen_source(source, source_alias))
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "source_id": diff.new.source_id,
                    "old": {"seq": diff.old.seq, "sha": diff.old.sha, "path": diff.old.path},
                    "new": {"seq": diff.new.seq, "sha": diff.new.sha, "path": diff.new.path},
                    "counts": diff.counts(),
                    "lines_added": diff.lines_added,
                    "lines_removed": diff.lines_removed,
                    "changes": [c.as_dict() for c in diff.changes],
                    **({"unified_diff": diff.unified} if unified else {}),
                },
                ensure_ascii=False,
            )
        )
        return
    if unified:
        # The diff as git prints it, byte for byte (documented): pipe it to a pager that shows
        # control characters (less does) when the history is not trusted.
        typer.echo(diff.unified, nl=False)
        return
    counts = diff.counts()
    typer.echo(
        f"{diff.old.short_sha} (#{diff.old.seq}) -> {diff.new.short_sha} (#{diff.new.seq}): "
        + ", ".join(f"{n} {kind}" for kind, n in counts.items())
    )
    for change in diff.changes:
        where = f"[{change.section}] " if change.section else ""
        score = f" ({change.similarity:.1f})" if change.change == "reworded" else ""
        head = f"{_MARKS[change.change]} {change.change}{score} {change.kind} {where}".rstrip()
        if change.change == "reworded":
            lines = [
                head,
                f"    was: {_clip(change.old_text or '', _TEXT_WIDTH)}",
                f"    now: {_clip(change.new_text or '', _TEXT_WIDTH)}",
            ]
        else:
            text = change.new_text if change.new_text is not None else change.old_text
            lines = [head, f"    {_clip(text or '', _TEXT_WIDTH)}"]
        for line in lines:  # spec text and section names: shown, never obeyed
            typer.echo(printable(line, multiline=False))


def _remove_database(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."
