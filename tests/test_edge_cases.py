"""The edge cases of docs/ops.md's tables, each through the ORT op, the kernels module and the
numpy twin. Cases already covered for all three elsewhere are not repeated: V = 0 with rows,
NaN / +inf / all -inf rows of SampleTokens, bad settings, step >= n_steps and n_steps < 1
(tests/test_sample_tokens.py, tests/test_mask_git_step.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import stats

import vampnet_onnx
from conftest import op_model, random_step_problem, step_feed
from vampnet_onnx import _kernels, ops, reference

IMPLEMENTATIONS = ["ort", "kernels", "twin"]
FLOAT_MAX = float(np.finfo(np.float32).max)
SMALLEST_SUBNORMAL = float(np.finfo(np.float32).smallest_subnormal)


class Implementation:
    """One way to run the ops, with the error type and `<where>` it reports."""

    def __init__(self, name, sample_op, step_op):
        self.name = name
        self._sample_op, self._step_op = sample_op, step_op

    def sample_tokens(self, logits, **settings):
        if self.name == "ort":
            return tuple(self._sample_op.run(logits, **settings))
        module = _kernels if self.name == "kernels" else reference
        return module.sample_tokens(logits, **settings)

    def mask_git_step(self, logits, codes, mask, step, n_steps, **settings):
        if self.name == "ort":
            return tuple(self._step_op.run(logits, codes, mask, step, n_steps, **settings))
        module = _kernels if self.name == "kernels" else reference
        return module.mask_git_step(logits, codes, mask, step, n_steps, **settings)

    def raises(self, op: str, message: str):
        """pytest.raises for `message`, with this implementation's `<where>` for `op`."""
        where = {"SampleTokens": "sample_tokens", "MaskGitStep": "mask_git_step"}[op]
        where = op if self.name == "ort" else where
        error = Exception if self.name == "ort" else ValueError
        return pytest.raises(error, match=re.escape(f"{where}: {message}"))


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request, sample_op, step_op):
    return Implementation(request.param, sample_op, step_op)


# --- SampleTokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 16), (3, 0, 16), (0, 0), (0, 1 << 40)])
def test_no_rows_give_empty_outputs_whatever_v(impl, shape):
    # (0, 2^40) holds no data: nothing may be allocated or read per vocabulary entry.
    tokens, logprob = impl.sample_tokens(np.zeros(shape, np.float32), seed=1)
    assert tokens.shape == shape[:-1] and logprob.shape == shape[:-1]
    assert tokens.dtype == np.int64 and logprob.dtype == np.float32


@pytest.mark.parametrize("temperature", [0.0, 1e-30, 1.0, 1e30])
def test_neg_inf_logits_are_never_sampled(impl, temperature):
    logits = np.random.default_rng(1).standard_normal((2000, 12)).astype(np.float32)
    logits[:, 1::3] = -np.inf
    tokens, logprob = impl.sample_tokens(logits, temperature=temperature, seed=5)
    assert np.all(tokens % 3 != 1)
    assert np.all(logprob <= 0) and not np.isnan(logprob).any()


def test_float16_nan_logit_raises(impl):
    logits = np.array([[0.0, 1.0], [2.0, np.nan]], np.float16)
    with impl.raises("SampleTokens", "logits must be finite or -inf, got nan at row 1, index 1"):
        impl.sample_tokens(logits)


def test_ties_at_temperature_zero_go_to_the_lowest_index(impl):
    logits = np.array([[1.0, 4.0, 4.0, 4.0], [-0.0, 0.0, -1.0, -np.inf]], np.float32)
    tokens, _ = impl.sample_tokens(np.repeat(logits, 50, axis=0), temperature=0.0, seed=3)
    np.testing.assert_array_equal(tokens.reshape(2, 50), [[1] * 50, [0] * 50])


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=0.0),
        dict(temperature=1.0),
        dict(temperature=SMALLEST_SUBNORMAL),
        dict(temperature=np.inf),
        dict(top_k=1),
        dict(top_k=2),
        dict(top_p=SMALLEST_SUBNORMAL),
    ],
)
def test_one_token_vocabulary_gives_token_zero_logprob_zero(impl, settings):
    logits = np.array([[-5.0], [0.0], [FLOAT_MAX], [-FLOAT_MAX]], np.float32)
    tokens, logprob = impl.sample_tokens(logits, seed=9, **settings)
    np.testing.assert_array_equal(tokens, 0)
    np.testing.assert_array_equal(logprob, 0.0)


