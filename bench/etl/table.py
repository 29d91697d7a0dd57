"""The ETL results: one markdown table, a row per (data set, tool) plus the objmount/rclone ratio.

Every figure is the median over the repeats of that row's measures. Ratios
are speed over speed (above 1.0 objmount is faster); for the no-op rerun, the
inverse of the times.
"""

import statistics
from collections.abc import Callable

from bench.etl.runs import Measure

COLUMNS = ("data set", "tool", "load (s)", "files/s", "MB/s", "load CPU (s)",
           "no-op rerun (s)", "rerun CPU (s)", "checks")


def _median(measures: list[Measure], figure: Callable[[Measure], float]) -> float:
    return statistics.median(figure(m) for m in measures)


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _row(data: str, tool: str, measures: list[Measure]) -> list[str]:
    bad = sum(1 for m in measures if m.problems)
    checks = f"{len(measures) - bad}/{len(measures)} ok" if not bad else f"**{bad} failed**"
    return [data, tool, _num(_median(measures, lambda m: m.load.wall_s)),
            _num(_median(measures, Measure.files_per_s)), _num(_median(measures, Measure.mb_per_s)),
            _num(_median(measures, lambda m: m.load.cpu_s)),
            _num(_median(measures, lambda m: m.rerun.wall_s)),
            _num(_median(measures, lambda m: m.rerun.cpu_s)), checks]


def _ratio_row(data: str, ours: list[Measure], theirs: list[Measure]) -> list[str]:
    def ratio(figure: Callable[[Measure], float], inverse: bool = False) -> str:
        a, b = _median(ours, figure), _median(theirs, figure)
        return f"**{(b / a if inverse else a / b):.2f}x**"

    return [data, "objmount / rclone", "", ratio(Measure.files_per_s), ratio(Measure.mb_per_s),
            "", ratio(lambda m: m.rerun.wall_s, inverse=True), "", ""]


def table(measures: list[Measure]) -> str:
    """The markdown table of `measures` (data sets and tools in the order first measured)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for data in dict.fromkeys(m.data for m in measures):
        by_tool = {tool: [m for m in measures if m.data == data and m.tool == tool]
                   for tool in dict.fromkeys(m.tool for m in measures if m.data == data)}
        rows = [_row(data, tool, ms) for tool, ms in by_tool.items()]
        if "objmount" in by_tool and "rclone" in by_tool:
            rows.append(_ratio_row(data, by_tool["objmount"], by_tool["rclone"]))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def problems(measures: list[Measure], limit: int = 5) -> list[str]:
    """The first few problems of each failed measure, for the report."""
    return [f"{m.tool} {m.data}: {p}" for m in measures for p in m.problems[:limit]]
