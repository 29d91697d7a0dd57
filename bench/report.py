"""The results: one markdown table of figures, the objmount ratios, and the issue's targets.

Rows are configurations (each mount, the direct downloads, local disk);
columns are workload x pass (cold, warm). Every ratio is objmount's speed over
the other's (above 1.0 objmount is faster); listing time enters as 1/seconds.
A figure whose pass had any failed read or wrong byte is marked with the count of bad reads.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.workloads import WORKLOADS, Outcome, Workload

PASSES = ("cold", "warm")


@dataclass
class Row:
    """One configuration's outcomes, keyed `workload.key` then pass."""

    name: str
    kind: str  # objmount | rclone | s3fs | direct | local
    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    peak_rss_kib: int | None = None
    cpu_s: float = 0.0
    note: str = ""

    def set(self, workload: str, pass_name: str, outcome: Outcome) -> None:
        self.outcomes.setdefault(workload, {})[pass_name] = outcome

    def get(self, workload: str, pass_name: str) -> Outcome | None:
        return self.outcomes.get(workload, {}).get(pass_name)


def _speed(workload: Workload, outcome: Outcome | None) -> float | None:
    """Higher-is-better figure of a clean pass, or None (missing or with errors)."""
    if outcome is None or outcome.errors or outcome.seconds <= 0:
        return None
    return workload.figure(outcome)


def _cell(workload: Workload, outcome: Outcome | None) -> str:
    if outcome is None:
        return "-"
    if outcome.note:
        return outcome.note
    if workload.key == "ls":
        # A listing stopped by the time budget: its whole time, at the rate it went.
        seconds = outcome.seconds * outcome.planned / outcome.items if outcome.partial else (
            outcome.seconds)
        shown = f"{seconds:.2f} s"
    else:
        shown = _fmt(workload.figure(outcome))
    return shown + ("*" if outcome.partial else "") + (
        f" ({outcome.errors} bad)" if outcome.errors else "")


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _best(rows: list[Row], kinds: tuple[str, ...], workload: Workload,
          pass_name: str) -> tuple[float | None, str]:
    best: tuple[float | None, str] = (None, "")
    for row in rows:
        if row.kind in kinds:
            speed = _speed(workload, row.get(workload.key, pass_name))
            if speed is not None and (best[0] is None or speed > best[0]):
                best = (speed, row.name)
    return best


