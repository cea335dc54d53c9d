"""The books (issue 12): the points liability rolled forward period by
period, a period ending at each tick in log order (docs/books.md).

Every expected number is worked out by hand in a comment. Rates (RULES.md):
usage 1 point per 5 ₽ a month; MTS-branded shop lines 1 point per 3 ₽;
Баллы Плюс 1 point per partner point; a lot expires 12 months after its
lot date; a transfer not accepted within 24 hours goes back at the next tick."""
import csv
import io
import json
from datetime import datetime
from decimal import Decimal

import matplotlib.image  # the charts extra, which the test extra includes
import pyarrow.parquet as pq  # the parquet extra, which the test extra includes
import pytest
from typer.testing import CliRunner

from accrual.cli import app
from engine.calendar import MOSCOW
from projections.at_tick import NoSuchTick
from projections.books import Period, by_month
from projections.cohorts import Cohorts

ANNA, BORIS = "79990012001", "79990012002"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MOSCOW)


def row(period: Period) -> dict:
    """A row as the JSON report prints it, without the rubles."""
    return period.as_dict()


def three_periods(p):
    """The plan of the worked example, up to the third tick."""
    p.enroll(ANNA, "2026-01-01 00:00")
    p.enroll(BORIS, "2026-01-01 00:00")
    # period 1: Anna's calls, 500 ₽ -> 100 points (lot 2026-01-10); Boris's 30 Баллы Плюс (lot 2026-01-12)
    p.usage(ANNA, "500.00", "2026-01-10 10:00")
    p.ballyplus(BORIS, 30, "2026-01-12 10:00")
    p.tick("2026-01-20")
    # period 2: Anna orders for 40 points, gives Boris 20 (accepted), offers him 10 more (never accepted)
    app = p.runtime.app
    app.debit(ANNA, 40, purpose="order", idempotency_key="o-1", reference={"item_id": "gb-5"}, at=at("2026-01-25T10:00"))
    offered = app.offer_transfer(ANNA, BORIS, 20, idempotency_key="t-1", at=at("2026-01-26T10:00"))
    app.accept_transfer(offered.transfer_id, BORIS, at=at("2026-01-26T12:00"))
    app.offer_transfer(ANNA, BORIS, 10, idempotency_key="t-2", at=at("2026-01-28T10:00"))
    p.tick("2026-02-01")  # 00:00 of 1 February: the 10 points' window closed on 29 January 10:00, they go back
    # period 3: a shop receipt and its return; a Баллы Плюс credit of 15 January arriving late; expiry
    p.purchase(ANNA, "R1", [("1", "mts_branded", "300.00")], "2026-03-01 10:00")  # 100 points
    p.shop_return(ANNA, "R1", [("1", "300.00")], "2026-03-05 10:00")  # the 100 points taken back
    p.ballyplus(ANNA, 5, "2026-01-15 10:00")  # late: lot 2026-01-15, expires 2027-01-15
    p.tick("2027-01-13")  # the lots of 10 and 12 January 2026 expire
    return p


EMPTY = {"issued": {"usage": 0, "shop": 0, "mgts": 0, "card": 0, "ballyplus": 0}, "clawed_back": 0, "expired": 0,
         "redeemed": {"order": 0, "pos": 0}, "restored": 0, "transferred_out": 0, "transferred_in": 0,
         "returned": 0, "adjusted": 0}


def expected(period_end, opening, closing, **moves):
    result = {"period_end": period_end, "ticks": 1, "opening": opening, **EMPTY, "closing": closing}
    for measure, value in moves.items():
        result[measure] = {**result[measure], **value} if isinstance(value, dict) else value
    return result


def test_the_worked_example_period_by_period(programme_on):
    p = three_periods(programme_on)
    assert [row(period) for period in p.books()] == [
        # 0 + 100 usage + 30 Баллы Плюс = 130
        expected("2026-01-20", 0, 130, issued={"usage": 100, "ballyplus": 30}),
        # 130 - 40 ordered - (20 + 10) sent + 20 received + 10 returned = 90
        # (Anna 100 - 40 - 20 = 40, Boris 30 + 20 = 50)
        expected("2026-02-01", 130, 90, redeemed={"order": 40}, transferred_out=30, transferred_in=20, returned=10),
        # 90 + 100 shop + 5 late Баллы Плюс - 100 clawed back - 50 expired = 45. The clawback takes
        # the lots that expire first (rule 7): Anna's 40 left of 10 January, then 60 of the shop lot;
        # so only Boris's 50 expire (30 of 12 January, 20 received from Anna's 10 January lot), and
        # Anna keeps 40 of the shop lot and the late 5.
        expected("2027-01-13", 90, 45, issued={"shop": 100, "ballyplus": 5}, clawed_back=100, expired=50),
    ]
    # the closing is the sum of all balances right after the tick, and the log says the same
    assert p.balances() == {ANNA: 45, BORIS: 0} == p.balances_at_tick("2027-01-13")
    assert p.balances_at_tick("2026-02-01") == {ANNA: 40, BORIS: 50}
    assert p.balances_at_tick("2026-01-20") == {ANNA: 100, BORIS: 30}


