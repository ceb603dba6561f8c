"""Command line: ``vampnet-onnx <command> ...``.

Each command is one subparser with a handler; export commands import torch lazily so the
runtime commands (``vamp``) work from an install without the ``export`` extra.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
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
    if args.single_graph and len(models) != 2:
        raise ValueError("--single-graph must come with both --coarse and --c2f, got one")
    from .checkpoint import VampNetConfig, load_checkpoint

    for kind, path in models:
        # A c2f checkpoint passed as --coarse would otherwise be written as coarse.onnx.
        found = VampNetConfig.from_kwargs(load_checkpoint(path).kwargs).kind
        if found != kind:
            raise ValueError(f"--{kind} must be a {kind} checkpoint, got a {found} one: '{path}'")
    args.out.mkdir(parents=True, exist_ok=True)
    total = 2 * len(models) + 1 + int(args.single_graph)
    with tqdm(total=total, desc="export", unit="graph") as bar:
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
        if args.single_graph:
            from .export.vamp import VAMP_FILE, export_vamp

            bar.set_postfix_str(VAMP_FILE)
            single = export_vamp(args.out)
            bar.update()
            files = [single.path, *([single.data_path] if single.data_path else [])]
            size = sum(path.stat().st_size for path in files) / 2**20
            bar.write(f"wrote {' and '.join(map(str, files))} ({size:.1f} MiB)")
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


def _vamp_settings(args: argparse.Namespace) -> dict:
    """`Vamp.vamp` keyword arguments from the parsed vamp options."""
    return dict(
        seed=args.seed,
        steps=args.steps,
        temperature=args.temperature,
        top_k=args.top_k or None,
        top_p=args.top_p or None,
        mask_temperature=args.mask_temperature,
        periodic_prompt=args.periodic_prompt,
        periodic_width=args.periodic_width,
        upper_codebook_mask=args.upper_codebook_mask,
        onset_mask_width=args.onset_mask,
        prefix_s=args.prefix,
        suffix_s=args.suffix,
        dropout=args.dropout,
        keep_rate=not args.codec_rate,
        progress=not args.quiet,
    )


def _vamp(args: argparse.Namespace) -> int:
    from .pipeline import SingleGraphVamp, Vamp

    if args.models.suffix == ".onnx":
        if not args.models.is_file():
            raise FileNotFoundError(f"--models must be an existing vamp.onnx, got '{args.models}'")
        vamp = SingleGraphVamp(args.models, threads=args.threads)
    else:
        vamp = Vamp(args.models, threads=args.threads)
    out, rate = vamp.vamp_file(args.input, args.output, **_vamp_settings(args))
    print(f"wrote {out} ({rate} Hz)")
    return 0


DEMO_CHECKPOINTS = ("coarse.pth", "c2f.pth", "codec.pth")


def demo_cache() -> Path:
    """Where `demo` keeps its random checkpoints and exported models:
    ``$XDG_CACHE_HOME/vampnet-onnx/demo`` (default ``~/.cache/vampnet-onnx/demo``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vampnet-onnx" / "demo"


def _demo_stamp() -> str:
    """What the cached demo models must have been exported for: the graph contracts' inputs
    (an export from an older version with other inputs is made again)."""
    import json

    from . import ops

    return json.dumps({"generation": ops.GENERATION.input_names})


def _demo_models(verbose: bool) -> Path:
    """The demo's exported models folder, created on first use (needs torch) and again when
    it was exported for other graph contracts."""
    from . import testing
    from .pipeline import MODEL_FILES

    models = demo_cache() / "models"
    stamp = models / "contracts.json"
    if (
        all((models / name).is_file() for name in MODEL_FILES)
        and stamp.is_file()
        and stamp.read_text() == _demo_stamp()
    ):
        return models
    models.parent.mkdir(parents=True, exist_ok=True)
    # Export into a fresh folder and rename it at the end, so an interrupted export is not
    # mistaken for a finished one next time.
    staging = Path(tempfile.mkdtemp(dir=models.parent, prefix="export-"))
    try:
        coarse, c2f, codec = (staging / name for name in DEMO_CHECKPOINTS)
        testing.write_vampnet_checkpoint(coarse, testing.TINY_COARSE_KWARGS, seed=1)
        testing.write_vampnet_checkpoint(c2f, testing.TINY_C2F_KWARGS, seed=2)
        testing.write_codec_checkpoint(codec, testing.SMALL_CODEC_KWARGS, seed=3)
        export_argv = ["export", "--out", str(staging / "models")]
        for flag, path in (("--coarse", coarse), ("--c2f", c2f), ("--codec", codec)):
            export_argv += [flag, str(path)]
        if verbose:
            export_argv.append("--verbose")
        export_args = build_parser().parse_args(export_argv)
        export_args.handler(export_args)
        (staging / "models" / "contracts.json").write_text(_demo_stamp())
        shutil.rmtree(models, ignore_errors=True)
        (staging / "models").rename(models)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return models


def _demo(args: argparse.Namespace) -> int:
    from . import audio, demo
    from .pipeline import Vamp

    models = _demo_models(args.verbose)
    args.out.mkdir(parents=True, exist_ok=True)
    sample_rate = 44100
    x = demo.synth_music(args.seconds, sample_rate)
    audio.write_audio(args.out / "in.wav", x, sample_rate)
    vamp = Vamp(models, threads=args.threads)
    out, _ = vamp.vamp_file(args.out / "in.wav", args.out / "out.wav", **_vamp_settings(args))
    y, _ = audio.load_audio(out)
    png = demo.write_png(args.out / "spectrograms.png", demo.spectrogram_image([x, y[0]]))
    print(f"models (random weights): {models}")
    print(f"wrote {args.out / 'in.wav'} (input), {out} (vamped)")
    print(f"wrote {png} (spectrograms: input on top, output below)")
    return 0


def _add_vamp_options(parser: argparse.ArgumentParser) -> None:
    """The mask, sampling and run options of `vamp` and `demo` (VampNet's app defaults)."""
    sampling = parser.add_argument_group(
        "sampling (coarse stage; c2f uses upstream's fixed 2 steps)"
    )
    sampling.add_argument("--seed", type=int, default=0, help="random seed, any int64 (default 0)")
    sampling.add_argument("--steps", type=int, default=36, help="coarse steps (default 36)")
    sampling.add_argument("--temperature", type=float, default=1.0, help="default 1.0")
    sampling.add_argument("--top-k", type=int, default=0, help="0 = off (default)")
    sampling.add_argument("--top-p", type=float, default=0.0, help="in (0, 1]; 0 = off (default)")
    sampling.add_argument(
        "--mask-temperature", type=float, default=10.5, help="re-masking noise (default 10.5)"
    )
    prompt = parser.add_argument_group("mask (what is kept from the input)")
    prompt.add_argument(
        "--periodic-prompt",
        type=int,
        default=7,
        metavar="N",
        help="keep every N-th frame (randomly phase-shifted); 0 = off (default 7)",
    )
    prompt.add_argument(
        "--periodic-width",
        type=int,
        default=1,
        metavar="N",
        help="frames kept around each periodic frame, 2*(N//2)+1 (default 1)",
    )
    prompt.add_argument(
        "--upper-codebook-mask",
        type=int,
        default=3,
        metavar="N",
        help="keep only codebooks < N at the kept frames (default 3)",
    )
    prompt.add_argument(
        "--onset-mask",
        type=int,
        default=0,
        metavar="W",
        help="also keep W frames on each side of detected onsets; 0 = off (default)",
    )
    prompt.add_argument("--prefix", type=float, default=0.0, metavar="S", help="keep the first S s")
    prompt.add_argument("--suffix", type=float, default=0.0, metavar="S", help="keep the last S s")
    prompt.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="drop this fraction of frames from the prompt, in [0, 1] (default 0)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--codec-rate",
        action="store_true",
        help="write at the codec's 44.1 kHz instead of the input's sample rate",
    )
    run.add_argument("--threads", type=int, help="intra-op threads (default: onnxruntime's)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--verbose", action="store_true", help="full tracebacks")


