"""Both ops inside the body of an ONNX Loop (rank-0 iteration counter as step and offset), with
the compiled library and with the pure-Python fallback."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import vampnet_onnx
from conftest import ONNX_IR_VERSION, ONNX_OPSET, random_step_problem
from vampnet_onnx import _kernels, ops

BCT = ["B", "C", "T"]
SETTINGS = ["temperature", "top_k", "top_p", "mask_temperature", "seed"]


def loop_model() -> onnx.ModelProto:
    """Loop over n_steps: MaskGitStep on fixed logits, carrying codes and mask, and SampleTokens
    with offset = iteration, scanned."""
    body = helper.make_graph(
        [
            ops.MASK_GIT_STEP.make_node(
                [
                    "logits",
                    "codes_in",
                    "mask_in",
                    "i",
                    "n_steps",
                    "temperature",
                    "top_k",
                    "top_p",
                    "mask_temperature",
                    "seed",
                    "n0",
                ],
                ["codes_out", "mask_out", "model_input"],
            ),
            ops.SAMPLE_TOKENS.make_node(
                ["logits", "temperature", "top_k", "top_p", "seed", "i"], ["tokens", "logprob"]
            ),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("codes_in", TensorProto.INT64, BCT),
            helper.make_tensor_value_info("mask_in", TensorProto.BOOL, BCT),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("codes_out", TensorProto.INT64, BCT),
            helper.make_tensor_value_info("mask_out", TensorProto.BOOL, BCT),
            helper.make_tensor_value_info("tokens", TensorProto.INT64, ["B", "T", "P"]),
            helper.make_tensor_value_info("model_input", TensorProto.INT64, BCT),
        ],
    )
    nodes = [
        helper.make_node("Cast", ["mask"], ["mask_int"], to=TensorProto.INT64),
        helper.make_node(
            "Constant",
            [],
            ["axes"],
            value=helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        ),
        helper.make_node("ReduceSum", ["mask_int", "axes"], ["n0"], keepdims=0),
        helper.make_node(
            "Constant", [], ["true"], value=helper.make_tensor("true", TensorProto.BOOL, [], [True])
        ),
        helper.make_node(
            "Loop",
            ["n_steps", "true", "codes", "mask"],
            ["codes_final", "mask_final", "tokens_per_step", "inputs_per_step"],
            body=body,
        ),
    ]
    scalar_types = {name: ops.MASK_GIT_STEP.port(name).types[0] for name in [*SETTINGS, "n_steps"]}
    graph = helper.make_graph(
        nodes,
        "loop",
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", "P", "V"]),
            helper.make_tensor_value_info("codes", TensorProto.INT64, BCT),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, BCT),
        ]
        + [helper.make_tensor_value_info(name, t, []) for name, t in scalar_types.items()],
        [
            helper.make_tensor_value_info("codes_final", TensorProto.INT64, BCT),
            helper.make_tensor_value_info("mask_final", TensorProto.BOOL, BCT),
            helper.make_tensor_value_info(
                "tokens_per_step", TensorProto.INT64, ["S", "B", "T", "P"]
            ),
            helper.make_tensor_value_info("inputs_per_step", TensorProto.INT64, ["S", *BCT]),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), ops.opset_import()],
        ir_version=ONNX_IR_VERSION,
    )
    onnx.checker.check_model(model)
    return model


def python_loop(logits, codes, mask, n_steps, settings):
    """The same computation driven from Python over the kernels module."""
    n0 = mask.sum(axis=(1, 2)).astype(np.int64)
    tokens, inputs = [], []
    for step in range(n_steps):
        codes, mask, model_input = _kernels.mask_git_step(
            logits, codes, mask, step, n_steps, n_masked_start=n0, **settings
        )
        sample_settings = {k: settings[k] for k in ("temperature", "top_k", "top_p", "seed")}
        tokens.append(_kernels.sample_tokens(logits, offset=step, **sample_settings)[0])
        inputs.append(model_input)
    return codes, mask, np.stack(tokens), np.stack(inputs)


def loop_feed(logits, codes, mask, n_steps, settings):
    return {
        "logits": logits,
        "codes": codes,
        "mask": mask,
        **ops.MASK_GIT_STEP.feed(n_steps=n_steps, **{k: settings[k] for k in SETTINGS}),
    }


CASES = [
    (1, 4, 4, 12, 8, dict(temperature=1.0, top_k=0, top_p=1.0, mask_temperature=10.5, seed=0)),
    (2, 14, 10, 7, 3, dict(temperature=0.8, top_k=5, top_p=0.9, mask_temperature=4.0, seed=9)),
    (3, 4, 4, 1, 1, dict(temperature=0.0, top_k=0, top_p=1.0, mask_temperature=0.0, seed=2)),
]


@pytest.fixture(scope="module")
def model():
    return loop_model()


@pytest.mark.parametrize("batch, codebooks, predicted, frames, n_steps, settings", CASES)
@pytest.mark.parametrize("python_ops", [False, True])
def test_loop_of_ops_equals_the_python_loop(
    model, batch, codebooks, predicted, frames, n_steps, settings, python_ops
):
    rng = np.random.default_rng(frames)
    logits, codes, mask = random_step_problem(rng, batch, codebooks, predicted, frames, vocab=64)
    session = vampnet_onnx.create_session(model, intra_op_threads=2, python_ops=python_ops)
    got = session.run(None, loop_feed(logits, codes, mask, n_steps, settings))
    want = python_loop(logits, codes, mask, n_steps, settings)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert not got[1].any(), "masked positions left after the loop"


@pytest.mark.parametrize("python_ops", [False, True])
def test_errors_inside_the_loop_body_surface_in_house_format(model, python_ops):
    rng = np.random.default_rng(0)
    logits, codes, mask = random_step_problem(rng)
    settings = dict(temperature=1.0, top_k=0, top_p=3.0, mask_temperature=10.5, seed=0)
    session = vampnet_onnx.create_session(model, python_ops=python_ops)
    with pytest.raises(
        Exception, match=r"(MaskGitStep|SampleTokens): top_p must be in \(0, 1\], got 3"
    ):
        session.run(None, loop_feed(logits, codes, mask, 4, settings))
