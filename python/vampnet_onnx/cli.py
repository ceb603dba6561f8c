"""Command line: ``vampnet-onnx <command> ...``.

Each command is one subparser with a handler; export commands import torch lazily so the
runtime commands (``vamp``) work from an install without the ``export`` extra.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from . import hub
from .contracts import DEVICES
from .longform import DEFAULT_CONTEXT_S, JOIN_S
from .settings import (
    BATCH_SIZE_DEFAULT,
    MaskSettings,
    SamplingSettings,
    check_threads,
    public_name,
)

PROG = "vampnet-onnx"


def _export_transformer(args: argparse.Namespace) -> int:
    from .export.common import check_opset
    from .export.precision import check_precision, convert_transformer
    from .export.transformer import export_transformer

    check_opset(args.opset, "", "--opset")
    check_precision(args.precision, "", "--precision")
    converted = args.precision != "fp32"
    # int8 / fp16: the fp32 graph is a temporary file beside OUT; OUT only holds the result.
    fp32_path = args.out.with_name(f".{args.out.name}.fp32.onnx") if converted else args.out
    try:
        result = export_transformer(
            args.checkpoint,
            args.codec,
            fp32_path,
            lora_path=args.lora,
            opset_version=args.opset,
            verbose=args.verbose,
        )
        if converted:
            convert_transformer(fp32_path, args.precision, args.out)
    finally:
        if converted:
            fp32_path.unlink(missing_ok=True)
            fp32_path.with_name(fp32_path.name + ".data").unlink(missing_ok=True)
    config = {**result.config, "precision": args.precision}
    print(result.report.summary())
    print(
        f"wrote {args.out} ({config['kind']}: {config['n_codebooks']} codebooks, "
        f"{config['n_predict_codebooks']} predicted, {config['n_layers']} layers, "
        f"d_model {config['d_model']}, {config['precision']})"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_models

    if args.list_loras:
        for name in hub.list_loras(repo=args.repo, revision=args.revision):
            print(name)
        return 0
    if args.out is None:
        raise ValueError("--out must be given (the models folder), got none")
    metadata = None
    if args.pretrained:
        given = [flag for flag in ("codec", "coarse", "c2f", "wavebeat") if getattr(args, flag)]
        if given:
            raise ValueError(
                f"--pretrained must not come with --{given[0]}: it downloads all the checkpoints"
            )
        print(hub.LICENSE_NOTICE, file=sys.stderr)
        pretrained = hub.download(repo=args.repo, revision=args.revision, lora=args.lora)
        args.codec, args.coarse, args.c2f = pretrained.codec, pretrained.coarse, pretrained.c2f
        args.wavebeat = pretrained.wavebeat
        metadata = hub.provenance(pretrained)
    else:
        for flag in ("repo", "revision", "lora"):
            if getattr(args, flag) != _HUB_DEFAULTS[flag]:
                raise ValueError(f"--{flag} must come with --pretrained or --list-loras")
        if args.codec is None:
            raise ValueError("--codec must be given (or --pretrained), got neither")
    result = export_models(
        args.out,
        codec=args.codec,
        coarse=args.coarse,
        c2f=args.c2f,
        wavebeat=args.wavebeat,
        single_graph=args.single_graph,
        step_graphs=args.step_graphs,
        trace=args.trace,
        batch_coupled=args.batch_coupled,
        opset=args.opset,
        precision=args.precision,
        metadata=metadata,
        op_bodies=args.op_bodies,
        inline_op_bodies=args.inline_op_bodies,
        op_bodies_variant=args.op_bodies_variant,
        verbose=args.verbose,
        progress=True,
        cli=True,
    )
    names = ", ".join(p.name for p in result.files)
    print(f"wrote {names} to {result.out} ({result.n_bytes / 2**20:.1f} MiB)")
    return 0


def _export_codec(args: argparse.Namespace) -> int:
    from .export.codec import export_codec
    from .export.common import check_opset

    check_opset(args.opset, "", "--opset")

    result = export_codec(args.codec, args.out, opset_version=args.opset, verbose=args.verbose)
    config = result.config
    print(
        f"wrote {result.encode_path} and {result.decode_path} ({config['n_codebooks']} "
        f"codebooks, hop {config['hop_length']}, {config['sample_rate']} Hz)"
    )
    return 0


def _vamp_settings(args: argparse.Namespace) -> dict:
    """`Vamp.vamp` keyword arguments from the parsed vamp options: each setting as given, else
    the preset's (--preset), else its default; --mask loaded, --inpaint as a pair."""
    from .presets import preset

    chosen = preset(args.preset) if args.preset else {}
    settings = {}
    for cls in (SamplingSettings, MaskSettings):
        for f in fields(cls):
            given = getattr(args, f.name)
            settings[public_name(f.name)] = (
                given if given is not None else chosen.get(f.name, f.default)
            )
    if args.mask is not None:
        given = [
            f.metadata["flag"] for f in fields(MaskSettings) if getattr(args, f.name) is not None
        ]
        if args.preset or given:
            raise ValueError(
                f"--mask must not come with {given[0] if given else '--preset'}: the mask file "
                "replaces the mask recipe"
            )
        # IN... with --out-dir, IN of IN OUT; the demo's input is made later.
        paths = getattr(args, "paths", [])
        inputs = paths if getattr(args, "out_dir", None) is not None else paths[:1]
        settings["mask"] = _load_mask(args.mask, inputs)
    if args.inpaint is not None:
        settings["inpaint"] = tuple(args.inpaint)
    if getattr(args, "context", None):  # 0 is the default: upstream's independent chunks
        settings["context_s"] = args.context
    return dict(seed=args.seed, **settings, keep_rate=not args.codec_rate, progress=not args.quiet)


