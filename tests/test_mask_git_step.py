"""MaskGitStep: the ORT op and the kernels module against the numpy twin, VampNet's schedule
(docs/model.md §3) and its re-masking rule."""

import math

import numpy as np
import pytest

import vampnet_onnx
from conftest import op_model, random_step_problem, step_feed
from vampnet_onnx import _kernels, ops, reference


def masked_count(mask):
    return mask.sum(axis=(1, 2))


@pytest.mark.parametrize(
    "batch, codebooks, predicted, frames, vocab, dtype",
    [
        (1, 4, 4, 30, 64, np.float32),
        (3, 14, 10, 9, 32, np.float32),
        (2, 4, 4, 1, 16, np.float16),
        (2, 5, 2, 17, 1024, np.float32),
    ],
)
@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(temperature=0.0, mask_temperature=0.0),
        dict(temperature=0.7, top_p=0.8),
        dict(top_k=5, mask_temperature=3.0, seed=-4),
    ],
)
def test_op_matches_numpy_twin(
    step_op, batch, codebooks, predicted, frames, vocab, dtype, settings
):
    rng = np.random.default_rng(batch * 100 + frames)
    logits, codes, mask = random_step_problem(rng, batch, codebooks, predicted, frames, vocab)
    logits = logits.astype(dtype)
    n_steps = 6
    for step in range(n_steps):
        got = step_op.run(logits, codes, mask, step, n_steps, n_masked_start=None, **settings)
        want = reference.mask_git_step(
            logits, codes, mask, step, n_steps, n_masked_start=masked_count(mask), **settings
        )
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        codes, mask = got[0], got[1]


def test_kernels_module_matches_numpy_twin_on_many_inputs():
    rng = np.random.default_rng(21)
    for _ in range(150):
        codebooks = int(rng.integers(1, 6))
        predicted = int(rng.integers(1, codebooks + 1))
        batch, frames, vocab = (
            int(rng.integers(1, 4)),
            int(rng.integers(1, 30)),
            int(rng.integers(2, 64)),
        )
        logits, codes, mask = random_step_problem(
            rng, batch, codebooks, predicted, frames, vocab, mask_rate=rng.random()
        )
        n_steps = int(rng.integers(1, 12))
        step = int(rng.integers(0, n_steps))
        n0 = (masked_count(mask) + rng.integers(0, 5, batch)).clip(0, frames * predicted)
        settings = dict(
            temperature=float(rng.choice([0.0, 1.0, 0.7])),
            top_k=int(rng.choice([0, 5])),
            top_p=float(rng.choice([1.0, 0.8])),
            mask_temperature=float(rng.choice([0.0, 10.5])),
            seed=int(rng.integers(0, 2**31)),
            batch_coupled=bool(rng.random() < 0.5),
            n_masked_start=n0.astype(np.int64),
        )
        got = _kernels.mask_git_step(logits, codes, mask, step, n_steps, threads=2, **settings)
        want = reference.mask_git_step(logits, codes, mask, step, n_steps, **settings)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def spec_schedule(n0, n_steps, batch=1):
    """Masked count after each step for one item of `batch` identical items (docs/model.md §3.2 and
    §3.4-1), written from the spec: k = floor(float32(cos(float32((i+1)/S) * pi/2)) * N0) with N0
    over the whole batch, clamped to [1, m-1] except on the last step."""
    counts, m = [], n0
    for i in range(n_steps):
        r = np.float32((i + 1) / n_steps)
        gamma = np.float32(
            max(min(np.float32(math.cos(np.float32(r * np.float32(math.pi)) / 2)), 1.0), 1e-10)
        )
        k = int(np.floor(gamma * np.float32(n0 * batch)))
        if i != n_steps - 1:
            k = max(1, min(m - 1, k))
        counts.append(k)
        m = k
    return counts


def test_spec_schedule_reproduces_the_spec_worked_example():
    one = spec_schedule(2045, 36)
    assert one[:3] == [2043, 2037, 2027] and one[-3:] == [178, 89, 0]
    two = spec_schedule(2045, 36, batch=2)
    assert two[:24] == list(range(2044, 2020, -1))
    assert two[24:27] == [1888, 1728, 1565] and two[-3:] == [356, 178, 0]


