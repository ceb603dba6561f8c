"""Graph builders that turn checkpoints into ONNX files, and `export_models`, which writes a
whole models folder (what ``vampnet-onnx export`` does).

Modules: `transformer`, `codec` and `wavebeat` export the torch modules of `vampnet_onnx.model`;
`generation` and `vamp` build graphs from those files with onnx-ir (no torch); `common` holds
the torch export-and-check helper and the one save path. torch is imported only when a
checkpoint is exported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contracts import (
    CODEC_CONFIG_KEY,
    CONFIG_KEY,
    CPU_CODEC_FILES,
    DEFAULT_PRECISION,
    GENERATION_FILES,
    STEP_FILES,
    TRANSFORMER_FILES,
    VAMP_FILE,
    WAVEBEAT_FILE,
    read_metadata,
)
from ..ops_functions import VARIANTS
from .common import DEFAULT_OPSET, attach_op_bodies, check_opset, stamp_metadata
from .precision import check_precision

if TYPE_CHECKING:
    from .codec import CodecExport
    from .generation import GenerationExport
    from .transformer import TransformerExport
    from .vamp import VampExport
    from .wavebeat import WaveBeatExport

__all__ = ["ModelsExport", "export_models"]


@dataclass
class ModelsExport:
    """Result of `export_models`: what was written, by stage.

    Attributes:
        out: the models folder.
        codec: the codec graphs (``codec.encode.onnx``, ``codec.decode.onnx``).
        transformers: kind ("coarse", "c2f") -> the transformer graph and its mapping report.
        generations: kind -> the generation graph.
        steps: kind -> the step graph, when asked for (`export_models`' step_graphs).
        vamp: the single graph (``vamp.onnx``), when asked for.
        wavebeat: the beat tracker (``wavebeat.onnx``), when a WaveBeat checkpoint was given.
        removed: graphs of an earlier export that this one made inconsistent and removed
            (with their ``.data``), each with the reason.
    """

    out: Path
    codec: CodecExport
    transformers: dict[str, TransformerExport] = field(default_factory=dict)
    generations: dict[str, GenerationExport] = field(default_factory=dict)
    steps: dict[str, GenerationExport] = field(default_factory=dict)
    vamp: VampExport | None = None
    wavebeat: WaveBeatExport | None = None
    removed: dict[Path, str] = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        """Every file written, in pipeline order: each graph, then its external weights file
        where it has one (`export.common.EXTERNAL_DATA_BYTES`)."""
        graphs = [self.codec.encode_path, self.codec.decode_path]
        graphs += [p for p in (self.codec.encode_cpu_path, self.codec.decode_cpu_path) if p]
        for kind in self.transformers:
            graphs += [self.transformers[kind].path, self.generations[kind].path]
            graphs += [self.steps[kind].path] if kind in self.steps else []
        if self.vamp is not None:
            graphs.append(self.vamp.path)
        if self.wavebeat is not None:
            graphs.append(self.wavebeat.path)
        return [file for graph in graphs for file in _with_data(graph)]

    @property
    def n_bytes(self) -> int:
        """The size of every file written."""
        return sum(file.stat().st_size for file in self.files)


def _with_data(graph: Path) -> list[Path]:
    """`graph` and, if it exists, its external data file ``<graph>.data``."""
    data = graph.with_name(graph.name + ".data")
    return [graph, data] if data.is_file() else [graph]


def _mib(graphs: list[Path]) -> str:
    size = sum(file.stat().st_size for graph in graphs for file in _with_data(graph))
    return f"{size / 2**20:.1f} MiB"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def export_models(
    out: str | Path,
    *,
    codec: str | Path,
    coarse: str | Path | None = None,
    c2f: str | Path | None = None,
    wavebeat: str | Path | None = None,
    single_graph: bool = False,
    step_graphs: bool = False,
    trace: bool = False,
    batch_coupled: bool = False,
    opset: int = DEFAULT_OPSET,
    precision: str = DEFAULT_PRECISION,
    metadata: dict[str, str] | None = None,
    op_bodies: bool = True,
    inline_op_bodies: bool = False,
    op_bodies_variant: str = "exact",
    verbose: bool = False,
    progress: bool = False,
    cli: bool = False,
) -> ModelsExport:
    """Export VampNet checkpoints to a models folder that `pipeline.Vamp`, `Generator` and
    ``vampnet-onnx vamp`` read (file names: `contracts`).

    Writes ``codec.encode.onnx`` and ``codec.decode.onnx`` (fp32: also their CPU variants,
    ``codec.encode.cpu.onnx`` and ``codec.decode.cpu.onnx``, `contracts.CPU_CODEC_FILES`, which
    share their weights files); for each of `coarse` and `c2f`
    given, ``KIND.onnx`` (the transformer) and ``KIND.generate.onnx`` (the whole generation
    loop), with `step_graphs` also ``KIND.step.onnx`` (one step of it); with `single_graph`
    also ``vamp.onnx`` (needs both models); with `wavebeat` also ``wavebeat.onnx`` (the beat
    tracker that `beats.BeatTracker` runs).

    Args:
        out: the folder (created if missing; existing files are replaced).
        codec: the LAC ``codec.pth`` (its codebooks are part of the transformers' embedding).
        coarse, c2f: ``coarse.pth`` and ``c2f.pth``; at least one.
        wavebeat: WaveBeat's Lightning checkpoint (``wavebeat.pth``), or None to skip it.
        single_graph: also write the single graph ``vamp.onnx`` (docs/generation.md).
        step_graphs: also write the step graphs ``KIND.step.onnx`` (`contracts.STEP_FILES`,
            contract `contracts.GENERATION_STEP`): one iteration of the generation loop, which
            `Generator` runs once per step, for runtimes without ONNX's `Loop` (tract;
            docs/generation.md, "Step graphs"). They share the transformer's weights file.
        trace: the generation graphs also output the codes and mask after every step.
        batch_coupled: the generation graphs count the schedule over the whole batch, as
            upstream VampNet does (default: per batch item).
        opset: ONNX opset, >= 18.
        precision: "fp32"; "int8" (int8 weights, for CPUs): the transformers, and so the
            generation graphs and vamp.onnx, the codec computing in fp32 from fp16-stored
            weights with the op library's Snake (a CPU op); or "fp16" (for GPUs):
            the transformers and the codec, its quantizer computing in fp32
            (`export.precision`); wavebeat.onnx is fp32 either way. Each graph's config
            records its precision ("precision").
        op_bodies: every graph that uses the vampnet_onnx ops (the generation graphs,
            vamp.onnx, int8's codec) also carries their standard-op bodies
            (`export.common.attach_op_bodies`): it runs where the op library cannot load,
            and onnxruntime with the library still runs the kernels (docs/ops.md). False:
            graphs without them (each about 94 KB smaller, vamp.onnx 157 KB).
        inline_op_bodies: the bodies inlined in place of the op nodes instead
            (`ops_functions.inline_functions`), for runtimes that do not expand model-local
            functions: no node of the vampnet_onnx domain is left, so the kernels never run,
            even where the library is registered. Needs `op_bodies`.
        op_bodies_variant: the bodies' variant (`ops_functions.VARIANTS`): "exact" (the
            kernels' bits on onnxruntime) or "portable" (float32 and no Loop, for OpenVINO,
            tract and runtimes without float64; docs/portable.md). Needs `op_bodies`.
        metadata: extra metadata entries written into every graph (e.g. the weights' license
            and source, `hub.provenance`).
        verbose: show the torch exporter's own messages.
        progress: a tqdm bar over the graphs, with a line for each file written.
        cli: name arguments as ``vampnet-onnx export``'s flags in error messages.

    Raises:
        ValueError: no model given, `single_graph` without both, or a checkpoint of the other
            kind (a c2f file given as `coarse`).
        CheckpointError: a checkpoint is unsafe, unreadable or does not match the codec, or
            `wavebeat` is not a WaveBeat checkpoint.
    """
    from ..checkpoint import CheckpointError, load_checkpoint, load_codec, load_wavebeat
    from ..configs import VampNetConfig

    name: Callable[[str], str] = _flag if cli else str
    where = "" if cli else "export_models: "
    check_opset(opset, where[:-2], name("opset"))
    check_precision(precision, where[:-2], name("precision"))
    models = [(kind, path) for kind, path in (("coarse", coarse), ("c2f", c2f)) if path]
    if not models:
        raise ValueError(
            f"{where}at least one of {name('coarse')} and {name('c2f')} must be given, got neither"
        )
    if single_graph and len(models) != 2:
        raise ValueError(
            f"{where}{name('single_graph')} must come with both {name('coarse')} and "
            f"{name('c2f')}, got one"
        )
    if op_bodies_variant not in VARIANTS:
        raise ValueError(
            f"{where}{name('op_bodies_variant')} must be one of {list(VARIANTS)}, "
            f"got {op_bodies_variant!r}"
        )
    for option, set_ in (
        ("inline_op_bodies", inline_op_bodies),
        ("op_bodies_variant", op_bodies_variant != "exact"),
    ):
        if set_ and not op_bodies:
            raise ValueError(
                f"{where}{name(option)} must not come with "
                f"{'--no-op-bodies' if cli else 'op_bodies=False'}, got both"
            )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{where}{name('out')} must be a folder, got '{out}', a file")
    # Every checkpoint is read and checked now, not after the long exports; an error names
    # the option it was given to.
    checks: list[tuple[str, Any, Callable]] = [("codec", codec, load_codec)]
    checks += [(kind, path, load_checkpoint) for kind, path in models]
    if wavebeat is not None:
        checks.append(("wavebeat", wavebeat, load_wavebeat))
    for option, path, load in checks:
        what = {"codec": "LAC codec", "wavebeat": "WaveBeat"}.get(option, f"VampNet {option}")
        try:
            loaded = load(path)
            # A c2f checkpoint passed as coarse would otherwise be written as coarse.onnx.
            found = (
                VampNetConfig.from_kwargs(loaded.kwargs).kind if load is load_checkpoint else None
            )
        except (CheckpointError, ValueError) as err:
            raise CheckpointError(
                f"{where}{name(option)} must be a {what} checkpoint, got '{path}' ({err})"
            ) from err
        if found is not None and found != option:
            raise ValueError(
                f"{where}{name(option)} must be a {option} checkpoint, got a {found} one: '{path}'"
            )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # Everything is written to a folder beside `out` and moved in at the end, so a failure
    # half way leaves `out` as it was rather than a mix of new and old graphs.
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    try:
        result = _export_into(
            staging,
            codec,
            models,
            wavebeat,
            single_graph,
            step_graphs,
            trace,
            batch_coupled,
            opset,
            precision,
            verbose,
            progress,
        )
        if metadata:
            for graph in sorted(staging.glob("*.onnx")):
                stamp_metadata(graph, metadata)
        if op_bodies:
            for graph in sorted(staging.glob("*.onnx")):
                attach_op_bodies(graph, inline=inline_op_bodies, variant=op_bodies_variant)
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # a folder this export made, left empty by its failure
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = _moved(result, out)
    result.removed = _remove_stale(result)
    for path, reason in result.removed.items():
        if progress:
            print(f"removed {path.name}: {reason}")
    return result


def _remove_stale(result: ModelsExport) -> dict[Path, str]:
    """Remove the graphs of an earlier export in `result.out` that the new ones make
    inconsistent (an export owns its folder's graphs): a ``vamp.onnx`` not written now (it
    embeds the earlier codec and transformers), a step graph not written now beside a
    transformer written now, and a coarse or c2f pair (with its step graph) not written now
    whose codec is not the new one (``codec_sha256``). wavebeat.onnx depends on no codec: kept.
    Returns {removed graph: why}."""
    out = result.out
    removed: dict[Path, str] = {}
    for kind in result.transformers:
        if kind not in result.steps and (out / STEP_FILES[kind]).exists():
            removed[out / STEP_FILES[kind]] = (
                f"it came from an earlier export and would run its {kind} transformer (export "
                "--step-graphs writes one of this export)"
            )
    if result.vamp is None and (out / VAMP_FILE).exists():
        removed[out / VAMP_FILE] = (
            "it came from an earlier export and would run its graphs (export --single-graph "
            "writes one of this export)"
        )
    if result.codec.encode_cpu_path is None:
        for name in CPU_CODEC_FILES.values():
            if (out / name).exists():
                removed[out / name] = (
                    "it came from an earlier fp32 export and would run its codec (only fp32 "
                    "folders have one)"
                )
    codec_sha256 = result.codec.config.get("checkpoint_sha256")
    for kind in TRANSFORMER_FILES:
        if kind in result.transformers:
            continue
        graphs = [out / TRANSFORMER_FILES[kind], out / GENERATION_FILES[kind]]
        graphs.append(out / STEP_FILES[kind])
        present = [graph for graph in graphs if graph.exists()]
        if not present:
            continue
        try:
            config = read_metadata(present[-1], CONFIG_KEY, "export_models")
        except (OSError, ValueError):
            config = {}
        if config.get("codec_sha256") != codec_sha256:
            for graph in present:
                removed[graph] = (
                    f"it came from an earlier export with another codec (export --{kind} "
                    "writes one for this codec)"
                )
    for graph in removed:
        for file in _with_data(graph):
            file.unlink(missing_ok=True)
    return removed


def _moved(result: ModelsExport, out: Path) -> ModelsExport:
    """`result` with every path in `out` (same names) instead of the staging folder."""

    def move(value):
        return out / value.name if isinstance(value, Path) else value

    def paths(export):
        return replace(export, **{f.name: move(getattr(export, f.name)) for f in fields(export)})

    return ModelsExport(
        out,
        paths(result.codec),
        transformers={kind: paths(export) for kind, export in result.transformers.items()},
        generations={kind: paths(export) for kind, export in result.generations.items()},
        steps={kind: paths(export) for kind, export in result.steps.items()},
        vamp=paths(result.vamp) if result.vamp else None,
        wavebeat=paths(result.wavebeat) if result.wavebeat else None,
    )


def _export_into(
    out: Path,
    codec: str | Path,
    models: list[tuple[str, str | Path]],
    wavebeat: str | Path | None,
    single_graph: bool,
    step_graphs: bool,
    trace: bool,
    batch_coupled: bool,
    opset: int,
    precision: str,
    verbose: bool,
    progress: bool,
) -> ModelsExport:
    from tqdm import tqdm

    from .codec import export_codec
    from .generation import export_generation, export_step
    from .precision import convert_codec, convert_transformer, write_cpu_codec
    from .transformer import export_transformer

    options: dict[str, Any] = {"opset_version": opset, "verbose": verbose}
    total = 2 * len(models) + 1 + int(single_graph) + int(wavebeat is not None)
    with tqdm(total=total, desc="export", unit="graph", disable=not progress) as bar:

        def done(message: str) -> None:
            bar.update()
            if progress:
                bar.write(message)

        bar.set_postfix_str("codec")
        codec_export = export_codec(codec, out, **options)
        codec_graphs = [codec_export.encode_path, codec_export.decode_path]
        if precision != "fp32":
            for graph in codec_graphs:  # what each precision makes of the codec: convert_codec
                convert_codec(graph, precision)
            config = read_metadata(codec_graphs[0], CODEC_CONFIG_KEY, "export_models")
            codec_export = replace(codec_export, config=config)
        else:  # an int8 codec has the Snake op already; an fp16 one is for GPUs
            codec_export = replace(
                codec_export,
                encode_cpu_path=write_cpu_codec(codec_export.encode_path),
                decode_cpu_path=write_cpu_codec(codec_export.decode_path),
            )
        done(f"exported {' and '.join(g.name for g in codec_graphs)} ({_mib(codec_graphs)})")
        result = ModelsExport(out, codec_export)
        for kind, checkpoint in models:
            bar.set_postfix_str(TRANSFORMER_FILES[kind])
            transformer = export_transformer(
                checkpoint, codec, out / TRANSFORMER_FILES[kind], **options
            )
            if precision != "fp32":
                convert_transformer(transformer.path, precision)
                config = {**transformer.config, "precision": precision}
                transformer = replace(transformer, config=config)
            done(transformer.report.summary())
            bar.set_postfix_str(GENERATION_FILES[kind])
            generation = export_generation(
                transformer.path,
                out / GENERATION_FILES[kind],
                trace=trace,
                batch_coupled=batch_coupled,
            )
            graphs = [transformer.path, generation.path]
            if step_graphs:
                step = export_step(
                    transformer.path, out / STEP_FILES[kind], batch_coupled=batch_coupled
                )
                graphs.append(step.path)
                result.steps[kind] = step
            names = " and ".join(graph.name for graph in graphs)
            sizes = " and ".join(_mib([graph]) for graph in graphs)
            done(f"exported {names} ({sizes})")
            result.transformers[kind] = transformer
            result.generations[kind] = generation
        if single_graph:
            from .vamp import export_vamp

            bar.set_postfix_str(VAMP_FILE)
            result.vamp = export_vamp(out)
            done(f"exported {result.vamp.path.name} ({_mib([result.vamp.path])})")
        if wavebeat is not None:
            from .wavebeat import export_wavebeat

            bar.set_postfix_str(WAVEBEAT_FILE)
            result.wavebeat = export_wavebeat(wavebeat, out / WAVEBEAT_FILE, **options)
            done(f"exported {WAVEBEAT_FILE} ({_mib([result.wavebeat.path])})")
    return result
