"""The back-office dashboard (issue 13): the programme at a glance, read from
the read models, checked against the books, the history and the rejections
they were made from; the template fragment; the worker's lag and throughput
against the real broker.

The store is the contract's sample (tests/data/sample: ticks on the 1st,
15th and 25th of each month, January 2025 to 1 July 2026, 38 members
holding 726 499 points at the end) with a few debits of our own."""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader

from accrual.runtime import Runtime
from accrual.settings import parse_database_url
from engine.calendar import MOSCOW
from projections.books import Books, by_month, change
from projections.cohorts import Cohorts
from projections.db import Database
from projections.tables import Names
from tests.conftest import SAMPLE, settings_for
from web.dashboard import ThroughputSampler, at_a_glance, kafka_settings, worker_lag, worker_status
from web.dashboard_worker import Throughput, WorkerStatus
from web.formatting import FILTERS

ROOT = Path(__file__).resolve().parents[2]
RICH = "79770526847"  # the sample's member with the most points (50 783)
TODAY = date(2026, 7, 1)  # the day of the sample's last tick
AFTER = "2026-06-15"  # the tick after which our debits are made


def received_at(previous_tick: date) -> datetime:
    """When a file of the plan was received: 21:30 UTC of the day of the
    tick before it, which is 00:30 in Moscow of the next day."""
    return datetime(previous_tick.year, previous_tick.month, previous_tick.day, 21, 30, tzinfo=timezone.utc)


def sample_store(url: str) -> list[date]:
    """Runs the sample plan; after the tick of 15 June 2026 RICH orders for
    100 points and pays 30 at a till (booked in the period the tick of 25
    June closes: the day 24 June); after the last tick 7 more at a till
    (the open period: today). Returns the dates the files were received on
    in Moscow."""
    plan = json.loads((SAMPLE / "plan.json").read_text())
    previous, days = date(2024, 12, 31), []
    with Runtime(settings_for(url)) as runtime:
        app = runtime.app
        for command, argument in plan:
            if command == "ingest":
                runtime.ingest(SAMPLE / argument, received_at(previous))
                days.append(previous + timedelta(days=1))
                continue
            runtime.tick(date.fromisoformat(argument))
            previous = date.fromisoformat(argument)
            if argument == AFTER:
                at = datetime(2026, 6, 16, 12, tzinfo=MOSCOW)
                app.debit(RICH, 100, purpose="order", idempotency_key="o-1", reference={"item_id": "gb-5"}, at=at)
                app.debit(RICH, 30, purpose="pos", idempotency_key="p-1", reference={"store_id": "S1"}, at=at)
        app.debit(RICH, 7, purpose="pos", idempotency_key="p-2", reference={"store_id": "S1"},
                  at=datetime(2026, 7, 1, 10, tzinfo=MOSCOW))
        runtime.projector.catch_up()
    return days


@pytest.fixture
def store(database_url):
    """The sample store and a read-only connection to its read models."""
    days = sample_store(database_url)
    db = Database(parse_database_url(database_url), read_only=True)
    yield db, days
    db.close()


def test_the_figures_add_up_to_the_books_and_the_history(store):
    db, _ = store
    # given the sample store, when the dashboard is read as of 1 July 2026 for 90 days
    d = at_a_glance(db, Names(), TODAY, days=90)

    # then the members: 38 enrolled (expected.json), 2 numbers whose events are held
    assert (d.members.enrolled, d.members.awaiting) == (38, 2)
    # the points outstanding: 726 499 - 100 ordered - 30 - 7 at a till = 726 362, the sum of the balances
    assert d.outstanding == 726_362
    assert d.outstanding == sum(points for (points,) in db.query(
        "SELECT balance FROM rm_members WHERE enrolled_at IS NOT NULL"))

    # the days: 90 days up to 1 July are 3 April .. 1 July; the ticks as-of 15 April .. 1 July closed
    # the days before them, and today is the open period
    assert d.since == date(2026, 4, 3)
    closed = ["2026-04-14", "2026-04-24", "2026-04-30", "2026-05-14", "2026-05-24", "2026-05-31",
              "2026-06-14", "2026-06-24", "2026-06-30"]
    assert [r.last_day.isoformat() for r in d.issued.rows] == [*closed, "2026-07-01"]
    assert [r.open for r in d.issued.rows] == [False] * 9 + [True]
    # a row spans the days since the tick before: the tick as-of 1 April, then 15 April, ...
    assert [r.days for r in d.issued.rows[:3]] == [14, 10, 6]

    # the books' periods of those days, by rule, are the issued table's rows
    periods = {p.period_end - timedelta(days=1): p for p in Books(db).periods()}
    for row in d.issued.rows[:-1]:
        assert row.values == periods[row.last_day].movements["issued"]
    assert d.issued.keys == ("usage", "shop", "mgts", "card", "ballyplus")

    # redeemed: 100 ordered + 30 at a till on 24 June (booked by the tick of 25 June), 7 at a till today
    assert [(r.last_day.isoformat(), dict(r.values)) for r in d.redeemed.rows if r.total] == [
        ("2026-06-24", {"order": 100, "pos": 30}), ("2026-07-01", {"order": 0, "pos": 7})]

    # over the whole life of the store the tables hold every movement of the history
    everything = at_a_glance(db, Names(), TODAY, days=10_000)
    accrued = dict(db.query("SELECT rule, SUM(points) FROM rm_history WHERE kind = 'accrued' GROUP BY rule"))
    assert {k: everything.issued.total(k) for k in everything.issued.keys} == {
        k: int(accrued.get(k, 0)) for k in everything.issued.keys}
    redeemed = dict(db.query("SELECT reason, -SUM(points) FROM rm_history WHERE kind = 'redeemed' GROUP BY reason"))
    assert {k: everything.redeemed.total(k) for k in everything.redeemed.keys} == {"order": 100, "pos": 37} == {
        k: int(v) for k, v in redeemed.items()}

    # the rollforward by month and the cohorts are the books' own
    assert list(d.liability) == by_month(Books(db).periods())
    # June closed at the tick of 1 July; what came after it (the last file, the 7 points) is the open
    # period, and the two make the points outstanding
    assert d.liability[-1].period_end == date(2026, 7, 1)
    assert d.liability[-1].closing + change(Books(db).open_period()) == d.outstanding
    assert d.breakage == Cohorts(db).report()
    as_json = json.loads(json.dumps(d.to_json()))
    assert as_json["liability_by_month"][-1]["closing"] == d.liability[-1].closing
    assert as_json["outstanding"] == 726_362


