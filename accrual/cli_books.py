"""`accrual report ...` and the balances as they stood after a tick: the
books for auditors and finance (docs/books.md). Commands parse, call
projections.books or projections.at_tick, and print."""
from __future__ import annotations

import csv
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import typer
from rich import box
from rich.progress import Progress
from rich.measure import Measurement
from rich.table import Table

from accrual import charts
from projections.at_tick import NoSuchTick, account_at, balances_at, tick_position
from projections.books import Books, Period, by_month, complete, within
from projections.cohorts import Cohorts
from projections.export import COLUMNS, movements, select
from projections.log import closes

report_app = typer.Typer(no_args_is_help=True, help="The books: liability rollforward for auditors and finance.")
export_app = typer.Typer(no_args_is_help=True, help="Exports for auditors and data teams.")


def _cli() -> Any:
    from accrual import cli  # the shared helpers (runtime, consoles, date parsing); cli imports this module

    return cli


@report_app.command()
def liability(
    by: str = typer.Option("tick", "--by", help="tick: a row per closed period; month: a row per month"),
    since: str = typer.Option(None, "--from", help="the first period_end shown (YYYY-MM-DD)"),
    until: str = typer.Option(None, "--to", help="the last period_end shown (YYYY-MM-DD)"),
    json_output: bool = typer.Option(False, "--json", help="a JSON list of rows, with the rubles under rub"),
    csv_output: bool = typer.Option(False, "--csv", help="CSV: points columns, then the same in rubles"),
    chart: Path = typer.Option(None, "--chart", dir_okay=False, help="also draw the months as FILE.png or .svg"),
) -> None:
    """The points liability, period by period: opening, issued by rule,
    clawed back, expired, redeemed by purpose, restored, transferred out and
    in, returned, adjusted by staff (signed), closing. A period ends at a
    tick, in log order."""
    cli = _cli()
    if by not in ("tick", "month"):
        raise typer.BadParameter(f"--by is tick or month, not {by!r}")
    if json_output and csv_output:
        raise typer.BadParameter("--json or --csv, not both")
    _check_chart(chart)
    first = cli._parse_date(since) if since else None
    last = cli._parse_date(until) if until else None
    with cli._runtime() as runtime:
        runtime.projector.catch_up()
        periods = Books(runtime.db).periods()
        value = runtime.settings.point_value_rub
    rows = within(by_month(periods) if by == "month" else periods, first, last)
    if chart is not None:  # by month whatever --by says: a bar a tick is unreadable over a year
        _draw(charts.liability, within(by_month(periods), first, last), chart)
    if json_output:
        cli._write_json([row.as_dict(value) for row in rows])
    elif csv_output:
        _write_csv(rows, value)
    else:
        _print_table(cli, rows, value)


def _write_csv(rows: list[Period], value: Decimal) -> None:
    columns = _columns(rows)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["period_end", "ticks", *columns, *(f"{c}_rub" for c in columns)])
    for row in rows:
        points = dict(row.columns())
        figures = [points.get(c, 0) for c in columns]
        writer.writerow([row.period_end.isoformat(), row.ticks, *figures,
                         *(str((value * f).quantize(Decimal("0.01"))) for f in figures)])


