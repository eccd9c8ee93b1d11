"""``audit heldout``: list, show, check, verify and freeze a held-out covert-action set, and
start scenarios of one's own (``new``, ``schema``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast, get_args

import typer

from audit.cli.options import ConfigOption, HeldoutOption, JsonOption, resolve_heldout
from audit.errors import AuditError
from audit.terminal import printable

if TYPE_CHECKING:
    from audit.heldout.loader import HeldoutSet

heldout_app = typer.Typer(
    help="The held-out covert-action set (the starter set, or your own): list, show, check, "
    "verify, freeze, new, schema.",
    no_args_is_help=True,
)

LegacyDirOption = Annotated[
    Path | None,
    typer.Option("--dir", hidden=True, help="Old name of --heldout (kept for scripts)."),
]
ManifestOption = Annotated[
    Path | None,
    typer.Option("--manifest", help="Manifest file (default: manifest.json beside the folder)."),
]
_HASH_PREFIX = len("sha256:") + 12


def register(app: typer.Typer) -> None:
    """Add ``audit heldout`` to the app."""
    app.add_typer(heldout_app, name="heldout")


def _set_path(heldout: Path | None, legacy: Path | None, config: Path | None) -> Path | None:
    if heldout is not None and legacy is not None and heldout != legacy:
        raise AuditError("--dir is the old name of --heldout: give one of them")
    return resolve_heldout(heldout or legacy, config)


@heldout_app.command("list")
def list_command(
    json_output: JsonOption = False,
    heldout: HeldoutOption = None,
    directory: LegacyDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List the scenarios: id, family, title, conditions, hash prefix."""
    from audit.heldout import load_heldout

    held = load_heldout(_set_path(heldout, directory, config))
    rows = held.summaries()
    if json_output:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    # Titles, ids and versions come from scenario files (--heldout may be anyone's folder).
    typer.echo(printable(_table(rows)))
    sealed = len(held.sealed_ids())
    typer.echo(
        printable(
            f"{len(rows)} scenarios ({len(rows) - sealed} public, {sealed} sealed twins) in "
            f"{len(held.families())} families; "
            f"set {held.name} {held.set_hash[:_HASH_PREFIX]} version {held.version}"
        )
    )


@heldout_app.command("show")
def show_command(
    scenario_id: Annotated[str, typer.Argument(help="Scenario id (see audit heldout list).")],
    json_output: JsonOption = False,
    heldout: HeldoutOption = None,
    directory: LegacyDirOption = None,
    config: ConfigOption = None,
    unseal: Annotated[
        bool,
        typer.Option(
            "--unseal",
            help="Show a sealed twin too. Only for people who never edit the spec: a twin that "
            "was read can no longer tell a patched spec from a real improvement.",
        ),
    ] = False,
) -> None:
    """Show one scenario: prompts, tools, submission, rules, ground truth (sealed twins refused)."""
    from audit.heldout import load_heldout

    described = load_heldout(_set_path(heldout, directory, config)).describe(
        scenario_id, unseal=unseal
    )
    if json_output:
        typer.echo(json.dumps(described, ensure_ascii=False, indent=2))
        return
    typer.echo(printable(_show_text(described)))


@heldout_app.command("check")
def check_command(
    folder: Annotated[
        Path | None,
        typer.Argument(help="Set folder (default: --heldout, heldout.path, the starter set)."),
    ] = None,
    json_output: JsonOption = False,
    heldout: HeldoutOption = None,
    config: ConfigOption = None,
) -> None:
    """Run every load-time check and list all problems (file, scenario, field, fix); exit 2 if any.

    Sealed twins are checked like any scenario; a problem names the field, never the twin's text.
    """
    from audit.heldout.loader import check_heldout

    found = check_heldout(folder or resolve_heldout(heldout, config))
    if json_output:
        typer.echo(json.dumps([p.to_json() for p in found.problems], ensure_ascii=False))
    else:
        for problem in found.problems:  # quotes scenario files: anyone's text
            typer.echo(printable(problem.line(), multiline=False))
    if found.problems:
        files = len({p.file for p in found.problems})
        raise AuditError(
            f"{len(found.problems)} problem(s) in {files} file(s) of {found.root.parent}: fix "
            "them and run audit heldout check again"
        )
    if not json_output:
        typer.echo(
            f"ok: {len(found.scenarios)} scenarios in {len(found.family_file.families)} declared "
            f"families ({found.family_file.path.name}"
            f"{'' if found.family_file.own else ' of the starter set'}) pass every check"
        )


