"""The ops' standard-op bodies (vampnet_onnx.ops_functions): a model holding an op node and the
op's function runs in a plain onnxruntime session (no library: the body is expanded) and in a
session with the library (our kernel), and the two give the same bits. The kernel, and the
numpy twin where it is the simpler reference, are the reference values."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import vampnet_onnx
from conftest import ONNX_IR_VERSION, ONNX_OPSET, sample_feed
from test_rng import PHILOX_KAT
from vampnet_onnx import _kernels, audio, configs, contracts, ops, ops_functions, reference

SCALAR: list = []


def node_model(
    schema: ops.OpSchema,
    shapes: dict[str, list],
    input_types: dict[str, int] | None = None,
    **attributes,
) -> onnx.ModelProto:
    """A model of one node of `schema` with every input (optional ones included) and the op's
    function; shapes: each port's shape (symbolic dims as names; absent: a scalar)."""
    input_types = input_types or {}

    def value_info(port: ops.Port, element_type: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(port.name, element_type, shapes.get(port.name, SCALAR))

    node = schema.make_node(schema.input_names, schema.output_names, **attributes)
    graph = helper.make_graph(
        [node],
        schema.name,
        [value_info(p, input_types.get(p.name, p.types[0])) for p in schema.inputs],
        [value_info(p, p.types[0]) for p in schema.outputs],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), ops.opset_import()],
        ir_version=ONNX_IR_VERSION,
        functions=[ops_functions.function(schema.name)],
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def body_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A plain session, without the library: onnxruntime expands the op nodes into the bodies."""
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def kernel_session(model: onnx.ModelProto) -> ort.InferenceSession:
    return vampnet_onnx.create_session(model, python_ops=False)


def assert_same_bits(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    """Equal bits, except that a NaN may differ in its sign bit (nothing reads it)."""
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype.kind == "f":
            nan = np.isnan(a)
            np.testing.assert_array_equal(nan, np.isnan(b))
            a, b = a[~nan], b[~nan]
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


# --- Philox4x32-10 ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=list(ops_functions.VARIANTS))
def philox(request):
    """feed -> the words, int64 [N, 4], of the bodies' Philox of each variant, in onnxruntime."""
    model = ops_functions.random_block_model(request.param)
    onnx.checker.check_model(model, full_check=True)
    session = body_session(model)
    return lambda feed: ops_functions.limb_words(session.run(None, feed)[0]).astype(np.int64)


def as_int64(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The int64 whose 64-bit two's complement has these 32-bit words."""
    words = np.asarray(low, np.uint64) | (np.asarray(high, np.uint64) << np.uint64(32))
    return words.view(np.int64)


@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_body_philox_matches_known_answers(philox, counter, key, expected):
    feed = {
        "seed": as_int64([key[0]], [key[1]]),
        "row": as_int64([counter[0]], [counter[1]]),
        "offset": as_int64([counter[2]], [counter[3]]),
    }
    words = philox(feed)
    assert words.tolist() == [expected]


def test_body_philox_matches_the_numpy_twin_on_100000_draws(philox):
    rng = np.random.default_rng(21)
    n = 100_000
    seed, row, offset = (rng.integers(-(2**63), 2**63, n, dtype=np.int64) for _ in range(3))
    # The keys and streams the ops see at their edges: negative seeds, 2^63 - 1, rows past 2^32.
    seed[:6] = [0, -1, -(2**63), 2**63 - 1, -7, 12345]
    row[:6] = [0, 2**32, 2**32 - 1, 2**63 - 1, 5 << 32, 1]
    offset[:6] = [0, 1, 2**32, -1, 35, 2**40]
    words = philox({"seed": seed, "row": row, "offset": offset})
    seed_words, row_words, offset_words = (v.view(np.uint64) for v in (seed, row, offset))
    low, high = np.uint64(0xFFFFFFFF), np.uint64(32)
    counter = np.stack(
        [row_words & low, row_words >> high, offset_words & low, offset_words >> high], axis=-1
    )
    want = reference.philox4x32_10(counter, (seed_words & low, seed_words >> high))
    np.testing.assert_array_equal(words, want.astype(np.int64))


def test_body_philox_matches_the_kernel_on_edge_keys_and_streams(philox):
    seeds = [0, -1, -(2**63), 2**63 - 1, -7, 12345]
    rows = [0, 2**32, 2**32 - 1, 2**63 - 1, -(2**32), 1]
    offsets = [0, 1, 2**32, -1, 35, 2**40]
    cases = [(s, r, o) for s in seeds for r in rows for o in offsets]
    seed, row, offset = (np.array(column, np.int64) for column in zip(*cases, strict=True))
    words = philox({"seed": seed, "row": row, "offset": offset})
    mask = 2**32 - 1
    for (s, r, o), got in zip(cases, words.tolist(), strict=True):
        counter = [r & mask, (r % 2**64) >> 32, o & mask, (o % 2**64) >> 32]
        key = [s & mask, (s % 2**64) >> 32]
        assert got == list(_kernels.philox4x32_10(counter, key))


# --- SampleTokens -------------------------------------------------------------------------------


def sampling_model(logits_rank: int = 2, logits_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    dims = [f"d{i}" for i in range(logits_rank - 1)]
    shapes = {"logits": [*dims, "V"], "tokens": dims, "logprob": dims}
    return node_model(ops.SAMPLE_TOKENS, shapes, {"logits": logits_type})


def helper_session(build, rank: int = 1) -> ort.InferenceSession:
    """A plain session on one exact-variant helper of the bodies: float64 x -> build(body, x)."""
    body = ops_functions._Body()
    body.op("Identity", build(body, "x"), output="y")
    shape = [f"d{i}" for i in range(rank)]
    graph = helper.make_graph(
        body.nodes,
        "helper",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, shape)],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, shape)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_body_log_gives_det_logs_bits_over_its_whole_domain():
    # Every power of two in [2^-255, 2^255), its neighbours (where frexp's exponent changes and
    # the runtime's Log, which estimates it, is least sure), random values over the range, 0.
    powers = np.ldexp(1.0, np.arange(-255, 255))
    x = np.concatenate(
        [
            powers,
            np.nextafter(powers, 0.0),
            np.nextafter(powers, np.inf),
            np.ldexp(np.random.default_rng(3).random(20_000) + 0.5, np.arange(20_000) % 509 - 254),
            [0.0, 1.0, 0.5, 1.5e-45, 1e-20, 46.0, 2.0**-53],
        ]
    )
    x = x[(x == 0) | ((x >= 2.0**-255) & (x < 2.0**255))]
    got = helper_session(ops_functions._log).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got.view(np.uint64), reference.det_log(x).view(np.uint64))


