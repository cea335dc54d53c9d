"""Issue 14 — each notification once, when the notifier crashes: a
notifier killed with SIGKILL mid-stream and started again, and two
instances with one killed. No message missing, none twice.

Against the real broker and the real outbox: `accrual notifier` runs as a
process (tests/notifier_kafka_support.py) on its TICKS clock, so the test
decides when the day moves on, and SIGKILL leaves it no chance to commit
what it handled. The crash points that matter (docs/notifications.md,
"Each notification once"): between a send and the changelog write of the
member's new state (the record is handled again: the state lock or the
outbox's UNIQUE key drops the repeat), and in the daily run, which sends
and writes member after member while handling one tick.

The expected messages are computed here from the workload as generated
(which transfer, which credit, which lot expiring when), not by the
notifier's core, so a fault of the core's bookkeeping shows as a key
missing or extra."""
from __future__ import annotations

import json
import random
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import pytest
from aiokafka import TopicPartition

from accrual.kafka import Names
from notifier.events import LotChange, PointsEvent
from tests.kafka_support import clients, read_topic, retrying, setup_topics
from tests.notifier_kafka_support import (
    NotifierProcess,
    lots_by_member,
    member_states,
    outbox,
    produce_records,
    tick,
    wait_until_handled,
)
from tests.notifier_support import Member, at
from tests.test_notifier_service import record

pytestmark = [pytest.mark.kafka, pytest.mark.xdist_group("kafka")]

D = date(2026, 12, 3)  # the day of the run; the credits summed are of D-1
YESTERDAY = D - timedelta(days=1)
MEMBERS = 300
RULES = ("usage", "shop", "card", "mgts")
WAIT_S = 90  # the bound of every wait: a CI machine is slow, a hung notifier is not


def msisdn(n: int) -> str:
    return f"7916100{n:04d}"


class Sender(Member):
    """A member who also sends a transfer: the points leave a lot when
    offered, and come back to it when the recipient declines."""

    def sent_out(self, transfer_id: str, lot: LotChange, points: int, recipient: str, when: str) -> PointsEvent:
        drawn = LotChange(lot.lot_id, lot.lot_date, lot.expires_on, -points)
        return self._record("PointsTransferred", -points, when, (drawn,), reason="out",
                            source_event_id=transfer_id, counterpart=recipient)

    def given_back(self, transfer_id: str, lot: LotChange, points: int, recipient: str, when: str) -> PointsEvent:
        back = LotChange(lot.lot_id, lot.lot_date, lot.expires_on, points)
        return self._record("TransferReturned", points, when, (back,), reason="declined",
                            source_event_id=transfer_id, counterpart=recipient)


@dataclass
class Workload:
    """The records of every member, and what they should bring about: the
    keys of the notifications of D (transfers at 09:30, the daily run at
    10:00) and the lots each member holds at the end."""

    members: list[Sender] = field(default_factory=list)
    transfer_keys: set[str] = field(default_factory=set)
    daily_keys: set[str] = field(default_factory=set)
    lots: dict[str, list[tuple[date, date, int]]] = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        return self.transfer_keys | self.daily_keys

    def records(self) -> list[tuple[bytes, bytes]]:
        """Every record, members interleaved (as the publisher writes many
        accounts at once), each member's in account order."""
        queues = [list(m.records) for m in self.members]
        out = []
        while any(queues):
            for queue in queues:
                if queue:
                    out.append(record(queue.pop(0)))
        return out


@dataclass
class Ledger:
    """One member's records, and the lots they leave (lot id -> [lot date,
    expiry, points]), kept here rather than by the notifier's fold."""

    member: Sender
    held: dict[int, list] = field(default_factory=dict)

    def credit(self, points: int, rule: str, when: str, expires_on: str = "2027-12-01") -> LotChange:
        (lot,) = self.member.credit(points, rule, when, expires_on).lots
        self.held[lot.lot_id] = [lot.lot_date, lot.expires_on, lot.points]
        return lot

    def lots(self) -> list[tuple[date, date, int]]:
        return sorted((d, e, p) for d, e, p in self.held.values() if p > 0)


