"""Helpers for the tests that run the worker against the real broker:
producing JSON Lines to the inbound topics, running `accrual worker` as a
process (so it can be killed), waiting for the group's lag to reach zero,
and reading the outbound topics back."""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from accrual.kafka import Names, create_topics
from accrual.streams import load_streams

ROOT = Path(__file__).resolve().parent.parent
INBOUND = {t.topic for t in load_streams().inbound}
FALLBACK_TOPIC = "mts.usage.v1"  # where a line that names no topic goes
RETRY_SECONDS = 60.0  # how long a call is retried while Kafka answers with a retriable error

T = TypeVar("T")


def retrying(what: str, call: Callable[[], T], timeout: float = RETRY_SECONDS) -> T:
    """call(), again while Kafka answers with an error that it calls
    retriable (the error's `retriable` attribute) for up to `timeout` s; then
    an AssertionError that says what could not be done.  A just-started
    broker answers "coordinator not available" until it has created or
    loaded its offsets topic, "not leader" while electing leaders, and so on:
    normal, and over in seconds.  Only for calls that may be repeated (reads,
    idempotent creates), never for producing."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            return call()
        except KafkaError as error:
            if not error.retriable:
                raise
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{what}: Kafka still answered {type(error).__name__} ({error}) after {attempts} attempts "
                    f"in {timeout:g} s. Is the broker up and serving consumer groups? `dev/services up kafka` "
                    f"waits until it is; `dev/services status kafka` names its log."
                ) from error
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))


def names_for(prefix: str) -> Names:
    return Names(load_streams(), prefix)


def setup_topics(bootstrap: str, prefix: str) -> Names:
    names = names_for(prefix)
    # Repeating it is harmless: a topic made by an earlier attempt "exists".
    retrying(f"creating the topics of {prefix!r} on {bootstrap}", lambda: asyncio.run(create_topics(bootstrap, names)))
    return names


def routable(raw: bytes) -> tuple[str, bytes | None] | None:
    """(topic, key) of a JSON Lines record as a producer would send it, or
    None for a record that names a topic the engine does not consume (no
    producer can send it to the engine at all)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return FALLBACK_TOPIC, None
    if not isinstance(obj, dict):
        return FALLBACK_TOPIC, None
    topic = obj.get("topic", FALLBACK_TOPIC)
    if topic not in INBOUND:
        return None
    key = obj.get("mgts_account") if topic == "mgts.billing.v1" else obj.get("msisdn")
    return topic, key.encode() if isinstance(key, str) else None


def read_lines(*paths: Path) -> list[bytes]:
    lines = []
    for path in paths:
        with open(path, "rb") as handle:
            lines.extend(line.rstrip(b"\r\n") for line in handle if line.strip())
    return lines


class _Clients:
    """One producer, admin client and consumer per broker, on one event
    loop kept for the test process: starting clients costs more than the
    calls the tests make (a lag check every 200 ms)."""

    def __init__(self, bootstrap: str):
        from aiokafka.admin import AIOKafkaAdminClient

        self.loop = asyncio.new_event_loop()

        async def start() -> None:  # aiokafka clients are made inside their loop
            self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=10,
                                             max_batch_size=256 * 1024)
            self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
            for client in (self.producer, self.admin, self.consumer):
                await client.start()

        self.run(start())

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)


_clients: dict[str, _Clients] = {}


def clients(bootstrap: str) -> _Clients:
    if bootstrap not in _clients:
        if not _clients:
            atexit.register(_close_clients)
        _clients[bootstrap] = _Clients(bootstrap)
    return _clients[bootstrap]


def close_clients(bootstrap: str) -> None:
    """Closes the clients of one broker (before that broker goes away)."""
    kafka = _clients.pop(bootstrap, None)
    if kafka is None:
        return
    for client in (kafka.producer, kafka.admin, kafka.consumer):
        try:
            kafka.run(client.stop() if hasattr(client, "stop") else client.close())
        except Exception:
            pass
    kafka.loop.close()


def _close_clients() -> None:
    for bootstrap in list(_clients):
        close_clients(bootstrap)


def produce(bootstrap: str, prefix: str, lines: list[bytes]) -> list[bytes]:
    """Produces each routable line to its topic (key: msisdn or MGTS
    account, as producers do); returns the lines produced."""
    kafka = clients(bootstrap)

    async def run() -> list[bytes]:
        sent = []
        for raw in lines:
            route = routable(raw)
            if route is None:
                continue
            topic, key = route
            await kafka.producer.send(prefix + topic, raw, key=key)
            sent.append(raw)
        await kafka.producer.flush()
        return sent

    return kafka.run(run())