def test_body_exp_gives_det_exps_bits_over_its_whole_domain():
    # [-700, 0]: both ends, every k = round(x / ln 2) and its rounding boundaries, random values.
    k = np.arange(-1010, 1)
    x = np.concatenate(
        [
            k * np.log(2.0),
            (k + 0.5) * np.log(2.0),
            np.nextafter((k + 0.5) * np.log(2.0), -np.inf),
            -700.0 * np.random.default_rng(4).random(20_000),
            [-700.0, 0.0, -0.0, -1e-300],
        ]
    )
    x = x[(x >= -700.0) & (x <= 0.0)].reshape(1, -1)
    got = helper_session(ops_functions._exp_in_range, rank=2).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got.view(np.uint64), reference.det_exp(x).view(np.uint64))


def draw_session() -> ort.InferenceSession:
    """A plain session on the exact variant's `_draw_columns` with its certificate, on rows
    laid out as columns: (x float32 [V, N], weight float64 [V, N], u [1, N], temperature) ->
    (tokens, p, certified), each [1, N]."""
    body = ops_functions._Body()
    outputs = ops_functions._draw_columns(body, "x", "weight", "temperature", "u", certify=True)
    for value, name in zip(outputs, ("tokens", "p", "certified"), strict=True):
        body.op("Identity", value, output=name)
    columns = ["V", "N"]
    graph = helper.make_graph(
        body.nodes,
        "draw",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, columns),
            helper.make_tensor_value_info("weight", TensorProto.DOUBLE, columns),
            helper.make_tensor_value_info("u", TensorProto.DOUBLE, [1, "N"]),
            helper.make_tensor_value_info("temperature", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "N"]),
            helper.make_tensor_value_info("p", TensorProto.DOUBLE, [1, "N"]),
            helper.make_tensor_value_info("certified", TensorProto.BOOL, [1, "N"]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def numpy_draw(weight: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's draw from float64 weights [N, V] (positive) with uniforms [N, 1]: (tokens,
    p rounded to float32)."""
    running = np.cumsum(weight, axis=1)
    above = running > u * running[:, -1:]
    last = weight.shape[1] - 1 - np.argmax((weight > 0)[:, ::-1], axis=1)
    tokens = np.where(above.any(axis=1), np.argmax(above, axis=1), last)
    p = weight[np.arange(len(weight)), tokens] / running[:, -1]
    return tokens, p.astype(np.float32)


def test_the_fast_draws_certificate_holds_for_any_weights_within_its_bound():
    """The exact variant draws from the runtime's Exp and keeps a row's draw only where it is
    certified to be det_exp's (`ops_functions._CERTAIN`). Weights perturbed by up to 1e-14
    relatively (the bound the certificate assumes; onnxruntime's Exp is within 2 units in the
    last place, 4.4e-16) must give the unperturbed weights' token and float32 p in every
    certified row. Rows whose u S lies within a few units in the last place of a running sum,
    or whose p lies next to a float32 rounding boundary, are drawn to be uncertified, and some
    of them do draw another token or p from the perturbed weights: the certificate is what
    keeps those rows out."""
    rng = np.random.default_rng(21)
    n, vocab = 6000, 24
    weight = rng.random((n, vocab)) ** 4 + 1e-3
    running = np.cumsum(weight, axis=1)
    u = rng.random((n, 1))
    # Rows 0-1999: u S on a running sum, give or take a few units in the last place.
    cut = rng.integers(0, vocab - 1, 2000)
    ratio = running[np.arange(2000), cut] / running[:2000, -1]
    u[:2000, 0] = ratio * (1 + rng.integers(-4, 5, 2000) * 2.0**-53)
    # Rows 2000-3999: the sampled token's p on a float32 rounding boundary, for the same u.
    tokens, _ = numpy_draw(weight, u)
    rows = np.arange(2000, 4000)
    p32 = (weight[rows, tokens[rows]] / running[rows, -1]).astype(np.float32)
    boundary = (p32.astype(np.float64) + np.nextafter(p32, np.float32(2)).astype(np.float64)) / 2
    rest = running[rows, -1] - weight[rows, tokens[rows]]
    weight[rows, tokens[rows]] = boundary * rest / (1 - boundary)  # then w / S is the boundary
    perturbed = weight * (1 + rng.uniform(-1e-14, 1e-14, weight.shape))

    x = np.zeros((vocab, n), np.float32)
    got_tokens, got_p, certified = draw_session().run(
        None,
        {
            "x": x,
            "weight": perturbed.T.copy(),
            "u": u.T.copy(),
            "temperature": np.array(1.0, np.float32),
        },
    )
    want_tokens, want_p32 = numpy_draw(weight, u)
    certified = certified[0]
    differs = (got_tokens[0] != want_tokens) | (got_p[0].astype(np.float32) != want_p32)
    assert not (differs & certified).any()
    # The crafted rows: uncertified, and some of them do differ (the test can fail).
    assert differs[:2000].sum() >= 20 and differs[2000:4000].sum() >= 20
    assert certified[:4000].mean() < 0.1
    # Random rows are nearly all certified: the fast path is the one that runs.
    assert certified[4000:].mean() > 0.999


@pytest.mark.parametrize("certain", [0.0, 1.0])
def test_body_sample_tokens_gives_the_kernels_bits_on_either_path(monkeypatch, certain):
    """A margin of 1 certifies nothing (every chunk is drawn again from det_exp); one of 0
    certifies all but exact ties (the runtime's Exp alone)."""
    monkeypatch.setattr(ops_functions, "_CERTAIN", certain)
    model = sampling_model()
    body, kernel = body_session(model), kernel_session(model)
    logits = random_logits(np.random.default_rng(5), (700, 1024))
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.8, 0, 0.9), (0.0, 0, 1.0)]:
        feed = sample_feed(logits, temperature, top_k, top_p, seed=2, offset=0, first_row=0)
        assert_same_bits(body.run(None, feed), kernel.run(None, feed))


@pytest.fixture(scope="module")
def sampling_sessions():
    """(body, kernel) sessions of SampleTokens on float32 logits [N, V]."""
    model = sampling_model()
    return body_session(model), kernel_session(model)


def random_logits(rng: np.random.Generator, shape, ties: bool = False, minus_inf: bool = False):
    logits = (rng.standard_normal(shape) * rng.uniform(0.3, 6.0)).astype(np.float32)
    if ties:
        logits = np.round(logits)
    if minus_inf:
        logits[rng.random(shape) < 0.3] = -np.inf
        logits[..., 0] = 0.0  # a finite value in every row
    return logits


SETTINGS = [
    # temperature, top_k, top_p
    (1.0, 0, 1.0),
    (0.8, 0, 1.0),
    (1.3, 0, 0.9),
    (1.0, 40, 1.0),
    (0.0, 0, 1.0),
    (0.0, 7, 0.5),
    (0.5, 40, 0.95),
    (2.0, 1, 1.0),
    (1e-3, 0, 1e-6),
    (1.0, 0, 0.3),
    (25.0, 300, 1.0),
    (float("inf"), 0, 1.0),
    (1e30, 5, 0.8),
]
SEEDS = [0, -7, 2**63 - 1, -(2**63), 123456789]


