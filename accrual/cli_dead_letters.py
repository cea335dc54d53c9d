"""`accrual dead-letters`: the rejected inbound messages, and redriving one
(engine.redrive) once the defect that set it aside is fixed or the rule that
refused it has changed. The console of the loyalty team does the same."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

import typer

from engine.errors import RuleRefusal
from projections import dead_letters

dead_letters_app = typer.Typer(no_args_is_help=True, help="Dead letters: list them, redrive one.")
LIST_LIMIT = 100


def _cli() -> Any:
    from accrual import cli  # the shared helpers (runtime, consoles); cli imports this module

    return cli


@dead_letters_app.command("list")
def list_(
    reason: str = typer.Option(None, "--reason", help="only this reason (e.g. internal_error)"),
    topic: str = typer.Option(None, "--topic", help="only this inbound topic"),
    status: str = typer.Option(None, "--status", help="open or redriven"),
    json_output: bool = typer.Option(False, "--json", help="a JSON object: dead_letters and total"),
) -> None:
    """The latest dead letters first (at most 100), with their attempts."""
    cli = _cli()
    with cli._runtime() as runtime:
        runtime.projector.catch_up()
        page = dead_letters.dead_letters(runtime.db, runtime.projector.names, reason=reason, topic=topic,
                                         status=status, limit=LIST_LIMIT)
    if json_output:
        return cli._write_json({"dead_letters": [dataclasses.asdict(d) for d in page.dead_letters],
                                "total": page.total})
    for d in page.dead_letters:
        last = d.attempts[-1]
        cli.out.print(f"{d.id}  {d.received_at}  {d.topic}  {d.reason}  {d.status}  "
                      f"attempts {len(d.attempts)} (last: {last.outcome}{' ' + last.reason if last.reason else ''})")
    cli.out.print(f"{len(page.dead_letters)} of {page.total}")


@dead_letters_app.command()
def redrive(
    rejection_id: str = typer.Argument(..., help="the dead letter's id (accrual dead-letters list)"),
    by: str = typer.Option(..., "--by", help="the login of who redrives it (kept with the attempt)"),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Applies a dead letter's original bytes again under their own key. Exit
    status 1 with the reason when refused (unknown_dead_letter, already_redriven)."""
    cli = _cli()
    with cli._runtime() as runtime:
        try:
            result = runtime.app.redrive(rejection_id, by=by, at=datetime.now(timezone.utc))
        except RuleRefusal as refusal:
            if json_output:
                cli._write_json({"refused": refusal.reason, "detail": refusal.detail})
            else:
                cli.err.print(f"[red]refused[/red] ({refusal.reason}): {refusal.detail}")
            raise typer.Exit(1) from refusal
        runtime.projector.catch_up()
    if json_output:
        return cli._write_json(dataclasses.asdict(result))
    cli.out.print(f"attempt {result.attempt}: {result.outcome}"
                  + (f" ({result.reason}: {result.detail})" if result.reason else f" as {result.applied_as}"))
