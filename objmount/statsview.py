"""What `objmount stats` shows: rates over an interval from two replies of a mount's "stats".

Plain functions of the replies (control.py's "stats" op): `summary` computes
the figures a user looks at to know whether training waits for data, `render`
prints them. No I/O.
"""

from collections.abc import Mapping

from objmount.cache.tools import human_bytes, human_duration

MB = 1e6


def _delta(before: Mapping | None, after: Mapping, name: str) -> int:
    now = int(after.get(name, 0))
    return now - int(before.get(name, 0)) if before is not None else now


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def summary(before: Mapping | None, after: Mapping) -> dict[str, object]:
    """Figures over the interval between two "stats" replies (`before` None: since the
    mount started), plus the state now."""
    new, old = after["stats"], before["stats"] if before is not None else None
    seconds = float(after["uptime_s"]) - (float(before["uptime_s"]) if before else 0.0)
    seconds = max(seconds, 1e-9)
    hits, misses = _delta(old, new, "cache_hits"), _delta(old, new, "cache_misses")
    cache = after.get("cache") or {}
    prefetched = int(new.get("prefetch_gets", 0))
    return {
        "interval_s": round(seconds, 3),
        "uptime_s": after["uptime_s"],
        "pid": after.get("pid"),
        "hit_rate": _share(hits, hits + misses),
        "hit_rate_since_mount": _share(new.get("cache_hits", 0),
                                       new.get("cache_hits", 0) + new.get("cache_misses", 0)),
        "gets_per_s": _delta(old, new, "gets") / seconds,
        "fetched_mb_per_s": _delta(old, new, "bytes_fetched") / MB / seconds,
        "read_mb_per_s": _delta(old, new, "bytes_read") / MB / seconds,
        "store_wait_share": _share(_delta(old, new, "store_wait_ns"),
                                   _delta(old, new, "read_ns")),
        "ahead_files": int(new.get("prefetch_ahead_files", 0)),
        "orders": after.get("orders", []),
        "resident_bytes": cache.get("resident_bytes"),
        "max_bytes": cache.get("max_bytes"),
        "pinned_bytes": cache.get("pinned_bytes"),
        "policy": cache.get("policy"),
        "policy_reason": cache.get("policy_reason"),
        "memory_bytes": int(new.get("buffer_bytes", 0)),
        "prefetch_used_files": int(new.get("prefetch_used_files", 0)),
        "prefetch_unused_files": int(new.get("prefetch_unused_files", 0)),
        "prefetch_unused_bytes": int(new.get("prefetch_unused_bytes", 0)),
        "prefetch_unused_share": _share(new.get("prefetch_unused_files", 0), prefetched),
        "counters": dict(new),
    }


def _percent(value: object) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def render(mountpoint: str, s: Mapping[str, object]) -> str:
    """The lines `objmount stats` prints for one summary."""
    over = (f"over the last {float(s['interval_s']):.1f}s" if s["interval_s"] != s["uptime_s"]
            else "since the mount started")
    lines = [f"{mountpoint} (pid {s['pid']}, up {human_duration(float(s['uptime_s']))}, "
             f"{over})",
             f"  hit rate     {_percent(s['hit_rate'])} of block lookups "
             f"({_percent(s['hit_rate_since_mount'])} since the mount started)",
             f"  store        {float(s['gets_per_s']):,.0f} GETs/s, "
             f"{float(s['fetched_mb_per_s']):,.1f} MB/s",
             f"  reads        {float(s['read_mb_per_s']):,.1f} MB/s, "
             f"{_percent(s['store_wait_share'])} of read time waiting on the store"]
    orders = list(s["orders"] or [])
    lines.append(f"  ahead        {s['ahead_files']:,} files fetched ahead of the readers "
                 f"({len(orders)} order{'s' if len(orders) != 1 else ''})")
    for o in orders:
        lines.append(f"    order {o['client']}: {o['position']:,} of {o['files']:,} files "
                     f"passed, {o['ahead']:,} ahead, {o['missing']:,} not in the mount")
    resident, cap = s["resident_bytes"], s["max_bytes"]
    if cap is not None:
        line = (f"  cache        {human_bytes(resident) if resident is not None else '?'} "
                f"resident of {human_bytes(float(cap))}")
        if s["pinned_bytes"]:
            line += f", {human_bytes(float(s['pinned_bytes']))} pinned"
        if s["policy"] == "holding":
            line += f" (keeping its resident set: {s['policy_reason']})"
        lines.append(line)
    lines.append(f"  memory       {human_bytes(float(s['memory_bytes']))} of blocks held")
    lines.append(f"  prefetch     {s['prefetch_used_files']:,} files used, "
                 f"{s['prefetch_unused_files']:,} never used "
                 f"({human_bytes(float(s['prefetch_unused_bytes']))}, "
                 f"{_percent(s['prefetch_unused_share'])} of the files fetched ahead)")
    return "\n".join(lines)