def member_zero(book: Ledger, work: Workload) -> None:
    """One member written out by hand, whose texts are asserted whole."""
    m = book.member
    book.credit(120, "usage", "2026-06-08 12:00", "2026-12-08")
    lot = book.credit(300, "usage", "2026-12-02 11:00")
    book.credit(50, "shop", "2026-12-02 15:00")
    m.sent_out("tr-0-out", lot, 100, msisdn(1), "2026-12-02 20:00")
    book.held[lot.lot_id][2] -= 100
    m.offered("tr-0-in", 500, msisdn(2), "2026-12-03 09:00", "2026-12-04 09:00")
    m.accepted("tr-0-out", 100, msisdn(1), "2026-12-03 09:10")
    work.transfer_keys |= {f"{m.msisdn}:transfer_offered:tr-0-in", f"{m.msisdn}:transfer_accepted:tr-0-out"}


def generated_member(n: int, rng: random.Random, book: Ledger, work: Workload) -> None:
    m = book.member
    # lots earned months ago that burn soon: within 7 days of D for some, within 30 for others
    if n % 3 == 0:
        book.credit(rng.randint(10, 900), "usage", "2026-06-01 12:00", str(D + timedelta(days=rng.randint(1, 7))))
    if n % 3 == 1 or n % 5 == 0:
        book.credit(rng.randint(10, 900), "card", "2026-06-02 12:00", str(D + timedelta(days=rng.randint(8, 30))))
    # credits of D-1 for nine members in ten, one to three, by rule
    first = None
    if n % 10 != 9:
        for k in range(rng.randint(1, 3)):
            lot = book.credit(rng.randint(1, 500), rng.choice(RULES), f"2026-12-02 {8 + 4 * k:02d}:{n % 60:02d}")
            first = first or lot
    # a transfer sent by one member in two (from a lot of D-1): accepted, or declined, on the morning of D
    if first is not None and n % 2 == 0:
        transfer, recipient, points = f"tr-{n}-out", msisdn((n + 7) % MEMBERS), rng.randint(1, first.points)
        m.sent_out(transfer, first, points, recipient, "2026-12-02 21:00")
        if n % 4 == 0:
            m.accepted(transfer, points, recipient, "2026-12-03 08:30")
            book.held[first.lot_id][2] -= points
            work.transfer_keys.add(f"{m.msisdn}:transfer_accepted:{transfer}")
        else:
            m.given_back(transfer, first, points, recipient, "2026-12-03 08:40")
            work.transfer_keys.add(f"{m.msisdn}:transfer_declined:{transfer}")
    # every member is offered one transfer, open until tomorrow morning
    m.offered(f"tr-{n}-in", rng.randint(1, 2000), msisdn((n + 11) % MEMBERS), f"2026-12-03 08:{n % 60:02d}",
              "2026-12-04 08:00")
    work.transfer_keys.add(f"{m.msisdn}:transfer_offered:tr-{n}-in")


def daily_run_keys(book: Ledger) -> set[str]:
    """The daily run of D: a summary for whoever earned on D-1; a reminder
    per expiry date 1..7 (expiry_7) or 8..30 (expiry_30) days ahead."""
    m = book.member.msisdn
    keys = {f"{m}:credits:{YESTERDAY}"} if any(d == YESTERDAY for d, _, _ in book.held.values()) else set()
    for expires_on in {e for _, e, _ in book.lots()}:
        days_left = (expires_on - D).days
        if 1 <= days_left <= 7:
            keys.add(f"{m}:expiry_7:{expires_on}")
        elif 8 <= days_left <= 30:
            keys.add(f"{m}:expiry_30:{expires_on}")
    return keys


def the_workload(seed: int = 14) -> Workload:
    rng = random.Random(seed)
    work = Workload()
    for n in range(MEMBERS):
        book = Ledger(Sender(msisdn(n)))
        if n == 0:
            member_zero(book, work)
        else:
            generated_member(n, rng, book, work)
        work.members.append(book.member)
        work.lots[book.member.msisdn] = book.lots()
        work.daily_keys |= daily_run_keys(book)
    return work


def keys_sent(database_url: str, kinds: tuple[str, ...]) -> list[str]:
    return [s.key for s in outbox(database_url) if s.key.split(":")[1] in kinds]


TRANSFERS = ("transfer_offered", "transfer_accepted", "transfer_declined", "transfer_returned")
DAILY = ("credits", "expiry_7", "expiry_30")


