"""`accrual worker` against the real broker and PostgreSQL (dev/services):
the contract's sample through Kafka, redelivery, dead letters, the outbound
topics, status and metrics, clean shutdown, and (with --soak) SIGKILL crash
runs and a two-worker group that loses a member."""
from __future__ import annotations

import base64
import json
import os
import random
import time
import urllib.request
from datetime import datetime, timezone
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accrual.cli import app
from accrual.runtime import Runtime
from accrual.settings import Settings
from schemas import PointsEventMessage
from tests.conftest import SAMPLE
from tests.kafka_support import (
    WorkerProcess,
    names_for,
    produce,
    produce_raw,
    read_lines,
    read_topic,
    wait_for_lag_zero,
    worker_env,
)
from tests.test_outbound_lots import fold, read_model_lots

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def cli(url: str, *args: str, **env: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"ACCRUAL_DATABASE_URL": url, **env}, catch_exceptions=False)
    assert result.exit_code == 0, f"accrual {' '.join(args)} exited {result.exit_code}:\n{result.output}"
    return result.stdout


def runtime_for(url: str) -> Runtime:
    return Runtime(Settings.from_env({"ACCRUAL_DATABASE_URL": url}))


def wait_for_publisher(url: str, timeout: float = 60) -> int:
    """Waits until the publisher has published the whole event log; returns its end."""
    deadline = time.monotonic() + timeout
    with runtime_for(url) as runtime:
        while True:
            end = runtime.app.recorder.max_notification_id() or 0
            rows = runtime.db.query("SELECT position FROM outbound_position WHERE name = 'kafka'")
            if rows and rows[0][0] >= end:
                return end
            if time.monotonic() > deadline:
                raise AssertionError(f"the publisher is at {rows} of {end} after {timeout} s")
            time.sleep(0.2)


def member_versions(url: str) -> dict[str, int]:
    with runtime_for(url) as runtime:
        runtime.projector.catch_up()
        return {m: int(v) for m, v in runtime.db.query("SELECT msisdn, version FROM rm_members")}


def check_outbound(bootstrap: str, prefix: str, url: str) -> dict[str, int]:
    """Every member-account event once, in account order, on the points
    topic; the compacted balances topic ends with each member's balance.
    Returns the last balance per member from the balances topic."""
    names = names_for(prefix)
    wait_for_publisher(url)
    versions = member_versions(url)
    seen: dict[str, list[int]] = defaultdict(list)
    running: dict[str, int] = {}
    messages = []
    for record in read_topic(bootstrap, names.points_events):
        event = json.loads(record.value)
        assert record.key.decode() == event["msisdn"]
        seen[event["msisdn"]].append(event["account_version"])
        running[event["msisdn"]] = running.get(event["msisdn"], 0) + event["points"]
        assert running[event["msisdn"]] == event["balance_after"], event
        assert sum(lot["points"] for lot in event["lots"]) == event["points"], event
        messages.append(PointsEventMessage.model_validate(event))
    for msisdn, version in versions.items():
        assert seen[msisdn] == list(range(1, version + 1)), f"{msisdn}: versions {seen[msisdn][:20]}..."
    assert set(seen) == set(versions)
    with runtime_for(url) as runtime:  # what a subscriber keeps of the lots is the engine's read model
        assert fold(messages) == read_model_lots(runtime)
    last: dict[str, dict] = {}
    for record in read_topic(bootstrap, names.balances):
        last[record.key.decode()] = json.loads(record.value)
    assert {m: b["as_of_version"] for m, b in last.items()} == {m: v for m, v in versions.items()}
    return {m: b["balance"] for m, b in last.items()}


