"""The ops' bodies in their portable variant (float32, no Loop), on onnxruntime without the
library and on OpenVINO's CPU plugin (vampnet_onnx.portable): the gates of docs/portable.md.
The kernel (onnxruntime with the library) and the numpy twin are the references."""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import vampnet_onnx
from conftest import sample_feed
from test_ops_functions import (
    STEP_SHAPES,
    kernel_session,
    node_model,
    random_step_problem,
    sampling_model,
    step_feed,
)
from test_sample_tokens import exact_distribution
from vampnet_onnx import audio, cli, configs, contracts, ops, ops_functions, reference

openvino = pytest.importorskip("openvino", reason="OpenVINO is the portable extra's")

from vampnet_onnx.portable import OpenVINOSession  # noqa: E402

RUNTIMES = ["onnxruntime", "openvino"]


class OrtSession:
    """A plain onnxruntime session (no library) with OpenVINOSession's `run`."""

    def __init__(self, path):
        self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, output_names, feed):
        names = {i.name for i in self._session.get_inputs()}
        return self._session.run(output_names, {k: v for k, v in feed.items() if k in names})


def portable_session(model: onnx.ModelProto, runtime: str, tmp_path):
    """`model`'s op bodies, portable and inlined, in `runtime` ("onnxruntime", "openvino" or
    "tract")."""
    path = tmp_path / f"{runtime}.onnx"
    onnx.save(ops_functions.inline_functions(model, "portable"), str(path))
    if runtime == "tract":
        from vampnet_onnx.portable import TractSession

        return TractSession(path)
    return OrtSession(path) if runtime == "onnxruntime" else OpenVINOSession(path)


# --- Philox ------------------------------------------------------------------------------------


def test_openvino_gives_the_kernels_philox_words_for_keys_and_counters_within_int32(tmp_path):
    path = tmp_path / "philox.onnx"
    onnx.save(ops_functions.random_block_model("portable"), str(path))
    session = OpenVINOSession(path)
    rng = np.random.default_rng(7)
    n = 100_000
    low, high = -(2**31), 2**31 - 1
    seed = rng.integers(low, high, n, endpoint=True)
    row, offset = (rng.integers(0, high, n, endpoint=True) for _ in range(2))
    seed[:6] = [0, -1, low, high, -7, 12345]
    row[:6] = [0, high, high - 1, 1, 5, 2**31 - 2]
    offset[:6] = [0, 1, high, 35, 2**30, 0]
    [limbs] = session.run(None, {"seed": seed, "row": row, "offset": offset})
    words = ops_functions.limb_words(limbs)
    seed_words = seed.view(np.uint64)
    mask32 = np.uint64(0xFFFFFFFF)
    counter = np.stack(
        [
            row.astype(np.uint64),
            np.zeros(n, np.uint64),
            offset.astype(np.uint64),
            np.zeros(n, np.uint64),
        ],
        axis=-1,
    )
    want = reference.philox4x32_10(counter, (seed_words & mask32, seed_words >> np.uint64(32)))
    np.testing.assert_array_equal(words, want)


def test_openvino_session_refuses_an_int64_input_outside_int32(tmp_path):
    path = tmp_path / "philox.onnx"
    onnx.save(ops_functions.random_block_model("portable"), str(path))
    session = OpenVINOSession(path)
    feed = {"seed": np.array([2**31]), "row": np.array([0]), "offset": np.array([0])}
    with pytest.raises(ValueError, match=r"seed must be in \[-2\^31, 2\^31 - 1\].*got 2147483648"):
        session.run(None, feed)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
        (dict(temperature=-1.0), r"temperature must be a finite number >= 0, got -1.0"),
        (dict(n_steps=0), r"n_steps must be an int >= 1, got 0"),
    ],
)
def test_openvino_session_refuses_a_setting_out_of_range(portable_folder, bad, message):
    # OpenVINO runs past the bodies' in-graph checks (docs/portable.md), so the session checks.
    path = portable_folder / contracts.GENERATION_FILES["coarse"]
    feed = generation_feed("coarse", {}) | contracts.GENERATION.feed(**bad)
    with pytest.raises(ValueError, match="OpenVINOSession.run: " + message):
        OpenVINOSession(path).run(["codes_out"], feed)


# --- SampleTokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_portable_sample_tokens_at_temperature_0_gives_the_kernels_tokens(runtime, tmp_path):
    check_sample_tokens_at_temperature_0(runtime, tmp_path)