def test_a_late_event_is_booked_in_the_period_it_arrived_and_closed_periods_stay_as_they_were(programme):
    # given two closed periods
    programme.enroll(ANNA, "2026-01-01 00:00")
    programme.ballyplus(ANNA, 30, "2026-01-12 10:00")
    programme.tick("2026-01-20")
    programme.tick("2026-02-01")
    closed = [row(period) for period in programme.books()]
    # when a credit of 15 January (the first period's time) arrives now
    programme.ballyplus(ANNA, 7, "2026-01-15 10:00")
    # then the closed periods are as they were, and the 7 points are in the open period
    assert [row(period) for period in programme.books()] == closed
    assert programme.moved_since_last_close() == 7
    # and the next tick books them in its period: 30 + 7 = 37
    programme.tick("2026-02-02")
    assert [row(period) for period in programme.books()] == closed + [
        expected("2026-02-02", 30, 37, issued={"ballyplus": 7})]


def test_a_tick_of_a_day_already_closed_closes_nothing_and_what_it_does_goes_to_the_next_period(programme):
    programme.enroll(ANNA, "2026-01-01 00:00")
    programme.tick("2026-01-20")
    programme.ballyplus(ANNA, 4, "2026-01-19 10:00")
    programme.tick("2026-01-20")  # the same date again: no second close
    assert [p.period_end.isoformat() for p in programme.books()] == ["2026-01-20"]
    assert programme.moved_since_last_close() == 4


def test_the_books_by_month_gather_the_ticks_of_the_days_each_closed(programme):
    programme.enroll(ANNA, "2026-01-01 00:00")
    programme.ballyplus(ANNA, 10, "2026-01-05 10:00")
    programme.tick("2026-01-20")  # closes 19 January
    programme.ballyplus(ANNA, 20, "2026-01-25 10:00")
    programme.tick("2026-02-01")  # closes 31 January: still January
    programme.ballyplus(ANNA, 40, "2026-02-03 10:00")
    programme.tick("2026-02-05")  # closes 4 February
    months = [row(period) for period in by_month(programme.books())]
    # January: 0 + 10 + 20 = 30 over two ticks; February: 30 + 40 = 70
    assert months == [
        {**expected("2026-02-01", 0, 30, issued={"ballyplus": 30}), "ticks": 2},
        expected("2026-03-01", 30, 70, issued={"ballyplus": 40}),
    ]


def test_the_rubles_at_the_configured_value_of_a_point(programme):
    programme.enroll(ANNA, "2026-01-01 00:00")
    programme.ballyplus(ANNA, 3, "2026-01-05 10:00")
    programme.tick("2026-01-20")
    rub = programme.books()[0].as_dict(Decimal("0.35"))["rub"]
    # 3 points at 0.35 ₽ = 1.05 ₽
    assert (rub["closing"], rub["issued"]["ballyplus"], rub["opening"]) == ("1.05", "1.05", "0.00")


def test_no_tick_no_books_and_at_tick_of_an_unknown_date_says_so(programme):
    programme.enroll(ANNA, "2026-01-01 00:00")
    programme.ballyplus(ANNA, 3, "2026-01-05 10:00")
    assert programme.books() == []
    assert programme.moved_since_last_close() == 3
    with pytest.raises(NoSuchTick):
        programme.balances_at_tick("2026-01-20")


# -- the command line ------------------------------------------------------------------


def run(url: str, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), env={"ACCRUAL_DATABASE_URL": url, "ACCRUAL_POINT_VALUE_RUB": "0.50"},
                                catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.stdout


