"""`accrual operators`: the loyalty team's staff accounts (docs/console.md).

`add` and `reset` print the initial password and the TOTP secret once (only
the password's hash is kept; the secret is kept to check codes and is never
shown again): hand them over in person, the first sign-in changes the
password."""
from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from accrual.settings import Settings

operators_app = typer.Typer(no_args_is_help=True, help="Staff accounts of the console (/ops).")
out = Console()
err = Console(stderr=True)


def _staff():
    from web.app import open_store
    from web.clock import SystemClock
    from web.staff import Staff

    store = open_store(Settings.from_env())
    return store, Staff(store, SystemClock())


def _refuse(error) -> None:
    err.print(f"{error.reason}: {error.detail}", markup=False)
    raise typer.Exit(2)


def _print_credentials(credentials, json_output: bool) -> None:
    if json_output:
        sys.stdout.write(json.dumps({"login": credentials.login, "password": credentials.password,
                                     "totp_secret": credentials.totp_secret, "totp_uri": credentials.totp_uri,
                                     "role": credentials.role}, ensure_ascii=False) + "\n")
        return
    out.print(f"login:        {credentials.login} ({credentials.role})", markup=False)
    out.print(f"password:     {credentials.password}   (to be changed at the first sign-in)", markup=False)
    out.print(f"TOTP secret:  {credentials.totp_secret}", markup=False)
    out.print(f"TOTP app URI: {credentials.totp_uri}", markup=False, soft_wrap=True)
    out.print("Shown once: only the password's hash is kept.", markup=False)


@operators_app.command("add")
def add(
    login: str = typer.Argument(..., help="3 to 32 characters: a-z first, then a-z, 0-9, '.', '_', '-'"),
    role: str = typer.Option(..., "--role", help="operator | supervisor | auditor"),
    json_output: bool = typer.Option(False, "--json", help='{"login", "password", "totp_secret", ...}'),
) -> None:
    """A new staff account with an initial password and a TOTP secret."""
    from web.staff import StaffError

    store, staff = _staff()
    try:
        credentials = staff.add(login, role)
    except StaffError as error:
        _refuse(error)
    finally:
        store.close()
    _print_credentials(credentials, json_output)


@operators_app.command("reset")
def reset(login: str = typer.Argument(...), json_output: bool = typer.Option(False, "--json")) -> None:
    """New initial password and TOTP secret (a forgotten password, a lost
    phone); ends the account's sessions and enables it if it was disabled."""
    from web.staff import StaffError

    store, staff = _staff()
    try:
        credentials = staff.reset(login)
    except StaffError as error:
        _refuse(error)
    finally:
        store.close()
    _print_credentials(credentials, json_output)


@operators_app.command("disable")
def disable(login: str = typer.Argument(...)) -> None:
    """The account can no longer sign in; its sessions end now."""
    from web.staff import StaffError

    store, staff = _staff()
    try:
        staff.disable(login)
    except StaffError as error:
        _refuse(error)
    finally:
        store.close()
    out.print(f"{login} is disabled", markup=False)


@operators_app.command("list")
def list_(json_output: bool = typer.Option(False, "--json")) -> None:
    """Every staff account: role, created, disabled, password still initial."""
    store, staff = _staff()
    try:
        members = staff.all()
    finally:
        store.close()
    if json_output:
        sys.stdout.write(json.dumps([m.__dict__ for m in members], ensure_ascii=False) + "\n")
        return
    table = Table("login", "role", "created", "disabled", "initial password")
    for m in members:
        table.add_row(m.login, m.role, m.created_at[:19], (m.disabled_at or "")[:19],
                      "yes" if m.must_change_password else "")
    out.print(table)
