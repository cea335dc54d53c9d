"""The `accrual` command line, as EVENTS.md lists it. Commands parse their
arguments, call the runtime and print; no rule lives here."""
from __future__ import annotations

import json
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from accrual import cli_books, cli_dead_letters, cli_operators
from accrual.runtime import Runtime
from accrual.settings import Settings, SettingsError
from engine.messages import APPLIED, DUPLICATE, HELD, NOT_ELIGIBLE, REJECTED, Report
from engine.calendar import MOSCOW
from engine.rules import RulesFileError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold the database password
    help="Event-sourced loyalty-points engine.",
)
schemas_app = typer.Typer(no_args_is_help=True, help="Message schemas for producers.")
app.add_typer(schemas_app, name="schemas")
sms_app = typer.Typer(no_args_is_help=True, help="SMS of the personal account (development outbox).")
app.add_typer(sms_app, name="sms")
stores_app = typer.Typer(no_args_is_help=True, help="Keys of the MTS shop tills that debit points.")
app.add_typer(stores_app, name="stores")
app.add_typer(cli_books.report_app, name="report")
app.add_typer(cli_books.export_app, name="export")
app.add_typer(cli_dead_letters.dead_letters_app, name="dead-letters")
app.add_typer(cli_operators.operators_app, name="operators")

out = Console()
err = Console(stderr=True)


def _runtime() -> Runtime:
    try:
        return Runtime(Settings.from_env())
    except (SettingsError, RulesFileError) as error:
        err.print(f"[red]configuration error:[/red] {error}")
        raise typer.Exit(2) from error


def _read(query):
    """A read model brought up to the end of the event log."""
    with _runtime() as runtime:
        runtime.projector.catch_up()
        return query(runtime.reads)


def _write_json(value) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True, ensure_ascii=False) + "\n")


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {text!r}") from error


@app.command()
def ingest(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="JSON Lines, one message a line"),
    json_output: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Apply a file of inbound events and print what happened to them."""
    with _runtime() as runtime:
        received_at = datetime.now(timezone.utc)  # when the file was received, for rejections
        size = file.stat().st_size
        show = err.is_terminal and size > 1_000_000
        with Progress(
            TextColumn("[bold]ingest[/bold] {task.description}"),
            BarColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not show,
        ) as progress:
            task = progress.add_task(file.name, total=size)
            report = runtime.ingest(file, received_at, on_bytes=lambda n: progress.advance(task, n))
    _print_report(report, json_output, f"ingested {file}")


@app.command("run-plan")
def run_plan(
    plan_file: Path = typer.Argument(..., exists=True, dir_okay=False, help='plan.json: [["ingest", "FILE"], ["tick", "DATE"], ...]'),
) -> None:
    """Run a plan of ingests and ticks in order (back-fills, the sample workload).
    Files are relative to the plan's folder."""
    try:
        steps = json.loads(plan_file.read_text("utf-8"))
        assert isinstance(steps, list) and all(isinstance(s, list) and len(s) == 2 for s in steps)
    except (ValueError, AssertionError) as error:
        err.print(f"[red]{plan_file}[/red]: expected a JSON list of [command, argument] pairs")
        raise typer.Exit(2) from error
    total = Report()
    with _runtime() as runtime:
        received_at = datetime.now(timezone.utc)
        for number, (command, argument) in enumerate(steps, start=1):
            if command == "ingest":
                total.add(runtime.ingest(plan_file.parent / argument, received_at))
            elif command == "tick":
                total.add(runtime.tick(_parse_date(argument)))
            else:
                err.print(f"[red]step {number}[/red]: unknown command {command!r} (ingest or tick)")
                raise typer.Exit(2)
            err.print(f"step {number}/{len(steps)}: {command} {argument}")
    _print_report(total, False, f"ran {len(steps)} steps of {plan_file}")
    out.print(f"settlements {total.settled}, points expired {total.expired_points}")