@pytest.mark.parametrize("top_k", [40, 41, 1 << 62])
def test_top_k_at_or_above_v_is_off(impl, top_k):
    logits = np.random.default_rng(2).standard_normal((300, 40)).astype(np.float32)
    off = impl.sample_tokens(logits, top_k=0, seed=4, temperature=0.7)
    got = impl.sample_tokens(logits, top_k=top_k, seed=4, temperature=0.7)
    np.testing.assert_array_equal(got[0], off[0])
    np.testing.assert_array_equal(got[1], off[1])


@pytest.mark.parametrize("top_p", [SMALLEST_SUBNORMAL, 1e-30, 1e-6])
def test_top_p_near_zero_is_greedy_at_any_temperature(impl, top_p):
    logits = np.random.default_rng(3).standard_normal((400, 50)).astype(np.float32)
    tokens, logprob = impl.sample_tokens(logits, top_p=top_p, temperature=50.0, seed=2)
    np.testing.assert_array_equal(tokens, logits.argmax(axis=1))
    np.testing.assert_array_equal(logprob, 0.0)  # one token kept: probability exactly 1


@pytest.mark.parametrize("temperature", [SMALLEST_SUBNORMAL, 1e-30, 1e-6])
def test_temperature_near_zero_is_the_argmax(impl, temperature):
    # Distinct logits at least 1e-3 apart: every non-maximal weight underflows to exactly 0.
    rng = np.random.default_rng(4)
    logits = np.stack([rng.permutation(64) for _ in range(300)]).astype(np.float32) * 1e-3
    tokens, logprob = impl.sample_tokens(logits, temperature=temperature, seed=6)
    np.testing.assert_array_equal(tokens, logits.argmax(axis=1))
    np.testing.assert_array_equal(logprob, 0.0)


def test_temperature_near_zero_samples_among_tied_maxima(impl):
    logits = np.tile(np.array([0.0, 2.0, 1.0, 2.0], np.float32), (400, 1))
    tokens, logprob = impl.sample_tokens(logits, temperature=1e-30, seed=8)
    assert set(np.unique(tokens)) == {1, 3}
    np.testing.assert_array_equal(logprob, np.float32(np.log(np.float32(0.5))))


@pytest.mark.parametrize("temperature", [1e30, FLOAT_MAX, np.inf])
@pytest.mark.parametrize("top_k, kept", [(0, [0, 1, 2, 4, 5, 6, 7, 8, 9]), (6, [0, 2, 4, 5, 7, 9])])
@pytest.mark.filterwarnings("error::RuntimeWarning")  # the twin keeps -inf / +inf out too
def test_huge_temperature_is_uniform_over_the_kept_tokens(impl, temperature, top_k, kept):
    # Every kept token (finite, and in the top k) has probability 1 / len(kept), so logprob is
    # that to float32 rounding; the counts of n = 20,000 draws pass a chi-square test against
    # uniform at p > 1e-3 (fixed seed: deterministic; a uniform sampler fails it 0.1% of seeds).
    row = np.array([3.0, -1.0, 2.0, -np.inf, 9.0, 0.5, -4.0, 7.0, -2.0, 1.0], np.float32)
    n = 20_000
    tokens, logprob = impl.sample_tokens(
        np.tile(row, (n, 1)), temperature=temperature, top_k=top_k, seed=11
    )
    counts = np.bincount(tokens, minlength=row.size)
    assert counts[np.setdiff1d(np.arange(row.size), kept)].sum() == 0
    assert stats.chisquare(counts[kept]).pvalue > 1e-3
    np.testing.assert_allclose(logprob, np.log(1 / len(kept)), rtol=0, atol=1e-6)


