"""Issue 14: the contract's sample workload through the worker and the
notifier, both real processes on the real broker (PostgreSQL for the store
and the outbox), with three member-to-member transfers made beside them.

The notifier runs on its TICKS clock, and the test moves it through every
day of the sample at 10:00 Moscow (the daily run), after each step of the
plan: the step's file through the worker, the engine's tick of the step's
day, the publisher's records handled by the notifier, then the days from
the last step to this one. What it must send is worked out here, apart
from the notifier, from the engine's own numbers at each step:

- a credit summary of day X-1 on each day X, for every member with credits
  dated X-1 on the topic so far (the sum by rule; the balance as the
  engine had it at that step);
- a reminder for each expiry date of the engine's lots read model that is
  1 to 7 days ahead (`expiry_7`) or 8 to 30 days ahead (`expiry_30`), once
  per date and stage;
- the transfers' messages, each to the member concerned.

At the end the outbox holds exactly those, each once, whole texts equal;
and the lots the notifier holds equal the engine's lots read model."""
from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from accrual.kafka import Names, create_topics
from accrual.runtime import Runtime
from accrual.streams import DEFAULT_FILE, load_streams
from engine.calendar import MOSCOW, moscow_date
from notifier import texts
from notifier.events import PointsEvent
from tests.conftest import SAMPLE
from tests.kafka_support import WorkerProcess, names_for, produce, read_lines, read_topic, wait_for_lag_zero, worker_env
from tests.notifier_kafka_support import (
    NotifierProcess,
    lots_by_member,
    member_states,
    outbox,
    tick,
    wait_until_handled,
)
from tests.test_outbound_lots import read_model_lots
from tests.test_worker import cli, runtime_for, wait_for_publisher

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.xdist_group("kafka")]

TRANSFERS_ON = date(2026, 3, 1)  # the step after whose daily runs the members send each other points
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def morning(day: date, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=MOSCOW)


class Expected:
    """What the notifier must send, by key, worked out from the engine."""

    def __init__(self) -> None:
        self.messages: dict[str, tuple[str, str]] = {}  # key -> (msisdn, text)
        self.reminded: set[tuple[str, date, int]] = set()

    def add(self, msisdn: str, kind: str, about: date | str, text: str) -> None:
        key = f"{msisdn}:{kind}:{about.isoformat() if isinstance(about, date) else about}"
        assert key not in self.messages, f"the oracle decided {key} twice"
        self.messages[key] = (msisdn, text)

    def daily_runs(self, days: list[date], lots: dict, balances: dict[str, int]) -> None:
        """Reminders of each day's run, from the engine's lots read model of
        the step (credit summaries come from the topic, at the end)."""
        by_expiry: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
        for (msisdn, _), (_, expires_on, left) in lots.items():
            by_expiry[msisdn][date.fromisoformat(expires_on)] += left
        for day in days:
            for msisdn, dates in by_expiry.items():
                for expires_on, points in sorted(dates.items()):
                    days_left = (expires_on - day).days
                    stage = 7 if 0 < days_left <= 7 else 30 if 7 < days_left <= 30 else None
                    if stage is None or (msisdn, expires_on, stage) in self.reminded:
                        continue
                    self.reminded.add((msisdn, expires_on, stage))
                    self.add(msisdn, f"expiry_{stage}", expires_on, texts.expiry(expires_on, points, days_left))


