"""SampleTokens: the ORT op and the kernels module against the numpy twin and the exact
filtered distribution."""

import numpy as np
import pytest
from scipy import stats

import vampnet_onnx
from conftest import op_model, sample_feed
from vampnet_onnx import _kernels, ops, reference


def run(op, logits, **kwargs):
    return op.run(logits, **kwargs)


def exact_distribution(x, temperature, top_k, top_p):
    """VampNet's filtered distribution (docs/model.md §3.3) for one row, float64, written from the
    spec: top-k keeps logits >= the k-th largest; top-p keeps, in decreasing order, each token
    while the softmax mass before it is <= top_p; then softmax(x / temperature)."""
    x = np.asarray(x, dtype=np.float64)
    keep = np.ones(x.size, bool)
    if 0 < top_k < x.size:
        keep &= x >= np.sort(x)[::-1][top_k - 1]
    if top_p < 1:
        order = np.argsort(-x, kind="stable")
        masked = np.where(keep, x, -np.inf)[order]
        probs = np.exp(masked - masked.max())
        probs /= probs.sum()
        before = np.concatenate([[0.0], np.cumsum(probs)[:-1]])
        keep_sorted = np.ones(x.size, bool)
        keep_sorted[1:] = before[1:] <= top_p
        keep[order[~keep_sorted]] = False
    weights = np.where(keep, np.exp((x - x.max()) / temperature), 0.0)
    return weights / weights.sum()


RANDOM_CASES = [
    # shape, dtype, temperature, top_k, top_p
    ((37,), np.float32, 1.0, 0, 1.0),
    ((5, 64), np.float32, 0.7, 0, 0.9),
    ((2, 3, 50), np.float16, 1.3, 7, 1.0),
    ((4, 1024), np.float32, 1.0, 0, 0.3),
    ((3, 17, 1024), np.float32, 0.0, 0, 1.0),
    ((9, 300), np.float16, 0.5, 40, 0.95),
    ((1, 1), np.float32, 2.0, 0, 1.0),
    ((6, 100), np.float32, 1e-3, 0, 1e-3),
    ((8, 33), np.float32, 25.0, 33, 1.0),
]


@pytest.mark.parametrize("shape, dtype, temperature, top_k, top_p", RANDOM_CASES)
@pytest.mark.parametrize("seed", [0, 12345, -7])
def test_op_matches_numpy_twin(sample_op, shape, dtype, temperature, top_k, top_p, seed):
    rng = np.random.default_rng(abs(seed) + len(shape))
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    if seed == 0:
        logits = np.round(logits)  # many ties
    kwargs = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, offset=3)
    tokens, logprob = run(sample_op, logits, **kwargs)
    want_tokens, want_logprob = reference.sample_tokens(logits, **kwargs)
    np.testing.assert_array_equal(tokens, want_tokens)
    np.testing.assert_array_equal(logprob, want_logprob)
    assert tokens.shape == shape[:-1] and tokens.dtype == np.int64
    assert logprob.dtype == np.float32


def test_kernels_module_matches_numpy_twin_on_many_inputs():
    rng = np.random.default_rng(3)
    for _ in range(150):
        vocab, rows = int(rng.integers(1, 400)), int(rng.integers(1, 40))
        logits = (rng.standard_normal((rows, vocab)) * rng.uniform(0.1, 10)).astype(np.float32)
        if rng.random() < 0.3:
            logits = np.round(logits)
        if rng.random() < 0.2:
            logits[rng.random(logits.shape) < 0.3] = -np.inf
            logits[:, 0] = 0.0
        dtype = rng.choice([np.float32, np.float16])
        kwargs = dict(
            temperature=float(rng.choice([0.0, 0.5, 1.0, 2.0, 1e-3])),
            top_k=int(rng.choice([0, 1, 3, vocab, vocab + 5])),
            top_p=float(rng.choice([1.0, 0.9, 0.5, 1e-3])),
            seed=int(rng.integers(-(2**63), 2**63 - 1)),
            offset=int(rng.integers(0, 1000)),
            first_row=int(rng.integers(0, 2**40)),
        )
        got = _kernels.sample_tokens(logits.astype(dtype), threads=2, **kwargs)
        want = reference.sample_tokens(logits.astype(dtype), **kwargs)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


# Each case draws N = 200,000 tokens of one row (different random streams) and runs a chi-square
# goodness-of-fit test against the exact filtered distribution. Seeds are fixed, so the outcome
# is deterministic; a correct sampler fails p > 1e-3 with probability 0.1% per seed (checked:
# these seeds pass), while a wrong filter order or temperature gives p ~ 0 at this N.
CHI2_CASES = [
    (1.0, 0, 1.0),
    (0.5, 0, 1.0),
    (2.0, 0, 0.9),
    (1.0, 5, 1.0),
    (0.7, 6, 0.8),
    (1.5, 3, 0.6),
]