def test_the_report_as_json_csv_and_a_table_by_tick_and_by_month(programme, sqlite_url):

    three_periods(programme)
    rows = json.loads(run(sqlite_url, "report", "liability", "--json"))
    assert [r["closing"] for r in rows] == [130, 90, 45]
    # at 0.50 ₽ a point: 130 points = 65.00 ₽
    assert rows[0]["rub"]["closing"] == "65.00" and rows[0]["rub"]["issued"]["usage"] == "50.00"
    # --from and --to pick rows by their period_end; the opening still follows the earlier rows
    picked = json.loads(run(sqlite_url, "report", "liability", "--json", "--from", "2026-02-01", "--to", "2026-12-31"))
    assert [(r["period_end"], r["opening"], r["closing"]) for r in picked] == [("2026-02-01", 130, 90)]
    # by month: January 2026 (the ticks of 20 January and 1 February), then January 2027
    months = json.loads(run(sqlite_url, "report", "liability", "--json", "--by", "month"))
    assert [(r["period_end"], r["ticks"], r["opening"], r["closing"]) for r in months] == [
        ("2026-02-01", 2, 0, 90), ("2027-02-01", 1, 90, 45)]
    table = list(csv.DictReader(io.StringIO(run(sqlite_url, "report", "liability", "--csv"))))
    assert [(r["period_end"], r["issued_usage"], r["redeemed_order"], r["closing"], r["closing_rub"]) for r in table] == [
        ("2026-01-20", "100", "0", "130", "65.00"), ("2026-02-01", "0", "40", "90", "45.00"),
        ("2027-01-13", "0", "0", "45", "22.50")]
    text = run(sqlite_url, "report", "liability")
    assert "2027-01-13" in text and "45 points = 22.50 ₽ at 0.50 ₽ a point" in text
    run(sqlite_url, "report", "liability", "--by", "week", code=2)


def test_balances_and_a_balance_at_a_tick_from_the_log(programme, sqlite_url):

    three_periods(programme)
    assert json.loads(run(sqlite_url, "balances", "--json", "--at-tick", "2026-02-01")) == {ANNA: 40, BORIS: 50}
    anna = json.loads(run(sqlite_url, "balance", ANNA, "--json", "--at-tick", "2026-02-01"))
    # Anna right after 1 February: 40 points left of her 10 January lot (100 - 40 ordered - 20 given)
    assert (anna["balance"], anna["lots"]) == (40, [
        {"lot_id": 1, "lot_date": "2026-01-10", "expires_on": "2027-01-10", "remaining": 40}])
    assert anna["expiring"] == {"30_days": 0, "60_days": 0, "90_days": 0}
    # no tick of that date, no account by then: exit code 1 with a reason
    run(sqlite_url, "balances", "--json", "--at-tick", "2026-01-21", code=1)
    run(sqlite_url, "balance", "79990012999", "--at-tick", "2026-02-01", code=1)


# -- breakage ----------------------------------------------------------------------------


def test_the_cohorts_of_the_worked_example_and_the_breakage_of_a_closed_one(programme_on):
    p = three_periods(programme_on)

    def cohorts():
        p.runtime.projector.catch_up()
        return {r["cohort"]: r for r in Cohorts(p.runtime.db).report().rows()}

    got = cohorts()
    # January 2026: 100 + 30 + 5 (the late credit of 15 January) = 135 issued; 40 ordered; 20 moved to
    # Boris (the 10 returned: nothing in transfer); the clawback took Anna's 40 left of 10 January;
    # Boris's 50 expired: 135 - 40 - 40 - 50 = 5 outstanding (Anna's late 5)
    assert got["2026-01"] == {
        "cohort": "2026-01", "closed": False, "issued": 135, "redeemed": 40, "transferred": 20, "in_transfer": 0,
        "clawed_back": 40, "expired": 50, "adjusted": 0, "outstanding": 5, "breakage_rate": None, "expected_breakage": None}
    # March 2026: the receipt's 100, of which the clawback took the other 60: 40 outstanding
    assert (got["2026-03"]["issued"], got["2026-03"]["clawed_back"], got["2026-03"]["outstanding"]) == (100, 60, 40)
    # the outstanding points of all cohorts are all the balances (Anna 45)
    assert sum(r["outstanding"] for r in got.values()) == sum(p.balances().values()) == 45

    # when the tick of 1 February 2027 runs, the late 5 (expiring 15 January 2027) expire and every
    # lot dated in January 2026 has expired or been used: the cohort is closed
    p.tick("2027-02-01")
    got = cohorts()
    # its breakage: 55 expired / 135 issued = 0.4074
    assert (got["2026-01"]["closed"], got["2026-01"]["expired"], got["2026-01"]["breakage_rate"]) == (True, 55, "0.4074")
    # March's estimate: 0.4074 x 100 issued = 41 (rounded), less 0 expired, at most its 40 outstanding
    assert (got["2026-03"]["closed"], got["2026-03"]["expected_breakage"]) == (False, 40)