def test_the_sample_through_kafka_gives_expected_balances_once_and_publishes_them(
    postgres_url, kafka_bootstrap, kafka_prefix, tmp_path
):
    names = names_for(kafka_prefix)
    worker = WorkerProcess(worker_env(postgres_url, kafka_bootstrap, kafka_prefix), tmp_path / "worker.log").start()
    plan = json.loads((SAMPLE / "plan.json").read_text())
    delivered = 0
    try:
        for command, argument in plan:
            if command == "ingest":
                delivered += len(produce(kafka_bootstrap, kafka_prefix, read_lines(SAMPLE / argument)))
                wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
            else:
                cli(postgres_url, "tick", "--as-of", argument)
        expected = json.loads((SAMPLE / "expected.json").read_text())
        assert json.loads(cli(postgres_url, "balances", "--json")) == expected

        published = check_outbound(kafka_bootstrap, kafka_prefix, postgres_url)
        assert {m: published[m] for m in expected} == expected

        # Redelivery at new offsets: every file again changes nothing.
        end = wait_for_publisher(postgres_url)
        for command, argument in plan:
            if command == "ingest":
                produce(kafka_bootstrap, kafka_prefix, read_lines(SAMPLE / argument))
        wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
        assert json.loads(cli(postgres_url, "balances", "--json")) == expected
        assert wait_for_publisher(postgres_url) == end, "a redelivered message recorded something"

        deadline = time.monotonic() + 10  # the workers add their counts once a second
        while True:
            status = json.loads(cli(postgres_url, "status", "--json", KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
                                    ACCRUAL_TOPIC_PREFIX=kafka_prefix))
            seen = status["messages_seen_by_workers"]
            total = sum(seen.values())  # every message came twice: the second time all are duplicates
            if total == 2 * delivered or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status["lag_total"] == 0
        assert status["published_position"] == status["log_position"] == end
        assert status["outcomes"]["applied"] > 0 and "duplicate" not in status["outcomes"]
        assert total == 2 * delivered and seen["duplicate"] >= delivered
        assert len(status["partitions"]) == sum(t.partitions for t in names.streams.inbound)
    finally:
        worker.kill()


def test_bad_messages_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    postgres_url, kafka_bootstrap, kafka_prefix, tmp_path
):
    names = names_for(kafka_prefix)
    msisdn = "79990000001"

    def message(**fields) -> bytes:
        base = {"event_id": "e-1", "type": "usage_charged", "occurred_at": "2025-03-05T10:00:00+03:00",
                "msisdn": msisdn, "service": "mobile", "amount": "120.00"}
        return json.dumps({**base, **fields}).encode()

    enrolled = json.dumps({"event_id": "enr-1", "type": "member_enrolled", "occurred_at": "2025-03-01T10:00:00+03:00",
                           "msisdn": msisdn, "channel": "web"}).encode()
    bad = {
        "invalid_json": ("mts.usage.v1", b'{"event_id": "x", "type": '),
        "invalid_schema": ("mts.usage.v1", message(event_id="e-schema", service=None)),
        "unknown_type": ("mts.usage.v1", message(event_id="e-type", type="usage_refunded")),
        "invalid_amount": ("mts.usage.v1", message(event_id="e-amount", amount="12.345")),
        "invalid_msisdn": ("mts.usage.v1", message(event_id="e-msisdn", msisdn="89990000001")),
        "wrong_topic": ("bank.card.v1", message(event_id="e-wrong")),
    }
    records = [("loyalty.members.v1", msisdn.encode(), enrolled)]
    records += [(topic, msisdn.encode(), value) for topic, value in bad.values()]
    records += [
        ("mts.usage.v1", msisdn.encode(), message(event_id="e-good")),
        ("mts.usage.v1", msisdn.encode(), message(event_id="e-good", amount="999.00")),  # conflicting duplicate
        ("mts.usage.v1", msisdn.encode(), None),  # a tombstone: no value at all
    ]
    produce_raw(kafka_bootstrap, kafka_prefix, records)
    worker = WorkerProcess(worker_env(postgres_url, kafka_bootstrap, kafka_prefix), tmp_path / "worker.log").start()
    try:
        wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
        wait_for_publisher(postgres_url)
        letters = [json.loads(r.value) for r in read_topic(kafka_bootstrap, names.dead_letter)]
        by_reason = Counter(letter["reason"] for letter in letters)
        assert by_reason == Counter({**{reason: 1 for reason in bad}, "conflicting_duplicate": 1,
                                     "invalid_json": 2})  # the tombstone is not JSON either
        for letter in letters:
            assert letter["partition"] is not None and letter["offset"] is not None
            assert letter["detail"]
        originals = {base64.b64decode(letter["original_base64"]) for letter in letters}
        assert {value for _, value in bad.values()} <= originals
        wrong = next(letter for letter in letters if letter["reason"] == "wrong_topic")
        assert wrong["source_topic"] == "bank.card.v1" and wrong["key"] == msisdn
        # the good usage charge after all of them was applied (the stream went on)
        history = json.loads(cli(postgres_url, "history", msisdn, "--json"))
        assert any(line.get("source_event_id") == "e-good" for line in history)
    finally:
        worker.kill()