def test_rejections_by_reason_per_moscow_day_are_the_rejections_table_grouped(store):
    db, file_days = store
    d = at_a_glance(db, Names(), TODAY, days=10_000)
    # every rejection counted once, by its reason
    grouped = dict(db.query("SELECT reason, COUNT(*) FROM rm_rejections GROUP BY reason"))
    assert {k: d.rejections.total(k) for k in d.rejections.keys} == {k: int(v) for k, v in grouped.items()}
    # the commonest reason first
    totals = [d.rejections.total(k) for k in d.rejections.keys]
    assert totals == sorted(totals, reverse=True)
    # a file received at 21:30 UTC is on the next day in Moscow (00:30): every row's day is one a file
    # was received on in Moscow, never the UTC date
    assert d.rejections.rows
    assert {r.last_day for r in d.rejections.rows} <= set(file_days)
    # within 90 days: the files received on 2, 16 and 26 April ... 2 June ... and 2 July is not yet
    recent = at_a_glance(db, Names(), TODAY, days=90).rejections
    assert all(date(2026, 4, 3) <= r.last_day <= TODAY for r in recent.rows)
    in_window = db.query("SELECT COUNT(*) FROM rm_rejections WHERE received_at >= ? AND received_at < ?",
                         ("2026-04-02T21:00", "2026-07-01T21:00"))[0][0]  # 3 April .. 1 July in Moscow
    assert recent.total() == int(in_window) > 0


def render(d) -> str:
    env = Environment(loader=FileSystemLoader(str(ROOT / "web" / "templates")), autoescape=True)
    env.filters.update(FILTERS)
    return env.from_string('{% from "ops/_dashboard.html" import dashboard, dashboard_head %}'
                           "{{ dashboard_head() }}{{ dashboard(d) }}").render(d=d)


SECTIONS = ("Участники", "Баллы в обращении", "Начислено по правилам за 90 дней", "Списано по дням",
            "Обязательства по месяцам", "Сгорание по когортам", "Отказы по причинам",
            "Kafka: отставание по разделам, скорость")


def test_the_fragment_shows_every_section_with_its_figures(store):
    db, _ = store
    d = at_a_glance(db, Names(), TODAY, days=90)
    html = render(d)
    for title in SECTIONS:
        assert f">{title}</h2>" in html
    assert "726\u00a0362\u00a0балла" in html  # the points outstanding, as the member pages write them
    assert html.count('data-chart="stacked"') == 4  # issued, redeemed, cohorts, rejections
    assert html.count('data-chart="line"') == 1  # the rollforward
    assert '<script src="/static/ops-charts.js" defer></script>' in html and "style=" not in html
    # 24 June's row of the redeemed table: 100 ordered, 30 at a till
    assert re.search(r'<th scope="row">24 июня 2026</th>\s*<td class="n">100</td><td class="n">30</td>', html)
    assert "Всего: 137\u00a0баллов." in html  # 100 + 30 + 7
    # no worker status asked: no data; the embedded engine says why
    assert "нет данных</p>" in html
    embedded = render(d.with_worker(WorkerStatus(kafka=False, lag=None, throughput=None)))
    assert "нет данных: движок работает без Kafka" in embedded
    with_rate = render(d.with_worker(WorkerStatus(kafka=True, lag=(), throughput=Throughput(1500, 60_000))))
    assert "25\u00a0сообщ./с" in with_rate  # 1 500 messages in 60 s


