"""Full-size vamp pipeline: seconds per stage, real-time factor and peak RSS.

Run: ``python -m benchmarks.bench_pipeline [--seconds 10] [--steps 36] [--threads 2]
[--repeats 1] [--single-graph] [--precisions fp32 int8 fp16] [--json PATH]``.

Random weights in the real checkpoint formats at full size (coarse, c2f and codec.pth, written
and exported once into ``--workdir``, shared with bench_forward / bench_generate; the codec
graphs are exported there on first use), the `vampnet_onnx.pipeline.Vamp` stages on a
synthesised clip (`demo.synth_music`) with VampNet's default mask and sampling settings.
``--steps`` sets the coarse steps (VampNet: 36; a full run takes minutes); c2f always runs
upstream's 2 steps. The stages run in a fresh process without torch, so its peak RSS is the
pipeline's own. With ``--single-graph`` the same clip also runs through ``vamp.onnx``
(`export.vamp`, exported into the workdir on first use, weights in ``vamp.onnx.data``) in a
second fresh process: preprocess, one `run`, restore; the two are compared side by side (same
input, seed and settings, so the same codes). ``--precisions fp32 int8 fp16`` adds the pipeline
on the graphs of each precision, as ``vampnet-onnx export --precision`` writes them
(`export.precision`): int8 generation graphs with the codec computing in fp32 from fp16 weights,
or fp16 generation and codec graphs (fp16 on the CPU shows what the codec's share becomes, not
a GPU's speed), from a models folder ``WORKDIR/PRECISION`` of links; each table's encode and
decode rows are the codec's share. Beside the peak RSS: the bytes of the graph files a contender
loads (weights files included) and the peak's ratio to them. Upstream is not a contender here:
it needs VampNet's torch stack and a GPU for comparable times.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import add_workdir, machine_facts, outdated, parser, print_table, write_json
from vampnet_onnx.contracts import PRECISIONS

STAGES = ("preprocess + mask", "encode", "coarse", "c2f", "decode", "restore")


def _child(workdir: Path, seconds: float, steps: int, threads: int, repeats: int):
    """In a fresh process: load, run the stages `repeats` times; returns (per-stage lists of
    seconds, load seconds, peak RSS MiB)."""
    from vampnet_onnx import audio, contracts, demo
    from vampnet_onnx.pipeline import Vamp

    start = time.perf_counter()
    vamp = Vamp(workdir, threads=threads)
    load_s = time.perf_counter() - start
    sample_rate = 44100
    samples = demo.synth_music(seconds, sample_rate)
    # VampNet's default mask (the single graph's defaults), no onset mask.
    mask_settings = {name: contracts.VAMP_DEFAULTS[name] for name in contracts.VAMP_LIMITS}
    mask_settings["onset_mask_width"] = 0
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for _ in range(repeats):
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            times[stage].append(now - clock)
            clock = now

        x, info = audio.preprocess(samples, sample_rate)
        mask = vamp.build_mask(x, 0, **mask_settings)
        lap("preprocess + mask")
        codes = vamp.encode(x)
        lap("encode")
        codes = vamp.coarse_vamp(codes, mask, 0, steps=steps)
        lap("coarse")
        codes = vamp.coarse_to_fine(codes, mask, 0)
        lap("c2f")
        y = vamp.decode(codes, x.shape[0])
        lap("decode")
        audio.restore(y, info)
        lap("restore")
    return times, load_s, _peak_rss_without_torch()


def _peak_rss_without_torch() -> float:
    assert "torch" not in sys.modules
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


SINGLE_STAGES = ("preprocess", "vamp.onnx run", "restore")


def _child_single(workdir: Path, seconds: float, steps: int, threads: int, repeats: int):
    """`_child` for the single graph: (per-stage lists of seconds, load seconds, peak RSS MiB)."""
    import vampnet_onnx
    from vampnet_onnx import audio, contracts, demo

    start = time.perf_counter()
    session = vampnet_onnx.create_session(workdir / "vamp.onnx", intra_op_threads=threads)
    load_s = time.perf_counter() - start
    sample_rate = 44100
    samples = demo.synth_music(seconds, sample_rate)
    settings = contracts.VAMP_DEFAULTS | {"n_steps": steps, "seed": 0}
    times: dict[str, list[float]] = {stage: [] for stage in SINGLE_STAGES}
    for _ in range(repeats):
        clock = time.perf_counter()
        x, info = audio.preprocess(samples, sample_rate)
        times["preprocess"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        y = session.run(["audio_out"], {"audio": x, **contracts.VAMP.feed(**settings)})[0]
        times["vamp.onnx run"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        audio.restore(y, info)
        times["restore"].append(time.perf_counter() - clock)
    return times, load_s, _peak_rss_without_torch()


def prepare(workdir: Path) -> None:
    """Full-size coarse/c2f generation graphs and codec graphs in `workdir`, made on first use."""
    from benchmarks.bench_generate import prepare as prepare_generation
    from vampnet_onnx.export.codec import export_codec

    for kind in ("coarse", "c2f"):
        prepare_generation(workdir, kind)
    codec = workdir / "codec.pth"
    if any(
        outdated(workdir / f"codec.{part}.onnx", ("codec",), codec) for part in ("encode", "decode")
    ):
        start = time.perf_counter()
        result = export_codec(workdir / "codec.pth", workdir)
        print(
            f"wrote {result.encode_path} and {result.decode_path} "
            f"[{time.perf_counter() - start:.0f} s]",
            flush=True,
        )


def prepare_converted(workdir: Path, precision: str) -> Path:
    """``workdir/PRECISION``: the `precision` generation graphs and the codec graphs that
    ``export --precision`` writes with them (`prepare_codec`), as links."""
    from benchmarks.bench_generate import prepare as prepare_generation
    from benchmarks.bench_generate import prepare_converted as prepare_generation_converted
    from vampnet_onnx.contracts import DECODE_FILE, ENCODE_FILE, GENERATION_FILES

    folder = workdir / precision
    folder.mkdir(exist_ok=True)
    targets = {
        name: prepare_codec(workdir / name, precision) for name in (ENCODE_FILE, DECODE_FILE)
    }
    for kind in ("coarse", "c2f"):
        fp32 = prepare_generation(workdir, kind)
        paths = prepare_generation_converted(workdir, kind, fp32, precision)
        targets[GENERATION_FILES[kind]] = paths["graph"]
    from vampnet_onnx.export.common import data_files

    for name, target in targets.items():
        # A graph finds its weights files by the names it was saved with, beside the link (a
        # generation graph reads its transformer's).
        links = {folder / name: target, **{folder / data.name: data for data in data_files(target)}}
        for link, source in links.items():
            link.unlink(missing_ok=True)
            link.symlink_to(source)
    return folder


def prepare_codec(graph: Path, precision: str) -> Path:
    """``codec.PART.PRECISION.onnx`` beside the fp32 codec graph, the codec graph that ``export
    --precision PRECISION`` writes (`export.precision.convert_codec`), made on first use."""
    from vampnet_onnx.export.precision import convert_codec

    converted = graph.with_name(graph.name.replace(".onnx", f".{precision}.onnx"))
    if outdated(converted, ("conversion",), graph):
        start = time.perf_counter()
        convert_codec(graph, precision, converted)
        print(f"wrote {converted} [{time.perf_counter() - start:.0f} s]", flush=True)
    return converted


def prepare_single(workdir: Path) -> None:
    """``vamp.onnx`` (+ ``vamp.onnx.data``) in `workdir`, exported again when a source is newer."""
    from vampnet_onnx.contracts import SOURCE_FILES, VAMP_FILE
    from vampnet_onnx.export.vamp import export_vamp

    graph = workdir / VAMP_FILE
    if outdated(graph, ("vamp",), *(workdir / name for name in SOURCE_FILES)):
        start = time.perf_counter()
        result = export_vamp(workdir)
        print(f"wrote {result.path} and {result.data_path} [{time.perf_counter() - start:.0f} s]")


def graphs_mib(folder: Path, names: list[str]) -> float:
    """MiB of the graph files `names` in `folder` and of the weights files they read."""
    from vampnet_onnx.export.common import data_files

    files = {f for name in names for f in (folder / name, *data_files(folder / name))}
    return sum(f.stat().st_size for f in files) / 2**20


def _rows(times: dict[str, list[float]], seconds: float) -> list[dict]:
    medians = {stage: statistics.median(values) for stage, values in times.items()}
    total = sum(medians.values())
    rows = [
        {"stage": stage, "median_s": s, "share": s / total, "rtf": s / seconds}
        for stage, s in medians.items()
    ]
    totals = [sum(run) for run in zip(*times.values())]
    rows.append(
        {
            "stage": "total",
            "median_s": total,
            "share": 1.0,
            "rtf": total / seconds,
            "runs_s": totals,
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.set_defaults(repeats=1)
    ap.add_argument("--seconds", type=float, default=10.0, help="input length (default 10)")
    ap.add_argument("--steps", type=int, default=36, help="coarse steps (default 36)")
    add_workdir(ap, "about 8 GB")
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=["fp32"],
        help="run the pipeline on the graphs of each precision (default fp32)",
    )
    ap.add_argument(
        "--single-graph",
        action="store_true",
        help="also run vamp.onnx on the same clip and compare (exported on first use)",
    )
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    prepare(args.workdir)
    contenders = []
    from vampnet_onnx.contracts import DECODE_FILE, ENCODE_FILE, GENERATION_FILES, VAMP_FILE

    four_graphs = [*GENERATION_FILES.values(), ENCODE_FILE, DECODE_FILE]
    for precision in args.precisions:
        if precision == "fp32":
            contenders.append(("pipeline (4 graphs)", _child, args.workdir, four_graphs))
        else:
            folder = prepare_converted(args.workdir, precision)
            contenders.append((f"pipeline (4 graphs, {precision})", _child, folder, four_graphs))
    if args.single_graph:
        prepare_single(args.workdir)
        contenders.append(("single graph", _child_single, args.workdir, [VAMP_FILE]))
    context = multiprocessing.get_context("spawn")
    facts = machine_facts(args.threads)
    print(f"machine: {facts}")
    results = {}
    for name, child, models, graphs in contenders:
        with context.Pool(1) as pool:  # a fresh process per contender: its own peak RSS
            times, load_s, rss = pool.apply(
                child, (models, args.seconds, args.steps, args.threads, args.repeats)
            )
        rows = _rows(times, args.seconds)
        files_mib = graphs_mib(models, graphs)
        results[name] = {
            "load_s": load_s,
            "peak_rss_mib": rss,
            "graphs_mib": files_mib,
            "peak_rss_vs_graphs": rss / files_mib,
            "rows": rows,
        }
        runs = ", ".join(f"{t:.1f}" for t in rows[-1]["runs_s"])
        print(
            f"{name}: session load {load_s:.1f} s; peak RSS {rss:.0f} MiB = "
            f"{rss / files_mib:.2f}x its graph files ({files_mib:.0f} MiB); totals {runs} s"
        )
        print_table(
            f"{name}, {args.seconds:g} s of audio, coarse {args.steps} steps, c2f 2 steps, "
            f"median of {args.repeats}, {args.threads} threads (RTF = seconds per second of "
            "audio)",
            ["stage", "median s", "share", "RTF"],
            [[r["stage"], r["median_s"], f"{100 * r['share']:.0f} %", r["rtf"]] for r in rows],
        )
    if len(results) > 1:
        base = next(iter(results.values()))["rows"][-1]["median_s"]
        print_table(
            "side by side (total: sum of the stage medians)",
            ["contender", "total s", "RTF", "peak RSS MiB", "graph files MiB", "speed vs first"],
            [
                [
                    name,
                    r["rows"][-1]["median_s"],
                    r["rows"][-1]["rtf"],
                    r["peak_rss_mib"],
                    r["graphs_mib"],
                    f"{base / r['rows'][-1]['median_s']:.2f}x",
                ]
                for name, r in results.items()
            ],
        )
    write_json(
        args.json,
        {
            "machine": facts,
            "seconds": args.seconds,
            "steps": args.steps,
            "repeats": args.repeats,
            "contenders": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
