"""ORT CUDA (fp32 and fp16 graphs) vs a torch loop on the same card in the same run.

Run: ``python -m benchmarks.bench_gpu [--device cuda] [--tiny] [--steps 36] [--seconds 10]
[--batches 1 4 8] [--clips 8] [--threads 2] [--repeats 5] [--json PATH]``.

Figures (`FIGURES`), each measured side by side in this process, one warm-up per contender then
``--repeats`` interleaved rounds, median reported:

- ``forward_ms``: the coarse transformer on 4 codebooks x T frames (T: ``--seconds`` of audio,
  575 for 10 s), B = 1;
- ``coarse_generate_s``: ``--steps`` coarse steps (VampNet: 36) on the same codes with
  bench_generate's VampNet-style mask: the generation graph in one run (`Generator`), or the
  torch loop;
- ``coarse_loop_s``, ``coarse_loop_bound_s``, ``coarse_loop_cuda_graph_s``: the same steps as
  `Generator`'s Python loop over the transformer graph: plain (numpy between the steps), with
  ``io_binding`` (codes, mask and logits stay on the device), with ``cuda_graph`` (the
  transformer replayed as a CUDA graph; ``--device cuda`` only). ORT only;
- ``vamp_s``: `pipeline.Vamp.vamp` of ``--seconds`` of synthesised music (encode, coarse,
  c2f, decode);
- ``batch_clips_per_s_B{B}``: `Vamp.vamp_batch` of ``--clips`` clips with ``batch_size`` B:
  clips per second.

Contenders (`CONTENDERS`): ONNX Runtime on the fp32 graphs (exact fp32, as the package runs
them, and with onnxruntime's default TF32 matmuls, CUDA only) and on the fp16 graphs (`export
--precision fp16`), each graph on ``--device`` through `create_session`; torch: our torch module
with upstream's sampling (`benchmarks.torch_vampnet`) on the same device, in plain fp32
(``allow_tf32`` off) and with TF32 matmuls. torch runs only the transformer and the sampling, so
the pipeline figures have no torch value; every value is a number or ``"not measured: why"``.

Beside them: the card (torch or nvidia-smi), whether the op library in use holds the CUDA ops
(a ``VAMPNET_CUDA_OPS=ON`` build, docs/building.md), the CUDA provider's ``use_tf32`` per
contender, ``tf32_logits``: the mean KL(exact || TF32) and top-1 agreement of the coarse
forward's logits on the card (the error a TF32 option would have to ship with), and the
Memcpy nodes onnxruntime adds to each graph on the device (`runtime.added_memcpy_nodes`: a
CPU-only node inside a CUDA graph costs two copies per edge).

Models: the full-size random-weight checkpoints and exports of ``--workdir`` (shared with
bench_forward / bench_generate / bench_pipeline, exported on first use: many minutes and GBs;
the fp16 graphs converted from them on first use). ``--prepare-only`` does only that, on a
machine without a GPU; ``--staged`` then measures on that workdir copied to the GPU machine
(links kept, the weights files copied or made again), exporting nothing, so that the GPU's
time goes to the measurements. ``--tiny``: the demo's tiny models
(`demo.demo_models`, converted to fp16 into ``--workdir``/tiny-fp16), the smoke mode with
``--device cpu`` that tests/test_bench_gpu.py runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.bench_generate import SETTINGS, vampnet_mask
from benchmarks.common import (
    add_workdir,
    interleaved_medians,
    logits_agreement,
    machine_facts,
    outdated,
    parser,
    print_table,
    write_json,
)
from vampnet_onnx import configs, contracts, demo, masks, runtime
from vampnet_onnx.contracts import DEVICES

CONTENDERS = ("ORT fp32", "ORT TF32", "ORT fp16", "torch fp32", "torch TF32")
PRECISIONS = ("fp32", "fp16")
#: ONNX Runtime's contenders: {name: (precision of the graphs, TF32 matmuls on CUDA)}. The
#: package's CUDA sessions run exact fp32 (runtime.CUDA_OPTIONS); "ORT TF32" is onnxruntime's
#: own default, measured for its speed and its error (the ``tf32_logits`` fact).
ORT_CONTENDERS = {
    "ORT fp32": ("fp32", False),
    "ORT TF32": ("fp32", True),
    "ORT fp16": ("fp16", False),
}
SAMPLE_RATE = 44100
#: The graphs whose Memcpy nodes are counted, beside each precision's transformer.
MEMCPY_GRAPHS = (
    contracts.GENERATION_FILES["coarse"],
    contracts.GENERATION_FILES["c2f"],
    contracts.ENCODE_FILE,
    contracts.DECODE_FILE,
)
#: The Python-loop modes of `Generator` on the transformer graph: {figure: its options}.
LOOP_FIGURES = {
    "coarse_loop_s": {},
    "coarse_loop_bound_s": {"io_binding": True},
    "coarse_loop_cuda_graph_s": {"cuda_graph": True},
}
TORCH_LOOP = "not measured: a mode of ORT's Python loop"
TF32_ON_CPU = "not measured: TF32 is a CUDA matmul mode (device {device})"
TORCH_PIPELINE = (
    "not measured: the torch contender is the transformer and upstream's sampling only (no "
    "codec, mask or c2f stages)"
)


def batch_figure(batch: int) -> str:
    return f"batch_clips_per_s_B{batch}"


def figure_names(batches: list[int]) -> list[str]:
    """The figures' keys in the JSON, in table order."""
    return [
        "forward_ms",
        "coarse_generate_s",
        *LOOP_FIGURES,
        "vamp_s",
        *map(batch_figure, batches),
    ]