def _load_mask(path: Path, inputs: Sequence[Path]):
    """--mask: a .npy array (numpy's own format; no pickled objects). Its header is read first:
    a mask longer than the longest of `inputs` can be (in frames, from their headers) is
    refused before its data is read."""
    import numpy as np

    if path.suffix != ".npy":
        raise ValueError(f"--mask must be a .npy file (numpy.save), got '{path}'")
    if path.is_dir():
        raise ValueError(f"--mask must be a .npy file (numpy.save), got the folder '{path}'")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"--mask must be an existing .npy file, got '{path}'") from None
    except (ValueError, EOFError, OSError) as err:
        reason = _one_line(err) if str(err).strip() else "it is empty"
        raise ValueError(
            f"--mask must be a numpy .npy array file, got '{path}' ({reason})"
        ) from None
    if not isinstance(array, np.ndarray):  # np.load opens an .npz archive whatever its name
        array.close()
        raise ValueError(f"--mask must be a .npy array, got '{path}', an .npz archive")
    limit = _max_frames(inputs)
    if array.ndim and limit is not None and array.shape[-1] > limit:
        raise ValueError(
            f"--mask must have at most {limit} frames (the longest input's, about), got shape "
            f"{list(array.shape)} in '{path}'"
        )
    return np.array(array)


def _max_frames(inputs: Sequence[Path]) -> int | None:
    """An upper bound of the codec frames of the longest of `inputs` that can be read (from
    their headers: 44.1 kHz, hop 768, one frame of slack), or None if none can."""
    import soundfile

    frames = []
    for path in inputs:
        try:
            info = soundfile.info(path)
        except (soundfile.SoundFileError, RuntimeError, OSError):
            continue
        if info.samplerate > 0:
            frames.append(math.ceil(info.frames * 44100 / info.samplerate / 768) + 1)
    return max(frames, default=None)