def test_spending_beside_the_worker_is_published_with_the_right_balances(
    postgres_url, kafka_bootstrap, kafka_prefix, tmp_path
):
    """The personal account writes the same accounts as the worker (another
    process); the publisher carries debits, cancels and transfers with the
    balance after each."""
    names = names_for(kafka_prefix)
    alice, bob = "79990000011", "79990000012"

    def event(event_id, type_, msisdn, **fields) -> tuple[str, bytes, bytes]:
        topic = "loyalty.members.v1" if type_ == "member_enrolled" else "partner.ballyplus.v1"
        body = {"event_id": event_id, "type": type_, "occurred_at": "2025-03-01T10:00:00+03:00", "msisdn": msisdn,
                **fields}
        return topic, msisdn.encode(), json.dumps(body).encode()

    produce_raw(kafka_bootstrap, kafka_prefix, [
        event("enr-a", "member_enrolled", alice, channel="web"),
        event("enr-b", "member_enrolled", bob, channel="sms"),
        event("bp-a", "ballyplus_transfer", alice, partner_points=500),
    ])
    worker = WorkerProcess(worker_env(postgres_url, kafka_bootstrap, kafka_prefix), tmp_path / "worker.log").start()
    try:
        wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
        start = json.loads(cli(postgres_url, "balances", "--json"))[alice]
        at = datetime(2025, 3, 2, 12, 0, tzinfo=timezone.utc)
        with runtime_for(postgres_url) as runtime:
            app_ = runtime.app
            order = app_.debit(alice, 100, purpose="order", idempotency_key="o-1", reference={"item_id": "x"}, at=at)
            pos = app_.debit(alice, 50, purpose="pos", idempotency_key="p-1", reference={"store_id": "s"}, at=at)
            app_.cancel_debit(alice, pos.debit_id, at=at)
            offered = app_.offer_transfer(alice, bob, 30, idempotency_key="t-1", at=at)
            app_.accept_transfer(offered.transfer_id, bob, at=at)
            declined = app_.offer_transfer(alice, bob, 20, idempotency_key="t-2", at=at)
            app_.decline_transfer(declined.transfer_id, bob, at=at)
            assert order.balance_after == start - 100
        produce_raw(kafka_bootstrap, kafka_prefix, [event("bp-a2", "ballyplus_transfer", alice, partner_points=10)])
        wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
        balances = json.loads(cli(postgres_url, "balances", "--json"))
        published = check_outbound(kafka_bootstrap, kafka_prefix, postgres_url)
        assert published[alice] == balances[alice] and published[bob] == balances[bob] == 30
        types = Counter(json.loads(r.value)["event_type"] for r in read_topic(kafka_bootstrap, names.points_events))
        assert types["PointsRedeemed"] == 2 and types["PointsRestored"] == 1
        assert types["PointsTransferred"] == 3 and types["TransferReturned"] == 1
        # the news of each offer on Bob's key, of the acceptance on Alice's (issue 14)
        assert types["TransferOfferReceived"] == 2 and types["TransferAccepted"] == 1
    finally:
        worker.kill()


