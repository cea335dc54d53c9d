"""Issue 14, first step: every message of `loyalty.points-events.v1` carries
the lots its event changed (`lots`: lot id, lot date, expiry, signed
points, opened | returned | taken), so that a subscriber can know every
member's lots without asking the database.

Lots are made with Баллы Плюс transfers (1 partner point = 1 point, lot date
= the event's day, expiry 12 months later), so every number is by hand.
Anna has lot 1: 20 points 2026-03-05 → 2027-03-05 (credited first) and
lot 2: 10 points 2026-01-10 → 2027-01-10 (credited second, expires first)."""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from datetime import date, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from accrual.intake import inbound_from_line
from accrual.publisher import Publisher
from accrual.runtime import Runtime
from engine.calendar import MOSCOW
from schemas import PointsEventMessage
from schemas.export import export_json_schemas
from tests.conftest import SAMPLE, settings_for
from tests.kafka_support import names_for, publish_to_kafka, read_topic
from tests.programme import RECEIVED_AT, Programme

ANNA, BORIS = "79990002001", "79990002002"
A_LOT_1 = (1, "2026-03-05", "2027-03-05")  # (lot id, lot date, expiry)
A_LOT_2 = (2, "2026-01-10", "2027-01-10")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MOSCOW)


def given_anna(p: Programme) -> Programme:
    p.enroll(ANNA, "2026-01-01 00:00")
    p.ballyplus(ANNA, 20, "2026-03-05 10:00")
    p.ballyplus(ANNA, 10, "2026-01-10 10:00")
    return p


@pytest.fixture
def anna(programme) -> Programme:
    return given_anna(programme)


def publish(runtime: Runtime, publisher: Publisher | None = None) -> list[PointsEventMessage]:
    """What the publisher maps the rest of the log to (as the leader does
    between sends, without Kafka): its points events, read back."""
    publisher = publisher or Publisher(runtime.app, runtime.db, names_for("lots."))
    messages = []
    while True:
        records, commit, _ = publisher.read_chunk()
        if not records:
            return messages
        commit()
        messages += [PointsEventMessage.model_validate_json(r.value) for r in records
                     if r.topic == publisher.names.points_events]


def lots_of(messages: list[PointsEventMessage], event_type: str, msisdn: str = ANNA) -> list[list[tuple]]:
    """(lot id, lot date, expiry, points, change) of each message of that type."""
    return [[(c.lot_id, c.lot_date.isoformat(), c.expires_on.isoformat(), c.points, c.change) for c in m.lots]
            for m in messages if m.event_type == event_type and m.msisdn == msisdn]


def fold(messages: list[PointsEventMessage]) -> dict[tuple[str, int], tuple[str, str, int]]:
    """What a subscriber keeps: (msisdn, lot id) -> (lot date, expiry, points
    left), from the messages alone; a lot that empties leaves."""
    lots: dict[tuple[str, int], tuple[str, str, int]] = {}
    for m in messages:
        for c in m.lots:
            key = (m.msisdn, c.lot_id)
            dates = (c.lot_date.isoformat(), c.expires_on.isoformat())
            if key in lots:
                assert lots[key][:2] == dates, f"{key}: a lot keeps its dates"
            left = (lots[key][2] if key in lots else 0) + c.points
            assert left >= 0, f"{key}: a lot never goes below zero"
            if left:
                lots[key] = (*dates, left)
            else:
                lots.pop(key, None)
    return lots


def read_model_lots(runtime: Runtime) -> dict[tuple[str, int], tuple[str, str, int]]:
    runtime.projector.catch_up()
    return {(m, int(i)): (d, e, int(r)) for m, i, d, e, r in runtime.db.query(
        f"SELECT msisdn, lot_id, lot_date, expires_on, remaining FROM {runtime.projector.names.lots} "
        "WHERE remaining > 0")}


# -- each kind of event ---------------------------------------------------------------------------