def full_size_paths(workdir: Path) -> dict[str, dict]:
    """{precision: {folder, transformer, checkpoint, codec}}: where the full-size workdir
    holds each precision's models folder, coarse transformer, and torch's checkpoints."""
    sources = {"checkpoint": workdir / "coarse.pth", "codec": workdir / "codec.pth"}
    return {
        "fp32": {"folder": workdir, "transformer": workdir / "coarse.onnx", **sources},
        "fp16": {
            "folder": workdir / "fp16",
            "transformer": workdir / "coarse.fp16.onnx",
            **sources,
        },
    }


def prepare_full_size(workdir: Path) -> dict[str, dict]:
    """`full_size_paths`, exported and converted on first use by the other benchmarks'
    helpers."""
    from benchmarks.bench_pipeline import prepare, prepare_converted

    prepare(workdir)
    prepare_converted(workdir, "fp16")  # the fp16 folder of `full_size_paths`
    return full_size_paths(workdir)


def staged_full_size(workdir: Path) -> dict[str, dict]:
    """`full_size_paths` from a workdir that ``--prepare-only`` filled on another machine
    (copied here, weights and all or with the weights made again): nothing is exported or
    converted, which would take minutes of a GPU machine's time. torch's checkpoints, which
    need not match the graphs' weights for a timing, are written when missing."""
    from vampnet_onnx import testing

    paths = full_size_paths(workdir)
    graphs = [
        *(paths[p]["folder"] / name for p in PRECISIONS for name in MEMCPY_GRAPHS),
        *(paths[p]["transformer"] for p in PRECISIONS),
    ]
    missing = [str(graph) for graph in graphs if not graph.exists()]
    if missing:
        raise SystemExit(
            f"bench_gpu: --staged needs the graphs --prepare-only writes in --workdir, "
            f"got none at {', '.join(missing)}"
        )
    if not paths["fp32"]["codec"].exists():
        testing.write_codec_checkpoint(paths["fp32"]["codec"], configs.CODEC_KWARGS, seed=3)
    if not paths["fp32"]["checkpoint"].exists():
        testing.write_vampnet_checkpoint(paths["fp32"]["checkpoint"], configs.COARSE_KWARGS, seed=1)
    return paths