@app.command()
def tick(
    as_of: str = typer.Option(..., "--as-of", help="the date whose 00:00 Moscow time closes the day"),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """The daily close (rule 9): settlements due, lapsed transfers back to their senders, then expiry."""
    day = _parse_date(as_of)
    with _runtime() as runtime:
        report = runtime.tick(day)
    summary = {
        "as_of": day.isoformat(), "settled": report.settled, "returned_transfers": report.returned_transfers,
        "expired_points": report.expired_points,
    }
    if json_output:
        out.print_json(json.dumps(summary))
    else:
        out.print(
            f"tick {day}: {report.settled} settlements, {report.returned_transfers} transfers returned, "
            f"{report.expired_points} points expired"
        )


@app.command()
def balances(
    json_output: bool = typer.Option(False, "--json", help="one JSON object: msisdn -> balance"),
    at_tick: str = typer.Option(None, "--at-tick", help="as they stood right after the tick as-of this date, from the log"),
) -> None:
    """Every enrolled member's balance (now, or right after a tick)."""
    if at_tick:
        result = cli_books.at_tick_balances(_parse_date(at_tick))
    else:
        result = _read(lambda reads: reads.balances())
    if json_output:
        return _write_json(result)
    table = Table("msisdn", "balance")
    for msisdn, points in result.items():
        table.add_row(msisdn, str(points))
    out.print(table)


@app.command()
def balance(
    msisdn: str,
    json_output: bool = typer.Option(False, "--json"),
    at_tick: str = typer.Option(None, "--at-tick", help="as it stood right after the tick as-of this date, from the log"),
) -> None:
    """One member's balance and lots with their expiry (now, or right after a tick)."""
    if at_tick:
        return cli_books.print_at_tick_balance(cli_books.at_tick_balance(msisdn, _parse_date(at_tick)), json_output)
    with _runtime() as runtime:
        runtime.projector.catch_up()
        member = runtime.reads.member(msisdn)
        if member is None:
            err.print(f"no account for {msisdn}")
            raise typer.Exit(1)
        lots = runtime.reads.lots(msisdn)
        forecast = runtime.reads.burn_forecast(msisdn, datetime.now(MOSCOW).date())
    if json_output:
        burn = {f"{days}_days": points for days, points in forecast.items()}
        return _write_json({**member, "lots": lots, "expiring": burn})
    state = f"enrolled {member['enrolled_at']}" if member["enrolled_at"] else "not enrolled (events held)"
    out.print(f"{msisdn}: [bold]{member['balance']}[/bold] points, {state}, uncollected {member['uncollected']}")
    table = Table("lot", "rule", "lot date", "expires", "points", "left")
    for lot in lots:
        table.add_row(*(str(lot[k]) for k in ("lot_id", "rule", "lot_date", "expires_on", "points", "remaining")))
    out.print(table)
    out.print("expiring: " + ", ".join(f"{points} within {days} days" for days, points in forecast.items()))


@app.command()
def history(
    msisdn: str,
    json_output: bool = typer.Option(False, "--json"),
    limit: int = typer.Option(1000, min=1, max=100000),
) -> None:
    """One member's credits and debits, each with its rule or reason."""
    with _runtime() as runtime:
        runtime.projector.catch_up()
        if runtime.reads.member(msisdn) is None:
            err.print(f"no account for {msisdn}")
            raise typer.Exit(1)
        entries = runtime.reads.history(msisdn, limit=limit)
    if json_output:
        sys.stdout.write(json.dumps(entries, sort_keys=True, ensure_ascii=False) + "\n")
        return
    table = Table("v", "when", "what", "points", "rule/reason", "source", "expires")
    for e in entries:
        table.add_row(
            str(e["version"]), e["occurred_at"], e["kind"], f"{e['points']:+d}",
            e["rule"] or e["reason"] or "", _source(e), e["expires_on"] or "",
        )
    out.print(table)


def _source(entry: dict) -> str:
    """Where a history line came from: the source event, or for spending the
    order, the store or the other member."""
    detail, kind = entry["detail"], entry["kind"]
    if kind in ("redeemed", "restored"):
        reference = detail.get("reference") or {}
        if detail.get("purpose") == "pos":
            text = f"store {reference.get('store_id', '?')} receipt {reference.get('receipt', '?')}"
        else:
            text = f"order {reference.get('item_id', '?')}" + (f" {reference['title']}" if reference.get("title") else "")
        return text + (" (cancelled)" if kind == "restored" else "")
    if kind == "transfer_out":
        return f"to {detail.get('to')} ({detail.get('status')})"
    if kind == "transfer_in":
        return f"from {detail.get('from')}"
    if kind == "transfer_returned":
        return f"back from {detail.get('to')}"
    if kind == "adjusted":
        approved = f", approved by {detail['approved_by']}" if detail.get("approved_by") else ""
        return f"adjustment by {detail.get('requested_by')}{approved}: {detail.get('reason')}"
    return entry["source_event_id"] or ""


@app.command()
def replay() -> None:
    """Drop the read models and rebuild them from the event log."""
    with _runtime() as runtime:
        with Progress(console=err, disable=not err.is_terminal) as progress:
            task = progress.add_task("replay", total=None)
            count = runtime.replay(lambda done, total: progress.update(task, completed=done, total=total))
    out.print(f"replayed {count} events into the read models")


@app.command()
def audit(json_output: bool = typer.Option(False, "--json")) -> None:
    """Rebuild the read models into a scratch copy and report every difference
    from the live ones (exit code 1 if there is any)."""
    with _runtime() as runtime:
        differences = runtime.audit()
    if json_output:
        rows = [{"table": d.table, "key": d.key, "live": d.live, "rebuilt": d.rebuilt} for d in differences]
        sys.stdout.write(json.dumps({"differences": rows}, default=str) + "\n")
    elif differences:
        for d in differences[:200]:
            out.print(f"[red]{d.table}[/red] {d.key}: live={d.live!r} rebuilt={d.rebuilt!r}")
        out.print(f"[red]{len(differences)} differences[/red]")
    else:
        out.print("audit: the read models equal a rebuild from the event log")
    if differences:
        raise typer.Exit(1)


@app.command()
def verify(
    json_output: bool = typer.Option(False, "--json"),
    expect_head: str = typer.Option("", "--expect-head", help="a head taken earlier (64 hex digits), with --at"),
    at: int = typer.Option(-1, "--at", help="the log position of --expect-head (a record's notification_id)"),
) -> None:
    """Recompute the event log's hash chain from the stored events; report the
    first position where it breaks (exit code 1) and the current head."""
    expect = _expectation(expect_head, at, json_output)
    with _runtime() as runtime:
        verdict = runtime.verify(expect)
    if json_output:
        _write_json(verdict.as_json())
    else:
        _print_verdict(verdict)
    if not verdict.ok:
        raise typer.Exit(1)


def _expectation(expect_head: str, at: int, json_output: bool) -> tuple[int, bytes] | None:
    """--expect-head and --at, both or neither; a clear refusal (exit code 2) otherwise."""
    if not expect_head and at == -1:
        return None
    if not expect_head or at < 0:
        _refuse("invalid_arguments", "--expect-head HASH and --at POSITION (0 or more) go together", json_output)
    try:
        head = bytes.fromhex(expect_head)
    except ValueError:
        head = b""
    if len(head) != 32:
        _refuse("invalid_head", f"--expect-head: expected 64 hex digits (a SHA-256), got {expect_head!r}",
                json_output)
    return at, head


def _refuse(reason: str, detail: str, json_output: bool) -> None:
    if json_output:
        _write_json({"error": reason, "detail": detail})
    err.print(f"[red]{reason}[/red]: {detail}", markup=True)
    raise typer.Exit(2)


def _print_verdict(verdict) -> None:
    out.print(f"{verdict.events} stored events, the last at position {verdict.position}; "
              f"checkpoints reach {verdict.chained}")
    out.print(f"head {verdict.head.hex()}")
    if verdict.expected is not None:
        e = verdict.expected
        out.print(f"head at {e['position']}: {e['found']} ({'as expected' if e['ok'] else 'NOT the head expected'})")
    if verdict.ok:
        out.print("verify: the event log is intact")
    else:
        detail = verdict.as_json()["detail"]
        out.print(f"[red]broken at position {verdict.first_break}[/red]: {verdict.reason}: {detail}")


@app.command()
def rejections(json_output: bool = typer.Option(False, "--json")) -> None:
    """Rejected messages, counted by reason."""
    counts = _read(lambda reads: reads.rejections_by_reason())
    if json_output:
        return _write_json(counts)
    for reason, count in counts.items():
        out.print(f"{reason}: {count}")


@app.command()
def held(json_output: bool = typer.Option(False, "--json")) -> None:
    """Members who are not enrolled yet, with the number of events held for each."""
    waiting = _read(lambda reads: reads.held())
    if json_output:
        return _write_json(waiting)
    out.print(f"{sum(waiting.values())} events held for {len(waiting)} msisdns not enrolled yet")
    for msisdn, count in waiting.items():
        out.print(f"{msisdn}: {count}")


topics_app = typer.Typer(no_args_is_help=True, help="The Kafka topics of streams.yaml.")
app.add_typer(topics_app, name="topics")


def _streams_and_kafka():
    from accrual.kafka import Names
    from accrual.settings import WorkerSettings
    from accrual.streams import StreamsFileError, load_streams

    try:
        ws = WorkerSettings.from_env()
        names = Names(load_streams(_streams_file()), ws.topic_prefix)
    except (SettingsError, StreamsFileError) as error:
        err.print(f"[red]configuration error:[/red] {error}")
        raise typer.Exit(2) from error
    return ws, names


def _streams_file() -> Path:
    import os

    from accrual.streams import DEFAULT_FILE

    return Path(os.environ.get("ACCRUAL_STREAMS_FILE") or DEFAULT_FILE)


def _kafka_failure(error: BaseException, bootstrap: str) -> None:
    err.print(f"[red]Kafka error[/red] at {bootstrap}: {type(error).__name__}: {error}")
    raise typer.Exit(3)


@topics_app.command("create")
def topics_create() -> None:
    """Create the topics of streams.yaml that are missing (idempotent)."""
    import asyncio

    from aiokafka.errors import KafkaError

    from accrual.kafka import create_topics

    ws, names = _streams_and_kafka()
    try:
        outcome = asyncio.run(create_topics(ws.bootstrap, names, ws.replication_factor))
    except (KafkaError, OSError) as error:
        _kafka_failure(error, ws.bootstrap)
    for topic, what in sorted(outcome.items()):
        out.print(f"{topic}: {what}")


@app.command()
def notifier(
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """The notifier: tells members by SMS what happened to their points
    (docs/notifications.md). A faust-streaming application beside the
    worker: several instances share the partitions; SIGTERM stops it cleanly."""
    import os

    from accrual.logs import configure_logging
    from accrual import notifier_metrics
    from accrual.notifier import NotifierSettings, run
    from web.app import open_store, sms_gateway

    ws, names = _streams_and_kafka()
    configure_logging(log_level.upper())
    try:
        settings = Settings.from_env()
        ns = NotifierSettings.from_env(ws, names)
    except SettingsError as error:
        err.print(f"[red]configuration error:[/red] {error}")
        raise typer.Exit(2) from error
    from accrual.health import Health, serve

    health = Health()
    health.started = True
    if ns.metrics_port is not None:
        try:
            serve(ns.metrics_port, ws.metrics_host, health, notifier_metrics.REGISTRY)
        except OSError as error:
            err.print(f"[red]metrics endpoint[/red] {ws.metrics_host}:{ns.metrics_port}: {error}")
            raise typer.Exit(2) from error
    store = open_store(settings)  # the outbox's store (the personal account's), when no HTTP gateway is set
    try:
        run(ns, names, sms_gateway(settings, store), log_level.upper(), data_dir=os.environ.get("ACCRUAL_NOTIFIER_DIR"),
            health=health)
    finally:
        store.close()


@app.command()
def worker(
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG logs every batch"),
) -> None:
    """The Kafka stream worker: consume the inbound topics, apply, publish
    the outbound topics, run the daily tick (see streams.yaml)."""
    import asyncio

    from aiokafka.errors import KafkaError

    from accrual import metrics
    from accrual.health import Health
    from accrual.logs import configure_logging
    from accrual.outage import BrokerOutage, ride_out
    from accrual.worker import Worker

    ws, names = _streams_and_kafka()
    configure_logging(log_level.upper())
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        err.print(f"[red]configuration error:[/red] {error}")
        raise typer.Exit(2) from error
    health = Health()
    if ws.metrics_port is not None:
        try:
            metrics.serve(ws.metrics_port, ws.metrics_host, health)
        except OSError as error:
            err.print(f"[red]metrics endpoint[/red] {ws.metrics_host}:{ws.metrics_port}: {error}")
            raise typer.Exit(2) from error
    try:
        worker = ride_out("the worker", settings.store_outage_limit_s,
                          lambda: Worker(settings, ws, names, log_level.upper(), health))
        assert worker is not None  # nothing asks it to stop before it runs
        asyncio.run(worker.run())
    except KafkaError as error:
        _kafka_failure(error, ws.bootstrap)
    except BrokerOutage as error:
        err.print(f"[red]broker outage[/red]: {error}")
        err.print("Nothing of an unfinished batch was committed; run the worker again when the broker is reachable.")
        raise typer.Exit(3) from error


@app.command()
def status(json_output: bool = typer.Option(False, "--json")) -> None:
    """Lag per partition of the worker group, messages by outcome,
    rejections by reason, the publisher's position."""
    import asyncio

    from aiokafka.errors import KafkaError

    from accrual.status import kafka_lag, notifier_lag, store_counts

    ws, names = _streams_and_kafka()
    try:
        lag = asyncio.run(kafka_lag(ws.bootstrap, names))
        notifying = asyncio.run(notifier_lag(ws.bootstrap, names))
    except (KafkaError, OSError) as error:
        _kafka_failure(error, ws.bootstrap)
    with _runtime() as runtime:
        counts = store_counts(runtime.db)
        counts["log_position"] = runtime.app.recorder.max_notification_id() or 0
    result = {"group": names.group, "lag_total": sum(r["lag"] for r in lag), "partitions": lag, **counts,
              "notifier": {"group": names.notifier_group, "lag_total": sum(r["lag"] for r in notifying),
                           "partitions": notifying}}
    if json_output:
        return _write_json(result)
    out.print(f"group {names.group}: lag {result['lag_total']}")
    table = Table("topic", "partition", "committed", "end", "lag")
    for row in lag:
        table.add_row(row["topic"], str(row["partition"]), str(row["committed"]), str(row["end"]), str(row["lag"]))
    out.print(table)
    out.print(f"outcomes: {counts['outcomes']}")
    out.print(f"rejected by reason: {counts['rejected_by_reason']}")
    out.print(f"event log at {counts['log_position']}, published up to {counts['published_position']}")
    out.print(f"notifier group {names.notifier_group}: lag {result['notifier']['lag_total']} "
              "(points events and preferences not yet handled)")


@schemas_app.command("export")
def schemas_export(directory: Path) -> None:
    """Write JSON Schema files that producers can validate against."""
    from schemas import export_json_schemas

    for path in export_json_schemas(directory):
        out.print(str(path))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, min=1, max=65535),
    workers: int = typer.Option(1, min=1, max=64, help="server processes sharing the port and the store"),
) -> None:
    """The personal account: web pages and the JSON API (/openapi.json)."""
    import uvicorn

    from web.app import create_app
    from web.catalog import CatalogFileError

    settings = _settings()
    # Cookies are Secure and HSTS is sent unless ACCRUAL_INSECURE_COOKIES=1:
    # the listening address says nothing of how members reach the service
    # (a TLS proxy on the same machine is the usual setup, docs/security.md).
    # Browsers keep Secure cookies of http://localhost and 127.0.0.1, so
    # trying it on this machine works as it is.
    try:
        web_app = create_app(settings)
    except (CatalogFileError, RulesFileError) as error:
        err.print(f"[red]configuration error:[/red] {error}")
        raise typer.Exit(2) from error
    err.print(f"personal account on http://{host}:{port}/ (API: /openapi.json), store {settings.database.redacted()}"
              + (f", {workers} processes" if workers > 1 else ""))
    # proxy_headers off: the client address is the TCP peer; X-MSISDN and
    # X-Forwarded-For are read only from ACCRUAL_TRUSTED_PROXIES (web.app).
    options: dict = {"host": host, "port": port, "proxy_headers": False, "server_header": False, "log_level": "info"}
    if workers == 1:
        uvicorn.run(web_app, **options)
        return
    # Several processes: each builds its own application from the same
    # environment (uvicorn imports the factory in each). Nothing of a
    # process's state needs the others: sessions, codes and rate limits are
    # rows of the store (limits taken in one transaction, docs/security.md),
    # commands are units of work that retry on another writer's conflict,
    # and each process's read-model follower coordinates with the others
    # through the read models' position row. The application built above
    # only checked the configuration.
    web_app.state.context.close()
    uvicorn.run("web.app:create_app", factory=True, workers=workers, **options)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        err.print(f"[red]configuration error:[/red] {error}")
        raise typer.Exit(2) from error