def test_a_credit_carries_its_new_lot(anna):
    accrued = lots_of(publish(anna.runtime), "PointsAccrued")
    assert accrued == [[(*A_LOT_1, 20, "opened")], [(*A_LOT_2, 10, "opened")]]


def test_a_redemption_carries_its_draws_with_the_lots_dates(anna):
    anna.runtime.app.debit(ANNA, 15, purpose="order", idempotency_key="k-1", reference={}, at=at("2026-04-01T12:00"))
    messages = publish(anna.runtime)
    # 15 points: the 10 of lot 2 (expires first), then 5 of lot 1
    assert lots_of(messages, "PointsRedeemed") == [[(*A_LOT_2, -10, "taken"), (*A_LOT_1, -5, "taken")]]
    assert messages[-1].points == -15


def test_an_expiry_carries_what_it_took_with_the_lots_dates(anna):
    # the expiry names only lot ids: the dates come from the publisher's own table
    publish(anna.runtime)
    anna.tick("2027-01-10")
    assert lots_of(publish(anna.runtime), "PointsExpired") == [[(*A_LOT_2, -10, "taken")]]


def test_a_clawback_carries_what_it_took_and_not_what_it_could_not_collect(programme):
    # a receipt of mts_branded 30.00 on 2026-01-10: floor(30/3) = 10 points in lot 1, expired on 2027-01-10;
    # then 3 Баллы Плюс points on 2027-01-12 in lot 2; the receipt returned: 10 due, min(10, 3) = 3 taken
    programme.enroll(ANNA, "2026-01-01 00:00")
    programme.purchase(ANNA, "R1", [("1", "mts_branded", "30.00")], "2026-01-10 10:00")
    programme.tick("2027-01-10")
    programme.ballyplus(ANNA, 3, "2027-01-12 10:00")
    programme.shop_return(ANNA, "R1", [("1", "30.00")], "2027-01-15 10:00")
    messages = publish(programme.runtime)
    assert lots_of(messages, "PointsExpired") == [[(1, "2026-01-10", "2027-01-10", -10, "taken")]]
    assert lots_of(messages, "PointsClawedBack") == [[(2, "2027-01-12", "2028-01-12", -3, "taken")]]
    # the 7 uncollected move no lot and are not in `points` either
    clawback = next(m for m in messages if m.event_type == "PointsClawedBack")
    assert (clawback.points, clawback.balance_after) == (-3, 0)
    assert programme.uncollected(ANNA) == 7


def test_a_cancellation_carries_the_points_back_into_the_same_lots(anna):
    app = anna.runtime.app
    debit = app.debit(ANNA, 30, purpose="order", idempotency_key="k-1", reference={}, at=at("2026-04-01T12:00"))
    app.cancel_debit(ANNA, debit.debit_id, at=at("2026-04-02T12:00"))
    messages = publish(anna.runtime)
    assert lots_of(messages, "PointsRedeemed") == [[(*A_LOT_2, -10, "taken"), (*A_LOT_1, -20, "taken")]]
    # both lots had emptied: they come back, with their dates
    assert lots_of(messages, "PointsRestored") == [[(*A_LOT_2, 10, "returned"), (*A_LOT_1, 20, "returned")]]
    assert fold(messages) == {(ANNA, 1): (*A_LOT_1[1:], 20), (ANNA, 2): (*A_LOT_2[1:], 10)}


def test_a_declined_transfer_carries_the_points_back_into_the_senders_same_lots(anna):
    anna.enroll(BORIS, "2026-01-01 00:00")
    app = anna.runtime.app
    transfer = app.offer_transfer(ANNA, BORIS, 30, idempotency_key="t-1", at=at("2026-06-10T15:00"))
    app.decline_transfer(transfer.transfer_id, BORIS, at=at("2026-06-10T16:00"))
    messages = publish(anna.runtime)
    out, returned = (lots_of(messages, t) for t in ("PointsTransferred", "TransferReturned"))
    assert out == [[(*A_LOT_2, -10, "taken"), (*A_LOT_1, -20, "taken")]]
    assert returned == [[(*A_LOT_2, 10, "returned"), (*A_LOT_1, 20, "returned")]]
    assert lots_of(messages, "PointsTransferred", BORIS) == []


