"""SampleTokens and MaskGitStep at VampNet's sizes: the ORT ops vs the numpy twin vs plain torch.

Run: ``python -m benchmarks.bench_ops [--threads 2] [--repeats 5] [--json PATH]``.

Workloads: coarse (B=1, 4 codebooks x 575 frames, V=1024) and coarse-to-fine (10 x 173), every
position masked (step 0 of 36: the most rows to sample), VampNet's defaults (temperature 1,
mask_temperature 10.5) and a row with top_p 0.9. Contenders run in this process with the same
thread count: the ORT op (intra_op_num_threads), the kernels module (its std::thread pool), the
numpy twin (`vampnet_onnx.reference`, numpy's own threading) and a plain torch implementation of
upstream's code path (torch.set_num_threads). Ratios are against the numpy twin. Physical limit:
the logits' bytes over the op's time, against a numpy copy's bandwidth; and a full-size forward
pass's FLOPs at the measured matmul peak, to put a step's cost in proportion.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

import vampnet_onnx
from vampnet_onnx import _kernels, ops, reference

from .common import machine_facts, median_seconds, parser, print_table, write_json

V = 1024
WORKLOADS = (  # name, predicted codebooks, frames, forward FLOPs (2 * weights * frames)
    ("coarse 4x575", 4, 575, 2 * 333_026_464 * 575),
    ("c2f 10x173", 10, 173, 2 * 275_459_312 * 173),
)
SETTINGS = (
    ("defaults", dict(temperature=1.0, top_k=0, top_p=1.0)),
    ("top_p 0.9", dict(temperature=1.0, top_k=0, top_p=0.9)),
)


def _model(schema: ops.OpSchema) -> bytes:
    inputs = [helper.make_tensor_value_info(p.name, p.types[0], None) for p in schema.inputs]
    outputs = [helper.make_tensor_value_info(p.name, p.types[0], None) for p in schema.outputs]
    node = schema.make_node(schema.input_names, schema.output_names)
    graph = helper.make_graph([node], schema.name, inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), ops.opset_import()]
    )
    return model.SerializeToString()


def _contenders(sessions, torch, logits, codes, mask, settings, threads) -> dict:
    """The timed callables of one workload and setting, keyed by (op, contender)."""
    n0 = mask.sum(axis=(1, 2)).astype(np.int64)
    flat = logits.reshape(-1, V)
    step_feed = {
        "logits": logits,
        "codes": codes,
        "mask": mask,
        "n_masked_start": n0,
        **ops.MASK_GIT_STEP.feed(
            **settings, step=0, n_steps=36, mask_temperature=10.5, seed=1, batch_offset=0
        ),
    }
    sample_feed = ops.SAMPLE_TOKENS.feed(logits=flat, **settings, seed=1, offset=0, first_row=0)
    contenders = {
        ("SampleTokens", "ORT op"): lambda: sessions[0].run(None, sample_feed),
        ("SampleTokens", "kernels module"): lambda: _kernels.sample_tokens(
            flat, seed=1, threads=threads, **settings
        ),
        ("SampleTokens", "numpy twin"): lambda: reference.sample_tokens(flat, seed=1, **settings),
        ("MaskGitStep", "ORT op"): lambda: sessions[1].run(None, step_feed),
        ("MaskGitStep", "kernels module"): lambda: _kernels.mask_git_step(
            logits,
            codes,
            mask,
            0,
            36,
            seed=1,
            n_masked_start=n0,
            threads=threads,
            **settings,
        ),
        ("MaskGitStep", "numpy twin"): lambda: reference.mask_git_step(
            logits, codes, mask, 0, 36, seed=1, n_masked_start=n0, **settings
        ),
    }
    if torch is not None:
        t_logits, t_codes = torch.from_numpy(logits), torch.from_numpy(codes)
        t_mask, t_flat = torch.from_numpy(mask), torch.from_numpy(flat)
        generator = torch.Generator().manual_seed(1)
        from . import torch_vampnet

        t_n0 = torch.from_numpy(n0)
        step_settings = {**settings, "mask_temperature": 10.5}
        contenders[("SampleTokens", "torch")] = lambda: torch_vampnet.sample(
            t_flat, settings["temperature"], settings["top_p"], generator
        )
        contenders[("MaskGitStep", "torch")] = lambda: torch_vampnet.mask_git_step(
            t_logits, t_codes, t_mask, 0, 36, t_n0, step_settings, generator
        )
    return contenders


def _copy_bandwidth_gbs(repeats: int) -> float:
    source = np.ones(64 * 2**20, np.float32)  # 256 MiB
    target = np.empty_like(source)
    seconds = median_seconds(lambda: np.copyto(target, source), repeats)
    return 2 * source.nbytes / seconds / 1e9  # read + write


def _matmul_gflops(repeats: int) -> float:
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    seconds = median_seconds(lambda: a @ a, repeats)
    return 2 * 2048**3 / seconds / 1e9


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    sessions = [
        vampnet_onnx.create_session(_model(schema), intra_op_threads=args.threads)
        for schema in (ops.SAMPLE_TOKENS, ops.MASK_GIT_STEP)
    ]
    bandwidth = _copy_bandwidth_gbs(args.repeats)
    matmul = _matmul_gflops(args.repeats)
    rng = np.random.default_rng(0)
    rows_out, results = [], []
    for workload, predicted, frames, forward_flops in WORKLOADS:
        logits = (rng.standard_normal((1, frames, predicted, V)) * 3).astype(np.float32)
        codes = rng.integers(0, V, (1, predicted, frames)).astype(np.int64)
        mask = np.ones((1, predicted, frames), bool)
        forward_seconds = forward_flops / (matmul * 1e9)
        for label, settings in SETTINGS:
            contenders = _contenders(sessions, torch, logits, codes, mask, settings, args.threads)
            timings = {key: median_seconds(fn, args.repeats) for key, fn in contenders.items()}
            for op_name in ("SampleTokens", "MaskGitStep"):
                twin = timings[(op_name, "numpy twin")]
                for (name, contender), seconds in timings.items():
                    if name != op_name:
                        continue
                    gbs = logits.nbytes / seconds / 1e9
                    row = dict(
                        workload=workload,
                        settings=label,
                        op=op_name,
                        contender=contender,
                        ms=seconds * 1e3,
                        speedup_vs_twin=twin / seconds,
                        logits_gbs=gbs,
                        pct_of_forward=100 * seconds / forward_seconds,
                    )
                    results.append(row)
                    rows_out.append(
                        [
                            workload,
                            label,
                            op_name,
                            contender,
                            row["ms"],
                            f"{row['speedup_vs_twin']:.1f}x",
                            gbs,
                            f"{row['pct_of_forward']:.3f}%",
                        ]
                    )
    facts = machine_facts(args.threads)
    print(f"machine: {facts}")
    print(f"copy bandwidth {bandwidth:.1f} GB/s, numpy 2048^2 fp32 matmul {matmul:.1f} GFLOP/s")
    print_table(
        f"ops, median of {args.repeats} after 1 warm-up, {args.threads} threads "
        "(% of forward: time over the forward pass's FLOPs at the matmul peak)",
        ["workload", "settings", "op", "contender", "ms", "vs twin", "logits GB/s", "% of forward"],
        rows_out,
    )
    write_json(
        args.json,
        dict(machine=facts, copy_bandwidth_gbs=bandwidth, matmul_gflops=matmul, results=results),
    )


if __name__ == "__main__":
    main()
