"""Builds the old-store fixture: an SQLite event store written by the release
at commit a20a9d5, and what that release answers on it.

Run with PYTHONPATH pointing at a checkout of a20a9d5 (so that its `engine`,
`projections`, `schemas` and `accrual` shadow the editable install), with
the project's venv, from anywhere:

    git worktree add --detach /tmp/a20a9d5 a20a9d5
    PYTHONPATH=/tmp/a20a9d5 .venv/bin/python tests/data/old_store/make_fixture.py
    git worktree remove --force /tmp/a20a9d5

It builds the store in --work (default /tmp/oldstore/accrual.sqlite3,
removed first), then writes into --out (default: this folder)
`accrual.sqlite3` (checkpointed, vacuumed, no -wal/-shm) and `expected/*.json`.

The steps are in plan.json, in order:
- ["sample", {...}]: the contract's sample plan of the checkout
  (tests/data/sample, checked by digest), with only the lines of the listed
  msisdns and MGTS accounts, plus every line that names no valid msisdn
  (malformed lines, invalid msisdns): ingests and ticks interleaved as in
  the sample, 2025-01 .. 2026-07-01.
- ["ingest", "input/FILE.jsonl"], ["tick", "YYYY-MM-DD"]: as `accrual ingest`
  and `accrual tick --as-of` (each file's rejections get a fixed received_at,
  1 hour after the previous tick, so that the store does not depend on the
  wall clock; only the snapshots' own timestamps do).
- ["enroll_member" | "debit" | "cancel_debit" | "offer_transfer" |
  "accept_transfer" | "decline_transfer", {...}]: the spending commands of
  `AccrualApplication`, with the given time-zone-aware `at`. Debits are named
  by (msisdn, purpose, idempotency_key), transfers by idempotency_key.

The answers recorded (expected/): `accrual balances --json`, for every msisdn
of rm_members `accrual balance MSISDN --json` and `accrual history MSISDN
--json`, `accrual rejections --json`, `accrual held --json`, `accrual audit
--json` (must be clean), `debit_status` and `transfer` of every debit and
transfer made, each spending command's answer, and the state of every
MemberAccount and MgtsAccount aggregate as this release loads it (snapshot
plus later events). `balance --json`'s "expiring" is relative to the day
the answers were recorded (the CLI reads the wall clock for it).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

COMMIT = "a20a9d5"
SAMPLE_SHA256 = "3ee511522d0c133212874f7c26280b984f517086cd6c217d59078d1a1913d378"  # plan.json and its files, in plan order
HERE = Path(__file__).resolve().parent
MSISDN = re.compile(r"7\d{10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/oldstore"), help="where the store is built")
    parser.add_argument("--out", type=Path, default=HERE, help="where accrual.sqlite3 and expected/ go")
    parser.add_argument("--any-commit", action="store_true", help="do not insist on a checkout of a20a9d5")
    args = parser.parse_args()

    checkout = _checkout(args.any_commit)
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "accrual.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    os.environ["ACCRUAL_DATABASE_URL"] = f"sqlite:///{store}"
    os.environ.pop("ACCRUAL_RULES_FILE", None)

    plan = json.loads((HERE / "plan.json").read_text("utf-8"))
    made = _run(plan, checkout, args.work)
    expected = args.out / "expected"
    expected.mkdir(parents=True, exist_ok=True)
    _record(made, checkout, expected)
    _finish(store, args.out / "accrual.sqlite3")
    print(f"wrote {args.out / 'accrual.sqlite3'} ({(args.out / 'accrual.sqlite3').stat().st_size} bytes) and {expected}/")


# -- the old code ----------------------------------------------------------------------


def _checkout(any_commit: bool) -> Path:
    import engine

    checkout = Path(engine.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"engine from {checkout} (HEAD {head or '?'})")
    if not head.startswith(COMMIT) and not any_commit:
        sys.exit(f"run with PYTHONPATH pointing at a checkout of {COMMIT} (found {head or 'no git checkout'}); "
                 "--any-commit to override")
    return checkout


def _run(plan: list, checkout: Path, work: Path) -> dict[str, Any]:
    from accrual.intake import read_batches
    from accrual.runtime import Runtime
    from accrual.settings import Settings
    from engine.calendar import midnight

    steps: list[list] = []
    for command, argument in plan:
        if command == "sample":
            steps.extend(_sample_subset(checkout, work / "sample-subset", argument))
        elif command == "ingest":
            steps.append(["ingest", HERE / argument])
        else:
            steps.append([command, argument])

    made: dict[str, Any] = {"debits": {}, "transfers": {}, "commands": []}
    runtime = Runtime(Settings.from_env())
    try:
        app = runtime.app
        ticks = [date.fromisoformat(a) for c, a in steps if c == "tick"]
        last_tick: date | None = None
        for number, (command, argument) in enumerate(steps, start=1):
            if command == "ingest":
                received_at = midnight(last_tick) + timedelta(hours=1) if last_tick else midnight(ticks[0] - timedelta(days=1))
                report = runtime.apply(read_batches(Path(argument), runtime.settings.batch_size, received_at))
                print(f"step {number}/{len(steps)}: ingest {Path(argument).name}: {dict(report.outcomes)}, "
                      f"released {report.released}, rejected {dict(report.rejected)}")
                continue
            if command == "tick":
                last_tick = date.fromisoformat(argument)
                report = runtime.tick(last_tick)
                print(f"step {number}/{len(steps)}: tick {argument}: settled {report.settled}, "
                      f"returned {report.returned_transfers}, expired {report.expired_points}")
                continue
            a = dict(argument)
            at = datetime.fromisoformat(a.pop("at"))
            assert at.tzinfo is not None
            if command == "enroll_member":
                answer: Any = app.enroll_member(a["msisdn"], a["channel"], at)
            elif command == "debit":
                answer = app.debit(a["msisdn"], a["points"], purpose=a["purpose"], idempotency_key=a["idempotency_key"],
                                   reference=a["reference"], at=at)
                made["debits"][answer.debit_id] = {"msisdn": a["msisdn"], "purpose": a["purpose"],
                                                   "idempotency_key": a["idempotency_key"]}
            elif command == "cancel_debit":
                answer = app.cancel_debit(a["msisdn"], _debit_id(a["purpose"], a["idempotency_key"]), at=at)
            elif command == "offer_transfer":
                answer = app.offer_transfer(a["sender"], a["recipient"], a["points"],
                                            idempotency_key=a["idempotency_key"], at=at)
                made["transfers"][answer.transfer_id] = {"idempotency_key": a["idempotency_key"]}
            elif command in ("accept_transfer", "decline_transfer"):
                answer = getattr(app, command)(_transfer_id(a["idempotency_key"]), a["recipient"], at=at)
            else:
                raise SystemExit(f"step {number}: unknown command {command!r}")
            runtime.projector.catch_up()
            made["commands"].append({"step": number, "command": command, "argument": argument, "answer": _plain(answer)})
            print(f"step {number}/{len(steps)}: {command} -> {_plain(answer)}")
        runtime.projector.catch_up()
    finally:
        runtime.close()
    return made


def _sample_subset(checkout: Path, into: Path, keep: dict) -> list[list]:
    """The sample plan with only the lines of the kept msisdns and MGTS
    accounts (and the lines that name no valid msisdn)."""
    sample = checkout / "tests" / "data" / "sample"
    plan = json.loads((sample / "plan.json").read_text("utf-8"))
    digest = hashlib.sha256((sample / "plan.json").read_bytes())
    msisdns, accounts = set(keep["keep_msisdns"]), set(keep["keep_mgts_accounts"])
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    steps: list[list] = []
    for command, argument in plan:
        if command == "tick":
            steps.append(["tick", argument])
            continue
        data = (sample / argument).read_bytes()
        digest.update(data)
        kept = [line for line in data.splitlines(keepends=True) if _keep(line, msisdns, accounts)]
        if kept:
            (into / argument).write_bytes(b"".join(kept))
            steps.append(["ingest", into / argument])
    if digest.hexdigest() != SAMPLE_SHA256:
        sys.exit(f"{sample} is not the sample of {COMMIT} (sha256 {digest.hexdigest()})")
    return steps


def _keep(line: bytes, msisdns: set[str], accounts: set[str]) -> bool:
    try:
        message = json.loads(line)
    except ValueError:
        return True
    if not isinstance(message, dict):
        return True
    if "mgts_account" in message:
        return message["mgts_account"] in accounts
    msisdn = message.get("msisdn")
    if isinstance(msisdn, str) and MSISDN.fullmatch(msisdn):
        return msisdn in msisdns
    return True


def _debit_id(purpose: str, key: str) -> str:
    from engine import ids

    return str(ids.debit_id(purpose, key))


def _transfer_id(key: str) -> str:
    from engine import ids

    return str(ids.transfer_id(key))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# -- what the old code answers ---------------------------------------------------------------


def _cli(*args: str, ok_codes: tuple[int, ...] = (0,)) -> Any:
    # cwd: `python -m` puts the working directory first on sys.path, so run
    # in the checkout, never in a working tree with newer code.
    result = subprocess.run([sys.executable, "-m", "accrual.cli", *args], capture_output=True, text=True,
                            env=os.environ, cwd=os.environ["PYTHONPATH"])
    if result.returncode not in ok_codes:
        raise SystemExit(f"accrual {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return json.loads(result.stdout)


def _record(made: dict[str, Any], checkout: Path, expected: Path) -> None:
    from accrual.runtime import Runtime
    from accrual.settings import Settings
    from engine import ids

    os.environ["PYTHONPATH"] = str(checkout)  # the CLI subprocesses run the same old code
    found = subprocess.run([sys.executable, "-c", "import accrual, engine, projections; "
                            "print(accrual.__file__, engine.__file__, projections.__file__)"],
                           capture_output=True, text=True, env=os.environ, cwd=checkout, check=True).stdout.split()
    assert all(Path(f).resolve().is_relative_to(checkout) for f in found), found

    def write(name: str, value: Any) -> None:
        (expected / name).write_text(json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n",
                                     encoding="utf-8")

    audit = _cli("audit", "--json")
    assert audit == {"differences": []}, audit
    write("audit.json", audit)
    write("balances.json", _cli("balances", "--json"))
    write("rejections.json", _cli("rejections", "--json"))
    write("held.json", _cli("held", "--json"))

    with Runtime(Settings.from_env()) as runtime:
        runtime.projector.catch_up()
        msisdns = [row[0] for row in runtime.db.query(f"SELECT msisdn FROM {runtime.projector.names.members} ORDER BY msisdn")]
        mgts = [row[0] for row in runtime.db.query(
            f"SELECT mgts_account FROM {runtime.projector.names.mgts_accounts} ORDER BY mgts_account")]
        app = runtime.app
        write("debits.json", {debit_id: {**where, "status": _plain(app.debit_status(where["msisdn"], debit_id))}
                              for debit_id, where in made["debits"].items()})
        write("transfers.json", {transfer_id: {**where, "status": _plain(app.transfer(transfer_id))}
                                 for transfer_id, where in made["transfers"].items()})
        write("commands.json", made["commands"])
        accounts = {}
        for msisdn in msisdns:
            account = app.member(msisdn)
            accounts[msisdn] = json.loads(json.dumps({
                "id": str(account.id), "version": account.version, "msisdn": account.msisdn,
                "balance": account.balance, "lots": account.lots, "uncollected": account.uncollected,
                "next_lot_id": account.next_lot_id, "enrolled_at": account.enrolled_at, "channel": account.channel,
                "held": len(account.held), "usage_months": account.usage_months, "card_months": account.card_months,
                "debits": account.__dict__.get("debits", {}),
            }, default=str))
            assert account.balance == sum(lot[3] for lot in account.lots)
        write("accounts.json", accounts)
        write("mgts_accounts.json", {
            number: json.loads(json.dumps({
                "id": str(account.id), "version": account.version, "msisdn": account.msisdn,
                "linked_at": account.linked_at, "links": account.links, "periods": account.periods,
            }, default=str))
            for number in mgts
            for account in [app.repository.get(ids.mgts_account_id(number))]
        })
    write("balance.json", {msisdn: _cli("balance", msisdn, "--json") for msisdn in msisdns})
    write("history.json", {msisdn: _cli("history", msisdn, "--json") for msisdn in msisdns})
    (expected / "recorded_on.txt").write_text(f"{date.today().isoformat()}\n")


# -- the file ----------------------------------------------------------------------------


def _finish(store: Path, target: Path) -> None:
    db = sqlite3.connect(store)
    try:
        snapshots = dict(db.execute(
            "SELECT json_extract(state, '$.topic'), count(*) FROM stored_snapshots GROUP BY 1").fetchall())
        assert snapshots.get("engine.account:MemberAccount") and snapshots.get("engine.mgts:MgtsAccount"), snapshots
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store, target)
    for suffix in ("-wal", "-shm"):
        assert not Path(f"{target}{suffix}").exists()


if __name__ == "__main__":
    main()
