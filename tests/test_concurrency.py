"""Concurrency and determinism: the ops give the serial results when one session is run from
many threads, when several sessions run (and are created) at once, for any intra-op thread
count, and when a problem is split over calls. The graph is test_loop.py's Loop over both ops."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import vampnet_onnx
from conftest import random_step_problem
from test_loop import loop_feed, loop_model
from vampnet_onnx import _kernels, reference

SETTINGS = dict(temperature=0.9, top_k=20, top_p=0.95, mask_temperature=10.5)
N_PROBLEMS = 16


@pytest.fixture(scope="module")
def model():
    return loop_model()


@pytest.fixture(scope="module")
def feeds():
    """Different problems and seeds, big enough that each op splits its rows into many tasks."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(N_PROBLEMS):
        logits, codes, mask = random_step_problem(rng, batch=2, frames=40, vocab=64)
        out.append(loop_feed(logits, codes, mask, 6, dict(SETTINGS, seed=i)))
    return out


@pytest.fixture(scope="module")
def serial(model, feeds):
    """The reference: every problem run one after the other on one single-threaded session."""
    session = vampnet_onnx.create_session(model, intra_op_threads=1)
    return [session.run(None, feed) for feed in feeds]


def assert_same(got, want):
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_eight_threads_on_one_session_give_the_serial_results(model, feeds, serial):
    session = vampnet_onnx.create_session(model, intra_op_threads=2)
    order = [i % N_PROBLEMS for i in range(4 * N_PROBLEMS)]  # each problem 4 times, overlapping
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: session.run(None, feeds[i]), order))
    for i, got in zip(order, results):
        assert_same(got, serial[i])


def test_four_sessions_created_and_run_at_once_give_the_serial_results(model, feeds, serial):
    # Each thread registers the op library into its own session options and runs every problem:
    # registration and the ops share no mutable state.
    def run_all(threads):
        session = vampnet_onnx.create_session(model, intra_op_threads=threads)
        return [session.run(None, feed) for feed in feeds]

    with ThreadPoolExecutor(max_workers=4) as pool:
        per_session = list(pool.map(run_all, [1, 2, 3, 4]))
    for results in per_session:
        for got, want in zip(results, serial):
            assert_same(got, want)


@pytest.mark.parametrize("threads", [2, 4])
def test_intra_op_thread_count_does_not_change_the_tokens(model, feeds, serial, threads):
    session = vampnet_onnx.create_session(model, intra_op_threads=threads)
    for feed, want in zip(feeds, serial):
        assert_same(session.run(None, feed), want)


@pytest.mark.parametrize("threads", [2, 4, 8])
def test_kernels_module_thread_count_does_not_change_the_results(threads):
    rng = np.random.default_rng(1)
    logits, codes, mask = random_step_problem(rng, batch=3, frames=50, vocab=128)
    kwargs = dict(SETTINGS, seed=5)
    step_one = _kernels.mask_git_step(logits, codes, mask, 1, 8, threads=1, **kwargs)
    step_many = _kernels.mask_git_step(logits, codes, mask, 1, 8, threads=threads, **kwargs)
    assert_same(step_many, step_one)
    sample_kwargs = dict(temperature=0.9, top_k=20, top_p=0.95, seed=5, offset=3)
    assert_same(
        _kernels.sample_tokens(logits, threads=threads, **sample_kwargs),
        _kernels.sample_tokens(logits, threads=1, **sample_kwargs),
    )


def test_sample_tokens_rows_split_over_concurrent_calls_equal_one_call(sample_op):
    logits = np.random.default_rng(2).standard_normal((1000, 256)).astype(np.float32)
    kwargs = dict(temperature=0.8, top_p=0.9, seed=12, offset=7)
    whole = sample_op.run(logits, **kwargs)
    bounds = [0, 1, 130, 500, 501, 1000]
    parts = list(zip(bounds[:-1], bounds[1:]))
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        results = list(
            pool.map(
                lambda ab: sample_op.run(logits[ab[0] : ab[1]], first_row=ab[0], **kwargs), parts
            )
        )
    for k in range(2):
        np.testing.assert_array_equal(np.concatenate([r[k] for r in results]), whole[k])


def test_mask_git_step_item_depends_only_on_its_own_inputs_and_index(step_op):
    """Per-item schedule (docs/ops.md): item b's outputs are a function of its own logits, codes,
    mask and n_masked_start, its index b (its random stream is (seed, (b << 32) + p, step)), the
    seed and the settings. So item b is the same in a batch cut after it and in one whose other
    items differ."""
    rng = np.random.default_rng(3)
    logits, codes, mask = random_step_problem(rng, batch=4, frames=30, vocab=32)
    n0 = mask.sum(axis=(1, 2)).astype(np.int64) + 3
    kwargs = dict(SETTINGS, seed=21)
    full = step_op.run(logits, codes, mask, 1, 6, n_masked_start=n0, **kwargs)
    for b in range(4):
        prefix = step_op.run(
            logits[: b + 1],
            codes[: b + 1],
            mask[: b + 1],
            1,
            6,
            n_masked_start=n0[: b + 1],
            **kwargs,
        )
        other_logits, other_codes, other_mask = random_step_problem(
            rng, batch=4, frames=30, vocab=32
        )
        other_n0 = other_mask.sum(axis=(1, 2)).astype(np.int64)
        other_logits[b], other_codes[b], other_mask[b], other_n0[b] = (
            logits[b],
            codes[b],
            mask[b],
            n0[b],
        )
        neighbours = step_op.run(
            other_logits, other_codes, other_mask, 1, 6, n_masked_start=other_n0, **kwargs
        )
        for whole, cut, changed in zip(full, prefix, neighbours):
            np.testing.assert_array_equal(cut[b], whole[b])
            np.testing.assert_array_equal(changed[b], whole[b])


def test_mask_git_step_batch_cut_anywhere_with_batch_offset_equals_one_call(step_op):
    """A batch cut into calls that each pass the index of their first item as batch_offset gives
    the one-call result (ORT op, kernels module and twin); without it, an item run at another
    index draws other numbers."""
    rng = np.random.default_rng(4)
    logits, codes, mask = random_step_problem(rng, batch=5, frames=24, vocab=32)
    n0 = mask.sum(axis=(1, 2)).astype(np.int64) + 2
    kwargs = dict(SETTINGS, seed=8)
    whole = step_op.run(logits, codes, mask, 1, 6, n_masked_start=n0, **kwargs)
    for cuts in ([0, 2, 5], [0, 1, 2, 3, 4, 5], [0, 4, 5]):
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            part = (logits[lo:hi], codes[lo:hi], mask[lo:hi], 1, 6)
            calls = (
                step_op.run(*part, n_masked_start=n0[lo:hi], batch_offset=lo, **kwargs),
                _kernels.mask_git_step(
                    *part, n_masked_start=n0[lo:hi], batch_offset=lo, threads=2, **kwargs
                ),
                reference.mask_git_step(*part, n_masked_start=n0[lo:hi], batch_offset=lo, **kwargs),
            )
            for outputs in calls:
                for got, want in zip(outputs, whole):
                    np.testing.assert_array_equal(got, want[lo:hi])
    moved = step_op.run(
        *(a[3:4] for a in (logits, codes, mask)), 1, 6, n_masked_start=n0[3:4], **kwargs
    )
    assert not np.array_equal(moved[0], whole[0][3:4])
