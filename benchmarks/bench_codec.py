"""Full-size LAC codec per precision: encode and decode time, token agreement and decode SNR
against fp32, graph size.

Run: ``python -m benchmarks.bench_codec [--seconds 10] [--threads 2] [--repeats 5]
[--precisions fp32 fp16 int8] [--json PATH]``.

Random weights in the real format (``codec.pth`` in ``--workdir``, shared with the other
benchmarks; its fp32 graphs exported there on first use, the fp16 ones converted beside them as
``codec.PART.fp16.onnx``: `export.precision.codec_to_float16`, what ``vampnet-onnx export
--precision fp16`` writes; and ``codec.PART.int8.onnx``, an int8 folder's codec: fp32
computation from fp16-stored weights, `codec_weights_to_float16`). Input: a
synthesised clip (`demo.synth_music`, preprocessed as a vamp does; 10 s is 441000 samples, not
a multiple of the hop). The contenders run in this process, one `Codec` each, one warm-up, then
``--repeats`` interleaved rounds, median reported. Accuracy against fp32 on the same input:
the share of encode tokens equal to fp32's, and the SNR of each decode of the fp32 codes against
the fp32 decode (dB). fp16 on the CPU gives its accuracy; its speed is a GPU's question.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from benchmarks.bench_pipeline import prepare_codec
from benchmarks.common import (
    add_workdir,
    interleaved_medians,
    machine_facts,
    outdated,
    parser,
    print_table,
    write_json,
)

#: The baseline: the fp32 graphs with each Snake as five standard nodes (what CUDA runs).
STANDARD = "fp32 standard"


def prepare(workdir: Path) -> dict[str, tuple[Path, Path]]:
    """contender -> (encode graph, decode graph): the fp32 graphs exported and their CPU
    variants written on first use (`export.precision.write_cpu_codec`: "fp32", what an fp32
    folder runs on the CPU), the fp32 graphs alone in a folder of links (`STANDARD`), and fp16
    and int8's converted codecs."""
    from vampnet_onnx import configs, testing
    from vampnet_onnx.contracts import CPU_CODEC_FILES, DECODE_FILE, ENCODE_FILE
    from vampnet_onnx.export.codec import export_codec
    from vampnet_onnx.export.common import data_files
    from vampnet_onnx.export.precision import write_cpu_codec

    fp32 = (workdir / ENCODE_FILE, workdir / DECODE_FILE)
    if not (workdir / "codec.pth").exists():
        testing.write_codec_checkpoint(workdir / "codec.pth", configs.CODEC_KWARGS, seed=3)
    if not all(path.exists() for path in fp32):
        export_codec(workdir / "codec.pth", workdir)
    for graph in fp32:
        if outdated(graph.with_name(CPU_CODEC_FILES[graph.name]), ("conversion",), graph):
            write_cpu_codec(graph)
    standard = workdir / "fp32-standard"
    standard.mkdir(exist_ok=True)
    for graph in fp32:
        for source in (graph, *data_files(graph)):
            link = standard / source.name
            link.unlink(missing_ok=True)
            link.symlink_to(source)
    return {
        STANDARD: (standard / ENCODE_FILE, standard / DECODE_FILE),
        "fp32": fp32,
        **{p: tuple(prepare_codec(path, p) for path in fp32) for p in ("fp16", "int8")},
    }


def size_mib(graph: Path) -> float:
    data = graph.with_name(graph.name + ".data")
    return sum(p.stat().st_size for p in (graph, data) if p.exists()) / 2**20


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    return float(10 * np.log10((reference**2).sum() / ((other - reference) ** 2).sum()))


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="input length (default 10)")
    add_workdir(ap)
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=("fp32", "fp16", "int8"),
        default=["fp32", "fp16", "int8"],
        help="codec precisions: the codec graphs an ``export --precision`` folder runs on the "
        f"CPU (default all; {STANDARD!r}, the fp32 graphs with standard Snake nodes, always "
        "runs: the baseline)",
    )
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    from vampnet_onnx import audio, demo
    from vampnet_onnx.codec import Codec

    graphs = prepare(args.workdir)
    precisions = [STANDARD, *args.precisions]
    codecs = {p: Codec(*graphs[p], intra_op_threads=args.threads) for p in precisions}
    ran = {p: [path.name for path in codec.graph_paths.values()] for p, codec in codecs.items()}
    print(f"graphs run: {ran}")
    x, _ = audio.preprocess(demo.synth_music(args.seconds, 44100), 44100)
    codes = {p: codec.encode(x) for p, codec in codecs.items()}
    decoded = {p: codec.decode(codes[STANDARD], x.shape[0]) for p, codec in codecs.items()}
    encode_s = interleaved_medians(
        {p: lambda c=codec: c.encode(x) for p, codec in codecs.items()}, args.repeats
    )
    decode_s = interleaved_medians(
        {p: lambda c=codec: c.decode(codes[STANDARD], x.shape[0]) for p, codec in codecs.items()},
        args.repeats,
    )
    rows = [
        {
            "contender": p,
            "encode_s": encode_s[p],
            "decode_s": decode_s[p],
            "encode_speed": encode_s[STANDARD] / encode_s[p],
            "decode_speed": decode_s[STANDARD] / decode_s[p],
            "token_agreement": float((codes[p] == codes[STANDARD]).mean()),
            "decode_snr_db": snr_db(decoded[STANDARD], decoded[p]) if p != STANDARD else None,
            "encode_mib": size_mib(graphs[p][0]),
            "decode_mib": size_mib(graphs[p][1]),
        }
        for p in precisions
    ]
    facts = machine_facts(args.threads)
    print(f"machine: {facts}")
    print_table(
        f"codec, {args.seconds:g} s ({codes[STANDARD].shape[2]} frames), median of "
        f"{args.repeats} after 1 warm-up, {args.threads} threads (speed, tokens and SNR against "
        f"{STANDARD!r}: encode tokens equal to its, its codes decoded against its decode)",
        ["contender", "encode s", "speed", "decode s", "speed", "tokens", "SNR dB", "MiB"],
        [
            [
                r["contender"],
                r["encode_s"],
                f"{r['encode_speed']:.2f}x",
                r["decode_s"],
                f"{r['decode_speed']:.2f}x",
                f"{100 * r['token_agreement']:.2f} %",
                "-" if r["decode_snr_db"] is None else f"{r['decode_snr_db']:.1f}",
                f"{r['encode_mib']:.0f} + {r['decode_mib']:.0f}",
            ]
            for r in rows
        ],
    )
    write_json(args.json, {"machine": facts, "seconds": args.seconds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
