"""Precision passes over exported transformers: int8 weights for CPUs, fp16 for GPUs.

``int8``: onnxruntime's dynamic quantization (`onnxruntime.quantization.quantize_dynamic`, a
maintained quantizer; none is written here) of every MatMul whose weight is a constant — the
QKV, output and feed-forward projections and the classifier — with signed 8-bit weights, one
scale per output channel, and activations quantized per call (`DynamicQuantizeLinear`:
unsigned 8 bits, one scale per tensor, computed at run time, so no calibration data). The
attention's own products (queries x keys, weights x values) have no constant operand and stay
float32, as do the embedding table (a Gather), the norms, the relative position bias and the
softmax; the embedding and position-bias tables are stored as float16 and cast to float32 when
loaded. The codec computes in float32 from float16-stored weights (`codec_weights_to_float16`).
Why these choices, and what they cost in accuracy: docs/precision.md.

``fp16``: onnxconverter-common's float16 conversion (a maintained converter): weights and
activations in float16, except where accuracy needs float32 — in the transformers the RMS
norms' reductions (`ReduceMean`, `Pow`, `Sqrt`) and the attention softmax, in the codec
graphs everything outside the convolution stack (the quantizer's nearest-code search and
codebook lookup: `codec_to_float16`) — with the graph's input and output types kept
(`keep_io_types`), so the logits handed to the ops and the codec's audio are float32 and its
codes int64. It runs on ONNX Runtime's CPU provider too (slowly), which is where its numerics
are tested.

The generation graph is built from the converted transformer as from the float one, so the
sampling and re-masking ops see float32 logits and draw exactly as before.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from .. import ops
from ..contracts import CODEC_CONFIG_KEY, CONFIG_KEY, CPU_CODEC_FILES, PRECISIONS
from .common import save_model

#: Ops kept in float32 by the fp16 conversion: the norms' reductions and the softmax.
FP16_FLOAT32_OPS = ("ReduceMean", "Pow", "Sqrt", "Softmax")


def check_precision(precision: str, where: str, name: str = "precision") -> str:
    """`precision` if it is one of `PRECISIONS`, else ValueError "<where>: <name> must ..."."""
    if precision not in PRECISIONS:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def convert_transformer(
    path: str | Path, precision: str, out_path: str | Path | None = None
) -> Path:
    """An exported fp32 transformer graph -> its `precision` version ("int8" or "fp16"),
    written to `out_path` (default: replace `path`) through the one save path, with the
    config's "precision" set."""
    check_precision(precision, "convert_transformer")
    if precision == "int8":
        return quantize_transformer(path, out_path)
    if precision == "fp16":
        return to_float16(path, out_path)
    raise ValueError(f"convert_transformer: precision must not be fp32 here, got {precision!r}")


def convert_codec(path: str | Path, precision: str, out_path: str | Path | None = None) -> Path:
    """An exported fp32 codec graph -> the codec graph of a `precision` folder ("fp16":
    `codec_to_float16`; "int8": fp32 computation from fp16-stored weights with the `Snake` op,
    `codec_weights_to_float16`), written to `out_path` (default: replace `path`)."""
    check_precision(precision, "convert_codec")
    if precision == "fp16":
        return codec_to_float16(path, out_path)
    if precision == "int8":  # int8 folders are for CPUs: the Snake activations as the library's op
        return codec_weights_to_float16(path, out_path, snake_op=True)
    raise ValueError(f"convert_codec: precision must not be fp32 here, got {precision!r}")


def to_float16(path: str | Path, out_path: str | Path | None = None) -> Path:
    """An exported transformer graph (fp32) -> its fp16 version (module doc), written to
    `out_path` (default: replace `path`); the config's "precision" becomes "fp16"."""
    path = Path(path)
    out_path = Path(out_path) if out_path is not None else path
    converted = _float16(onnx.load(str(path)), op_block=FP16_FLOAT32_OPS)
    converted.metadata_props[CONFIG_KEY] = _with_config(
        converted.metadata_props[CONFIG_KEY], precision="fp16"
    )
    save_model(converted, out_path)
    return out_path


