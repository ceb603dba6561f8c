"""The Snake op (the LAC codec's activation in one pass, docs/ops.md) against its numpy twin and
the five-node chain it replaces, its errors, and `export.precision.fuse_snake` (on a codec:
tests/test_codec_precision.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

import vampnet_onnx
from conftest import ONNX_OPSET, op_model
from vampnet_onnx import ops, reference
from vampnet_onnx.export.precision import fuse_snake

#: |op - exact| <= this * (|x| + |inverse|) per element: sin's float32 polynomial is within a
#: few ulp (2^-23 ~ 1.2e-7) of the sine, and the rest are the chain's own float32 roundings.
RELATIVE_TOLERANCE = 4e-7


def snake_session(python_ops: bool = False):
    return vampnet_onnx.create_session(
        op_model(ops.SNAKE), intra_op_threads=2, python_ops=python_ops
    )


def problem(seed: int, batch: int = 2, channels: int = 5, length: int = 1001):
    """x with a wide range (|alpha x| up to ~1e5, past the polynomial's 8192, so both paths
    run), alpha and inverse = 1 / (alpha + 1e-9) as the codec computes them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, length)) * 10.0 ** rng.uniform(-3, 3, length)
    alpha = rng.uniform(0.05, 20.0, (1, channels, 1))
    inverse = 1.0 / (alpha.astype(np.float32) + np.float32(1e-9))
    return x.astype(np.float32), alpha.astype(np.float32), inverse.astype(np.float32)


def exact(x, alpha, inverse) -> np.ndarray:
    """The activation in float64 from the same float32 inputs."""
    x64 = x.astype(np.float64)
    t = (alpha * x).astype(np.float64)  # alpha * x is rounded to float32 in the op as in the chain
    return x64 + inverse.astype(np.float64) * np.sin(t) ** 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snake_is_within_a_few_ulp_of_the_exact_activation(seed):
    x, alpha, inverse = problem(seed)
    [y] = snake_session().run(None, {"x": x, "alpha": alpha, "inverse": inverse})
    assert y.dtype == np.float32 and y.shape == x.shape
    bound = RELATIVE_TOLERANCE * (np.abs(x) + np.abs(inverse))
    assert (np.abs(y - exact(x, alpha, inverse)) <= bound).all()


def test_snake_matches_its_numpy_twin_and_the_onnx_chain_it_replaces():
    x, alpha, inverse = problem(3)
    feed = {"x": x, "alpha": alpha, "inverse": inverse}
    [y] = snake_session().run(None, feed)
    [chain] = vampnet_onnx.create_session(_chain_model()).run(None, feed)
    bound = RELATIVE_TOLERANCE * (np.abs(x) + np.abs(inverse))
    for other in (reference.snake(x, alpha, inverse), chain):
        assert (np.abs(y - other) <= bound).all()


def test_snake_keeps_nan_and_inf_as_the_chain_does():
    x = np.array([[[np.nan, np.inf, -np.inf, 0.0, 1e30]]], np.float32)
    alpha, inverse = np.full((1, 1, 1), 0.5, np.float32), np.full((1, 1, 1), 2.0, np.float32)
    [y] = snake_session().run(None, {"x": x, "alpha": alpha, "inverse": inverse})
    np.testing.assert_array_equal(np.isnan(y), np.isnan(reference.snake(x, alpha, inverse)))
    assert y[0, 0, 3] == 0.0 and np.isfinite(y[0, 0, 4])


def test_snake_gives_the_same_bits_at_any_thread_count():
    x, alpha, inverse = problem(4, batch=3, channels=7, length=4097)
    feed = {"x": x, "alpha": alpha, "inverse": inverse}
    one = vampnet_onnx.create_session(op_model(ops.SNAKE), intra_op_threads=1).run(None, feed)[0]
    np.testing.assert_array_equal(snake_session().run(None, feed)[0], one)


@pytest.mark.parametrize(
    "x_shape, alpha_shape, message",
    [
        ((2, 3), (1, 3, 1), r"Snake: x must have rank 3 \[B, C, T\], got shape \[2, 3\]"),
        (
            (2, 3, 4),
            (1, 4, 1),
            r"Snake: alpha must have shape \[1, 3, 1\] \(C of x\), got shape \[1, 4, 1\]",
        ),
        ((2, 3, 4), (3,), r"Snake: alpha must have shape \[1, 3, 1\] \(C of x\), got shape \[3\]"),
    ],
)
@pytest.mark.parametrize("python_ops", [False, True])
def test_snake_names_a_bad_shape(x_shape, alpha_shape, message, python_ops):
    feed = {
        "x": np.ones(x_shape, np.float32),
        "alpha": np.ones(alpha_shape, np.float32),
        "inverse": np.ones((1, x_shape[1], 1), np.float32),
    }
    with pytest.raises(Exception, match=message):
        snake_session(python_ops).run(None, feed)


def _chain_model() -> onnx.ModelProto:
    """x + inverse * Pow(Sin(alpha * x), 2), as the codec exporter writes a Snake."""
    names = ("x", "alpha", "inverse")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["alpha", "x"], ["scaled"]),
            helper.make_node("Sin", ["scaled"], ["sine"]),
            helper.make_node("Pow", ["sine", "two"], ["squared"]),
            helper.make_node("Mul", ["inverse", "squared"], ["weighed"]),
            helper.make_node("Add", ["x", "weighed"], ["y"]),
        ],
        "snake_chain",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def test_fuse_snake_replaces_the_chain_and_nothing_else():
    model = ir.from_proto(_chain_model())
    assert fuse_snake(model) == 1
    proto = ir.to_proto(model)
    assert [node.op_type for node in proto.graph.node] == ["Snake"]
    assert [o.name for o in proto.graph.output] == ["y"]
    x, alpha, inverse = problem(5)
    [y] = vampnet_onnx.create_session(proto).run(None, {"x": x, "alpha": alpha, "inverse": inverse})
    np.testing.assert_array_equal(
        y, snake_session().run(None, {"x": x, "alpha": alpha, "inverse": inverse})[0]
    )


def test_fuse_snake_leaves_a_chain_with_another_exponent():
    model = _chain_model()
    model.graph.initializer[0].CopyFrom(helper.make_tensor("two", TensorProto.FLOAT, [], [3.0]))
    ir_model = ir.from_proto(model)
    assert fuse_snake(ir_model) == 0
    assert "Sin" in [node.op_type for node in ir_model.graph]
