"""Generation graphs without the op library: the ops' standard-op bodies vs the kernels.

Run: ``python -m benchmarks.bench_op_bodies --models DIR [DIR ...] [--only coarse|c2f]
[--portable] [--threads 2] [--repeats 3] [--json PATH]``.

Each DIR is a models folder that ``vampnet-onnx export`` wrote (full size for figures that
mean something, e.g. one fp32 and one ``--precision int8`` folder). Each generation graph runs
VampNet's workload (B=1, coarse 575 frames or c2f 173, periodic prompt every 7th frame in
codebooks 0-2, the graph's default settings: 36 steps) in two sessions: ``create_session`` on
the file (the library registered: the kernels) and a plain ``onnxruntime.InferenceSession`` on
a copy given today's bodies, in a temporary folder with links to the weights (no library:
onnxruntime expands the ops into their bodies). One warm-up each, then the runs alternate
(`interleaved_medians`); the table gives the medians, their ratio (issue 21's target: at
most 1.15) and whether the two gave the same codes.

``--portable`` (needs the portable extra) adds the graph with the portable variant of the bodies
inlined (written to a temporary folder for the run, `export.common.with_op_bodies`) in a plain
onnxruntime session and in OpenVINO's CPU plugin (`portable.OpenVINOSession`), f32 and
OpenVINO's default precision (bf16 on CPUs with it): their medians, ratios to the kernels and
the share of the kernels' generated codes each gives (docs/portable.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import interleaved_medians, machine_facts, parser, print_table, write_json

FRAMES = {"coarse": 575, "c2f": 173}


def with_bodies(graph: Path, variant: str, folder: Path) -> Path:
    """`graph` with the bodies of `variant` as the exporter writes them today (exact: as
    functions; portable: inlined), written into `folder` with hard links to its weights (a copy
    across filesystems: onnxruntime and OpenVINO refuse weights behind a symbolic link that
    leads out of the graph's folder): folders exported before the bodies, or with others, are
    measured with today's."""
    import onnx

    from vampnet_onnx.export.common import with_op_bodies
    from vampnet_onnx.portable import _external_files, _link_or_copy

    model = onnx.load(str(graph), load_external_data=False)
    model = with_op_bodies(model, inline=variant == "portable", variant=variant)
    if model is None:
        raise SystemExit(f"bench_op_bodies: {graph} uses none of the library's ops")
    copy = folder / f"{variant}.{graph.name}"
    onnx.save(model, str(copy))
    for location in _external_files(model):
        if not (folder / location).exists():
            _link_or_copy((graph.parent / location).resolve(), folder / location)
    return copy


def measure(graph: Path, kind: str, threads: int, repeats: int, portable: bool) -> dict:
    """The medians of the kernel and body sessions on `graph`, and whether their codes agree;
    portable: also the portable variant on onnxruntime and OpenVINO."""
    import onnxruntime as ort

    import vampnet_onnx
    from benchmarks.bench_generate import vampnet_mask
    from vampnet_onnx import contracts

    kernel = vampnet_onnx.create_session(graph, intra_op_threads=threads)
    if vampnet_onnx.op_path(kernel) != "library":
        raise SystemExit(f"bench_op_bodies: the op library must load, got {kernel!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.force_spinning_stop", "1")  # as create_session
    options.log_severity_level = 3
    sessions = {"kernels": kernel}
    # The sessions hold their graphs once made: the folder goes right after.
    with tempfile.TemporaryDirectory(prefix="bench_op_bodies_") as folder:
        exact = with_bodies(graph, "exact", Path(folder))
        sessions["bodies"] = ort.InferenceSession(
            str(exact), options, providers=["CPUExecutionProvider"]
        )
        if portable:
            from vampnet_onnx.portable import OpenVINOSession

            inlined = with_bodies(graph, "portable", Path(folder))
            sessions["portable"] = ort.InferenceSession(
                str(inlined), options, providers=["CPUExecutionProvider"]
            )
            sessions["openvino_f32"] = OpenVINOSession(inlined, threads=threads)
            sessions["openvino_default"] = OpenVINOSession(inlined, precision=None, threads=threads)
    config = contracts.read_metadata(graph, contracts.CONFIG_KEY, "bench_op_bodies")
    n_codebooks, n_conditioning = config["n_codebooks"], config["n_conditioning_codebooks"]
    frames = FRAMES[kind]
    codes = np.random.default_rng(0).integers(0, 1024, (1, n_codebooks, frames))
    feed = {
        "codes": codes,
        "mask": vampnet_mask(n_codebooks, n_conditioning, 1, frames),
        **contracts.GENERATION.feed(**contracts.GENERATION_DEFAULTS),
    }
    outputs = {}

    def runner(name, session):
        def run():
            outputs[name] = session.run(["codes_out"], feed)[0]

        return run

    medians = interleaved_medians({name: runner(name, s) for name, s in sessions.items()}, repeats)
    masked = feed["mask"]
    others = {
        f"{name}_{what}": value
        for name in sessions
        if name not in ("kernels", "bodies")
        for what, value in (
            ("s", medians[name]),
            ("ratio", medians[name] / medians["kernels"]),
            ("agreement", float((outputs[name] == outputs["kernels"])[masked].mean())),
        )
    }
    return {
        "graph": str(graph),
        "precision": config.get("precision", "fp32"),
        "frames": frames,
        "steps": contracts.GENERATION_DEFAULTS["n_steps"],
        "kernels_s": medians["kernels"],
        "bodies_s": medians["bodies"],
        "ratio": medians["bodies"] / medians["kernels"],
        "same_codes": bool(np.array_equal(outputs["kernels"], outputs["bodies"])),
        **others,
    }


def main(argv: list[str] | None = None) -> int:
    from vampnet_onnx.contracts import GENERATION_FILES

    ap = parser(__doc__.splitlines()[0])
    ap.set_defaults(repeats=3)
    ap.add_argument("--models", type=Path, nargs="+", required=True, metavar="DIR")
    ap.add_argument("--only", choices=list(FRAMES), help="one model only")
    ap.add_argument(
        "--portable",
        action="store_true",
        help="also the portable bodies, inlined, on onnxruntime and on OpenVINO (f32 and its "
        "default precision)",
    )
    args = ap.parse_args(argv)
    rows = []
    for folder in args.models:
        for kind in FRAMES:
            graph = folder / GENERATION_FILES[kind]
            if (args.only and kind != args.only) or not graph.is_file():
                continue
            rows.append(
                {"kind": kind, **measure(graph, kind, args.threads, args.repeats, args.portable)}
            )
    facts = machine_facts(args.threads)
    print(f"machine: {facts}")
    print_table(
        f"generation graph, bodies vs kernels, median of {args.repeats} alternating runs after "
        f"1 warm-up each, {args.threads} threads",
        ["graph", "precision", "frames", "steps", "kernels s", "bodies s", "ratio", "same codes"],
        [
            [
                r["graph"],
                r["precision"],
                r["frames"],
                r["steps"],
                r["kernels_s"],
                r["bodies_s"],
                r["ratio"],
                r["same_codes"],
            ]
            for r in rows
        ],
    )
    if args.portable:
        names = ["portable", "openvino_f32", "openvino_default"]
        print_table(
            "the portable bodies, inlined: onnxruntime without the library and OpenVINO "
            "(f32; default precision); agreement: share of the kernels' generated codes",
            ["graph", "kernels s", *[f"{n} {w}" for n in names for w in ("s", "ratio", "agr.")]],
            [
                [r["graph"], r["kernels_s"]]
                + [r[f"{n}_{w}"] for n in names for w in ("s", "ratio", "agreement")]
                for r in rows
            ],
        )
    write_json(args.json, {"machine": facts, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