def run_schedule(op, logits_rng, codes, mask, n_steps, **settings):
    """Runs all steps with fresh random logits each step; returns (codes, mask) after each."""
    batch, _, frames = codes.shape
    n0 = masked_count(mask).astype(np.int64)
    history = []
    for step in range(n_steps):
        logits = logits_rng.standard_normal((batch, frames, 4, 8)).astype(np.float32)
        codes, mask, model_input = op.run(
            logits, codes, mask, step, n_steps, n_masked_start=n0, **settings
        )
        np.testing.assert_array_equal(model_input, np.where(mask, 8, codes))
        history.append((codes, mask))
    return history


def test_masked_count_follows_vampnets_schedule_per_item(step_op):
    # 2045 of 2048 positions masked, 36 steps: the spec's worked example, for each item.
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, (2, 4, 512))
    mask = np.ones((2, 4, 512), bool)
    mask[:, 0, :3] = False
    history = run_schedule(step_op, rng, codes, mask, 36)
    counts = np.array([masked_count(m) for _, m in history])
    np.testing.assert_array_equal(counts[:, 0], spec_schedule(2045, 36))
    np.testing.assert_array_equal(counts[:, 1], spec_schedule(2045, 36))


def test_batch_coupled_attribute_reproduces_upstreams_schedule(coupled_step_op):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 8, (2, 4, 512))
    mask = np.ones((2, 4, 512), bool)
    mask[:, 0, :3] = False
    history = run_schedule(coupled_step_op, rng, codes, mask, 36)
    counts = np.array([masked_count(m) for _, m in history])
    np.testing.assert_array_equal(counts[:, 0], spec_schedule(2045, 36, batch=2))


def test_unmasked_positions_never_change_and_mask_only_shrinks(step_op):
    rng = np.random.default_rng(2)
    logits, codes, mask = random_step_problem(
        rng, batch=3, codebooks=14, predicted=10, frames=25, vocab=32, mask_rate=0.6
    )
    n0 = masked_count(mask).astype(np.int64)
    prompt = ~mask
    first_codes = codes.copy()
    for step in range(12):
        logits = rng.standard_normal(logits.shape).astype(np.float32)
        new_codes, new_mask, _ = step_op.run(
            logits, codes, mask, step, 12, n_masked_start=n0, seed=7
        )
        np.testing.assert_array_equal(new_codes[prompt], first_codes[prompt])
        unmasked_now = ~mask
        np.testing.assert_array_equal(new_codes[unmasked_now], codes[unmasked_now])
        assert not (new_mask & ~mask).any(), "a revealed position was masked again"
        assert not new_mask[:, :4].any(), "a conditioning codebook was masked"
        assert (masked_count(new_mask) < np.maximum(masked_count(mask), 2)).all() or step == 11
        codes, mask = new_codes, new_mask
    assert not mask.any(), "positions still masked after the last step"
    assert ((codes >= 0) & (codes < 32)).all()


def test_a_single_step_reveals_everything(step_op):
    rng = np.random.default_rng(3)
    logits, codes, mask = random_step_problem(rng, frames=11)
    codes_out, mask_out, model_input = step_op.run(logits, codes, mask, 0, 1)
    assert not mask_out.any()
    np.testing.assert_array_equal(model_input, codes_out)
    assert ((codes_out >= 0) & (codes_out < 32)).all()


def test_one_frame_works(step_op):
    rng = np.random.default_rng(4)
    logits, codes, mask = random_step_problem(rng, frames=1)
    mask[:] = True
    codes_out, mask_out, _ = step_op.run(logits, codes, mask, 0, 3)
    # 4 masked, k = floor(cos(pi/6) * 4) = 3 stay masked.
    assert masked_count(mask_out).tolist() == [3, 3]