# -- the worker ---------------------------------------------------------------------------


def test_the_throughput_is_the_growth_of_the_committed_offsets_between_samples():
    sampler = ThroughputSampler(window_s=600)
    assert sampler.sample(1_000, now_s=100.0) is None  # the first look: nothing to compare with
    assert sampler.sample(1_000, now_s=100.4) is None  # a double refresh is not a sample
    # 60 s later 3 000 more: 50 a second
    rate = sampler.sample(4_000, now_s=160.0)
    assert (rate.messages, rate.elapsed_ms, str(rate.per_second)) == (3_000, 60_000, "50.0")
    # 10 minutes on, the first sample has left the window; the look before stays: from 160 s to
    # 770 s, 4 000 -> 10 100: 6 100 in 610 s, 10 a second
    rate = sampler.sample(10_100, now_s=770.0)
    assert (rate.messages, rate.elapsed_ms, str(rate.per_second)) == (6_100, 610_000, "10.0")
    # a minute later: from 160 s still (it is the newest sample older than the window): 11 300 - 4 000
    # = 7 300 in 670 s, 10.9 a second
    rate = sampler.sample(11_300, now_s=830.0)
    assert (rate.messages, rate.elapsed_ms, str(rate.per_second)) == (7_300, 670_000, "10.9")
    # the offsets went back (the group was reset): start again
    assert sampler.sample(5, now_s=800.0) is None


def test_without_kafka_there_is_no_lag_to_show():
    assert kafka_settings({}) is None
    assert kafka_settings({"KAFKA_BOOTSTRAP_SERVERS": "  "}) is None
    assert asyncio.run(worker_lag(None)) is None
    status = asyncio.run(worker_status(None, ThroughputSampler(), 0.0))
    assert (status.kafka, status.lag, status.throughput) == (False, None, None)


def test_a_broker_that_does_not_answer_shows_no_data_within_the_timeout():
    # a port that accepts connections and never answers, as a hung broker
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings = kafka_settings({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{silent.getsockname()[1]}"})
        started = time.monotonic()
        assert asyncio.run(worker_lag(settings, timeout_s=1.0)) is None
        assert time.monotonic() - started < 5
    # and a port where nothing listens
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = kafka_settings({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    started = time.monotonic()
    assert asyncio.run(worker_lag(settings, timeout_s=1.0)) is None
    assert time.monotonic() - started < 5


@pytest.mark.kafka
@pytest.mark.postgres
def test_the_lag_and_throughput_of_a_real_worker_group(postgres_url, kafka_bootstrap, kafka_prefix, tmp_path):
    from tests.kafka_support import WorkerProcess, names_for, produce, read_lines, wait_for_lag_zero, worker_env

    names = names_for(kafka_prefix)
    env = worker_env(postgres_url, kafka_bootstrap, kafka_prefix)
    settings = kafka_settings(env)
    sampler = ThroughputSampler()
    files = sorted(SAMPLE.glob("*-ingest.jsonl"))
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        first = produce(kafka_bootstrap, kafka_prefix, read_lines(*files[:2]))
        wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
        status = asyncio.run(worker_status(settings, sampler, time.monotonic(), names, timeout_s=10))
        # every partition of every inbound topic, all done; the group committed every message sent
        assert {(p.topic, p.partition) for p in status.lag} == {
            (names.topic(t.topic), n) for t in names.streams.inbound for n in range(t.partitions)}
        assert status.total_lag == 0
        assert sum(p.committed for p in status.lag) == sum(p.end for p in status.lag) == len(first)
        assert status.throughput is None  # the first look

        second = produce(kafka_bootstrap, kafka_prefix, read_lines(*files[2:4]))
        wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
        time.sleep(1.1)  # samples are at least a second apart
        status = asyncio.run(worker_status(settings, sampler, time.monotonic(), names, timeout_s=10))
        assert status.throughput.messages == len(second) > 0
        assert status.throughput.per_second > 0
    finally:
        worker.terminate()


def test_ops_charts_parses_and_formats_numbers_in_russian():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: web/static/ops-charts.js was not parsed (install nodejs to check it)")
    script = ROOT / "web" / "static" / "ops-charts.js"
    # a document with no tables: the library loads, draws nothing and exposes its number helpers
    probe = (
        "global.window = {}; global.document = {readyState: 'complete', querySelectorAll: () => []};"
        f"require({json.dumps(str(script))});"
        "const c = window.opsCharts;"
        "console.log(JSON.stringify([c.formatNumber(18503), c.formatNumber(-1234567), c.formatNumber(12.5),"
        "c.parseNumber('18\\u00a0503'), c.parseNumber('\\u22121\\u202f234,5'), c.parseNumber('')]));"
    )
    done = subprocess.run([node, "-e", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["18\u202f503", "\u22121\u202f234\u202f567", "12,5", 18503, -1234.5, 0]