def test_the_sample_through_the_worker_and_the_notifier_sends_each_expected_message_once(
    postgres_url, kafka_bootstrap, kafka_prefix, tmp_path
):
    names = names_for(kafka_prefix)
    worker = WorkerProcess(worker_env(postgres_url, kafka_bootstrap, kafka_prefix), tmp_path / "worker.log").start()
    notifier = NotifierProcess(postgres_url, kafka_bootstrap, kafka_prefix, tmp_path / "notifier.log").start()
    plan = json.loads((SAMPLE / "plan.json").read_text())
    expected = Expected()
    steps: list[tuple[list[date], dict[str, int], dict[str, int]]] = []  # (days, versions, balances) per step
    last_day: date | None = None
    transfers: list[tuple[str, str, str, int]] = []
    try:
        for command, argument in plan:
            if command == "ingest":
                produce(kafka_bootstrap, kafka_prefix, read_lines(SAMPLE / argument))
                wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
                continue
            day = date.fromisoformat(argument)
            with runtime_for(postgres_url) as runtime:
                runtime.tick(day)
                if last_day == TRANSFERS_ON:
                    # the previous step's unanswered transfer was returned by this tick, at 00:00 of `day`
                    (sender, recipient, transfer_id, points) = transfers[-1]
                    expected.add(sender, "transfer_returned", transfer_id,
                                 texts.transfer_returned(points, recipient))
            _notifier_has_the_log(postgres_url, kafka_bootstrap, names, notifier)
            days = [day - timedelta(days=n) for n in range((day - last_day).days if last_day else 1)][::-1]
            with runtime_for(postgres_url) as runtime:
                versions, balances = _versions_and_balances(runtime)
                expected.daily_runs(days, read_model_lots(runtime), balances)
            steps.append((days, versions, balances))
            for each in days:
                tick(kafka_bootstrap, names, morning(each))
            wait_until_handled(kafka_bootstrap, names, [names.notifier_ticks], notifiers=[notifier])
            last_day = day
            if day == TRANSFERS_ON:
                transfers = _members_send_points(postgres_url, day, expected)
                _notifier_has_the_log(postgres_url, kafka_bootstrap, names, notifier)

        records = [PointsEvent.from_record(json.loads(r.value)) for r in read_topic(kafka_bootstrap, names.points_events)]
        _credit_summaries(records, steps, expected)
        sent = outbox(postgres_url)
        _keep_for_people(sent)

        # then each expected message is in the outbox once, and nothing else
        assert len(sent) == len({s.key for s in sent}), "a key twice in the outbox"
        got = {s.key: (s.msisdn, s.text) for s in sent}
        assert sorted(set(expected.messages) - set(got)) == [], "missing"
        assert sorted(set(got) - set(expected.messages)) == [], "sent but not expected"
        for key, message in expected.messages.items():
            assert got[key] == message, key
        kinds = {key.split(":")[1] for key in got}
        assert kinds == {"credits", "expiry_30", "expiry_7", "transfer_offered", "transfer_accepted",
                         "transfer_declined", "transfer_returned"}
        # and the notifier holds each member's lots as the engine's read model has them
        with runtime_for(postgres_url) as runtime:
            engine_lots: dict[str, list] = defaultdict(list)
            for (msisdn, _), (lot_date, expires_on, left) in read_model_lots(runtime).items():
                engine_lots[msisdn].append((date.fromisoformat(lot_date), date.fromisoformat(expires_on), left))
        assert lots_by_member(member_states(kafka_bootstrap, names)) == {m: sorted(v) for m, v in engine_lots.items()}
        # and `accrual status` says the notifier has handled everything (the commit markers not counted)
        status = json.loads(cli(postgres_url, "status", "--json", KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
                                ACCRUAL_TOPIC_PREFIX=kafka_prefix))["notifier"]
        assert status["group"] == names.notifier_group and len(status["partitions"]) == 12
        assert status["lag_total"] == 0 and sum(row["end"] for row in status["partitions"]) >= len(records)
        notifier.check_alive()
        worker.check_alive()

        # when a second notifier group replays both topics from the beginning, with empty tables
        replay_names = _replaying(kafka_bootstrap, kafka_prefix, tmp_path)
        replay = NotifierProcess(postgres_url, kafka_bootstrap, kafka_prefix, tmp_path / "replay.log",
                                 ACCRUAL_STREAMS_FILE=str(tmp_path / "streams.yaml")).start()
        tick(kafka_bootstrap, replay_names, morning(last_day))
        wait_until_handled(kafka_bootstrap, replay_names, [replay_names.points_events, replay_names.notifier_ticks],
                           notifiers=[replay])
        # then it sends nothing new and nothing twice (what it decides again has the key it had the first time),
        # and it holds the same lots, folded from the topic alone
        assert outbox(postgres_url) == sent
        assert lots_by_member(member_states(kafka_bootstrap, replay_names)) == lots_by_member(
            member_states(kafka_bootstrap, names))
        replay.kill()
    finally:
        notifier.kill()
        worker.kill()