def _check_out_folder(path: Path, flag: str) -> None:
    """`path` is a folder or can be made one: its nearest existing ancestor is a folder we may
    write to (checked before any work; the folder itself is made later)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} must be a folder, got '{path}' ('{existing}' is a file)")
    if existing == path:
        return
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} must be a folder you may create, got '{path}'")


def _checked_settings(args: argparse.Namespace, vamp_class) -> dict:
    """`_vamp_settings`, checked by `vamp_class.check_settings` as its `vamp` would; errors
    name the flags (``--steps``), not the keyword arguments."""
    if not getattr(args, "ray", False):  # on Ray, threads are the workers' CPUs, not ours
        check_threads(args.threads, "", "--threads")
    settings = _vamp_settings(args)
    run_options = ("keep_rate", "progress")
    try:
        vamp_class.check_settings(**{k: v for k, v in settings.items() if k not in run_options})
    except ValueError as err:
        raise ValueError(_as_flags(str(err))) from err
    return settings


def _as_flags(message: str) -> str:
    """``"Vamp.vamp: beat_mask_ms must ..."`` -> ``"--beat-mask must ..."``: an API error about
    a setting, told in the words of the command line."""
    flags = {"seed": "--seed", "mask": "--mask", "inpaint": "--inpaint", "context_s": "--context"}
    for cls in (SamplingSettings, MaskSettings):
        flags.update({public_name(f.name): f.metadata["flag"] for f in fields(cls)})
    found = re.match(r"[\w.]+: (\w+) must (.*)", message, re.DOTALL)
    if found is None or found.group(1) not in flags:
        return message
    return f"{flags[found.group(1)]} must {found.group(2)}"


def _vamp(args: argparse.Namespace) -> int:
    from . import audio, runtime
    from .pipeline import SingleGraphVamp, Vamp

    single = args.models.suffix == ".onnx"
    cls = SingleGraphVamp if single else Vamp
    args.ray = args.ray or args.ray_address is not None
    args.paths += _inputs_from(args)
    if not args.paths:
        raise ValueError(
            "IN must be given: IN OUT, or IN... (or --inputs-from FILE) with --out-dir DIR, got "
            "none"
        )
    # Everything the user gave is checked before the (slow) model load.
    settings = _checked_settings(args, cls)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.ray:
        return _vamp_ray(args, settings)
    for flag, value in (("--workers", args.workers), ("--gpus-per-worker", args.gpus_per_worker)):
        if value is not None:
            raise ValueError(f"{flag} must come with --ray, got {flag} {value} and no --ray")
    if args.out_dir is not None:
        return _vamp_many(args, single, settings)
    if len(args.paths) != 2:
        raise ValueError(
            f"IN OUT must be two paths (or IN... with --out-dir DIR), got {len(args.paths)}"
        )
    args.input, args.output = args.paths
    info = audio.file_info(args.input)
    audio.check_input_rate(info.sample_rate, "", f"the sample rate of IN ('{args.input}')")
    audio.check_output_path(args.output, "", "OUT", args.input)
    runtime.device_providers(args.device, "", "--device")
    if single and not args.models.is_file():
        raise FileNotFoundError(f"--models must be an existing vamp.onnx, got '{args.models}'")
    rate = _codec_rate(args.models, single) if args.codec_rate else info.sample_rate
    subtype = audio.kept_subtype(args.output, info)
    audio.check_output_format(args.output, rate, subtype, "", "OUT", _rate_hint(args))
    vamp = cls(args.models, threads=args.threads, device=args.device)
    out, rate = vamp.vamp_file(args.input, args.output, **settings)
    print(f"wrote {out} ({rate} Hz)")
    return 0


def _inputs_from(args: argparse.Namespace) -> list[Path]:
    """The paths listed in --inputs-from FILE, one a line (blank lines skipped, spaces around
    a path ignored)."""
    if args.inputs_from is None:
        return []
    if args.out_dir is None:
        raise ValueError("--inputs-from must come with --out-dir DIR, got no --out-dir")
    if not args.inputs_from.is_file():
        raise FileNotFoundError(f"--inputs-from must be an existing file, got '{args.inputs_from}'")
    try:
        lines = args.inputs_from.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(
            f"--inputs-from must be a text file of paths, got '{args.inputs_from}' ({err})"
        ) from None
    return [Path(line.strip()) for line in lines if line.strip()]


def _codec_rate(models: Path, single: bool) -> int:
    """The codec's sample rate from the graph's metadata, without loading the models."""
    from .contracts import CODEC_CONFIG_KEY, ENCODE_FILE, read_metadata

    graph = models if single else models / ENCODE_FILE
    return int(read_metadata(graph, CODEC_CONFIG_KEY, "--models")["sample_rate"])


def _rate_hint(args: argparse.Namespace) -> str | None:
    """What to do when OUT's format cannot take the input's rate (None with --codec-rate)."""
    if args.codec_rate:
        return None
    return "--codec-rate writes at the codec's 44.1 kHz, or write .wav, which takes any rate"


def _vamp_many(args: argparse.Namespace, single: bool, settings: dict) -> int:
    """`vamp IN... --out-dir DIR` (`folder`): each input to DIR/<its stem><its extension, or
    .wav where soundfile cannot write that>, --batch-size files a `vamp_batch` (one by one for
    vamp.onnx). Outputs that collide or overwrite an input are refused before any work; an
    input that fails its checks or its vamp is reported by name, the others complete, and
    DIR/failures.json lists the failures (status 1). A rerun skips complete outputs
    (`folder.resume`: DIR/manifest.json must record the same settings and models, unless
    --overwrite)."""
    from . import folder, runtime
    from .pipeline import SingleGraphVamp, Vamp

    jobs = folder.plan(args.paths, args.out_dir, "--out-dir")
    _check_out_folder(args.out_dir, "--out-dir")
    runtime.device_providers(args.device, "", "--device")
    if single and not args.models.is_file():
        raise FileNotFoundError(f"--models must be an existing vamp.onnx, got '{args.models}'")
    rate = _codec_rate(args.models, single) if args.codec_rate else None
    jobs, early = folder.check_jobs(jobs, rate, _rate_hint(args))
    if not jobs:  # nothing to do: the (first) reason, and no folder made
        more = f" (and {len(early) - 1} more inputs that cannot)" if len(early) > 1 else ""
        raise ValueError(f"{early[0].reason}{more}")
    failures = []

    def failed(failure) -> None:
        failures.append(failure)
        print(f"{PROG} vamp: failed '{failure.job.input}': {failure.reason}", file=sys.stderr)

    made = folder.manifest(args.models, settings)
    jobs, done = folder.resume(args.out_dir, jobs, made, args.overwrite)
    for failure in early:
        failed(failure)
    if done:
        print(
            f"skipped {len(done)} complete output(s) in {args.out_dir} (--overwrite redoes them)",
            flush=True,
        )
    vamp_class = SingleGraphVamp if single else Vamp
    vamp = vamp_class(args.models, threads=args.threads, device=args.device)
    # Only once the models have loaded: a folder that cannot load makes no output folder.
    folder.start(args.out_dir, jobs, made)
    try:
        folder.run_jobs(
            vamp,
            jobs,
            batch_size=args.batch_size,
            on_written=lambda job, rate: print(f"wrote {job.output} ({rate} Hz)", flush=True),
            on_failed=failed,
            **settings,
        )
    finally:
        # Also on Ctrl-C: the failures so far are reported, the outputs written stay.
        report = folder.write_failures(args.out_dir, failures)
    if report is None:
        return 0
    print(
        f"{PROG} vamp: {len(failures)} of {len(args.paths)} inputs failed, listed in {report}",
        file=sys.stderr,
    )
    return 1


def _loop_recipe(args: argparse.Namespace) -> dict:
    """extend's mask recipe: the preset's settings, then the options given (which win); empty
    when neither is given (every new frame generated)."""
    from .presets import preset

    recipe = preset(args.preset) if args.preset else {}
    for f in fields(MaskSettings):
        if getattr(args, f.name) is not None:
            recipe[f.name] = getattr(args, f.name)
    return recipe


def _extend(args: argparse.Namespace) -> int:
    """`extend IN OUT --seconds N [--context S]` (`Vamp.extend_file`): every value checked
    before the models load."""
    from . import audio, longform, runtime
    from .contracts import COARSE_CHUNK_S
    from .pipeline import Vamp

    check_threads(args.threads, "", "--threads")
    args.input, args.output = args.paths
    sampling = {}
    for f in fields(SamplingSettings):
        given = getattr(args, f.name)
        sampling[public_name(f.name)] = f.default if given is None else given
    sampling.update(_loop_recipe(args))
    try:
        Vamp.check_settings(seed=args.seed, **sampling)
    except ValueError as err:
        raise ValueError(_as_flags(str(err))) from err
    info = audio.file_info(args.input, "", "IN")
    audio.check_input_rate(info.sample_rate, "", f"the sample rate of IN ('{args.input}')")
    input_s = info.n_frames / info.sample_rate
    context = args.context if args.context is not None else min(DEFAULT_CONTEXT_S, input_s)
    try:
        seconds, context = longform.check_extend(
            args.seconds, context, input_s, COARSE_CHUNK_S, "Vamp.extend"
        )
    except ValueError as err:
        raise ValueError(
            str(err)
            .replace("Vamp.extend: seconds", "--seconds")
            .replace("Vamp.extend: context_s", "--context")
        ) from None
    subtype = audio.kept_subtype(args.output, info)
    audio.check_output_path(
        args.output, "", "OUT", args.input, sample_rate=info.sample_rate, subtype=subtype
    )
    longform.check_output_length(args.output, subtype, info, seconds, "", "--seconds")
    runtime.device_providers(args.device, "", "--device")
    if args.models.suffix == ".onnx" or not args.models.is_dir():
        raise ValueError(
            f"--models must be a models folder (vampnet-onnx export; the single graph runs one "
            f"clip, not windows), got '{args.models}'"
        )
    vamp = Vamp(args.models, threads=args.threads, device=args.device)
    out, rate = vamp.extend_file(
        args.input,
        args.output,
        seconds=seconds,
        context_s=context,
        seed=args.seed,
        progress=not args.quiet,
        **sampling,
    )
    print(f"wrote {out} ({rate} Hz, {seconds:g} s added)")
    return 0


def _vamp_ray(args: argparse.Namespace, settings: dict) -> int:
    """`vamp IN... --out-dir DIR --ray` (`distributed.vamp_files`): the same outputs, manifest,
    resume and failures report as without --ray, the files vamped by Ray workers."""
    if args.out_dir is None:
        raise ValueError("--ray must come with --out-dir DIR, got no --out-dir")
    gpus = args.gpus_per_worker
    if args.device == "cuda":
        gpus = 1.0 if gpus is None else gpus
    elif gpus:
        raise ValueError(f"--gpus-per-worker must come with --device cuda, got {gpus:g}")
    _check_out_folder(args.out_dir, "--out-dir")
    from . import distributed
    from .contracts import FAILURES_FILE

    flags = {
        "threads": "--threads",
        "batch_size": "--batch-size",
        "workers": "--workers",
        "gpus_per_worker": "--gpus-per-worker",
        "out_dir": "--out-dir",
        "address": "--ray-address",
        "models": "--models",
        "overwrite": "--overwrite",
        "keep_rate": _rate_hint(args) or "",
    }
    settings = dict(settings)
    progress = settings.pop("progress")
    try:
        summary = distributed.vamp_files(
            args.paths,
            args.out_dir,
            args.models,
            address=args.ray_address,
            workers=args.workers,
            threads=args.threads or distributed.DEFAULT_THREADS,
            gpus_per_worker=gpus or 0,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            progress=progress,
            flags=flags,
            **settings,
        )
    except ImportError as err:
        raise ValueError(f"--ray must have Ray Data installed: {_one_line(err)}") from None
    if summary.skipped:
        print(
            f"skipped {len(summary.skipped)} complete output(s) in {args.out_dir} (--overwrite "
            "redoes them)"
        )
    for failure in summary.failures:
        print(f"{PROG} vamp: failed '{failure.job.input}': {failure.reason}", file=sys.stderr)
    print(summary.line())
    if not summary.failures:
        return 0
    print(
        f"{PROG} vamp: {len(summary.failures)} of {len(args.paths)} inputs failed, listed in "
        f"{args.out_dir / FAILURES_FILE}",
        file=sys.stderr,
    )
    return 1


def _demo(args: argparse.Namespace) -> int:
    from . import audio, demo, runtime
    from .pipeline import Vamp

    settings = _checked_settings(args, Vamp)
    if settings["beat_mask_ms"] > 0:
        given = "--beat-mask" if args.beat_mask_ms is not None else f"--preset '{args.preset}'"
        raise ValueError(
            f"{given} must not come with the demo: a beat mask needs a beat tracker, which "
            "the demo's models lack (vamp --models DIR of an export with --wavebeat has one)"
        )
    runtime.device_providers(args.device, "", "--device")
    if not 0 < args.seconds <= _DEMO_MAX_SECONDS:
        raise ValueError(f"--seconds must be in (0, {_DEMO_MAX_SECONDS:g}], got {args.seconds}")
    _check_out_folder(args.out, "--out")
    models = demo.demo_models(args.verbose, progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    sample_rate = 44100
    x = demo.synth_music(args.seconds, sample_rate)
    audio.write_audio(args.out / "in.wav", x, sample_rate)
    vamp = Vamp(models, threads=args.threads, device=args.device)
    out, _ = vamp.vamp_file(args.out / "in.wav", args.out / "out.wav", **settings)
    y, _ = audio.load_audio(out)
    figure = demo.spectrogram_figure([x, y[0]], ["input", "output"], sample_rate)
    png = demo.write_png(args.out / "spectrograms.png", figure)
    print(f"models (random weights): {models}")
    print(f"wrote {args.out / 'in.wav'} (input), {out} (vamped)")
    print(f"wrote {png} (spectrograms, log frequency: input on top, output below)")
    return 0


def _app(args: argparse.Namespace) -> int:
    from . import runtime

    runtime.device_providers(args.device, "", "--device")
    if not 0 < args.max_seconds < math.inf:
        raise ValueError(f"--max-seconds must be a number > 0, got {args.max_seconds}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    try:
        from .app import serve
    except ImportError as err:
        raise ValueError(
            f"gradio must be installed for the app: pip install 'vampnet-onnx[app]' "
            f"({_one_line(err)})"
        ) from None
    serve(
        args.models,
        host=args.host,
        port=args.port,
        device=args.device,
        max_seconds=args.max_seconds,
    )
    return 0


def _add_settings(group, settings_class) -> None:
    """One option per field of a `settings` dataclass: its flag, type and help. The parsed
    default is None, so that a preset can tell a given option from a default one."""
    for f in fields(settings_class):
        group.add_argument(
            f.metadata["flag"],
            dest=f.name,
            type=f.metadata["limit"].kind,
            default=None,
            metavar=f.metadata["metavar"],
            help=f"{f.metadata['help']} (default {f.default})",
        )


class _Once(argparse.Action):
    """An option that may be given once: a second one is an error, not a silent winner."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest)
        if given is not None:
            parser.error(f"{option_string} must be given once, got '{given}' and '{values}'")
        setattr(namespace, self.dest, values)


