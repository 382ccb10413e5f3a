"""Summarise a pytest-benchmark JSON of bench/ as a Markdown table.

    python bench/report.py bench-small.json [--out report.md] [--strict]

For each benchmark: median, events/s, the ratio of seglog's rate to each peer
measured in the same run, and pass/fail against the targets below. ``--strict``
exits 1 when a target fails (a target whose figures are missing is "n/a" and
does not fail).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MiB = 1 << 20


@dataclass(frozen=True)
class Target:
    bench: str
    text: str
    # Returns (measured figure as text, passed) or None when the figures are missing.
    check: Callable[[dict[tuple[str, str], dict[str, Any]]], tuple[str, bool] | None]
    aim: bool = False  # an aspiration, reported but never failing --strict


def _rate(results: dict[tuple[str, str], dict[str, Any]], bench: str, impl: str) -> float | None:
    r = results.get((bench, impl))
    return None if r is None else r.get("events_per_s")


def _ratio_target(bench: str, impl: str, peer: str, at_least: float, aim: bool = False) -> Target:
    def check(results: dict[tuple[str, str], dict[str, Any]]) -> tuple[str, bool] | None:
        a, b = _rate(results, bench, impl), _rate(results, bench, peer)
        if not a or not b:
            return None
        return f"{a / b:.2f}x", a / b >= at_least

    return Target(bench, f"{impl} >= {at_least:g}x {peer}", check, aim)


def _rate_target(bench: str, impl: str, at_least: float) -> Target:
    def check(results: dict[tuple[str, str], dict[str, Any]]) -> tuple[str, bool] | None:
        a = _rate(results, bench, impl)
        return None if a is None else (f"{a:,.0f}/s", a >= at_least)

    return Target(bench, f"{impl} >= {at_least:,.0f} events/s", check)


def _time_target(bench: str, impl: str, below_s: float, aim: bool = False) -> Target:
    def check(results: dict[tuple[str, str], dict[str, Any]]) -> tuple[str, bool] | None:
        r = results.get((bench, impl))
        if r is None:
            return None
        m = r["median"]
        return f"{m * 1e3:.1f} ms", m < below_s

    return Target(bench, f"{impl} median < {below_s * 1e3:g} ms", check, aim)


def _rss_target(below_mb: float) -> Target:
    def check(results: dict[tuple[str, str], dict[str, Any]]) -> tuple[str, bool] | None:
        r = results.get(("memory", "seglog"))
        if r is None or "peak_rss_mb" not in r:
            return None
        return f"{r['peak_rss_mb']:.1f} MB", r["peak_rss_mb"] < below_mb

    return Target("memory", f"peak RSS < {below_mb:g} MB", check)


TARGETS = [
    _ratio_target("bulk_append", "seglog", "lmdb", 1.0),
    _ratio_target("bulk_append", "seglog", "sqlite", 2.0),
    _ratio_target("bulk_append", "seglog", "rocksdb", 2.0),
    _rate_target("bulk_append", "seglog", 500_000),
    _ratio_target("durable", "seglog_8threads", "seglog_1thread_fsync", 4.0),
    _ratio_target("get", "seglog", "lmdb", 0.5),
    _ratio_target("get", "seglog", "lmdb", 1.0, aim=True),
    _ratio_target("scan", "seglog", "jsonl_orjson", 1.0),
    _time_target("open", "seglog", 0.200),
    _time_target("open", "seglog", 0.050, aim=True),
    _rss_target(150),
]

# The reference each benchmark's other rows are compared with.
_BASE = {"durable": "seglog_8threads"}


def load(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with open(path) as f:
        doc = json.load(f)
    rows = []
    for b in doc["benchmarks"]:
        info = dict(b.get("extra_info") or {})
        if "bench" not in info:
            continue
        info["median"] = b["stats"]["median"]
        info["rounds"] = b["stats"]["rounds"]
        info["iqr"] = b["stats"].get("iqr", 0.0)
        info["name"] = b["name"]
        info["group"] = b.get("group") or ""
        rows.append(info)
    return doc, rows


def _fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def render(doc: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[str, bool]:
    results = {(r["bench"], r["impl"]): r for r in rows}
    scales = sorted({r.get("scale", "?") for r in rows})
    mi = doc.get("machine_info", {})
    ci = doc.get("commit_info", {})
    out = [
        f"# seglog benchmarks ({', '.join(scales)} scale)",
        "",
        f"{doc.get('datetime', '')} · Python {mi.get('python_version', '?')} · "
        f"{mi.get('cpu', {}).get('brand_raw', mi.get('processor', '?'))} · "
        f"commit {str(ci.get('id', '?'))[:10]}{' (dirty)' if ci.get('dirty') else ''}",
        "",
        "| benchmark | impl | events/round | rounds | median | IQR | events/s | seglog vs this |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (r["group"], r["bench"], r["impl"] != _BASE.get(r["bench"], "seglog"),
                                         r["impl"])):
        rate = r.get("events_per_s")
        base = _rate(results, r["bench"], _BASE.get(r["bench"], "seglog"))
        ratio = ""
        if rate and base and r["impl"] != _BASE.get(r["bench"], "seglog"):
            ratio = f"{base / rate:.2f}x"
        out.append(
            f"| {r['bench']} | {r['impl']} | {r.get('events', ''):,} | {r['rounds']} | {_fmt_time(r['median'])} | "
            f"{r['iqr'] / r['median']:.0%} | "
            f"{f'{rate:,.0f}' if rate else ''} | {ratio} |"
        )
    out += ["", "## Targets", ""]
    if "full" not in scales:
        out += ["Small scale: the targets are set for the full-size run; these verdicts are indicative only.", ""]
    out += ["| benchmark | target | measured | result |", "| --- | --- | ---: | --- |"]
    ok = True
    for t in TARGETS:
        got = t.check(results)
        if got is None:
            out.append(f"| {t.bench} | {t.text}{' (aim)' if t.aim else ''} | n/a | n/a |")
            continue
        fig, passed = got
        verdict = "PASS" if passed else ("miss (aim)" if t.aim else "FAIL")
        if not passed and not t.aim:
            ok = False
        out.append(f"| {t.bench} | {t.text}{' (aim)' if t.aim else ''} | {fig} | {verdict} |")
    notes = _notes(results)
    if notes:
        out += ["", "## Details", "", *notes]
    return "\n".join(out) + "\n", ok


def _notes(results: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    notes = []
    d = results.get(("durable", "seglog_8threads"))
    if d and "events_per_fsync" in d:
        notes.append(f"- durable, 8 threads: {d['events_per_fsync']} appends per fsync (group commit)")
    for impl in ("seglog_8threads", "seglog_1thread_fsync", "sqlite_full_8threads"):
        r = results.get(("durable", impl))
        if r and r.get("fsync_probe_us"):
            notes.append(f"- durable, {impl}: a 200-byte append + fdatasync took {r['fsync_probe_us']} us "
                         "before each round (a wide spread means a noisy disk: rerun when it is quiet)")
    o = results.get(("open", "seglog"))
    if o:
        notes.append(f"- open: {o.get('events', 0):,} events, {o.get('bytes_on_disk', 0) / MiB:,.0f} MiB on disk, "
                     f"{o.get('segments', '?')} segments")
    c = results.get(("open_after_crash", "seglog"))
    if c:
        notes.append(f"- open after SIGKILL: {_fmt_time(c['median'])} median; the killed writer appended "
                     f"{c.get('tail_events', 0):,} events, leaving {c.get('tail_bytes', 0) / MiB:,.1f} MiB unindexed "
                     f"at the end of a {c.get('active_segment_bytes', 0) / MiB:,.1f} MiB active segment "
                     "(no target set; informational)")
    m = results.get(("memory", "seglog"))
    if m and "peak_rss_mb" in m:
        end = m.get("at_end", {})
        notes.append(f"- memory: peak RSS {m['peak_rss_mb']} MB (interpreter + imports "
                     f"{m.get('baseline_rss_mb', '?')} MB; at the end RssAnon {end.get('RssAnon', '?')} MB, "
                     f"RssFile {end.get('RssFile', '?')} MB); open {m.get('open_s', '?')} s, "
                     f"{m.get('gets', '?')} gets + {m.get('scanned', '?')} scanned events in {m.get('read_s', '?')} s")
    return notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="file written by pytest --benchmark-json")
    ap.add_argument("--out", help="also write the Markdown here")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a (non-aim) target fails")
    args = ap.parse_args(argv)
    doc, rows = load(args.json)
    if not rows:
        print(f"{args.json}: no seglog bench results (was it run with --benchmark-disable?)", file=sys.stderr)
        return 2
    text, ok = render(doc, rows)
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