def check_sample_tokens_at_temperature_0(runtime: str, tmp_path) -> None:
    """The temperature-0 gate of SampleTokens' portable body in `runtime`."""
    model = sampling_model()
    session = portable_session(model, runtime, tmp_path)
    logits = (np.random.default_rng(3).standard_normal((2000, 1024)) * 3).astype(np.float32)
    logits[:10] = np.round(logits[:10])  # rows with tied maxima: the lowest index wins
    feed = sample_feed(logits, 0.0, 0, 1.0, seed=5)
    tokens, logprob = session.run(None, feed)
    want_tokens, want_logprob = kernel_session(model).run(None, feed)
    np.testing.assert_array_equal(tokens, want_tokens)
    # The kernel's logprob is log(1) = 0 at temperature 0 only for a lone maximum; elsewhere
    # float32 Exp / Log against det_exp / det_log: within a few float32 ulps.
    np.testing.assert_allclose(logprob, want_logprob, atol=1e-5)


# (temperature, top_k, top_p): the three sampling settings.
SAMPLING = [(0.8, 0, 1.0), (1.3, 0, 0.9), (1.0, 40, 1.0)]


@pytest.mark.parametrize("temperature, top_k, top_p", SAMPLING)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_portable_sample_tokens_agree_with_the_kernel_and_follow_the_distribution(
    runtime, temperature, top_k, top_p, tmp_path
):
    check_sample_tokens_sampling(runtime, temperature, top_k, top_p, tmp_path)


def check_sample_tokens_sampling(runtime: str, temperature, top_k, top_p, tmp_path) -> None:
    """The sampling gates of SampleTokens' portable body in `runtime`: tokens against the
    kernel's, a z-test against the exact distribution, logprob against its log."""
    model = sampling_model()
    session = portable_session(model, runtime, tmp_path)
    n, vocab = 4000, 1024
    logits = (np.random.default_rng(11).standard_normal((n, vocab)) * 3).astype(np.float32)
    feed = sample_feed(logits, temperature, top_k, top_p, seed=-99, offset=4, first_row=1000)
    tokens, logprob = session.run(None, feed)
    want_tokens, _ = kernel_session(model).run(None, feed)
    # The same 24 leading bits of every uniform: a token differs only where float32 sums put
    # the draw on the other side of a cumulative boundary (measured: none of 4000 rows).
    assert (tokens == want_tokens).mean() >= 0.99
    # The tokens' log-probabilities under the filtered distribution: their sum against its
    # mean and variance (a z-test; |z| <= 4 fails a right sampler once in ~16,000 runs).
    log_p, mean, variance = 0.0, 0.0, 0.0
    for row, token in zip(logits, tokens, strict=True):
        p = exact_distribution(row, temperature, top_k, top_p)
        assert p[token] > 0, "a filtered token was sampled"
        lp = np.log(p, where=p > 0, out=np.zeros_like(p))
        log_p += lp[token]
        mean += (p * lp).sum()
        variance += (p * lp**2).sum() - (p * lp).sum() ** 2
    z = (log_p - mean) / np.sqrt(variance)
    assert abs(z) <= 4, z
    # The runtime's own logprob is its softmax's log of the token: float32 close to the exact
    # one, but for rows whose top-p cut falls, in float32, on the other side of a token
    # (measured: 3 rows of 4000 at top_p 0.9, off by up to 0.005).
    exact = np.array(
        [
            np.log(exact_distribution(r, temperature, top_k, top_p)[t])
            for r, t in zip(logits, tokens, strict=True)
        ]
    )
    close = np.isclose(logprob, exact, rtol=0, atol=1e-3)
    assert close.mean() >= 0.99
    np.testing.assert_allclose(logprob, exact, atol=0.05)


# --- MaskGitStep --------------------------------------------------------------------------------

# (settings, the share of the kernel's codes the portable body must give): at temperature 0
# and mask_temperature 0 nothing is random, so every code (ties aside: none in these logits).
STEP_SETTINGS = [
    (dict(temperature=0.0, mask_temperature=0.0), 1.0),
    (dict(temperature=1.0, mask_temperature=10.5), 0.99),
    (dict(temperature=0.8, top_k=40, mask_temperature=3.0), 0.99),
]