def _columns(rows: list[Period]) -> list[str]:
    """The columns of every row (a rule that occurs in one period only still gets its column)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update((column, None) for column, _ in row.columns())
    return list(seen) or [column for column, _ in Period(date.min, 0, 0, complete({}), 0).columns()]


def _print_table(cli: Any, rows: list[Period], value: Decimal) -> None:
    """A summary a terminal can show: each measure's total (--json and --csv
    break issued and redeemed down)."""
    if not rows:
        cli.out.print("no closed period yet: the books close at each tick (accrual tick --as-of DATE)")
        return
    table = Table("period end", "opening", "issued", "clawed back", "expired", "redeemed", "restored",
                  "transfers", "adjusted", "closing")
    for row in rows:
        transfers = row.total("transferred_in") + row.total("returned") - row.total("transferred_out")
        table.add_row(row.period_end.isoformat(), f"{row.opening:,}", f"{row.total('issued'):,}",
                      f"{row.total('clawed_back'):,}", f"{row.total('expired'):,}", f"{row.total('redeemed'):,}",
                      f"{row.total('restored'):,}", f"{transfers:+,}", f"{row.total('adjusted'):+,}",
                      f"{row.closing:,}")
    _print_whole(table)
    closing = rows[-1].closing
    cli.out.print(f"closing {rows[-1].period_end}: {closing:,} points = {(value * closing).quantize(Decimal('0.01')):,} ₽"
                  f" at {value} ₽ a point")


@report_app.command()
def breakage(
    json_output: bool = typer.Option(False, "--json", help="the cohorts, the estimate and its method as JSON"),
    csv_output: bool = typer.Option(False, "--csv", help="a row per cohort"),
    chart: Path = typer.Option(None, "--chart", dir_okay=False, help="also draw the cohorts as FILE.png or .svg"),
) -> None:
    """Cohorts of lots by the month of their lot date: issued, redeemed,
    transferred, clawed back, expired, outstanding; the breakage rate of each
    closed cohort and an estimate for the open ones (docs/books.md)."""
    cli = _cli()
    if json_output and csv_output:
        raise typer.BadParameter("--json or --csv, not both")
    _check_chart(chart)
    with cli._runtime() as runtime:
        runtime.projector.catch_up()
        report = Cohorts(runtime.db).report()
    rows = report.rows()
    if chart is not None:
        _draw(charts.breakage, rows, chart)
    if json_output:
        return cli._write_json(report.as_dict())
    if csv_output:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(BREAKAGE_COLUMNS)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in BREAKAGE_COLUMNS])
        return None
    if not rows:
        cli.out.print("no lots yet")
        return None
    table = Table("cohort", "issued", "redeemed", "clawed back", "expired", "in transfer", "outstanding",
                  "breakage", "expected")
    for row in rows:
        rate = f"{Decimal(row['breakage_rate']) * 100:.2f} %" if row["breakage_rate"] is not None else "open"
        expected = f"{row['expected_breakage']:,}" if row["expected_breakage"] is not None else ""
        table.add_row(row["cohort"], *(f"{row[c]:,}" for c in ("issued", "redeemed", "clawed_back", "expired",
                                                               "in_transfer", "outstanding")), rate, expected)
    _print_whole(table)
    estimate = report.rate
    cli.out.print(f"estimate: {'none yet (no closed cohort)' if estimate is None else f'{estimate * 100:.2f} %'}"
                  f" from {', '.join(report.learned_from) or 'no cohort'}; {report.METHOD}")
    return None


BREAKAGE_COLUMNS = ("cohort", "closed", "issued", "redeemed", "transferred", "in_transfer", "clawed_back", "expired",
                    "adjusted", "outstanding", "breakage_rate", "expected_breakage")


def _print_whole(table: Table) -> None:
    """Prints the table with every column whole: wider than the terminal if
    it must be (the terminal wraps the lines, a pipe or a file gets them
    whole), never with the rightmost columns cropped, as rich would do."""
    _keep_whole(table)
    out = _cli().out
    needed = Measurement.get(out, out.options.update(max_width=10_000), table).minimum
    out.print(table, width=max(out.width, needed), crop=False)


def _keep_whole(table: Table) -> None:
    """After the rows are in: figures are never cut on a narrow terminal
    (each column at least as wide as its widest figure and the longest word
    of its header); headers wrap between words instead."""
    table.box = box.SIMPLE_HEAD  # no vertical rules: the figures get the width
    table.pad_edge = False
    for column in table.columns:
        words = str(column.header).split() or [""]
        column.min_width = max([len(str(cell)) for cell in column.cells] + [len(word) for word in words])
        if column is not table.columns[0]:
            column.justify = "right"


def _check_chart(path: Path | None) -> None:
    if path is not None:
        try:
            charts.check_target(path)
        except charts.ChartError as error:
            raise typer.BadParameter(str(error)) from error


def _draw(draw: Callable[[Any, Path], None], rows: Any, path: Path) -> None:
    try:
        draw(rows, path)
    except charts.ChartError as error:
        _cli().err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from error
    _cli().err.print(f"chart written to {path}")


def at_tick_balances(as_of: date) -> dict[str, int]:
    """Every enrolled member's balance right after the tick as-of `as_of`, from the log."""
    cli = _cli()
    with cli._runtime() as runtime:
        position = _position(cli, runtime.app, as_of)
        with Progress(console=cli.err, disable=not cli.err.is_terminal, transient=True) as progress:
            task = progress.add_task(f"the log up to the tick as-of {as_of}", total=position)
            update: Callable[[int, int], None] = lambda done, total: progress.update(task, completed=done)
            return balances_at(runtime.app, position, update)


def at_tick_balance(msisdn: str, as_of: date) -> dict[str, Any]:
    """One member's account right after the tick as-of `as_of`, from the log."""
    cli = _cli()
    with cli._runtime() as runtime:
        position = _position(cli, runtime.app, as_of)
        account = account_at(runtime.app, msisdn, position)
    if account is None:
        cli.err.print(f"no account for {msisdn} at the tick as-of {as_of}")
        raise typer.Exit(1)
    lots = [{"lot_id": lot.lot_id, "lot_date": lot.lot_date.isoformat(), "expires_on": lot.expires_on.isoformat(),
             "remaining": lot.remaining} for lot in account.lots]
    expiring = {f"{days}_days": sum(lot.remaining for lot in account.lots
                                    if as_of < lot.expires_on <= as_of + timedelta(days=days))
                for days in (30, 60, 90)}
    return {
        "msisdn": msisdn, "at_tick": as_of.isoformat(), "position": position, "version": account.version,
        "enrolled_at": account.enrolled_at.isoformat() if account.enrolled_at else None,
        "balance": account.balance, "uncollected": account.uncollected, "lots": lots, "expiring": expiring,
    }