@pytest.mark.parametrize("temperature, top_k, top_p", SETTINGS)
@pytest.mark.parametrize("seed", SEEDS)
def test_body_sample_tokens_gives_the_kernels_bits(
    sampling_sessions, temperature, top_k, top_p, seed
):
    rng = np.random.default_rng([abs(seed) % 2**32, top_k, int(top_p * 100)])
    body, kernel = sampling_sessions
    for ties, minus_inf in [(False, False), (True, False), (False, True)]:
        logits = random_logits(rng, (24, 257), ties=ties, minus_inf=minus_inf)
        feed = sample_feed(
            logits,
            temperature,
            top_k,
            top_p,
            seed,
            offset=int(rng.integers(0, 2**40)),
            first_row=int(rng.integers(0, 2**40)),
        )
        assert_same_bits(body.run(None, feed), kernel.run(None, feed))


def test_body_sample_tokens_gives_the_kernels_bits_on_vampnets_vocabulary(sampling_sessions):
    rng = np.random.default_rng(1024)
    body, kernel = sampling_sessions
    logits = random_logits(rng, (64, 1024))
    for temperature, top_k, top_p in [(1.0, 0, 0.9), (0.8, 0, 1.0), (1.0, 40, 1.0)]:
        feed = sample_feed(logits, temperature, top_k, top_p, seed=5, offset=3, first_row=7)
        assert_same_bits(body.run(None, feed), kernel.run(None, feed))


@pytest.mark.parametrize("chunk_rows", [1, 5, 23])
def test_body_sample_tokens_gives_the_kernels_bits_in_any_chunking_of_the_rows(
    monkeypatch, sampling_sessions, chunk_rows
):
    """The exact body samples its rows in chunks of at most `_CHUNK_ROWS` (padded to equal
    sizes): chunks of 1, of 5 (24 rows: 5 chunks of 5, one row of padding) and 23 (2 of 12)."""
    monkeypatch.setattr(ops_functions, "_CHUNK_ROWS", chunk_rows)
    body = body_session(sampling_model())
    _, kernel = sampling_sessions
    rng = np.random.default_rng(chunk_rows)
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.0, 0, 1.0), (1.3, 7, 0.8)]:
        logits = random_logits(rng, (24, 257), minus_inf=True)
        feed = sample_feed(logits, temperature, top_k, top_p, seed=-3, offset=9, first_row=2**33)
        assert_same_bits(body.run(None, feed), kernel.run(None, feed))


def test_body_sample_tokens_gives_the_kernels_bits_over_several_chunks(sampling_sessions):
    """1100 rows: three chunks of 367 (the last with a row of padding) at the default size."""
    assert ops_functions._CHUNK_ROWS < 1100
    rng = np.random.default_rng(1100)
    body, kernel = sampling_sessions
    logits = random_logits(rng, (1100, 64))
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 10, 0.9)]:
        feed = sample_feed(logits, temperature, top_k, top_p, seed=11, offset=5, first_row=1)
        assert_same_bits(body.run(None, feed), kernel.run(None, feed))


@pytest.mark.parametrize("temperature", [1.0, 0.0, 0.8, 0.01])
def test_body_sample_tokens_gives_the_kernels_bits_where_weights_underflow(
    monkeypatch, sampling_sessions, temperature
):
    """The exact body computes a chunk's weights at once when no filter is on and every row's
    smallest scaled difference (min - max) / T is >= -700, else through the general case
    (tokens below -700 weigh 0). Chunks of 4 rows mix both, in one run: rows whose differences
    reach just above, exactly at and just below -700 T, rows reaching -5000 T, and ordinary
    ones. (A weight below exp(-700) changes no sum, so the tokens cannot tell which case ran:
    the filters' tests are what catch a filtered chunk taken for the fast case.)"""
    monkeypatch.setattr(ops_functions, "_CHUNK_ROWS", 4)
    body = body_session(sampling_model())
    _, kernel = sampling_sessions
    rng = np.random.default_rng(700)
    logits = random_logits(rng, (40, 257))
    scale = temperature if temperature not in (0.0, 1.0) else 1.0
    for row, low in enumerate([-699.9, -700.0, -700.1, -5000.0]):
        rows = slice(row * 8, row * 8 + 4)  # chunks 0, 2, 4, 6; 1, 3, 5, 7, 8, 9 ordinary
        logits[rows, 0] = 0.0
        logits[rows, 1:] = np.minimum(logits[rows, 1:], 0.0)
        logits[rows, 5] = np.float32(low * scale)
    feed = sample_feed(logits, temperature, 0, 1.0, seed=70, offset=1, first_row=0)
    assert_same_bits(body.run(None, feed), kernel.run(None, feed))


def test_body_sample_tokens_keeps_every_tie_at_the_top_k_threshold(sampling_sessions):
    # Eight tokens tie at the 3rd largest logit: top_k = 3 keeps all nine, so the draws spread
    # over them, on the kernel's and the body's side alike.
    logits = np.full((4000, 12), -5.0, np.float32)
    logits[:, 0] = 1.0
    logits[:, 3:11] = 0.0
    feed = sample_feed(logits, temperature=1.0, top_k=3, seed=11)
    body, kernel = sampling_sessions
    tokens, logprob = body.run(None, feed)
    assert_same_bits([tokens, logprob], kernel.run(None, feed))
    assert set(tokens.tolist()) == {0, *range(3, 11)}


def test_body_sample_tokens_takes_the_lowest_index_of_tied_maxima_at_temperature_0(
    sampling_sessions,
):
    logits = np.zeros((3, 9), np.float32)
    logits[:, [2, 5, 7]] = 4.0
    feed = sample_feed(logits, temperature=0.0, seed=3)
    body, kernel = sampling_sessions
    tokens, logprob = body.run(None, feed)
    assert tokens.tolist() == [2, 2, 2]
    assert_same_bits([tokens, logprob], kernel.run(None, feed))


def test_body_sample_tokens_reads_float16_logits_and_any_rank():
    rng = np.random.default_rng(16)
    model = sampling_model(logits_rank=4, logits_type=TensorProto.FLOAT16)
    logits = random_logits(rng, (2, 3, 5, 300), ties=True).astype(np.float16)
    feed = sample_feed(logits, temperature=0.9, top_k=20, top_p=0.9, seed=-3, offset=2)
    got = body_session(model).run(None, feed)
    assert got[0].shape == (2, 3, 5)
    assert_same_bits(got, kernel_session(model).run(None, feed))


def test_body_sample_tokens_gives_empty_outputs_for_no_rows(sampling_sessions):
    body, _ = sampling_sessions
    tokens, logprob = body.run(None, sample_feed(np.zeros((0, 7), np.float32)))
    assert tokens.shape == (0,) and tokens.dtype == np.int64
    assert logprob.shape == (0,) and logprob.dtype == np.float32