@pytest.mark.parametrize("settings, agreement", STEP_SETTINGS)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_portable_mask_git_step_gives_the_kernels_codes_and_mask(
    runtime, settings, agreement, tmp_path
):
    check_mask_git_step(runtime, settings, agreement, tmp_path)


def check_mask_git_step(runtime: str, settings: dict, agreement: float, tmp_path) -> None:
    """MaskGitStep's portable body in `runtime` against the kernel: at least `agreement` of
    the codes at masked positions and of the mask."""
    model = node_model(ops.MASK_GIT_STEP, STEP_SHAPES, batch_coupled=0)
    session = portable_session(model, runtime, tmp_path)
    kernel = kernel_session(model)
    rng = np.random.default_rng(4)
    logits, codes, mask = random_step_problem(rng, 2, 14, 10, 40, 1024)
    n0 = mask.sum(axis=(1, 2))
    # Seeds and stream items within int32, the range OpenVINO holds (docs/portable.md).
    feed = step_feed(logits, codes, mask, 3, 12, n0, seed=[-5, 2**31 - 1], batch_offset=[7, 2**30])
    feed |= ops.MASK_GIT_STEP.feed(**settings)
    codes_out, mask_out, _ = session.run(None, feed)
    want_codes, want_mask, _ = kernel.run(None, feed)
    assert (codes_out == want_codes)[mask].mean() >= agreement
    assert (mask_out == want_mask).mean() >= agreement


# --- exported graphs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portable_folder(tiny_models_dir, tmp_path_factory):
    """The tiny folder's graphs that use the ops, re-written with the portable bodies inlined,
    as ``export --inline-op-bodies --op-bodies-variant portable`` writes them."""
    from vampnet_onnx.export.common import attach_op_bodies

    out = tmp_path_factory.mktemp("portable")
    for name in [*contracts.GENERATION_FILES.values(), contracts.VAMP_FILE]:
        for path in tiny_models_dir.glob(name + "*"):  # the graph and its weights
            shutil.copy(path, out / path.name)
        assert attach_op_bodies(out / name, inline=True, variant="portable")
    return out


def generation_feed(kind: str, settings: dict) -> dict:
    kwargs = {"coarse": configs.TINY_COARSE_KWARGS, "c2f": configs.TINY_C2F_KWARGS}[kind]
    rng = np.random.default_rng(21)
    codes = rng.integers(0, 1024, (2, kwargs["n_codebooks"], 40)).astype(np.int64)
    mask = rng.random(codes.shape) < 0.7
    mask[:, : kwargs["n_conditioning_codebooks"]] = False
    settings = contracts.GENERATION_DEFAULTS | dict(n_steps=8, seed=-3) | settings
    return {"codes": codes, "mask": mask, **contracts.GENERATION.feed(**settings)}


GENERATION_SETTINGS = [
    dict(temperature=0.0, mask_temperature=0.0),
    dict(temperature=0.0),
    dict(),
    dict(temperature=1.3, top_p=0.9),
    dict(temperature=0.8, top_k=40),
]


@pytest.mark.parametrize("settings", GENERATION_SETTINGS)
@pytest.mark.parametrize("kind", ["coarse", "c2f"])
def test_openvino_runs_the_generation_graphs_with_onnxruntimes_codes(
    portable_folder, tiny_models_dir, kind, settings
):
    # One different token changes every later step's context, so whole generations are the
    # strict test. The same portable graph gives the same codes in both runtimes (measured:
    # all, in 30 generations); against the library's exact arithmetic, a float32 rounding can
    # tip one sampled token and the rest of that generation with it (measured: 1 of 30
    # generations, docs/portable.md), so only argmax generations are held to the library.
    name = contracts.GENERATION_FILES[kind]
    feed = generation_feed(kind, settings)
    outputs = ["codes_out", "mask_out"]
    got = OpenVINOSession(portable_folder / name).run(outputs, feed)
    on_onnxruntime = OrtSession(portable_folder / name).run(outputs, feed)
    assert (got[0] == on_onnxruntime[0])[feed["mask"]].mean() >= 0.99
    assert not got[1].any()
    if settings.get("temperature") == 0.0:
        library = vampnet_onnx.create_session(tiny_models_dir / name).run(outputs, feed)
        np.testing.assert_array_equal(got[0], library[0])