def codec_to_float16(path: str | Path, out_path: str | Path | None = None) -> Path:
    """An exported codec graph (``codec.encode.onnx`` or ``codec.decode.onnx``, fp32) -> its
    fp16 version, written to `out_path` (default: replace `path`); its codec config
    (`CODEC_CONFIG_KEY`) gets "precision": "fp16".

    The convolution stack (encoder or decoder: every node from the first Conv to the last)
    is converted; everything else stays float32, weights included: the quantizer's
    nearest-code search, whose residual chain over 14 codebooks flips codes when rounded to
    float16, and the decoder's codebook lookup (docs/precision.md has the measurements). The
    audio stays float32 and the codes int64 at the graph's inputs and outputs.
    """
    path = Path(path)
    out_path = Path(out_path) if out_path is not None else path
    model = onnx.load(str(path))
    converted = _float16(model, node_block=_outside_conv_stack(model.graph))
    converted.metadata_props[CODEC_CONFIG_KEY] = _with_config(
        converted.metadata_props[CODEC_CONFIG_KEY], precision="fp16", weights="fp16"
    )
    save_model(converted, out_path)
    return out_path


def codec_weights_to_float16(
    path: str | Path, out_path: str | Path | None = None, *, snake_op: bool = False
) -> Path:
    """An exported codec graph (fp32) -> the same graph with the weights of its convolution
    stack stored as float16 and cast back to float32 where they are read: the computation stays
    float32 (onnxruntime folds the casts once, when it loads the graph), only the weights are
    rounded, and the file is about half the size. This is the codec of an int8 folder
    (docs/precision.md: its accuracy, and why not int8).

    Converted: every float32 weight but scalars (the graph's constants, such as the Snake's
    1e-9, keep their bits) that only nodes of the convolution stack read (as in
    `codec_to_float16`): convolution kernels and biases, Snake alphas. The quantizer's weights
    stay float32. The codec config gets "weights": "fp16".

    snake_op: also replace each Snake activation's five nodes (Mul, Sin, Pow, Mul, Add) by the
    op library's `Snake` (`fuse_snake`), a CPU op: what an int8 folder's codec does (its graphs
    are for CPUs); the codec then needs the op library, as the generation graphs do.
    Written to `out_path` (default: replace `path`).
    """
    path = Path(path)
    out_path = Path(out_path) if out_path is not None else path
    proto = onnx.load(str(path))
    outside = set(_outside_conv_stack(proto.graph))
    model = ir.from_proto(proto)
    _store_float16(model.graph, lambda readers: not any(n.name in outside for n in readers))
    if snake_op:
        fuse_snake(model)
    model.metadata_props[CODEC_CONFIG_KEY] = _with_config(
        model.metadata_props[CODEC_CONFIG_KEY], weights="fp16"
    )
    save_model(model, out_path)
    return out_path


def write_cpu_codec(graph: str | Path) -> Path:
    """The CPU variant of an fp32 codec graph (`contracts.CPU_CODEC_FILES`), written beside it:
    the same graph with every Snake activation fused into the op library's `Snake`
    (`fuse_snake`), its weights read from `graph`'s own external data file where it has one
    (not stored twice). Returns its path."""
    graph = Path(graph)
    model = ir.load(str(graph))
    if not fuse_snake(model):
        raise ValueError(f"write_cpu_codec: graph must hold Snake activations, got '{graph}'")
    return save_model(model, graph.with_name(CPU_CODEC_FILES[graph.name])).path


def fuse_snake(model: ir.Model) -> int:
    """Replace every Snake activation of a codec graph, ``x + inverse * Pow(Sin(alpha * x), 2)``
    as the exporter writes it (Mul, Sin, Pow, Mul, Add), by one `ops.SNAKE` node computing the
    same float32 operations in one pass (docs/ops.md); returns how many were replaced. A chain
    whose intermediate values have other readers, or whose exponent is not the constant 2, is
    left as it is."""
    graph = model.graph
    fused = 0
    for sin in [node for node in graph if node.op_type == "Sin" and node.domain == ""]:
        chain = _snake_chain(sin)
        if chain is None:
            continue
        x, alpha, inverse, nodes = chain
        add = nodes[-1]
        snake = ir.node(
            ops.SNAKE.name,
            [x, alpha, inverse],
            domain=ops.DOMAIN,
            version=ops.VERSION,
            name=f"{add.name}_snake",
        )
        out = snake.outputs[0]
        out.dtype, out.shape = add.outputs[0].dtype, add.outputs[0].shape
        graph.insert_before(add, snake)  # every input of the chain is defined by then
        ir.convenience.replace_all_uses_with(add.outputs[0], out, replace_graph_outputs=True)
        name = add.outputs[0].name
        graph.remove(nodes, safe=True)
        out.name = name
        fused += 1
    if fused:
        model.opset_imports[ops.DOMAIN] = ops.VERSION
    return fused