def test_the_breakage_report_on_the_command_line(programme, sqlite_url):

    three_periods(programme)
    report = json.loads(run(sqlite_url, "report", "breakage", "--json"))
    assert report["last_tick"] == "2027-01-13" and "pooled rate" in report["method"]
    assert report["estimate"] == {"rate": None, "learned_from": []}
    assert [c["cohort"] for c in report["cohorts"]] == ["2026-01", "2026-03"]
    rows = list(csv.DictReader(io.StringIO(run(sqlite_url, "report", "breakage", "--csv"))))
    assert [(r["cohort"], r["issued"], r["outstanding"], r["breakage_rate"]) for r in rows] == [
        ("2026-01", "135", "5", ""), ("2026-03", "100", "40", "")]
    assert "none yet" in run(sqlite_url, "report", "breakage")


# -- the auditor's export ------------------------------------------------------------------


def test_the_export_has_every_movement_of_the_chosen_periods_with_its_period_and_position(programme, sqlite_url,
                                                                                           tmp_path):

    three_periods(programme)
    target = tmp_path / "movements.csv"
    run(sqlite_url, "export", "history", "--csv", str(target))
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    # each period's movements add up to its closing less its opening: 130, -40, -45
    by_period: dict[str, int] = {}
    for r in rows:
        by_period[r["period_end"]] = by_period.get(r["period_end"], 0) + int(r["points"])
    assert by_period == {"2026-01-20": 130, "2026-02-01": -40, "2027-01-13": -45}
    assert [int(r["position"]) for r in rows] == sorted(int(r["position"]) for r in rows)
    # the late credit of 15 January is booked in the period it arrived in
    late = next(r for r in rows if r["kind"] == "accrued" and r["rule"] == "ballyplus" and r["points"] == "5")
    assert (late["msisdn"], late["period_end"], late["measure"]) == (ANNA, "2027-01-13", "issued")
    expired = [r for r in rows if r["kind"] == "expired"]
    assert sorted((r["msisdn"], r["points"]) for r in expired) == [(BORIS, "-50")]

    # --from and --to choose periods by their end
    run(sqlite_url, "export", "history", "--from", "2026-01-21", "--to", "2026-02-01", "--csv", str(target))
    second = list(csv.DictReader(target.open(encoding="utf-8")))
    assert second == [r for r in rows if r["period_end"] == "2026-02-01"]
    assert {r["measure"] for r in second} == {"redeemed", "transferred_out", "transferred_in", "returned"}


def test_the_export_as_parquet_has_the_same_rows(programme, sqlite_url, tmp_path):

    three_periods(programme)
    run(sqlite_url, "export", "history", "--csv", str(tmp_path / "m.csv"))
    run(sqlite_url, "export", "history", "--parquet", str(tmp_path / "m.parquet"))
    from_csv = list(csv.DictReader((tmp_path / "m.csv").open(encoding="utf-8")))
    from_parquet = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert len(from_parquet) == len(from_csv) > 0
    for a, b in zip(from_csv, from_parquet, strict=True):
        assert {k: ("" if v is None else str(v)) for k, v in b.items()} == a


def test_the_charts_are_drawn_as_png_and_svg_and_other_formats_are_refused(programme, sqlite_url, tmp_path):
    three_periods(programme)
    run(sqlite_url, "report", "liability", "--chart", str(tmp_path / "liability.png"))
    run(sqlite_url, "report", "breakage", "--json", "--chart", str(tmp_path / "breakage.svg"))
    height, width, _ = matplotlib.image.imread(tmp_path / "liability.png").shape
    assert width > height > 300
    svg = (tmp_path / "breakage.svg").read_text(encoding="utf-8")
    # the cohorts of the worked example label their bars
    assert svg.lstrip().startswith("<?xml") and "2026-01" in svg and "2026-03" in svg
    run(sqlite_url, "report", "breakage", "--chart", str(tmp_path / "breakage.pdf"), code=2)
    assert not (tmp_path / "breakage.pdf").exists()