@pytest.mark.parametrize("temperature, top_k, top_p", CHI2_CASES)
def test_sampled_frequencies_follow_the_filtered_distribution(sample_op, temperature, top_k, top_p):
    row = np.array([1.2, -0.3, 0.8, 2.0, -1.5, 0.1, 1.9, -0.7, 0.4, 1.1, -2.2, 0.6], np.float32)
    n = 200_000
    tokens, _ = run(
        sample_op,
        np.tile(row, (n, 1)),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=2024,
    )
    expected = exact_distribution(row, temperature, top_k, top_p)
    counts = np.bincount(tokens, minlength=row.size)
    assert counts[expected == 0].sum() == 0, "a filtered token was sampled"
    kept = expected > 0
    result = stats.chisquare(counts[kept], expected[kept] * n)
    assert result.pvalue > 1e-3, (counts, expected * n)


def test_logprob_is_the_log_of_the_filtered_scaled_probability(sample_op):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((50, 40)).astype(np.float32)
    tokens, logprob = run(sample_op, logits, temperature=0.6, top_k=10, top_p=0.9, seed=1)
    for row, token, lp in zip(logits, tokens, logprob):
        p = exact_distribution(row, 0.6, 10, 0.9)[token]
        assert p > 0
        assert lp == pytest.approx(np.log(np.float32(p)), abs=1e-6)


def test_temperature_zero_is_argmax_with_lowest_index_on_ties(sample_op):
    logits = np.array(
        [[0.0, 3.0, 1.0, 3.0], [5.0, 5.0, 5.0, 5.0], [-1.0, -2.0, -3.0, -0.5]], np.float32
    )
    tokens, logprob = run(sample_op, logits, temperature=0.0, seed=99)
    np.testing.assert_array_equal(tokens, [1, 0, 3])
    # Confidence as at temperature 1, as VampNet's argmax path computes it.
    for row, token, lp in zip(logits, tokens, logprob):
        p = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        assert lp == pytest.approx(np.log(p[token]), abs=1e-6)


def test_top_p_keeps_the_first_token_crossing_the_threshold(sample_op):
    # Sorted probabilities 0.5, 0.3, 0.2: top_p 0.6 keeps 0.5 (before it 0) and 0.3 (before it
    # 0.5 <= 0.6), removes 0.2 (before it 0.8).
    logits = np.log(np.array([[0.2, 0.5, 0.3]], np.float32))
    tokens, _ = run(sample_op, np.repeat(logits, 5000, axis=0), top_p=0.6, seed=4)
    assert set(np.unique(tokens)) == {1, 2}


def test_tiny_top_p_is_greedy(sample_op):
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((200, 30)).astype(np.float32)
    tokens, _ = run(sample_op, logits, top_p=1e-6, temperature=5.0, seed=3)
    np.testing.assert_array_equal(tokens, logits.argmax(axis=1))


def test_top_k_keeps_ties_at_the_threshold(sample_op):
    logits = np.array([[3.0, 1.0, 2.0, 2.0, 0.0]], np.float32)
    tokens, _ = run(sample_op, np.repeat(logits, 4000, axis=0), top_k=2, seed=6)
    assert set(np.unique(tokens)) == {0, 2, 3}