class _ListPresets(argparse.Action):
    """--list-presets: print the presets and exit, like --help (no other argument needed)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from .presets import PRESETS, describe

        width = max(map(len, PRESETS))
        for name in PRESETS:
            print(f"{name:<{width}}  {describe(name)}")
        parser.exit()


def _add_vamp_options(parser: argparse.ArgumentParser) -> None:
    """The mask, sampling and run options of `vamp` and `demo` (VampNet's app defaults)."""
    _add_sampling_options(parser)
    recipe = _add_recipe_options(
        parser, "mask (what is kept from the input; 1 frame = 768 samples at 44.1 kHz, about 17 ms)"
    )
    recipe.add_argument(
        "--mask",
        type=Path,
        metavar="FILE",
        help="the mask itself instead of the recipe: a .npy of bools or 0/1 ints, 1 = "
        "generate, shape [T] or [14, T] with T = ceil(samples at 44.1 kHz / 768) (models "
        "folder only)",
    )
    recipe.add_argument(
        "--inpaint",
        type=float,
        nargs=2,
        metavar=("START", "END"),
        help="generate only from START to END seconds and keep the rest, every codebook, as "
        "it is; the recipe (or --mask) still applies inside: add --periodic-prompt 0 to "
        "regenerate it all (models folder only)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--codec-rate",
        action="store_true",
        help="write at the codec's 44.1 kHz instead of the input's sample rate",
    )
    _add_run_options(run)


def _add_recipe_options(parser: argparse.ArgumentParser, title: str):
    """--preset, --list-presets and the mask recipe's options, in a group titled `title`
    (returned)."""
    from .presets import PRESETS

    recipe = parser.add_argument_group(title)
    recipe.add_argument(
        "--preset",
        choices=list(PRESETS),
        action=_Once,
        metavar="NAME",
        help="one of VampNet's app presets (--list-presets); options given explicitly win",
    )
    recipe.add_argument("--list-presets", action=_ListPresets, help="list the presets and exit")
    _add_settings(recipe, MaskSettings)
    return recipe


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """--seed and the coarse stage's sampling settings."""
    sampling = parser.add_argument_group(
        "sampling (coarse stage; c2f uses upstream's fixed 2 steps)"
    )
    sampling.add_argument("--seed", type=int, default=0, help="random seed, any int64 (default 0)")
    _add_settings(sampling, SamplingSettings)


def _add_run_options(run) -> None:
    """--threads, --device, --quiet, --verbose."""
    run.add_argument(
        "--threads",
        type=int,
        help="intra-op threads, at most 4 per CPU (default: onnxruntime's)",
    )
    run.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where the graphs run: cpu, or cuda (needs the onnxruntime-gpu package; an error, "
        "not a CPU fallback, where it cannot run) (default cpu)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--verbose", action="store_true", help="full tracebacks")


def _add_precision_option(parser: argparse.ArgumentParser, folder: bool) -> None:
    """--precision; `folder`: for ``export`` (every graph of the folder), else one transformer."""
    from .contracts import DEFAULT_PRECISION, PRECISIONS

    what = (
        "fp32; int8: for CPUs, the transformers' weights in 8 bits (about a quarter of the "
        "size), the codec computing in fp32 from fp16-stored weights; fp16: the transformers "
        "and the codec, for GPUs (runs "
        "on CPUs slowly); wavebeat.onnx stays fp32. Each graph's metadata records its "
        "precision."
        if folder
        else "fp32; int8 weights for CPUs (about a quarter of the size); fp16 for GPUs (runs "
        "on CPUs slowly); the graph's metadata records it."
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help=f"{what} Accuracy and speed: docs/precision.md (default fp32)",
    )


def _add_export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--opset", type=int, default=20, help="ONNX opset, >= 18 (default 20)")
    parser.add_argument(
        "--verbose", action="store_true", help="exporter messages and full tracebacks"
    )


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block is for --help, not for every typo."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help for usage)\n")


