"""The notifier's Prometheus metrics (scraped from ACCRUAL_NOTIFIER_METRICS_PORT)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry()

SENT = Counter("accrual_notifier_sent_total",
               "Notifications handed to the SMS gateway, by kind (a repeat after a restart is dropped by its key "
               "and counted again here)", ["kind"], registry=REGISTRY)
SUPPRESSED = Counter("accrual_notifier_suppressed_total", "Notifications not sent: the member turned them off",
                     ["kind"], registry=REGISTRY)
DELAYED = Counter("accrual_notifier_delayed_total",
                  "Notifications decided in quiet hours (22:00-09:00 Moscow), waiting for 09:00", ["kind"],
                  registry=REGISTRY)
SEND_FAILURES = Counter("accrual_notifier_send_failures_total",
                        "Attempts the SMS gateway refused (the notification is tried again)", registry=REGISTRY)
UNREADABLE = Counter("accrual_notifier_unreadable_total", "Records the notifier could not read, by topic",
                     ["topic"], registry=REGISTRY)
