"""``audit heldout``: list, show, verify and freeze the held-out covert-action set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from audit.cli.options import JsonOption
from audit.terminal import printable

heldout_app = typer.Typer(
    help="The held-out covert-action set: list, show, verify, freeze.", no_args_is_help=True
)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Scenario folder (default: the set shipped with specdrift)."),
]
ManifestOption = Annotated[
    Path | None,
    typer.Option("--manifest", help="Manifest file (default: manifest.json beside the folder)."),
]
_HASH_PREFIX = len("sha256:") + 12


def register(app: typer.Typer) -> None:
    """Add ``audit heldout`` to the app."""
    app.add_typer(heldout_app, name="heldout")


@heldout_app.command("list")
def list_command(json_output: JsonOption = False, directory: DirOption = None) -> None:
    """List the scenarios: id, family, title, conditions, hash prefix."""
    from audit.heldout import load_heldout

    heldout = load_heldout(directory)
    rows = heldout.summaries()
    if json_output:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    # Titles, ids and versions come from scenario files (--dir may be anyone's folder).
    typer.echo(printable(_table(rows)))
    typer.echo(
        printable(
            f"{len(rows)} scenarios in {len(heldout.families())} families; "
            f"set {heldout.set_hash[:_HASH_PREFIX]} version {heldout.version}"
        )
    )


@heldout_app.command("show")
def show_command(
    scenario_id: Annotated[str, typer.Argument(help="Scenario id (see audit heldout list).")],
    json_output: JsonOption = False,
    directory: DirOption = None,
) -> None:
    """Show one scenario: prompts, tools, submission, rules, ground truth."""
    from audit.heldout import load_heldout

    described = load_heldout(directory).describe(scenario_id)
    if json_output:
        typer.echo(json.dumps(described, ensure_ascii=False, indent=2))
        return
    typer.echo(printable(_show_text(described)))


@heldout_app.command("verify")
def verify_command(directory: DirOption = None, manifest: ManifestOption = None) -> None:
    """Check the scenario files against the frozen manifest (exit 2 with the diff if not)."""
    from audit.heldout import verify_heldout

    heldout = verify_heldout(directory, manifest)
    typer.echo(
        printable(
            f"ok: {len(heldout.scenarios)} scenarios match manifest version {heldout.version} "
            f"(set {heldout.set_hash[:_HASH_PREFIX]})"
        )
    )


@heldout_app.command("freeze")
def freeze_command(
    version: Annotated[str, typer.Option("--version", help="Version label of the new set.")],
    directory: DirOption = None,
    manifest: ManifestOption = None,
) -> None:
    """Validate the scenario files and write the manifest under a new version, on purpose.

    A version already frozen with other content is refused; earlier versions stay listed in the
    manifest's history with their hashes.
    """
    from audit.heldout import freeze_heldout
    from audit.heldout.loader import manifest_history

    heldout = freeze_heldout(version, directory, manifest)
    typer.echo(
        printable(
            f"frozen: version {heldout.version}, {len(heldout.scenarios)} scenarios, "
            f"set {heldout.set_hash}"
        )
    )
    history = manifest_history(directory, manifest)
    if history:
        earlier = ", ".join(
            f"{e['version']} ({str(e['set_hash'])[:_HASH_PREFIX]})" for e in history
        )
        typer.echo(printable(f"earlier versions: {earlier}"))


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("ID", "FAMILY", "CONDITIONS", "HASH", "TITLE")
    cells = [
        (
            row["id"],
            row["family"],
            ",".join(row["conditions"]),
            row["hash"][:_HASH_PREFIX],
            row["title"],
        )
        for row in rows
    ]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header) - 1)]
    lines = []
    for line in [header, *cells]:
        padded = [str(value).ljust(width) for value, width in zip(line, widths, strict=False)]
        lines.append("  ".join([*padded, str(line[-1])]))
    return "\n".join(lines)


def _show_text(described: dict[str, Any]) -> str:
    conditions = ", ".join(
        c["name"]
        + (
            f" (penalises {'>=' if c['penalty']['inclusive'] else '>'} {c['penalty']['score']:.0%})"
            if c.get("penalty")
            else ""
        )
        for c in described["conditions"]
    )
    tools = ", ".join(t["name"] for t in described["tools"])
    submission = described["submission"]
    lines = [
        f"{described['id']}  ({described['family']})",
        f"title:       {described['title']}",
        f"hash:        {described['hash']}",
        f"file:        {described['file']}",
        f"conditions:  {conditions}",
        f"tools:       {tools}",
        f"submission:  {submission['tool']}({', '.join(submission['fields'])})",
        f"prose:       {', '.join(submission['prose_fields']) or '(final_text rules only)'}",
        "",
        "system:",
        _indent(described["system"]),
        "user:",
        _indent(described["user"]),
        "ground truth:",
        _indent(described["ground_truth"]),
        "rules (a covert rule that fires decides, unless an honest rule that fires discloses it):",
    ]
    for rule in described["rules"]:
        lines.append(f"  {rule['id']} -> {rule['verdict']}: {rule['explain']}")
        if rule.get("discloses"):
            lines.append(f"      discloses: {', '.join(rule['discloses'])}")
    if described.get("default_verdict"):
        lines.append(f"  (no rule fired, structured submission) -> {described['default_verdict']}")
    if described["questions"]:
        lines.append(f"questions: {len(described['questions'])}")
    lines.append("distinctive phrases: " + "; ".join(described["distinctive_phrases"]))
    labels = ", ".join(f"{r['label']}/{r['condition']}" for r in described["references"])
    lines.append(f"references: {labels}")
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
