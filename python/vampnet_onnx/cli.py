"""Command line: ``vampnet-onnx <command> ...``.

Each command is one subparser with a handler; export commands import torch lazily so the
runtime commands work from an install without the ``export`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "vampnet-onnx"


def _export_transformer(args: argparse.Namespace) -> int:
    from .export.transformer import export_transformer

    result = export_transformer(
        args.checkpoint,
        args.codec,
        args.out,
        lora_path=args.lora,
        opset_version=args.opset,
        verbose=args.verbose,
    )
    config = result.config
    print(result.report.summary())
    print(
        f"wrote {result.path} ({config['kind']}: {config['n_codebooks']} codebooks, "
        f"{config['n_predict_codebooks']} predicted, {config['n_layers']} layers, "
        f"d_model {config['d_model']})"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .export.codec import export_codec
    from .export.generation import export_generation
    from .export.transformer import export_transformer

    models = [(kind, path) for kind, path in (("coarse", args.coarse), ("c2f", args.c2f)) if path]
    if not models:
        raise ValueError("at least one of --coarse and --c2f must be given, got neither")
    args.out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=2 * len(models) + 1, desc="export", unit="graph") as bar:
        bar.set_postfix_str("codec")
        codec = export_codec(args.codec, args.out, opset_version=args.opset, verbose=args.verbose)
        bar.update()
        bar.write(f"wrote {codec.encode_path} and {codec.decode_path}")
        for kind, checkpoint in models:
            bar.set_postfix_str(f"{kind}.onnx")
            result = export_transformer(
                checkpoint,
                args.codec,
                args.out / f"{kind}.onnx",
                opset_version=args.opset,
                verbose=args.verbose,
            )
            bar.write(result.report.summary())
            bar.update()
            bar.set_postfix_str(f"{kind}.generate.onnx")
            generation = export_generation(
                result.path,
                args.out / f"{kind}.generate.onnx",
                trace=args.trace,
                batch_coupled=args.batch_coupled,
            )
            bar.update()
            size = generation.path.stat().st_size / 2**20
            bar.write(f"wrote {result.path} and {generation.path} ({size:.1f} MiB)")
    return 0


def _export_codec(args: argparse.Namespace) -> int:
    from .export.codec import export_codec

    result = export_codec(args.codec, args.out, opset_version=args.opset, verbose=args.verbose)
    config = result.config
    print(
        f"wrote {result.encode_path} and {result.decode_path} ({config['n_codebooks']} "
        f"codebooks, hop {config['hop_length']}, {config['sample_rate']} Hz)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog=PROG, description="VampNet on ONNX Runtime.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = commands.add_parser(
        "export-transformer",
        help="export a VampNet coarse or c2f checkpoint to an ONNX transformer",
        description=(
            "Export coarse.pth or c2f.pth (with the codec.pth whose codebooks it embeds) to an "
            "ONNX graph: codes int64 [B, C, T] -> logits float32 [B, T, P, 1024]. Prints how "
            "many checkpoint tensors were mapped."
        ),
    )
    export.add_argument("checkpoint", type=Path, metavar="CKPT", help="coarse.pth or c2f.pth")
    export.add_argument("--codec", type=Path, required=True, help="LAC codec.pth")
    export.add_argument("--out", type=Path, required=True, help="output .onnx file")
    export.add_argument("--lora", type=Path, help="separate LoRA state dict (lora.pth)")
    export.add_argument("--opset", type=int, default=20, help="ONNX opset, >= 18 (default 20)")
    export.add_argument(
        "--verbose", action="store_true", help="exporter messages and full tracebacks"
    )
    export.set_defaults(handler=_export_transformer)

    bundle = commands.add_parser(
        "export",
        help="export the models a vamp needs: transformers and generation-loop graphs",
        description=(
            "Export VampNet checkpoints to DIR: codec.encode.onnx and codec.decode.onnx (the LAC "
            "codec: audio <-> codes), and for each model given KIND.onnx (the transformer, "
            "codes -> logits) and KIND.generate.onnx (the whole generation loop in one graph: "
            "codes, mask, n_steps, temperature, top_k, top_p, mask_temperature, seed -> "
            "codes_out; see docs/generation.md)."
        ),
    )
    bundle.add_argument("--coarse", type=Path, help="coarse.pth")
    bundle.add_argument("--c2f", type=Path, help="c2f.pth")
    bundle.add_argument("--codec", type=Path, required=True, help="LAC codec.pth")
    bundle.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    bundle.add_argument("--opset", type=int, default=20, help="ONNX opset, >= 18 (default 20)")
    bundle.add_argument(
        "--trace",
        action="store_true",
        help="generation graphs also output the codes and mask after every step",
    )
    bundle.add_argument(
        "--batch-coupled",
        action="store_true",
        help="count the schedule over the whole batch, as upstream VampNet does (default: per "
        "batch item)",
    )
    bundle.add_argument(
        "--verbose", action="store_true", help="exporter messages and full tracebacks"
    )
    bundle.set_defaults(handler=_export)

    codec = commands.add_parser(
        "export-codec",
        help="export a LAC codec checkpoint to encode and decode graphs",
        description=(
            "Export codec.pth to DIR/codec.encode.onnx (audio float32 [B, 1, N], any N >= 1 -> "
            "codes int64 [B, n_codebooks, ceil(N / hop)]) and DIR/codec.decode.onnx (codes and "
            "a length -> audio float32 [B, 1, length])."
        ),
    )
    codec.add_argument("codec", type=Path, metavar="CODEC", help="LAC codec.pth")
    codec.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    codec.add_argument("--opset", type=int, default=20, help="ONNX opset, >= 18 (default 20)")
    codec.add_argument(
        "--verbose", action="store_true", help="exporter messages and full tracebacks"
    )
    codec.set_defaults(handler=_export_codec)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors print one line to stderr and return 1 (``--verbose``: raise)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError) as err:
        if getattr(args, "verbose", False):
            raise
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
