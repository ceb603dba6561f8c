"""Full-size continuation: seconds of compute per second of new music, `extend` against `vamp`.

Run: ``python -m benchmarks.bench_longform [--input-seconds 10] [--seconds 20] [--context 4]
[--steps 36] [--threads 2] [--precisions int8 fp32] [--json PATH]``.

Two contenders on the same models, each in a fresh process (its peak RSS its own, read from
``VmHWM``), one run each (a 10-s int8 vamp takes about a minute here):

* ``extend``: `Vamp.extend` continues a ``--input-seconds`` clip by ``--seconds`` (windows of
  10 s, each starting with ``--context`` seconds of codes: ``docs/generation.md``, "Longer than
  ten seconds"), every new frame generated;
* ``vamp``: `Vamp.vamp` of a ``--seconds`` clip with VampNet's default settings (upstream's
  independent 10-s coarse chunks), the usual way to get that much music out of the model.

Both make ``--seconds`` of music, so their seconds of compute per second of new music compare
directly. The clips are the demo's synthesis (`demo.synth_music`); the models are random
full-size checkpoints in the real formats, exported once into ``--workdir`` (shared with
bench_pipeline; ``--precisions int8`` converts them as ``export --precision int8`` does).
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from benchmarks.bench_pipeline import _peak_rss_without_torch, prepare, prepare_converted
from benchmarks.common import add_workdir, machine_facts, parser, print_table, write_json
from vampnet_onnx.contracts import PRECISIONS


def _child(
    kind: str,
    models: Path,
    input_s: float,
    seconds: float,
    context_s: float,
    steps: int,
    threads: int,
):
    """In a fresh process: load the models, run one `kind` ("extend" or "vamp"); returns (load
    seconds, run seconds, peak RSS MiB)."""
    from vampnet_onnx import demo
    from vampnet_onnx.pipeline import Vamp

    start = time.perf_counter()
    vamp = Vamp(models, threads=threads)
    load_s = time.perf_counter() - start
    rate = 44100
    if kind == "extend":
        x = demo.synth_music(input_s, rate)
        start = time.perf_counter()
        y, _ = vamp.extend(x, rate, seconds=seconds, context_s=context_s, steps=steps)
        run_s = time.perf_counter() - start
        assert y.shape[0] == x.shape[0] + round(seconds * rate)
    else:
        x = demo.synth_music(seconds, rate)
        start = time.perf_counter()
        y, _ = vamp.vamp(x, rate, steps=steps)
        run_s = time.perf_counter() - start
        assert y.shape[0] == x.shape[0]
    return load_s, run_s, _peak_rss_without_torch()


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument(
        "--input-seconds", type=float, default=10.0, help="extend's input clip (default 10)"
    )
    ap.add_argument(
        "--seconds", type=float, default=20.0, help="seconds of music each makes (default 20)"
    )
    ap.add_argument("--context", type=float, default=4.0, help="extend's context_s (default 4)")
    ap.add_argument("--steps", type=int, default=36, help="coarse steps (default 36)")
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=["int8"],
        help="the models' precisions, each a table (default int8)",
    )
    add_workdir(ap, "about 8 GB")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    prepare(args.workdir)
    facts = machine_facts(args.threads)
    print(f"machine: {facts}")
    context = multiprocessing.get_context("spawn")
    results: dict[str, dict] = {}
    for precision in args.precisions:
        models = args.workdir if precision == "fp32" else prepare_converted(args.workdir, precision)
        rows = {}
        for kind in ("extend", "vamp"):
            with context.Pool(1) as pool:  # a fresh process per run: its own peak RSS
                load_s, run_s, rss = pool.apply(
                    _child,
                    (
                        kind,
                        models,
                        args.input_seconds,
                        args.seconds,
                        args.context,
                        args.steps,
                        args.threads,
                    ),
                )
            rows[kind] = {
                "load_s": load_s,
                "run_s": run_s,
                "per_second": run_s / args.seconds,
                "peak_rss_mib": rss,
            }
            print(f"{precision} {kind}: load {load_s:.1f} s, run {run_s:.1f} s", flush=True)
        base = rows["vamp"]
        print_table(
            f"{precision}: {args.seconds:g} s of new music, coarse {args.steps} steps, c2f 2 "
            f"steps, {args.threads} threads, one run each (extend: a {args.input_seconds:g}-s "
            f"input, context {args.context:g} s)",
            ["contender", "run s", "s per s of new music", "vs vamp", "peak RSS MiB", "vs vamp"],
            [
                [
                    kind,
                    r["run_s"],
                    r["per_second"],
                    f"{r['run_s'] / base['run_s']:.2f}x",
                    r["peak_rss_mib"],
                    f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x",
                ]
                for kind, r in rows.items()
            ],
        )
        results[precision] = rows
    write_json(
        args.json,
        {"machine": facts, "args": {k: str(v) for k, v in vars(args).items()}, **results},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
