"""Shared fixtures: single-op ONNX models and feeds for the op tests."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import vampnet_onnx
from vampnet_onnx import configs, ops

ONNX_OPSET = 18
#: The IR version of the tests' hand-built models: the newest onnxruntime 1.21 (the oldest the
#: package allows) loads; onnx's newest default is newer (tests/test_ort_range.py).
ONNX_IR_VERSION = 10


def op_model(
    schema: ops.OpSchema,
    n_inputs: int | None = None,
    input_types: dict[str, int] | None = None,
    **attributes,
) -> onnx.ModelProto:
    """A model whose graph is one node of `schema`; every op input is a graph input of unknown
    shape (types from the schema unless overridden by input_types)."""
    ports = schema.inputs[: n_inputs or len(schema.inputs)]
    input_types = input_types or {}
    inputs = [
        helper.make_tensor_value_info(p.name, input_types.get(p.name, p.types[0]), None)
        for p in ports
    ]
    outputs = [helper.make_tensor_value_info(p.name, p.types[0], None) for p in schema.outputs]
    node = schema.make_node([p.name for p in ports], schema.output_names, **attributes)
    graph = helper.make_graph([node], schema.name, inputs, outputs)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), ops.opset_import()],
        ir_version=ONNX_IR_VERSION,
    )


def sample_feed(logits, temperature=1.0, top_k=0, top_p=1.0, seed=0, offset=0, first_row=0):
    """SampleTokens inputs; first_row None: for models without the optional input."""
    extra = {} if first_row is None else {"first_row": first_row}
    return {
        "logits": logits,
        **ops.SAMPLE_TOKENS.feed(
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, offset=offset, **extra
        ),
    }


def step_feed(
    logits,
    codes,
    mask,
    step,
    n_steps,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    mask_temperature=10.5,
    seed=0,
    n_masked_start=None,
    batch_offset=0,
):
    """MaskGitStep inputs; n_masked_start None: the current mask's count (right at step 0),
    False: left out together with batch_offset, for models without the optional inputs."""
    if n_masked_start is None:
        n_masked_start = mask.sum(axis=(1, 2)).astype(np.int64)
    extra = (
        {}
        if n_masked_start is False
        else {
            "n_masked_start": n_masked_start,
            **ops.MASK_GIT_STEP.feed(batch_offset=batch_offset),
        }
    )
    return {
        "logits": logits,
        "codes": codes,
        "mask": mask,
        **ops.MASK_GIT_STEP.feed(
            step=step,
            n_steps=n_steps,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            mask_temperature=mask_temperature,
            seed=seed,
        ),
        **extra,
    }


class OpRunner:
    """Runs one op with float32 or float16 logits (one session per logits type)."""

    def __init__(self, schema: ops.OpSchema, make_feed, threads: int = 2, **attributes):
        self.sessions = {
            dtype: vampnet_onnx.create_session(
                op_model(schema, input_types={"logits": onnx_type}, **attributes),
                intra_op_threads=threads,
                python_ops=False,
            )
            for dtype, onnx_type in (
                (np.float32, TensorProto.FLOAT),
                (np.float16, TensorProto.FLOAT16),
            )
        }
        self.make_feed = make_feed

    def run(self, logits, *args, **kwargs):
        logits = np.asarray(logits)
        session = self.sessions[np.float16 if logits.dtype == np.float16 else np.float32]
        return session.run(None, self.make_feed(logits, *args, **kwargs))


@pytest.fixture(scope="session")
def sample_op():
    """SampleTokens with the optional first_row input, 2 intra-op threads."""
    return OpRunner(ops.SAMPLE_TOKENS, sample_feed)


@pytest.fixture(scope="session")
def step_op():
    """MaskGitStep with n_masked_start, per-item schedule, 2 intra-op threads."""
    return OpRunner(ops.MASK_GIT_STEP, step_feed)


@pytest.fixture(scope="session")
def coupled_step_op():
    """MaskGitStep with upstream's batch-coupled schedule."""
    return OpRunner(ops.MASK_GIT_STEP, step_feed, batch_coupled=1)


def random_step_problem(
    rng: np.random.Generator, batch=2, codebooks=4, predicted=4, frames=20, vocab=32, mask_rate=0.7
):
    """Random logits [B, T, P, V], codes and mask [B, C, T] (conditioning codebooks unmasked)."""
    logits = (rng.standard_normal((batch, frames, predicted, vocab)) * 2).astype(np.float32)
    codes = rng.integers(0, vocab, (batch, codebooks, frames)).astype(np.int64)
    mask = rng.random((batch, codebooks, frames)) < mask_rate
    mask[:, : codebooks - predicted] = False
    return logits, codes, mask


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    """`vampnet-onnx export --single-graph` of tiny random coarse, c2f, codec (with the real
    rates, hop 768) and WaveBeat checkpoints, written once per test session."""
    from vampnet_onnx import cli, testing

    root = tmp_path_factory.mktemp("tiny_models")
    coarse = testing.write_vampnet_checkpoint(root / "coarse.pth", configs.TINY_COARSE_KWARGS)
    c2f = testing.write_vampnet_checkpoint(root / "c2f.pth", configs.TINY_C2F_KWARGS, seed=2)
    codec = testing.write_codec_checkpoint(root / "codec.pth", configs.SMALL_CODEC_KWARGS, seed=3)
    wavebeat = testing.write_wavebeat_checkpoint(
        root / "wavebeat.pth", configs.TINY_WAVEBEAT_HPARAMS, seed=4
    )
    out = root / "models"
    argv = ["export", "--coarse", str(coarse), "--c2f", str(c2f), "--codec", str(codec)]
    argv += ["--wavebeat", str(wavebeat), "--single-graph"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    return out
