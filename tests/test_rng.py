"""The counter-based generator and the deterministic elementary functions, C++ vs numpy."""

import numpy as np
import pytest

from vampnet_onnx import _kernels, reference

# Known-answer vectors of Philox4x32-10 published with Random123 (kat_vectors).
PHILOX_KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (
        [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
        [0xA4093822, 0x299F31D0],
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
    ),
]


@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_philox_cpp_matches_known_answers(counter, key, expected):
    assert list(_kernels.philox4x32_10(counter, key)) == expected


@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_philox_numpy_matches_known_answers(counter, key, expected):
    block = reference.philox4x32_10(np.array([counter], dtype=np.uint32), tuple(key))
    assert block[0].tolist() == expected


def test_philox_numpy_matches_cpp_on_random_counters():
    rng = np.random.default_rng(1)
    counters = rng.integers(0, 2**32, (200, 4), dtype=np.uint64).astype(np.uint32)
    key = (int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32)))
    numpy_blocks = reference.philox4x32_10(counters, key)
    for counter, block in zip(counters, numpy_blocks):
        assert list(_kernels.philox4x32_10(counter.tolist(), list(key))) == block.tolist()


def test_uniform53_spans_unit_interval():
    words = np.array([0, 0xFFFFFFFF], dtype=np.uint32)
    u = reference.uniform53(words, words)
    assert u[0] == 0.0
    assert u[1] == 1.0 - 2.0**-53


def test_random_block_streams_differ_by_row_and_offset():
    a = reference.random_block(7, np.arange(4), 0)
    b = reference.random_block(7, np.arange(4), 1)
    assert len({tuple(x) for x in np.concatenate([a, b]).tolist()}) == 8


EXP_POINTS = np.concatenate(
    [
        np.linspace(-745, 710, 20001),
        [
            0.0,
            -0.0,
            1e-300,
            -1e-300,
            0.5 * np.log(2),
            -0.5 * np.log(2),
            -700.0,
            -700.0000001,
            709.0,
            np.inf,
            -np.inf,
            np.nan,
        ],
    ]
)
LOG_POINTS = np.concatenate(
    [
        np.exp(np.linspace(-700, 700, 20001)),
        np.linspace(0.5, 2.0, 5001),
        [0.0, 1.0, 5e-324, np.inf, -1.0, np.nan, np.sqrt(0.5), np.nextafter(np.sqrt(0.5), 0)],
    ]
)
COS_POINTS = np.linspace(0, np.pi / 2, 10001)


@pytest.mark.parametrize(
    "name, points", [("exp", EXP_POINTS), ("log", LOG_POINTS), ("cos", COS_POINTS)]
)
def test_det_math_numpy_matches_cpp_bitwise(name, points):
    cpp = getattr(_kernels, f"det_{name}")(points)
    twin = getattr(reference, f"det_{name}")(points)
    np.testing.assert_array_equal(
        cpp.view(np.int64)[~np.isnan(cpp)], twin.view(np.int64)[~np.isnan(twin)]
    )
    np.testing.assert_array_equal(np.isnan(cpp), np.isnan(twin))


def _ulps(a, b):
    return np.abs(a - b) / np.spacing(np.abs(b))


def test_det_exp_is_accurate_to_a_few_ulp():
    x = np.linspace(-700, 709, 100001)
    assert _ulps(reference.det_exp(x), np.exp(x)).max() <= 4
    assert reference.det_exp(np.array([-700.5]))[0] == 0.0  # documented underflow to 0


def test_det_log_is_accurate_to_a_few_ulp():
    x = np.exp(np.linspace(-700, 700, 100001))
    ref = np.log(x)
    ok = np.abs(ref) > 1e-3  # relative ulp is meaningless at log(1) = 0
    assert _ulps(reference.det_log(x), ref)[ok].max() <= 4
    assert (
        np.abs(
            reference.det_log(np.linspace(0.999, 1.001, 1001))
            - np.log(np.linspace(0.999, 1.001, 1001))
        ).max()
        < 1e-18
    )


def test_det_cos_is_accurate_on_the_schedule_range():
    x = np.linspace(0, np.pi / 2, 100001)
    assert np.abs(reference.det_cos(x) - np.cos(x)).max() < 4e-16