def test_remasking_matches_upstreams_sort_and_strict_cut():
    """The kept set equals upstream's rule (sort ascending, cut at index k, mask conf < cut),
    computed here from the op's own token probabilities and noise streams."""
    rng = np.random.default_rng(5)
    logits, codes, mask = random_step_problem(rng, batch=2, frames=40, vocab=16)
    step, n_steps, seed, mask_temperature = 3, 10, 77, 10.5
    n0 = (masked_count(mask) + 9).astype(np.int64)
    codes_out, mask_out, _ = _kernels.mask_git_step(
        logits,
        codes,
        mask,
        step,
        n_steps,
        mask_temperature=mask_temperature,
        seed=seed,
        n_masked_start=n0,
    )
    for b in range(2):
        flat_mask = mask[b].T.reshape(-1)  # p = t * P + c
        positions = np.flatnonzero(flat_mask)
        rows = logits[b].reshape(-1, 16)
        row_ids = (np.uint64(b) << np.uint64(32)) | positions.astype(np.uint64)
        tokens = np.empty(positions.size, np.int64)
        logprob = np.empty(positions.size, np.float32)
        for j, (p, row_id) in enumerate(zip(positions, row_ids)):
            t, lp = _kernels.sample_tokens(
                rows[p][None], seed=seed, offset=step, first_row=int(row_id)
            )
            tokens[j], logprob[j] = t[0], lp[0]
        bits = reference.random_block(seed, row_ids, step)
        noise = reference.gumbel(reference.uniform53(bits[:, 2], bits[:, 3]))
        # Upstream: known positions get probability +inf, so log(+inf) = +inf confidence.
        logprob_full = np.full(flat_mask.size, np.inf, np.float32)
        logprob_full[positions] = logprob
        noise_full = np.zeros(flat_mask.size, np.float32)
        noise_full[positions] = noise
        r = np.float32((step + 1) / n_steps)
        temp = np.float32(mask_temperature) * (np.float32(1) - r)
        confidence = logprob_full + temp * noise_full
        k = reference.n_to_mask(step, n_steps, int(n0[b]), positions.size)
        cut = np.sort(confidence)[k]
        upstream_mask = confidence < cut
        np.testing.assert_array_equal(mask_out[b].T.reshape(-1), upstream_mask)
        np.testing.assert_array_equal(codes_out[b].T.reshape(-1)[positions], tokens)


def test_deterministic_mode_keeps_the_least_confident_masked():
    rng = np.random.default_rng(6)
    logits, codes, mask = random_step_problem(rng, batch=1, frames=50, vocab=20, mask_rate=1.0)
    codes_out, mask_out, _ = _kernels.mask_git_step(
        logits, codes, mask, 0, 8, temperature=0.0, mask_temperature=0.0
    )
    x = logits[0].astype(np.float64)
    confidence = x.max(-1) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) - x.max(-1)
    confidence = confidence.reshape(-1)  # p = t * P + c
    k = int(masked_count(mask_out)[0])
    assert k == reference.schedule_count(0, 8, 200)
    least = np.sort(np.argsort(confidence)[:k])
    np.testing.assert_array_equal(np.flatnonzero(mask_out[0].T.reshape(-1)), least)
    np.testing.assert_array_equal(
        codes_out[0].T.reshape(
            -1,
        ),
        x.argmax(-1).reshape(-1),
    )


def test_step_tokens_are_sample_tokens_streams(sample_op):
    """MaskGitStep's token at position p of item b is SampleTokens' row (b << 32) + p at
    offset = step: one generator contract for both ops."""
    rng = np.random.default_rng(7)
    logits, codes, mask = random_step_problem(rng, batch=2, frames=6, vocab=50, mask_rate=1.0)
    codes_out, _, _ = _kernels.mask_git_step(logits, codes, mask, 2, 5, temperature=0.9, seed=3)
    for b in range(2):
        tokens, _ = sample_op.run(
            logits[b].reshape(-1, 50), temperature=0.9, seed=3, offset=2, first_row=b << 32
        )
        np.testing.assert_array_equal(codes_out[b].T.reshape(-1), tokens)