#: The hub options' defaults (`hub.download`), to tell a given option from a default one.
_HUB_DEFAULTS = {"repo": hub.DEFAULT_REPO, "revision": None, "lora": hub.BASE_NAME}

#: The demo's longest input: its synthesised music is held in memory several times over.
_DEMO_MAX_SECONDS = 600.0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = _Parser(prog=PROG, description="VampNet on ONNX Runtime.")
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
    _add_precision_option(export, folder=False)
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
            "batch_offset [, first_step, last_step, n_masked_start for a slice of the steps] "
            "-> codes_out, mask_out; see docs/generation.md). --single-graph adds vamp.onnx, "
            "the whole vamp in one graph: audio -> audio. Weights over 64 MiB go to "
            "FILE.data beside each graph; KIND.generate.onnx reads the weights of KIND.onnx.data "
            "(on disk once): keep the folder together. The export owns the folder's graphs: "
            "a vamp.onnx it does not rewrite, and a coarse or c2f pair of another codec, are "
            "removed (each named), since they would run the earlier graphs."
        ),
    )
    bundle.add_argument("--coarse", type=Path, help="coarse.pth")
    bundle.add_argument("--c2f", type=Path, help="c2f.pth")
    bundle.add_argument("--codec", type=Path, help="LAC codec.pth (required without --pretrained)")
    bundle.add_argument(
        "--wavebeat",
        type=Path,
        help="WaveBeat's wavebeat.pth: also write DIR/wavebeat.onnx, the beat tracker that "
        "vamp --beat-mask and the follow-beat presets need",
    )
    bundle.add_argument("--out", type=Path, metavar="DIR", help="output folder (required)")
    hub_options = bundle.add_argument_group(
        "pretrained weights (VampNet's released checkpoints from the Hugging Face Hub; needs "
        "the network once, then the hub cache; licensed CC BY-NC-SA 4.0, as are graphs "
        "exported from them)"
    )
    hub_options.add_argument(
        "--pretrained",
        action="store_true",
        help="download codec.pth, coarse.pth, c2f.pth and wavebeat.pth and export them "
        "(instead of --codec, --coarse, --c2f)",
    )
    hub_options.add_argument(
        "--repo", default=_HUB_DEFAULTS["repo"], help="Hub repository (default %(default)s)"
    )
    hub_options.add_argument(
        "--revision", help="branch, tag or commit of the repository (default: its main branch)"
    )
    hub_options.add_argument(
        "--lora",
        default=_HUB_DEFAULTS["lora"],
        metavar="NAME",
        help="a fine-tune (--list-loras) instead of the base coarse and c2f models "
        "(default: %(default)s, the base models)",
    )
    hub_options.add_argument(
        "--list-loras", action="store_true", help="list the fine-tunes of --repo and exit"
    )
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
        "--step-graphs",
        action="store_true",
        help="also write DIR/KIND.step.onnx for each model: one step of the generation loop "
        "(the transformer and one MaskGitStep: codes, mask, step, the settings, "
        "n_masked_start -> codes_out, mask_out), which Generator runs once per step, for "
        "runtimes without ONNX's Loop (tract: with --inline-op-bodies; see docs/generation.md, "
        "'Step graphs'); it reads the weights of KIND.onnx.data",
    )
    bundle.add_argument(
        "--batch-coupled",
        action="store_true",
        help="count the schedule over the whole batch, as upstream VampNet does (default: per "
        "batch item)",
    )
    _add_precision_option(bundle, folder=True)
    bundle.add_argument(
        "--op-bodies",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="every graph that uses the vampnet_onnx ops (generation graphs, vamp.onnx, int8's "
        "codec) carries their standard-op bodies (ONNX functions), so that it also runs where "
        "the op library cannot load (other runtimes, onnxruntime without the library, slower "
        "there); onnxruntime with the library still runs the kernels. About 94 KB a "
        "generation graph, 157 KB for vamp.onnx (default: on; --no-op-bodies writes graphs "
        "that need the library; docs/ops.md, 'Standard-op bodies')",
    )
    bundle.add_argument(
        "--inline-op-bodies",
        action="store_true",
        help="write those graphs with the bodies inlined in place of the op nodes instead, for "
        "runtimes that do not expand ONNX functions: no vampnet_onnx node is left, so the "
        "library's kernels never run (slower with onnxruntime)",
    )
    bundle.add_argument(
        "--op-bodies-variant",
        choices=["exact", "portable"],
        default="exact",
        help="exact: the bodies compute as the kernels do (float64 where they do, the Philox "
        "rounds in a Loop) and give their bits on onnxruntime; portable: float32 throughout "
        "and no Loop, for OpenVINO (with --inline-op-bodies), tract and runtimes without "
        "float64: the same random words, tokens that agree with the kernels' to within "
        "float32 rounding (default: exact; docs/portable.md)",
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
            "Vamp IN to OUT (or IN... to --out-dir DIR) with the models of `vampnet-onnx "
            "export`: preprocess (44.1 kHz, mono, -24 LUFS), encode, keep the masked prompt, "
            "generate coarse codes (10-s chunks) and fine codes (3-s chunks), decode, restore "
            "the input's length, loudness and sample rate. Defaults are VampNet's app defaults. "
            "Output is mono."
        ),
    )
    vamp.add_argument(
        "paths",
        type=Path,
        nargs="*",
        metavar="IN",
        help="IN OUT: an audio file (WAV, FLAC, OGG, MP3) and the output file (.wav, .flac); "
        "with --out-dir: IN..., one or more audio files",
    )
    vamp.add_argument(
        "--inputs-from",
        type=Path,
        metavar="FILE",
        help="with --out-dir: more inputs, one path per line of FILE (blank lines skipped, "
        "spaces around a path ignored, relative paths from the current folder), after any IN "
        "given: for lists too long for a command line",
    )
    vamp.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="vamp every IN to DIR/<its name> (its extension, or .wav where that cannot be "
        "written), each as `vamp IN OUT` would, --batch-size files at a time; an IN that "
        "fails is reported by name while the others are written, DIR/failures.json lists "
        "the failures and the status is 1; DIR/manifest.json records the settings and "
        "models, and a rerun skips the outputs already complete",
    )
    vamp.add_argument(
        "--overwrite",
        action="store_true",
        help="with --out-dir: redo every output, even complete ones of an earlier run with "
        "the same settings and models (which a rerun otherwise skips) or of other ones (which "
        "it otherwise refuses)",
    )
    vamp.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE_DEFAULT,
        metavar="N",
        help="with --out-dir: chunks per generation run, over several files (models folder "
        f"only; default {BATCH_SIZE_DEFAULT})",
    )
    cluster = vamp.add_argument_group(
        "on a Ray cluster (the ray extra; docs/cluster.md)",
        "With --out-dir: the same outputs, manifest, resume and failures report, the files "
        "vamped by Ray workers, each holding the models once. Inputs and DIR must be at the "
        "same paths on every node, the models folder on every node that runs a worker.",
    )
    cluster.add_argument(
        "--ray",
        action="store_true",
        help="run on Ray: the cluster this machine joined (`ray start`), else a local one for "
        "the run; --threads is then the CPUs of each worker (default "
        "1)",
    )
    cluster.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="the cluster to join (implies --ray): host:port of `ray start --head`, auto, or "
        "ray://host:port",
    )
    cluster.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray workers (default: as many as the cluster's CPUs, or GPUs, hold)",
    )
    cluster.add_argument(
        "--gpus-per-worker",
        type=float,
        metavar="G",
        help="GPUs each worker reserves, with --device cuda (default 1 there)",
    )
    vamp.add_argument(
        "--models",
        type=Path,
        required=True,
        metavar="PATH",
        help="folder written by vampnet-onnx export, or its vamp.onnx (export --single-graph: "
        "one run, no onset mask, whole input in memory)",
    )
    _add_vamp_options(vamp)
    vamp.add_argument(
        "--context",
        type=float,
        metavar="S",
        help="connect the 10-s coarse windows of a long input: each after the first starts "
        "with the last S seconds the window before it generated, kept (models folder only; "
        "default 0: upstream's independent chunks)",
    )
    vamp.set_defaults(handler=_vamp)

    extend = commands.add_parser(
        "extend",
        help="continue an audio file by N seconds of new music",
        description=(
            "Continue IN by --seconds of new music and write it, the input included, to OUT: "
            "10-s windows, each starting with --context seconds of the codes already there "
            "(the input's, then generated ones) and generating the rest; only new frames are "
            "appended, and the codes are decoded as one stream. OUT holds IN mixed to mono, "
            f"unchanged up to {JOIN_S * 1000:g} ms before its end, crossfaded there into the "
            "continuation, at IN's rate and loudness. With --preset or a mask option the new "
            "frames are IN looped, kept where the recipe's mask over IN keeps it, the rest "
            "generated (docs/generation.md, 'Longer than ten seconds')."
        ),
    )
    extend.add_argument("paths", type=Path, nargs=2, metavar="IN OUT", help="input, output")
    extend.add_argument(
        "--seconds", type=float, required=True, metavar="N", help="seconds of new music to add"
    )
    extend.add_argument(
        "--context",
        type=float,
        metavar="S",
        help=f"seconds of codes each window starts with, in [0, 10) and at most IN's length "
        f"(default {DEFAULT_CONTEXT_S:g}, or IN's length where shorter)",
    )
    extend.add_argument(
        "--models",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder written by vampnet-onnx export (not a vamp.onnx: the single graph runs one "
        "clip, not windows)",
    )
    _add_sampling_options(extend)
    _add_recipe_options(
        extend,
        "loop (any of these: the new frames are IN looped, kept where the recipe's mask over IN "
        "keeps it; none: every new frame generated)",
    )
    _add_run_options(extend.add_argument_group("run"))
    extend.set_defaults(handler=_extend)

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

    app = commands.add_parser(
        "app",
        help="serve VampNet's app: a web page to vamp clips with a models folder",
        description=(
            "Serve a Gradio page (the app extra: pip install 'vampnet-onnx[app]'; docs/app.md): "
            "upload, record or synthesise a clip, pick a preset or set the mask and sampling "
            "by hand, generate variations, listen, download them as float WAV, use one as the "
            "next input or continue it by N seconds. Its generate and extend actions are also "
            "an API (gradio_client, api_name 'vamp' and 'extend'). "
            "It serves this machine only unless --host says otherwise, one generation at a "
            "time."
        ),
    )
    app.add_argument(
        "--models",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder written by vampnet-onnx export (beat-mask controls only with its "
        "wavebeat.onnx)",
    )
    app.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 serves "
        "every network this machine is on: only on one you trust, docs/app.md)",
    )
    app.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    app.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where the graphs run: cpu, or cuda (onnxruntime-gpu) (default cpu)",
    )
    app.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="longest input accepted, in seconds; longer uploads are refused with a message "
        "(default 60)",
    )
    app.add_argument("--verbose", action="store_true", help="full tracebacks")
    app.set_defaults(handler=_app)
    return parser


#: Commands whose memory must not grow with the audio's length (`runtime.bound_heap_growth`).
_LONG_RUNNING = ("vamp", "extend", "demo", "app")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors print one line to stderr and return 1, Ctrl-C stops the running
    graph and returns 130 (``--verbose``: raise)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in _LONG_RUNNING:
            from .runtime import bound_heap_growth  # onnxruntime missing: its one-line error

            bound_heap_growth()
        return args.handler(args)
    except KeyboardInterrupt:
        if getattr(args, "verbose", False):
            raise
        # Outputs are written whole or not at all: nothing half-made is left behind.
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        if getattr(args, "verbose", False):
            raise
        print(f"{PROG} {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except Exception as err:  # not the user's error: still one line, the trace on request
        if getattr(args, "verbose", False):
            raise
        print(
            f"{PROG} {args.command}: error: {type(err).__name__}: {_one_line(err)} "
            "(--verbose shows the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line(err: BaseException) -> str:
    """The first line of an exception's message (onnxruntime's and torch's run to many)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