# --- MaskGitStep ----------------------------------------------------------------------------


def _masked_count(mask):
    return mask.sum(axis=(1, 2))


def test_single_step_generates_everything(impl):
    logits, codes, mask = random_step_problem(np.random.default_rng(5), batch=2, frames=9)
    codes_out, mask_out, model_input = impl.mask_git_step(logits, codes, mask, 0, 1, seed=2)
    assert not mask_out.any()
    np.testing.assert_array_equal(model_input, codes_out)
    np.testing.assert_array_equal(codes_out[~mask], codes[~mask])
    assert ((codes_out >= 0) & (codes_out < 32)).all()


@pytest.mark.parametrize("step, n_steps", [(0, 1 << 40), ((1 << 40) - 1, 1 << 40), (0, 2)])
def test_steps_at_the_ends_of_a_long_schedule(impl, step, n_steps):
    logits, codes, mask = random_step_problem(np.random.default_rng(6), batch=2, frames=10)
    mask[:, :] = True
    _, mask_out, _ = impl.mask_git_step(logits, codes, mask, step, n_steps, seed=3)
    m = _masked_count(mask)
    if step == n_steps - 1:
        assert not mask_out.any()
    else:
        k = [reference.n_to_mask(step, n_steps, int(n), int(n)) for n in m]
        assert (_masked_count(mask_out) <= np.array(k)).all()
        assert (_masked_count(mask_out) < m).all()


@pytest.mark.parametrize("frames", [1, 2])
def test_short_sequences_work(impl, frames):
    logits, codes, mask = random_step_problem(np.random.default_rng(7), frames=frames)
    mask[:, :] = True
    _, mask_out, _ = impl.mask_git_step(logits, codes, mask, 0, 3, seed=1)
    # 4 * frames masked; k = floor(cos(pi / 6) * 4 * frames) stay masked (docs/model.md §3.2).
    k = int(np.floor(np.float32(np.cos(np.pi / 6)) * 4 * frames))
    np.testing.assert_array_equal(_masked_count(mask_out), [k, k])


@pytest.mark.parametrize("batch, frames", [(0, 5), (2, 0), (0, 0)])
def test_zero_cells_give_empty_outputs(impl, batch, frames):
    logits = np.zeros((batch, frames, 4, 8), np.float32)
    codes = np.zeros((batch, 4, frames), np.int64)
    outputs = impl.mask_git_step(logits, codes, np.zeros(codes.shape, bool), 0, 3)
    assert [o.shape for o in outputs] == [codes.shape] * 3


@pytest.mark.parametrize("where", ["ort", "kernels", "twin"])
def test_huge_batch_of_zero_frames_needs_no_memory(where):
    """B = 2^31 items of T = 0 frames hold no data; neither the op nor the twin may allocate or
    loop per item (a fuzzer finding: the op used to allocate ~85 GB of per-item scratch)."""
    batch = 1 << 31
    logits = np.zeros((batch, 0, 4, 8), np.float32)
    codes = np.zeros((batch, 4, 0), np.int64)
    mask = np.zeros(codes.shape, bool)
    if where == "ort":
        session = vampnet_onnx.create_session(op_model(ops.MASK_GIT_STEP, n_inputs=10))
        outputs = session.run(None, step_feed(logits, codes, mask, 0, 3, n_masked_start=False))
    elif where == "kernels":
        outputs = _kernels.mask_git_step(logits, codes, mask, 0, 3)
    else:
        outputs = reference.mask_git_step(logits, codes, mask, 0, 3)
    assert [o.shape for o in outputs] == [codes.shape] * 3


def test_item_with_nothing_masked_is_unchanged(impl):
    logits, codes, mask = random_step_problem(np.random.default_rng(8), batch=3, frames=12)
    mask[1] = False
    codes_out, mask_out, model_input = impl.mask_git_step(logits, codes, mask, 0, 4, seed=5)
    np.testing.assert_array_equal(codes_out[1], codes[1])
    assert not mask_out[1].any()
    np.testing.assert_array_equal(model_input[1], codes[1])