def kill_midway(victim: NotifierProcess, database_url: str, kinds: tuple[str, ...], expected: int,
                watch: list[NotifierProcess]) -> int:
    """SIGKILL `victim` once a quarter of the `expected` messages of
    `kinds` are in the outbox; returns how many were in when it died,
    after making sure that was not all (else the test proved nothing)."""
    deadline = time.monotonic() + WAIT_S
    while len(keys_sent(database_url, kinds)) < expected // 4:
        for notifier in watch:
            notifier.check_alive()
        assert time.monotonic() < deadline, f"no quarter of the {expected} messages {kinds} after {WAIT_S} s"
        time.sleep(0.02)
    victim.kill()
    sent = len(keys_sent(database_url, kinds))
    assert sent < expected, f"the notifier had sent all {expected} messages {kinds} before SIGKILL: a larger workload"
    return sent


def assert_each_sent_once(database_url: str, kafka_bootstrap: str, names: Names, work: Workload) -> None:
    sent = outbox(database_url)
    by_key = Counter(s.key for s in sent)
    assert sorted(set(by_key) - work.keys) == [], "messages nobody was owed"
    assert sorted(work.keys - set(by_key)) == [], "messages missing"
    assert [k for k, count in by_key.items() if count > 1] == []
    # the UNIQUE index already makes a repeated key impossible; the rows say so too
    assert len(sent) == len(by_key) == len(work.keys)
    # what the notifier holds after the run: the daily run of D done for everyone who had something to
    # announce (the others are not run: it would decide nothing), no credit left unannounced, nothing
    # waiting, the lots as given
    states = member_states(kafka_bootstrap, names)
    assert set(states) == {m.msisdn for m in work.members}
    told = {key.split(":")[0] for key in work.keys if ":credits:" in key or ":expiry_" in key}
    assert {m for m, s in states.items() if s.ticked_on == D} >= told
    assert {s.ticked_on for s in states.values()} <= {D, None}
    assert [m for m, s in states.items() if s.credits] == []
    assert [m for m, s in states.items() if s.waiting] == []
    assert lots_by_member(states) == {m: lots for m, lots in work.lots.items() if lots}


def assert_member_zero_told(database_url: str) -> None:
    """The hand-written member: 120 usage points of June burn on 8 December
    (5 days after D); on D-1 300 usage + 50 shop = 350 earned; 100 sent to
    member 1 and accepted: balance 120 + 350 - 100 = 370."""
    texts = {s.key: s.text for s in outbox(database_url) if s.msisdn == msisdn(0)}
    assert texts == {
        f"{msisdn(0)}:credits:2026-12-02": (
            "За 2 декабря вам начислено 350\u00a0баллов: 300 — за связь, 50 — за покупки в салонах МТС. "
            "На счёте 370\u00a0баллов."),
        f"{msisdn(0)}:expiry_7:2026-12-08": (
            "Через 5\u00a0дней, в ночь на 8 декабря, сгорят 120\u00a0баллов. "
            "Потратить их можно в каталоге личного кабинета."),
        f"{msisdn(0)}:transfer_offered:tr-0-in": (
            "+7 916 100-00-02 переводит вам 500\u00a0баллов. "
            "Примите перевод в личном кабинете до 4 декабря, 09:00 (мск)."),
        f"{msisdn(0)}:transfer_accepted:tr-0-out": "Ваш перевод 100\u00a0баллов на номер +7 916 100-00-01 принят.",
    }


def states_behind_offsets(kafka_bootstrap: str, names: Names) -> dict[str, tuple[int, int]]:
    """msisdn -> (the version its state holds, the version of its last
    record the group committed as handled), for each member whose state is
    behind what was committed. A record's table writes reach the broker
    before its offset is committed, so after any crash this is empty: a
    member's record committed as handled and missing from its state would
    never be read again."""
    kafka = clients(kafka_bootstrap)
    committed = retrying("reading the notifier's offsets", lambda: kafka.run(
        kafka.admin.list_consumer_group_offsets(names.notifier_group)))
    handled: dict[str, int] = {}
    for r in read_topic(kafka_bootstrap, names.points_events):
        done = committed.get(TopicPartition(names.points_events, r.partition))
        if done is not None and r.offset < done.offset:
            event = json.loads(r.value)
            handled[event["msisdn"]] = max(handled.get(event["msisdn"], 0), event["account_version"])
    states = member_states(kafka_bootstrap, names)
    held = {m: states[m].version if m in states else 0 for m in handled}
    return {m: (held[m], version) for m, version in handled.items() if held[m] < version}


