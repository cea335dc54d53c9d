"""streams.yaml agrees with the contract, and a file that does not is refused."""
from __future__ import annotations

import pytest

from accrual.streams import DEFAULT_FILE, StreamsFileError, load_streams
from schemas import TOPIC_TYPES


def test_the_shipped_streams_file_declares_every_contract_topic():
    streams = load_streams()
    assert {t.topic: frozenset(t.types) for t in streams.inbound} == TOPIC_TYPES
    assert streams.balances.cleanup_policy == "compact"
    assert streams.dead_letter.topic == "loyalty.dead-letter.v1"
    assert streams.consumer_group


@pytest.mark.parametrize(
    "old, new, complaint",
    [
        ("types: [usage_charged]", "types: [usage_charged, card_purchase]", "other message types"),
        ("topic: mts.usage.v1", "topic: mts.usage.v2", "missing"),
        ("cleanup_policy: compact", "cleanup_policy: delete", "compacted"),
        ("partitions: 3", "partitions: 0", "positive"),
        ("key: mgts_account", "key: account", "keyed by"),
    ],
)
def test_a_streams_file_that_disagrees_with_the_contract_is_refused(tmp_path, old, new, complaint):
    text = DEFAULT_FILE.read_text()
    assert old in text
    bad = tmp_path / "streams.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(StreamsFileError, match=complaint):
        load_streams(bad)
