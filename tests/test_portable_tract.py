"""tract (PyPI ``tract``, the portable extra) through `portable.TractSession`: the tiny
transformer against onnxruntime, and the step graph with its bodies inlined driven by
`Generator`'s host loop (docs/generation.md, "Step graphs")."""

from __future__ import annotations

import re
import shutil

import numpy as np
import onnx
import pytest

tract = pytest.importorskip("tract", reason="tract is the portable extra's (pip install tract)")

import vampnet_onnx  # noqa: E402
from test_ops_functions import (  # noqa: E402
    test_body_philox_matches_the_kernel_on_edge_keys_and_streams as philox_kernel_check,
)
from test_ops_functions import (  # noqa: E402
    test_body_philox_matches_the_numpy_twin_on_100000_draws as philox_twin_check,
)
from test_portable import (  # noqa: E402
    SAMPLING,
    STEP_SETTINGS,
    OrtSession,
    check_mask_git_step,
    check_sample_tokens_at_temperature_0,
    check_sample_tokens_sampling,
)
from test_step_graph import problem  # noqa: E402
from vampnet_onnx import contracts, ops_functions  # noqa: E402
from vampnet_onnx.export.common import attach_op_bodies  # noqa: E402
from vampnet_onnx.export.generation import export_step  # noqa: E402
from vampnet_onnx.portable import TractSession  # noqa: E402


def export_portable_step(tiny_models_dir, root, kind: str):
    """`kind`'s step graph with the op bodies inlined in their portable variant, as ``export
    --step-graphs --inline-op-bodies --op-bodies-variant portable`` writes it."""
    transformer = shutil.copy(tiny_models_dir / contracts.TRANSFORMER_FILES[kind], root)
    step = export_step(transformer, root / contracts.STEP_FILES[kind]).path
    assert attach_op_bodies(step, inline=True, variant="portable")
    return step


@pytest.fixture(scope="module")
def coarse(tiny_models_dir, tmp_path_factory):
    """The tiny coarse transformer and its portable step graph."""
    root = tmp_path_factory.mktemp("tract")
    return {
        "transformer": tiny_models_dir / contracts.TRANSFORMER_FILES["coarse"],
        "step": export_portable_step(tiny_models_dir, root, "coarse"),
    }


@pytest.fixture(scope="module", params=["coarse", "c2f"])
def steps(request, tiny_models_dir, tmp_path_factory):
    """One kind's generation graph (library ops) and its portable step graph, in tract and
    in a plain onnxruntime session (no library)."""
    kind = request.param
    step = export_portable_step(tiny_models_dir, tmp_path_factory.mktemp(f"{kind}_tract"), kind)
    return {
        "kind": kind,
        "generate": tiny_models_dir / contracts.GENERATION_FILES[kind],
        "tract": vampnet_onnx.Generator(step, session=TractSession(step)),
        "onnxruntime": vampnet_onnx.Generator(step, session=OrtSession(step)),
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


def test_tract_reads_weights_stored_beside_the_graph(coarse, tmp_path):
    """Full-size graphs keep their weights in FILE.data beside them: the session's rewritten
    copy must reach them (tract refuses a symbolic link out of the copy's folder)."""
    model = onnx.load(str(coarse["transformer"]))
    path = tmp_path / "external" / "coarse.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path), save_as_external_data=True, location="coarse.onnx.data")
    assert (path.parent / "coarse.onnx.data").stat().st_size > 100_000
    codes = model_input(seed=4)
    [got] = TractSession(path).run(["logits"], {"codes": codes})
    [want] = TractSession(coarse["transformer"]).run(["logits"], {"codes": codes})
    np.testing.assert_array_equal(got, want)


def test_a_feed_without_an_input_is_refused(coarse):
    with pytest.raises(ValueError, match="^TractSession.run: feed must hold every input"):
        TractSession(coarse["transformer"]).run(None, {})


def test_an_unknown_output_is_refused(coarse):
    with pytest.raises(ValueError, match=r"^TractSession.run: output_names must be among"):
        TractSession(coarse["transformer"]).run(["codes_out"], {"codes": model_input(seed=1)})


def test_an_input_of_a_type_tract_cannot_take_is_named(coarse):
    codes = model_input(seed=2).astype(np.uint64)
    with pytest.raises(ValueError, match=r"^TractSession.run: input 'codes' must be an array of"):
        TractSession(coarse["transformer"]).run(["logits"], {"codes": codes})


def test_codes_out_of_range_are_refused_before_tract_aborts_on_them(coarse):
    """tract aborts the process on an embedding index out of range: the session checks the
    codes first, where the mask keeps them (masked ones become the mask token in the graph)."""
    with pytest.raises(ValueError, match=r"codes must be in \[0, 1024\] .*got 1025 at \[0, 0, 0\]"):
        TractSession(coarse["transformer"]).run(None, {"codes": np.full((1, 4, 5), 1025)})
    step = TractSession(coarse["step"])
    codes, mask = problem("coarse", 1, 9, seed=5)
    feed = {"codes": codes, "mask": mask, "n_masked_start": mask.sum(axis=(1, 2))}
    feed |= contracts.GENERATION_STEP.feed(**contracts.GENERATION_DEFAULTS, step=0)
    codes[mask] = 5000  # never read: the mask token replaces them
    assert (step.run(["codes_out"], feed)[0][mask] < 1024).all()
    codes[~mask] = -1
    with pytest.raises(ValueError, match=r"where mask is false, got -1 at"):
        step.run(None, feed)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="^TractSession: path must be an existing"):
        TractSession(tmp_path / "none.onnx")