def produce_raw(bootstrap: str, prefix: str, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
    """(topic, key, value) records, exactly as given."""
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for topic, key, value in records:
                await producer.send(prefix + topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()
    asyncio.run(run())


def total_lag(bootstrap: str, names: Names) -> tuple[int, int]:
    """(lag, end): messages of the inbound topics not yet committed by the
    group, and all messages of those topics.  Retriable Kafka errors (a
    group coordinator not yet available, ...) are retried for RETRY_SECONDS."""
    kafka = clients(bootstrap)
    tps = [TopicPartition(names.topic(t.topic), p) for t in names.streams.inbound for p in range(t.partitions)]

    async def run() -> tuple[int, int]:
        committed = await kafka.admin.list_consumer_group_offsets(names.group, partitions=tps)
        ends = await kafka.consumer.end_offsets(tps)
        done = {tp: (m.offset if m is not None and m.offset >= 0 else 0) for tp, m in committed.items()}
        return sum(max(ends[tp] - done.get(tp, 0), 0) for tp in tps), sum(ends.values())

    return retrying(f"reading the lag of group {names.group!r} on {bootstrap}", lambda: kafka.run(run()))


def wait_for_lag_zero(bootstrap: str, names: Names, timeout: float = 120, workers: list | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        lag, _ = total_lag(bootstrap, names)
        if lag == 0:
            return
        for worker in workers or ():
            worker.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker group still lags {lag} messages after {timeout} s")
        time.sleep(0.2)


class WorkerProcess:
    """`accrual worker` (or another `command`) in a process of its own."""

    command = "worker"

    def __init__(self, env: dict[str, str], log: Path):
        self.env = env
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        handle = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "accrual.cli", self.command], env=self.env, stdout=handle,
            stderr=subprocess.STDOUT, cwd=ROOT,
        )
        handle.close()
        return self

    def check_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"the {self.command} exited with {code}:\n{self.log.read_text(errors='replace')[-4000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def worker_env(database_url: str, bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ACCRUAL_DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ACCRUAL_TOPIC_PREFIX": prefix,
        "ACCRUAL_METRICS_PORT": "0",
        "ACCRUAL_AUTO_TICK": "off",
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


def read_topic(bootstrap: str, topic: str, timeout: float = 30) -> list[Any]:
    """Every record of `topic`, up to its end offsets at the time of the call."""
    async def run() -> list[Any]:
        # read_committed, as subscribers of the outbound topics read them: a
        # fenced or crashed publisher's transaction is not there.
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    isolation_level="read_committed")
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            found_by = time.monotonic() + timeout
            while not partitions:  # a topic just created: its metadata reaches this broker a moment later
                if time.monotonic() > found_by:
                    raise AssertionError(f"{topic}: no such topic (its metadata did not arrive in {timeout} s)")
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
                if not partitions:
                    await asyncio.sleep(0.2)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            records: list[Any] = []
            remaining = {tp for tp in tps if ends[tp] > 0}
            deadline = time.monotonic() + timeout
            while remaining and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, rs in batch.items():
                    records.extend(r for r in rs if r.offset < ends[tp])
                for tp in list(remaining):  # a transaction's end marker takes an offset no record has
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            if remaining:
                raise AssertionError(f"{topic}: could not read to the end of {sorted(str(t) for t in remaining)}")
            return records
        finally:
            await consumer.stop()
    return asyncio.run(run())


def publish_to_kafka(runtime: Any, names: Names, bootstrap: str) -> int:
    """Publishes the runtime's whole log to the real broker as the worker's
    leader would (recover, one chunk, send, commit); returns the records sent."""
    from accrual.publisher import Publisher, new_producer

    async def run() -> int:
        publisher = Publisher(runtime.app, runtime.db, names)
        producer = new_producer(bootstrap, f"{names.group}.publisher")
        await producer.start()
        try:
            await publisher.recover(bootstrap)
            records, commit, _ = publisher.read_chunk()
            assert await publisher.send(producer, records) == len(records)
            commit()
            return len(records)
        finally:
            await producer.stop()

    return asyncio.run(run())
