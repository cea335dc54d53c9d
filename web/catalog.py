"""The rewards catalogue and the special offers, loaded from TOML files
(`ACCRUAL_CATALOG_FILE`, `ACCRUAL_OFFERS_FILE`; the shipped defaults are in
web/data/). The programme's categories are those the seed names."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path

CATEGORIES = {
    "communication": "Услуги связи",
    "ringback": "Мелодии вместо гудков",
    "gadgets": "Техника",
    "entertainment": "Развлечения",
    "partners": "Предложения партнёров",
    "books": "МТС Книги",
    "games": "Игры",
    "mgts": "МГТС",
    "bank": "МТС Банк",
}
PRICE_MAX = 10_000_000
# How a member gets a gift of each category, unless its entry in the
# catalogue file says otherwise (`delivery = "..."`).
DELIVERY = {
    "communication": "Пакет подключится на ваш номер в течение часа; о подключении придёт SMS.",
    "ringback": "Услуга подключится на ваш номер в течение часа; мелодию можно выбрать в приложении «Гудок».",
    "gadgets": "Заберите заказ в салоне МТС, назвав номер заказа и показав паспорт; он ждёт 14 дней.",
    "entertainment": "Код активации придёт по SMS в течение часа.",
    "partners": "Промокод партнёра придёт по SMS в течение часа.",
    "books": "Подписка подключится к вашему номеру в МТС Книгах в течение часа.",
    "games": "Код активации придёт по SMS в течение часа.",
    "mgts": "Скидка будет учтена в ближайшем счёте МГТС.",
    "bank": "Бонус появится в приложении МТС Банка в течение суток.",
}


class CatalogFileError(ValueError):
    """The catalogue or offers file is not what the loader expects."""


@dataclass(frozen=True)
class Reward:
    item_id: str
    category: str
    title: str
    points: int
    description: str
    delivery: str = ""  # how the member gets it; the category's default when empty

    @property
    def category_title(self) -> str:
        return CATEGORIES[self.category]

    @property
    def how_to_get(self) -> str:
        return self.delivery or DELIVERY[self.category]


@dataclass(frozen=True)
class Offer:
    offer_id: str
    title: str
    text: str
    valid_from: date
    valid_to: date  # inclusive

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_to


def _load(path: Path | None, default: str) -> dict:
    try:
        if path is None:
            text = resources.files("web.data").joinpath(default).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise CatalogFileError(f"{path or default}: {error}") from error


def load_catalog(path: Path | None = None) -> dict[str, Reward]:
    data = _load(path, "catalog.toml")
    rewards: dict[str, Reward] = {}
    try:
        for raw in data["rewards"]:
            reward = Reward(str(raw["id"]), raw["category"], raw["title"], raw["points"], raw.get("description", ""),
                            raw.get("delivery", ""))
            if reward.category not in CATEGORIES:
                raise CatalogFileError(f"reward {reward.item_id}: unknown category {reward.category!r}")
            if not isinstance(reward.points, int) or not 0 < reward.points <= PRICE_MAX:
                raise CatalogFileError(f"reward {reward.item_id}: the price is a whole number of points above 0")
            if reward.item_id in rewards:
                raise CatalogFileError(f"reward {reward.item_id} appears twice")
            rewards[reward.item_id] = reward
    except (KeyError, TypeError) as error:
        raise CatalogFileError(f"catalogue: missing or wrong field {error}") from error
    return rewards


def load_offers(path: Path | None = None) -> list[Offer]:
    data = _load(path, "offers.toml")
    try:
        offers = [
            Offer(str(raw["id"]), raw["title"], raw.get("text", ""), raw["valid_from"], raw["valid_to"])
            for raw in data["offers"]
        ]
    except (KeyError, TypeError) as error:
        raise CatalogFileError(f"offers: missing or wrong field {error}") from error
    for offer in offers:
        if not (isinstance(offer.valid_from, date) and isinstance(offer.valid_to, date)):
            raise CatalogFileError(f"offer {offer.offer_id}: valid_from and valid_to are dates (YYYY-MM-DD)")
    return offers
