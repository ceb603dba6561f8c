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

Where DIR also holds a step graph with the portable bodies inlined (``KIND.step.onnx``, from
``export --step-graphs --inline-op-bodies --op-bodies-variant portable``), one generation step
(step 0 of 36, the graph's default settings) runs on tract and on a plain onnxruntime session
(no library: the same bodies) as well; the second table gives their medians, ratio and the share
of codes on which they agree. A generation is 36 such steps.
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


def race(onnxruntime, tract, output: str, feed: dict, repeats: int) -> tuple[dict, dict]:
    """The two sessions' medians on `feed` (`interleaved_medians`) and their ratio, as a row's
    entries, and each one's `output`."""
    outputs = {}

    def runner(name, session):
        def run():
            outputs[name] = session.run([output], feed)[0]

        return run

    runs = {"onnxruntime": runner("onnxruntime", onnxruntime), "tract": runner("tract", tract)}
    medians = interleaved_medians(runs, repeats)
    timings = {
        "onnxruntime_s": medians["onnxruntime"],
        "tract_s": medians["tract"],
        "ratio": medians["tract"] / medians["onnxruntime"],
    }
    return timings, outputs


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
    timings, logits = race(onnxruntime, tract, "logits", feed, repeats)
    kl, top1 = logits_agreement(logits["onnxruntime"], logits["tract"])
    return {
        "graph": str(graph),
        "frames": frames,
        **timings,
        "tract_load_s": load_s,
        "max_abs_diff": float(np.abs(logits["onnxruntime"] - logits["tract"]).max()),
        "kl": kl,
        "top1": top1,
    }


def measure_step(graph: Path, kind: str, threads: int, repeats: int) -> dict:
    """The medians of one step of the portable step graph `graph` on tract and on a plain
    onnxruntime session, and the share of codes they agree on."""
    import onnx
    import onnxruntime as ort

    import vampnet_onnx
    from benchmarks.bench_generate import vampnet_mask
    from vampnet_onnx import contracts
    from vampnet_onnx.portable import TractSession

    props = {p.key: p.value for p in onnx.load(str(graph), load_external_data=False).metadata_props}
    inlined = props.get(contracts.OP_BODIES_KEY)
    variant = props.get(contracts.OP_BODIES_VARIANT_KEY)
    if (inlined, variant) != (contracts.OP_BODIES_INLINED, "portable"):
        raise SystemExit(
            f"bench_tract: {graph} must carry the portable bodies inlined (export --step-graphs "
            f"--inline-op-bodies --op-bodies-variant portable), got {inlined!r}, {variant!r}"
        )
    config = contracts.read_metadata(graph, contracts.CONFIG_KEY, "bench_tract")
    n_codebooks, n_conditioning = config["n_codebooks"], config["n_conditioning_codebooks"]
    frames = FRAMES[kind]
    codes = np.random.default_rng(0).integers(0, 1024, (1, n_codebooks, frames))
    mask = vampnet_mask(n_codebooks, n_conditioning, 1, frames)
    feed = {
        "codes": np.where(mask, vampnet_onnx.MASK_TOKEN, codes),
        "mask": mask,
        "n_masked_start": mask.sum(axis=(1, 2)),
        **contracts.GENERATION_STEP.feed(**contracts.GENERATION_DEFAULTS, step=0),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    onnxruntime = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    tract = TractSession(graph)
    timings, outputs = race(onnxruntime, tract, "codes_out", feed, repeats)
    return {
        "graph": str(graph),
        "frames": frames,
        **timings,
        "agreement": float((outputs["onnxruntime"] == outputs["tract"]).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    from vampnet_onnx.contracts import STEP_FILES, TRANSFORMER_FILES

    ap = parser(__doc__.splitlines()[0])
    ap.set_defaults(repeats=3)
    ap.add_argument("--models", type=Path, required=True, metavar="DIR")
    ap.add_argument("--only", choices=list(FRAMES), help="one model only")
    args = ap.parse_args(argv)
    rows, step_rows = [], []
    for kind in FRAMES:
        graph = args.models / TRANSFORMER_FILES[kind]
        if (args.only and kind != args.only) or not graph.is_file():
            continue
        rows.append({"kind": kind, **measure(graph, kind, args.threads, args.repeats)})
        step = args.models / STEP_FILES[kind]
        if step.is_file():
            step_rows.append({"kind": kind, **measure_step(step, kind, args.threads, args.repeats)})
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
    if step_rows:
        print_table(
            f"one generation step (step 0 of 36), portable bodies inlined, tract vs onnxruntime "
            f"without the library ({args.threads} threads), median of {args.repeats} "
            "alternating runs after 1 warm-up each",
            ["graph", "frames", "ort s", "tract s", "ratio", "same codes"],
            [
                [
                    r["graph"],
                    r["frames"],
                    r["onnxruntime_s"],
                    r["tract_s"],
                    r["ratio"],
                    r["agreement"],
                ]
                for r in step_rows
            ],
        )
    write_json(args.json, {"machine": facts, "rows": rows, "step_rows": step_rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
