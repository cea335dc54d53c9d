"""The contract's sample plan through the command line, on SQLite and on
PostgreSQL: `accrual balances --json` must equal expected.json; the books
agree with the balances after every tick; re-ingesting every file changes
nothing; `accrual audit` finds no difference."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from accrual.cli import app
from tests.conftest import SAMPLE


def plan() -> list[tuple[str, str]]:
    return [tuple(step) for step in json.loads((SAMPLE / "plan.json").read_text())]


def accrual(runner: CliRunner, url: str, *args: str) -> str:
    result = runner.invoke(app, list(args), env={"ACCRUAL_DATABASE_URL": url}, catch_exceptions=False)
    assert result.exit_code == 0, f"accrual {' '.join(args)} exited {result.exit_code}:\n{result.output}"
    return result.stdout


def run_plan(runner: CliRunner, url: str) -> dict[str, dict[str, int]]:
    """Runs the plan; returns the balances printed right after each tick."""
    after_tick = {}
    for command, argument in plan():
        if command == "ingest":
            accrual(runner, url, "ingest", str(SAMPLE / argument))
        else:
            assert command == "tick", command
            accrual(runner, url, "tick", "--as-of", argument)
            after_tick[argument] = json.loads(accrual(runner, url, "balances", "--json"))
    return after_tick


def test_the_sample_plan_gives_expected_balances_and_reingest_changes_nothing(database_url):
    runner = CliRunner()
    expected = json.loads((SAMPLE / "expected.json").read_text())

    after_tick = run_plan(runner, database_url)
    assert json.loads(accrual(runner, database_url, "balances", "--json")) == expected

    # The books (issue 12): a period per tick, each closing at the sum of the
    # balances printed right after its tick, each opening at the last closing;
    # the balances as of a tick, read from the log, are those printed then.
    rows = json.loads(accrual(runner, database_url, "report", "liability", "--json"))
    assert [r["period_end"] for r in rows] == list(after_tick)
    assert [r["closing"] for r in rows] == [sum(b.values()) for b in after_tick.values()]
    assert [r["opening"] for r in rows] == [0] + [r["closing"] for r in rows[:-1]]
    for day in (*list(after_tick)[::10], list(after_tick)[-1]):
        assert json.loads(accrual(runner, database_url, "balances", "--json", "--at-tick", day)) == after_tick[day]

    for command, argument in plan():
        if command == "ingest":
            summary = json.loads(accrual(runner, database_url, "ingest", "--json", str(SAMPLE / argument)))
            assert summary["applied"] == summary["held"] == summary["rejected"] == 0, summary
            assert summary["duplicates"] > 0
    assert json.loads(accrual(runner, database_url, "balances", "--json")) == expected

    audit = runner.invoke(app, ["audit", "--json"], env={"ACCRUAL_DATABASE_URL": database_url})
    assert audit.exit_code == 0, audit.output
    assert json.loads(audit.stdout) == {"differences": []}


def test_audit_reports_a_tampered_read_model(sqlite_url):
    runner = CliRunner()
    accrual(runner, sqlite_url, "ingest", str(SAMPLE / "000-ingest.jsonl"))
    accrual(runner, sqlite_url, "tick", "--as-of", "2025-06-01")
    import sqlite3

    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE rm_members SET balance = balance + 7 WHERE enrolled_at IS NOT NULL "
                   "AND msisdn = (SELECT MIN(msisdn) FROM rm_members WHERE enrolled_at IS NOT NULL)")
    audit = runner.invoke(app, ["audit", "--json"], env={"ACCRUAL_DATABASE_URL": sqlite_url})
    assert audit.exit_code == 1
    differences = json.loads(audit.stdout)["differences"]
    assert [d["table"] for d in differences] == ["members"]

    accrual(runner, sqlite_url, "replay")
    assert runner.invoke(app, ["audit"], env={"ACCRUAL_DATABASE_URL": sqlite_url}).exit_code == 0


def test_the_console_script_runs_as_a_separate_process(sqlite_url):
    """The installed `accrual` command, not just the in-process app."""
    env = {**os.environ, "ACCRUAL_DATABASE_URL": sqlite_url}
    exe = os.path.join(os.path.dirname(sys.executable), "accrual")
    ingest = subprocess.run([exe, "ingest", "--json", str(SAMPLE / "000-ingest.jsonl")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert ingest.returncode == 0, ingest.stderr
    summary = json.loads(ingest.stdout)
    assert summary["rejected"] == sum(summary["rejected_by_reason"].values())
    balances = subprocess.run([exe, "balances", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert balances.returncode == 0, balances.stderr
    assert all(isinstance(points, int) and points >= 0 for points in json.loads(balances.stdout).values())


def test_a_missing_database_setting_gives_a_clear_error(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["balances", "--json"], env={"ACCRUAL_DATABASE_URL": "sqlite://relative.db"})
    assert result.exit_code == 2
    assert "absolute path" in result.output


@pytest.mark.parametrize("bad", ["2026-13-01", "yesterday"])
def test_tick_refuses_a_date_it_cannot_read(sqlite_url, bad):
    runner = CliRunner()
    result = runner.invoke(app, ["tick", "--as-of", bad], env={"ACCRUAL_DATABASE_URL": sqlite_url})
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output


def test_balance_and_history_show_where_points_came_from(sqlite_url):
    runner = CliRunner()
    for command, argument in plan()[:10]:
        if command == "ingest":
            accrual(runner, sqlite_url, "ingest", str(SAMPLE / argument))
        else:
            accrual(runner, sqlite_url, "tick", "--as-of", argument)
    balances = json.loads(accrual(runner, sqlite_url, "balances", "--json"))
    msisdn = max(balances, key=balances.get)
    balance = json.loads(accrual(runner, sqlite_url, "balance", msisdn, "--json"))
    assert balance["balance"] == balances[msisdn]
    assert sum(lot["remaining"] for lot in balance["lots"]) == balance["balance"]
    assert all(lot["expires_on"] > lot["lot_date"] for lot in balance["lots"])
    history = json.loads(accrual(runner, sqlite_url, "history", msisdn, "--json"))
    assert sum(entry["points"] for entry in history) == balance["balance"]
    credits = [entry for entry in history if entry["kind"] == "accrued"]
    assert credits and all(entry["rule"] and entry["expires_on"] for entry in credits)
    assert accrual(runner, sqlite_url, "history", msisdn).count("accrued") == len(credits)
    unknown = runner.invoke(app, ["balance", "79000000000"], env={"ACCRUAL_DATABASE_URL": sqlite_url})
    assert unknown.exit_code == 1


def test_schemas_export_writes_a_schema_per_inbound_type(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["schemas", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"usage_charged.schema.json", "shop_purchase.schema.json", "inbound.schema.json"} <= written
    schema = json.loads((tmp_path / "out" / "usage_charged.schema.json").read_text())
    assert schema["properties"]["amount"]["type"] == "string"


def test_a_store_that_cannot_be_opened_ends_with_one_clear_line():
    env = {**os.environ, "ACCRUAL_DATABASE_URL": "sqlite:////proc/no-such-dir/accrual.sqlite3"}
    exe = os.path.join(os.path.dirname(sys.executable), "accrual")
    result = subprocess.run([exe, "balances", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert "storage error" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_balance_forecasts_the_points_that_expire_soon(sqlite_url):
    from datetime import date

    from accrual.runtime import Runtime
    from tests.conftest import settings_for
    from tests.programme import Programme

    with Runtime(settings_for(sqlite_url)) as runtime:
        programme = Programme(runtime)
        programme.enroll("79990000009", "2025-01-01 00:00")
        programme.usage("79990000009", "50.00", "2025-01-10")  # 10 points, expire 2026-01-10
        programme.usage("79990000009", "25.00", "2025-03-10")  # 5 points, expire 2026-03-10
        programme.runtime.projector.catch_up()
        forecast = runtime.reads.burn_forecast("79990000009", date(2025, 12, 20))
    # 2025-12-20 + 30 days = 2026-01-19 (10 due); + 60 = 2026-02-18 (10); + 90 = 2026-03-20 (15)
    assert forecast == {30: 10, 60: 10, 90: 15}
    out = json.loads(accrual(CliRunner(), sqlite_url, "balance", "79990000009", "--json"))
    assert set(out["expiring"]) == {"30_days", "60_days", "90_days"}