def _replaying(bootstrap: str, prefix: str, tmp_path: Path) -> Names:
    """A streams file whose notifier is another group with its own ticks
    topic: a notifier started on it reads both topics from the beginning."""
    text = DEFAULT_FILE.read_text("utf-8")
    text = text.replace("consumer_group: accrual-notifier\n", "consumer_group: accrual-notifier-replay\n")
    text = text.replace("topic: accrual-notifier.ticks\n", "topic: accrual-notifier.ticks-replay\n")
    (tmp_path / "streams.yaml").write_text(text, "utf-8")
    names = Names(load_streams(tmp_path / "streams.yaml"), prefix)
    assert names.notifier_group.endswith("accrual-notifier-replay")
    asyncio.run(create_topics(bootstrap, names))
    return names


def _notifier_has_the_log(url: str, bootstrap: str, names, notifier: NotifierProcess) -> None:
    """The publisher has published the whole log, and the notifier handled it."""
    wait_for_publisher(url)
    wait_until_handled(bootstrap, names, [names.points_events], notifiers=[notifier])


def _versions_and_balances(runtime: Runtime) -> tuple[dict[str, int], dict[str, int]]:
    runtime.projector.catch_up()
    versions = {m: int(v) for m, v in runtime.db.query("SELECT msisdn, version FROM rm_members")}
    return versions, {m: int(b) for m, b in runtime.reads.balances().items()}


def _members_send_points(url: str, day: date, expected: Expected) -> list[tuple[str, str, str, int]]:
    """The three richest members, after the day's run: the first sends the
    second 100 (accepted) and the third 50 (declined); the second sends the
    third 30, never answered (the next tick returns it)."""
    with runtime_for(url) as runtime:
        runtime.projector.catch_up()
        a, b, c = sorted(runtime.reads.balances().items(), key=lambda item: (-item[1], item[0]))[:3]
        app = runtime.app
        sent = []
        for sender, recipient, points, offered, answer in (
            (a[0], b[0], 100, morning(day, 10, 30), "accept"),
            (a[0], c[0], 50, morning(day, 10, 40), "decline"),
            (b[0], c[0], 30, morning(day, 10, 50), None),
        ):
            transfer = app.offer_transfer(sender, recipient, points, idempotency_key=f"sample-{offered:%H%M}",
                                          at=offered)
            deadline = offered + timedelta(hours=24)
            expected.add(recipient, "transfer_offered", transfer.transfer_id,
                         texts.transfer_offered(points, sender, deadline))
            if answer == "accept":
                app.accept_transfer(transfer.transfer_id, recipient, at=offered + timedelta(minutes=5))
                expected.add(sender, "transfer_accepted", transfer.transfer_id, texts.transfer_accepted(points, recipient))
            elif answer == "decline":
                app.decline_transfer(transfer.transfer_id, recipient, at=offered + timedelta(minutes=5))
                expected.add(sender, "transfer_declined", transfer.transfer_id, texts.transfer_declined(points, recipient))
            sent.append((sender, recipient, transfer.transfer_id, points))
        return sent


def _credit_summaries(records: list[PointsEvent], steps, expected: Expected) -> None:
    """The summary of day X-1 at the run of day X: the credits dated X-1 of
    the records published before that step's runs; the balance the engine
    had then."""
    for days, versions, balances in steps:
        for day in days:
            yesterday = day - timedelta(days=1)
            by_member: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            for r in records:
                if r.is_credit and r.points > 0 and r.account_version <= versions.get(r.msisdn, 0) \
                        and moscow_date(r.occurred_at) == yesterday:
                    by_member[r.msisdn][r.rule or "other"] += r.points
            for msisdn, by_rule in by_member.items():
                expected.add(msisdn, "credits", yesterday, texts.credits(yesterday, dict(by_rule), balances[msisdn]))


def _keep_for_people(sent) -> None:
    """The outbox as a member would read it, for a person to look at
    (test-artifacts/, kept by CI)."""
    ARTIFACTS.mkdir(exist_ok=True)
    lines = [f"{s.sent_at}  +{s.msisdn}  {s.text}" for s in sent]
    (ARTIFACTS / "notifier-sample-outbox.txt").write_text("\n".join(lines) + "\n", "utf-8")