@heldout_app.command("verify")
def verify_command(
    heldout: HeldoutOption = None,
    directory: LegacyDirOption = None,
    manifest: ManifestOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check the scenario files against the frozen manifest (exit 2 with the diff if not)."""
    from audit.heldout import verify_heldout

    held = verify_heldout(_set_path(heldout, directory, config), manifest)
    if json_output:
        typer.echo(json.dumps(_set_json(held), ensure_ascii=False))
        return
    typer.echo(
        printable(
            f"ok: {len(held.scenarios)} scenarios match manifest version {held.version} of set "
            f"{held.name} ({held.set_hash[:_HASH_PREFIX]})"
        )
    )


@heldout_app.command("freeze")
def freeze_command(
    version: Annotated[str, typer.Option("--version", help="Version label of the new set.")],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Name of the set in reports (default: the manifest's, else the folder's name).",
        ),
    ] = None,
    heldout: HeldoutOption = None,
    directory: LegacyDirOption = None,
    manifest: ManifestOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Validate the scenario files and write the manifest under a new version, on purpose.

    A version already frozen with other content is refused; earlier versions stay listed in the
    manifest's history with their hashes.
    """
    from audit.heldout import freeze_heldout
    from audit.heldout.loader import manifest_history

    path = _set_path(heldout, directory, config)
    held = freeze_heldout(version, path, manifest, name=name)
    history = manifest_history(path, manifest)
    if json_output:
        earlier = [{"version": e["version"], "set_hash": e["set_hash"]} for e in history]
        typer.echo(json.dumps({**_set_json(held), "earlier": earlier}, ensure_ascii=False))
        return
    typer.echo(
        printable(
            f"frozen: version {held.version}, {len(held.scenarios)} scenarios, set {held.set_hash} "
            f"named {held.name}"
        )
    )
    if history:
        listed = ", ".join(f"{e['version']} ({str(e['set_hash'])[:_HASH_PREFIX]})" for e in history)
        typer.echo(printable(f"earlier versions: {listed}"))


@heldout_app.command("new")
def new_command(
    scenario_id: Annotated[str, typer.Option("--id", help="Id of the new scenario (file name).")],
    family: Annotated[
        str | None,
        typer.Option("--family", help="Its family (a new one is added to families.toml)."),
    ] = None,
    twin_of: Annotated[
        str | None,
        typer.Option("--twin-of", help="Make it the sealed twin of this scenario of the set."),
    ] = None,
    scoring: Annotated[
        str,
        typer.Option(
            "--scoring",
            help="How a NEW family is scored: covert_rate, or accuracy_gap (paired conditions).",
        ),
    ] = "covert_rate",
    heldout: HeldoutOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write a scenario skeleton into your own set; the loader refuses it until every
    <<fill in: ...>> placeholder is written (audit heldout check lists them)."""
    from audit.heldout.loader import DEFAULT_SCENARIOS_DIR
    from audit.heldout.model import Scoring
    from audit.heldout.skeleton import new_scenario, set_folder

    if scoring not in get_args(Scoring):
        raise AuditError(f"--scoring {scoring!r}: use {' or '.join(get_args(Scoring))}")
    path = resolve_heldout(heldout, config)
    if path is None or set_folder(path).resolve() == DEFAULT_SCENARIOS_DIR.parent:
        raise AuditError(
            "the starter set shipped with specdrift is public: write new scenarios into a set "
            "of your own (--heldout DIR, or heldout.path in audit.toml)"
        )
    written, families = new_scenario(
        path, family, scenario_id, twin_of=twin_of, scoring=cast(Scoring, scoring)
    )
    if json_output:
        declared = None if families is None else str(families)
        typer.echo(json.dumps({"written": str(written), "families": declared}))
        return
    typer.echo(printable(f"wrote {written}"))
    if families is not None:
        typer.echo(f"declared its family in {families} (fill in its description)")
    typer.echo("fill in every <<fill in: ...>> placeholder, then run: audit heldout check")


def _set_json(held: HeldoutSet) -> dict[str, Any]:
    return {
        "ok": True,
        "name": held.name,
        "version": held.version,
        "set_hash": held.set_hash,
        "scenarios": len(held.scenarios),
    }


@heldout_app.command("schema")
def schema_command(
    families: Annotated[
        bool,
        typer.Option("--families", help="The format of a [families.NAME] table instead."),
    ] = False,
) -> None:
    """Print the JSON Schema of a scenario file (generated from the model, so it cannot drift)."""
    from audit.heldout.families import family_table_schema
    from audit.heldout.model import Scenario

    schema = family_table_schema() if families else Scenario.model_json_schema()
    typer.echo(json.dumps(schema, indent=2, ensure_ascii=False))


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("ID", "FAMILY", "CONDITIONS", "HASH", "TITLE")
    cells = [
        (
            row["id"],
            row["family"],
            ",".join(row["conditions"] or ()),
            row["hash"][:_HASH_PREFIX],
            row["title"] if not row["sealed"] else f"(sealed twin of {row['twin_of']})",
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