@pytest.mark.parametrize("batch", [1, 2])
def test_the_step_loop_on_tract_gives_the_librarys_codes_at_temperature_0(steps, batch):
    """Deterministic settings: argmax tokens and no noise on the re-masking, so tract's float32
    logits give the library kernels' tokens except at near-ties, which tiny random logits of
    order one do not have."""
    codes, mask = problem(steps["kind"], batch, 13, seed=batch)
    settings = dict(steps=4, temperature=0.0, mask_temperature=0.0, seed=1)
    got = steps["tract"].generate(codes, mask, **settings)
    want = vampnet_onnx.Generator(steps["generate"]).generate(codes, mask, **settings)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(temperature=1.3, top_p=0.9), dict(temperature=0.8, top_k=40, batch_offset=9)],
)
def test_the_step_loop_on_tract_gives_the_codes_of_the_same_graph_on_onnxruntime(steps, settings):
    """Sampling: the same portable graph, the same Philox words and float32 arithmetic; a code
    differs only where the two runtimes' float32 sums put a draw across a cumulative boundary
    (measured: none of 15,468 masked codes in 40 generations, docs/generation.md)."""
    codes, mask = problem(steps["kind"], 2, 40, seed=5)
    settings = dict(steps=8, seed=-3) | settings
    got = steps["tract"].generate(codes, mask, **settings)
    want = steps["onnxruntime"].generate(codes, mask, **settings)
    assert (got == want)[mask].mean() >= 0.99


def test_a_failed_input_check_fails_the_run_with_its_message(coarse):
    session = TractSession(coarse["step"])
    codes, mask = problem("coarse", 2, 7, seed=3)
    feed = {"codes": codes, "mask": mask, "n_masked_start": mask.sum(axis=(1, 2))}
    settings = contracts.GENERATION_DEFAULTS | dict(step=4, n_steps=4)
    feed |= contracts.GENERATION_STEP.feed(**settings)
    with pytest.raises(ValueError, match=re.escape("MaskGitStep: step must be in [0, n_steps)")):
        session.run(None, feed)


def test_tract_gives_the_twins_philox_words_for_any_int64_key_and_counter(tmp_path):
    path = tmp_path / "philox.onnx"
    onnx.save(ops_functions.random_block_model("portable"), str(path))
    session = TractSession(path)

    def words(feed):
        [limbs] = session.run(None, feed)
        return ops_functions.limb_words(limbs).astype(np.int64)

    # tract holds int64 in 64 bits: the exact variant's own draws and edge values (negative
    # seeds, 2^63 - 1, rows and offsets past 2^32), against the numpy twin and the kernel.
    philox_twin_check(words)
    philox_kernel_check(words)


def test_tract_sample_tokens_at_temperature_0_gives_the_kernels_tokens(tmp_path):
    check_sample_tokens_at_temperature_0("tract", tmp_path)


@pytest.mark.parametrize("temperature, top_k, top_p", SAMPLING)
def test_tract_sample_tokens_agree_with_the_kernel_and_follow_the_distribution(
    temperature, top_k, top_p, tmp_path
):
    check_sample_tokens_sampling("tract", temperature, top_k, top_p, tmp_path)


@pytest.mark.parametrize("settings, agreement", STEP_SETTINGS)
def test_tract_mask_git_step_gives_the_kernels_codes_and_mask(settings, agreement, tmp_path):
    check_mask_git_step("tract", settings, agreement, tmp_path)


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


@pytest.fixture(scope="module")
def decoder(tiny_models_dir):
    path = tiny_models_dir / contracts.DECODE_FILE
    return {"tract": TractSession(path), "onnxruntime": vampnet_onnx.create_session(path)}


@pytest.mark.parametrize("length", [7 * 768, 7 * 768 - 5, 100, 0, -3, 10**6])
def test_tract_decodes_codes_to_onnxruntimes_audio(decoder, length):
    """The cut to `length` samples, clamped into [0, T * hop]: tract runs it (a Range and a
    Gather; a Slice to a data-dependent end it cannot run) and gives onnxruntime's samples to
    float32 rounding through the decoder's convolutions."""
    codes = np.random.default_rng(length % 97).integers(0, 1024, (2, 14, 7))
    feed = {"codes": codes, "length": np.array(length)}
    [got] = decoder["tract"].run(None, feed)
    [want] = decoder["onnxruntime"].run(None, feed)
    assert got.shape == want.shape == (2, 1, min(max(length, 0), 7 * 768))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
