"""Full-size generation: the single graph vs the per-step Python loop vs a torch loop.

Run: ``python -m benchmarks.bench_generate [--steps 3] [--threads 2] [--repeats 5] [--json PATH]
[--only coarse|c2f|coarse-tiny] [--contenders ...] [--precisions fp32 int8] [--batches 1 4 8]``.

``--batches 1 4 8`` measures instead the single graph at each batch size, the items holding
their own seeds (per-item keys, as `Vamp.vamp_batch` runs chunks of several clips): items
(chunks) per second and the ratio to the first batch size.

Workloads: coarse (B=1, 4 codebooks x 575 frames: 10 s) and coarse-to-fine (14 x 173: 3 s),
random weights in the real checkpoint formats (written and exported once into ``--workdir``,
shared with bench_forward), a VampNet-style mask (periodic prompt every 7th frame in the lower
codebooks, everything else generated), VampNet's sampling defaults. Contenders, same weights and
thread count:

- ``single graph``: ``KIND.generate.onnx``, one `run` for all steps;
- ``graph by step``: the same graph one `run` per step through its slice inputs (what
  `Generator` does to report progress; same tokens);
- ``python loop``: ``KIND.onnx`` run once per step plus ``_kernels.mask_git_step``
  (`Generator` in Python-loop mode);
- ``torch loop``: our torch module and a plain torch implementation of upstream's step.

``--precisions fp32 int8 fp16`` adds the graph contenders on the int8 / fp16 graphs
(`export.precision`), with the mean KL(fp32 || converted) of the transformer's logits on the
workload (nats per position) and the top-1 agreement, and ratios against the first contender
at fp32.

Each contender runs in its own fresh process (so its peak RSS is its own): one warm-up, then the
median of ``--repeats``. ``--steps`` iterations per run (fewer than VampNet's 36 to keep the run
short; the per-step time is reported and the 36-step total extrapolated from it).
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_workdir, machine_facts, outdated, parser, print_table, write_json
from vampnet_onnx.contracts import PRECISIONS

# name, batch, frames, steps (None: --steps). The tiny model (d 64, 2 layers, real structure) is
# the extra small-shape row: there the per-step host overhead, not the forward, dominates.
WORKLOADS = (("coarse", 1, 575, None), ("c2f", 1, 173, None), ("coarse-tiny", 1, 575, 36))
SETTINGS = {"temperature": 1.0, "top_p": 1.0, "mask_temperature": 10.5}
CONTENDERS = ("single graph", "graph by step", "python loop", "torch loop")


def vampnet_mask(n_codebooks: int, n_conditioning: int, batch: int, frames: int) -> np.ndarray:
    """Periodic prompt (every 7th frame kept in codebooks < 3) over the predicted codebooks."""
    mask = np.ones((batch, n_codebooks, frames), bool)
    mask[:, :3, ::7] = False
    mask[:, :n_conditioning] = False
    return mask


def _child(contender, kind, paths, batch, frames, steps, threads, repeats):
    """Runs in a fresh process: load, warm up, time; returns (seconds list, peak RSS MiB)."""
    import vampnet_onnx

    rng = np.random.default_rng(0)
    if contender == "torch loop":
        import torch

        from benchmarks import torch_vampnet
        from vampnet_onnx.model.transformer import load_transformer

        torch.set_num_threads(threads)
        model = load_transformer(paths["checkpoint"], paths["codec"]).model
        config = model.config
        codes = rng.integers(0, 1024, (batch, config.n_codebooks, frames))
        mask = vampnet_mask(config.n_codebooks, config.n_conditioning_codebooks, batch, frames)
        t_codes, t_mask = torch.from_numpy(codes), torch.from_numpy(mask)
        generator = torch.Generator().manual_seed(0)

        def run():
            with torch.inference_mode():
                torch_vampnet.generate(
                    model,
                    t_codes,
                    t_mask,
                    steps,
                    config.n_conditioning_codebooks,
                    SETTINGS,
                    generator,
                )
    else:
        path = paths["transformer"] if contender == "python loop" else paths["graph"]
        generator = vampnet_onnx.Generator(path, threads=threads)
        on_steps = (lambda n: None) if contender == "graph by step" else None
        codes = rng.integers(0, 1024, (batch, generator.n_codebooks, frames))
        mask = vampnet_mask(
            generator.n_codebooks, generator.n_conditioning_codebooks, batch, frames
        )

        # A batch holds pieces with their own seeds (per-item keys), as `Vamp.vamp_batch` runs.
        seed = list(range(batch)) if batch > 1 else 0

        def run():
            generator.generate(codes, mask, steps=steps, seed=seed, on_steps=on_steps, **SETTINGS)

    run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return seconds, int(line.split()[1]) / 1024
    return seconds, float("nan")


def _kl_child(fp32: Path, int8: Path, batch: int, frames: int, threads: int) -> tuple:
    """Runs in a fresh process: (mean KL(fp32 || int8) nats per position, top-1 agreement) of
    the transformers' logits on the workload's masked codes."""
    import vampnet_onnx
    from benchmarks.common import logits_agreement

    logits = []
    for path in (fp32, int8):
        session = vampnet_onnx.create_session(path, intra_op_threads=threads)
        config = vampnet_onnx.Generator(path).config
        n_codebooks, n_cond = config["n_codebooks"], config["n_conditioning_codebooks"]
        codes = np.random.default_rng(0).integers(0, 1024, (batch, n_codebooks, frames))
        mask = vampnet_mask(n_codebooks, n_cond, batch, frames)
        logits.append(session.run(None, {"codes": np.where(mask, 1024, codes)})[0])
        del session
    return logits_agreement(*logits)


def prepare_converted(workdir: Path, kind: str, paths: dict, precision: str = "int8") -> dict:
    """The `precision` transformer and generation graph of `paths` (fp32), made on first use."""
    from vampnet_onnx.export.generation import export_generation
    from vampnet_onnx.export.precision import convert_transformer

    transformer = workdir / f"{kind}.{precision}.onnx"
    graph = workdir / f"{kind}.{precision}.generate.onnx"
    if outdated(transformer, ("conversion",), paths["transformer"]):
        start = time.perf_counter()
        convert_transformer(paths["transformer"], precision, transformer)
        print(f"wrote {transformer} [{time.perf_counter() - start:.0f} s]", flush=True)
    if outdated(graph, ("generation",), transformer):
        export_generation(transformer, graph)
    return {**paths, "transformer": transformer, "graph": graph}


def prepare(workdir: Path, kind: str) -> dict:
    """Checkpoint, transformer and generation graph of one model, created on first use."""
    from benchmarks.bench_forward import prepare as prepare_transformer
    from vampnet_onnx import configs, testing
    from vampnet_onnx.export.generation import export_generation

    if kind == "coarse-tiny":
        from vampnet_onnx.export.transformer import export_transformer

        codec = workdir / "codec-tiny.pth"
        testing.write_codec_checkpoint(codec, configs.TINY_CODEC_KWARGS, seed=3)
        checkpoint = testing.write_vampnet_checkpoint(
            workdir / f"{kind}.pth", configs.TINY_COARSE_KWARGS, seed=1
        )
        transformer = export_transformer(checkpoint, codec, workdir / f"{kind}.onnx").path
    else:
        kwargs = {"coarse": configs.COARSE_KWARGS, "c2f": configs.C2F_KWARGS}[kind]
        checkpoint, transformer = prepare_transformer(workdir, kind, kwargs)
        codec = workdir / "codec.pth"
    graph = workdir / f"{kind}.generate.onnx"
    if kind == "coarse-tiny" or outdated(graph, ("generation",), transformer):
        start = time.perf_counter()
        export_generation(transformer, graph)
        print(f"wrote {graph} [{time.perf_counter() - start:.0f} s]", flush=True)
    return {
        "checkpoint": checkpoint,
        "codec": workdir / "codec.pth",
        "transformer": transformer,
        "graph": graph,
    }


def batch_rows(args, context) -> int:
    """--batches: items (10-s coarse or 3-s c2f chunks) per second of the single graph at each
    batch size, side by side in one run, each B in its own fresh process."""
    rows = []
    for kind, _, frames, fixed_steps in WORKLOADS:
        if args.only and kind != args.only:
            continue
        paths = prepare(args.workdir, kind)
        steps = fixed_steps or args.steps
        first = len(rows)
        for batch in args.batches:
            with context.Pool(1) as pool:
                seconds, rss = pool.apply(
                    _child,
                    ("single graph", kind, paths, batch, frames, steps, args.threads, args.repeats),
                )
            median = float(np.median(seconds))
            rows.append(
                {
                    "workload": f"{kind} {frames} frames",
                    "batch": batch,
                    "steps": steps,
                    "median_s": median,
                    "items_per_s": batch / median,
                    "peak_rss_mib": rss,
                }
            )
        for row in rows[first:]:
            row["vs_first_batch"] = row["items_per_s"] / rows[first]["items_per_s"]
    print(f"machine: {machine_facts(args.threads)}")
    print_table(
        f"batched generation, median of {args.repeats} after 1 warm-up, {args.threads} threads",
        ["workload", "B", "steps", "median s", "items/s", "vs first B", "peak RSS MiB"],
        [
            [
                r["workload"],
                r["batch"],
                r["steps"],
                r["median_s"],
                r["items_per_s"],
                r["vs_first_batch"],
                r["peak_rss_mib"],
            ]
            for r in rows
        ],
    )
    write_json(args.json, {"machine": machine_facts(args.threads), "rows": rows})
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="generation steps per run (default 3)")
    add_workdir(ap, "about 7 GB")
    ap.add_argument("--only", choices=[w[0] for w in WORKLOADS], help="one workload only")
    ap.add_argument(
        "--contenders",
        nargs="+",
        choices=CONTENDERS,
        default=list(CONTENDERS),
        help="which contenders to run (default: all; the first is the baseline of the ratios)",
    )
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=["fp32"],
        help="graph precisions (default fp32; int8 / fp16 run the graph contenders on those "
        "graphs: fp16 on the CPU only shows its accuracy, its speed is a GPU's question)",
    )
    ap.add_argument(
        "--batches",
        nargs="+",
        type=int,
        metavar="B",
        help="instead of the contenders: the single graph at each batch size B (items with "
        "their own seeds), items per second and the ratio to the first B",
    )
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    if args.batches:
        return batch_rows(args, context)
    rows = []
    for kind, batch, frames, fixed_steps in WORKLOADS:
        if args.only and kind != args.only:
            continue
        paths = {"fp32": prepare(args.workdir, kind)}
        for precision in args.precisions:
            if precision != "fp32":
                paths[precision] = prepare_converted(args.workdir, kind, paths["fp32"], precision)
        steps = fixed_steps or args.steps
        medians = {}
        first = len(rows)
        for precision in args.precisions:
            accuracy = {}
            if precision != "fp32":
                with context.Pool(1) as pool:
                    kl, top1 = pool.apply(
                        _kl_child,
                        (
                            paths["fp32"]["transformer"],
                            paths[precision]["transformer"],
                            batch,
                            frames,
                            args.threads,
                        ),
                    )
                accuracy = {"kl_vs_fp32": kl, "top1_vs_fp32": top1}
            for contender in args.contenders:
                if precision != "fp32" and contender == "torch loop":
                    continue
                key = f"{contender} ({precision})" if precision != "fp32" else contender
                with context.Pool(1) as pool:
                    seconds, rss = pool.apply(
                        _child,
                        (
                            contender,
                            kind,
                            paths[precision],
                            batch,
                            frames,
                            steps,
                            args.threads,
                            args.repeats,
                        ),
                    )
                medians[key] = float(np.median(seconds))
                rows.append(
                    {
                        "workload": f"{kind} B={batch} {frames} frames",
                        "contender": key,
                        "steps": steps,
                        "median_s": medians[key],
                        "per_step_s": medians[key] / steps,
                        "peak_rss_mib": rss,
                        **accuracy,
                    }
                )
        for row in rows[first:]:
            # As before: this contender's time over the first contender's (fp32); and its
            # speed relative to it, which reads better for the precision rows.
            row["graph_speedup"] = row["median_s"] / medians[args.contenders[0]]
            row["speed_vs_first"] = medians[args.contenders[0]] / row["median_s"]
    facts = machine_facts(args.threads)
    print(f"machine: {facts}")
    from benchmarks.bench_pipeline import graphs_mib

    print(
        "graph sizes (weights files included): "
        + ", ".join(
            f"{p.name} {graphs_mib(p.parent, [p.name]):.0f} MiB"
            for p in sorted(args.workdir.glob("*.onnx"))
        )
    )
    print_table(
        f"generation, median of {args.repeats} after 1 warm-up, {args.threads} threads "
        "(x36: the per-step time times VampNet's 36 steps)",
        [
            "workload",
            "contender",
            "steps",
            "median s",
            "per step s",
            "x36 s",
            "graph speedup",
            "speed vs first",
            "KL vs fp32",
            "top-1 vs fp32",
            "peak RSS MiB",
        ],
        [
            [
                r["workload"],
                r["contender"],
                r["steps"],
                r["median_s"],
                r["per_step_s"],
                36 * r["per_step_s"],
                f"{r['graph_speedup']:.2f}x",
                f"{r['speed_vs_first']:.2f}x",
                r.get("kl_vs_fp32", "-"),
                r.get("top1_vs_fp32", "-"),
                r["peak_rss_mib"],
            ]
            for r in rows
        ],
    )
    write_json(
        args.json, {"machine": facts, "steps": args.steps, "repeats": args.repeats, "rows": rows}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
