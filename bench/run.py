"""One command for the engine's throughput and memory figures.

    python -m bench.run [--store sqlite|postgres|both] [--events N] [--members M] [--seed S]
                        [--scenario ingest|replay|ticks|memory|all|LIST] [--repeat 3]
                        [--memory-members 200000] [--memory-events N] [--no-record] [--note TEXT]

For each store it generates the workload (`bench.workload`, cached by its
parameters under $TMPDIR/accrual-bench), and runs every measurement in a child
process of its own (so each peak RSS is that measurement's alone):

- ingest: a fresh store, then `Runtime.ingest(FILE)` exactly as `accrual
  ingest` does (each batch one transaction; for a large file the read
  models follow in a process of their own); the wall time covers the whole
  file until the read models show all of it. events/s = input lines / seconds.
- replay: `Runtime.replay()` (drop the read models and rebuild them from the
  event log) on the store the last ingest left; the rate is given per stored
  event replayed and per inbound message the log came from.
- ticks: the workload ingested in the segments its plan gives, with
  `Runtime.tick(as_of)` between them (the 1st, 15th and 25th of each month).
- memory: one ingest of a workload with many members (--memory-members,
  about two events each) with the RSS sampled as it goes; the peak RSS, and
  an extrapolation to 1,000,000 members if the run was smaller (labelled).

Each measurement is repeated --repeat times (memory: once) and the best and
the median are reported; the table is printed and, unless --no-record, a dated
entry is appended to bench/results/entries.md (the log of runs; BENCHMARKS.md
at the repository root is the curated page of current figures).

PostgreSQL: a database of its own per run (CREATE DATABASE, dropped after),
on the server that ACCRUAL_BENCH_POSTGRES_URL names, else the one that
`dev/services up postgres` starts.

To measure a fixed commit while the work tree moves, export it and run there:
`git archive HEAD | tar -x -C /tmp/snap && cp -r bench /tmp/snap/ && cd /tmp/snap &&
ACCRUAL_BENCH_COMMIT=$(git -C /work/main rev-parse --short HEAD) python -m bench.run
--record-to /work/main/bench/results/entries.md ...` (the exported packages shadow an
editable install, since `python -m` puts the current directory first).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
RESULT_TAG = "BENCH-RESULT "
TARGETS = {  # (store, figure) -> minimum
    ("sqlite", "ingest"): 20_000,
    ("postgres", "ingest"): 15_000,
    ("sqlite", "replay"): 50_000,
    ("postgres", "replay"): 50_000,
}
MILLION = 1_000_000


# ======================================================================
# the child: one measurement, its result as one JSON line on stdout
# ======================================================================


def _rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_kib() -> int:
    """This process's peak RSS: VmHWM, the high-water mark of its own address
    space. (`ru_maxrss` is not used first: Linux carries it across execve, so
    a child spawned by a parent that had just generated a large workload would
    report the parent's peak.)"""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _children_peaks_kib() -> dict[str, int]:
    """The peak RSS (VmHWM) of this process's children now running."""
    peaks: dict[str, int] = {}
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as handle:
            pids = handle.read().split()
    except OSError:
        return peaks
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        peaks[pid] = int(line.split()[1])
        except OSError:
            pass
    return peaks


def _settings(url: str):
    from accrual.settings import Settings

    env = {"ACCRUAL_DATABASE_URL": url}
    for name in ("ACCRUAL_BATCH_SIZE", "ACCRUAL_CACHE_SIZE", "ACCRUAL_RULES_FILE"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return Settings.from_env(env)


class _Sampler:
    """RSS after every `every` events, and a progress file the parent reads
    if it has to stop the child."""

    def __init__(self, progress: str | None, total: int, began: float):
        self.progress = Path(progress) if progress else None
        self.every = max(500, total // 50)
        self.began = began
        self.done = 0
        self.next_at = self.every
        self.samples: list[tuple[int, int, float]] = []  # (events, rss KiB, seconds)
        self.children_peak_kib: dict[str, int] = {}

    def __call__(self, count: int) -> None:
        self.done += count
        if self.done >= self.next_at:
            self.next_at += self.every
            self.sample()

    def sample(self) -> None:
        point = (self.done, _rss_kib(), round(time.perf_counter() - self.began, 3))
        self.samples.append(point)
        for pid, peak in _children_peaks_kib().items():  # the read models' follower
            self.children_peak_kib[pid] = max(peak, self.children_peak_kib.get(pid, 0))
        if self.progress is not None:
            tmp = self.progress.with_suffix(".tmp")
            tmp.write_text(json.dumps({"events": point[0], "rss_kib": point[1], "seconds": point[2],
                                       "peak_kib": _peak_kib()}))
            tmp.replace(self.progress)


def _report_dict(report: Any) -> dict[str, Any]:
    return {
        "outcomes": dict(report.outcomes),
        "rejected": dict(report.rejected),
        "released": report.released,
        "settled": report.settled,
        "expired_points": report.expired_points,
    }


def _child_ingest(spec: dict[str, Any]) -> dict[str, Any]:
    from accrual.runtime import Runtime

    with Runtime(_settings(spec["url"])) as runtime:
        baseline = _rss_kib()
        received_at = datetime.now(timezone.utc)
        began = time.perf_counter()
        sampler = _Sampler(spec.get("progress"), spec["lines"], began)
        report = runtime.ingest(Path(spec["file"]), received_at, on_batch=sampler)  # as `accrual ingest`
        seconds = time.perf_counter() - began
        sampler.sample()
        stored = runtime.app.recorder.max_notification_id() or 0
        return {
            "seconds": seconds,
            "lines": sampler.done,
            "stored_events": stored,
            "report": _report_dict(report),
            "baseline_rss_kib": baseline,
            "peak_rss_kib": _peak_kib(),
            "children_peak_rss_kib": max(sampler.children_peak_kib.values(), default=0),
            "samples": sampler.samples,
            "batch_size": runtime.settings.batch_size,
            "cache_size": runtime.settings.cache_size,
        }


def _child_replay(spec: dict[str, Any]) -> dict[str, Any]:
    from accrual.runtime import Runtime

    with Runtime(_settings(spec["url"])) as runtime:
        baseline = _rss_kib()
        began = time.perf_counter()
        count = runtime.replay()
        seconds = time.perf_counter() - began
        return {
            "seconds": seconds,
            "stored_events": count,
            "baseline_rss_kib": baseline,
            "peak_rss_kib": _peak_kib(),
        }


def _segments(path: Path, stops: list[int], batch_size: int, received_at: datetime) -> Iterator[list[list[Any]]]:
    """The file's messages as `accrual ingest` reads them, cut at each stop
    (a line count): one list of batches per segment."""
    from accrual.intake import inbound_from_line

    with open(path, "rb") as handle:
        lines = iter(handle)
        read = 0
        for stop in stops + [None]:
            batches: list[list[Any]] = []
            batch: list[Any] = []
            while stop is None or read < stop:
                line = next(lines, None)
                if line is None:
                    break
                read += 1
                raw = line.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                batch.append(inbound_from_line(raw, received_at))
                if len(batch) >= batch_size:
                    batches.append(batch)
                    batch = []
            if batch:
                batches.append(batch)
            yield batches


def _child_ticks(spec: dict[str, Any]) -> dict[str, Any]:
    from datetime import date

    from accrual.runtime import Runtime
    from engine.messages import Report

    plan = json.loads(Path(spec["plan"]).read_text())
    ticks = plan["ticks"]
    with Runtime(_settings(spec["url"])) as runtime:
        baseline = _rss_kib()
        received_at = datetime.now(timezone.utc)
        ingest_s = tick_s = 0.0
        slowest = (0.0, "")
        lines = 0
        ingested, ticked = Report(), Report()
        began = time.perf_counter()
        segments = _segments(Path(spec["file"]), [t["after_line"] for t in ticks], runtime.settings.batch_size,
                             received_at)
        for index, batches in enumerate(segments):
            start = time.perf_counter()
            ingested.add(runtime.apply(batches))
            ingest_s += time.perf_counter() - start
            lines += sum(len(b) for b in batches)
            if index < len(ticks):
                start = time.perf_counter()
                ticked.add(runtime.tick(date.fromisoformat(ticks[index]["as_of"])))
                runtime.projector.catch_up()
                took = time.perf_counter() - start
                tick_s += took
                slowest = max(slowest, (took, ticks[index]["as_of"]))
        seconds = time.perf_counter() - began
        return {
            "seconds": seconds,
            "ingest_seconds": ingest_s,
            "tick_seconds": tick_s,
            "ticks": len(ticks),
            "slowest_tick": {"seconds": slowest[0], "as_of": slowest[1]},
            "lines": lines,
            "stored_events": runtime.app.recorder.max_notification_id() or 0,
            "report": _report_dict(ingested),
            "tick_report": _report_dict(ticked),
            "baseline_rss_kib": baseline,
            "peak_rss_kib": _peak_kib(),
        }


CHILDREN = {"ingest": _child_ingest, "replay": _child_replay, "ticks": _child_ticks}


def child_main(spec_text: str) -> int:
    spec = json.loads(spec_text)
    os.environ.update(spec.get("env") or {})
    result = CHILDREN[spec["op"]](spec)
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    return 0


# ======================================================================
# the parent: workloads, stores, children, the table and the entry in bench/results/entries.md
# ======================================================================


def cache_dir() -> Path:
    path = Path(os.environ.get("ACCRUAL_BENCH_CACHE") or Path(tempfile.gettempdir()) / "accrual-bench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def workload(events: int, members: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The workload file for these parameters, generated once."""
    from bench.workload import GENERATOR_VERSION, generate, plan_path

    path = cache_dir() / f"workload-v{GENERATOR_VERSION}-e{events}-m{members}-s{seed}.jsonl"
    plan_file = plan_path(path)
    if path.exists() and plan_file.exists():
        return path, json.loads(plan_file.read_text())
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    plan = generate(events, members, seed, path)
    print(f"  {plan['lines']} lines in {time.perf_counter() - began:.1f}s", file=sys.stderr, flush=True)
    return path, plan


class Store:
    """A fresh, empty store; `drop()` removes it."""

    kind = ""

    def __init__(self) -> None:
        self.url = ""

    def drop(self) -> None:
        raise NotImplementedError

    def size_bytes(self) -> int | None:
        return None


class SQLiteStore(Store):
    kind = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="accrual-bench-store-", dir=cache_dir()))
        self.path = self.dir / "accrual.sqlite3"
        self.url = f"sqlite:///{self.path}"

    def size_bytes(self) -> int | None:
        return sum(p.stat().st_size for p in self.dir.iterdir() if p.is_file())

    def drop(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresStore(Store):
    kind = "postgres"
    _admin: str | None = None

    @classmethod
    def admin_url(cls) -> str:
        if cls._admin is None:
            url = os.environ.get("ACCRUAL_BENCH_POSTGRES_URL")
            if not url:
                done = subprocess.run([str(ROOT / "dev" / "services"), "up", "postgres"], capture_output=True,
                                      text=True, timeout=300)
                for line in done.stdout.splitlines():
                    if line.startswith("ACCRUAL_DATABASE_URL="):
                        url = line.split("=", 1)[1].strip()
                if not url:
                    raise SystemExit(f"dev/services up postgres gave no URL:\n{done.stdout}\n{done.stderr}")
            cls._admin = url
        return cls._admin

    def __init__(self) -> None:
        super().__init__()
        from accrual.settings import parse_database_url

        self.admin = parse_database_url(self.admin_url())
        self.name = f"accrual_bench_{uuid.uuid4().hex[:12]}"
        self._sql(f'CREATE DATABASE "{self.name}"')
        a = self.admin
        self.url = f"postgresql://{a.user}:{a.password}@{a.host}:{a.port}/{self.name}"

    def _sql(self, statement: str) -> list[tuple]:
        import psycopg

        a = self.admin
        with psycopg.connect(host=a.host, port=a.port, user=a.user, password=a.password, dbname=a.dbname,
                             autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def size_bytes(self) -> int | None:
        return self._sql(f"SELECT pg_database_size('{self.name}')")[0][0]

    def server_version(self) -> str:
        return self._sql("SHOW server_version")[0][0]

    def drop(self) -> None:
        self._sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def new_store(kind: str) -> Store:
    return SQLiteStore() if kind == "sqlite" else PostgresStore()


@dataclass
class ChildOutcome:
    result: dict[str, Any] | None
    error: str | None = None
    progress: dict[str, Any] | None = None
    wall: float = 0.0


def run_child(spec: dict[str, Any], timeout: float) -> ChildOutcome:
    progress = Path(tempfile.mkstemp(prefix="accrual-bench-progress-", dir=cache_dir())[1])
    spec = {**spec, "progress": str(progress)}
    command = [sys.executable, "-m", "bench.run", "--child", json.dumps(spec)]
    began = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        last = _read_json(progress)
        progress.unlink(missing_ok=True)
        return ChildOutcome(None, f"stopped after {timeout:.0f}s", last, time.perf_counter() - began)
    last = _read_json(progress)
    progress.unlink(missing_ok=True)
    for line in out.splitlines():
        if line.startswith(RESULT_TAG):
            return ChildOutcome(json.loads(line[len(RESULT_TAG):]), None, last, time.perf_counter() - began)
    tail = "\n".join(err.strip().splitlines()[-15:])
    return ChildOutcome(None, f"exit code {proc.returncode}:\n{tail}", last, time.perf_counter() - began)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


# -- figures -----------------------------------------------------------------------------


@dataclass
class Figure:
    store: str
    scenario: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def best(self) -> float | None:
        if not self.values:
            return None
        return max(self.values) if self.higher_is_better else min(self.values)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def met(self) -> str:
        if self.target is None or self.best is None:
            return ""
        return "yes" if self.best >= self.target else "no"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MiB":
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _mib(kib: float) -> float:
    return kib / 1024


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self.problems: list[str] = []

    def figure(self, store: str, scenario: str, name: str, unit: str, **kw: Any) -> Figure:
        for f in self.figures:
            if (f.store, f.scenario, f.name) == (store, scenario, name):
                return f
        f = Figure(store, scenario, name, unit, **kw)
        self.figures.append(f)
        return f

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # -- scenarios -----------------------------------------------------------------------

    def run_store(self, kind: str, scenarios: list[str]) -> None:
        args = self.args
        path, plan = workload(args.events, args.members, args.seed)
        kept: Store | None = None
        try:
            if "ingest" in scenarios or "replay" in scenarios:
                kept = self.run_ingest(kind, path, plan["lines"], record="ingest" in scenarios)
            if "replay" in scenarios and kept is not None:
                self.run_replay(kind, kept, plan["lines"])
        finally:
            if kept is not None:
                kept.drop()
        if "ticks" in scenarios:
            self.run_ticks(kind, path, plan)
        if "memory" in scenarios:
            self.run_memory(kind)

    def run_ingest(self, kind: str, path: Path, lines: int, record: bool) -> Store | None:
        """Ingests the workload into a new store `--repeat` times (once if
        only the replay needs a store), recording the figures if `record`;
        returns the store of the last run that finished, for the replay (the
        caller drops it)."""
        args = self.args
        runs = args.repeat if record else 1
        kept: Store | None = None
        try:
            for i in range(runs):
                store = new_store(kind)
                self.say(f"[{kind}] ingest {i + 1}/{runs}: {lines} lines ...")
                outcome = run_child({"op": "ingest", "url": store.url, "file": str(path), "lines": lines},
                                    args.timeout)
                if outcome.result is None:
                    self._failed(kind, "ingest", outcome)
                    store.drop()
                    continue
                r = outcome.result
                rate = r["lines"] / r["seconds"]
                self.say(f"  {r['seconds']:.1f}s, {rate:,.0f} events/s, {r['stored_events']} stored events, "
                         f"peak RSS {_mib(r['peak_rss_kib']):.0f} MiB")
                if record:
                    self._ingest_figures(kind, r, rate)
                if i == 0:
                    size = store.size_bytes()
                    self.notes.append(
                        f"{kind}: {lines} lines -> {r['stored_events']} stored events; outcomes "
                        f"{json.dumps(r['report']['outcomes'], sort_keys=True)}, released "
                        f"{r['report']['released']}; store size after ingest "
                        f"{(size or 0) / 2**20:,.0f} MiB; batch size {r['batch_size']}, "
                        f"aggregate cache {r['cache_size']}"
                    )
                if kept is not None:
                    kept.drop()
                kept = store
        except BaseException:
            if kept is not None:
                kept.drop()
            raise
        return kept

    def _ingest_figures(self, kind: str, r: dict[str, Any], rate: float) -> None:
        target = TARGETS.get((kind, "ingest"))
        self.figure(kind, "ingest", "events/s (input lines)", "ev/s", target=target).values.append(rate)
        self.figure(kind, "ingest", "stored events/s", "ev/s").values.append(r["stored_events"] / r["seconds"])
        self.figure(kind, "ingest", "wall time", "s", higher_is_better=False).values.append(r["seconds"])
        self.figure(kind, "ingest", "peak RSS", "MiB", higher_is_better=False).values.append(
            _mib(r["peak_rss_kib"]))
        self.figure(kind, "ingest", "peak RSS, read models' follower", "MiB",
                    higher_is_better=False).values.append(_mib(r.get("children_peak_rss_kib", 0)))

    def run_replay(self, kind: str, kept: Store, lines: int) -> None:
        args = self.args
        for i in range(args.repeat):
            self.say(f"[{kind}] replay {i + 1}/{args.repeat} ...")
            outcome = run_child({"op": "replay", "url": kept.url}, args.timeout)
            if outcome.result is None:
                self._failed(kind, "replay", outcome)
                continue
            r = outcome.result
            rate = r["stored_events"] / r["seconds"]
            self.say(f"  {r['seconds']:.1f}s, {rate:,.0f} stored events/s")
            self.figure(kind, "replay", "stored events/s", "ev/s",
                        target=TARGETS.get((kind, "replay"))).values.append(rate)
            self.figure(kind, "replay", "inbound messages/s", "ev/s").values.append(lines / r["seconds"])
            self.figure(kind, "replay", "wall time", "s", higher_is_better=False).values.append(r["seconds"])
            self.figure(kind, "replay", "peak RSS", "MiB", higher_is_better=False).values.append(
                _mib(r["peak_rss_kib"]))

    def run_ticks(self, kind: str, path: Path, plan: dict[str, Any]) -> None:
        args = self.args
        for i in range(args.repeat):
            store = new_store(kind)
            try:
                self.say(f"[{kind}] ingest with {len(plan['ticks'])} ticks {i + 1}/{args.repeat} ...")
                outcome = run_child({"op": "ticks", "url": store.url, "file": str(path), "plan": str(path.with_name(
                    path.stem + ".plan.json")), "lines": plan["lines"]}, args.timeout)
            finally:
                store.drop()
            if outcome.result is None:
                self._failed(kind, "ticks", outcome)
                continue
            r = outcome.result
            self.say(f"  {r['seconds']:.1f}s (ingest {r['ingest_seconds']:.1f}s, ticks {r['tick_seconds']:.1f}s, "
                     f"slowest tick {r['slowest_tick']['seconds']:.1f}s on {r['slowest_tick']['as_of']})")
            self.figure(kind, "ticks", "events/s incl. ticks", "ev/s").values.append(r["lines"] / r["seconds"])
            self.figure(kind, "ticks", "apply events/s between ticks (parsing excluded)", "ev/s").values.append(
                r["lines"] / r["ingest_seconds"])
            self.figure(kind, "ticks", f"all {r['ticks']} ticks", "s", higher_is_better=False).values.append(
                r["tick_seconds"])
            self.figure(kind, "ticks", "slowest tick", "s", higher_is_better=False).values.append(
                r["slowest_tick"]["seconds"])
            self.figure(kind, "ticks", "peak RSS", "MiB", higher_is_better=False).values.append(
                _mib(r["peak_rss_kib"]))
            if i == 0:
                tr = r["tick_report"]
                self.notes.append(
                    f"{kind} with ticks: {r['stored_events']} stored events; ticks settled {tr['settled']} "
                    f"card months / MGTS periods and expired {tr['expired_points']} points"
                )

    def run_memory(self, kind: str) -> None:
        args = self.args
        members, events = args.memory_members, args.memory_events or 2 * args.memory_members
        path, plan = workload(events, members, args.seed)
        store = new_store(kind)
        try:
            self.say(f"[{kind}] memory: {plan['lines']} lines over {members} members ...")
            outcome = run_child({"op": "ingest", "url": store.url, "file": str(path), "lines": plan["lines"]},
                                args.memory_timeout)
        finally:
            store.drop()
        label = f"{members:,} members / {plan['lines']:,} events"
        if outcome.result is None:
            p = outcome.progress or {}
            self.problems.append(
                f"{kind} memory ({label}) did not finish: {outcome.error}; it had ingested "
                f"{p.get('events', 0):,} events in {p.get('seconds', 0):.0f}s with peak RSS "
                f"{_mib(p.get('peak_kib', 0)):.0f} MiB"
            )
            if p:
                self.figure(kind, "memory", f"peak RSS after {p['events']:,} of {label} (unfinished)", "MiB",
                            higher_is_better=False).values.append(_mib(p["peak_kib"]))
            return
        r = outcome.result
        samples = r["samples"]
        rate = r["lines"] / r["seconds"]
        self.say(f"  {r['seconds']:.1f}s, {rate:,.0f} events/s, peak RSS {_mib(r['peak_rss_kib']):.0f} MiB")
        self.figure(kind, "memory", f"peak RSS, {label}", "MiB", higher_is_better=False).values.append(
            _mib(r["peak_rss_kib"]))
        self.figure(kind, "memory", f"peak RSS of the read models' follower process, {label}", "MiB",
                    higher_is_better=False).values.append(_mib(r.get("children_peak_rss_kib", 0)))
        self.figure(kind, "memory", "RSS before ingest (imports, runtime)", "MiB",
                    higher_is_better=False).values.append(_mib(r["baseline_rss_kib"]))
        self.figure(kind, "memory", f"ingest events/s, {label}", "ev/s").values.append(rate)
        curve = ", ".join(f"{e // 1000}k: {_mib(k):.0f}" for e, k, _ in samples[:: max(1, len(samples) // 8)])
        self.notes.append(f"{kind} memory RSS (MiB) by events ingested: {curve}, end {_mib(samples[-1][1]):.0f}")
        # growth over the second half of the run, in MiB per 100k events
        half = [s for s in samples if s[0] >= samples[-1][0] / 2]
        if len(half) >= 2 and half[-1][0] > half[0][0]:
            slope = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0])  # KiB per event
            self.notes.append(f"{kind} memory: RSS growth over the second half {slope * 100_000 / 1024:.1f} MiB "
                              f"per 100k events")
            if members < MILLION:
                target_events = round(events * MILLION / members)
                estimate = r["peak_rss_kib"] + max(0.0, slope) * (target_events - r["lines"])
                self.figure(kind, "memory", f"peak RSS, 1,000,000 members / {target_events:,} events "
                            "(EXTRAPOLATED: this peak plus the second half's growth rate)", "MiB",
                            higher_is_better=False).values.append(_mib(estimate))
                self.figure(kind, "memory", "ingest time for 1,000,000 members (EXTRAPOLATED at this rate: "
                            "a lower bound, per-batch costs that grow with the store are not in it)", "s",
                            higher_is_better=False).values.append(target_events / rate)

    def _failed(self, kind: str, scenario: str, outcome: ChildOutcome) -> None:
        self.problems.append(f"{kind} {scenario} failed: {outcome.error}")
        self.say(f"  FAILED: {outcome.error}")

    # -- output ----------------------------------------------------------------------

    def table(self) -> str:
        rows = [("store", "scenario", "figure", "unit", "best", "median", "runs", "target", "met")]
        for f in self.figures:
            target = "" if f.target is None else f"≥ {f.target:,.0f}"
            rows.append((f.store, f.scenario, f.name, f.unit, _fmt(f.best, f.unit), _fmt(f.median, f.unit),
                         str(len(f.values)), target, f.met()))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for n, row in enumerate(rows):
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
            if n == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.strip().splitlines()
    mem = next((l for l in free if l.startswith("Mem:")), "")
    parts = mem.split()
    free_text = (f"total {parts[1]} GiB, used {parts[2]}, free {parts[3]}, available {parts[6]}"
                 if len(parts) >= 7 else mem)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": nproc,
        "free -g": free_text,
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
    }


def _git_head() -> str:
    if os.environ.get("ACCRUAL_BENCH_COMMIT"):  # a run from an exported tree, which has no .git
        return os.environ["ACCRUAL_BENCH_COMMIT"]
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return (done.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


BENCHMARKS_HEAD = """# Benchmark runs

Every run of `python -m bench.run` appends an entry here (see `bench/run.py`
for what each scenario does and `bench/workload.py` for the workload).
Newest entries at the bottom; each is dated and names its machine and
commit. The current figures, the targets and what limits them are in
BENCHMARKS.md at the repository root; the runs before 2026-12 are in
`2026-11-history.md`.
"""


def _shown(argv: list[str]) -> str:
    """The command line for the heading, without the note (it has a line of its own) and --record-to."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--note", "--record-to"):
            skip = True
            continue
        if arg.startswith(("--note=", "--record-to=")):
            continue
        shown.append(arg)
    return shlex.join(shown)


def record(bench: Bench, argv: list[str], started: datetime, load_before: str, extra: dict[str, str]) -> Path:
    path = bench.args.record_to or ROOT / "bench" / "results" / "entries.md"
    m = machine()
    args = bench.args
    lines = [
        "",
        f"## {started.strftime('%Y-%m-%d %H:%M')} UTC — `python -m bench.run {_shown(argv)}`",
        "",
        f"- machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}; memory (`free -g`): {m['free -g']}; "
        f"Linux {m['kernel']}",
        f"- Python {m['python']}, SQLite {m['sqlite']}"
        + (f", PostgreSQL {extra['postgres']}" if extra.get("postgres") else "")
        + f"; commit {_git_head()}",
        f"- load average (1, 5, 15 min) before {load_before}, after {_load()}",
    ]
    if any(s in args.scenario for s in ("ingest", "replay", "ticks")):
        lines.append(
            f"- workload: {args.events:,} events over {args.members:,} members, seed {args.seed} "
            f"(`python -m bench.workload`); best and median of {args.repeat} runs, each in a child process"
        )
    if "memory" in args.scenario:
        events = args.memory_events or 2 * args.memory_members
        lines.append(
            f"- memory workload: {events:,} events over {args.memory_members:,} members, seed {args.seed}; "
            "one run in a child process, RSS sampled 50 times along the way"
        )
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += ["", bench.table(), ""]
    for note in bench.notes:
        lines.append(f"- {note}")
    for problem in bench.problems:
        lines.append(f"- PROBLEM: {problem}")
    text = "\n".join(lines) + "\n"
    if not path.exists():
        path.write_text(BENCHMARKS_HEAD, encoding="utf-8")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
    return path


SCENARIOS = ("ingest", "replay", "ticks", "memory")


def _scenarios(text: str) -> list[str]:
    if text == "all":
        return list(SCENARIOS)
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in SCENARIOS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected all or a comma list of {', '.join(SCENARIOS)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child_main(argv[1])
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenario", default="all", type=_scenarios,
                        help="ingest, replay, ticks, memory, all (= all four), or a comma list: ingest,replay")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timed scenario (memory: one)")
    parser.add_argument("--memory-members", type=int, default=200_000,
                        help="members of the memory scenario (1000000 for the full figure)")
    parser.add_argument("--memory-events", type=int, default=None, help="events of it (default: 2 per member)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one timed child may take")
    parser.add_argument("--memory-timeout", type=float, default=3600,
                        help="seconds the memory ingest may take; past that it is stopped and reported")
    parser.add_argument("--note", default="", help="a remark for the entry")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to bench/results/entries.md")
    parser.add_argument("--record-to", type=Path, default=None,
                        help="the file to append the entry to (default: bench/results/entries.md)")
    args = parser.parse_args(argv)

    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    scenarios = args.scenario
    started = datetime.now(timezone.utc)
    load_before = _load()
    bench = Bench(args)
    extra: dict[str, str] = {}
    for kind in stores:
        if kind == "postgres":
            probe = PostgresStore()
            try:
                extra["postgres"] = probe.server_version()
            finally:
                probe.drop()
        bench.run_store(kind, scenarios)
    print(bench.table())
    for note in bench.notes:
        print(f"- {note}")
    for problem in bench.problems:
        print(f"- PROBLEM: {problem}")
    if not args.no_record:
        path = record(bench, argv, started, load_before, extra)
        print(f"appended to {path}", file=sys.stderr)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