def test_the_leader_runs_the_daily_tick_by_itself(postgres_url, kafka_bootstrap, kafka_prefix, tmp_path):
    """Points earned more than twelve months before today expire without
    anyone running `accrual tick`: the leader closes today after 00:00
    Moscow time (ACCRUAL_TICK_AFTER=0: right after midnight)."""
    from engine.calendar import MOSCOW

    names = names_for(kafka_prefix)
    msisdn = "79990000021"
    records = [
        ("loyalty.members.v1", msisdn.encode(), json.dumps({
            "event_id": "enr", "type": "member_enrolled", "occurred_at": "2024-01-10T10:00:00+03:00",
            "msisdn": msisdn, "channel": "web"}).encode()),
        ("partner.ballyplus.v1", msisdn.encode(), json.dumps({
            "event_id": "bp", "type": "ballyplus_transfer", "occurred_at": "2024-01-11T10:00:00+03:00",
            "msisdn": msisdn, "partner_points": 300}).encode()),
    ]
    produce_raw(kafka_bootstrap, kafka_prefix, records)
    env = worker_env(postgres_url, kafka_bootstrap, kafka_prefix, ACCRUAL_AUTO_TICK="on", ACCRUAL_TICK_AFTER="0")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
        deadline = time.monotonic() + 60
        while True:
            with runtime_for(postgres_url) as runtime:
                rows = runtime.db.query("SELECT as_of FROM worker_ticks WHERE name = 'daily'")
                runtime.projector.catch_up()
                balance = runtime.reads.member(msisdn)["balance"]
            if rows and balance == 0:
                break
            assert time.monotonic() < deadline, f"no tick after 60 s: {rows}, balance {balance}"
            time.sleep(0.5)
        assert rows[0][0] == datetime.now(MOSCOW).date().isoformat()
        history = json.loads(cli(postgres_url, "history", msisdn, "--json"))
        assert [line["points"] for line in history if line["kind"] == "expired"] == [-300]
        assert '"daily tick"' in (tmp_path / "worker.log").read_text()
    finally:
        worker.kill()


