"""Shared benchmark plumbing: timing, machine facts, tables and JSON (see shared BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each contender, one warm-up each, then rounds A, B, A, B, ...

    Interleaving spreads the noise of a shared machine evenly over the contenders.
    """
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_facts(threads: int) -> dict:
    import numpy
    import onnxruntime

    facts = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import torch

        facts["torch"] = torch.__version__
    except ImportError:
        facts["torch"] = None
    return facts


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for every contender")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per contender (median)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    return ap


def add_workdir(ap: argparse.ArgumentParser, size: str = "") -> None:
    """--workdir: the full-size random checkpoints and their exports, shared by the benchmarks
    and kept between runs (`size`: e.g. "about 8 GB", for the help)."""
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/vampnet_onnx_bench"),
        help="where the full-size checkpoints and exports are kept"
        + (f" ({size})" if size else ""),
    )


#: The vampnet_onnx modules whose code shapes each kind of cached export (`outdated`).
EXPORTERS = {
    "transformer": ("export.transformer", "export.common", "model.transformer", "checkpoint"),
    "generation": ("export.generation", "export.common", "contracts", "ops"),
    "codec": ("export.codec", "export.common", "model.codec", "checkpoint"),
    "conversion": ("export.precision", "export.common"),
    "vamp": ("export.vamp", "export.common", "contracts", "ops"),
}


def outdated(path: Path, exporters: tuple[str, ...], *inputs: Path) -> bool:
    """Whether a cached export must be made again: `path` is missing, or older than one of
    its `inputs` (the files it is made from) or than the code of one of `exporters` (keys of
    `EXPORTERS`), so that no figure is measured on a graph that today's exporter would write
    differently."""
    import importlib.util

    if not path.exists():
        return True
    modules = [module for exporter in exporters for module in EXPORTERS[exporter]]
    sources = [Path(importlib.util.find_spec(f"vampnet_onnx.{name}").origin) for name in modules]
    newest = max((source.stat().st_mtime for source in [*sources, *inputs]), default=0.0)
    return path.stat().st_mtime < newest


def logits_agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(mean KL(reference || other) in nats per position, top-1 agreement) of two logits
    arrays [..., V], each normalised over its last axis in float64."""

    def log_softmax(logits: np.ndarray) -> np.ndarray:
        x = logits.astype(np.float64)
        x -= x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    p, q = log_softmax(reference), log_softmax(other)
    kl = (np.exp(p) * (p - q)).sum(-1)
    return float(kl.mean()), float((p.argmax(-1) == q.argmax(-1)).mean())


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def write_json(path: Path | None, payload: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path}")