def _web_store():
    from web.app import open_store

    return open_store(_settings())


@sms_app.command("outbox")
def sms_outbox(
    json_output: bool = typer.Option(False, "--json"),
    msisdn: str = typer.Option("", help="only the messages to this number"),
    limit: int = typer.Option(20, min=1, max=10000),
) -> None:
    """The SMS that the default gateway wrote instead of sending, latest first."""
    from web.sms import DatabaseOutbox

    store = _web_store()
    try:
        messages = DatabaseOutbox(store).messages(msisdn or None, limit)
    finally:
        store.close()
    if json_output:
        return _write_json(messages)
    for message in messages:
        key = f"  [{message['key']}]" if message.get("key") else ""  # a notification's idempotency key
        out.print(f"{message['sent_at']}  {message['msisdn']}  {message['text']}{key}", markup=False)


@stores_app.command("add")
def stores_add(store_id: str = typer.Argument(..., help="the shop's id, as in its receipts")) -> None:
    """A new key for a shop till; printed once (only its hash is kept). A
    second call for the same store replaces its key."""
    from web.auth import Auth
    from web.clock import SystemClock

    if not store_id or len(store_id) > 100 or not all(c.isalnum() or c in "._-" for c in store_id):
        err.print("a store id has 1 to 100 letters, digits, dots, dashes or underscores")
        raise typer.Exit(2)
    store = _web_store()
    try:
        key = Auth(store, SystemClock(), None, "").add_store(store_id)
    finally:
        store.close()
    sys.stdout.write(key + "\n")