def test_nothing_masked_anywhere_returns_the_codes(impl):
    logits, codes, mask = random_step_problem(np.random.default_rng(9), batch=2, frames=6)
    mask[:] = False
    codes_out, mask_out, model_input = impl.mask_git_step(logits, codes, mask, 1, 4, seed=5)
    np.testing.assert_array_equal(codes_out, codes)
    np.testing.assert_array_equal(model_input, codes)
    assert not mask_out.any()


@pytest.mark.parametrize("step, n_steps", [(0, 5), (3, 5), (4, 5)])
def test_one_masked_position_stays_masked_until_the_last_step(impl, step, n_steps):
    logits, codes, mask = random_step_problem(np.random.default_rng(10), batch=1, frames=8)
    mask[:] = False
    mask[0, 2, 5] = True
    codes_out, mask_out, model_input = impl.mask_git_step(
        logits, codes, mask, step, n_steps, n_masked_start=np.array([20], np.int64), seed=1
    )
    assert mask_out[0, 2, 5] == (step != n_steps - 1)
    assert _masked_count(mask_out)[0] == int(mask_out[0, 2, 5])
    assert model_input[0, 2, 5] == (32 if mask_out[0, 2, 5] else codes_out[0, 2, 5])
    assert 0 <= codes_out[0, 2, 5] < 32  # sampled either way


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_bad_logit_at_a_masked_position_raises_naming_the_row(impl, bad):
    # Row b * T * P + p: item 1, frame 2, predicted codebook 3 of T = 5, P = 4: 1*20 + 2*4 + 3.
    logits, codes, mask = random_step_problem(np.random.default_rng(11), batch=2, frames=5)
    mask[:] = True
    logits[1, 2, 3, 7] = bad
    got = "nan" if np.isnan(bad) else "inf"
    with impl.raises("MaskGitStep", f"logits must be finite or -inf, got {got} at row 31, index 7"):
        impl.mask_git_step(logits, codes, mask, 0, 3)


def test_all_neg_inf_row_at_a_masked_position_raises(impl):
    logits, codes, mask = random_step_problem(np.random.default_rng(12), batch=2, frames=5)
    mask[:] = True
    logits[0, 4, 1] = -np.inf  # row 0 * 20 + 4 * 4 + 1
    with impl.raises(
        "MaskGitStep", "logits must have a finite value in every row, got row 17 all -inf"
    ):
        impl.mask_git_step(logits, codes, mask, 0, 3)


def test_logits_at_unmasked_positions_are_not_read(impl):
    logits, codes, mask = random_step_problem(np.random.default_rng(13), batch=2, frames=6)
    clean = impl.mask_git_step(logits, codes, mask, 0, 3, seed=4)
    dirty_logits = logits.copy()
    flat_mask = mask.transpose(0, 2, 1)  # [B, T, C]: P = C here
    dirty_logits[~flat_mask] = np.nan
    dirty_logits[~flat_mask, 0] = np.inf
    dirty = impl.mask_git_step(dirty_logits, codes, mask, 0, 3, seed=4)
    for a, b in zip(clean, dirty):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=SMALLEST_SUBNORMAL),
        dict(temperature=1e30),
        dict(top_k=33, top_p=SMALLEST_SUBNORMAL),
        dict(mask_temperature=SMALLEST_SUBNORMAL),
        dict(mask_temperature=1e30),
    ],
)
def test_extreme_settings_give_valid_steps(impl, settings):
    logits, codes, mask = random_step_problem(np.random.default_rng(14), batch=2, frames=10)
    n0 = _masked_count(mask)
    codes_out, mask_out, model_input = impl.mask_git_step(logits, codes, mask, 2, 6, **settings)
    assert ((codes_out >= 0) & (codes_out < 32)).all()
    assert not (mask_out & ~mask).any()
    np.testing.assert_array_equal(codes_out[~mask], codes[~mask])
    np.testing.assert_array_equal(model_input, np.where(mask_out, 32, codes_out))
    assert (_masked_count(mask_out) < np.maximum(n0, 2)).all()
