"""The run's spend over time, drawn from the metrics alone (docs/img/cluster-spend.svg)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_kling.testing.statsd import StatsdListener
    from kling_cluster.observations import Observations


def spend_chart(statsd: StatsdListener, seen: Observations) -> str:
    """An SVG of the run's spend over time, drawn from the metrics alone: paid submits and cost, cumulative."""
    width, height, left, top, bottom = 640, 260, 50, 30, 40
    ours = sorted(statsd.ours())
    submits = [(at - seen.started, value) for at, name, value, kind in ours if name == "kling.submitted"]
    costs = [(at - seen.started, value) for at, name, value, kind in ours if name == "kling.cost" and kind == "g"]
    end = max([at for at, _ in submits + costs] + [1.0])

    def path(points: list[tuple[float, float]], color: str) -> str:
        total, drawn, peak = 0.0, [], sum(v for _, v in points) or 1.0
        for at, value in points:
            total += value
            x = left + (width - left - 10) * at / end
            y = height - bottom - (height - top - bottom) * total / peak
            drawn.append(f"{x:.1f},{y:.1f}")
        return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(drawn)}"/>'

    paid, spent = sum(v for _, v in submits), sum(v for _, v in costs)
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            'font-family="Helvetica, Arial, sans-serif" font-size="12">',
            f'<rect width="{width}" height="{height}" fill="#fff"/>',
            f'<text x="{left}" y="18" font-weight="bold">Spend over the run, from the metrics alone</text>',
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#999"/>',
            f'<text x="{left}" y="{height - 12}">0 s</text>',
            f'<text x="{width - 10}" y="{height - 12}" text-anchor="end">{end:.0f} s</text>',
            path(submits, "#7a4fb5"),
            path(costs, "#3f8f3f"),
            f'<text x="{left + 10}" y="{top + 16}" fill="#7a4fb5">kling.submitted: {paid:.0f} paid submits</text>',
            f'<text x="{left + 10}" y="{top + 32}" fill="#3f8f3f">kling.cost: {spent:.2f} reported</text>',
            "</svg>",
        ]
    )
