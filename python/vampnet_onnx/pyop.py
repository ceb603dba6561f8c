"""Pure-Python fallback for the ops: the numpy twins run through onnxruntime-extensions' PyOp.

For machines where the compiled op library cannot load. onnxruntime-extensions serves Python ops
from its own domain with fixed input lists, so a model is rewritten before loading: each
vampnet_onnx node (also inside Loop/If bodies) becomes a PyOp named after the op and its number
of inputs. Slower than the compiled ops but the same tokens. float32 logits only.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import onnx

from . import ops, reference
from .runtime import ort

_PREFIX = "VampnetOnnx"

# onnxruntime-extensions terminates the process when a Python op raises, so the ops never raise:
# they park the first error of the current run here (PyOps run on the calling thread under the
# sequential executor), return placeholders, and the session's run() raises it afterwards.
_run_state = threading.local()


def _guarded(body, placeholders, twin_name: str, op_name: str):
    def op(*args, **kwargs):
        if getattr(_run_state, "error", None) is not None:
            return placeholders(*args)
        try:
            return body(*args, **kwargs)
        except ValueError as error:  # the twin's "<where>: ..." message, named as the op's
            _run_state.error = ValueError(str(error).replace(f"{twin_name}:", f"{op_name}:", 1))
        except Exception as error:  # noqa: BLE001 - re-raised by the session's run()
            _run_state.error = error
        return placeholders(*args)

    return op


def _scalar(value: np.ndarray):
    return np.asarray(value).reshape(-1)[0].item()


def _sample_tokens(logits, temperature, top_k, top_p, seed, offset, first_row=None):
    return reference.sample_tokens(
        logits,
        _scalar(temperature),
        _scalar(top_k),
        _scalar(top_p),
        _scalar(seed),
        _scalar(offset),
        0 if first_row is None else _scalar(first_row),
    )


def _mask_git_step(
    logits,
    codes,
    mask,
    step,
    n_steps,
    temperature,
    top_k,
    top_p,
    mask_temperature,
    seed,
    n_masked_start=None,
    batch_offset=None,
    batch_coupled=0,
):
    return reference.mask_git_step(
        logits,
        codes,
        mask.astype(bool),
        _scalar(step),
        _scalar(n_steps),
        _scalar(temperature),
        _scalar(top_k),
        _scalar(top_p),
        _scalar(mask_temperature),
        np.asarray(seed),  # one element, or one per item: the twin reads both
        n_masked_start,
        bool(batch_coupled),
        0 if batch_offset is None else np.asarray(batch_offset),
    )


def _check_range(x, name="x", where="Vamp", min=0.0, max=0.0):  # noqa: A002 - attribute names
    return np.asarray(reference.check_range(_scalar(x), name, min, max, where))


def _sample_placeholders(logits, *_):
    shape = np.shape(logits)[:-1]
    return np.zeros(shape, np.int64), np.zeros(shape, np.float32)


def _step_placeholders(logits, codes, *_):
    shape = np.shape(codes)
    return np.zeros(shape, np.int64), np.zeros(shape, bool), np.zeros(shape, np.int64)


_BODIES = {
    ops.SAMPLE_TOKENS.name: _guarded(
        _sample_tokens, _sample_placeholders, "sample_tokens", ops.SAMPLE_TOKENS.name
    ),
    ops.MASK_GIT_STEP.name: _guarded(
        _mask_git_step, _step_placeholders, "mask_git_step", ops.MASK_GIT_STEP.name
    ),
    # Its messages name the checked input's owner (attribute where), not the op.
    ops.CHECK_RANGE.name: _guarded(
        _check_range, lambda *_: np.asarray(True), "check_range", ops.CHECK_RANGE.name
    ),
    ops.SNAKE.name: _guarded(
        reference.snake, lambda x, *_: np.zeros(np.shape(x), np.float32), "Snake", ops.SNAKE.name
    ),
}


def _pyop_name(schema: ops.OpSchema, n_inputs: int) -> str:
    return f"{_PREFIX}{schema.name}{n_inputs}"


@functools.cache
def _register() -> str:
    """Registers every (op, input count) variant once per process; returns the PyOp library."""
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

    dtype = {
        onnx.TensorProto.FLOAT: PyCustomOpDef.dt_float,
        onnx.TensorProto.DOUBLE: PyCustomOpDef.dt_double,
        onnx.TensorProto.INT64: PyCustomOpDef.dt_int64,
        onnx.TensorProto.BOOL: PyCustomOpDef.dt_bool,
    }
    attribute_type = {
        onnx.AttributeProto.INT: PyCustomOpDef.dt_int64,
        onnx.AttributeProto.FLOAT: PyCustomOpDef.dt_float,
        onnx.AttributeProto.STRING: PyCustomOpDef.dt_string,
    }
    for schema in ops.SCHEMAS:
        required = sum(not port.optional for port in schema.inputs)
        for n_inputs in range(required, len(schema.inputs) + 1):
            onnx_op(
                op_type=_pyop_name(schema, n_inputs),
                inputs=[dtype[port.types[0]] for port in schema.inputs[:n_inputs]],
                outputs=[dtype[port.types[0]] for port in schema.outputs],
                attrs={a.name: attribute_type[a.type] for a in schema.attributes},
            )(_BODIES[schema.name])
    return get_library_path()


def _rewrite(graph: onnx.GraphProto, contrib_domain: str) -> None:
    schemas = {schema.name: schema for schema in ops.SCHEMAS}
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rewrite(attribute.g, contrib_domain)
            for subgraph in attribute.graphs:
                _rewrite(subgraph, contrib_domain)
        if node.domain != ops.DOMAIN:
            continue
        inputs = list(node.input)
        while inputs and not inputs[-1]:
            inputs.pop()
        del node.input[:]
        node.input.extend(inputs)
        schema = schemas[node.op_type]
        # PyOps require every declared attribute on the node: fill in the defaults.
        present = {attribute.name for attribute in node.attribute}
        for attribute in schema.attributes:
            if attribute.name not in present:
                node.attribute.append(onnx.helper.make_attribute(attribute.name, attribute.default))
        node.op_type = _pyop_name(schema, len(inputs))
        node.domain = contrib_domain


def to_python_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose vampnet_onnx nodes call the registered Python ops."""
    from onnxruntime_extensions import default_opset_domain

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    contrib_domain = default_opset_domain()
    _rewrite(rewritten.graph, contrib_domain)
    for function in rewritten.functions:
        for node in function.node:
            if node.domain == ops.DOMAIN:
                raise ValueError(
                    "to_python_ops: model functions must not call vampnet_onnx ops, got one"
                )
    if not any(opset.domain == contrib_domain for opset in rewritten.opset_import):
        rewritten.opset_import.append(onnx.helper.make_opsetid(contrib_domain, 1))
    return rewritten


def create_python_ops_session(
    source: str | bytes, providers: list, options: ort.SessionOptions
) -> ort.InferenceSession:
    """A session running `source` (path or serialized model) with the Python ops."""
    library = _register()
    model = onnx.load(source) if isinstance(source, str) else onnx.load_from_string(source)
    options.register_custom_ops_library(library)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(
        to_python_ops(model).SerializeToString(), sess_options=options, providers=providers
    )
    plain_run = session.run

    def run(output_names, input_feed, run_options=None):
        _run_state.error = None
        try:
            outputs = plain_run(output_names, input_feed, run_options)
        except Exception:
            if _run_state.error is None:
                raise
            outputs = None
        error, _run_state.error = _run_state.error, None
        if error is not None:
            raise error
        return outputs

    session.run = run
    return session