def group_members(kafka_bootstrap: str, names: Names) -> tuple[str, int]:
    """(state, members) of the notifier's consumer group."""
    kafka = clients(kafka_bootstrap)
    (response,) = retrying("describing the notifier's group", lambda: kafka.run(
        kafka.admin.describe_consumer_groups([names.notifier_group])))
    (group,) = response.groups
    return group[2], len(group[5])


def wait_for(what: str, condition: Callable[[], bool], watch: list[NotifierProcess]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        for notifier in watch:
            notifier.check_alive()
        assert time.monotonic() < deadline, f"{what}: not after {WAIT_S} s"
        time.sleep(0.2)


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "notifier-faults"


@pytest.fixture
def processes(request):
    """Starts notifiers; afterwards kills what still runs and keeps every
    notifier's log in test-artifacts/notifier-faults/<test>/ (CI keeps
    that folder): a crash run that fails is read from them."""
    started: list[tuple[NotifierProcess, Path]] = []

    def start(url: str, bootstrap: str, prefix: str, log: Path) -> NotifierProcess:
        started.append((NotifierProcess(url, bootstrap, prefix, log).start(), log))
        return started[-1][0]

    yield start
    kept = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for notifier, log in started:
        notifier.kill()
        if log.exists():
            shutil.copy(log, kept / log.name)


def test_a_notifier_killed_while_sending_transfers_and_again_in_the_daily_run_sends_each_message_once(
    processes, kafka_bootstrap, kafka_prefix, sqlite_url, tmp_path
):
    names = setup_topics(kafka_bootstrap, kafka_prefix)
    work = the_workload()
    # 300 offers + 75 accepted + 75 declined = 450 transfer messages (the generator counts them)
    assert len(work.transfer_keys) == 450
    first = processes(sqlite_url, kafka_bootstrap, kafka_prefix, tmp_path / "first.log")

    # given the clock at 09:30 Moscow on D: transfer news goes out at once; the daily run (10:00) is to come
    tick(kafka_bootstrap, names, at(f"{D} 09:30"))
    wait_until_handled(kafka_bootstrap, names, [names.notifier_ticks], WAIT_S, notifiers=[first])
    # when every member's records arrive and the notifier is killed with a quarter of the transfer news sent
    produce_records(kafka_bootstrap, names.points_events, work.records())
    kill_midway(first, sqlite_url, TRANSFERS, len(work.transfer_keys), [first])
    assert states_behind_offsets(kafka_bootstrap, names) == {}
    # and a new one (same group) takes over: it resumes from the last commit, so it handles some records again
    second = processes(sqlite_url, kafka_bootstrap, kafka_prefix, tmp_path / "second.log")
    wait_until_handled(kafka_bootstrap, names, [names.points_events], WAIT_S, notifiers=[second])
    assert sorted(keys_sent(sqlite_url, TRANSFERS)) == sorted(work.transfer_keys)
    assert keys_sent(sqlite_url, DAILY) == []

    # when 10:00 comes (the daily run: D-1's credits and the reminders) and it is killed in the middle of it
    tick(kafka_bootstrap, names, at(f"{D} 10:00"))
    kill_midway(second, sqlite_url, DAILY, len(work.daily_keys), [second])
    assert states_behind_offsets(kafka_bootstrap, names) == {}
    third = processes(sqlite_url, kafka_bootstrap, kafka_prefix, tmp_path / "third.log")
    wait_until_handled(kafka_bootstrap, names, [names.notifier_ticks, names.points_events], WAIT_S,
                       notifiers=[third])

    # then every message owed is in the outbox once, and nothing else
    assert_each_sent_once(sqlite_url, kafka_bootstrap, names, work)
    assert_member_zero_told(sqlite_url)
    third.check_alive()


def two_notifiers(processes, database_url: str, kafka_bootstrap: str, kafka_prefix: str, names: Names,
                  tmp_path: Path) -> tuple[NotifierProcess, NotifierProcess]:
    """One notifier past the 09:30 tick, then a second in the same group,
    sharing the 6 partitions (a rebalance: a few seconds)."""
    one = processes(database_url, kafka_bootstrap, kafka_prefix, tmp_path / "one.log")
    tick(kafka_bootstrap, names, at(f"{D} 09:30"))
    wait_until_handled(kafka_bootstrap, names, [names.notifier_ticks], WAIT_S, notifiers=[one])
    two = processes(database_url, kafka_bootstrap, kafka_prefix, tmp_path / "two.log")
    wait_for("two notifiers in a stable group", lambda: group_members(kafka_bootstrap, names) == ("Stable", 2),
             [one, two])
    return one, two


def survivor_finishes(one: NotifierProcess, database_url: str, kafka_bootstrap: str, names: Names,
                      work: Workload) -> None:
    """The survivor takes the dead one's partitions over (once the broker
    gives up on it), handles every record and the 10:00 run: every message
    owed once, and it is alone in the group and alive."""
    wait_until_handled(kafka_bootstrap, names, [names.points_events], WAIT_S, notifiers=[one])
    tick(kafka_bootstrap, names, at(f"{D} 10:00"))
    wait_until_handled(kafka_bootstrap, names, [names.notifier_ticks], WAIT_S, notifiers=[one])
    assert group_members(kafka_bootstrap, names) == ("Stable", 1)
    assert_each_sent_once(database_url, kafka_bootstrap, names, work)
    assert_member_zero_told(database_url)
    one.check_alive()


@pytest.mark.parametrize("url", ["sqlite_url", pytest.param("postgres_url", marks=pytest.mark.postgres)])
def test_two_notifiers_sharing_the_partitions_one_killed_the_other_finishes_and_each_message_goes_once(
    processes, kafka_bootstrap, kafka_prefix, url, request, tmp_path
):
    # both processes write the one outbox at once: where its UNIQUE key decides (PostgreSQL above all)
    database_url = request.getfixturevalue(url)
    names = setup_topics(kafka_bootstrap, kafka_prefix)
    work = the_workload()
    # given two instances sharing the partitions
    one, two = two_notifiers(processes, database_url, kafka_bootstrap, kafka_prefix, names, tmp_path)
    # when the records arrive and the second is killed with a quarter of the transfer news sent
    produce_records(kafka_bootstrap, names.points_events, work.records())
    kill_midway(two, database_url, TRANSFERS, len(work.transfer_keys), [one, two])
    assert states_behind_offsets(kafka_bootstrap, names) == {}
    # then the first takes its partitions over and finishes: every message once
    survivor_finishes(one, database_url, kafka_bootstrap, names, work)


def test_two_notifiers_one_killed_before_its_first_commit_the_other_handles_its_partitions_from_the_start(
    processes, kafka_bootstrap, kafka_prefix, sqlite_url, tmp_path
):
    """The takeover of partitions the group never committed: aiokafka does
    not seek a partition without a committed offset, and the survivor
    once committed past such partitions' records without handling them,
    or never read them (`seek_every_partition` in accrual/faust_fixes.py)."""
    names = setup_topics(kafka_bootstrap, kafka_prefix)
    work = the_workload()
    one, two = two_notifiers(processes, sqlite_url, kafka_bootstrap, kafka_prefix, names, tmp_path)
    kafka = clients(kafka_bootstrap)

    def uncommitted() -> set[int]:
        committed = retrying("reading the notifier's offsets", lambda: kafka.run(
            kafka.admin.list_consumer_group_offsets(names.notifier_group)))
        return {p for p in range(6) if TopicPartition(names.points_events, p) not in committed}

    # given the first records arrive, and the second is killed at once (it commits every second: not yet)
    records = work.records()
    produce_records(kafka_bootstrap, names.points_events, records[:30])
    two.kill()
    assert uncommitted(), "every partition was committed before the kill: the test proved nothing"
    # when the rest arrive
    produce_records(kafka_bootstrap, names.points_events, records[30:])
    # then the first takes them over and handles them from their first record: every message once
    survivor_finishes(one, sqlite_url, kafka_bootstrap, names, work)
