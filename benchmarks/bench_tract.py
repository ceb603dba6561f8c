"""The transformer forward, the bulk of a generation step, on tract vs onnxruntime.

Run: ``python -m benchmarks.bench_tract --models DIR [--only coarse|c2f] [--threads 2]
[--repeats 3] [--json PATH]``.

DIR is a models folder that ``vampnet-onnx export`` wrote (full size for figures that mean
something). Each transformer graph (``KIND.onnx``) runs VampNet's workload (B=1, coarse 575
frames or c2f 173, MASK where VampNet's periodic prompt generates) in an onnxruntime session
(`create_session`, `--threads` intra-op threads) and in `portable.TractSession` (tract's
own threading, which its Python bindings do not set). One warm-up each,
then the runs alternate (`interleaved_medians`); the table gives the medians, their ratio, the
seconds tract takes to load and optimise the graph, and how far its logits are from
onnxruntime's (`logits_agreement`, and the largest absolute difference).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    interleaved_medians,
    logits_agreement,
    machine_facts,
    parser,
    print_table,
    write_json,
)

FRAMES = {"coarse": 575, "c2f": 173}


def measure(graph: Path, kind: str, threads: int, repeats: int) -> dict:
    """The medians of onnxruntime and tract on `graph`, tract's load time, and the logits'
    agreement."""
    import vampnet_onnx
    from benchmarks.bench_generate import vampnet_mask
    from vampnet_onnx import contracts
    from vampnet_onnx.portable import TractSession

    config = contracts.read_metadata(graph, contracts.CONFIG_KEY, "bench_tract")
    n_codebooks, n_conditioning = config["n_codebooks"], config["n_conditioning_codebooks"]
    frames = FRAMES[kind]
    codes = np.random.default_rng(0).integers(0, 1024, (1, n_codebooks, frames))
    mask = vampnet_mask(n_codebooks, n_conditioning, 1, frames)
    feed = {"codes": np.where(mask, vampnet_onnx.MASK_TOKEN, codes)}
    onnxruntime = vampnet_onnx.create_session(graph, intra_op_threads=threads)
    start = time.perf_counter()
    tract = TractSession(graph)
    load_s = time.perf_counter() - start
    logits = {}

    def runner(name, session):
        def run():
            logits[name] = session.run(["logits"], feed)[0]

        return run

    medians = interleaved_medians(
        {"onnxruntime": runner("onnxruntime", onnxruntime), "tract": runner("tract", tract)},
        repeats,
    )
    kl, top1 = logits_agreement(logits["onnxruntime"], logits["tract"])
    return {
        "graph": str(graph),
        "frames": frames,
        "onnxruntime_s": medians["onnxruntime"],
        "tract_s": medians["tract"],
        "ratio": medians["tract"] / medians["onnxruntime"],
        "tract_load_s": load_s,
        "max_abs_diff": float(np.abs(logits["onnxruntime"] - logits["tract"]).max()),
        "kl": kl,
        "top1": top1,
    }


def main(argv: list[str] | None = None) -> int:
    from vampnet_onnx.contracts import TRANSFORMER_FILES

    ap = parser(__doc__.splitlines()[0])
    ap.set_defaults(repeats=3)
    ap.add_argument("--models", type=Path, required=True, metavar="DIR")
    ap.add_argument("--only", choices=list(FRAMES), help="one model only")
    args = ap.parse_args(argv)
    rows = []
    for kind in FRAMES:
        graph = args.models / TRANSFORMER_FILES[kind]
        if (args.only and kind != args.only) or not graph.is_file():
            continue
        rows.append({"kind": kind, **measure(graph, kind, args.threads, args.repeats)})
    facts = machine_facts(args.threads)
    print(f"machine: {facts}")
    print_table(
        f"transformer forward, tract vs onnxruntime ({args.threads} threads), median of "
        f"{args.repeats} alternating runs after 1 warm-up each",
        ["graph", "frames", "ort s", "tract s", "ratio", "tract load s", "max |diff|", "top-1"],
        [
            [
                r["graph"],
                r["frames"],
                r["onnxruntime_s"],
                r["tract_s"],
                r["ratio"],
                r["tract_load_s"],
                r["max_abs_diff"],
                r["top1"],
            ]
            for r in rows
        ],
    )
    write_json(args.json, {"machine": facts, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
