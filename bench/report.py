"""The results: per store, a table of figures, the mounts' CPU per item, and objmount's ratios;
then issue #13's targets across stores.

Rows are configurations (each mount, the direct downloads, local disk), one
set per store (S3 on SeaweedFS, Swift + Keystone); columns are workload x pass
(cold, warm, and hot for small files). Every ratio is objmount's speed over the
other's on the same store (above 1.0 objmount is faster); listing time enters
as 1/seconds. A figure whose pass had any failed read or wrong byte is marked
with the count of bad reads. The local-disk row is measured once and shown with
every store.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.workloads import WORKLOADS, Outcome, Workload

PASSES = ("cold", "warm", "hot")
STORE_TITLES = {"s3": "S3 (SeaweedFS)", "swift": "Swift + Keystone"}


@dataclass
class Row:
    """One configuration's outcomes on one store, keyed `workload.key` then pass."""

    name: str
    kind: str  # objmount | rclone | s3fs | direct | local
    backend: str = ""  # s3 | swift; "" for local disk (every store's)
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
        shown = fmt(workload.figure(outcome))
    return shown + ("*" if outcome.partial else "") + (
        f" ({outcome.errors} bad)" if outcome.errors else "")


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def ratio_text(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def md_table(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _columns() -> list[tuple[Workload, str]]:
    return [(w, p) for w in WORKLOADS for p in w.passes]


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
    """The figures: one row per configuration, every pass of every workload, RSS and CPU."""
    head = ["configuration"]
    head += [f"{w.key} {p} ({'s' if w.key == 'ls' else w.unit})" for w, p in _columns()]
    head += ["peak RSS (MB)", "CPU (s)"]
    body = []
    for row in rows:
        cells = [row.name] + [_cell(w, row.get(w.key, p)) for w, p in _columns()]
        cells.append(f"{row.peak_rss_kib / 1024:.0f}" if row.peak_rss_kib else "-")
        cells.append(f"{row.cpu_s:.0f}" if row.cpu_s else "-")
        body.append(cells)
    return md_table(head, body)


def _cpu_cell(workload: Workload, outcome: Outcome | None) -> str:
    """The mount's CPU per unit of work in one pass: ms per file/op, ms per MB, s per listing."""
    if outcome is None or outcome.usage is None or outcome.usage.cpu_s is None or outcome.note:
        return "-"
    if workload.unit == "MB/s":
        per = outcome.usage.cpu_ms_per(outcome.bytes / 1e6)
    elif workload.key == "ls":
        return f"{outcome.usage.cpu_s:.2f} s"
    else:
        per = outcome.usage.cpu_ms_per(outcome.items)
    return "-" if per is None else f"{per:.2f}"


def cpu_table(rows: list[Row]) -> str:
    """The mount process's CPU (user + system) per unit of work, per pass, mounts only."""
    head = ["configuration"]
    for w, p in _columns():
        unit = "ms/MB" if w.unit == "MB/s" else "s" if w.key == "ls" else "ms/file" if (
            w.key == "small") else "ms/op"
        head.append(f"{w.key} {p} ({unit})")
    body = [[row.name] + [_cpu_cell(w, row.get(w.key, p)) for w, p in _columns()]
            for row in rows if row.kind not in ("direct", "local")]
    return md_table(head, body)


REFERENCES = (("best rclone", ("rclone",), PASSES), ("best direct", ("direct",), ("cold",)),
              ("local disk", ("local",), ("warm", "hot")))


def ratios(rows: list[Row]) -> str:
    """objmount over the best rclone, the best direct download (cold) and local disk (warm)."""
    head = ["ratio"] + [f"{w.key} {p}" for w, p in _columns()]
    body = []
    for row in (r for r in rows if r.kind == "objmount"):
        for label, kinds, passes in REFERENCES:
            cells = [f"{row.name} / {label}"]
            for w, p in _columns():
                ref, _ = _best(rows, kinds, w, p) if p in passes else (None, "")
                cells.append(ratio_text(_speed(w, row.get(w.key, p)), ref) if p in passes else "")
            body.append(cells)
    return md_table(head, body)


def bypassed_relay(rows: list[Row]) -> list[str]:
    """Mount passes that read data from the store (cold) but sent no GET through the relay."""
    found = []
    for row in rows:
        for key, passes in row.outcomes.items():
            o = passes.get("cold")
            if (row.kind not in ("direct", "local") and o and o.usage and o.usage.relay
                    and o.bytes and not o.usage.relay.get("get")):
                found.append(f"{row.name} {key} cold")
    return found


@dataclass(frozen=True)
class Target:
    text: str
    workload: str
    pass_name: str
    kinds: tuple[str, ...]
    at_least: float


# Issue #13, "Targets (ratios in one run; S3 and Swift)".
TARGETS = [
    Target("small files warm, after drop_caches >= 2x best rclone", "small", "warm",
           ("rclone",), 2.0),
    Target("small files warm, after drop_caches >= 0.5x local disk", "small", "warm",
           ("local",), 0.5),
    Target("random preads warm >= 1x best rclone", "rand", "warm", ("rclone",), 1.0),
    Target("4 shards at once, warm >= 0.6x local disk", "seq4", "warm", ("local",), 0.6),
    Target("page-cache-warm small files (no drop_caches) >= 0.9x local disk", "small", "hot",
           ("local",), 0.9),
    Target("cold 1 shard (default flags: row objmount) >= 1.0x best rclone", "seq1", "cold",
           ("rclone",), 1.0),
]
RSS_LIMIT_MB = 200
# Swift's ratios against rclone on Swift: within 20% of the S3 ratios.
SWIFT_TOLERANCE = 0.2


def _target_ratio(rows: list[Row], name: str, t: Target) -> tuple[float | None, str]:
    w = {w.key: w for w in WORKLOADS}[t.workload]
    row = next((r for r in rows if r.name == name), None)
    ref, ref_name = _best(rows, t.kinds, w, t.pass_name)
    mine = _speed(w, row.get(t.workload, t.pass_name)) if row else None
    return (mine / ref if mine is not None and ref else None), ref_name


def _verdict(value: float | None, at_least: float) -> str:
    if value is None:
        return "-"
    # Enough digits that a miss never prints as the target itself (0.799 -> 0.80).
    digits = 3 if abs(value - at_least) < 0.005 else 2
    return f"{value:.{digits}f}x {'met' if value >= at_least else '**missed**'}"


def targets(by_backend: dict[str, list[Row]]) -> str:
    """Each target of issue #13 for every objmount configuration on every store, and the
    Swift ratio against the S3 one."""
    names = list(dict.fromkeys(r.name for rows in by_backend.values() for r in rows
                               if r.kind == "objmount"))
    both = {"s3", "swift"} <= by_backend.keys()
    head = ["target"]
    for name in names:
        head += [f"{name} {STORE_TITLES.get(b, b)}" for b in by_backend]
        if both:
            head.append(f"{name} Swift / S3")
    head.append("reference")
    body = []
    for t in TARGETS:
        cells, refs = [t.text], set()
        for name in names:
            values = {}
            for backend, rows in by_backend.items():
                values[backend], ref_name = _target_ratio(rows, name, t)
                refs.add(ref_name or "-")
                cells.append(_verdict(values[backend], t.at_least))
            if both:
                s3, swift = values["s3"], values["swift"]
                if s3 and swift:
                    rel = swift / s3
                    ok = abs(rel - 1) <= SWIFT_TOLERANCE
                    cells.append(f"{rel:.2f} {'met' if ok else '**missed**'}")
                else:
                    cells.append("-")
        body.append([*cells, ", ".join(sorted(refs))])
    cells = [f"peak RSS < {RSS_LIMIT_MB} MB"]
    for name in names:
        for rows in by_backend.values():
            row = next((r for r in rows if r.name == name), None)
            if row is None or row.peak_rss_kib is None:
                cells.append("-")
            else:
                mb = row.peak_rss_kib / 1024
                cells.append(f"{mb:.0f} MB {'met' if mb < RSS_LIMIT_MB else '**missed**'}")
        if both:
            cells.append("")
    body.append([*cells, "VmHWM of the mount process"])
    return md_table(head, body)


def markdown(header: list[str], by_backend: dict[str, list[Row]]) -> str:
    """The whole report: run facts; per store figures, CPU per item, ratios; targets."""
    parts = [*header, ""]
    for backend, rows in by_backend.items():
        title = STORE_TITLES.get(backend, backend)
        parts += [f"### Figures on {title}", "", table(rows), "",
                  f"### Mount CPU per unit of work on {title} (user + system of the mount "
                  "process, /proc/PID/stat, per pass)", "", cpu_table(rows), "",
                  f"### objmount ratios on {title} (speed over speed; above 1.0 objmount is "
                  "faster)", "", ratios(rows), ""]
        bypass = bypassed_relay(rows)
        if bypass:
            parts += [f"**Relay bypassed** (no GET seen at the relay): {', '.join(bypass)}", ""]
    parts += ["### Targets of issue #13", "", targets(by_backend), ""]
    return "\n".join(parts)


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