def test_an_accepted_transfer_opens_the_recipients_lots_with_the_senders_dates(anna):
    anna.enroll(BORIS, "2026-01-01 00:00")
    anna.ballyplus(BORIS, 3, "2026-05-01 10:00")  # Boris's lot 1
    app = anna.runtime.app
    transfer = app.offer_transfer(ANNA, BORIS, 15, idempotency_key="t-1", at=at("2026-06-10T15:00"))
    app.accept_transfer(transfer.transfer_id, BORIS, at=at("2026-06-11T14:59"))
    messages = publish(anna.runtime)
    # 15 = the 10 of Anna's lot 2 and 5 of her lot 1; Boris's next lots are 2 and 3, with her lots' dates
    assert lots_of(messages, "PointsTransferred", ANNA) == [[(*A_LOT_2, -10, "taken"), (*A_LOT_1, -5, "taken")]]
    assert lots_of(messages, "PointsTransferred", BORIS) == [
        [(2, "2026-01-10", "2027-01-10", 10, "opened"), (3, "2026-03-05", "2027-03-05", 5, "opened")]]
    assert [m.reason for m in messages if m.msisdn == BORIS and m.event_type == "PointsTransferred"] == ["in"]


def test_a_debit_adjustment_carries_its_draws(anna):
    anna.runtime.app.adjust(ANNA, -12, adjustment_id="d-1", reason="double credit", requested_by="olga",
                            approved_by="ivan", at=at("2026-04-03T10:00"))
    messages = publish(anna.runtime)
    # 12 points: the 10 of lot 2, then 2 of lot 1
    assert lots_of(messages, "PointsAdjusted") == [[(*A_LOT_2, -10, "taken"), (*A_LOT_1, -2, "taken")]]
    # the message's other fields are as they were (issue 13)
    adjusted = messages[-1]
    assert (adjusted.points, adjusted.rule, adjusted.lot_date, adjusted.expires_on) == (-12, None, None, None)


def test_events_that_move_no_lot_carry_an_empty_list(anna):
    messages = publish(anna.runtime)
    assert [(m.event_type, m.lots) for m in messages[:2]] == [("AccountOpened", ()), ("MemberEnrolled", ())]
    # and a credit keeps its own lot_date and expires_on beside `lots`
    assert (messages[2].lot_date, messages[2].expires_on) == (date(2026, 3, 5), date(2027, 3, 5))


# -- restarts, replays and stores of an earlier release -------------------------------------------


def test_a_store_from_before_the_lot_table_still_dates_every_draw(anna):
    # given a store whose publisher ran before this release: its position is at the end, its lot table empty
    publish(anna.runtime)
    with anna.runtime.db.transaction() as tx:
        tx.execute("DELETE FROM outbound_lots")
    # when lot 2 expires and then 5 points of lot 1 are spent
    anna.tick("2027-01-10")
    anna.runtime.app.debit(ANNA, 5, purpose="order", idempotency_key="k-1", reference={}, at=at("2027-01-11T12:00"))
    messages = publish(anna.runtime)
    # then the expiry is dated from Anna's account as it stood before it, and the table learnt her lots
    assert lots_of(messages, "PointsExpired") == [[(*A_LOT_2, -10, "taken")]]
    assert lots_of(messages, "PointsRedeemed") == [[(*A_LOT_1, -5, "taken")]]
    assert sorted(anna.runtime.db.query("SELECT lot_id, lot_date, expires_on FROM outbound_lots")) == [
        A_LOT_1, A_LOT_2]


