"""The whole VampNet generation loop as one ONNX graph (docs/model.md §3.2).

From an exported transformer (``codes [B, C, T] -> logits [B, T, P, V]``) build a graph whose
`Loop` body runs the transformer on the current model input, then `MaskGitStep`, carrying
``codes``, ``mask`` and ``model_input`` from step to step. Loop-invariant work (the relative
position bias) is hoisted out of the body. The transformer's weights stay initializers of the main
graph that the body reads from the outer scope, so they are stored once. (Kept as initializers of
the body instead, ONNX Runtime 1.32 used 4.0 GB instead of 2.7 GB for the coarse model.)
The contract (inputs, outputs, defaults) is `vampnet_onnx.contracts.GENERATION`;
docs/generation.md.

The step graph (`build_step_model`, contract `contracts.GENERATION_STEP`) is one iteration of
that loop as a graph of its own, for runtimes without `Loop` (tract), built by the same
`_step_nodes` as the loop's body.

Built with onnx-ir; torch is not needed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, TopologicalSortPass

from .. import ops
from ..contracts import (
    CONFIG_KEY,
    GENERATION,
    GENERATION_DEFAULTS,
    GENERATION_KEY,
    GENERATION_STEP,
    SLICE_DEFAULTS,
    TRANSFORMER,
    metadata,
)
from .common import PRODUCER, save_model


def _tensor_value(name: str, port_name: str, schema: ops.OpSchema, shape) -> ir.Value:
    dtype = ir.DataType(schema.port(port_name).types[0])
    return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(shape))


def _constant(name: str, array: np.ndarray) -> ir.Node:
    return ir.node(
        "Constant", [], {"value": ir.tensor(array, name=name)}, outputs=[ir.Value(name=name)]
    )


def _split_loop_invariant(
    nodes: list[ir.Node], varying: set[ir.Value]
) -> tuple[list[ir.Node], list[ir.Node]]:
    """(nodes computable before the loop, nodes that must stay in its body), in order.

    A node is loop-invariant when none of its inputs is a loop-varying value (the body's inputs
    and everything computed from them). Nodes with subgraphs stay, to keep the analysis simple.
    """
    varying = set(varying)
    hoisted, kept = [], []
    for node in nodes:
        has_subgraph = any(
            attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
            for attr in node.attributes.values()
        )
        if has_subgraph or any(value in varying for value in node.inputs if value is not None):
            kept.append(node)
            varying.update(node.outputs)
        else:
            hoisted.append(node)
    return hoisted, kept


@dataclass(frozen=True)
class GenerationExport:
    """Result of `export_generation` and `export_step`: the written file and the settings in
    its metadata."""

    path: Path
    settings: dict


@dataclass
class _Forward:
    """A transformer graph taken apart: its nodes (model_input -> logits), its weights, the
    opsets they use, the model's MASK token, and the dimensions of its input [B, C, T]
    (``batch``, the model's codebooks, ``time``), which every [B, C, T] value is declared
    with: a symbolic C would contradict the transformer's own shapes (tract refuses it)."""

    nodes: list[ir.Node]
    initializers: list[ir.Value]
    model_input: ir.Value
    logits: ir.Value
    opset_imports: dict[str, int]
    mask_token: int
    bct: tuple


def _take_forward(transformer: ir.Model, where: str) -> _Forward:
    """The forward of `transformer`, moved out of its graph (which is left empty)."""
    graph = transformer.graph
    if [v.name for v in graph.inputs] != TRANSFORMER.input_names or [
        v.name for v in graph.outputs
    ] != TRANSFORMER.output_names:
        raise ValueError(
            f"{where}: transformer must have input 'codes' and output 'logits', "
            f"got {[v.name for v in graph.inputs]} -> {[v.name for v in graph.outputs]}"
        )
    config = metadata(transformer.metadata_props, CONFIG_KEY, where, "transformer", "it")
    [model_input] = graph.inputs
    [logits] = graph.outputs
    model_input.name = "model_input_in"
    nodes = list(graph)
    graph.remove(nodes)
    graph.inputs.clear()
    graph.outputs.clear()
    initializers = list(graph.initializers.values())
    graph.initializers.clear()
    return _Forward(
        nodes,
        initializers,
        model_input,
        logits,
        dict(graph.opset_imports),
        int(config.get("mask_token", ops.MASK_TOKEN)),
        tuple(model_input.shape),
    )


def _graph_inputs(schema: ops.OpSchema, bct: tuple) -> dict[str, ir.Value]:
    """One graph input per input port of `schema`, by name, in its order (codes and mask of
    shape `bct`)."""
    shapes = {"codes": bct, "mask": bct, "n_masked_start": ("n",)}
    return {
        port.name: _tensor_value(port.name, port.name, schema, shapes.get(port.name, ()))
        for port in schema.inputs
    }


def _model_input(
    codes: ir.Value, mask: ir.Value, mask_token: int, output: ir.Value | None = None
) -> list[ir.Node]:
    """Nodes computing the transformer's input: `codes` with `mask_token` where `mask`, into
    `output` (default: a new value); the last node's output is it."""
    token = _constant("mask_token", np.array(mask_token, np.int64))
    outputs = None if output is None else [output]
    return [token, ir.node("Where", [mask, token.outputs[0], codes], outputs=outputs)]


def _step_nodes(
    forward: _Forward,
    codes: ir.Value,
    mask: ir.Value,
    step: ir.Value,
    n_masked_start: ir.Value,
    inputs: dict[str, ir.Value],
    batch_coupled: bool,
) -> tuple[list[ir.Node], ir.Node]:
    """One generation step: `forward`'s nodes (on its model_input, which the caller provides:
    `codes` with MASK where `mask`), then MaskGitStep at `step` with the settings `inputs`
    (n_steps, the sampling settings, seed, batch_offset). Returns (every node, the
    MaskGitStep node), whose outputs are the op's: codes_out, mask_out, model_input."""
    schema = ops.MASK_GIT_STEP
    mask_git_step = ir.node(
        schema.name,
        [
            forward.logits,
            codes,
            mask,
            step,
            inputs["n_steps"],
            inputs["temperature"],
            inputs["top_k"],
            inputs["top_p"],
            inputs["mask_temperature"],
            inputs["seed"],
            n_masked_start,
            inputs["batch_offset"],
        ],
        {"batch_coupled": int(batch_coupled)},
        domain=ops.DOMAIN,
        outputs=[
            _tensor_value(f"{name}_step", name, schema, forward.bct) for name in schema.output_names
        ],
        name="mask_git_step",
    )
    return [*forward.nodes, mask_git_step], mask_git_step


def _model(graph: ir.Graph, transformer: ir.Model, settings: dict) -> ir.Model:
    """`graph` as a model with `transformer`'s IR version and metadata, and `settings` under
    `GENERATION_KEY`; sorted and its names made unique."""
    model = ir.Model(
        graph,
        ir_version=transformer.ir_version,
        producer_name=PRODUCER,
        metadata_props={**transformer.metadata_props, GENERATION_KEY: json.dumps(settings)},
    )
    for fix in (TopologicalSortPass(), NameFixPass()):
        fix(model)
    return model


def build_generation_model(
    transformer: ir.Model, trace: bool = False, batch_coupled: bool = False
) -> ir.Model:
    """The generation graph around `transformer` (which is consumed: its graph is moved).

    trace: also output the codes and mask after every step ([S, B, C, T] each).
    batch_coupled: count the schedule's N0 over the whole batch as upstream VampNet does
    (MaskGitStep attribute), instead of per item.
    """
    forward = _take_forward(transformer, "build_generation_model")
    schema = GENERATION

    # Main-graph inputs, in the contract's order; the slice inputs are overridable
    # initializers holding their defaults, so a caller that runs every step leaves them out.
    inputs = _graph_inputs(schema, forward.bct)
    slice_defaults = []
    for name, default in SLICE_DEFAULTS.items():
        inputs[name].const_value = ir.tensor(np.array(default, np.int64), name=name)
        slice_defaults.append(inputs[name])

    # The loop body: transformer on model_input, then MaskGitStep.
    step = ir.Value(name="step", type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([]))
    cond_in = ir.Value(name="cond_in", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([]))
    codes_in = _tensor_value("codes_in", "codes", schema, forward.bct)
    mask_in = _tensor_value("mask_in", "mask", schema, forward.bct)
    # The model input always has the shape of `codes`: reading the shape from the outer input
    # makes everything that depends only on it (the relative position bias: T x T buckets and
    # gathers) loop-invariant, so it is computed once, before the loop.
    for node in forward.nodes:
        if node.op_type == "Shape" and node.inputs[0] is forward.model_input:
            node.replace_input_with(0, inputs["codes"])
    n_masked_start = ir.Value(name="n0")
    global_step = ir.node("Add", [step, inputs["first_step"]], name="global_step")
    step_nodes, mask_git_step = _step_nodes(
        forward,
        codes_in,
        mask_in,
        global_step.outputs[0],
        n_masked_start,
        inputs,
        batch_coupled,
    )
    hoisted, body_nodes = _split_loop_invariant(
        [global_step, *step_nodes], {step, cond_in, codes_in, mask_in, forward.model_input}
    )
    codes_out, mask_out, model_input_out = mask_git_step.outputs
    cond_out = ir.node(
        "Identity",
        [cond_in],
        outputs=[
            ir.Value(name="cond_out", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([]))
        ],
    )
    body_outputs = [cond_out.outputs[0], codes_out, mask_out, model_input_out]
    extra_nodes = [cond_out]
    if trace:
        for value in (codes_out, mask_out):
            copy = ir.node(
                "Identity",
                [value],
                outputs=[ir.Value(name=f"{value.name}_trace", type=value.type, shape=value.shape)],
            )
            extra_nodes.append(copy)
            body_outputs.append(copy.outputs[0])
    body = ir.Graph(
        [step, cond_in, codes_in, mask_in, forward.model_input],
        body_outputs,
        nodes=[*body_nodes, *extra_nodes],
        name="generation_step",
    )

    # Main graph: N0 per item (given, or counted from the mask), the first model input, the
    # loop over steps first_step .. last_step - 1.
    zero = _constant("zero", np.array(0, np.int64))
    axes = _constant("reduce_axes", np.array([1, 2], np.int64))
    mask_int = ir.node("Cast", [inputs["mask"]], {"to": ir.DataType.INT64})
    counted = ir.node("ReduceSum", [mask_int.outputs[0], axes.outputs[0]], {"keepdims": 0})
    given = ir.node("GreaterOrEqual", [inputs["n_masked_start"], zero.outputs[0]])
    n0 = ir.node(
        "Where",
        [given.outputs[0], inputs["n_masked_start"], counted.outputs[0]],
        outputs=[n_masked_start],
    )
    first_input = _model_input(inputs["codes"], inputs["mask"], forward.mask_token)
    to_end = ir.node("Less", [inputs["last_step"], zero.outputs[0]])
    last = ir.node("Where", [to_end.outputs[0], inputs["n_steps"], inputs["last_step"]])
    span = ir.node("Sub", [last.outputs[0], inputs["first_step"]])
    # At least one iteration, so that n_steps < 1 (or an empty slice) reaches MaskGitStep's
    # error instead of silently returning the prompt.
    one = _constant("one", np.array(1, np.int64))
    trips = ir.node("Max", [span.outputs[0], one.outputs[0]])
    true = _constant("true", np.array(True))
    n_loop_outputs = 3 + (2 if trace else 0)
    main_nodes = [zero, axes, mask_int, counted, given, n0, *first_input, to_end, last]
    main_nodes += [span, one, trips, true]
    loop = ir.node(
        "Loop",
        [
            trips.outputs[0],
            true.outputs[0],
            inputs["codes"],
            inputs["mask"],
            first_input[-1].outputs[0],
        ],
        {"body": ir.AttrGraph("body", body)},
        num_outputs=n_loop_outputs,
        name="generation_loop",
    )
    outputs = []
    for value, port in zip(loop.outputs[:2], ("codes_out", "mask_out")):
        value.name = port
        value.type = ir.TensorType(ir.DataType(schema.port(port).types[0]))
        value.shape = ir.Shape(forward.bct)
        outputs.append(value)
    if trace:
        for value, port in zip(loop.outputs[3:], ("codes_per_step", "mask_per_step")):
            value.name = port
            value.type = ir.TensorType(ir.DataType(schema.port(port).types[0]))
            value.shape = ir.Shape(("steps", *forward.bct))
            outputs.append(value)

    main = ir.Graph(
        list(inputs.values()),
        outputs,
        nodes=[*main_nodes, *hoisted, loop],
        initializers=[*forward.initializers, *slice_defaults],
        opset_imports={**forward.opset_imports, ops.DOMAIN: ops.VERSION},
        name="vampnet_generation",
    )
    settings = {"trace": trace, "batch_coupled": batch_coupled, "defaults": GENERATION_DEFAULTS}
    return _model(main, transformer, settings)


def build_step_model(transformer: ir.Model, batch_coupled: bool = False) -> ir.Model:
    """The step graph of `transformer` (which is consumed: its graph is moved): one iteration
    of `build_generation_model`'s loop, inputs and outputs `contracts.GENERATION_STEP`
    (codes and mask [B, C, T], step, the settings, n_masked_start [B] -> codes_out and
    mask_out [B, C, T]).

    batch_coupled: as for `build_generation_model`.
    """
    forward = _take_forward(transformer, "build_step_model")
    schema = GENERATION_STEP
    inputs = _graph_inputs(schema, forward.bct)
    # Always one count per item here (no [-1] default to broadcast): declared [batch], so
    # that tract can tell the bodies' reshape to [B] is one.
    inputs["n_masked_start"].shape = ir.Shape(forward.bct[:1])
    # The transformer's input value, no longer a graph input, becomes the Where's output.
    model_input = _model_input(
        inputs["codes"], inputs["mask"], forward.mask_token, output=forward.model_input
    )
    step_nodes, mask_git_step = _step_nodes(
        forward,
        inputs["codes"],
        inputs["mask"],
        inputs["step"],
        inputs["n_masked_start"],
        inputs,
        batch_coupled,
    )
    outputs = []
    for value, port in zip(mask_git_step.outputs[:2], schema.output_names):
        value.name = port
        outputs.append(value)
    graph = ir.Graph(
        list(inputs.values()),
        outputs,
        nodes=[*model_input, *step_nodes],
        initializers=forward.initializers,
        opset_imports={**forward.opset_imports, ops.DOMAIN: ops.VERSION},
        name="vampnet_generation_step",
    )
    settings = {"step": True, "batch_coupled": batch_coupled, "defaults": GENERATION_DEFAULTS}
    return _model(graph, transformer, settings)


def export_generation(
    transformer_path: str | Path,
    out_path: str | Path,
    trace: bool = False,
    batch_coupled: bool = False,
) -> GenerationExport:
    """Transformer .onnx file -> generation .onnx file (`common.save_model`: checked, weights
    over 2 GiB in ``<out_path>.data``)."""
    transformer = ir.load(str(transformer_path))
    model = build_generation_model(transformer, trace=trace, batch_coupled=batch_coupled)
    saved = save_model(model, out_path)
    return GenerationExport(saved.path, json.loads(model.metadata_props[GENERATION_KEY]))


def export_step(
    transformer_path: str | Path, out_path: str | Path, batch_coupled: bool = False
) -> GenerationExport:
    """Transformer .onnx file -> step .onnx file (`build_step_model`; saved as
    `export_generation` saves)."""
    transformer = ir.load(str(transformer_path))
    model = build_step_model(transformer, batch_coupled=batch_coupled)
    saved = save_model(model, out_path)
    return GenerationExport(saved.path, json.loads(model.metadata_props[GENERATION_KEY]))