def test_status_metrics_and_a_clean_stop_on_sigterm(postgres_url, kafka_bootstrap, kafka_prefix, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    names = names_for(kafka_prefix)
    env = worker_env(postgres_url, kafka_bootstrap, kafka_prefix, ACCRUAL_METRICS_PORT=str(port))
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        produce(kafka_bootstrap, kafka_prefix, read_lines(SAMPLE / "000-ingest.jsonl"))
        wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'accrual_messages_total{outcome="held"}' in text
        assert "accrual_batch_seconds_bucket" in text and "accrual_consumer_lag" in text
        deadline = time.monotonic() + 30  # the leader is a process of its own: it takes the lock when it is up
        while "accrual_leader 1.0" not in text and time.monotonic() < deadline:
            time.sleep(0.2)
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "accrual_leader 1.0" in text
        assert "accrual_published_total" in text and "accrual_store_available 1.0" in text
        # the orchestrator's probes: alive, and ready (store and broker answer, partitions held)
        assert json.loads(http_get(port, "/healthz")[1])["status"] == "ok"
        deadline = time.monotonic() + 30  # the first probe of the broker and the store runs within 5 s
        while http_get(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        status, body = http_get(port, "/readyz")
        checks = json.loads(body)["checks"]
        assert status == 200 and checks["store"] and checks["broker"] and checks["partitions"] > 0
        assert worker.terminate(timeout=60) == 0
        log = (tmp_path / "worker.log").read_text()
        stopped = [json.loads(line) for line in log.splitlines() if '"worker stopped"' in line]
        assert stopped and stopped[0]["batches"] >= 1
    finally:
        worker.kill()


def http_get(port: int, path: str) -> tuple[int, str]:
    import urllib.error

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# -- crash runs (--soak; CI runs them with a few seeds) ----------------------------


def workload(tmp_path: Path, events: int, seed: int) -> list[bytes]:
    from bench.workload import generate

    out = tmp_path / "workload.jsonl"
    generate(events=events, members=max(events // 10, 10), seed=seed, out=out)
    return read_lines(out)


TICK = "2025-12-26"  # settles card months and MGTS periods up to November; no lot expires yet


def embedded_reference(lines: list[bytes], tmp_path: Path) -> dict:
    """The same lines through the embedded mode (SQLite, JSON Lines), then
    the tick."""
    path = tmp_path / "produced.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    url = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
    cli(url, "ingest", str(path))
    cli(url, "tick", "--as-of", TICK)
    return outcome(url)


def outcome(url: str) -> dict:
    """What must agree between two runs of the same input: balances, points
    by member and rule, and the messages counted (each key once)."""
    with runtime_for(url) as runtime:
        runtime.projector.catch_up()
        db = runtime.db
        return {
            "balances": runtime.reads.balances(),
            "points": sorted(db.query(
                "SELECT msisdn, rule, SUM(points) FROM rm_history WHERE kind = 'accrued' GROUP BY msisdn, rule")),
            "debits": sorted(db.query(
                "SELECT msisdn, kind, SUM(points) FROM rm_history WHERE kind <> 'accrued' GROUP BY msisdn, kind")),
            "inbox": db.query("SELECT COUNT(*), COUNT(DISTINCT topic || ':' || message_key) FROM inbox")[0],
        }


def run_with_kills(workers: list[WorkerProcess], names, bootstrap: str, rng: random.Random, kills: int,
                   restart: bool = True) -> int:
    """Kills a worker with SIGKILL at random moments (restarting it) until
    the group has consumed everything; returns the number of kills."""
    done = 0
    for _ in range(kills):
        time.sleep(rng.uniform(1.0, 5.0))
        from tests.kafka_support import total_lag

        if total_lag(bootstrap, names)[0] == 0:
            break
        victim = rng.choice([w for w in workers if w.proc.poll() is None])
        victim.kill()
        done += 1
        if restart:
            victim.start()
    return done


# dev/soak-worker runs this longer: more seeds, more events, more kills.
CRASH_SEEDS = [int(s) for s in os.environ.get("ACCRUAL_WORKER_SOAK_SEEDS", "1,2,3").split(",") if s.strip()]
CRASH_EVENTS = int(os.environ.get("ACCRUAL_WORKER_SOAK_EVENTS", "50000"))
CRASH_KILLS = int(os.environ.get("ACCRUAL_WORKER_SOAK_KILLS", "6"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", CRASH_SEEDS)
def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(
    seed, postgres_url, kafka_bootstrap, kafka_prefix, tmp_path
):
    names = names_for(kafka_prefix)
    lines = produce(kafka_bootstrap, kafka_prefix, workload(tmp_path, CRASH_EVENTS, seed))
    assert len(lines) >= CRASH_EVENTS * 0.98
    worker = WorkerProcess(worker_env(postgres_url, kafka_bootstrap, kafka_prefix), tmp_path / "worker.log").start()
    try:
        kills = run_with_kills([worker], names, kafka_bootstrap, random.Random(seed), kills=CRASH_KILLS)
        wait_for_lag_zero(kafka_bootstrap, names, timeout=max(600, CRASH_EVENTS / 100), workers=[worker])
        assert kills >= 1, "the run ended before the first kill: nothing was tested"
        cli(postgres_url, "tick", "--as-of", TICK)
        got = outcome(postgres_url)
        assert got == embedded_reference(lines, tmp_path)
        assert got["inbox"][0] == got["inbox"][1]
        check_outbound(kafka_bootstrap, kafka_prefix, postgres_url)
    finally:
        worker.kill()


@pytest.mark.slow
def test_two_workers_share_the_partitions_and_the_survivor_takes_over(
    postgres_url, kafka_bootstrap, kafka_prefix, tmp_path
):
    names = names_for(kafka_prefix)
    lines = produce(kafka_bootstrap, kafka_prefix, workload(tmp_path, 30_000, 7))
    env = worker_env(postgres_url, kafka_bootstrap, kafka_prefix)
    first = WorkerProcess(env, tmp_path / "first.log").start()
    second = WorkerProcess(env, tmp_path / "second.log").start()
    try:
        time.sleep(8)
        assert '"partitions assigned"' in (tmp_path / "second.log").read_text()
        first.kill()
        wait_for_lag_zero(kafka_bootstrap, names, timeout=600, workers=[second])
        cli(postgres_url, "tick", "--as-of", TICK)
        assert outcome(postgres_url) == embedded_reference(lines, tmp_path)
        check_outbound(kafka_bootstrap, kafka_prefix, postgres_url)
    finally:
        first.kill()
        second.kill()
