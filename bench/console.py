"""The console's calls on a large store: what a supervisor waits for.

    python -m bench.console --events 100000 --members 10000

Builds a SQLite store from a seeded workload (bench.workload, as
bench.dashboard does), opens the web app on it in-process (FastAPI's test
client: the application's own time, no network), signs a supervisor and an
operator in with TOTP, then times, `--repeat` times each over members drawn
with the seed: a prefix search, a member card, a history page, an
adjustment applied at once (the operator), one above the threshold and its
approval (the supervisor), a page of dead letters, the dashboard and the
audit log. Prints the median and the 95th percentile of each, in ms.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bench.books import build
from bench.workload import generate


def _timed(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    took = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = call()
        took.append(time.perf_counter() - started)
        assert answer.status_code < 400, answer.text
    took.sort()
    return {"median_ms": round(statistics.median(took) * 1000, 2),
            "p95_ms": round(took[max(0, int(len(took) * 0.95) - 1)] * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    from accrual.settings import Settings
    from web import totp
    from web.app import create_app

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as work:
        workload = Path(work) / "w.jsonl"
        generate(args.events, args.members, args.seed, workload, months=args.months)
        url = f"sqlite:///{work}/console.sqlite3"
        built = build(url, workload)
        app = create_app(Settings.from_env({"ACCRUAL_DATABASE_URL": url}), secure_cookies=False)
        results: dict[str, Any] = {}
        with TestClient(app, base_url="http://testserver") as client:
            context = app.state.context
            members = [m for (m,) in context.store.db.query(
                "SELECT msisdn FROM rm_members WHERE enrolled_at IS NOT NULL AND balance > 100 ORDER BY msisdn")]
            assert members, "the workload has members with points"

            def signed_in(login: str, role: str) -> dict[str, str]:
                new = context.staff.add(login, role)
                step = totp.step_of(datetime.now(timezone.utc))
                token = client.post("/api/v1/ops/auth/login", json={
                    "login": login, "password": new.password, "totp": totp.code_at(new.totp_secret, step - 1),
                }).json()["token"]
                headers = {"Authorization": f"Bearer {token}"}
                client.put("/api/v1/ops/me/password", headers=headers,
                           json={"current_password": new.password, "new_password": "Сосновый бор 2026!"})
                return headers

            started = time.perf_counter()
            olga = signed_in("olga", "supervisor")
            results["sign_in_and_password_change_ms"] = round((time.perf_counter() - started) * 1000, 1)
            ivan = signed_in("ivan", "operator")
            pick = lambda: rng.choice(members)  # noqa: E731
            results["search"] = _timed(lambda: client.get(f"/api/v1/ops/members?prefix={pick()[:7]}",
                                                          headers=olga), args.repeat)
            results["member_card"] = _timed(lambda: client.get(f"/api/v1/ops/members/{pick()}", headers=olga),
                                            args.repeat)
            results["history_page"] = _timed(lambda: client.get(f"/api/v1/ops/members/{pick()}/history",
                                                                headers=olga), args.repeat)
            keys = iter(range(10**9))
            results["adjustment_applied_at_once"] = _timed(lambda: client.post(
                "/api/v1/ops/adjustments", headers=ivan, json={
                    "msisdn": pick(), "points": 5, "reason": "Компенсация по обращению",
                    "idempotency_key": f"b{next(keys)}"}), args.repeat)
            pending = [client.post("/api/v1/ops/adjustments", headers=ivan, json={
                "msisdn": pick(), "points": 5000, "reason": "Компенсация по обращению",
                "idempotency_key": f"p{i}"}).json()["adjustment_id"] for i in range(args.repeat)]
            waiting = iter(pending)
            results["approval_applied"] = _timed(lambda: client.post(
                f"/api/v1/ops/adjustments/{next(waiting)}/approve", headers=olga), args.repeat)
            results["dead_letters_page"] = _timed(lambda: client.get("/api/v1/ops/dead-letters", headers=olga),
                                                  args.repeat)
            results["dashboard"] = _timed(lambda: client.get("/api/v1/ops/dashboard", headers=olga), args.repeat)
            results["audit_log_page"] = _timed(lambda: client.get("/api/v1/ops/audit-log", headers=olga),
                                               args.repeat)
    print(json.dumps({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "events": args.events,
                      "members": args.members, "machine": f"{platform.machine()} {os.cpu_count()} cpu",
                      "repeat": args.repeat, **built, **results}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
