"""tract (PyPI ``tract``, the portable extra) through `portable.TractSession`: the tiny
transformer against onnxruntime, and the step graph with its bodies inlined driven by
`Generator`'s host loop (docs/generation.md, "Step graphs")."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

tract = pytest.importorskip("tract", reason="tract is the portable extra's (pip install tract)")

import vampnet_onnx  # noqa: E402
from vampnet_onnx import contracts  # noqa: E402
from vampnet_onnx.export.common import attach_op_bodies  # noqa: E402
from vampnet_onnx.export.generation import export_step  # noqa: E402
from vampnet_onnx.portable import TractSession  # noqa: E402


@pytest.fixture(scope="module")
def coarse(tiny_models_dir, tmp_path_factory):
    """The tiny coarse transformer, its generation graph, and its step graph with the op
    bodies inlined (no op node: what a runtime without the library runs)."""
    root = tmp_path_factory.mktemp("tract")
    transformer = shutil.copy(tiny_models_dir / contracts.TRANSFORMER_FILES["coarse"], root)
    step = export_step(transformer, root / contracts.STEP_FILES["coarse"]).path
    attach_op_bodies(step, inline=True)
    return {
        "transformer": transformer,
        "generate": tiny_models_dir / contracts.GENERATION_FILES["coarse"],
        "step": step,
    }


def model_input(seed: int, batch: int = 2, frames: int = 19) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1024, (batch, 4, frames))
    codes[rng.random(codes.shape) < 0.5] = vampnet_onnx.MASK_TOKEN
    return codes


def test_tract_gives_the_transformers_logits_to_float32_rounding(coarse):
    codes = model_input(seed=0)
    [got] = TractSession(coarse["transformer"]).run(["logits"], {"codes": codes})
    [want] = vampnet_onnx.create_session(coarse["transformer"]).run(["logits"], {"codes": codes})
    # Logits of order one through 2 layers: float32 sums in another order differ by ~1e-6.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_feed_without_an_input_is_refused(coarse):
    with pytest.raises(ValueError, match="^TractSession.run: feed must hold every input"):
        TractSession(coarse["transformer"]).run(None, {})


def test_an_unknown_output_is_refused(coarse):
    with pytest.raises(ValueError, match=r"^TractSession.run: output_names must be among"):
        TractSession(coarse["transformer"]).run(["codes_out"], {"codes": model_input(seed=1)})


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="^TractSession: path must be an existing"):
        TractSession(tmp_path / "none.onnx")


@pytest.mark.xfail(
    raises=tract.TractError,
    strict=True,
    reason="the exact bodies run the Philox rounds in an ONNX Loop, which tract 0.23 lacks: "
    "'Failed analyse for node ... If; Failed analyse for node ... Unimplemented(Loop)' "
    "(docs/generation.md, 'Step graphs')",
)
def test_the_step_loop_on_tract_gives_onnxruntimes_tokens_at_temperature_0(coarse):
    """Deterministic settings: argmax tokens and no noise on the re-masking, so tract's float32
    logits give onnxruntime's kernels' tokens except at near-ties, which tiny random logits of
    order one do not have."""
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 1024, (2, 4, 13))
    mask = rng.random(codes.shape) < 0.7
    settings = dict(steps=4, temperature=0.0, mask_temperature=0.0, seed=1)
    tract_loop = vampnet_onnx.Generator(coarse["step"], session=TractSession(coarse["step"]))
    got = tract_loop.generate(codes, mask, **settings)
    want = vampnet_onnx.Generator(coarse["generate"]).generate(codes, mask, **settings)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("samples", [5000, 3 * 768])
def test_tract_encodes_audio_to_onnxruntimes_codes(tiny_models_dir, samples):
    """The pad to whole hops, in and out of the multiple: tract analyses the amount (the
    remainder of N - 1) and gives the codes of onnxruntime (ties in the nearest-codebook search
    aside, which random audio does not meet)."""
    audio = np.random.default_rng(samples).standard_normal((1, 1, samples)).astype(np.float32)
    encoder = tiny_models_dir / contracts.ENCODE_FILE
    [got] = TractSession(encoder).run(None, {"audio": audio * 0.1})
    [want] = vampnet_onnx.create_session(encoder).run(None, {"audio": audio * 0.1})
    np.testing.assert_array_equal(got, want)