def test_n_masked_start_defaults_to_the_current_count(step_op):
    rng = np.random.default_rng(8)
    logits, codes, mask = random_step_problem(rng)
    session = vampnet_onnx.create_session(op_model(ops.MASK_GIT_STEP, n_inputs=10))
    without = session.run(None, step_feed(logits, codes, mask, 0, 4, n_masked_start=False))
    with_count = step_op.run(logits, codes, mask, 0, 4)
    for a, b in zip(without, with_count):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_output_for_one_and_two_threads():
    rng = np.random.default_rng(9)
    logits, codes, mask = random_step_problem(rng, batch=3, frames=200, vocab=256)
    model = op_model(ops.MASK_GIT_STEP)
    outputs = [
        vampnet_onnx.create_session(model, intra_op_threads=threads).run(
            None, step_feed(logits, codes, mask, 1, 5, top_p=0.9, seed=9)
        )
        for threads in (1, 2)
    ]
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)


def test_batch_items_are_independent_of_their_neighbours(step_op):
    """Per-item schedule: item 1 of a batch equals item 1 run with a different item 0, since
    its streams depend on (seed, b, position, step) only."""
    rng = np.random.default_rng(10)
    logits, codes, mask = random_step_problem(rng, batch=2, frames=30)
    first = step_op.run(logits, codes, mask, 0, 6, seed=4)
    logits[0] += rng.standard_normal(logits[0].shape).astype(np.float32)
    mask[0] = False
    second = step_op.run(logits, codes, mask, 0, 6, seed=4)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[1], b[1])


#: Per-item keys: a seed and a stream index per item, repeats and the extremes included.
ITEM_SEEDS = np.array([5, -7, 5], np.int64)
ITEM_STREAMS = np.array([3, 2**32 - 1, 0], np.int64)


def test_per_item_keys_give_each_item_the_tokens_of_its_own_run(step_op):
    """seed [B] and batch_offset [B]: item b of one batched call equals a one-item call with
    seed[b] and batch_offset[b] (twin), through every step, for the op, the kernels module and
    the twin."""
    rng = np.random.default_rng(31)
    logits, codes, mask = random_step_problem(rng, batch=3, frames=14)
    keys = dict(seed=ITEM_SEEDS, batch_offset=ITEM_STREAMS)
    n0 = masked_count(mask).astype(np.int64)
    batched = {"op": (codes, mask), "kernels": (codes, mask), "twin": (codes, mask)}
    singles = [(codes[b : b + 1], mask[b : b + 1]) for b in range(3)]
    runs = {
        "op": lambda c, m, step: step_op.run(logits, c, m, step, 4, n_masked_start=n0, **keys),
        "kernels": lambda c, m, step: _kernels.mask_git_step(
            logits, c, m, step, 4, n_masked_start=n0, threads=2, **keys
        ),
        "twin": lambda c, m, step: reference.mask_git_step(
            logits, c, m, step, 4, n_masked_start=n0, **keys
        ),
    }
    for step in range(4):
        batched = {name: runs[name](*batched[name], step)[:2] for name in runs}
        for b in range(3):
            singles[b] = reference.mask_git_step(
                logits[b : b + 1],
                *singles[b],
                step,
                4,
                seed=int(ITEM_SEEDS[b]),
                batch_offset=int(ITEM_STREAMS[b]),
                n_masked_start=n0[b : b + 1],
            )[:2]
        for name, (got_codes, got_mask) in batched.items():
            for b in range(3):
                np.testing.assert_array_equal(got_codes[b : b + 1], singles[b][0], err_msg=name)
                np.testing.assert_array_equal(got_mask[b : b + 1], singles[b][1], err_msg=name)


def test_per_item_keys_equal_to_the_scalars_give_the_scalar_result(step_op):
    """seed [s, s, s] and batch_offset [o, o + 1, o + 2] are the scalars s and o spelled out."""
    logits, codes, mask = random_step_problem(np.random.default_rng(32), batch=3, frames=10)
    scalar = step_op.run(logits, codes, mask, 0, 3, seed=-9, batch_offset=40)
    spelled = step_op.run(logits, codes, mask, 0, 3, seed=[-9, -9, -9], batch_offset=[40, 41, 42])
    for a, b in zip(scalar, spelled):
        np.testing.assert_array_equal(a, b)