def _add_export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--opset", type=int, default=20, help="ONNX opset, >= 18 (default 20)")
    parser.add_argument(
        "--verbose", action="store_true", help="exporter messages and full tracebacks"
    )


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
    _add_export_options(export)
    export.set_defaults(handler=_export_transformer)

    bundle = commands.add_parser(
        "export",
        help="export the models a vamp needs: transformers and generation-loop graphs",
        description=(
            "Export VampNet checkpoints to DIR: codec.encode.onnx and codec.decode.onnx (the LAC "
            "codec: audio <-> codes), and for each model given KIND.onnx (the transformer, "
            "codes -> logits) and KIND.generate.onnx (the whole generation loop in one graph: "
            "codes, mask, n_steps, temperature, top_k, top_p, mask_temperature, seed, "
            "batch_offset -> codes_out; see docs/generation.md). --single-graph adds vamp.onnx, "
            "the whole vamp in one graph: audio -> audio."
        ),
    )
    bundle.add_argument("--coarse", type=Path, help="coarse.pth")
    bundle.add_argument("--c2f", type=Path, help="c2f.pth")
    bundle.add_argument("--codec", type=Path, required=True, help="LAC codec.pth")
    bundle.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    bundle.add_argument(
        "--trace",
        action="store_true",
        help="generation graphs also output the codes and mask after every step",
    )
    bundle.add_argument(
        "--single-graph",
        action="store_true",
        help="also write DIR/vamp.onnx: the whole vamp (encoder, mask, coarse and c2f loops, "
        "decoder) in one graph, audio in and out (needs --coarse and --c2f; per-item schedule "
        "and no trace whatever --trace / --batch-coupled say; see docs/generation.md)",
    )
    bundle.add_argument(
        "--batch-coupled",
        action="store_true",
        help="count the schedule over the whole batch, as upstream VampNet does (default: per "
        "batch item)",
    )
    _add_export_options(bundle)
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
    _add_export_options(codec)
    codec.set_defaults(handler=_export_codec)

    vamp = commands.add_parser(
        "vamp",
        help="vamp an audio file: keep a prompt of it, generate the rest",
        description=(
            "Vamp IN to OUT with the models of `vampnet-onnx export`: preprocess (44.1 kHz, mono, "
            "-24 LUFS), encode, keep the masked prompt, generate coarse codes (10-s chunks) and "
            "fine codes (3-s chunks), decode, restore the input's length, loudness and sample "
            "rate. Defaults are VampNet's app defaults. Output is mono."
        ),
    )
    vamp.add_argument("input", type=Path, metavar="IN", help="audio file (WAV, FLAC, OGG, MP3)")
    vamp.add_argument("output", type=Path, metavar="OUT", help="output audio file (.wav, .flac)")
    vamp.add_argument(
        "--models",
        type=Path,
        required=True,
        metavar="PATH",
        help="folder written by vampnet-onnx export, or its vamp.onnx (export --single-graph: "
        "one run, no onset mask, whole input in memory)",
    )
    _add_vamp_options(vamp)
    vamp.set_defaults(handler=_vamp)

    demo = commands.add_parser(
        "demo",
        help="vamp a synthesised clip with small random-weight models",
        description=(
            "Create small random-weight checkpoints in the real formats and export them (once, "
            "cached in $XDG_CACHE_HOME/vampnet-onnx/demo; needs the export extra), synthesise "
            "a few seconds of music, vamp it and write DIR/in.wav, DIR/out.wav and "
            "DIR/spectrograms.png. The weights are random, so the output is noise-like: the "
            "demo shows the pipeline runs, not what VampNet sounds like."
        ),
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("vampnet-onnx-demo"),
        metavar="DIR",
        help="output folder (default ./vampnet-onnx-demo)",
    )
    demo.add_argument("--seconds", type=float, default=6.0, help="input length (default 6)")
    _add_vamp_options(demo)
    demo.set_defaults(handler=_demo)
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