def _position(cli: Any, app: Any, as_of: date) -> int:
    try:
        return tick_position(app, as_of)
    except NoSuchTick as error:
        cli.err.print(f"{error}; the books close at each tick (the ticks of releases before the books left no mark)")
        raise typer.Exit(1) from error


def print_at_tick_balance(found: dict[str, Any], json_output: bool) -> None:
    cli = _cli()
    if json_output:
        return cli._write_json(found)
    state = f"enrolled {found['enrolled_at']}" if found["enrolled_at"] else "not enrolled (events held)"
    cli.out.print(f"{found['msisdn']} right after the tick as-of {found['at_tick']} (log position {found['position']}): "
                  f"[bold]{found['balance']}[/bold] points, {state}, uncollected {found['uncollected']}")
    table = Table("lot", "lot date", "expires", "left")
    for lot in found["lots"]:
        table.add_row(str(lot["lot_id"]), lot["lot_date"], lot["expires_on"], str(lot["remaining"]))
    cli.out.print(table)
    cli.out.print("expiring after that tick: "
                  + ", ".join(f"{points} within {key.split('_')[0]} days" for key, points in found["expiring"].items()))


@export_app.command("history")
def export_history(
    since: str = typer.Option(None, "--from", help="the first period_end exported (YYYY-MM-DD)"),
    until: str = typer.Option(None, "--to", help="the last period_end exported (YYYY-MM-DD)"),
    csv_file: Path = typer.Option(None, "--csv", dir_okay=False, help="write CSV here ('-': standard output)"),
    parquet_file: Path = typer.Option(None, "--parquet", dir_okay=False, help="write Parquet here (needs pyarrow)"),
) -> None:
    """Every movement of points booked in the closed periods whose end is
    within [--from, --to]: member, rule or reason, source event id, lots,
    log position and the period, read from the log in log order."""
    cli = _cli()
    if (csv_file is None) == (parquet_file is None):
        raise typer.BadParameter("one of --csv FILE or --parquet FILE")
    first = cli._parse_date(since) if since else None
    last = cli._parse_date(until) if until else None
    writer = _ParquetRows(parquet_file) if parquet_file is not None else _CsvRows(csv_file)
    count = 0
    with cli._runtime() as runtime, writer:
        runtime.projector.catch_up()
        selection = select(closes(runtime.app), first, last)
        with Progress(console=cli.err, disable=not cli.err.is_terminal, transient=True) as progress:
            task = progress.add_task("export history", total=max(selection.stop - selection.start, 1))
            rows = movements(runtime.app, runtime.projector, selection,
                             lambda done, total: progress.update(task, completed=done))
            for row in rows:
                writer.write(row)
                count += 1
    periods = selection.periods
    span = f"{periods[0].as_of} .. {periods[-1].as_of}" if periods else "no closed period in that range"
    cli.err.print(f"exported {count} movements of {len(periods)} periods ({span})")


class _CsvRows:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> _CsvRows:
        self.file = sys.stdout if str(self.path) == "-" else self.path.open("w", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.file, COLUMNS, lineterminator="\n")
        self.writer.writeheader()
        return self

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)

    def __exit__(self, *exc: object) -> None:
        if self.file is not sys.stdout:
            self.file.close()


class _ParquetRows:
    """Row groups of `GROUP` rows, so memory holds one group."""

    GROUP = 100_000

    def __init__(self, path: Path):
        try:
            import pyarrow as pa  # an optional extra: pip install 'accrual[parquet]'
            import pyarrow.parquet as pq
        except ImportError as error:
            _cli().err.print("--parquet needs pyarrow: pip install 'accrual[parquet]'")
            raise typer.Exit(2) from error
        self.pa, self.pq, self.path = pa, pq, path
        text, whole = pa.string(), pa.int64()
        self.schema = pa.schema([(c, whole if c in ("position", "version", "points", "lot_id") else text)
                                 for c in COLUMNS])
        self.rows: list[dict[str, Any]] = []

    def __enter__(self) -> _ParquetRows:
        self.writer = self.pq.ParquetWriter(str(self.path), self.schema)
        return self

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def __exit__(self, *exc: object) -> None:
        self._flush()
        self.writer.close()