ITEM_KEY_ERRORS = [
    (
        dict(seed=[1, 2]),
        r"MaskGitStep: seed must have one element or shape \[B\] = \[3\], got shape \[2\]",
    ),
    (
        dict(batch_offset=[[0, 1, 2]]),
        r"MaskGitStep: batch_offset must have one element or shape \[B\] = \[3\], got shape "
        r"\[1, 3\]",
    ),
    (
        dict(batch_offset=[0, -1, 2]),
        r"MaskGitStep: batch_offset must be in \[0, 2\^32 - 1\], got -1 for item 1",
    ),
    (
        dict(batch_offset=[0, 2**32, 2]),
        r"MaskGitStep: batch_offset must be in \[0, 2\^32 - 1\], got 4294967296 for item 1",
    ),
]


@pytest.mark.parametrize("bad, message", ITEM_KEY_ERRORS)
def test_bad_per_item_keys_raise_house_format_errors(step_op, bad, message):
    logits, codes, mask = random_step_problem(np.random.default_rng(0), batch=3, frames=3)
    with pytest.raises(Exception, match=message):
        step_op.run(logits, codes, mask, 0, 4, **bad)
    keys = {name: np.asarray(value, np.int64) for name, value in bad.items()}
    twin_message = message.replace("MaskGitStep", "mask_git_step")
    with pytest.raises(ValueError, match=twin_message):
        _kernels.mask_git_step(logits, codes, mask, 0, 4, **keys)
    with pytest.raises(ValueError, match=twin_message):
        reference.mask_git_step(logits, codes, mask, 0, 4, **keys)


def test_keys_of_another_integer_type_are_refused_by_the_kernels_module_and_twin():
    logits, codes, mask = random_step_problem(np.random.default_rng(0), batch=2, frames=3)
    seed = np.array([1, 2], np.int32)
    message = "mask_git_step: seed must be a int64 array, got int32"
    for step in (_kernels.mask_git_step, reference.mask_git_step):
        with pytest.raises(ValueError, match=message):
            step(logits, codes, mask, 0, 4, seed=seed)


STEP_ERRORS = [
    (dict(step=5, n_steps=5), r"MaskGitStep: step must be in \[0, n_steps = 5\), got 5"),
    (dict(step=0, n_steps=0), "MaskGitStep: n_steps must be >= 1, got 0"),
    (dict(step=-1, n_steps=3), r"MaskGitStep: step must be in \[0, n_steps = 3\), got -1"),
    (dict(top_p=2.0), r"MaskGitStep: top_p must be in \(0, 1\], got 2"),
    (dict(top_k=-2), "MaskGitStep: top_k must be >= 0, got -2"),
    (dict(temperature=-1.0), "MaskGitStep: temperature must be >= 0, got -1"),
    (
        dict(mask_temperature=float("nan")),
        "MaskGitStep: mask_temperature must be finite and >= 0, got nan",
    ),
    (dict(mask_temperature=-1.0), "MaskGitStep: mask_temperature must be finite and >= 0, got -1"),
    (
        dict(batch_offset=-1),
        r"MaskGitStep: batch_offset must be in \[0, 2\^32 - B = 4294967295\], got -1",
    ),
    (
        dict(batch_offset=2**32),
        r"MaskGitStep: batch_offset must be in \[0, 2\^32 - B = 4294967295\], got 4294967296",
    ),
]


@pytest.mark.parametrize("bad, message", STEP_ERRORS)
def test_bad_settings_raise_house_format_errors(step_op, bad, message):
    logits, codes, mask = random_step_problem(np.random.default_rng(0), batch=1, frames=3)
    settings = dict(step=0, n_steps=4) | bad
    step, n_steps = settings.pop("step"), settings.pop("n_steps")
    with pytest.raises(Exception, match=message):
        step_op.run(logits, codes, mask, step, n_steps, **settings)
    with pytest.raises(ValueError, match=message.replace("MaskGitStep", "mask_git_step")):
        _kernels.mask_git_step(logits, codes, mask, step, n_steps, **settings)
    with pytest.raises(ValueError, match=message.replace("MaskGitStep", "mask_git_step")):
        reference.mask_git_step(logits, codes, mask, step, n_steps, **settings)