@pytest.mark.parametrize("keep_the_lot_table", [True, False])
def test_a_replay_of_the_publisher_from_zero_publishes_the_same_lots(anna, keep_the_lot_table):
    app = anna.runtime.app
    first = publish(anna.runtime)
    anna.tick("2027-01-10")
    app.debit(ANNA, 5, purpose="order", idempotency_key="k-1", reference={}, at=at("2027-01-11T12:00"))
    first += publish(anna.runtime)
    with anna.runtime.db.transaction() as tx:
        tx.execute("UPDATE outbound_position SET position = 0")
        tx.execute("DELETE FROM outbound_balances")
        if not keep_the_lot_table:
            tx.execute("DELETE FROM outbound_lots")
    again = publish(anna.runtime)
    assert again == first
    assert fold(again) == {(ANNA, 1): (*A_LOT_1[1:], 15)}  # 20 - 5; lot 2 expired


def test_the_old_store_s_lots_are_dated_from_its_version_1_events_and_snapshots(tmp_path):
    # given the store of the release before events carried their effect (tests/test_upgrade.py), whose
    # publisher published all of it (its position and balances) and kept no lot dates
    from tests.test_upgrade import OLD_STORE

    shutil.copy(OLD_STORE / "accrual.sqlite3", tmp_path / "accrual.sqlite3")
    with Runtime(settings_for(f"sqlite:///{tmp_path / 'accrual.sqlite3'}")) as runtime:
        publisher = Publisher(runtime.app, runtime.db, names_for("lots."))
        before = publish(runtime, publisher)
        with runtime.db.transaction() as tx:
            tx.execute("DELETE FROM outbound_lots")
        # when a close far ahead expires every lot left
        assert runtime.tick(date(2030, 1, 1)).expired_points > 0
        after = publish(runtime, publisher)
        # then every draw has its lot's dates, as the read model has them, and nothing is left
        expired = [(m.msisdn, c.lot_id, c.lot_date.isoformat(), c.expires_on.isoformat())
                   for m in after if m.event_type == "PointsExpired" for c in m.lots]
        runtime.projector.catch_up()
        dates = {(m, int(i)): (d, e) for m, i, d, e in runtime.db.query(
            f"SELECT msisdn, lot_id, lot_date, expires_on FROM {runtime.projector.names.lots}")}
        assert expired and all(dates[(m, i)] == (d, e) for m, i, d, e in expired)
        assert fold(before) == {key: (*dates[key], left) for key, (_, _, left) in fold(before).items()}
        assert fold(before + after) == read_model_lots(runtime) == {}
        # (dated by reading the accounts, which the lot table learnt: no expiry opens a lot)
        assert runtime.db.query("SELECT COUNT(*) FROM outbound_lots")[0][0] >= len(expired)


# -- the whole sample -----------------------------------------------------------------------------


def test_over_the_sample_the_lots_add_up_to_the_points_and_fold_into_the_read_model(database_url):
    with Runtime(settings_for(database_url)) as runtime:
        publisher = Publisher(runtime.app, runtime.db, names_for("lots."))
        messages: list[PointsEventMessage] = []
        # published while the plan runs (a chunk per step), as the leader follows the log
        for command, argument in json.loads((SAMPLE / "plan.json").read_text()):
            if command == "ingest":
                lines = [line for line in (SAMPLE / argument).read_bytes().splitlines() if line.strip()]
                runtime.apply([[inbound_from_line(line, RECEIVED_AT) for line in lines]])
            else:
                runtime.tick(date.fromisoformat(argument))
            messages += publish(runtime, publisher)
        kinds: dict[str, set[str]] = defaultdict(set)
        for m in messages:
            assert sum(c.points for c in m.lots) == m.points, m
            kinds[m.event_type].update(c.change for c in m.lots)
        # the sample moves lots every way but back (it has no spending)
        assert kinds["PointsAccrued"] == {"opened"}
        assert kinds["PointsExpired"] == kinds["PointsClawedBack"] == {"taken"}
        assert fold(messages) == read_model_lots(runtime)
        assert sum(left for _, _, left in fold(messages).values()) == sum(runtime.reads.balances().values())