def test_body_sample_tokens_gives_token_0_and_logprob_0_for_one_token(sampling_sessions):
    body, _ = sampling_sessions
    tokens, logprob = body.run(None, sample_feed(np.ones((3, 1), np.float32), seed=9))
    assert tokens.tolist() == [0, 0, 0] and logprob.tolist() == [0.0, 0.0, 0.0]


def test_body_sample_tokens_matches_the_numpy_twin_with_first_row_past_2_32(sampling_sessions):
    rng = np.random.default_rng(32)
    logits = random_logits(rng, (10, 100))
    kwargs = dict(temperature=1.1, top_k=0, top_p=0.97, seed=-99, offset=6, first_row=5 << 32)
    body, _ = sampling_sessions
    tokens, logprob = body.run(None, sample_feed(logits, **kwargs))
    want_tokens, want_logprob = reference.sample_tokens(logits, **kwargs)
    np.testing.assert_array_equal(tokens, want_tokens)
    np.testing.assert_array_equal(logprob, want_logprob)


def test_kernel_session_runs_the_kernel_not_the_body(sampling_sessions):
    # Only the kernel can print the bad value: the body's failing node has a fixed name.
    _, kernel = sampling_sessions
    with pytest.raises(Exception, match=r"SampleTokens: top_p must be in \(0, 1\], got 1\.5"):
        kernel.run(None, sample_feed(np.zeros((2, 3), np.float32), top_p=1.5))


BAD_SAMPLING = [
    (dict(top_p=1.5), "SampleTokens: top_p must be in (0, 1]"),
    (dict(top_p=0.0), "SampleTokens: top_p must be in (0, 1]"),
    (dict(temperature=-1.0), "SampleTokens: temperature must be >= 0"),
    (dict(temperature=float("nan")), "SampleTokens: temperature must be >= 0"),
    (dict(top_k=-1), "SampleTokens: top_k must be >= 0"),
    (dict(first_row=-1), "SampleTokens: first_row must be >= 0"),
    (dict(seed=np.array([1, 2])), "SampleTokens: seed must be a scalar (one element)"),
]


@pytest.mark.parametrize("settings, message", BAD_SAMPLING)
def test_body_sample_tokens_fails_on_bad_settings_in_a_node_named_for_the_check(
    sampling_sessions, settings, message
):
    body, _ = sampling_sessions
    feed = sample_feed(np.zeros((2, 3), np.float32), **settings)
    with pytest.raises(Exception, match=re.escape(message)):
        body.run(None, feed)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.nan, "SampleTokens: logits must be finite or -inf"),
        (np.inf, "SampleTokens: logits must be finite or -inf"),
        (-np.inf, "SampleTokens: logits must have a finite value in every row"),
    ],
)
def test_body_sample_tokens_fails_on_bad_logits(sampling_sessions, bad, message):
    logits = np.zeros((3, 4), np.float32)
    logits[1] = bad
    body, _ = sampling_sessions
    with pytest.raises(Exception, match=re.escape(message)):
        body.run(None, sample_feed(logits))


# --- CheckRange ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def check_range_sessions():
    model = node_model(ops.CHECK_RANGE, {}, name="dropout", where="Vamp", min=0.0, max=1e6)
    return body_session(model), kernel_session(model)


@pytest.mark.parametrize("value", [0.0, 0.5, 1e6, -0.0])
def test_body_check_range_passes_values_in_range(check_range_sessions, value):
    for session in check_range_sessions:
        [ok] = session.run(None, {"x": np.array(value)})
        assert ok.shape == () and bool(ok) is True


@pytest.mark.parametrize("value", [-1.0, 1_000_001.0, float("nan"), float("inf"), -float("inf")])
def test_body_check_range_fails_values_out_of_range(check_range_sessions, value):
    body, kernel = check_range_sessions
    with pytest.raises(Exception, match=re.escape("CheckRange: x must be in [min, max]")):
        body.run(None, {"x": np.array(value)})
    with pytest.raises(Exception, match="Vamp: dropout must be in"):
        kernel.run(None, {"x": np.array(value)})


# --- Snake --------------------------------------------------------------------------------------


