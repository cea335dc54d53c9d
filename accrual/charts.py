"""Pictures of the books where people look rather than read (docs/books.md):
the liability rolled forward month by month, and the cohorts' breakage.
matplotlib is an optional extra (`pip install 'accrual[charts]'`); the
format follows the file's suffix, `.png` or `.svg`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from projections.books import BROKEN_DOWN, Period

FORMATS = (".png", ".svg")
RULE_COLOURS = {"usage": "#e30611", "shop": "#ff8a8f", "mgts": "#7a0c12", "card": "#3d3d3d", "ballyplus": "#a8a8a8"}
OUT_COLOURS = {"redeemed": "#1f6fb2", "clawed_back": "#f0a400", "expired": "#6b6b6b"}
ADJUSTED_COLOUR = "#8e44ad"


class ChartError(ValueError):
    """The chart cannot be drawn as asked (the message says why)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ChartError("charts need matplotlib: pip install 'accrual[charts]'") from error
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def check_target(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise ChartError(f"{path.name}: the chart is drawn as .png or .svg")


def liability(months: list[Period], path: Path) -> None:
    """Issued points by rule above the axis, redeemed, clawed back and
    expired below it, the net adjustments on whichever side they fall,
    month by month; the closing liability as a line."""
    check_target(path)
    plt = _pyplot()
    labels = [_month_label(p) for p in months]
    x = range(len(months))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.55 * len(months) + 2), 4.8), dpi=110)
    bottom = [0] * len(months)
    for rule in BROKEN_DOWN["issued"]:
        values = [p.movements["issued"].get(rule, 0) for p in months]
        axis.bar(x, values, bottom=bottom, color=RULE_COLOURS.get(rule), label=f"issued: {rule}")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    below = [0] * len(months)
    for measure, colour in OUT_COLOURS.items():
        values = [-p.total(measure) for p in months]
        axis.bar(x, values, bottom=below, color=colour, label=measure.replace("_", " "))
        below = [b + v for b, v in zip(below, values, strict=True)]
    # The staff's adjustments, net for the month: on top of the credits when
    # they added points, under the debits when they took them.
    adjusted = [p.total("adjusted") for p in months]
    if any(adjusted):
        axis.bar(x, adjusted, bottom=[b if a > 0 else w for a, b, w in zip(adjusted, bottom, below, strict=True)],
                 color=ADJUSTED_COLOUR, label="adjusted (net)")
    axis.axhline(0, color="black", linewidth=0.6)
    axis.set_ylabel("points moved in the month")
    closing = axis.twinx()
    closing.plot(list(x), [p.closing for p in months], color="black", marker="o", linewidth=1.6, label="closing")
    closing.set_ylabel("closing liability, points")
    closing.set_ylim(bottom=0)
    axis.set_xticks(list(x), labels, rotation=45, ha="right")
    axis.set_title("Points liability by month")
    handles, names = axis.get_legend_handles_labels()
    more, more_names = closing.get_legend_handles_labels()
    axis.legend(handles + more, names + more_names, fontsize="small", loc="upper left", ncol=2)
    _save(plt, figure, path)


def breakage(rows: list[dict[str, Any]], path: Path) -> None:
    """Each cohort's issued points split into what became of them; the
    breakage rate of the closed cohorts above their bars."""
    check_target(path)
    plt = _pyplot()
    x = range(len(rows))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.55 * len(rows) + 2), 4.8), dpi=110)
    bottom = [0] * len(rows)
    for field, colour in (("redeemed", "#1f6fb2"), ("clawed_back", "#f0a400"), ("expired", "#6b6b6b"),
                          ("in_transfer", "#9bd0ff"), ("outstanding", "#e30611")):
        values = [row[field] for row in rows]
        axis.bar(x, values, bottom=bottom, color=colour, label=field.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, row in enumerate(rows):
        if row["breakage_rate"] is not None:
            axis.annotate(f"{float(row['breakage_rate']) * 100:.0f} %", (i, row["issued"]), ha="center",
                          va="bottom", fontsize="x-small")
    axis.set_xticks(list(x), [row["cohort"] for row in rows], rotation=45, ha="right")
    axis.set_ylabel("points issued in the cohort")
    axis.set_title("What became of each month's points (breakage of closed cohorts above)")
    axis.legend(fontsize="small", loc="upper left")
    _save(plt, figure, path)


def _month_label(period: Period) -> str:
    """A month row ends on the first day of the next month: label it by the month it covers."""
    from datetime import timedelta

    day = period.period_end - timedelta(days=1)
    return f"{day.year:04d}-{day.month:02d}"


def _save(plt: Any, figure: Any, path: Path) -> None:
    figure.tight_layout()
    # a fixed date and no software version in the file: the same books give the same bytes
    metadata = {"Date": None} if path.suffix.lower() == ".svg" else {"Software": None}
    figure.savefig(path, format=path.suffix.lower()[1:], metadata=metadata)
    plt.close(figure)