def _only_reader(value: ir.Value, op_type: str) -> ir.Node | None:
    """The one node reading `value`, if it is the only use and of type `op_type`."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    node = uses[0][0]
    return node if node.op_type == op_type and node.domain == "" else None


def _snake_chain(sin: ir.Node):
    """(x, alpha, inverse, [mul, sin, pow, mul, add]) if `sin` is the sine of a Snake, else
    None."""
    scale = sin.inputs[0].producer()
    if scale is None or scale.op_type != "Mul" or len(list(sin.inputs[0].uses())) != 1:
        return None
    power = _only_reader(sin.outputs[0], "Pow")
    if power is None or power.inputs[0] is not sin.outputs[0]:
        return None
    exponent = ir.convenience.get_const_tensor(power.inputs[1])
    if exponent is None or exponent.numpy().size != 1 or float(exponent.numpy().item()) != 2.0:
        return None
    weigh = _only_reader(power.outputs[0], "Mul")
    if weigh is None:
        return None
    inverse = next(v for v in weigh.inputs if v is not power.outputs[0])
    add = _only_reader(weigh.outputs[0], "Add")
    if add is None:
        return None
    x = next(v for v in add.inputs if v is not weigh.outputs[0])
    if x not in scale.inputs or scale.inputs[0] is scale.inputs[1]:
        return None
    alpha = next(v for v in scale.inputs if v is not x)
    return x, alpha, inverse, [scale, sin, power, weigh, add]


def _store_float16(graph: ir.Graph, chosen: Callable[[list[ir.Node]], bool]) -> None:
    """Store the float32 weights of `graph` that `chosen(readers)` picks as float16, each read
    through a Cast back to float32 under its old name: the graph computes as before, from the
    rounded weights (onnxruntime folds the casts when it loads the graph, so a run pays
    nothing). Scalars keep their bits: they are the graph's constants (such as the Snake's
    1e-9), not weights."""
    first = graph[0]
    for name, weight in list(graph.initializers.items()):
        readers = [node for node, _ in weight.uses()]
        if (
            weight.dtype != ir.DataType.FLOAT
            or weight.const_value is None
            or weight.const_value.size < 2
            or not readers
            or not chosen(readers)
        ):
            continue
        half = ir.Value(
            name=f"{name}_float16",
            const_value=ir.tensor(weight.const_value.numpy().astype(np.float16)),
        )
        graph.register_initializer(half)
        cast = ir.node("Cast", [half], attributes={"to": ir.DataType.FLOAT}, name=f"{name}_cast")
        cast.outputs[0].dtype, cast.outputs[0].shape = ir.DataType.FLOAT, weight.shape
        graph.insert_before(first, cast)
        ir.convenience.replace_all_uses_with(weight, cast.outputs[0])
        del graph.initializers[name]
        cast.outputs[0].name = name


def _outside_conv_stack(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes of a codec graph outside its convolution stack: the stack is every
    node that depends on the first (transposed) convolution and feeds the last one."""
    nodes = list(graph.node)  # topologically sorted, as the checker requires
    convs = [n for n in nodes if n.op_type in ("Conv", "ConvTranspose")]
    if not convs:
        raise ValueError(f"codec_to_float16: graph must hold a Conv, got none in {graph.name!r}")
    after_first, produced = set(), set(convs[0].output)
    for node in nodes:
        if node is convs[0] or produced.intersection(node.input):
            after_first.add(node.name)
            produced.update(node.output)
    before_last, needed = set(), set(convs[-1].input)
    for node in reversed(nodes):
        if node is convs[-1] or needed.intersection(node.output):
            before_last.add(node.name)
            needed.update(node.input)
    stack = after_first & before_last
    return [node.name for node in nodes if node.name not in stack]