def prepare_tiny(workdir: Path) -> dict[str, dict]:
    """`prepare_full_size` for the demo's tiny models: the fp16 folder converted from them into
    ``workdir/tiny-fp16`` and the demo's coarse and codec checkpoints (same kwargs and seeds,
    so the same weights) written again for torch."""
    from vampnet_onnx import testing

    fp32 = demo.demo_models()
    checkpoint = testing.write_vampnet_checkpoint(
        workdir / "tiny-coarse.pth", configs.TINY_COARSE_KWARGS, seed=1
    )
    codec = testing.write_codec_checkpoint(
        workdir / "tiny-codec.pth", configs.SMALL_CODEC_KWARGS, seed=3
    )
    fp16 = convert_folder(fp32, workdir / "tiny-fp16")
    sources = {"checkpoint": checkpoint, "codec": codec}
    coarse = contracts.TRANSFORMER_FILES["coarse"]
    return {
        "fp32": {"folder": fp32, "transformer": fp32 / coarse, **sources},
        "fp16": {"folder": fp16, "transformer": fp16 / coarse, **sources},
    }


def convert_folder(source: Path, out: Path) -> Path:
    """The fp16 models folder of the fp32 `source` (what ``export --precision fp16`` writes):
    the transformers converted and their generation graphs exported again, the codec graphs
    converted; made again whenever `source` is newer."""
    from vampnet_onnx.export.generation import export_generation
    from vampnet_onnx.export.precision import codec_to_float16, convert_transformer

    done = out / contracts.DECODE_FILE
    if not outdated(done, ("conversion", "generation"), *source.glob("*.onnx")):
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for kind, name in contracts.TRANSFORMER_FILES.items():
        convert_transformer(source / name, "fp16", out / name)
        export_generation(out / name, out / contracts.GENERATION_FILES[kind])
    for name in (contracts.ENCODE_FILE, contracts.DECODE_FILE):  # the decoder last: `done`
        codec_to_float16(source / name, out / name)
    return out


