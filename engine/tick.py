"""The daily close (rule 9): at 00:00 Moscow of a date, settle the MGTS
periods and card months due, return the transfers whose acceptance window
ran out, then expire lots, in that order (so points that come back expire in
the same tick if their lots have), and last mark the day closed for the
books (engine/closed_day.py). The same tick twice changes nothing.

The read models find the aggregates with work (`TickAgenda`); the aggregates
decide what the work is. Work is done in steps of `chunk_size` aggregates,
each one unit of work: a step that loses a race with another writer (the
personal account spending points) runs again and does what is still due.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Iterable, Protocol

from engine.calendar import midnight, settlement_date
from engine.closed_day import ClosedDay
from engine.ids import closed_day_id, member_id, mgts_account_id
from engine.messages import Report
from engine.unit_of_work import UnitOfWork


class TickAgenda(Protocol):
    """Read models that tell a tick which aggregates have work."""

    def refresh(self) -> None: ...
    def card_months_due(self, as_of: date) -> list[tuple[str, str]]: ...
    def mgts_periods_due(self, as_of: date) -> list[tuple[str, str]]: ...
    def members_with_expiring_lots(self, as_of: date) -> list[str]: ...
    def transfers_due(self, as_of: date) -> list[str]: ...


def tick(app: Any, as_of: date, agenda: TickAgenda, chunk_size: int = 500) -> Report:
    report = Report()
    agenda.refresh()
    at = midnight(as_of)
    for chunk in _chunks(agenda.mgts_periods_due(as_of), chunk_size):
        report.add(app.run(lambda uow, chunk=chunk: _settle_mgts(uow, chunk, at)))
    for chunk in _chunks(agenda.card_months_due(as_of), chunk_size):
        report.add(app.run(lambda uow, chunk=chunk: _settle_cards(uow, chunk, at)))
    for transfer_id in agenda.transfers_due(as_of):
        report.returned_transfers += app.return_lapsed_transfer(transfer_id, at)
    agenda.refresh()
    for chunk in _chunks(agenda.members_with_expiring_lots(as_of), chunk_size):
        report.add(app.run(lambda uow, chunk=chunk: _expire(uow, chunk, as_of)))
    report.add(app.run(lambda uow: _close_day(uow, as_of, at)))
    agenda.refresh()
    return report


def _settle_mgts(uow: UnitOfWork, due: list[tuple[str, str]], at: datetime) -> Report:
    rules = uow.rules
    uow.load([mgts_account_id(account) for account, _ in due])
    uow.load([member_id(msisdn) for msisdn in _beneficiaries(uow, due)])  # the members they credit, at once
    for mgts_account, period in due:
        account = uow.get(mgts_account_id(mgts_account))
        if account is None or not account.needs_settlement(period):
            continue
        msisdn = account.beneficiary(period, rules)
        if msisdn is None:
            continue  # no link yet: the settlement waits (rule 4)
        member = uow.get(member_id(msisdn))
        if member is None or not member.is_enrolled:
            continue  # the linked member is not enrolled yet: it waits
        points = account.settle(period, msisdn, member.enrolled_at, rules, at)
        if points:
            member.credit_mgts(mgts_account, period, points, rules, at)
        uow.report.settled += 1
    return uow.report


def _beneficiaries(uow: UnitOfWork, due: list[tuple[str, str]]) -> set[str]:
    found = set()
    for mgts_account, period in due:
        account = uow.get(mgts_account_id(mgts_account))
        msisdn = None if account is None else account.beneficiary(period, uow.rules)
        if msisdn is not None:
            found.add(msisdn)
    return found


def _settle_cards(uow: UnitOfWork, due: list[tuple[str, str]], at: datetime) -> Report:
    rules = uow.rules
    uow.load([member_id(msisdn) for msisdn, _ in due])
    for msisdn, month in sorted(due):
        assert midnight(settlement_date(month, rules.card_settlement_day)) <= at
        member = uow.get(member_id(msisdn))
        assert member is not None and member.is_enrolled, "card spend is recorded only for members"
        member.settle_card_month(month, rules, at)
        uow.report.settled += 1
    return uow.report


def _expire(uow: UnitOfWork, msisdns: list[str], as_of: date) -> Report:
    uow.load([member_id(msisdn) for msisdn in msisdns])
    for msisdn in msisdns:
        member = uow.get(member_id(msisdn))
        if member is not None:
            uow.report.expired_points += member.expire(as_of)
    return uow.report


def _close_day(uow: UnitOfWork, as_of: date, at: datetime) -> Report:
    """The mark that closes the books' period (engine/closed_day.py), after
    everything else the tick did; once per date."""
    if uow.get(closed_day_id(as_of)) is None:
        uow.add(ClosedDay.close(as_of, at))
    return uow.report


def _chunks(items: Iterable, size: int) -> Iterable[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