def test_openvino_runs_the_vamp_graph_with_the_librarys_codes_and_audio(
    portable_folder, tiny_models_dir
):
    noise = np.random.default_rng(3).standard_normal(3 * 44100).astype(np.float32) * 0.1
    x, _ = audio.preprocess(noise, 44100)
    settings = contracts.VAMP_DEFAULTS | dict(n_steps=3, seed=7, temperature=0.8)
    feed = {"audio": x, **contracts.VAMP.feed(**settings)}
    names = ["codes", "codes_out", "audio_out"]
    codes, codes_out, audio_out = OpenVINOSession(portable_folder / contracts.VAMP_FILE).run(
        names, feed
    )
    want = vampnet_onnx.create_session(tiny_models_dir / contracts.VAMP_FILE).run(names, feed)
    np.testing.assert_array_equal(codes, want[0])  # the codec's encoder: exact tokens
    assert (codes_out == want[1]).mean() >= 0.99
    # OpenVINO's convolutions round otherwise than onnxruntime's (measured: 5e-5).
    np.testing.assert_allclose(audio_out, want[2], atol=1e-3)


def test_openvino_session_refuses_a_graph_with_op_nodes(tiny_models_dir):
    path = tiny_models_dir / contracts.GENERATION_FILES["coarse"]
    with pytest.raises(ValueError, match="bodies inlined.*--op-bodies-variant portable"):
        OpenVINOSession(path)


def test_openvino_session_refuses_inlined_bodies_of_the_exact_variant(tiny_models_dir, tmp_path):
    from vampnet_onnx.export.common import attach_op_bodies

    name = contracts.GENERATION_FILES["coarse"]
    for path in tiny_models_dir.glob(name + "*"):
        shutil.copy(path, tmp_path / path.name)
    assert attach_op_bodies(tmp_path / name, inline=True)
    with pytest.raises(ValueError, match="exact variant: re-export with"):
        OpenVINOSession(tmp_path / name)


def loops_and_doubles(model: onnx.ModelProto) -> tuple[int, int]:
    """(Loop nodes, nodes that make float64: Casts to it and float64 Constants) in `model`'s
    graph and subgraphs."""
    nodes = [n for g in ops_functions._graphs(model.graph) for n in g.node]
    double = onnx.TensorProto.DOUBLE
    doubles = sum(
        (n.op_type == "Cast" and n.attribute[0].i == double)
        or (n.op_type == "Constant" and any(a.t.data_type == double for a in n.attribute))
        for n in nodes
    )
    return sum(n.op_type == "Loop" for n in nodes), doubles


def test_export_records_the_portable_variant_which_adds_no_loop_and_no_float64(
    portable_folder, tiny_models_dir
):
    for name in [*contracts.GENERATION_FILES.values(), contracts.VAMP_FILE]:
        model = onnx.load(str(portable_folder / name), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta[contracts.OP_BODIES_KEY] == contracts.OP_BODIES_INLINED
        assert meta[contracts.OP_BODIES_VARIANT_KEY] == "portable"
        assert not model.functions
        # The graph's own (its Loops over the steps, the float64 it feeds CheckRange), and
        # nothing of the bodies'.
        original = onnx.load(str(tiny_models_dir / name), load_external_data=False)
        assert loops_and_doubles(model) == loops_and_doubles(original)


def test_export_refuses_a_portable_variant_without_op_bodies(tmp_path, capsys):
    argv = ["export", "--coarse", "c.pth", "--codec", "k.pth", "--out", str(tmp_path / "m")]
    assert cli.main([*argv, "--no-op-bodies", "--op-bodies-variant", "portable"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("error: --op-bodies-variant must not come with --no-op-bodies, got both")
    assert not (tmp_path / "m").exists()


def test_the_export_flags_variants_are_the_bodies_variants():
    [export] = [
        action.choices["export"]
        for action in cli.build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    [flag] = [a for a in export._actions if a.dest == "op_bodies_variant"]
    assert flag.choices == list(ops_functions.VARIANTS)


def test_a_generator_drives_the_generation_graph_on_openvino(portable_folder):
    path = portable_folder / contracts.GENERATION_FILES["coarse"]
    feed = generation_feed("coarse", dict(temperature=0.8))
    settings = dict(steps=8, seed=-3, temperature=0.8)
    got = vampnet_onnx.Generator(path, session=OpenVINOSession(path)).generate(
        feed["codes"], feed["mask"], **settings
    )
    want = vampnet_onnx.Generator(path).generate(feed["codes"], feed["mask"], **settings)
    np.testing.assert_array_equal(got, want)
