"""The rule set: rates, thresholds, settlement days and expiry length.

Loaded from a versioned TOML file whose defaults are RULES.md. The domain
model receives a `RuleSet` and never reads files or settings itself.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path


class RulesFileError(ValueError):
    """The rules file is missing a setting or has a value out of range."""


@dataclass(frozen=True)
class CardTier:
    spend_below: Decimal | None  # None: no upper bound
    rubles_per_point: Decimal


@dataclass(frozen=True)
class RuleSet:
    version: str
    usage_rubles_per_point: Decimal
    shop_branded_rubles_per_point: Decimal
    shop_other_rubles_per_point: Decimal
    mgts_rubles_per_point: Decimal
    mgts_settlement_day: int
    card_settlement_day: int
    card_tiers: tuple[CardTier, ...]
    ballyplus_points_per_partner_point: int
    expiry_months: int
    transfer_minimum_points: int
    transfer_acceptance_hours: int

    def card_rubles_per_point(self, previous_month_spend: Decimal) -> Decimal:
        """Rule 5: the rate of a month, set by the spend of the month before."""
        for tier in self.card_tiers:
            if tier.spend_below is None or previous_month_spend < tier.spend_below:
                return tier.rubles_per_point
        raise AssertionError("the last card tier has no upper bound")


def points_for(amount: Decimal, rubles_per_point: Decimal) -> int:
    """floor(amount / rate): whole points, rounded down, never negative."""
    if amount <= 0:
        return 0
    return int(amount // rubles_per_point)


def load_rules(path: Path | None = None) -> RuleSet:
    """The rule set from `path`, or the shipped default (RULES.md)."""
    if path is None:
        text = resources.files("engine.rulesets").joinpath("default.toml").read_text("utf-8")
        source = "default.toml"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as error:
            raise RulesFileError(f"cannot read rules file {path}: {error}") from error
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RulesFileError(f"{source}: not valid TOML: {error}") from error
    try:
        return _parse(data)
    except (KeyError, TypeError, ValueError, ArithmeticError) as error:
        raise RulesFileError(f"{source}: {error!r}") from error


def _money(value: object) -> Decimal:
    if not isinstance(value, str):
        raise RulesFileError(f"money must be written as a string, got {value!r}")
    amount = Decimal(value)
    if amount <= 0:
        raise RulesFileError(f"a rate must be positive, got {value!r}")
    return amount


def _day(value: object) -> int:
    if not isinstance(value, int) or not 1 <= value <= 28:
        raise RulesFileError(f"a settlement day must be 1..28, got {value!r}")
    return value


def _parse(data: dict) -> RuleSet:
    tiers = []
    for raw in data["card"]["tiers"]:
        bound = raw.get("spend_below")
        tiers.append(CardTier(None if bound is None else _money(bound), _money(raw["rubles_per_point"])))
    if not tiers or tiers[-1].spend_below is not None:
        raise RulesFileError("card tiers: the last tier must have no spend_below")
    if any(t.spend_below is None for t in tiers[:-1]):
        raise RulesFileError("card tiers: only the last tier may have no spend_below")
    bounds = [t.spend_below for t in tiers[:-1] if t.spend_below is not None]  # all of them (checked above)
    if bounds != sorted(bounds):
        raise RulesFileError("card tiers must be in ascending order of spend_below")
    if data.get("time_zone", "Europe/Moscow") != "Europe/Moscow":
        raise RulesFileError("the programme calendar is Europe/Moscow")
    return RuleSet(
        version=str(data["version"]),
        usage_rubles_per_point=_money(data["usage"]["rubles_per_point"]),
        shop_branded_rubles_per_point=_money(data["shop"]["mts_branded_rubles_per_point"]),
        shop_other_rubles_per_point=_money(data["shop"]["other_rubles_per_point"]),
        mgts_rubles_per_point=_money(data["mgts"]["rubles_per_point"]),
        mgts_settlement_day=_day(data["mgts"]["settlement_day"]),
        card_settlement_day=_day(data["card"]["settlement_day"]),
        card_tiers=tuple(tiers),
        ballyplus_points_per_partner_point=int(data["ballyplus"]["points_per_partner_point"]),
        expiry_months=int(data["expiry"]["months"]),
        transfer_minimum_points=int(data["transfers"]["minimum_points"]),
        transfer_acceptance_hours=int(data["transfers"]["acceptance_hours"]),
    )
