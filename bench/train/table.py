"""The training results: per store, one line per (cache size, workers, configuration, epoch),
objmount's ratios to rclone and to local disk, the cold-file CPU table, and issue #12's targets.

With --repeat N, each cell of a (store, cache, workers, configuration, epoch)
line comes from the repeat with the median images/s. GETs are objmount's own
count (user.objmount.stats) for objmount and the relay's count of object GETs
for rclone. Two hit rates: objmount's own (cache hits over block lookups, from
its counters: a file's later reads and files fetched ahead count as hits) and,
for every tool, the share of the epoch's files read without a GET in that
epoch, 1 - GETs/files (one GET per small file): what a cache kept from earlier
epochs saved, the figure issue #12's half-cache target is about.
"""

from collections.abc import Iterable

from bench.report import STORE_TITLES, Row, fmt, md_table, ratio_text
from bench.train.runs import Epoch, unused_counter

HEAD = ["cache", "workers", "configuration", "epoch", "images/s", "GETs",
        "fetched ahead, never used", "hit rate (objmount)", "files without a GET",
        "mount CPU (ms/file)", "vs rclone", "vs local disk"]


def _key(e: Epoch) -> tuple:
    return (e.backend, e.cache, e.workers, e.config, e.epoch)


def medians(epochs: Iterable[Epoch]) -> dict[tuple, Epoch]:
    """The epoch with the median images/s for each (store, cache, workers, config, epoch)."""
    groups: dict[tuple, list[Epoch]] = {}
    for e in epochs:
        groups.setdefault(_key(e), []).append(e)
    out = {}
    for key, group in groups.items():
        ranked = sorted(group, key=lambda e: (not e.note and not e.bad, e.images_per_s()))
        out[key] = ranked[len(ranked) // 2]
    return out


def gets(e: Epoch) -> int | None:
    if e.tool == "objmount":
        return e.usage.stats.get("gets")
    return e.usage.relay.get("get") if e.tool != "local" else None


def stats_hit_rate(e: Epoch) -> float | None:
    """objmount's cache hits over block lookups in the epoch, or None."""
    hits, misses = e.usage.stats.get("cache_hits"), e.usage.stats.get("cache_misses")
    if e.tool != "objmount" or hits is None or misses is None or hits + misses == 0:
        return None
    return hits / (hits + misses)


def without_get(e: Epoch) -> float | None:
    """The share of the epoch's files read without a GET in the epoch (0 if more GETs)."""
    n = gets(e)
    if n is None or not e.images:
        return None
    return max(0.0, 1 - n / e.images)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def unused(e: Epoch) -> str:
    if e.tool != "objmount":
        return "-"
    name = unused_counter(e.usage.stats)
    if name is None:
        return "n/a"
    return f"{e.usage.stats[name] / 1e6:,.1f} MB"


def _speed(e: Epoch | None) -> float | None:
    return e.images_per_s() if e is not None and not e.bad and not e.note else None


def _rclone(best: dict[tuple, Epoch], e: Epoch) -> Epoch | None:
    """The fastest rclone line for the same store, cache, workers and epoch."""
    found = [x for k, x in best.items() if x.tool == "rclone"
             and k[:3] == _key(e)[:3] and k[4] == e.epoch]
    return max(found, key=lambda x: x.images_per_s(), default=None)


def _local(best: dict[tuple, Epoch], e: Epoch) -> Epoch | None:
    return best.get(("", "full", e.workers, "local disk", e.epoch))


def epochs_table(best: dict[tuple, Epoch], backend: str) -> str:
    rows = []
    lines = [e for k, e in best.items() if k[0] == backend]
    lines += [e for k, e in best.items() if k[0] == "" and backend]  # local disk, every store
    for e in lines:
        mine = _speed(e)
        cpu = e.usage.cpu_ms_per(e.images) if e.tool != "local" else None
        n = gets(e)
        rows.append([
            e.cache if e.tool != "local" else "-", str(e.workers), e.config, str(e.epoch),
            e.note or (fmt(e.images_per_s()) + (f" ({e.bad} bad)" if e.bad else "")),
            "-" if n is None else f"{n:,}", unused(e), _rate(stats_hit_rate(e)),
            _rate(without_get(e)),
            "-" if cpu is None else f"{cpu:.2f}",
            ratio_text(mine, _speed(_rclone(best, e))) if e.tool == "objmount" else "",
            ratio_text(mine, _speed(_local(best, e))) if e.tool == "objmount" else "",
        ])
    return md_table(HEAD, rows)


def cpu_table(rows: list[Row]) -> str:
    """The cold small-file pass outside torch: files/s and the mount's CPU per file."""
    head = ["configuration", "files/s", "mount CPU (ms/file)", "GETs at the relay",
            "vs best rclone"]
    best = max((_files_per_s(r) or 0 for r in rows if r.kind == "rclone"), default=0)
    body = []
    for r in rows:
        o = r.get("small", "cold")
        if o is None:
            continue
        cpu = o.usage.cpu_ms_per(o.items) if o.usage else None
        body.append([r.name, o.note or fmt(o.items_per_s()) + (f" ({o.errors} bad)"
                                                                if o.errors else ""),
                     "-" if cpu is None else f"{cpu:.2f}",
                     f"{o.usage.relay.get('get', 0):,}" if o.usage and o.usage.relay else "-",
                     ratio_text(_files_per_s(r), best) if r.kind == "objmount" else ""])
    return md_table(head, body)


def _files_per_s(r: Row) -> float | None:
    o = r.get("small", "cold")
    return o.items_per_s() if o and not o.errors and not o.note else None


def _verdict(value: float | None, at_least: float | None = None,
             at_most: float | None = None, unit: str = "x") -> str:
    if value is None:
        return "-"
    ok = (at_least is None or value >= at_least) and (at_most is None or value <= at_most)
    return f"{value:.2f}{unit} {'met' if ok else '**missed**'}"


def targets(best: dict[tuple, Epoch], cpu_rows: dict[str, list[Row]],
            backends: list[str], prefetch_present: bool) -> str:
    """Issue #12's targets per store (the best worker count of each line)."""
    head = ["target", *(STORE_TITLES.get(b, b) for b in backends)]
    body = []

    def ratio(backend: str, config: str, cache: str, epochs: tuple[int, ...]) -> float | None:
        values = []
        for e in best.values():
            if (e.backend, e.config, e.cache) == (backend, config, cache) and e.epoch in epochs:
                ref = _speed(_rclone(best, e))
                if _speed(e) and ref:
                    values.append(_speed(e) / ref)
        return min(values) if values else None

    prefetch = "objmount + PrefetchSampler"
    rows = [
        ("cold epoch with PrefetchSampler >= 2x best rclone (worst of 4 and 8 workers)",
         lambda b: _verdict(ratio(b, prefetch, "full", (1,)), 2.0)
         if prefetch_present else "n/a: no PrefetchSampler"),
        ("cold epoch plain >= 1.3x best rclone", lambda b: _verdict(
            ratio(b, "objmount", "full", (1,)), 1.3)),
        ("half-size cache, epochs 2-3: images/s >= 1.5x rclone (objmount plain)",
         lambda b: _verdict(ratio(b, "objmount", "half", (2, 3)), 1.5)),
        ("half-size cache, epochs 2-3: files without a GET >= 0.45 (objmount plain, lowest; "
         "objmount's own hit rate in brackets)", lambda b: _half_hits(best, b)),
        ("wasted prefetch < 5% of bytes fetched (objmount + PrefetchSampler)",
         lambda b: _wasted(best, b, prefetch)),
        ("daemon CPU per small cold file <= 1.2 ms (8 threads, no torch)",
         lambda b: _verdict(_cold_cpu(cpu_rows.get(b, [])), at_most=1.2, unit=" ms")),
        ("bytes: always right", lambda b: _bad(best, b)),
    ]
    for text, cell in rows:
        body.append([text, *(cell(b) for b in backends)])
    return md_table(head, body)


def _half_hits(best: dict[tuple, Epoch], backend: str) -> str:
    lines = [e for e in best.values()
             if (e.backend, e.config, e.cache) == (backend, "objmount", "half") and e.epoch >= 2]
    saved = [v for e in lines if (v := without_get(e)) is not None]
    own = [v for e in lines if (v := stats_hit_rate(e)) is not None]
    if not saved:
        return "-"
    brackets = f" ({min(own):.2f})" if own else ""
    return _verdict(min(saved), 0.45, unit="") + brackets


def _wasted(best: dict[tuple, Epoch], backend: str, config: str) -> str:
    shares = []
    for e in best.values():
        if (e.backend, e.config) == (backend, config):
            name = unused_counter(e.usage.stats)
            if name is None:
                return "n/a: objmount reports no unused-prefetch counter"
            fetched = e.usage.stats.get("bytes_fetched")
            if fetched:  # a warm epoch fetches nothing: no share to take
                shares.append(e.usage.stats[name] / fetched)
    if not shares:
        return "-"
    worst = max(shares) * 100
    return f"{worst:.1f}% {'met' if worst < 5 else '**missed**'}"


def _cold_cpu(rows: list[Row]) -> float | None:
    for r in rows:
        o = r.get("small", "cold")
        if r.name == "objmount" and o and o.usage:
            return o.usage.cpu_ms_per(o.items)
    return None


def _bad(best: dict[tuple, Epoch], backend: str) -> str:
    lines = [e for e in best.values() if e.backend in (backend, "")]
    bad = sum(e.bad for e in lines)
    images = sum(e.images for e in lines)
    return f"{bad} bad of {images:,} images " + ("met" if not bad else "**missed**")


def markdown(header: list[str], epochs: list[Epoch], cpu_rows: dict[str, list[Row]],
             backends: list[str], prefetch_present: bool, cpu_rtt_ms: float) -> str:
    best = medians(epochs)
    parts = [*header, ""]
    for backend in backends:
        title = STORE_TITLES.get(backend, backend)
        parts += [f"### Training epochs on {title}", "", epochs_table(best, backend), ""]
        if not prefetch_present:
            parts += ["objmount + PrefetchSampler: not run (objmount.torch.PrefetchSampler is "
                      "not in this objmount).", ""]
        if cpu_rows.get(backend):
            parts += [f"### Small cold files outside torch on {title} (8 threads, random "
                      f"order, +{cpu_rtt_ms:g} ms)", "", cpu_table(cpu_rows[backend]), ""]
    parts += ["### Targets of issue #12", "",
              targets(best, cpu_rows, backends, prefetch_present), ""]
    return "\n".join(parts)