# -- on the topic: the real broker ----------------------------------------------------------------


class PointsEventMessageOfTheLastRelease(BaseModel):
    """What a consumer built before `lots` reads: the fields of issue 13."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    msisdn: str
    account_version: int
    event_type: str
    points: int
    rule: str | None
    reason: str | None
    source_event_id: str | None
    occurred_at: datetime
    lot_date: date | None
    expires_on: date | None
    balance_after: int


@pytest.mark.kafka
def test_the_topic_carries_the_lots_and_an_older_consumer_still_reads_it(kafka_bootstrap, kafka_prefix, sqlite_url):
    names = names_for(kafka_prefix)
    with Runtime(settings_for(sqlite_url)) as runtime:
        p = given_anna(Programme(runtime))
        p.enroll(BORIS, "2026-01-01 00:00")
        app = runtime.app
        debit = app.debit(ANNA, 12, purpose="order", idempotency_key="k-1", reference={}, at=at("2026-04-01T12:00"))
        transfer = app.offer_transfer(ANNA, BORIS, 8, idempotency_key="t-1", at=at("2026-06-10T15:00"))
        app.accept_transfer(transfer.transfer_id, BORIS, at=at("2026-06-11T14:59"))
        app.cancel_debit(ANNA, debit.debit_id, at=at("2026-06-12T12:00"))
        p.tick("2027-01-10")

        publish_to_kafka(runtime, names, kafka_bootstrap)
        expected = read_model_lots(runtime)
    values: list[dict[str, Any]] = [json.loads(r.value) for r in read_topic(kafka_bootstrap, names.points_events)]
    assert values and all("lots" in v for v in values), "always written, empty or not"
    messages = [PointsEventMessage.model_validate(v) for v in values]
    # Anna: 30 - 12 (10 of lot 2, 2 of lot 1) - 8 (of lot 1) + 12 back (10 into lot 2, 2 into lot 1) = 22,
    # then lot 2's 10 expire on 2027-01-10: lot 1 holds 20 - 2 - 8 + 2 = 12. Boris: lot 1, 8 points of Anna's lot 1.
    assert expected == {(ANNA, 1): (*A_LOT_1[1:], 12), (BORIS, 1): ("2026-03-05", "2027-03-05", 8)}
    assert fold(messages) == expected
    older = [PointsEventMessageOfTheLastRelease.model_validate_json(json.dumps(v)) for v in values]
    assert [(o.msisdn, o.account_version, o.points, o.balance_after) for o in older] == [
        (m.msisdn, m.account_version, m.points, m.balance_after) for m in messages]


# -- the contract ------------------------------------------------------------------------------------


def test_the_exported_json_schema_has_the_lots(tmp_path):
    export_json_schemas(tmp_path)  # what `accrual schemas export DIR` writes
    schema = json.loads((tmp_path / "points_event.schema.json").read_text(encoding="utf-8"))
    assert "lots" in schema["required"]
    assert schema["properties"]["lots"]["type"] == "array"
    change = schema["$defs"]["LotChange"]
    assert set(change["required"]) == {"lot_id", "lot_date", "expires_on", "points", "change"}
    assert change["properties"]["change"]["enum"] == ["opened", "returned", "taken"]
    assert change["properties"]["lot_date"]["format"] == change["properties"]["expires_on"]["format"] == "date"


def test_a_message_of_an_earlier_release_reads_as_moving_no_lot():
    earlier = {"msisdn": ANNA, "account_version": 3, "event_type": "PointsExpired", "points": -10,
               "occurred_at": "2027-01-10T00:00:00+03:00", "balance_after": 20}
    assert PointsEventMessage.model_validate(earlier).lots == ()
