"""Charts for admins, drawn with matplotlib's Agg backend (no display; optional extra)."""

from __future__ import annotations

from pathlib import Path

import click

WIDTH_IN, HEIGHT_IN, DPI = 10, 5, 100  # a 1000 x 500 pixel PNG (an SVG of 720 x 360 pt)


def stacked_bars(
    path: Path,
    title: str,
    keys: list[str],
    series: list[str],
    values: dict[str, dict[str, int]],
    legend: str | None = "outcome",
) -> None:
    """One bar per key, stacked by series (outcome), written as PNG or SVG by extension; the
    legend, titled ``legend``, is left out when that is ``None``."""
    try:
        import matplotlib
    except ImportError as exc:
        raise click.ClickException(
            "charts need matplotlib: pip install 'citizen-lookup[charts]' (scripts/bootstrap does)"
        ) from exc
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    axes = figure.subplots()
    bottoms = [0] * len(keys)
    positions = list(range(len(keys)))
    for name in series:
        heights = [values[key].get(name, 0) for key in keys]
        axes.bar(positions, heights, bottom=bottoms, label=name)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    axes.set_xticks(positions, keys, rotation=45 if len(keys) > 6 else 0, ha="right")
    axes.set_title(title)
    axes.set_ylabel("count")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 2.5 lookups
    if series and legend is not None:
        axes.legend(title=legend, fontsize="small")
    figure.tight_layout()
    figure.savefig(path, format=path.suffix.lower().lstrip("."), dpi=DPI)