def test_body_snake_gives_the_kernels_bits():
    # |alpha x| up to ~1e5: past 8192 both run the library sine (std::sin vs onnxruntime's Sin,
    # which agree here too).
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 6, 2001)) * 10.0 ** rng.uniform(-3, 3, 2001)).astype(np.float32)
    alpha = rng.uniform(0.05, 20.0, (1, 6, 1)).astype(np.float32)
    inverse = (1.0 / (alpha + np.float32(1e-9))).astype(np.float32)
    x[0, 0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    shapes = {
        "x": ["B", "C", "T"],
        "alpha": [1, "C", 1],
        "inverse": [1, "C", 1],
        "y": ["B", "C", "T"],
    }
    model = node_model(ops.SNAKE, shapes)
    feed = {"x": x, "alpha": alpha, "inverse": inverse}
    assert_same_bits(body_session(model).run(None, feed), kernel_session(model).run(None, feed))


def test_kernel_session_runs_the_snake_kernel_not_the_body():
    # x of rank 2: the body broadcasts it, only the kernel refuses it.
    shapes = {"x": ["B", "T"], "alpha": [1, "C", 1], "inverse": [1, "C", 1], "y": [1, "C", "T"]}
    model = node_model(ops.SNAKE, shapes)
    feed = {"x": np.ones((2, 3), np.float32), "alpha": np.ones((1, 2, 1), np.float32)}
    feed["inverse"] = feed["alpha"]
    assert body_session(model).run(None, feed)[0].shape == (1, 2, 3)
    with pytest.raises(Exception, match=re.escape("Snake: x must have rank 3 [B, C, T]")):
        kernel_session(model).run(None, feed)


# --- MaskGitStep --------------------------------------------------------------------------------

STEP_SHAPES = {
    "logits": ["B", "T", "P", "V"],
    "codes": ["B", "C", "T"],
    "mask": ["B", "C", "T"],
    "seed": ["S"],
    "n_masked_start": ["B"],
    "batch_offset": ["O"],
    "codes_out": ["B", "C", "T"],
    "mask_out": ["B", "C", "T"],
    "model_input": ["B", "C", "T"],
}


@pytest.fixture(scope="module", params=[0, 1], ids=["per_item", "batch_coupled"])
def step_sessions(request):
    """(body, kernel) sessions of MaskGitStep, seed and batch_offset of one element or [B]."""
    model = node_model(ops.MASK_GIT_STEP, STEP_SHAPES, batch_coupled=request.param)
    return body_session(model), kernel_session(model)


def random_step_problem(rng, batch, codebooks, predicted, frames, vocab):
    """Logits [B, T, P, V], codes and mask [B, C, T] (conditioning codebooks unmasked)."""
    logits = (rng.standard_normal((batch, frames, predicted, vocab)) * 2).astype(np.float32)
    codes = rng.integers(0, vocab, (batch, codebooks, frames)).astype(np.int64)
    mask = rng.random((batch, codebooks, frames)) < 0.7
    mask[:, : codebooks - predicted] = False
    return logits, codes, mask


def step_feed(logits, codes, mask, step, n_steps, n_masked_start, seed=0, batch_offset=0, **kw):
    settings = dict(temperature=1.0, top_k=0, top_p=1.0, mask_temperature=10.5) | kw
    return {
        "logits": logits,
        "codes": codes,
        "mask": mask,
        "n_masked_start": np.asarray(n_masked_start, np.int64),
        "seed": np.asarray(seed, np.int64).reshape(-1),
        "batch_offset": np.asarray(batch_offset, np.int64).reshape(-1),
        **ops.MASK_GIT_STEP.feed(step=step, n_steps=n_steps, **settings),
    }


STEP_CASES = [
    # B, C, P, T, V, settings
    (1, 4, 4, 30, 64, dict()),
    (3, 14, 10, 9, 32, dict(temperature=0.0, mask_temperature=0.0)),
    (2, 4, 4, 1, 16, dict(temperature=0.7, top_p=0.8)),
    (2, 5, 2, 17, 1024, dict(top_k=5, mask_temperature=3.0)),
    (4, 3, 1, 12, 50, dict(temperature=1.3, top_p=0.9, top_k=40)),
]


@pytest.mark.parametrize("batch, codebooks, predicted, frames, vocab, settings", STEP_CASES)
@pytest.mark.parametrize("per_item_keys", [False, True])
def test_body_mask_git_step_gives_the_kernels_bits_over_a_whole_generation(
    step_sessions, batch, codebooks, predicted, frames, vocab, settings, per_item_keys
):
    rng = np.random.default_rng([batch, frames, vocab, per_item_keys])
    logits, codes, mask = random_step_problem(rng, batch, codebooks, predicted, frames, vocab)
    if per_item_keys:
        seed = rng.integers(-(2**63), 2**63, batch, dtype=np.int64)
        seed[0] = 2**63 - 1
        batch_offset = rng.integers(0, 2**32, batch, dtype=np.int64)
    else:
        seed, batch_offset = -12345, 2**32 - batch
    n0 = mask.sum(axis=(1, 2))
    body, kernel = step_sessions
    n_steps = 6
    for step in range(n_steps):
        feed = step_feed(logits, codes, mask, step, n_steps, n0, seed, batch_offset, **settings)
        got = body.run(None, feed)
        assert_same_bits(got, kernel.run(None, feed))
        codes, mask = got[0], got[1]
    assert not mask.any()


@pytest.mark.parametrize("chunk_rows", [3, 64, None])
def test_body_mask_git_step_gives_the_kernels_bits_in_chunks_of_rows(monkeypatch, chunk_rows):
    """A whole generation whose masked rows (2 x 10 x 45 x 0.7, about 630, at the first step)
    the exact body samples in chunks: of 3 rows, of 64, and of the default size (512)."""
    if chunk_rows:
        monkeypatch.setattr(ops_functions, "_CHUNK_ROWS", chunk_rows)
    model = node_model(ops.MASK_GIT_STEP, STEP_SHAPES, batch_coupled=0)
    body, kernel = body_session(model), kernel_session(model)
    rng = np.random.default_rng(chunk_rows)
    logits, codes, mask = random_step_problem(rng, 2, 14, 10, 45, 48)
    n0 = mask.sum(axis=(1, 2))
    for step in range(4):
        feed = step_feed(
            logits, codes, mask, step, 4, n0, [3, -9], [0, 1], temperature=0.9, top_k=20
        )
        got = body.run(None, feed)
        assert_same_bits(got, kernel.run(None, feed))
        codes, mask = got[0], got[1]
    assert not mask.any()


def test_body_mask_git_step_gives_empty_outputs_for_no_frames(step_sessions):
    body, _ = step_sessions
    feed = step_feed(
        np.zeros((2, 0, 3, 8), np.float32),
        np.zeros((2, 4, 0), np.int64),
        np.zeros((2, 4, 0), bool),
        step=0,
        n_steps=3,
        n_masked_start=[0, 0],
    )
    codes_out, mask_out, model_input = body.run(None, feed)
    assert codes_out.shape == mask_out.shape == model_input.shape == (2, 4, 0)


def test_body_mask_git_step_leaves_the_codes_when_nothing_is_masked(step_sessions):
    rng = np.random.default_rng(13)
    logits, codes, _ = random_step_problem(rng, 2, 4, 3, 6, 8)
    mask = np.zeros(codes.shape, bool)
    feed = step_feed(logits, codes, mask, 0, 3, [0, 0])
    body, kernel = step_sessions
    got = body.run(None, feed)
    assert_same_bits(got, [codes, mask, codes])
    assert_same_bits(got, kernel.run(None, feed))


def test_body_mask_git_step_ignores_bad_logits_at_unmasked_positions(step_sessions):
    rng = np.random.default_rng(8)
    logits, codes, mask = random_step_problem(rng, 2, 4, 3, 10, 20)
    logits[~mask[:, 1:, :].transpose(0, 2, 1)] = np.nan
    feed = step_feed(logits, codes, mask, 0, 4, mask.sum(axis=(1, 2)), seed=4)
    body, kernel = step_sessions
    assert_same_bits(body.run(None, feed), kernel.run(None, feed))


def bad_step_feed(**changes):
    rng = np.random.default_rng(9)
    logits, codes, mask = random_step_problem(rng, 2, 4, 3, 10, 20)
    args = dict(logits=logits, codes=codes, mask=mask, step=1, n_steps=4)
    args["n_masked_start"] = mask.sum(axis=(1, 2))
    return step_feed(**(args | changes))


def with_cell(name: str, value, index=(1, 0, 3)):
    def change(feed):
        feed[name] = feed[name].copy()
        feed[name][index] = value
        return feed

    return change


BAD_STEPS = [
    (dict(step=4), "MaskGitStep: step must be in [0, n_steps)"),
    (dict(step=-1), "MaskGitStep: step must be in [0, n_steps)"),
    (dict(n_steps=0, step=0), "MaskGitStep: n_steps must be >= 1"),
    (dict(top_p=2.0), "MaskGitStep: top_p must be in (0, 1]"),
    (dict(mask_temperature=float("inf")), "MaskGitStep: mask_temperature must be finite and >= 0"),
    (dict(n_masked_start=[5, 31]), "MaskGitStep: n_masked_start must be in [0, T * P]"),
    (dict(n_masked_start=[5]), "MaskGitStep: n_masked_start must have shape [B]"),
    (dict(seed=[1, 2, 3]), "MaskGitStep: seed must have one element or shape [B]"),
    (dict(batch_offset=2**32 - 1), "MaskGitStep: batch_offset must be in [0, 2^32 - B]"),
    (dict(batch_offset=[0, -1]), "MaskGitStep: batch_offset must be in [0, 2^32 - B]"),
    (dict(logits=np.zeros((2, 9, 3, 20), np.float32)), "MaskGitStep: logits must have shape"),
    (dict(logits=np.zeros((2, 10, 5, 20), np.float32)), "MaskGitStep: logits must have shape"),
    (dict(mask=np.zeros((2, 4, 9), bool)), "MaskGitStep: logits must have shape"),
]


@pytest.mark.parametrize("changes, message", BAD_STEPS)
def test_body_mask_git_step_fails_on_bad_settings_in_a_node_named_for_the_check(
    step_sessions, changes, message
):
    body, _ = step_sessions
    with pytest.raises(Exception, match=re.escape(message)):
        body.run(None, bad_step_feed(**changes))


@pytest.mark.parametrize(
    "change, message",
    [
        (with_cell("mask", True, (1, 0, 3)), "MaskGitStep: mask must be false in the"),
        (with_cell("codes", 20, (0, 2, 3)), "MaskGitStep: codes must be in [0, V) where mask"),
        (with_cell("codes", -1, (0, 0, 0)), "MaskGitStep: codes must be in [0, V) where mask"),
    ],
)
def test_body_mask_git_step_fails_on_bad_cells(step_sessions, change, message):
    feed = bad_step_feed(mask_temperature=1.0)
    feed["mask"][0, 2, 3] = False  # so that the code written there is read
    body, _ = step_sessions
    with pytest.raises(Exception, match=re.escape(message)):
        body.run(None, change(feed))


def test_body_mask_git_step_fails_on_nan_logits_at_a_masked_position(step_sessions):
    feed = bad_step_feed()
    b, c, t = np.argwhere(feed["mask"])[0]
    feed["logits"][b, t, c - 1, 5] = np.nan
    body, _ = step_sessions
    with pytest.raises(Exception, match=re.escape("MaskGitStep: logits must be finite or -inf")):
        body.run(None, feed)


def test_kernel_session_runs_the_mask_git_step_kernel_not_the_body(step_sessions):
    _, kernel = step_sessions
    with pytest.raises(
        Exception, match=re.escape("MaskGitStep: step must be in [0, n_steps = 4), got 4")
    ):
        kernel.run(None, bad_step_feed(step=4))


# --- attach_functions ---------------------------------------------------------------------------


def without_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    bare = onnx.ModelProto.FromString(model.SerializeToString())
    bare.ClearField("functions")
    return bare


def test_attach_functions_fills_an_omitted_first_row_with_0():
    model = without_functions(sampling_model())
    del model.graph.node[0].input[-1]
    del model.graph.input[-1]
    attached = ops_functions.attach_functions(model)
    onnx.checker.check_model(attached, full_check=True)
    assert [f.name for f in attached.functions] == ["SampleTokens"]
    rng = np.random.default_rng(4)
    feed = sample_feed(random_logits(rng, (30, 50)), 0.9, 0, 0.9, seed=77, offset=1)
    del feed["first_row"]
    assert_same_bits(body_session(attached).run(None, feed), kernel_session(model).run(None, feed))


def test_attach_functions_counts_an_omitted_n_masked_start_from_the_mask():
    model = without_functions(node_model(ops.MASK_GIT_STEP, STEP_SHAPES))
    del model.graph.node[0].input[-2:]
    del model.graph.input[-2:]
    attached = ops_functions.attach_functions(model)
    onnx.checker.check_model(attached, full_check=True)
    rng = np.random.default_rng(6)
    logits, codes, mask = random_step_problem(rng, 3, 5, 3, 11, 40)
    feed = step_feed(logits, codes, mask, 0, 4, mask.sum(axis=(1, 2)), seed=[1, 2, 3])
    del feed["n_masked_start"], feed["batch_offset"]
    assert_same_bits(body_session(attached).run(None, feed), kernel_session(model).run(None, feed))


def generation_loop_model() -> onnx.ModelProto:
    """A Loop of n_steps MaskGitStep nodes on fixed logits, as the generation graphs run it."""
    body_inputs = [
        helper.make_tensor_value_info("step", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        helper.make_tensor_value_info("codes_in", TensorProto.INT64, ["B", "C", "T"]),
        helper.make_tensor_value_info("mask_in", TensorProto.BOOL, ["B", "C", "T"]),
    ]
    step_node = ops.MASK_GIT_STEP.make_node(
        ["logits", "codes_in", "mask_in", "step", "n_steps", "temperature", "top_k", "top_p"]
        + ["mask_temperature", "seed", "n0"],
        ["codes_out", "mask_out", "model_input"],
    )
    loop_body = helper.make_graph(
        [step_node, helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "generation_step",
        body_inputs,
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("codes_out", TensorProto.INT64, ["B", "C", "T"]),
            helper.make_tensor_value_info("mask_out", TensorProto.BOOL, ["B", "C", "T"]),
        ],
    )
    nodes = [
        helper.make_node(
            "Constant", [], ["true"], value=helper.make_tensor("", TensorProto.BOOL, [], [True])
        ),
        helper.make_node("Cast", ["mask"], ["mask_int"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["mask_int", "axes"], ["n0"], keepdims=0),
        helper.make_node(
            "Loop",
            ["n_steps", "true", "codes", "mask"],
            ["codes_final", "mask_final"],
            body=loop_body,
        ),
    ]
    scalars = [("n_steps", TensorProto.INT64), ("temperature", TensorProto.FLOAT)]
    scalars += [("top_k", TensorProto.INT64), ("top_p", TensorProto.FLOAT)]
    scalars += [("mask_temperature", TensorProto.FLOAT), ("seed", TensorProto.INT64)]
    graph = helper.make_graph(
        nodes,
        "generation",
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", "P", "V"]),
            helper.make_tensor_value_info("codes", TensorProto.INT64, ["B", "C", "T"]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["B", "C", "T"]),
            *[helper.make_tensor_value_info(n, t, []) for n, t in scalars],
        ],
        [
            helper.make_tensor_value_info("codes_final", TensorProto.INT64, ["B", "C", "T"]),
            helper.make_tensor_value_info("mask_final", TensorProto.BOOL, ["B", "C", "T"]),
        ],
        initializer=[onnx.numpy_helper.from_array(np.array([1, 2], np.int64), "axes")],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 20), ops.opset_import()],
        ir_version=ONNX_IR_VERSION,
    )