def table(rows: list[Row]) -> str:
    """The figures: one row per configuration, cold and warm per workload, peak RSS."""
    head = ["configuration"]
    for w in WORKLOADS:
        unit = "s" if w.key == "ls" else w.unit
        head += [f"{w.key} {p} ({unit})" for p in PASSES]
    head += ["peak RSS (MB)", "CPU (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.name]
        for w in WORKLOADS:
            cells += [_cell(w, row.get(w.key, p)) for p in PASSES]
        cells.append(f"{row.peak_rss_kib / 1024:.0f}" if row.peak_rss_kib else "-")
        cells.append(f"{row.cpu_s:.0f}" if row.cpu_s else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rows: list[Row]) -> str:
    """objmount over the best rclone, the best direct download (cold) and local disk (warm)."""
    head = ["ratio"] + [f"{w.key} {p}" for w in WORKLOADS for p in PASSES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in (r for r in rows if r.kind == "objmount"):
        for label, kinds, passes in (("best rclone", ("rclone",), PASSES),
                                     ("best direct", ("direct",), ("cold",)),
                                     ("local disk", ("local",), ("warm",))):
            cells = [f"{row.name} / {label}"]
            for w in WORKLOADS:
                for p in PASSES:
                    if p not in passes:
                        cells.append("")
                        continue
                    ref, _ = _best(rows, kinds, w, p)
                    cells.append(_ratio(_speed(w, row.get(w.key, p)), ref))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    text: str
    workload: str
    pass_name: str
    kinds: tuple[str, ...]
    at_least: float


TARGETS = [
    Target("cold large sequential (1 at a time) >= 1.0x best rclone", "seq1", "cold",
           ("rclone",), 1.0),
    Target("cold large sequential (4 at once) >= 1.0x best rclone", "seq4", "cold",
           ("rclone",), 1.0),
    Target("cold large sequential (1 at a time) >= 0.8x direct download", "seq1", "cold",
           ("direct",), 0.8),
    Target("cold large sequential (4 at once) >= 0.8x direct download", "seq4", "cold",
           ("direct",), 0.8),
    Target("cold small files >= 2x best rclone", "small", "cold", ("rclone",), 2.0),
    Target("warm shards (1 at a time) >= 0.8x local disk", "seq1", "warm", ("local",), 0.8),
    Target("warm shards (4 at once) >= 0.8x local disk", "seq4", "warm", ("local",), 0.8),
    Target("warm small files >= 0.8x local disk", "small", "warm", ("local",), 0.8),
    Target("warm random preads >= 0.8x local disk", "rand", "warm", ("local",), 0.8),
    Target("cold listing no slower than best rclone", "ls", "cold", ("rclone",), 1.0),
    Target("warm listing no slower than best rclone", "ls", "warm", ("rclone",), 1.0),
]
RSS_LIMIT_MB = 200


def targets(rows: list[Row]) -> str:
    """Each target of issue #5 with the measured ratio of every objmount configuration."""
    objmounts = [r for r in rows if r.kind == "objmount"]
    by_key = {w.key: w for w in WORKLOADS}
    head = ["target", *(r.name for r in objmounts), "reference"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in TARGETS:
        w = by_key[t.workload]
        ref, ref_name = _best(rows, t.kinds, w, t.pass_name)
        cells = [t.text]
        for row in objmounts:
            mine = _speed(w, row.get(t.workload, t.pass_name))
            if mine is None or ref is None:
                cells.append("-")
                continue
            value = mine / ref
            # Enough digits that a miss never prints as the target itself (0.799 -> 0.80).
            digits = 3 if abs(value - t.at_least) < 0.005 else 2
            cells.append(f"{value:.{digits}f}x {'met' if value >= t.at_least else '**missed**'}")
        cells.append(ref_name or "-")
        lines.append("| " + " | ".join(cells) + " |")
    cells = [f"peak RSS < {RSS_LIMIT_MB} MB"]
    for row in objmounts:
        if row.peak_rss_kib is None:
            cells.append("-")
        else:
            mb = row.peak_rss_kib / 1024
            cells.append(f"{mb:.0f} MB {'met' if mb < RSS_LIMIT_MB else '**missed**'}")
    lines.append("| " + " | ".join([*cells, "VmHWM of the mount process"]) + " |")
    return "\n".join(lines)


def markdown(header: list[str], rows: list[Row]) -> str:
    """The whole report: run facts, figures, ratios, targets."""
    return "\n".join([
        *header, "", "### Figures", "", table(rows), "",
        "### objmount ratios (speed over speed; above 1.0 objmount is faster)", "",
        ratios(rows), "", "### Targets of issue #5", "", targets(rows), "",
    ])


def write_results(results_dir: Path, stem: str, text: str, payload: dict) -> Path:
    """Write STEM.md (`text`) and STEM.json (`payload`) into `results_dir`; return the .md."""
    results_dir.mkdir(parents=True, exist_ok=True)
    md = results_dir / f"{stem}.md"
    md.write_text(text)
    (results_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str))
    return md


README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"


def update_readme(readme: Path, text: str,
                  markers: tuple[str, str] = (README_START, README_END)) -> bool:
    """Replace a results section of bench/README.md between its markers; False if absent."""
    if not readme.exists():
        return False
    old = readme.read_text()
    start, end = old.find(markers[0]), old.find(markers[1])
    if start < 0 or end < start:
        return False
    readme.write_text(old[:start + len(markers[0])] + "\n" + text + "\n" + old[end:])
    return True
