"""Property tests (hypothesis) of both ops through ONNX Runtime: on random shapes, values (NaN,
+-inf, subnormals, ties, float16) and settings (from 0 / subnormal to huge and infinite), the op
gives the numpy twin's result bit for bit or the twin's error, and its outputs keep the contract
(docs/ops.md): tokens in [0, V) and never at a -inf logit, logprob <= 0, mask_out a subset of
mask and empty after the last step, prompt and conditioning codebooks untouched.

Examples are derandomized (the same ones every run) and bounded in size, so the file runs in
seconds; the libFuzzer harness (tests/test_fuzz.py) explores far more inputs of the C++ kernels.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import OpRunner, sample_feed, step_feed
from vampnet_onnx import _kernels, ops, reference

# The twin computes through inf and NaN on purpose (masked out afterwards): numpy warns.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

F32, F16 = np.finfo(np.float32), np.finfo(np.float16)
# Logit values the contract accepts (finite or -inf), per dtype; NaN and +inf are planted apart
# so that most examples reach the sampling code rather than the input check.
GOOD_LOGITS = {
    np.float32: [
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.0,
        -np.inf,
        float(F32.max),
        -float(F32.max),
        float(F32.smallest_subnormal),
        700.0,
        -700.0,
        1e30,
        -1e30,
    ],
    np.float16: [
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.0,
        -np.inf,
        float(F16.max),
        -float(F16.max),
        float(F16.smallest_subnormal),
    ],
}
SUBNORMAL = float(F32.smallest_subnormal)
# Settings the contract accepts, from the edges (0, subnormal, huge, infinite) inwards ...
TEMPERATURES = [0.0, SUBNORMAL, 1e-30, 1e-3, 0.5, 1.0, 25.0, 1e30, float(F32.max), np.inf]
TOP_PS = [1.0, 0.9999999, 0.9, 0.5, 1e-6, SUBNORMAL]
MASK_TEMPERATURES = [0.0, 10.5, 1.0, SUBNORMAL, 1e30, float(F32.max)]
# ... and the values it refuses; an example breaks at most one setting, so the op and the twin
# must agree on which check fires.
BAD_SETTINGS = {
    "temperature": [np.nan, -1.0, -SUBNORMAL],
    "top_k": [-1],
    "top_p": [0.0, -0.0, 1.0000001, np.nan, np.inf],
    "mask_temperature": [np.inf, np.nan, -1.0],
    "n_steps": [0, -1],
}


def logits_arrays(draw, dtype, shape) -> np.ndarray:
    width = 16 if dtype == np.float16 else 32
    values = st.one_of(
        st.sampled_from(GOOD_LOGITS[dtype]),
        st.floats(-30, 30, width=width),
        st.integers(-2, 2).map(float),  # ties
    )
    logits = draw(hnp.arrays(dtype, shape, elements=values))
    bad = draw(st.sampled_from([None] * 6 + [np.nan, np.inf]))
    if bad is not None and logits.size:
        logits.flat[draw(st.integers(0, logits.size - 1))] = bad
    return logits


def float_setting(good: list[float], low: float, high: float) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(good), st.floats(low, high, width=32))


def break_one_setting(draw, settings: dict, names: list[str]) -> dict:
    """`settings` with, in one example of three, one of `names` set to a refused value."""
    name = draw(st.sampled_from([None] * (2 * len(names)) + names))
    if name is not None:
        settings[name] = draw(st.sampled_from(BAD_SETTINGS[name]))
    return settings


def outcome(run) -> tuple:
    """("ok", outputs) or ("error", the house-format message without its `<where>`)."""
    try:
        return ("ok", [np.asarray(o) for o in run()])
    except Exception as error:  # ORT raises its own exception types
        found = re.search(
            r"(?:SampleTokens|MaskGitStep|sample_tokens|mask_git_step): (.*)", str(error)
        )
        assert found, f"not a house-format error: {error}"
        return ("error", found.group(1).strip())


def assert_same_outcome(got: tuple, want: tuple) -> None:
    event(got[0] if got[0] == "ok" else got[1].split(",")[0])  # --hypothesis-show-statistics
    assert got[0] == want[0], (got, want)
    if got[0] == "error":
        assert got[1] == want[1]
        return
    for g, w in zip(got[1], want[1]):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


@pytest.fixture(scope="module")
def sample_runner():
    return OpRunner(ops.SAMPLE_TOKENS, sample_feed)


@pytest.fixture(scope="module")
def step_runners():
    return {
        coupled: OpRunner(ops.MASK_GIT_STEP, step_feed, batch_coupled=int(coupled))
        for coupled in (False, True)
    }


@st.composite
def sample_problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    rows = draw(st.lists(st.integers(0, 4), max_size=2))
    vocab = draw(st.one_of(st.integers(1, 12), st.integers(250, 300), st.just(0)))
    logits = logits_arrays(draw, dtype, (*rows, vocab))
    settings = dict(
        temperature=draw(float_setting(TEMPERATURES, 0.0, 100.0)),
        top_k=draw(st.one_of(st.integers(0, vocab + 2), st.just(1 << 62))),
        top_p=draw(float_setting(TOP_PS, SUBNORMAL, 1.0)),
        seed=draw(st.integers(-(2**63), 2**63 - 1)),
        offset=draw(st.integers(-(2**63), 2**63 - 1)),
        first_row=draw(st.integers(0, 2**62)),
    )
    return logits, break_one_setting(draw, settings, ["temperature", "top_k", "top_p"])


@given(sample_problems())
@PROPERTY_SETTINGS
def test_sample_tokens_op_equals_the_twin_and_keeps_the_contract(sample_runner, problem):
    logits, kwargs = problem
    got = outcome(lambda: sample_runner.run(logits, **kwargs))
    assert_same_outcome(got, outcome(lambda: reference.sample_tokens(logits, **kwargs)))
    if got[0] == "ok":
        tokens, logprob = got[1]
        assert tokens.shape == logits.shape[:-1]
        rows = logits.astype(np.float32).reshape(tokens.size, logits.shape[-1])
        flat = tokens.reshape(-1)
        assert ((flat >= 0) & (flat < logits.shape[-1])).all()
        assert (rows[np.arange(flat.size), flat] > -np.inf).all()
        assert (logprob <= 0).all()  # also no NaN


@given(sample_problems(), st.integers(0, 100))
@PROPERTY_SETTINGS
def test_rows_split_anywhere_over_two_calls_equal_one_call(sample_runner, problem, cut):
    logits, kwargs = problem
    rows = logits.reshape(logits.size // max(logits.shape[-1], 1), logits.shape[-1])
    whole = outcome(lambda: sample_runner.run(rows, **kwargs))
    if whole[0] != "ok" or rows.shape[0] == 0:
        return
    split = cut % (rows.shape[0] + 1)
    head = sample_runner.run(rows[:split], **kwargs)
    tail = sample_runner.run(rows[split:], **{**kwargs, "first_row": kwargs["first_row"] + split})
    for part_head, part_tail, one in zip(head, tail, whole[1]):
        np.testing.assert_array_equal(np.concatenate([part_head, part_tail]), one)


@st.composite
def step_problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    codebooks = draw(st.integers(1, 5))
    predicted = draw(st.integers(1, codebooks))
    batch, frames = draw(st.integers(0, 3)), draw(st.integers(0, 6))
    vocab = draw(st.one_of(st.integers(1, 10), st.integers(250, 270)))
    conditioning = codebooks - predicted
    logits = logits_arrays(draw, dtype, (batch, frames, predicted, vocab))
    mask = draw(hnp.arrays(np.bool_, (batch, codebooks, frames)))
    codes = draw(
        hnp.arrays(np.int64, (batch, codebooks, frames), elements=st.integers(0, vocab - 1))
    )
    positions = frames * predicted
    n_masked_start = mask[:, conditioning:].sum(axis=(1, 2)).astype(np.int64)
    n_masked_start += draw(hnp.arrays(np.int64, (batch,), elements=st.integers(0, 3)))
    n_masked_start = np.minimum(n_masked_start, positions)
    # Mostly valid inputs; sometimes one of the constraints the op checks is broken.
    broken = draw(st.sampled_from([None] * 6 + ["mask", "codes", "n_masked_start"]))
    if broken != "mask":
        mask[:, :conditioning] = False
    if broken == "codes" and codes.size:
        codes.flat[draw(st.integers(0, codes.size - 1))] = draw(st.sampled_from([-1, vocab]))
    if broken == "n_masked_start" and batch:
        n_masked_start[draw(st.integers(0, batch - 1))] = draw(st.sampled_from([-1, positions + 1]))
    n_steps = draw(st.one_of(st.integers(1, 40), st.just(1 << 40)))
    step = draw(st.one_of(st.integers(0, n_steps - 1), st.sampled_from([0, n_steps - 1])))
    settings = dict(
        n_steps=n_steps,
        step=step,
        temperature=draw(float_setting(TEMPERATURES, 0.0, 100.0)),
        top_k=draw(st.integers(0, vocab + 1)),
        top_p=draw(float_setting(TOP_PS, SUBNORMAL, 1.0)),
        mask_temperature=draw(float_setting(MASK_TEMPERATURES, 0.0, 50.0)),
        seed=draw(st.integers(-(2**63), 2**63 - 1)),
    )
    names = ["temperature", "top_k", "top_p", "mask_temperature", "n_steps"]
    settings = break_one_setting(draw, settings, names)
    if draw(st.sampled_from([False] * 9 + [True])):  # a step outside [0, n_steps)
        settings["step"] = draw(st.sampled_from([settings["n_steps"], -1]))
    step, n_steps = settings.pop("step"), settings.pop("n_steps")
    settings["n_masked_start"] = n_masked_start
    return (logits, codes, mask, step, n_steps), settings, draw(st.booleans())


@given(step_problems())
@PROPERTY_SETTINGS
def test_mask_git_step_op_equals_the_twin_and_keeps_the_contract(step_runners, problem):
    (logits, codes, mask, step, n_steps), kwargs, coupled = problem
    got = outcome(lambda: step_runners[coupled].run(logits, codes, mask, step, n_steps, **kwargs))
    want = outcome(
        lambda: reference.mask_git_step(
            logits, codes, mask, step, n_steps, batch_coupled=coupled, **kwargs
        )
    )
    assert_same_outcome(got, want)
    if got[0] != "ok":
        return
    codes_out, mask_out, model_input = got[1]
    vocab = logits.shape[-1]
    assert ((codes_out >= 0) & (codes_out < vocab)).all()
    assert not (mask_out & ~mask).any()
    np.testing.assert_array_equal(codes_out[~mask], codes[~mask])
    np.testing.assert_array_equal(model_input, np.where(mask_out, vocab, codes_out))
    if step == n_steps - 1:
        assert not mask_out.any()
    if mask.size:
        before, after = mask.sum(axis=(1, 2)), mask_out.sum(axis=(1, 2))
        assert (after <= before).all()
        if step != n_steps - 1:
            assert (after[before >= 2] < before[before >= 2]).all()


def _nan_row_after_an_all_neg_inf_row() -> np.ndarray:
    logits = np.zeros((3, 4), np.float32)
    logits[0] = -np.inf
    logits[2, 1] = np.nan
    return logits


LOWEST_BAD_ROW = "logits must have a finite value in every row, got row 0 all -inf"


def test_op_names_the_lowest_bad_row(sample_runner):
    """docs/ops.md: with several bad rows the first one (lowest row) is reported."""
    with pytest.raises(Exception, match=f"SampleTokens: {LOWEST_BAD_ROW}"):
        sample_runner.run(_nan_row_after_an_all_neg_inf_row())


def test_twin_names_the_lowest_bad_row():
    with pytest.raises(ValueError, match=f"sample_tokens: {LOWEST_BAD_ROW}"):
        reference.sample_tokens(_nan_row_after_an_all_neg_inf_row())


def test_twin_names_the_cell_the_op_names():
    logits = np.zeros((1, 3, 1, 4), np.float32)
    codes = np.zeros((1, 3, 3), np.int64)
    mask = np.zeros((1, 3, 3), bool)
    mask[0, 0, 1] = mask[0, 1, 0] = True  # scanned (b, t, c): [0, 1, 0] comes first
    bad_code = codes.copy()
    bad_code[0, 0, 0] = 4  # an out-of-range code scanned before both
    cases = [
        (codes, r"mask must be false in the 2 conditioning codebooks, got true at \[0, 1, 0\]"),
        (bad_code, r"codes must be in \[0, 4\) where mask is false, got 4 at \[0, 0, 0\]"),
    ]
    for codes_in, message in cases:
        for module in (_kernels, reference):
            with pytest.raises(ValueError, match=f"mask_git_step: {message}"):
                module.mask_git_step(logits, codes_in, mask, 0, 2)