@pytest.mark.parametrize("opset", [18, 20, 23])
def test_attach_functions_reaches_ops_inside_a_loop_body_and_runs_a_whole_generation(opset):
    model = generation_loop_model()
    model.opset_import[0].version = opset
    attached = ops_functions.attach_functions(model)
    onnx.checker.check_model(attached, full_check=True)
    assert [f.name for f in attached.functions] == ["MaskGitStep"]
    rng = np.random.default_rng(12)
    logits, codes, mask = random_step_problem(rng, 2, 4, 3, 16, 64)
    feed = {"logits": logits, "codes": codes, "mask": mask}
    feed |= ops.MASK_GIT_STEP.feed(
        n_steps=8, temperature=0.8, top_k=0, top_p=0.9, mask_temperature=10.5, seed=-5
    )
    codes_final, mask_final = body_session(attached).run(None, feed)
    assert not mask_final.any()
    assert_same_bits([codes_final, mask_final], kernel_session(model).run(None, feed))


def test_attach_functions_adds_only_the_functions_of_the_ops_a_model_uses():
    model = without_functions(node_model(ops.CHECK_RANGE, {}, name="x", where="Vamp", max=1.0))
    attached = ops_functions.attach_functions(model)
    assert [(f.domain, f.name) for f in attached.functions] == [(ops.DOMAIN, "CheckRange")]
    assert ops_functions.attach_functions(attached).functions == attached.functions


