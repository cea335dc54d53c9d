"""The notifier's core (issue 14): what to tell a member and when, decided
from the engine's points events and a clock passed in; no I/O here
(docs/notifications.md)."""