def _print_report(report: Report, json_output: bool, title: str) -> None:
    summary = {
        "applied": report.outcomes[APPLIED],
        "not_eligible": report.outcomes[NOT_ELIGIBLE],
        "duplicates": report.outcomes[DUPLICATE],
        "held": report.outcomes[HELD],
        "released": report.released,
        "rejected": report.outcomes[REJECTED],
        "rejected_by_reason": dict(sorted(report.rejected.items())),
        "rejected_examples": [
            {"line": line, "topic": topic, "reason": reason, "detail": detail}
            for line, topic, reason, detail in report.examples
        ],
    }
    if json_output:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    out.print(
        f"{title}: applied {summary['applied']}, not eligible {summary['not_eligible']}, "
        f"duplicates {summary['duplicates']}, held {summary['held']}, released {summary['released']}, "
        f"rejected {summary['rejected']}"
    )
    for reason, count in summary["rejected_by_reason"].items():
        out.print(f"  rejected {reason}: {count}")
    for example in summary["rejected_examples"]:
        where = f"line {example['line']}" if example["line"] is not None else "held message"
        out.print(f"  {where} ({example['topic']}): {example['reason']}: {example['detail']}", markup=False)
    if report.outcomes[REJECTED] > len(summary["rejected_examples"]):
        out.print("  (all rejections: accrual rejections)")


def main() -> None:
    """The console script: storage failures end with one clear line and exit
    code 3 (nothing of an unfinished batch was saved; run the command again)."""
    import sqlite3

    from eventsourcing.persistence import PersistenceError

    from accrual.outage import StoreOutage

    try:
        app()
    except (PersistenceError, sqlite3.Error, OSError, StoreOutage) as error:
        _storage_failure(error)
    except Exception as error:
        if type(error).__module__.startswith("psycopg"):
            _storage_failure(error)
        raise


def _storage_failure(error: BaseException) -> None:
    try:
        where = Settings.from_env().database.redacted()
    except SettingsError:
        where = "the store"
    err.print(f"[red]storage error[/red] at {where}: {type(error).__name__}: {error}", markup=True)
    err.print("Nothing of an unfinished batch was saved; run the command again when the store is reachable.")
    raise SystemExit(3)


if __name__ == "__main__":
    main()