def _bad_inputs():
    rng = np.random.default_rng(0)
    logits, codes, mask = random_step_problem(
        rng, batch=2, codebooks=5, predicted=3, frames=4, vocab=8
    )
    cond_masked = mask.copy()
    cond_masked[1, 1, 2] = True
    bad_codes = codes.copy()
    bad_codes[0, 3, 1] = 8
    mask_all_false = np.zeros_like(mask)
    return [
        (
            (logits, codes, cond_masked, None),
            r"mask must be false in the 2 conditioning codebooks, got true at \[1, 1, 2\]",
        ),
        (
            (logits, bad_codes, mask_all_false, None),
            r"codes must be in \[0, 8\) where mask is false, got 8 at \[0, 3, 1\]",
        ),
        (
            (logits[:, :3], codes, mask, None),
            r"logits must have shape \[B, T, P, V\] with B, T of codes \[2, 5, 4\], "
            r"got \[2, 3, 3, 8\]",
        ),
        ((logits[0], codes, mask, None), r"logits must have rank 4 \[B, T, P, V\], got shape"),
        (
            (logits, codes, mask[:, :, :3], None),
            r"mask must have the shape of codes \[2, 5, 4\], got \[2, 5, 3\]",
        ),
        (
            (np.zeros((2, 4, 6, 8), np.float32), codes, mask, None),
            r"logits must have P in \[1, C = 5\] predicted codebooks, got P = 6",
        ),
        (
            (logits, codes, mask, np.array([3], np.int64)),
            r"n_masked_start must have shape \[B\] = \[2\], got \[1\]",
        ),
        (
            (logits, codes, mask, np.array([3, 99], np.int64)),
            r"n_masked_start must be in \[0, T \* P = 12\], got 99 for item 1",
        ),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())))
def test_bad_inputs_raise_house_format_errors(step_op, case):
    (logits, codes, mask, n0), message = _bad_inputs()[case]
    with pytest.raises(Exception, match=f"MaskGitStep: {message}"):
        step_op.run(logits, codes, mask, 0, 4, n_masked_start=n0)
    with pytest.raises(ValueError, match=f"mask_git_step: {message}"):
        _kernels.mask_git_step(logits, codes, mask, 0, 4, n_masked_start=n0)
    with pytest.raises(ValueError, match=f"mask_git_step: {message}"):
        reference.mask_git_step(logits, codes, mask, 0, 4, n_masked_start=n0)


def test_wrong_dtypes_raise_house_format_errors():
    rng = np.random.default_rng(0)
    logits, codes, mask = random_step_problem(rng, batch=1, frames=3)
    with pytest.raises(ValueError, match="mask_git_step: mask must be a bool array, got int64"):
        _kernels.mask_git_step(logits, codes, mask.astype(np.int64), 0, 2)
    with pytest.raises(ValueError, match="mask_git_step: codes must be a int64 array, got int32"):
        _kernels.mask_git_step(logits, codes.astype(np.int32), mask, 0, 2)
    session = vampnet_onnx.create_session(
        op_model(ops.MASK_GIT_STEP, input_types={"mask": 7})
    )  # int64 mask
    with pytest.raises(Exception, match="MaskGitStep: mask must be a bool tensor, got int64"):
        session.run(
            None,
            step_feed(
                logits, codes, mask.astype(np.int64), 0, 2, n_masked_start=np.array([3], np.int64)
            ),
        )


def test_nan_logits_at_a_masked_position_raise(step_op):
    logits, codes, mask = random_step_problem(np.random.default_rng(0), batch=1, frames=3)
    mask[:] = True
    logits[0, 1, 2, 5] = np.nan
    with pytest.raises(
        Exception, match="MaskGitStep: logits must be finite or -inf, got nan at row 6, index 5"
    ):
        step_op.run(logits, codes, mask, 0, 2)


def test_empty_batch_gives_empty_outputs(step_op):
    logits = np.zeros((0, 5, 4, 8), np.float32)
    codes = np.zeros((0, 4, 5), np.int64)
    outputs = step_op.run(logits, codes, np.zeros((0, 4, 5), bool), 0, 3)
    assert [o.shape for o in outputs] == [(0, 4, 5)] * 3