def card_name(device: str) -> str | None:
    """The GPU's name (torch, else nvidia-smi), None on the CPU or where neither can tell."""
    if device == "cpu":
        return None
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        result = subprocess.run(query, capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip().splitlines()[0]
    return None


def library_has_cuda_ops() -> bool:
    """Whether the op library in use was built with VAMPNET_CUDA_OPS=ON: only that build
    registers ops for the CUDA provider, whose name it then holds."""
    return b"CUDAExecutionProvider" in Path(runtime.get_library_path()).read_bytes()


def torch_reason(device: str) -> str | None:
    """Why torch cannot be a contender on `device`, or None when it can."""
    try:
        import torch
    except ImportError:
        return "not measured: torch is not installed"
    if device == "cuda" and not torch.cuda.is_available():
        return "not measured: torch has no CUDA here (torch.cuda.is_available() is False)"
    return None


class TorchContender:
    """Our torch module on `device` and its two matmul modes: run(fn, tf32) sets the mode,
    runs fn under inference_mode and waits for the device, so a time is the work's."""

    def __init__(self, paths: dict, device: str, threads: int) -> None:
        import torch

        from vampnet_onnx.model.transformer import load_transformer

        torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        self.model = load_transformer(paths["checkpoint"], paths["codec"]).model.to(self.device)
        self.config = self.model.config

    def tensor(self, array: np.ndarray):
        return self.torch.from_numpy(array).to(self.device)

    def run(self, fn: Callable[[], object], tf32: bool) -> Callable[[], object]:
        torch = self.torch

        def timed() -> None:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            with torch.inference_mode():
                fn()
            if self.device.type == "cuda":
                torch.cuda.synchronize()

        return timed

    def modes(self) -> dict[str, bool]:
        """{contender: tf32} of the modes this device has (TF32 is a CUDA matmul mode)."""
        return {"torch fp32": False, **({"torch TF32": True} if self.device.type == "cuda" else {})}


def measure(args, models: dict[str, dict]) -> tuple[dict, dict]:
    """({figure: {contender: value or "not measured: why"}}, facts about the contenders)."""
    from vampnet_onnx import Generator
    from vampnet_onnx.pipeline import Vamp

    device, steps = args.device, args.steps
    frames = masks.seconds_to_frames(args.seconds, SAMPLE_RATE)
    names = figure_names(args.batches)
    figures: dict[str, dict] = {name: {} for name in names}
    runs: dict[str, dict[str, Callable[[], object]]] = {name: {} for name in names}
    facts: dict = {}

    clip = demo.synth_music(args.seconds, SAMPLE_RATE)
    forward_logits = {}
    for contender, (precision, tf32) in ORT_CONTENDERS.items():
        if tf32 and device != "cuda":
            for name in names:
                figures[name][contender] = TF32_ON_CPU.format(device=device)
            continue
        paths = models[precision]
        # TF32: onnxruntime's CUDA default, which the package's sessions turn off.
        on = (
            {"providers": runtime.device_providers(device, cuda_options={"use_tf32": "1"})}
            if tf32
            else {"device": device}
        )
        session = runtime.create_session(paths["transformer"], intra_op_threads=args.threads, **on)
        generator = Generator(
            paths["folder"] / contracts.GENERATION_FILES["coarse"], threads=args.threads, **on
        )
        vamp = Vamp(paths["folder"], threads=args.threads, **on)
        n_codebooks, n_cond = generator.n_codebooks, generator.n_conditioning_codebooks
        codes = np.random.default_rng(0).integers(0, 1024, (1, n_codebooks, frames))
        mask = vampnet_mask(n_codebooks, n_cond, 1, frames)
        if device == "cuda":
            options = session.get_provider_options().get("CUDAExecutionProvider", {})
            facts.setdefault("ort_cuda_use_tf32", {})[contender] = options.get("use_tf32")
        model_input = np.where(mask, generator.mask_token, codes)
        if precision == "fp32":
            forward_logits[contender] = session.run(None, {"codes": model_input})[0]
        runs["forward_ms"][contender] = lambda s=session, x=model_input: s.run(None, {"codes": x})
        runs["coarse_generate_s"][contender] = lambda g=generator, c=codes, m=mask: g.generate(
            c, m, steps=steps, seed=0, **SETTINGS
        )
        for name, options in LOOP_FIGURES.items():
            if options.get("cuda_graph") and device != "cuda":
                figures[name][contender] = "not measured: a CUDA graph needs --device cuda"
                continue
            if options.get("cuda_graph") and tf32:
                figures[name][contender] = "not measured: the CUDA-graph loop runs exact fp32"
                continue
            loop = Generator(paths["transformer"], threads=args.threads, **on, **options)
            runs[name][contender] = lambda g=loop, c=codes, m=mask: g.generate(
                c, m, steps=steps, seed=0, **SETTINGS
            )
        runs["vamp_s"][contender] = lambda v=vamp: v.vamp(clip, SAMPLE_RATE, steps=steps)
        for batch in args.batches:
            runs[batch_figure(batch)][contender] = lambda v=vamp, b=batch: v.vamp_batch(
                [clip] * args.clips, SAMPLE_RATE, seeds=range(args.clips), batch_size=b, steps=steps
            )

    if "ORT TF32" in forward_logits:
        kl, top1 = logits_agreement(forward_logits["ORT fp32"], forward_logits["ORT TF32"])
        facts["tf32_logits"] = {"kl_vs_fp32": kl, "top1_vs_fp32": top1}

    reason = torch_reason(device)
    if reason is None:
        import torch

        from benchmarks import torch_vampnet

        facts["torch_tf32_default"] = {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        }
        ours = TorchContender(models["fp32"], device, args.threads)
        config = ours.config
        codes = np.random.default_rng(0).integers(0, 1024, (1, config.n_codebooks, frames))
        mask = vampnet_mask(config.n_codebooks, config.n_conditioning_codebooks, 1, frames)
        t_codes, t_mask = ours.tensor(codes), ours.tensor(mask)
        t_input = torch.where(t_mask, config.mask_token, t_codes)
        for name, tf32 in ours.modes().items():
            runs["forward_ms"][name] = ours.run(lambda: ours.model(t_input), tf32)
            seed = torch.Generator(ours.device).manual_seed(0)
            runs["coarse_generate_s"][name] = ours.run(
                lambda g=seed: torch_vampnet.generate(
                    ours.model,
                    t_codes,
                    t_mask,
                    steps,
                    config.n_conditioning_codebooks,
                    SETTINGS,
                    g,
                ),
                tf32,
            )
        if "torch TF32" not in ours.modes():
            for name in ("forward_ms", "coarse_generate_s"):
                figures[name]["torch TF32"] = TF32_ON_CPU.format(device=device)
        for name in names[2:]:
            why = TORCH_LOOP if name in LOOP_FIGURES else TORCH_PIPELINE
            figures[name] |= {"torch fp32": why, "torch TF32": why}
    else:
        for name in names:
            figures[name] |= {"torch fp32": reason, "torch TF32": reason}

    for name in names:
        seconds = interleaved_medians(runs[name], args.repeats)
        for contender, median in seconds.items():
            if name == "forward_ms":
                figures[name][contender] = 1e3 * median
            elif name.startswith("batch_"):
                figures[name][contender] = args.clips / median
            else:
                figures[name][contender] = median
        figures[name] = {c: figures[name][c] for c in CONTENDERS}
    return figures, facts


def memcpy_counts(models: dict[str, dict], device: str, threads: int) -> dict:
    """{precision: {graph file: Memcpy nodes onnxruntime adds on `device`}}."""
    counts = {}
    for precision, paths in models.items():
        graphs = [paths["transformer"], *(paths["folder"] / name for name in MEMCPY_GRAPHS)]
        counts[precision] = {
            graph.name: runtime.added_memcpy_nodes(graph, device, threads) for graph in graphs
        }
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--device", choices=DEVICES, default="cuda", help="where ORT and torch run")
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="the demo's tiny models instead of the full-size ones (the smoke mode)",
    )
    ap.add_argument("--steps", type=int, default=36, help="coarse steps (default 36)")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per clip (default 10)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8], metavar="B")
    ap.add_argument("--clips", type=int, default=8, help="clips per vamp_batch (default 8)")
    stages = ap.add_mutually_exclusive_group()
    stages.add_argument(
        "--prepare-only",
        action="store_true",
        help="write and export the full-size models into --workdir, then stop (on a machine "
        "without a GPU, ahead of a --staged run)",
    )
    stages.add_argument(
        "--staged",
        action="store_true",
        help="measure on the graphs --prepare-only wrote into --workdir, exporting nothing",
    )
    add_workdir(ap, "about 8 GB")
    args = ap.parse_args(argv)
    if args.tiny and (args.prepare_only or args.staged):
        ap.error("--prepare-only and --staged are for the full-size models, not --tiny")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        prepare_full_size(args.workdir)
        print(f"prepared {args.workdir}")
        return 0
    if args.tiny:
        models = prepare_tiny(args.workdir)
    else:
        models = (staged_full_size if args.staged else prepare_full_size)(args.workdir)
    facts = machine_facts(args.threads) | {
        "device": args.device,
        "card": card_name(args.device),
        "op_library": runtime.get_library_path(),
        "op_library_has_cuda_ops": library_has_cuda_ops(),
    }
    memcpy = memcpy_counts(models, args.device, args.threads)
    figures, contender_facts = measure(args, models)
    facts |= contender_facts
    print(f"machine: {facts}")
    for precision, counts in memcpy.items():
        print(f"Memcpy nodes added on {args.device} ({precision}): {counts}")
    reasons = sorted(
        {v for values in figures.values() for v in values.values() if isinstance(v, str)}
    )
    rows = []
    for name, values in figures.items():
        base = values["ORT fp32"]
        for contender, value in values.items():
            if isinstance(value, str):
                rows.append([name, contender, f"not measured [{reasons.index(value) + 1}]", "-"])
                continue
            if isinstance(base, str):
                rows.append([name, contender, value, "-"])
                continue
            # Times: the baseline's over this one's; clips per second: this one's over it.
            speed = value / base if name.startswith("batch_") else base / value
            rows.append([name, contender, value, f"{speed:.2f}x"])
    print_table(
        f"{'tiny' if args.tiny else 'full-size'} models on {facts['card'] or args.device}, "
        f"{args.seconds:g} s clips, {args.steps} coarse steps, median of {args.repeats} after "
        f"1 warm-up, {args.threads} threads (speed: vs ORT fp32)",
        ["figure", "contender", "value", "speed"],
        rows,
    )
    for number, reason in enumerate(reasons, 1):
        print(f"[{number}] {reason}")
    write_json(
        args.json,
        {
            "machine": facts,
            "models": "tiny" if args.tiny else "full-size",
            "steps": args.steps,
            "seconds": args.seconds,
            "clips": args.clips,
            "repeats": args.repeats,
            "memcpy_nodes": memcpy,
            "figures": figures,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
