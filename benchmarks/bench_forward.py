"""Full-size transformer forward: ONNX Runtime vs our torch module, against the matmul peak.

Run: ``python -m benchmarks.bench_forward [--threads 2] [--repeats 5] [--precisions fp32 int8
fp16] [--json PATH]``.

Random-weight checkpoints in the real formats (coarse: 20 layers, d 1280, 4 codebooks;
c2f: 16 layers, 14 codebooks; LAC 768x codec) are written to ``--workdir`` and exported once
(both are kept for later runs: about 4 GB). Both contenders run in this process with the same
thread count: one warm-up each, then ``--repeats`` interleaved rounds, median reported. The
physical limit beside it: a plain 2048 x 2048 fp32 matmul with numpy (OpenBLAS, in a child
process so its thread count can be pinned), torch and ONNX Runtime, measured before and after.
Peak RSS is measured per contender in a fresh process.

``--precisions fp32 int8 fp16`` adds ONNX Runtime on the int8 / fp16 transformers
(`export.precision`, converted once into the workdir as bench_generate does) to the same
interleaved rounds, with the mean KL(fp32 || converted) of their logits (nats per position) and
the top-1 agreement; fp16 on the CPU shows its accuracy, its speed is a GPU's question. Their
GFLOP/s count the same multiply-adds, so "% peak" stays a comparison with the fp32 matmul.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from benchmarks.common import (
    add_workdir,
    interleaved_medians,
    logits_agreement,
    machine_facts,
    median_seconds,
    outdated,
    parser,
    print_table,
    write_json,
)
from vampnet_onnx import configs, testing
from vampnet_onnx.checkpoint import VampNetConfig
from vampnet_onnx.contracts import PRECISIONS
from vampnet_onnx.export.transformer import export_transformer
from vampnet_onnx.model.transformer import load_transformer

MATMUL_N = 2048
WORKLOADS = (  # (kind, constructor kwargs, batch, frames)
    ("coarse", configs.COARSE_KWARGS, 1, 575),  # 10 s at 44.1 kHz, hop 768
    ("c2f", configs.C2F_KWARGS, 1, 173),  # 3 s
)


def forward_flop(config: VampNetConfig, batch: int, t: int) -> int:
    """Multiply-adds x 2 of one forward: projections, attention products, classifier."""
    d = config.d_model
    per_layer = 2 * t * (3 * d * d + d * d + d * 4 * d + 2 * d * d) + 2 * 2 * t * t * d
    classifier = 2 * t * d * config.n_predict_codebooks * config.vocab_size
    return batch * (config.n_layers * per_layer + classifier)


def inference_peak_rss_mb(
    contender: str, ckpt: Path, codec: Path, onnx_path: Path, codes: np.ndarray, threads: int
) -> float:
    """Peak RSS (MB) of one contender alone ("torch", or "onnxruntime" on `onnx_path` of any
    precision): weights resident plus one forward's activations.

    Runs in a fresh process; the high-water mark is reset after loading, so the transient
    float64 fold of the torch loader and ORT's session-creation copies are not counted.
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_rss_child, (contender, ckpt, codec, onnx_path, codes, threads))


