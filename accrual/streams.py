"""streams.yaml: the topics the engine consumes and publishes, checked
against the contract (schemas.TOPIC_TYPES) so that a typo stops the engine
at start with a clear message instead of silently consuming nothing."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from schemas import BALANCES_TOPIC, DEAD_LETTER_TOPIC, POINTS_EVENTS_TOPIC, TOPIC_TYPES

# Not the engine's: the personal account publishes the members' notification
# choices here and the notifier reads them (docs/notifications.md).
PREFERENCES_TOPIC = "loyalty.member-preferences.v1"
# The notifier's own: its consumer group, and the topic its timer writes one
# tick a partition to (docs/notifications.md, "The timer").
NOTIFIER_GROUP, NOTIFIER_TICKS_TOPIC = "accrual-notifier", "accrual-notifier.ticks"

DEFAULT_FILE = Path(__file__).resolve().parent / "streams.yaml"  # package data: installed with the code
_KEYS = {"msisdn", "mgts_account"}


class StreamsFileError(ValueError):
    """streams.yaml disagrees with the contract or is malformed."""


@dataclass(frozen=True)
class Topic:
    topic: str
    key: str
    partitions: int
    types: tuple[str, ...] = ()
    cleanup_policy: str = "delete"


@dataclass(frozen=True)
class Streams:
    consumer_group: str
    inbound: tuple[Topic, ...]
    points_events: Topic
    balances: Topic
    dead_letter: Topic
    member_preferences: Topic = Topic(PREFERENCES_TOPIC, "msisdn", 6, cleanup_policy="compact")
    notifier_group: str = NOTIFIER_GROUP
    notifier_ticks: Topic = Topic(NOTIFIER_TICKS_TOPIC, "partition", 6)


def load_streams(path: Path = DEFAULT_FILE) -> Streams:
    try:
        data = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise StreamsFileError(f"{path}: {error}") from error
    try:
        streams = _parse(data)
    except (KeyError, TypeError, ValueError) as error:
        raise StreamsFileError(f"{path}: {error}") from error
    _check(streams, path)
    return streams


def _topic(raw: dict) -> Topic:
    partitions = raw["partitions"]
    if not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"topic {raw.get('topic')!r}: partitions must be a positive whole number")
    return Topic(
        topic=str(raw["topic"]),
        key=str(raw["key"]),
        partitions=partitions,
        types=tuple(raw.get("types", ())),
        cleanup_policy=str(raw.get("cleanup_policy", "delete")),
    )


def _parse(data: dict) -> Streams:
    if data.get("version") != 1:
        raise ValueError("version must be 1")
    outbound = data["outbound"]
    return Streams(
        consumer_group=str(data["consumer_group"]),
        inbound=tuple(_topic(raw) for raw in data["inbound"]),
        points_events=_topic(outbound["points_events"]),
        balances=_topic(outbound["balances"]),
        dead_letter=_topic(outbound["dead_letter"]),
        # a streams file of an earlier release has none: the default above
        **({"member_preferences": _topic(outbound["member_preferences"])} if "member_preferences" in outbound else {}),
        **_notifier(data.get("notifier")),
    )


def _notifier(raw: dict | None) -> dict:
    """A streams file of an earlier release has no `notifier`: the defaults."""
    if raw is None:
        return {}
    return {"notifier_group": str(raw["consumer_group"]), "notifier_ticks": _topic(raw["ticks"])}


def _check(streams: Streams, path: Path) -> None:
    declared = {t.topic: frozenset(t.types) for t in streams.inbound}
    if len(declared) != len(streams.inbound):
        raise StreamsFileError(f"{path}: an inbound topic is declared twice")
    if declared != TOPIC_TYPES:
        missing = sorted(set(TOPIC_TYPES) - set(declared))
        unknown = sorted(set(declared) - set(TOPIC_TYPES))
        wrong = sorted(t for t in set(declared) & set(TOPIC_TYPES) if declared[t] != TOPIC_TYPES[t])
        raise StreamsFileError(
            f"{path}: inbound topics differ from the contract (EVENTS.md): "
            f"missing {missing}, unknown {unknown}, other message types on {wrong}"
        )
    for topic in streams.inbound:
        if topic.key not in _KEYS:
            raise StreamsFileError(f"{path}: {topic.topic} is keyed by {topic.key!r}, not one of {sorted(_KEYS)}")
    expected = {
        "points_events": POINTS_EVENTS_TOPIC,
        "balances": BALANCES_TOPIC,
        "dead_letter": DEAD_LETTER_TOPIC,
        "member_preferences": PREFERENCES_TOPIC,
    }
    for name, topic in expected.items():
        if getattr(streams, name).topic != topic:
            raise StreamsFileError(f"{path}: outbound {name} must be {topic!r}")
    # The notifier's tables are keyed by msisdn and written from the partition of the record in hand, so
    # its three inbound topics must have one partition count (faust's co-partitioning).
    copartitioned = (streams.points_events, streams.member_preferences, streams.notifier_ticks)
    if len({t.partitions for t in copartitioned}) != 1:
        raise StreamsFileError(
            f"{path}: the notifier's topics must have one partition count: "
            + ", ".join(f"{t.topic} {t.partitions}" for t in copartitioned)
        )
    for compacted in (streams.balances, streams.member_preferences):
        if compacted.cleanup_policy != "compact":
            raise StreamsFileError(f"{path}: {compacted.topic} must be compacted (cleanup_policy: compact)")