def _float16(
    model: onnx.ModelProto, op_block: Sequence[str] = (), node_block: Sequence[str] = ()
) -> ir.Model:
    """`model` converted by onnxconverter-common with its inputs' and outputs' types kept,
    the ops of type `op_block` and the nodes named in `node_block` computing in float32.

    Three of the converter's habits are undone here. Two would still round the blocked part
    to float16: it converts the weights of blocked nodes too when the graph lists them in its
    value_info (as graphs saved with onnx-ir do), and between two blocked nodes it leaves a
    float32 -> float16 -> float32 pair of casts wherever a value has several consumers. The
    third breaks `keep_io_types`: a graph output made by a blocked node becomes float16.
    """
    from onnxconverter_common import float16

    output_types = {output.name: output.type.tensor_type.elem_type for output in model.graph.output}
    weights = {init.name for init in model.graph.initializer}
    kept = [info for info in model.graph.value_info if info.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    with warnings.catch_warnings():
        # It warns for every weight below float16's smallest normal number, which it clamps to
        # +-1e-7; the accuracy this costs is measured (docs/precision.md).
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *op_block],
            node_block_list=list(node_block),
        )
    converted = ir.from_proto(model)
    _skip_float16_round_trips(converted.graph)
    _restore_float32_outputs(converted.graph, output_types)
    RemoveUnusedNodesPass()(converted)
    return converted


def _restore_float32_outputs(graph: ir.Graph, types: dict[str, int]) -> None:
    """Output the float32 value again where the converter appended a Cast to float16 to a
    float32 graph output (`types`: the output types before the conversion)."""
    for i, output in enumerate(graph.outputs):
        if types[output.name] != ir.DataType.FLOAT or output.dtype != ir.DataType.FLOAT16:
            continue
        cast = output.producer()
        source = cast.inputs[0] if cast is not None and cast.op_type == "Cast" else None
        if source is None or source.dtype != ir.DataType.FLOAT:
            raise ValueError(
                f"float16 conversion: output {output.name!r} must come from a Cast of a float32 "
                f"value, got {cast.op_type if cast is not None else 'a graph input'}"
            )
        name = output.name
        output.name = f"{name}_float16"
        source.name = name
        graph.outputs[i] = source


def _skip_float16_round_trips(graph: ir.Graph) -> None:
    """Feed every Cast(to float32) of a Cast(to float16) of a float32 value that value."""
    for node in list(graph):
        if node.op_type != "Cast" or node.attributes["to"].as_int() != ir.DataType.FLOAT:
            continue
        to_half = node.inputs[0].producer()
        if (
            to_half is None
            or to_half.op_type != "Cast"
            or to_half.attributes["to"].as_int() != ir.DataType.FLOAT16
            or to_half.inputs[0].dtype != ir.DataType.FLOAT
        ):
            continue
        source, output = to_half.inputs[0], node.outputs[0]
        if output.is_graph_output():
            node.replace_input_with(0, source)
        else:
            ir.convenience.replace_all_uses_with(output, source)


def _with_config(config_json: str, **fields: str) -> str:
    return json.dumps({**json.loads(config_json), **fields}, sort_keys=True)


def quantize_transformer(path: str | Path, out_path: str | Path | None = None) -> Path:
    """An exported transformer graph (fp32, `export.transformer`) -> its int8 version.

    out_path: where to write it (default: replace `path`). The file appears only once
    written; its metadata is the source's with the config's "precision" set to "int8".
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(path)
    out_path = Path(out_path) if out_path is not None else path
    staging = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}."))
    try:
        written = staging / out_path.name
        # The quantizer logs a suggestion to pre-process the model on the root logger. It is
        # not taken: the figures in docs/precision.md are without that pre-processing.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                path,
                written,
                per_channel=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                # Only weight products: the attention's activation x activation MatMuls stay fp32.
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            root.setLevel(level)
        # The transformer's config (CONFIG_KEY) records the precision; the rest of the
        # metadata is the source's.
        source = onnx.load(str(path), load_external_data=False).metadata_props
        props = {prop.key: prop.value for prop in source}
        props[CONFIG_KEY] = _with_config(props[CONFIG_KEY], precision="int8")
        model = ir.load(str(written))
        # The tables read by Gather (the embedding table: 14 x 1025 rows of d_model at full size
        # for c2f, and the relative position bias) stay float32 for the computation and are
        # stored as float16: the int8 folder's size target (docs/precision.md).
        _store_float16(model.graph, lambda readers: all(n.op_type == "Gather" for n in readers))
        model.metadata_props.clear()
        model.metadata_props.update(props)
        # The one save path: checked, external data by the one rule, renamed into place.
        save_model(model, out_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_path