def test_same_seed_same_tokens_for_one_and_two_threads():
    rng = np.random.default_rng(9)
    logits = rng.standard_normal((64, 25, 256)).astype(np.float32)
    results = []
    for threads in (1, 2):
        session = vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS), intra_op_threads=threads)
        results.append(session.run(None, sample_feed(logits, top_p=0.9, seed=11, offset=4)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_rows_split_over_calls_with_first_row_give_the_same_tokens(sample_op):
    rng = np.random.default_rng(10)
    logits = rng.standard_normal((100, 64)).astype(np.float32)
    whole, _ = run(sample_op, logits, seed=5, offset=2)
    parts = [
        run(sample_op, logits[a:b], seed=5, offset=2, first_row=a)[0]
        for a, b in [(0, 13), (13, 60), (60, 100)]
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_repeated_runs_give_the_same_tokens_and_streams_differ(sample_op):
    logits = np.zeros((500, 50), np.float32)  # uniform: tokens are pure randomness
    first, _ = run(sample_op, logits, seed=1, offset=0)
    again, _ = run(sample_op, logits, seed=1, offset=0)
    other_offset, _ = run(sample_op, logits, seed=1, offset=1)
    other_seed, _ = run(sample_op, logits, seed=2, offset=0)
    np.testing.assert_array_equal(first, again)
    assert (first != other_offset).mean() > 0.9
    assert (first != other_seed).mean() > 0.9


def test_first_row_is_optional():
    session = vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS, n_inputs=6))
    logits = np.random.default_rng(0).standard_normal((10, 20)).astype(np.float32)
    tokens, _ = session.run(None, sample_feed(logits, seed=3, first_row=None))
    np.testing.assert_array_equal(tokens, reference.sample_tokens(logits, seed=3)[0])


def test_float16_logits_sample_like_their_float32_values(sample_op):
    logits = np.random.default_rng(12).standard_normal((40, 77)).astype(np.float16)
    half = run(sample_op, logits, temperature=0.8, seed=8)
    single = run(sample_op, logits.astype(np.float32), temperature=0.8, seed=8)
    np.testing.assert_array_equal(half[0], single[0])
    np.testing.assert_array_equal(half[1], single[1])


def test_neg_inf_logits_are_never_sampled(sample_op):
    logits = np.random.default_rng(13).standard_normal((3000, 10)).astype(np.float32)
    logits[:, ::2] = -np.inf
    tokens, logprob = run(sample_op, logits, seed=2)
    assert np.all(tokens % 2 == 1)
    assert np.all(np.isfinite(logprob))


def test_empty_rows_give_empty_outputs(sample_op):
    tokens, logprob = run(sample_op, np.zeros((0, 16), np.float32))
    assert tokens.shape == (0,) and logprob.shape == (0,)


ERROR_CASES = [
    (dict(top_p=1.5), "SampleTokens: top_p must be in (0, 1], got 1.5"),
    (dict(top_p=0.0), "SampleTokens: top_p must be in (0, 1], got 0"),
    (dict(top_k=-1), "SampleTokens: top_k must be >= 0, got -1"),
    (dict(temperature=-0.5), "SampleTokens: temperature must be >= 0, got -0.5"),
    (dict(temperature=float("nan")), "SampleTokens: temperature must be >= 0, got nan"),
    (dict(first_row=-3), "SampleTokens: first_row must be >= 0, got -3"),
]


@pytest.mark.parametrize("bad, message", ERROR_CASES)
def test_bad_settings_raise_house_format_errors(sample_op, bad, message):
    logits = np.zeros((2, 8), np.float32)
    with pytest.raises(
        Exception,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        run(sample_op, logits, **bad)


@pytest.mark.parametrize(
    "logits, message",
    [
        (
            np.array([[0.0, np.nan, 1.0]], np.float32),
            "logits must be finite or -inf, got nan at row 0, index 1",
        ),
        (
            np.array([[0.0, 1.0], [np.inf, 0.0]], np.float32),
            "logits must be finite or -inf, got inf at row 1, index 0",
        ),
        (
            np.array([[0.0, 1.0], [-np.inf, -np.inf]], np.float32),
            "logits must have a finite value in every row, got row 1 all -inf",
        ),
        (np.zeros((3, 0), np.float32), "logits must have a non-empty last axis, got V = 0"),
        (np.array(1.0, np.float32), r"logits must have rank >= 1 \[..., V\], got a scalar"),
    ],
)
def test_bad_logits_raise_house_format_errors(sample_op, logits, message):
    with pytest.raises(Exception, match=f"SampleTokens: {message}"):
        run(sample_op, logits)
    with pytest.raises(ValueError, match=f"sample_tokens: {message}"):
        _kernels.sample_tokens(logits)
    with pytest.raises(ValueError, match=f"sample_tokens: {message}"):
        reference.sample_tokens(logits)


def test_wrong_dtypes_and_shapes_raise_house_format_errors():
    session = vampnet_onnx.create_session(
        op_model(ops.SAMPLE_TOKENS, input_types={"logits": 6, "temperature": 11})
    )  # int32, float64
    feed = sample_feed(np.zeros((2, 4), np.int32))
    feed["temperature"] = np.array(1.0)
    with pytest.raises(
        Exception, match="SampleTokens: logits must be a float32 or float16 tensor, got int32"
    ):
        session.run(None, feed)
    session = vampnet_onnx.create_session(
        op_model(ops.SAMPLE_TOKENS, input_types={"temperature": 11})
    )
    feed = sample_feed(np.zeros((2, 4), np.float32))
    feed["temperature"] = np.array(1.0)
    with pytest.raises(
        Exception, match="SampleTokens: temperature must be a float32 tensor, got float64"
    ):
        session.run(None, feed)


def test_non_scalar_setting_raises(sample_op):
    feed = sample_feed(np.zeros((2, 4), np.float32))
    feed["seed"] = np.array([1, 2], np.int64)
    with pytest.raises(
        Exception,
        match=r"SampleTokens: seed must be a scalar \(one element\), "
        r"got shape \[2\]",
    ):
        sample_op.sessions[np.float32].run(None, feed)
    with pytest.raises(
        ValueError, match="sample_tokens: logits must be a float32 or float16 array, got int64"
    ):
        _kernels.sample_tokens(np.zeros((2, 3), np.int64))


def test_top_p_orders_negative_and_positive_zero_as_a_tie(sample_op):
    # -0.0 and +0.0 are equal logits: the lower index comes first in the nucleus order.
    logits = np.array([[-0.0, 0.0, -5.0]], np.float32)
    tokens, _ = sample_op.run(np.repeat(logits, 1000, axis=0), top_p=0.4, seed=1)
    assert set(np.unique(tokens)) == {0}
