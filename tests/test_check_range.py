"""The CheckRange op: the ORT op, the kernels module and the numpy twin accept the same values
and give the same messages."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import vampnet_onnx
from vampnet_onnx import _kernels, ops, reference


def check_model(low: float, high: float, **attributes) -> onnx.ModelProto:
    values = {"name": "dropout", "where": "Vamp", "min": low, "max": high} | attributes
    node = ops.CHECK_RANGE.make_node(["x"], ["ok"], **values)
    graph = helper.make_graph(
        [node],
        "check_range",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, None)],
        [helper.make_tensor_value_info("ok", TensorProto.BOOL, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), ops.opset_import()])


@pytest.fixture(scope="module")
def sessions():
    model = check_model(0.0, 1e6)
    return [vampnet_onnx.create_session(model, python_ops=flag) for flag in (False, True)]


VALUES = [
    (0.0, None),
    (1e6, None),
    (0.5, None),
    (-1.0, "got -1"),
    (1_000_001.0, "got 1000001"),
    (-0.25, "got -0.25"),
    (float("nan"), "got nan"),
    (float("inf"), "got inf"),
    (-float("inf"), "got -inf"),
    (1e20, "got 1e+20"),
]


@pytest.mark.parametrize("value, error", VALUES)
def test_op_kernels_and_twin_agree(sessions, value, error):
    message = "Vamp: dropout must be in [0, 1000000], " + (error or "")
    calls = [lambda s=s: s.run(None, {"x": np.array(value)})[0] for s in sessions] + [
        lambda: _kernels.check_range(value, "dropout", 0.0, 1e6, "Vamp"),
        lambda: reference.check_range(value, "dropout", 0.0, 1e6, "Vamp"),
    ]
    for call in calls:
        if error is None:
            assert bool(call()) is True
        else:
            with pytest.raises(Exception) as raised:
                call()
            assert message in str(raised.value)


def test_wrong_type_and_shape_are_house_format_errors():
    session = vampnet_onnx.create_session(check_model(0.0, 1.0), python_ops=False)
    with pytest.raises(
        Exception, match=r"Vamp: dropout must be a scalar \(one element\), got shape \[2\]"
    ):
        session.run(None, {"x": np.zeros(2)})


def test_bad_attributes_fail_when_the_session_is_created():
    with pytest.raises(Exception, match=r"CheckRange: attribute min must be <= max = 1, got 2"):
        vampnet_onnx.create_session(check_model(2.0, 1.0), python_ops=False).run(
            None, {"x": np.array(1.0)}
        )
