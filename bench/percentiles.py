"""Percentiles of latency samples, as the benchmarks report them in ``extra_info``."""

from __future__ import annotations

import math
from typing import Any


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_info(samples_ns: list[int]) -> dict[str, Any]:
    """Count, p50, p90, p99, p99.9 and max (us, one decimal) of samples in ns."""
    us = sorted(s / 1000 for s in samples_ns)
    return {
        "samples": len(us),
        "p50_us": round(pct(us, 50), 1),
        "p90_us": round(pct(us, 90), 1),
        "p99_us": round(pct(us, 99), 1),
        "p999_us": round(pct(us, 99.9), 1),
        "max_us": round(us[-1], 1) if us else None,
    }
