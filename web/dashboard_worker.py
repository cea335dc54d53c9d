"""The dashboard's view of the stream worker: the group's lag per partition
(Kafka's committed offsets against the partitions' ends, `accrual status`'s
`kafka_lag`), and its throughput.

The throughput is the growth of the group's committed offsets between
samples this web process took when the dashboard was shown (kept in memory
by `ThroughputSampler`): the offsets are read for the lag anyway, so the
rate costs nothing more, and it counts what the worker finished (a commit
follows the batch's database transaction), duplicates and rejections
included, whichever worker of the group did it. The first look after a
start shows no rate yet. (`worker_counts` in the store counts deliveries
too, but is written in arrears and would need the same sampling.)

Kafka is asked with a short timeout: a broker that is down or unreachable
shows as "no data", never as a page that hangs."""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Mapping

from aiokafka.errors import KafkaError

from accrual.kafka import Names
from accrual.settings import WorkerSettings
from accrual.status import kafka_lag
from accrual.streams import DEFAULT_FILE, load_streams

logger = logging.getLogger("accrual.web")

LAG_TIMEOUT_S = 2.0  # the most a dashboard waits for Kafka
WINDOW_S = 600.0  # the rate is over the samples of the last ten minutes
SAMPLE_SPACING_S = 1.0  # samples closer than this to the last one are not kept (a double refresh)
SAMPLES_MAX = 128


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int  # the group's committed offset (0 before its first commit)
    end: int  # the partition's end offset
    lag: int  # end - committed: messages the worker has not finished yet

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "committed": self.committed, "end": self.end,
                "lag": self.lag}


@dataclass(frozen=True)
class Throughput:
    messages: int  # committed between the two samples
    elapsed_ms: int

    @property
    def per_second(self) -> Decimal:
        return (Decimal(self.messages) * 1000 / self.elapsed_ms).quantize(Decimal("0.1"), ROUND_HALF_EVEN)

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "elapsed_ms": self.elapsed_ms, "per_second": str(self.per_second)}


@dataclass(frozen=True)
class WorkerStatus:
    kafka: bool  # the engine runs with Kafka (KAFKA_BOOTSTRAP_SERVERS is set)
    lag: tuple[PartitionLag, ...] | None  # None: no Kafka, or it did not answer in time
    throughput: Throughput | None  # None: no Kafka, no answer, or no earlier sample yet

    @property
    def total_lag(self) -> int | None:
        return sum(p.lag for p in self.lag) if self.lag is not None else None

    def to_json(self) -> dict[str, Any]:
        return {"kafka": self.kafka, "total_lag": self.total_lag,
                "partitions": [p.to_json() for p in self.lag] if self.lag is not None else None,
                "throughput": self.throughput.to_json() if self.throughput is not None else None}


class ThroughputSampler:
    """The group's committed offsets (their sum over the partitions) at the
    moments this process looked, the last `WINDOW_S` seconds of them and the
    look before; the rate is from the oldest kept sample to the newest. Moments come from the
    caller (time.monotonic() in the web app), so a test sets them."""

    def __init__(self, window_s: float = WINDOW_S, samples_max: int = SAMPLES_MAX):
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque(maxlen=samples_max)
        self._lock = threading.Lock()  # request threads share one sampler

    def sample(self, committed: int, now_s: float) -> Throughput | None:
        with self._lock:
            samples = self._samples
            if samples and committed < samples[-1][1]:
                samples.clear()  # offsets went back (the group was reset or the topics made anew)
            # Older samples leave the window, but the newest of them stays: a look after a long pause
            # compares with the look before it.
            while len(samples) > 1 and samples[1][0] <= now_s - self.window_s:
                samples.popleft()
            if not samples or now_s - samples[-1][0] >= SAMPLE_SPACING_S:
                samples.append((now_s, committed))
            first_s, first = samples[0]
            elapsed_ms = int((now_s - first_s) * 1000)
            if elapsed_ms < SAMPLE_SPACING_S * 1000:
                return None  # nothing to compare with yet
            return Throughput(committed - first, elapsed_ms)


def kafka_settings(environ: Mapping[str, str] | None = None) -> WorkerSettings | None:
    """The worker's settings when the engine runs with Kafka (the bootstrap
    is set); None in the embedded mode, where there is no lag to show."""
    env = dict(os.environ if environ is None else environ)
    if not env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return None
    return WorkerSettings.from_env(env)


def streams_names(settings: WorkerSettings, environ: Mapping[str, str] | None = None) -> Names:
    """The topics and group of this deployment, as `accrual status` reads them."""
    env = os.environ if environ is None else environ
    return Names(load_streams(Path(env.get("ACCRUAL_STREAMS_FILE") or DEFAULT_FILE)), settings.topic_prefix)


async def worker_lag(settings: WorkerSettings | None, names: Names | None = None, *,
                     timeout_s: float = LAG_TIMEOUT_S) -> list[PartitionLag] | None:
    """The group's lag per inbound partition; None without Kafka, or when it
    did not answer within `timeout_s` (logged, so an outage is seen)."""
    if settings is None:
        return None
    names = names or streams_names(settings)
    try:
        rows = await asyncio.wait_for(kafka_lag(settings.bootstrap, names), timeout_s)
    except (asyncio.TimeoutError, KafkaError, OSError) as error:
        logger.warning("the dashboard got no lag from Kafka at %s: %s", settings.bootstrap,
                       type(error).__name__ if isinstance(error, asyncio.TimeoutError) else error)
        return None
    return [PartitionLag(r["topic"], r["partition"], r["committed"], r["end"], r["lag"]) for r in rows]


async def worker_status(settings: WorkerSettings | None, sampler: ThroughputSampler, now_s: float,
                        names: Names | None = None, *, timeout_s: float = LAG_TIMEOUT_S) -> WorkerStatus:
    """The lag, and the throughput since the sampler's oldest sample."""
    lag = await worker_lag(settings, names, timeout_s=timeout_s)
    throughput = sampler.sample(sum(p.committed for p in lag), now_s) if lag is not None else None
    return WorkerStatus(kafka=settings is not None, lag=tuple(lag) if lag is not None else None,
                        throughput=throughput)
