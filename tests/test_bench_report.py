"""bench/report.py: the Markdown report of several files and the PNG plots (--plots)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPORT = Path(__file__).resolve().parent.parent / "bench" / "report.py"


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _bench(name: str, extra: dict[str, Any], data: list[float] | None = None) -> dict[str, Any]:
    data = data or [0.001, 0.0012, 0.0011]
    srt = sorted(data)
    stats = {"median": srt[len(srt) // 2], "rounds": len(data), "iqr": srt[-1] - srt[0], "data": data}
    return {"name": name, "group": "g", "extra_info": extra, "stats": stats}


def _write(path: Path, benchmarks: list[dict[str, Any]]) -> str:
    doc = {
        "machine_info": {},
        "commit_info": {"id": "0123456789abcdef"},
        "datetime": "2026-01-01T00:00:00",
        "benchmarks": benchmarks,
    }
    path.write_text(json.dumps(doc))
    return str(path)


def _engine(tmp: Path, k: int) -> str:
    rows = []
    for bench, impls in {
        "bulk_append": {"seglog": 1.5e6, "lmdb": 1.1e6, "sqlite": 4e5, "rocksdb": 5e5, "jsonl": 2e4},
        "durable": {"seglog_8threads": 6e4, "seglog_1thread_fsync": 9e3, "sqlite_full_8threads": 5e3},
        "get": {"seglog": 2.3e5, "lmdb": 4e5},
        "scan": {"seglog": 3e6, "jsonl_orjson": 1.2e6},
    }.items():
        for impl, rate in impls.items():
            rows.append(
                _bench(
                    f"test_{bench}[{impl}]",
                    {
                        "bench": bench,
                        "impl": impl,
                        "scale": "small",
                        "events": 1000,
                        "events_per_s": rate * (1 + k / 10),
                    },
                )
            )
    rows.append(_bench("test_open[seglog]", {"bench": "open", "impl": "seglog", "scale": "small", "events": 10}))
    return _write(tmp / f"engine-{k}.json", rows)


def _session(tmp: Path, with_data: bool) -> str:
    rng = random.Random(1)
    rows = []
    for length in (10, 100):
        for impl, pace, base in [
            ("seglog", "idle", 90e-6),
            ("seglog", "busy", 95e-6),
            ("legacy_json", None, 5e-3),
            ("legacy_orjson", None, 2e-3),
        ]:
            data = [base * rng.lognormvariate(0, 0.5) for _ in range(200)]
            us = sorted(x * 1e6 for x in data)
            extra = {
                "bench": "session_foreground",
                "impl": impl,
                "scale": "small",
                "length": length,
                "samples": len(us),
                "p50_us": us[99],
                "p90_us": us[179],
                "p99_us": us[197],
                "max_us": us[-1],
            }
            if pace:
                extra["pace"] = pace
            b = _bench(f"test_foreground[{impl}-{pace}-{length}]", extra, data)
            if not with_data:
                del b["stats"]["data"]
            rows.append(b)
    return _write(tmp / f"session-{with_data}.json", rows)


def _compactor(tmp: Path) -> str:
    t = [i * 0.1 for i in range(300)]
    live = [min(i, 100) * 400_000 for i in range(300)]
    series = {
        "t_s": t,
        "live_bytes": live,
        "disk_bytes": [x * 1.4 + (i % 20) * 100_000 for i, x in enumerate(live)],
        "held_deleted_bytes": [0] * len(t),
    }
    churn = {
        "bench": "space_under_churn",
        "impl": "watch",
        "scale": "small",
        "interval_s": 0.25,
        "series": series,
        "pass_series": [[s, s + 0.1, 1000, 500] for s in (5.0, 10.0, 15.0, 20.0)],
        "steady_mean_ratio": 1.41,
        "peak_disk_bytes": max(series["disk_bytes"]),
    }
    alone = {**churn, "impl": "none", "pass_series": [], "series": {**series, "disk_bytes": [x * 2.0 for x in live]}}
    other = {"bench": "compact_throughput", "impl": "seglog", "scale": "small", "mib_s": 200.0}
    rows = [
        _bench("test_space_under_churn[watch]", churn, [20.0]),
        _bench("test_space_under_churn[none]", alone, [20.0]),
        _bench("test_compact_throughput[warm]", other),
    ]
    return _write(tmp / "compactor.json", rows)


def _is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_of_several_files_without_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _report()
    files = [_engine(tmp_path, 0), _session(tmp_path, True), _compactor(tmp_path)]
    assert report.main([*files, "--out", str(tmp_path / "r.md")]) == 0
    out = capsys.readouterr().out
    assert out.count("# seglog benchmarks") == 3
    assert "| bulk_append | seglog |" in out and "| session_foreground | legacy_json |" in out
    assert (tmp_path / "r.md").read_text() == out
    assert not list(tmp_path.glob("*.png"))


def test_plots_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    report = _report()
    files = [_engine(tmp_path, 0), _engine(tmp_path, 1), _session(tmp_path, True), _compactor(tmp_path)]
    out = tmp_path / "plots"
    assert report.main([*files, "--plots", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["compaction_space.png", "engine_throughput.png", "session_latency_cdf.png"]
    for name in names:
        assert _is_png(out / name), name
        assert (out / name).stat().st_size < 150_000
    assert "wrote " + os.path.join(str(out), "engine_throughput.png") in capsys.readouterr().err


def test_plots_from_percentiles_and_only_what_is_there(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = _report()
    out = tmp_path / "plots"
    assert report.main([_session(tmp_path, False), "--plots", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["session_latency_cdf.png"]
    assert _is_png(out / "session_latency_cdf.png")


def test_plot_styles_and_axis_labels() -> None:
    report = _report()
    styles = report._session_styles(["seglog, idle", "seglog, idle_no_saver", "legacy_json", "legacy_orjson", "x"])
    assert styles["seglog, idle"]["color"] == styles["seglog, idle_no_saver"]["color"]
    assert (styles["seglog, idle"]["ls"], styles["seglog, idle_no_saver"]["ls"]) == ("-", "--")
    assert len({styles[k]["color"] for k in ("seglog, idle", "legacy_json", "legacy_orjson", "x")}) == 4
    assert [report._fmt_axis_rate(x) for x in (5.0, 2e3, 5e5, 1e6, 2e7)] == ["5", "2k", "500k", "1M", "20M"]
