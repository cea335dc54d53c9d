"""The rule set comes from a versioned file whose defaults are RULES.md."""
from __future__ import annotations

from decimal import Decimal
from importlib import resources

import pytest

from accrual.runtime import Runtime
from engine.rules import RulesFileError, load_rules
from tests.conftest import settings_for
from tests.programme import Programme


def test_the_default_rules_are_the_contract():
    rules = load_rules()
    assert rules.usage_rubles_per_point == Decimal(5)
    assert (rules.shop_branded_rubles_per_point, rules.shop_other_rubles_per_point) == (Decimal(3), Decimal(30))
    assert (rules.mgts_rubles_per_point, rules.mgts_settlement_day) == (Decimal(5), 15)
    assert rules.card_settlement_day == 25
    assert rules.card_rubles_per_point(Decimal("9999.99")) == Decimal(30)
    assert rules.card_rubles_per_point(Decimal("10000")) == Decimal(20)
    assert rules.card_rubles_per_point(Decimal("29999.99")) == Decimal(20)
    assert rules.card_rubles_per_point(Decimal("30000")) == Decimal(10)
    assert rules.expiry_months == 12


def test_an_operator_file_changes_the_rate(tmp_path, sqlite_url):
    text = (resources.files("engine.rulesets") / "default.toml").read_text()
    custom = tmp_path / "rules.toml"
    custom.write_text(text.replace('version = "2026.1-default"', 'version = "2027.1-double-usage"')
                      .replace('[usage]            # rule 2: 1 point per 5 rubles, per member and calendar month\n'
                               'rubles_per_point = "5"',
                               '[usage]\nrubles_per_point = "2.5"'))
    with Runtime(settings_for(sqlite_url, ACCRUAL_RULES_FILE=str(custom))) as runtime:
        assert runtime.app.rules.version == "2027.1-double-usage"
        programme = Programme(runtime)
        programme.enroll("79990000001", "2026-01-01 00:00")
        programme.usage("79990000001", "10.00", "2026-01-05")
        assert programme.balance("79990000001") == 4  # floor(10 / 2.5)


@pytest.mark.parametrize(
    "change, complaint",
    [
        (('rubles_per_point = "5"\n\n[shop]', 'rubles_per_point = 5\n\n[shop]'), "string"),
        (("settlement_day = 15", "settlement_day = 31"), "1..28"),
        (('{ rubles_per_point = "10" },', '{ spend_below = "90000", rubles_per_point = "10" },'), "last tier"),
    ],
)
def test_a_bad_rules_file_is_refused_with_the_reason(tmp_path, change, complaint):
    text = (resources.files("engine.rulesets") / "default.toml").read_text()
    assert change[0] in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(change[0], change[1]))
    with pytest.raises(RulesFileError, match=complaint):
        load_rules(bad)