def _rss_child(contender, ckpt, codec, onnx_path, codes, threads) -> float:
    torch.set_num_threads(threads)
    if contender == "onnxruntime":
        session = ort_session(onnx_path, threads)
        run = lambda: session.run(None, {"codes": codes})  # noqa: E731
    else:
        model = load_transformer(ckpt, codec).model
        codes_t = torch.from_numpy(codes)
        run = lambda: model(codes_t)  # noqa: E731
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    with torch.inference_mode():
        run()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("_rss_child: /proc/self/status must have VmHWM, got none")


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def matmul_peaks(threads: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a 2048^2 fp32 matmul with numpy, torch and ONNX Runtime."""
    flop = 2 * MATMUL_N**3
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32) for _ in range(2))
    code = (
        "import numpy as np, time, statistics\n"
        f"a = np.random.default_rng(0).standard_normal(({MATMUL_N}, {MATMUL_N}), "
        "dtype=np.float32)\n"
        "a @ a\nts = []\n"
        f"for _ in range({repeats}):\n"
        "    s = time.perf_counter(); a @ a; ts.append(time.perf_counter() - s)\n"
        "print(statistics.median(ts))\n"
    )
    env = {**os.environ, **{v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}}
    numpy_s = float(
        subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
        ).stdout
    )
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch_s = median_seconds(lambda: ta @ tb, repeats)
    x = onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [MATMUL_N, MATMUL_N])
    y = onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [MATMUL_N, MATMUL_N])
    z = onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [MATMUL_N, MATMUL_N])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", [x, y], [z]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    ort_s = median_seconds(lambda: session.run(None, {"a": a, "b": b}), repeats)
    return {
        name: flop / s / 1e9
        for name, s in (("numpy", numpy_s), ("torch", torch_s), ("onnxruntime", ort_s))
    }


def prepare(workdir: Path, kind: str, kwargs: dict) -> tuple[Path, Path]:
    """(checkpoint, exported model) for one workload, created on first use."""
    codec = workdir / "codec.pth"
    if not codec.exists():
        testing.write_codec_checkpoint(codec, configs.CODEC_KWARGS, seed=3)
    ckpt, model = workdir / f"{kind}.pth", workdir / f"{kind}.onnx"
    if not ckpt.exists():
        testing.write_vampnet_checkpoint(ckpt, kwargs, seed={"coarse": 1, "c2f": 2}[kind])
    if outdated(model, ("transformer",), ckpt, codec):
        start = time.perf_counter()
        result = export_transformer(ckpt, codec, model)
        print(f"{result.report.summary()}  [{time.perf_counter() - start:.0f} s]", flush=True)
    return ckpt, model


def prepare_converted(workdir: Path, kind: str, fp32: Path, precision: str) -> Path:
    """``KIND.PRECISION.onnx`` from the fp32 transformer, made on first use (bench_generate's
    file too)."""
    from vampnet_onnx.export.precision import convert_transformer

    path = workdir / f"{kind}.{precision}.onnx"
    if outdated(path, ("conversion",), fp32):
        start = time.perf_counter()
        convert_transformer(fp32, precision, path)
        print(f"wrote {path} [{time.perf_counter() - start:.0f} s]", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.splitlines()[0])
    add_workdir(ap, "about 4 GB")
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=["fp32"],
        help="ONNX Runtime on the transformers of each precision (default fp32; fp32 always "
        "runs: it is the baseline of the accuracy columns)",
    )
    args = ap.parse_args(argv)
    if args.repeats < 5:
        ap.error(f"--repeats must be >= 5, got {args.repeats}")
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)

    peaks = matmul_peaks(args.threads, args.repeats)
    rows = []
    for kind, kwargs, batch, t in WORKLOADS:
        ckpt, onnx_path = prepare(args.workdir, kind, kwargs)
        config = VampNetConfig.from_kwargs(kwargs)
        flop = forward_flop(config, batch, t)
        codes = np.random.default_rng(0).integers(0, 1025, (batch, config.n_codebooks, t))
        paths = {"onnxruntime": onnx_path}
        for precision in args.precisions:
            if precision != "fp32":
                converted = prepare_converted(args.workdir, kind, onnx_path, precision)
                paths[f"onnxruntime ({precision})"] = converted
        sessions = {name: ort_session(path, args.threads) for name, path in paths.items()}
        model = load_transformer(ckpt, args.workdir / "codec.pth").model
        codes_t = torch.from_numpy(codes)
        runs = {
            name: lambda s=session, c=codes: s.run(None, {"codes": c})[0]
            for name, session in sessions.items()
        }
        with torch.inference_mode():
            seconds = interleaved_medians(
                {
                    "onnxruntime": runs.pop("onnxruntime"),
                    "torch": lambda m=model, c=codes_t: m(c),
                    **runs,
                },
                args.repeats,
            )
        reference = sessions["onnxruntime"].run(None, {"codes": codes})[0]
        accuracy = {}
        for name, session in sessions.items():
            if name != "onnxruntime":
                kl, top1 = logits_agreement(reference, session.run(None, {"codes": codes})[0])
                accuracy[name] = {"kl_vs_fp32": kl, "top1_vs_fp32": top1}
        del sessions, model, runs
        gc.collect()
        for contender, median in seconds.items():
            rss = inference_peak_rss_mb(
                "torch" if contender == "torch" else "onnxruntime",
                ckpt,
                args.workdir / "codec.pth",
                paths.get(contender, onnx_path),
                codes,
                args.threads,
            )
            rows.append(
                {
                    "workload": f"{kind} B={batch} T={t}",
                    "contender": contender,
                    "median_ms": median * 1e3,
                    "gflop": flop / 1e9,
                    "gflop_per_s": flop / median / 1e9,
                    "speedup_vs_torch": seconds["torch"] / median,
                    "speed_vs_fp32": seconds["onnxruntime"] / median,
                    "peak_rss_mb": rss,
                    **accuracy.get(contender, {}),
                }
            )
    # Taken before and after the workloads: the best of both is the machine's peak.
    after = matmul_peaks(args.threads, args.repeats)
    peaks = {name: max(peaks[name], after[name]) for name in peaks}
    best_peak = max(peaks.values())
    for row in rows:
        row["fraction_of_matmul_peak"] = row["gflop_per_s"] / best_peak

    facts = machine_facts(args.threads)
    print(f"machine: {facts}")
    print("matmul 2048^2 fp32 GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()))
    print_table(
        "transformer forward (% peak: of the fastest fp32 matmul, best of before and after; "
        "vs fp32: ORT fp32 time over this one's; KL: mean KL(fp32 || this) of the logits, nats "
        "per position; peak RSS: each contender alone in a fresh process, weights + one "
        "forward)",
        [
            "workload",
            "contender",
            "median ms",
            "GFLOP",
            "GFLOP/s",
            "% peak",
            "vs torch",
            "vs fp32",
            "KL",
            "top-1",
            "RSS MB",
        ],
        [
            [
                r["workload"],
                r["contender"],
                r["median_ms"],
                r["gflop"],
                r["gflop_per_s"],
                f"{100 * r['fraction_of_matmul_peak']:.0f}%",
                f"{r['speedup_vs_torch']:.2f}x",
                f"{r['speed_vs_fp32']:.2f}x",
                f"{r['kl_vs_fp32']:.2e}" if "kl_vs_fp32" in r else "-",
                f"{100 * r['top1_vs_fp32']:.1f} %" if "top1_vs_fp32" in r else "-",
                r["peak_rss_mb"],
            ]
            for r in rows
        ],
    )
    write_json(
        args.json,
        {"machine": facts, "matmul_gflop_per_s": peaks, "repeats": args.repeats, "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
