"""Summarise pytest-benchmark JSON files of bench/ as Markdown tables, and plot them.

    python bench/report.py bench-small.json [MORE.json ...] [--out report.md] [--strict]
    python bench/report.py engine.json session.json compactor.json --plots bench/plots

For each benchmark: median, events/s, the ratio of seglog's rate to each peer
measured in the same run, and pass/fail against the targets below. ``--strict``
exits 1 when a target fails (a target whose figures are missing is "n/a" and
does not fail). Several files give one report each, in turn.

``--plots DIR`` also writes PNGs (matplotlib, Agg backend; the ``bench`` extra) of
what the files hold, files of several runs of the same benchmarks pooled:

- ``session_latency_cdf.png``: CDF of the time to record one command
  (``test_foreground_seglog`` / ``test_foreground_legacy``), log latency axis, one
  panel per session length. It uses every round's time (``stats.data``, kept by
  ``--benchmark-json``), else the percentiles in ``extra_info`` as points.
- ``engine_throughput.png``: events/s (``extra_info["events_per_s"]``) of seglog
  and each peer present in bulk append, durable appends, random get and scan; a bar
  is the median over the files, a dot one file.
- ``compaction_space.png``: bytes on disk over time under churn
  (``test_space_under_churn``: ``extra_info["series"]``, passes from
  ``["pass_series"]`` shaded) next to the live bytes, and for each other variant of
  the benchmark present (``none``: the same churn without a compactor) its bytes on
  disk and its own live bytes; below, the ratio on disk / live of each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
    _ratio_target("durable", "seglog_8threads", "seglog_1thread_fsync", 4.0, aim=True),  # reported, no target
    _ratio_target("get", "seglog", "lmdb", 0.9),
    _ratio_target("get", "seglog", "lmdb", 1.2, aim=True),
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
        info["_data"] = b["stats"].get("data") or []  # every round's time (s), for the plots
        rows.append(info)
    return doc, rows


def _fmt_count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, (int, float)) else ""


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
    for r in sorted(
        rows, key=lambda r: (r["group"], r["bench"], r["impl"] != _BASE.get(r["bench"], "seglog"), r["impl"])
    ):
        rate = r.get("events_per_s")
        base = _rate(results, r["bench"], _BASE.get(r["bench"], "seglog"))
        ratio = ""
        if rate and base and r["impl"] != _BASE.get(r["bench"], "seglog"):
            ratio = f"{base / rate:.2f}x"
        out.append(
            f"| {r['bench']} | {r['impl']} | {_fmt_count(r.get('events'))} | {r['rounds']} | "
            f"{_fmt_time(r['median'])} | {r['iqr'] / r['median']:.0%} | "
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
            notes.append(
                f"- durable, {impl}: a 200-byte append + fdatasync took {r['fsync_probe_us']} us "
                "before each round (a wide spread means a noisy disk: rerun when it is quiet)"
            )
    o = results.get(("open", "seglog"))
    if o:
        notes.append(
            f"- open: {o.get('events', 0):,} events, {o.get('bytes_on_disk', 0) / MiB:,.0f} MiB on disk, "
            f"{o.get('segments', '?')} segments"
        )
    c = results.get(("open_after_crash", "seglog"))
    if c:
        notes.append(
            f"- open after SIGKILL: {_fmt_time(c['median'])} median; the killed writer appended "
            f"{c.get('tail_events', 0):,} events, leaving {c.get('tail_bytes', 0) / MiB:,.1f} MiB unindexed "
            f"at the end of a {c.get('active_segment_bytes', 0) / MiB:,.1f} MiB active segment "
            "(no target set; informational)"
        )
    m = results.get(("memory", "seglog"))
    if m and "peak_rss_mb" in m:
        end = m.get("at_end", {})
        notes.append(
            f"- memory: peak RSS {m['peak_rss_mb']} MB (interpreter + imports "
            f"{m.get('baseline_rss_mb', '?')} MB; at the end RssAnon {end.get('RssAnon', '?')} MB, "
            f"RssFile {end.get('RssFile', '?')} MB); open {m.get('open_s', '?')} s, "
            f"{m.get('gets', '?')} gets + {m.get('scanned', '?')} scanned events in {m.get('read_s', '?')} s"
        )
    return notes


# ------------------------------------------------------------------------------ plots
# Drawn from the rows of every file given (load()), each row tagged with its file's index.

SESSION_P99_TARGET_US = 200.0  # test_session_bench.TARGET_P99_US
CHURN_TARGET_RATIO = 1.5  # test_compactor_bench: steady-state bytes on disk / live bytes

_THROUGHPUT_BENCHES = [
    ("bulk_append", "bulk append, batches of 100 events"),
    ("durable", "durable single-event appends"),
    ("get", "random get(stream, seq)"),
    ("scan", "scan one whole stream"),
]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def _fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k/s"
    return f"{x:.0f}/s"


def _fmt_axis_rate(x: float, _pos: Any = None) -> str:
    """A tick label of an events/s axis: 200k, 1M, 5M."""
    for div, unit in ((1e6, "M"), (1e3, "k"), (1, "")):
        if x >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def _runs_note(rows: list[dict[str, Any]]) -> str:
    files = len({r["_file"] for r in rows})
    scales = ", ".join(sorted({str(r.get("scale", "?")) for r in rows}))
    return f"{scales} scale, {files} run{'s' if files != 1 else ''}"


def _session_label(r: dict[str, Any]) -> str:
    impl = str(r["impl"])
    return f"seglog, {r['pace']}" if impl == "seglog" and r.get("pace") else impl


# seglog: a colour per pace, dashed without the background saver; the legacy writer in black / red
_PACE_COLORS = {"idle": "C0", "busy": "C1", "flat_out": "C2"}
_LEGACY_COLORS = {"legacy_json": "k", "legacy_orjson": "C3"}


def _session_styles(labels: list[str]) -> dict[str, dict[str, Any]]:
    styles: dict[str, dict[str, Any]] = {}
    spare = iter(f"C{i}" for i in range(4, 10))
    for lab in labels:
        pace = lab.removeprefix("seglog, ")
        base = pace.removesuffix("_no_saver")
        if lab.startswith("seglog, ") and base in _PACE_COLORS:
            styles[lab] = {"color": _PACE_COLORS[base], "ls": "--" if pace != base else "-"}
        elif lab in _LEGACY_COLORS:
            styles[lab] = {"color": _LEGACY_COLORS[lab], "ls": "-"}
        else:
            styles[lab] = {"color": next(spare, "0.5"), "ls": "-"}
    return styles


def plot_session_cdf(rows: list[dict[str, Any]], path: str) -> bool:
    """CDF of the time to record one command, seglog (each pace) vs the legacy writer."""
    rows = [r for r in rows if r.get("bench") == "session_foreground" and r.get("length")]
    if not rows:
        return False
    plt = _pyplot()
    from matplotlib.lines import Line2D

    lengths = sorted({int(r["length"]) for r in rows})
    labels = sorted({_session_label(r) for r in rows}, key=lambda s: (not s.startswith("seglog"), s))
    styles = _session_styles(labels)
    counts: dict[str, list[str]] = {lab: [] for lab in labels}  # commands per panel, for the legend
    points: set[str] = set()  # labels drawn from percentiles only
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.4 * len(lengths) + 0.6, 5.4), sharey=True, squeeze=False)
    lo, hi = math.inf, 0.0
    for ax, length in zip(axes[0], lengths, strict=True):
        at = [r for r in rows if int(r["length"]) == length]
        for lab in labels:
            mine = [r for r in at if _session_label(r) == lab]
            if not mine:
                continue
            pooled = sorted(x * 1e6 for r in mine for x in r["_data"])
            if pooled:  # every round: Hazen plotting positions keep 0 and 1 off the logit axis
                n = len(pooled)
                ys = [(i + 0.5) / n for i in range(n)]
                ax.plot(pooled, ys, lw=1.3, **styles[lab])
                counts[lab].append(f"{n:,}")
                lo, hi = min(lo, pooled[0]), max(hi, pooled[-1])
                continue
            for r in mine:  # only the percentiles: one line of points per run
                n = int(r.get("samples") or 1000)
                pts = [(r.get(f"p{q}_us"), y) for q, y in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("999", 0.999))]
                pts.append((r.get("max_us"), (n - 0.5) / n))
                pts = [(float(x), y) for x, y in pts if x]
                if not pts:
                    continue
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", ms=4, lw=0.8, **styles[lab])
                points.add(lab)
                lo, hi = min(lo, pts[0][0]), max(hi, pts[-1][0])
        ax.axvline(SESSION_P99_TARGET_US, color="0.4", ls=":", lw=1)
        ax.axhline(0.99, color="0.4", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("logit")
        ax.set_title(f"sessions of {length:,} commands")
        ax.set_xlabel("time to record one command (µs)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("share of commands at most this slow")
    most = max((len(r["_data"]) or int(r.get("samples") or 1000)) for r in rows)
    top = 1 - 0.5 / most  # the slowest command's plotting position
    ticks = [t for t in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999) if t <= top]
    for ax in axes[0]:
        if hi > 0:
            ax.set_xlim(lo / 1.3, hi * 1.3)
        ax.set_ylim(0.005, 1 - 0.3 / most)
        ax.set_yticks(ticks, [f"{t * 100:g}%" for t in ticks])
        ax.yaxis.set_minor_locator(plt.NullLocator())
    handles, names = [], []
    for lab in labels:  # one legend for the panels, below them
        if lab in points:
            handles.append(Line2D([], [], marker="o", ms=4, lw=0.8, **styles[lab]))
            names.append(f"{lab} (p50/p90/p99/p99.9/max)")
        elif counts[lab]:
            handles.append(Line2D([], [], lw=1.3, **styles[lab]))
            ns = counts[lab]
            names.append(f"{lab} (n={ns[0] if len(set(ns)) == 1 else ' / '.join(ns)})")
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    note = "" if any(r["impl"] != "seglog" for r in rows) else "; no legacy writer results in the input"
    fig.suptitle(
        f"Session layer: cost of recording one command ({_runs_note(rows)}{note}); "
        f"dotted: p99 and the {SESSION_P99_TARGET_US:g} µs p99 target",
        fontsize=10,
    )
    rows_of_legend = math.ceil(len(handles) / 4)
    fig.tight_layout(rect=(0, 0.01 + 0.045 * rows_of_legend, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_engine_throughput(rows: list[dict[str, Any]], path: str) -> bool:
    """events/s of seglog and the peers, one panel per benchmark."""
    benches = [
        (b, title)
        for b, title in _THROUGHPUT_BENCHES
        if any(r.get("bench") == b and r.get("events_per_s") for r in rows)
    ]
    if not benches:
        return False
    plt = _pyplot()
    from matplotlib import ticker

    panels = []
    for b, title in benches:
        rates: dict[str, list[float]] = {}
        for r in rows:
            if r.get("bench") == b and r.get("events_per_s"):
                rates.setdefault(str(r["impl"]), []).append(float(r["events_per_s"]))
        base = _BASE.get(b, "seglog")
        med = {impl: _median(xs) for impl, xs in rates.items()}
        order = sorted(rates, key=lambda i: (i != base, not i.startswith("seglog"), -med[i]))
        panels.append((b, title, base, order, rates, med))
    heights = [len(p[3]) + 1.2 for p in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 0.9 + 0.38 * sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, (_b, title, base, order, rates, med) in zip(axes[:, 0], panels, strict=True):
        ys = list(range(len(order)))[::-1]
        colors = ["C0" if impl.startswith("seglog") else "C7" for impl in order]
        ax.barh(ys, [med[i] for i in order], color=colors, height=0.6)
        for y, impl in zip(ys, order, strict=True):
            if len(rates[impl]) > 1:
                ax.plot(rates[impl], [y] * len(rates[impl]), "k.", ms=3.5)
            text = _fmt_rate(med[impl])
            if impl != base and base in med:
                text += f"   ({base} {med[base] / med[impl]:.2f}x)"
            ax.text(max([med[impl], *rates[impl]]) * 1.15, y, text, va="center", fontsize=8)
        ax.set_yticks(ys, order, fontsize=8.5)
        ax.set_xscale("log")
        top = max(max(xs) for xs in rates.values())
        bottom = min(min(xs) for xs in rates.values())
        ax.set_xlim(bottom / 4, top * 12)
        # labels at 1, 2 and 5 of every decade (a panel may span less than two decades)
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(_fmt_axis_rate))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        alone = "" if len(order) > 1 else " (no peer results in the input)"
        ax.set_title(title + alone, fontsize=9.5, loc="left")
        ax.grid(True, axis="x", which="major", alpha=0.3)
    used = [r for r in rows if any(r.get("bench") == b for b, _ in benches) and r.get("events_per_s")]
    several = len({r["_file"] for r in used}) > 1
    axes[-1][0].set_xlabel(
        "events/s (log scale" + ("; bar: median of the runs, dot: one run)" if several else ")"), fontsize=9
    )
    fig.suptitle(f"Throughput against the peers ({_runs_note(used)})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


_NO_COMPACTOR = ("none", "off", "without", "no_compactor", "alone")


def plot_compaction(rows: list[dict[str, Any]], path: str) -> bool:
    """Bytes on disk over time under churn, with passes shaded, vs live bytes (and vs a
    run without a compactor when the input has one)."""
    runs: dict[str, dict[str, Any]] = {}
    for r in rows:  # the first file holding each variant
        if r.get("bench") == "space_under_churn" and isinstance(r.get("series"), dict):
            runs.setdefault(str(r["impl"]), r)
    if not runs:
        return False
    plt = _pyplot()
    fig, (ax, axr) = plt.subplots(2, 1, figsize=(10, 6.8), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    order = sorted(runs, key=lambda i: (i != "watch", i in _NO_COMPACTOR, i))
    main = runs[order[0]]
    top_ratio = 0.0
    for k, impl in enumerate(order):
        r = runs[impl]
        s = r["series"]
        t = s["t_s"]
        disk = [x / MiB for x in s["disk_bytes"]]
        live = [x / MiB for x in s["live_bytes"]]
        if impl == "watch":
            lab = f"compactor passing every {r.get('interval_s', '?')} s"
        elif impl in _NO_COMPACTOR:
            lab = "without a compactor"
        else:
            lab = impl
        ax.plot(t, disk, color=f"C{k}", lw=1.2, label=f"on disk, {lab}")
        if r is main:
            ax.plot(t, live, color="k", lw=1.0, label="live (the live streams' bytes)")
            held = [x / MiB for x in s.get("held_deleted_bytes") or []]
            if any(held):
                ax.plot(t, held, color="C3", lw=0.8, label="deleted files still held open")
        else:  # the same workload, its own live bytes (close to the first run's)
            ax.plot(t, live, color="0.45", lw=0.8, ls="--", label=f"live, run {lab}")
        floor = 0.1 * max(s["live_bytes"], default=0)  # the ratio is noise while the store fills
        ratio = [
            (x, d / lv) for x, d, lv in zip(t, s["disk_bytes"], s["live_bytes"], strict=True) if lv and lv >= floor
        ]
        axr.plot([x for x, _ in ratio], [y for _, y in ratio], color=f"C{k}", lw=1.0, label=lab)
        top_ratio = max([top_ratio, *(y for _, y in ratio)])
    passes = main.get("pass_series") or []
    for a in (ax, axr):
        for p in passes:
            a.axvspan(p[0], p[1], color="C2", alpha=0.18, lw=0)
    t = main["series"]["t_s"]
    if t:
        axr.axvspan(t[-1] / 2, t[-1], color="0.5", alpha=0.08, lw=0)
        axr.text(
            t[-1] * 0.51,
            0.97,
            "steady state (2nd half of the run)",
            fontsize=7.5,
            va="top",
            color="0.3",
            transform=axr.get_xaxis_transform(),
        )
    axr.axhline(CHURN_TARGET_RATIO, color="0.3", ls=":", lw=1, label=f"target {CHURN_TARGET_RATIO:g}x")
    total = f" of {main['passes_total']}" if main.get("passes_total") else ""
    if passes:
        ax.plot([], [], color="C2", alpha=0.4, lw=6, label=f"compaction pass with inputs ({len(passes)}{total})")
    ax.set_ylabel("MiB")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    axr.set_ylabel("on disk / live")
    axr.set_xlabel("time (s)")
    axr.grid(True, which="both", alpha=0.3)
    if top_ratio > 3:  # a run without a compactor: log axis, so the other stays readable
        axr.set_yscale("log")
        ticks = [t for t in (1, 1.5, 2, 3, 5, 10, 20, 50, 100) if t <= top_ratio * 1.2]
        axr.set_yticks(ticks, [f"{t:g}x" for t in ticks])
        axr.yaxis.set_minor_formatter(plt.NullFormatter())
        axr.set_ylim(0.9, top_ratio * 1.2)
    else:
        axr.set_ylim(bottom=0.9)
    axr.legend(fontsize=7.5, loc="upper left")
    figs = (
        f"with the compactor: steady state {main.get('steady_mean_ratio', '?')}x live on average "
        f"(target <= {CHURN_TARGET_RATIO:g}x), peak {main.get('peak_disk_bytes', 0) / MiB:,.0f} MiB"
    )
    for impl in order[1:]:
        r = runs[impl]
        name = "without" if impl in _NO_COMPACTOR else impl
        peak = r.get("peak_disk_bytes") or max(r["series"]["disk_bytes"], default=0)
        figs += f"; {name}: {r.get('steady_mean_ratio', '?')}x, peak {peak / MiB:,.0f} MiB"
    without = "" if len(runs) > 1 else "; no run without a compactor in the input"
    fig.suptitle(f"Bytes on disk under session churn ({_runs_note([main])}{without})\n{figs}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


PLOTS: list[tuple[str, Callable[[list[dict[str, Any]], str], bool]]] = [
    ("session_latency_cdf.png", plot_session_cdf),
    ("engine_throughput.png", plot_engine_throughput),
    ("compaction_space.png", plot_compaction),
]


def write_plots(rows: list[dict[str, Any]], out_dir: str) -> list[str]:
    """Writes each plot whose figures the rows hold; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, plot in PLOTS:
        path = os.path.join(out_dir, name)
        if plot(rows, path):
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="file(s) written by pytest --benchmark-json")
    ap.add_argument("--out", help="also write the Markdown here")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a (non-aim) target fails")
    ap.add_argument("--plots", metavar="DIR", help="also write PNG plots of the files' figures to DIR")
    args = ap.parse_args(argv)
    texts, ok, all_rows = [], True, []
    for k, path in enumerate(args.json):
        doc, rows = load(path)
        if not rows:
            print(f"{path}: no seglog bench results (was it run with --benchmark-disable?)", file=sys.stderr)
            return 2
        text, passed = render(doc, rows)
        texts.append(text)
        ok = ok and passed
        all_rows += [{**r, "_file": k} for r in rows]
    text = "\n".join(texts)
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.plots:
        try:
            written = write_plots(all_rows, args.plots)
        except ImportError as e:
            print(f"--plots needs matplotlib (the bench extra): {e}", file=sys.stderr)
            return 2
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        if not written:
            print("no figures to plot in the input", file=sys.stderr)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
