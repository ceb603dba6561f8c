"""The whole vamp as one ONNX graph: ``vamp.onnx``, audio samples in, audio samples out.

Built from the four graphs of an export folder (``codec.encode.onnx``, ``coarse.onnx``,
``c2f.onnx``, ``codec.decode.onnx``): the encoder, the mask (`masks.build_mask` without the
onset mask), the coarse stage as a `Loop` over 10-s chunks whose body holds the coarse generation
loop, the coarse-to-fine stage as a `Loop` over 3-s chunks, and the decoder. It computes what
`pipeline.Vamp` computes on the same (preprocessed) audio, token for token: every random draw is
keyed by the one seed at a fixed place of the ops' counter-based streams (see `pipeline`).

Differences from `pipeline.Vamp`, which a caller (`pipeline.SingleGraphVamp`) covers:
- audio is mono at the codec's rate and already loudness-normalised (`audio.preprocess`); the
  graph neither resamples nor restores loudness (`audio.restore`);
- the codec runs on the whole input at once, not in segments, so memory grows with the input:
  meant for clips (up to a minute or two), not for long files;
- no onset mask (it needs an onset detector the graph does not have).

Contract: `vampnet_onnx.contracts.VAMP`; docs/generation.md. Built with onnx-ir; torch is not
needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
from onnx_ir import tape as ir_tape
from onnx_ir.passes.common import NameFixPass, RemoveUnusedNodesPass, TopologicalSortPass

from .. import masks, ops
from ..contracts import (
    C2F_CHUNK_S,
    C2F_SAMPLING,
    C2F_STREAM_BASE,
    COARSE_CHUNK_S,
    COARSE_STREAM_BASE,
    CODEC_CONFIG_KEY,
    CONFIG_KEY,
    DECODE_FILE,
    ENCODE_FILE,
    MASK_STREAM_ITEM,
    SOURCE_FILES,
    STREAM_SITES,
    VAMP,
    VAMP_DEFAULTS,
    VAMP_FILE,
    VAMP_KEY,
    VAMP_LIMITS,
    check_models_match,
    metadata,
    require_files,
)
from .common import PRODUCER, save_model
from .generation import build_generation_model


@dataclass(frozen=True)
class VampExport:
    """Result of `export_vamp`: the graph file, its external weights file (or None) and the
    settings stored in its metadata."""

    path: Path
    data_path: Path | None
    settings: dict


def _i64(tape: ir_tape.Tape, value) -> ir.Value:
    return tape.op("Constant", [], {"value": ir.tensor(np.asarray(value, np.int64))})


def _walk_values(graph: ir.Graph):
    """Every value defined in `graph` or its subgraphs: inputs, initializers, node outputs."""
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                yield from _walk_values(attr.value)
            elif attr.type == ir.AttributeType.GRAPHS:
                for sub in attr.value:
                    yield from _walk_values(sub)


@dataclass
class _Component:
    """A graph taken apart to be placed inside another: its nodes, initializers, inputs and
    outputs, every name prefixed so that components never clash."""

    nodes: list[ir.Node]
    initializers: list[ir.Value]
    inputs: dict[str, ir.Value]
    outputs: dict[str, ir.Value]

    def bind(self, **values: ir.Value) -> None:
        """Feeds the component: each named input is replaced by the given value."""
        if set(values) != set(self.inputs):
            raise ValueError(f"bind: inputs must be {sorted(self.inputs)}, got {sorted(values)}")
        for name, value in values.items():
            self.inputs[name].replace_all_uses_with(value)


def _take(model: ir.Model, prefix: str) -> _Component:
    graph = model.graph
    # Inputs with a default (the generation graph's slice inputs) keep it: they stay
    # initializers and are not bound.
    inputs = {v.name: v for v in graph.inputs if v.name not in graph.initializers}
    outputs = {v.name: v for v in graph.outputs}
    for value in list(_walk_values(graph)):
        if value.name:
            value.name = f"{prefix}/{value.name}"
    initializers = list(graph.initializers.values())
    graph.initializers.clear()
    nodes = list(graph)
    graph.remove(nodes)
    graph.inputs.clear()
    graph.outputs.clear()
    for node in nodes:
        node.name = f"{prefix}/{node.name}" if node.name else None
    return _Component(nodes, initializers, inputs, outputs)


def _chunk_frames(seconds: float, config: dict) -> int:
    return masks.seconds_to_frames(seconds, int(config["sample_rate"]), int(config["hop_length"]))


def _seconds_to_frames(tape: ir_tape.Tape, seconds: ir.Value, config: dict) -> ir.Value:
    """ceil(double(seconds) * sample_rate / hop) as int64: `masks.seconds_to_frames` in the same
    float64 operations."""
    rate = tape.op("Constant", [], {"value": ir.tensor(np.float64(config["sample_rate"]))})
    hop = tape.op("Constant", [], {"value": ir.tensor(np.float64(config["hop_length"]))})
    x = tape.op("Cast", [seconds], {"to": ir.DataType.DOUBLE})
    frames = tape.op("Ceil", [tape.op("Div", [tape.op("Mul", [x, rate]), hop])])
    return tape.op("Cast", [frames], {"to": ir.DataType.INT64})


def _stream_draws(
    tape: ir_tape.Tape, seed: ir.Value, rows: ir.Value, width: ir.Value, site: str
) -> ir.Value:
    """`masks.StreamRandom(seed, site).integers(0, width, rows)`: SampleTokens on equal logits."""
    shape = tape.op("Concat", [rows, width], {"axis": 0})
    zeros = tape.op("ConstantOfShape", [shape], {"value": ir.tensor(np.zeros(1, np.float32))})
    tokens, _ = tape.op_multi_out(
        ops.SAMPLE_TOKENS.name,
        [
            zeros,
            tape.op("Constant", [], {"value": ir.tensor(np.float32(1.0))}),
            _i64(tape, 0),
            tape.op("Constant", [], {"value": ir.tensor(np.float32(1.0))}),
            seed,
            _i64(tape, STREAM_SITES[site]),
            _i64(tape, MASK_STREAM_ITEM << 32),
        ],
        num_outputs=2,
        domain=ops.DOMAIN,
    )
    return tokens


def _build_mask(
    tape: ir_tape.Tape, inputs: dict[str, ir.Value], n_frames: ir.Value, config: dict
) -> ir.Value:
    """`masks.build_mask` with a `StreamRandom`, no onset mask: bool ``[1, C, T]``."""
    inputs = dict(inputs)
    for name, (low, high) in VAMP_LIMITS.items():
        ok = tape.op(
            ops.CHECK_RANGE.name,
            [tape.op("Cast", [inputs[name]], {"to": ir.DataType.DOUBLE})],
            {"name": name, "where": "Vamp", "min": float(low), "max": float(high)},
            domain=ops.DOMAIN,
        )
        # Read through Where(ok, value, 0): every consumer waits for the check, and no optimizer
        # can drop it (ok is not a constant to it).
        fallback = tape.op("CastLike", [_i64(tape, 0), inputs[name]])
        inputs[name] = tape.op("Where", [ok, inputs[name], fallback])
    zero, one = _i64(tape, 0), _i64(tape, 1)
    t = tape.op("Range", [zero, n_frames, one])  # [T]

    # inpaint: keep t < n_prefix and t >= T - n_suffix.
    n_prefix = _seconds_to_frames(tape, inputs["prefix_s"], config)
    n_suffix = _seconds_to_frames(tape, inputs["suffix_s"], config)
    keep = tape.op(
        "Or",
        [
            tape.op("Less", [t, n_prefix]),
            tape.op("GreaterOrEqual", [t, tape.op("Sub", [n_frames, n_suffix])]),
        ],
    )

    # periodic: frame t kept when a multiple j of the period (j < T) has |t - j| <= width // 2;
    # then the whole mask rolls by an offset drawn in [0, period). Period 0: nothing kept.
    period = inputs["periodic_prompt"]
    safe_period = tape.op("Max", [period, one])
    half = tape.op("Div", [inputs["periodic_width"], _i64(tape, 2)])
    one_row = _i64(tape, [1])
    roll = tape.op(
        "Squeeze",
        [
            _stream_draws(
                tape,
                inputs["seed"],
                one_row,
                tape.op("Reshape", [safe_period, one_row]),
                "roll",
            )
        ],
    )
    source = tape.op("Mod", [tape.op("Sub", [t, roll]), n_frames])  # np.roll: out[t] = in[t - s]
    phase = tape.op("Mod", [source, safe_period])
    after_start = tape.op("LessOrEqual", [phase, half])
    next_start = tape.op("Add", [tape.op("Sub", [source, phase]), safe_period])
    before_next = tape.op(
        "And",
        [
            tape.op("LessOrEqual", [tape.op("Sub", [safe_period, phase]), half]),
            tape.op("Less", [next_start, n_frames]),
        ],
    )
    periodic_keep = tape.op(
        "And",
        [
            tape.op("Or", [after_start, before_next]),
            tape.op("Greater", [period, zero]),
        ],
    )
    generate = tape.op("Not", [tape.op("Or", [keep, periodic_keep])])

    # dropout: int(T * p) frames drawn with replacement are generated.
    p = tape.op("Cast", [inputs["dropout"]], {"to": ir.DataType.DOUBLE})
    t_double = tape.op("Cast", [n_frames], {"to": ir.DataType.DOUBLE})
    n_drop = tape.op(
        "Cast", [tape.op("Floor", [tape.op("Mul", [t_double, p])])], {"to": ir.DataType.INT64}
    )
    frames = _stream_draws(
        tape,
        inputs["seed"],
        tape.op("Reshape", [n_drop, one_row]),
        tape.op("Reshape", [n_frames, one_row]),
        "dropout",
    )
    generate = tape.op(
        "ScatterND",
        [
            generate,
            tape.op("Unsqueeze", [frames, one_row]),
            tape.op(
                "Expand",
                [
                    tape.op("Constant", [], {"value": ir.tensor(np.True_)}),
                    tape.op("Reshape", [n_drop, one_row]),
                ],
            ),
        ],
    )

    # Codebooks >= upper_codebook_mask are generated everywhere.
    codebook = _i64(tape, np.arange(int(config["n_codebooks"])).reshape(1, -1, 1))
    upper = tape.op("GreaterOrEqual", [codebook, inputs["upper_codebook_mask"]])
    frames_mask = tape.op("Unsqueeze", [generate, _i64(tape, [0, 1])])
    return tape.op("Or", [frames_mask, upper])


def _slice_time(tape, x, start, stop, codebooks: tuple[int, int] | None = None):
    starts = [tape.op("Reshape", [start, _i64(tape, [1])])]
    ends = [tape.op("Reshape", [stop, _i64(tape, [1])])]
    if codebooks is not None:
        starts.insert(0, _i64(tape, [codebooks[0]]))
        ends.insert(0, _i64(tape, [codebooks[1]]))
    axes = [_i64(tape, [2] if codebooks is None else [1, 2])]
    return tape.op(
        "Slice",
        [
            x,
            tape.op("Concat", starts, {"axis": 0}),
            tape.op("Concat", ends, {"axis": 0}),
            *axes,
        ],
    )


_SAMPLING = ("n_steps", "temperature", "top_k", "top_p", "mask_temperature")


def _f32(tape: ir_tape.Tape, value: float) -> ir.Value:
    return tape.op("Constant", [], {"value": ir.tensor(np.float32(value))})


def _chunk_loop(
    tape: ir_tape.Tape,
    generator: _Component,
    codes: ir.Value,
    mask: ir.Value,
    n_frames: ir.Value,
    chunk_frames: int,
    settings: dict[str, ir.Value],
    *,
    seed: ir.Value,
    first_stream: int,
    seam_guard: bool,
    name: str,
) -> ir.Value:
    """A Loop over consecutive chunks of `chunk_frames` frames of ``codes``/``mask``
    ``[1, C, n_frames]`` (the last may be shorter), each generated by `generator` (a generation
    graph, placed in the body) with ``batch_offset = first_stream + k``, one chunk per call as
    `pipeline.Vamp` does; returns the generated codes ``[1, C, n_frames]``.

    seam_guard: upstream's coarse rule, a chunk with any prompt keeps its first and last frame.
    """
    chunk = _i64(tape, chunk_frames)
    n_chunks = tape.op("Div", [tape.op("Add", [n_frames, _i64(tape, chunk_frames - 1)]), chunk])
    n_codebooks = tape.op("Shape", [codes], {"start": 1, "end": 2})
    empty = tape.op(
        "ConstantOfShape",
        [tape.op("Concat", [_i64(tape, [1]), n_codebooks, _i64(tape, [0])], {"axis": 0})],
        {"value": ir.tensor(np.zeros(1, np.int64))},
    )

    body = ir_tape.Tape()
    k = ir.Value(name=f"{name}_chunk", type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([]))
    cond_in = ir.Value(
        name=f"{name}_cond_in", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([])
    )
    done_in = ir.Value(
        name=f"{name}_done_in",
        type=ir.TensorType(ir.DataType.INT64),
        shape=ir.Shape([1, "codebooks", "done"]),
    )
    start = body.op("Mul", [k, chunk])
    stop = body.op("Min", [body.op("Add", [start, chunk]), n_frames])
    chunk_codes = _slice_time(body, codes, start, stop)
    chunk_mask = _slice_time(body, mask, start, stop)
    if seam_guard:
        n_prompt = body.op(
            "ReduceSum",
            [body.op("Cast", [body.op("Not", [chunk_mask])], {"to": ir.DataType.INT64})],
            {"keepdims": 0},
        )
        length = body.op("Sub", [stop, start])
        local = body.op("Range", [_i64(body, 0), length, _i64(body, 1)])
        edge = body.op(
            "Or",
            [
                body.op("Equal", [local, _i64(body, 0)]),
                body.op("Equal", [local, body.op("Sub", [length, _i64(body, 1)])]),
            ],
        )
        forced = body.op("And", [edge, body.op("Greater", [n_prompt, _i64(body, 0)])])
        chunk_mask = body.op("And", [chunk_mask, body.op("Not", [forced])])
    generator.bind(
        codes=chunk_codes,
        mask=chunk_mask,
        seed=seed,
        batch_offset=body.op("Add", [k, _i64(body, first_stream)]),
        **settings,
    )
    done_out = ir.Value(name=f"{name}_done_out", type=done_in.type, shape=done_in.shape)
    concat = ir.node(
        "Concat", [done_in, generator.outputs["codes_out"]], {"axis": 2}, outputs=[done_out]
    )
    cond_out = ir.node(
        "Identity", [cond_in], outputs=[ir.Value(name=f"{name}_cond_out", type=cond_in.type)]
    )
    body_graph = ir.Graph(
        [k, cond_in, done_in],
        [cond_out.outputs[0], done_out],
        nodes=[*body.nodes, *generator.nodes, concat, cond_out],
        name=f"{name}_chunks",
    )
    [out] = tape.op_multi_out(
        "Loop",
        [n_chunks, tape.op("Constant", [], {"value": ir.tensor(np.True_)}), empty],
        {"body": ir.AttrGraph("body", body_graph)},
        num_outputs=1,
        name=f"{name}_chunk_loop",
    )
    return out


def build_vamp_model(
    encode: ir.Model,
    coarse: ir.Model,
    c2f: ir.Model,
    decode: ir.Model,
) -> ir.Model:
    """The single graph from the four loaded source graphs (which are consumed)."""
    where = "build_vamp_model"
    codec_config = metadata(encode.metadata_props, CODEC_CONFIG_KEY, where, "encode", "it")
    coarse_config = metadata(coarse.metadata_props, CONFIG_KEY, where, "coarse", "it")
    c2f_config = metadata(c2f.metadata_props, CONFIG_KEY, where, "c2f", "it")
    decode_config = metadata(decode.metadata_props, CODEC_CONFIG_KEY, where, "decode", "it")
    if decode_config.get("checkpoint_sha256") != codec_config.get("checkpoint_sha256"):
        raise ValueError(
            f"{where}: {ENCODE_FILE} and {DECODE_FILE} must come from one codec.pth, got "
            f"checkpoint_sha256 {codec_config.get('checkpoint_sha256')!r} and "
            f"{decode_config.get('checkpoint_sha256')!r}"
        )
    files = dict(zip(("codec", "coarse", "c2f"), SOURCE_FILES[:3]))
    check_models_match(codec_config, coarse_config, c2f_config, files, where)
    opsets = [model.opset_imports.get("", 0) for model in (encode, coarse, c2f, decode)]
    if opsets != [opsets[0]] * 4:
        raise ValueError(f"{where}: the opset of every graph must be {opsets[0]}, got {opsets}")
    n_coarse = int(coarse_config["n_codebooks"])
    coarse_chunk = _chunk_frames(COARSE_CHUNK_S, codec_config)
    c2f_chunk = _chunk_frames(C2F_CHUNK_S, codec_config)
    n_codebooks = int(codec_config["n_codebooks"])

    schema = VAMP
    inputs = {
        port.name: ir.Value(
            name=port.name,
            type=ir.TensorType(ir.DataType(port.types[0])),
            shape=ir.Shape(["samples"] if port.name == "audio" else []),
        )
        for port in schema.inputs
    }
    components = {
        "encode": _take(encode, "encode"),
        "coarse": _take(build_generation_model(coarse), "coarse"),
        "c2f": _take(build_generation_model(c2f), "c2f"),
        "decode": _take(decode, "decode"),
    }
    tape = ir_tape.Tape()

    # Encode the whole input: [N] -> [1, 1, N] -> codes [1, C, T].
    encoder = components["encode"]
    encoder.bind(audio=tape.op("Reshape", [inputs["audio"], _i64(tape, [1, 1, -1])]))
    main_nodes = list(tape.nodes)
    main_nodes += encoder.nodes
    codes = encoder.outputs["codes"]

    tape = ir_tape.Tape()
    n_frames = tape.op(
        "Squeeze",
        [tape.op("Shape", [codes], {"start": 2, "end": 3})],
    )
    mask = _build_mask(tape, inputs, n_frames, codec_config)

    # Coarse: 10-s chunks; chunk k generates with batch_offset k.
    coarse_codes = _slice_time(tape, codes, _i64(tape, 0), n_frames, (0, n_coarse))
    coarse_mask = _slice_time(tape, mask, _i64(tape, 0), n_frames, (0, n_coarse))
    main_nodes += tape.nodes
    tape = ir_tape.Tape()
    coarse_out = _chunk_loop(
        tape,
        components["coarse"],
        coarse_codes,
        coarse_mask,
        n_frames,
        coarse_chunk,
        {name: inputs[name] for name in _SAMPLING},
        seed=inputs["seed"],
        first_stream=COARSE_STREAM_BASE,
        seam_guard=True,
        name="coarse",
    )

    # Coarse-to-fine: padded to whole 3-s chunks (code 0, generated), conditioning codebooks
    # kept, upstream's fixed settings; chunk i is stream item C2F_STREAM_BASE + i.
    fine_codes = _slice_time(tape, codes, _i64(tape, 0), n_frames, (n_coarse, n_codebooks))
    c2f_codes = tape.op("Concat", [coarse_out, fine_codes], {"axis": 1})
    pad = tape.op("Mod", [tape.op("Neg", [n_frames]), _i64(tape, c2f_chunk)])
    padded = tape.op("Add", [n_frames, pad])
    pads = tape.op(
        "Concat",
        [_i64(tape, [0, 0, 0, 0, 0]), tape.op("Reshape", [pad, _i64(tape, [1])])],
        {"axis": 0},
    )
    c2f_codes = tape.op("Pad", [c2f_codes, pads, _i64(tape, 0)])
    c2f_mask = tape.op("Pad", [mask, pads, tape.op("Constant", [], {"value": ir.tensor(np.True_)})])
    generated_codebooks = tape.op(
        "Constant", [], {"value": ir.tensor((np.arange(n_codebooks) >= n_coarse).reshape(1, -1, 1))}
    )
    c2f_mask = tape.op("And", [c2f_mask, generated_codebooks])
    c2f_settings = {
        name: (_i64 if isinstance(value, int) else _f32)(tape, value)
        for name, value in C2F_SAMPLING.inputs().items()
    }
    refined = _chunk_loop(
        tape,
        components["c2f"],
        c2f_codes,
        c2f_mask,
        padded,
        c2f_chunk,
        c2f_settings,
        seed=inputs["seed"],
        first_stream=C2F_STREAM_BASE,
        seam_guard=False,
        name="c2f",
    )
    codes_out = _slice_time(tape, refined, _i64(tape, 0), n_frames)
    n_samples = tape.op("Squeeze", [tape.op("Shape", [inputs["audio"]])])
    main_nodes += tape.nodes
    decoder = components["decode"]
    decoder.bind(codes=codes_out, length=n_samples)
    main_nodes += decoder.nodes
    tape = ir_tape.Tape()
    audio_out = tape.op("Reshape", [decoder.outputs["audio"], _i64(tape, [-1])])
    main_nodes += tape.nodes

    outputs = []
    for port, value in zip(schema.outputs, (audio_out, codes, mask, codes_out)):
        copy = ir.node("Identity", [value], outputs=[ir.Value(name=port.name)])
        copy.outputs[0].type = ir.TensorType(ir.DataType(port.types[0]))
        copy.outputs[0].shape = ir.Shape(
            ["samples"] if port.name == "audio_out" else [1, n_codebooks, "frames"]
        )
        main_nodes.append(copy)
        outputs.append(copy.outputs[0])

    # Every weight is a main-graph initializer, read by the loop bodies from the outer scope.
    # (Kept in the chunk loops' bodies instead, the full-size coarse step ran at about the same
    # speed but peak RSS rose from 4.0 to 6.5 GB.)
    initializers = [v for c in components.values() for v in c.initializers]
    graph = ir.Graph(
        list(inputs.values()),
        outputs,
        nodes=main_nodes,
        initializers=initializers,
        opset_imports={"": int(encode.opset_imports[""]), ops.DOMAIN: ops.VERSION},
        name="vampnet_vamp",
    )
    settings = {
        "defaults": VAMP_DEFAULTS,
        "coarse_chunk_frames": coarse_chunk,
        "c2f_chunk_frames": c2f_chunk,
        "c2f_steps": C2F_SAMPLING.n_steps,
        "c2f_stream_base": C2F_STREAM_BASE,
    }
    model = ir.Model(
        graph,
        ir_version=encode.ir_version,
        producer_name=PRODUCER,
        metadata_props={
            CODEC_CONFIG_KEY: json.dumps(codec_config, sort_keys=True),
            CONFIG_KEY: json.dumps({"coarse": coarse_config, "c2f": c2f_config}, sort_keys=True),
            VAMP_KEY: json.dumps(settings, sort_keys=True),
        },
    )
    for fix in (RemoveUnusedNodesPass(), TopologicalSortPass(), NameFixPass()):
        fix(model)
    return model


def export_vamp(models_dir: str | Path, out_path: str | Path | None = None) -> VampExport:
    """An export folder (`SOURCE_FILES`) -> ``vamp.onnx`` (default: in that folder), checked
    with onnx.checker. Weights over protobuf's 2 GiB limit go to ``<out>.data`` beside it."""
    models_dir = require_files(models_dir, SOURCE_FILES, "export_vamp: models_dir")
    loaded = [ir.load(str(models_dir / name)) for name in SOURCE_FILES]
    model = build_vamp_model(*loaded)
    out_path = Path(out_path) if out_path is not None else models_dir / VAMP_FILE
    saved = save_model(model, out_path)
    return VampExport(saved.path, saved.data_path, json.loads(model.metadata_props[VAMP_KEY]))