def test_attach_functions_leaves_its_argument_unchanged():
    model = generation_loop_model()
    before = model.SerializeToString()
    ops_functions.attach_functions(model)
    assert model.SerializeToString() == before


def test_attach_functions_refuses_a_model_below_opset_18():
    model = generation_loop_model()
    model.opset_import[0].version = 17
    with pytest.raises(ValueError, match="model must import the standard opset >= 18, got 17"):
        ops_functions.attach_functions(model)


def test_attached_functions_of_all_four_ops_add_under_200_kb():
    # The budget is "a few hundred KB" per graph; the measured sizes are in docs/ops.md.
    sizes = {
        name: len(ops_functions.function(name).SerializeToString())
        for name in ("SampleTokens", "MaskGitStep", "CheckRange", "Snake")
    }
    assert sum(sizes.values()) < 200 * 1024, sizes


# --- the exported graphs, without the library ---------------------------------------------------


def exported_sessions(path):
    """(body, kernel) sessions of an exported graph file: a plain onnxruntime session (no
    library: onnxruntime expands the ops into the bodies the graph carries) and a
    `create_session` one (the library's kernels)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    body = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return body, vampnet_onnx.create_session(path, intra_op_threads=2)


def carried_bodies(folder) -> dict[str, tuple[str | None, list[str]]]:
    """Each graph of `folder` -> (its `OP_BODIES_KEY` metadata, its functions' names)."""
    carrying = {}
    for graph in sorted(folder.glob("*.onnx")):
        model = onnx.load(str(graph), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        carrying[graph.name] = (
            meta.get(contracts.OP_BODIES_KEY),
            sorted(f.name for f in model.functions),
        )
    return carrying


def test_export_gives_every_graph_that_uses_the_ops_their_bodies_by_default(tiny_models_dir):
    assert carried_bodies(tiny_models_dir) == {
        contracts.ENCODE_FILE: (None, []),
        contracts.DECODE_FILE: (None, []),
        contracts.CPU_CODEC_FILES[contracts.ENCODE_FILE]: ("1", ["Snake"]),
        contracts.CPU_CODEC_FILES[contracts.DECODE_FILE]: ("1", ["Snake"]),
        contracts.TRANSFORMER_FILES["coarse"]: (None, []),
        contracts.TRANSFORMER_FILES["c2f"]: (None, []),
        contracts.GENERATION_FILES["coarse"]: ("1", ["MaskGitStep"]),
        contracts.GENERATION_FILES["c2f"]: ("1", ["MaskGitStep"]),
        contracts.VAMP_FILE: ("1", ["CheckRange", "MaskGitStep", "SampleTokens"]),
        contracts.WAVEBEAT_FILE: (None, []),
    }


def test_the_vamp_graphs_bodies_add_under_200_kb(tiny_models_dir):
    # The budget is "a few hundred KB" per graph; measured: 153 KiB (docs/ops.md).
    model = onnx.load(str(tiny_models_dir / contracts.VAMP_FILE), load_external_data=False)
    assert sum(len(f.SerializeToString()) for f in model.functions) < 200 * 1024


@pytest.mark.parametrize("kind", ["coarse", "c2f"])
def test_generation_graphs_run_without_the_library_and_give_the_librarys_codes(
    tiny_models_dir, kind
):
    body, kernel = exported_sessions(tiny_models_dir / contracts.GENERATION_FILES[kind])
    kwargs = {"coarse": configs.TINY_COARSE_KWARGS, "c2f": configs.TINY_C2F_KWARGS}[kind]
    rng = np.random.default_rng(21)
    codes = rng.integers(0, 1024, (2, kwargs["n_codebooks"], 13)).astype(np.int64)
    mask = rng.random(codes.shape) < 0.7
    mask[:, : kwargs["n_conditioning_codebooks"]] = False
    settings = contracts.GENERATION_DEFAULTS | dict(n_steps=4, top_p=0.9, seed=-8)
    feed = {"codes": codes, "mask": mask, **contracts.GENERATION.feed(**settings)}
    got = body.run(["codes_out", "mask_out"], feed)
    assert_same_bits(got, kernel.run(["codes_out", "mask_out"], feed))
    assert not got[1].any()


def test_vamp_graph_runs_without_the_library_and_gives_the_librarys_audio(tiny_models_dir):
    body, kernel = exported_sessions(tiny_models_dir / contracts.VAMP_FILE)
    noise = np.random.default_rng(3).standard_normal(3 * 44100).astype(np.float32) * 0.1
    x, _ = audio.preprocess(noise, 44100)
    settings = contracts.VAMP_DEFAULTS | dict(n_steps=3, seed=2**62 + 5, temperature=0.8)
    feed = {"audio": x, **contracts.VAMP.feed(**settings)}
    assert_same_bits(body.run(None, feed), kernel.run(None, feed))


@pytest.fixture(scope="module")
def int8_folder_without_bodies(tmp_path_factory):
    """`vampnet-onnx export --precision int8 --no-op-bodies` of a tiny coarse model and codec
    (int8's codec uses the Snake op)."""
    from vampnet_onnx import cli, testing

    root = tmp_path_factory.mktemp("int8_without_bodies")
    coarse = testing.write_vampnet_checkpoint(root / "coarse.pth", configs.TINY_COARSE_KWARGS)
    codec = testing.write_codec_checkpoint(root / "codec.pth", configs.TINY_CODEC_KWARGS)
    out = root / "models"
    argv = ["export", "--coarse", str(coarse), "--codec", str(codec), "--out", str(out)]
    assert cli.main([*argv, "--precision", "int8", "--no-op-bodies"]) == 0
    return out


def test_export_no_op_bodies_writes_graphs_without_them(int8_folder_without_bodies):
    carrying = carried_bodies(int8_folder_without_bodies)
    assert sorted(carrying) == sorted(
        [
            contracts.ENCODE_FILE,
            contracts.DECODE_FILE,
            contracts.TRANSFORMER_FILES["coarse"],
            contracts.GENERATION_FILES["coarse"],
        ]
    )
    assert all(entry == (None, []) for entry in carrying.values()), carrying


def test_attach_op_bodies_gives_int8s_codec_snakes_body(int8_folder_without_bodies, tmp_path):
    # export_models attaches the bodies to every graph it writes with this call.
    from vampnet_onnx.export.common import attach_op_bodies

    graph = tmp_path / contracts.DECODE_FILE
    shutil.copy(int8_folder_without_bodies / contracts.DECODE_FILE, graph)
    assert attach_op_bodies(graph)
    assert carried_bodies(tmp_path) == {contracts.DECODE_FILE: ("1", ["Snake"])}
    # Without the library, Snake's body; with it, the kernel: the same audio.
    body, kernel = exported_sessions(graph)
    kwargs = configs.TINY_CODEC_KWARGS
    shape = (1, kwargs["n_codebooks"], 9)
    codes = np.random.default_rng(5).integers(0, kwargs["codebook_size"], shape)
    feed = {"codes": codes, "length": np.array(9 * 12, np.int64)}  # hop 2 * 3 * 2
    assert_same_bits(body.run(None, feed), kernel.run(None, feed))


def nodes_of_the_domain(model: onnx.ModelProto) -> int:
    """The vampnet_onnx nodes of `model`'s graph and subgraphs (Loop and If bodies)."""
    return sum(
        node.domain == ops.DOMAIN
        for graph in ops_functions._graphs(model.graph)
        for node in graph.node
    )


def test_an_inlined_generation_graph_runs_in_a_plain_session_with_the_librarys_codes(
    int8_folder_without_bodies, tmp_path
):
    from vampnet_onnx.export.common import attach_op_bodies

    exported = int8_folder_without_bodies / contracts.GENERATION_FILES["coarse"]
    inlined = tmp_path / exported.name
    shutil.copy(exported, inlined)
    assert attach_op_bodies(inlined, inline=True)
    model = onnx.load(str(inlined))
    assert nodes_of_the_domain(model) == 0 and not model.functions
    assert ops.DOMAIN not in {o.domain for o in model.opset_import}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[contracts.OP_BODIES_KEY] == contracts.OP_BODIES_INLINED
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 1024, (2, 4, 12)).astype(np.int64)
    mask = rng.random(codes.shape) < 0.7
    settings = contracts.GENERATION_DEFAULTS | dict(n_steps=4, top_k=40, seed=2**40 + 3)
    feed = {"codes": codes, "mask": mask, **contracts.GENERATION.feed(**settings)}
    plain = ort.InferenceSession(str(inlined), providers=["CPUExecutionProvider"])
    # The graph as exported, without bodies: only the library's kernels can run its ops.
    kernel = vampnet_onnx.create_session(exported, python_ops=False)
    assert_same_bits(plain.run(None, feed), kernel.run(None, feed))


def test_an_inlined_vamp_graph_runs_in_a_plain_session_with_the_librarys_audio(
    tiny_models_dir, tmp_path
):
    # vamp.onnx nests the ops two Loops deep and reads CheckRange's attributes in its body.
    model = onnx.load(str(tiny_models_dir / contracts.VAMP_FILE))
    inlined = ops_functions.inline_functions(model)
    assert nodes_of_the_domain(inlined) == 0 and not inlined.functions
    plain = ort.InferenceSession(inlined.SerializeToString(), providers=["CPUExecutionProvider"])
    kernel = vampnet_onnx.create_session(model, python_ops=False)
    noise = np.random.default_rng(6).standard_normal(2 * 44100).astype(np.float32) * 0.1
    x, _ = audio.preprocess(noise, 44100)
    settings = contracts.VAMP_DEFAULTS | dict(n_steps=2, seed=-3, top_p=0.9)
    feed = {"audio": x, **contracts.VAMP.feed(**settings)}
    assert_same_bits(plain.run(None, feed), kernel.run(None, feed))
    # CheckRange's body reads the node's min and max: inlined, they must have been substituted.
    with pytest.raises(Exception, match=r"CheckRange: x must be in \[min, max\]"):
        plain.run(None, {**feed, **contracts.VAMP.feed(dropout=1.5)})


def test_export_inline_op_bodies_is_passed_to_export_models(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from vampnet_onnx import cli, export

    given = {}

    def recorded(out, **options):
        given.update(options)
        return SimpleNamespace(files=[], out=out, n_bytes=0)

    monkeypatch.setattr(export, "export_models", recorded)
    argv = ["export", "--coarse", "c.pth", "--codec", "k.pth", "--out", str(tmp_path)]
    assert cli.main([*argv, "--inline-op-bodies"]) == 0
    assert (given["op_bodies"], given["inline_op_bodies"]) == (True, True)


def test_export_refuses_inline_op_bodies_without_op_bodies(tmp_path, capsys):
    argv = ["export", "--coarse", "c.pth", "--codec", "k.pth", "--out", str(tmp_path / "m")]
    from vampnet_onnx import cli

    assert cli.main([*argv, "--no-op-bodies", "--inline-op-bodies"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("error: --inline-op-bodies must not come with --no-op-bodies, got both")
    assert not (tmp_path / "m").exists()


def test_bodies_are_built_without_torch_or_onnxscript():
    code = (
        "import sys\n"
        "from vampnet_onnx import ops_functions\n"
        "for name in ('SampleTokens', 'MaskGitStep', 'CheckRange', 'Snake'):\n"
        "    ops_functions.function(name)\n"
        "assert not {'torch', 'onnxscript', 'onnx_ir'} & set(sys.modules), sys.modules.keys()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("schema", ops.SCHEMAS, ids=lambda schema: schema.name)
def test_a_body_session_is_created_without_onnxruntime_warnings(schema, capfd):
    shapes = {"logits": ["B", "T", "P", "V"], "codes": ["B", "C", "T"], "mask": ["B", "C", "T"]}
    shapes |= {"seed": ["S"], "n_masked_start": ["B"], "batch_offset": ["O"], "x": ["B", "C", "T"]}
    shapes |= {"alpha": [1, "C", 1], "inverse": [1, "C", 1], "y": ["B", "C", "T"]}
    shapes |= {name: ["B", "C", "T"] for name in ("codes_out", "mask_out", "model_input")}
    if schema is ops.SAMPLE_TOKENS:
        shapes |= {"logits": ["N", "V"], "tokens": ["N"], "logprob": ["N"]}
    if schema is ops.CHECK_RANGE:
        shapes = {}
    capfd.readouterr()
    body_session(node_model(schema, shapes))
    assert "W:onnxruntime" not in capfd.readouterr().err
