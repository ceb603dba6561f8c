"""The whole generation loop in one graph: against the Python loop, against a from-spec
reference of VampNet's generate, invariants, the fallback, and the Generator API's errors."""

import json
import math

import numpy as np
import onnx
import onnxruntime
import pytest

import vampnet_onnx
from numpy_forward import load_raw, vampnet_logits
from vampnet_onnx import configs, contracts, ops, reference, testing
from vampnet_onnx.export.generation import export_generation
from vampnet_onnx.export.transformer import export_transformer

KWARGS = {"coarse": configs.TINY_COARSE_KWARGS, "c2f": configs.TINY_C2F_KWARGS}


@pytest.fixture(scope="module")
def codec_path(tmp_path_factory):
    return testing.write_codec_checkpoint(
        tmp_path_factory.mktemp("codec") / "codec.pth", configs.TINY_CODEC_KWARGS, seed=5
    )


@pytest.fixture(scope="module", params=["coarse", "c2f"])
def models(request, tmp_path_factory, codec_path):
    """Paths of one kind's checkpoint, transformer and generation graphs (plain, traced,
    batch-coupled)."""
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    ckpt = testing.write_vampnet_checkpoint(root / f"{kind}.pth", KWARGS[kind], seed=11)
    transformer = export_transformer(ckpt, codec_path, root / f"{kind}.onnx").path
    paths = {"kind": kind, "checkpoint": ckpt, "codec": codec_path, "transformer": transformer}
    for name, options in [
        ("graph", {}),
        ("trace", {"trace": True}),
        ("coupled", {"batch_coupled": True}),
    ]:
        paths[name] = export_generation(transformer, root / f"{kind}.{name}.onnx", **options).path
    return paths


def problem(kind, batch, frames, seed, mask_rate=0.7):
    """Random prompt codes and a mask (conditioning codebooks of c2f unmasked)."""
    rng = np.random.default_rng(seed)
    n_codebooks = KWARGS[kind]["n_codebooks"]
    codes = rng.integers(0, 1024, (batch, n_codebooks, frames))
    mask = rng.random((batch, n_codebooks, frames)) < mask_rate
    mask[:, : KWARGS[kind]["n_conditioning_codebooks"]] = False
    return codes, mask


CASES = [
    (1, 40, 6, dict(seed=0)),
    (2, 17, 5, dict(seed=3, temperature=0.8, top_p=0.9)),
    (3, 9, 4, dict(seed=-12, top_k=20, mask_temperature=3.0)),
    (1, 1, 3, dict(seed=1)),
    (2, 11, 4, dict(seed=5, batch_offset=2**32 - 2)),
]


@pytest.mark.parametrize("batch, frames, steps, settings", CASES)
def test_single_graph_equals_the_python_loop(models, batch, frames, steps, settings):
    codes, mask = problem(models["kind"], batch, frames, seed=frames)
    graph = vampnet_onnx.Generator(models["graph"], threads=2)
    loop = vampnet_onnx.Generator(models["transformer"], threads=2)
    assert (graph.mode, loop.mode) == ("graph", "python-loop")
    np.testing.assert_array_equal(
        graph.generate(codes, mask, steps=steps, **settings),
        loop.generate(codes, mask, steps=steps, **settings),
    )


def test_chunks_with_batch_offset_equal_one_batch(models):
    """A batch generated item by item, each call passing its index as batch_offset, equals the
    one-call batch (per-item schedule)."""
    codes, mask = problem(models["kind"], 3, 12, seed=4)
    graph = vampnet_onnx.Generator(models["graph"], threads=2)
    whole = graph.generate(codes, mask, steps=4, seed=9)
    for b in range(3):
        one = graph.generate(codes[b : b + 1], mask[b : b + 1], steps=4, seed=9, batch_offset=b)
        np.testing.assert_array_equal(one, whole[b : b + 1])


#: Per-item keys for a batch of 3: the extremes of the stream index and a repeated seed.
ITEM_KEYS = dict(seed=[7, -3, 7], batch_offset=[5, 0, 2**32 - 1])


@pytest.mark.parametrize("mode", ["graph", "steps", "transformer", "bound", "fallback"])
def test_per_item_keys_give_each_item_the_codes_of_its_own_run(models, mode):
    """seed and batch_offset per item: item b of one batch equals a one-item run with seed[b]
    and batch_offset[b], in one graph run, one run per step, the Python loop (plain and with
    IO binding) and the Python fallback."""
    codes, mask = problem(models["kind"], 3, 13, seed=8)
    single = vampnet_onnx.Generator(models["graph"], threads=2)
    path = models["transformer" if mode in ("transformer", "bound") else "graph"]
    batched = vampnet_onnx.Generator(
        path, threads=2, python_ops=mode == "fallback", io_binding=mode == "bound"
    )
    on_steps = (lambda n: None) if mode == "steps" else None
    got = batched.generate(codes, mask, steps=4, on_steps=on_steps, **ITEM_KEYS)
    for b in range(3):
        one = single.generate(
            codes[b : b + 1],
            mask[b : b + 1],
            steps=4,
            seed=ITEM_KEYS["seed"][b],
            batch_offset=ITEM_KEYS["batch_offset"][b],
        )
        np.testing.assert_array_equal(got[b : b + 1], one)


@pytest.mark.parametrize("batch, frames, steps, settings", CASES)
def test_step_by_step_graph_runs_equal_one_run(models, batch, frames, steps, settings):
    """With a step callback the graph runs one step per call (its slice inputs): the same
    tokens as every step in one call, and one tick per step."""
    codes, mask = problem(models["kind"], batch, frames, seed=frames)
    graph = vampnet_onnx.Generator(models["graph"], threads=2)
    assert graph.sliceable
    ticks = []
    sliced = graph.generate(codes, mask, steps=steps, on_steps=ticks.append, **settings)
    np.testing.assert_array_equal(sliced, graph.generate(codes, mask, steps=steps, **settings))
    assert ticks == [1] * steps


def test_a_slice_continues_from_the_codes_and_mask_it_is_given(models):
    """Steps 0-2 then 3-6 through the graph's inputs equal steps 0-6 at once, and the mask
    returned after step 2 is the one the trace shows."""
    codes, mask = problem(models["kind"], 2, 15, seed=3)
    session = vampnet_onnx.create_session(models["trace"])
    settings = {**contracts.GENERATION_DEFAULTS, "n_steps": 7, "seed": 4}
    feed = {"codes": codes.astype(np.int64), "mask": mask, **contracts.GENERATION.feed(**settings)}
    whole, per_step = session.run(["codes_out", "mask_per_step"], feed)
    n0 = mask.sum(axis=(1, 2))
    first = feed | contracts.GENERATION.feed(first_step=0, last_step=3, n_masked_start=n0)
    codes_3, mask_3 = session.run(["codes_out", "mask_out"], first)
    np.testing.assert_array_equal(mask_3, per_step[2])
    rest = feed | {"codes": codes_3, "mask": mask_3}
    rest |= contracts.GENERATION.feed(first_step=3, last_step=-1, n_masked_start=n0)
    np.testing.assert_array_equal(session.run(["codes_out"], rest)[0], whole)


@pytest.mark.parametrize("batch, frames, steps, settings", CASES)
def test_the_io_binding_loop_equals_the_single_graph(models, batch, frames, steps, settings):
    codes, mask = problem(models["kind"], batch, frames, seed=frames)
    graph = vampnet_onnx.Generator(models["graph"], threads=2)
    bound = vampnet_onnx.Generator(models["transformer"], threads=2, io_binding=True)
    assert (bound.mode, bound.io_binding) == ("python-loop", True)
    np.testing.assert_array_equal(
        bound.generate(codes, mask, steps=steps, **settings),
        graph.generate(codes, mask, steps=steps, **settings),
    )


def test_the_io_binding_loop_gives_each_call_its_own_codes_across_shapes(models):
    """Calls of other shapes in between, a call again on the same shape, and the arrays of
    earlier calls afterwards: each is the codes of a fresh generator. Without a CUDA graph
    only the last shape's buffers are kept."""
    problems = [problem(models["kind"], b, t, seed=t) for b, t in ((2, 9), (1, 14), (2, 9), (2, 9))]
    bound = vampnet_onnx.Generator(models["transformer"], io_binding=True)
    got = [bound.generate(c, m, steps=3, seed=i) for i, (c, m) in enumerate(problems)]
    assert list(bound._bound._by_shape) == [problems[-1][0].shape]
    for i, (codes, mask) in enumerate(problems):
        fresh = vampnet_onnx.Generator(models["transformer"], io_binding=True)
        np.testing.assert_array_equal(got[i], fresh.generate(codes, mask, steps=3, seed=i))


def test_the_io_binding_loop_counts_steps_and_couples_a_batch_as_asked(models):
    codes, mask = problem(models["kind"], 2, 20, seed=4)
    graph = vampnet_onnx.Generator(models["coupled"])
    bound = vampnet_onnx.Generator(models["transformer"], batch_coupled=True, io_binding=True)
    ticks = []
    np.testing.assert_array_equal(
        bound.generate(codes, mask, steps=5, seed=2, on_steps=ticks.append),
        graph.generate(codes, mask, steps=5, seed=2),
    )
    assert ticks == [1] * 5


def test_the_io_binding_loop_runs_the_python_fallback(models):
    codes, mask = problem(models["kind"], 1, 10, seed=10)
    native = vampnet_onnx.Generator(models["graph"])
    fallback = vampnet_onnx.Generator(models["transformer"], python_ops=True, io_binding=True)
    np.testing.assert_array_equal(
        fallback.generate(codes, mask, steps=3, seed=6),
        native.generate(codes, mask, steps=3, seed=6),
    )


BAD_LOOP_OPTIONS = [
    ("graph", {"io_binding": True}, ValueError, "io_binding and cuda_graph must be False for a"),
    ("transformer", {"io_binding": 1}, TypeError, "io_binding must be a bool, got 1"),
    (
        "transformer",
        {"cuda_graph": True},
        ValueError,
        r"cuda_graph needs device='cuda' \(and no providers\), got device=None",
    ),
    (
        "transformer",
        {"cuda_graph": True, "device": "cpu"},
        ValueError,
        "cuda_graph needs device='cuda'",
    ),
]


@pytest.mark.parametrize("case", range(len(BAD_LOOP_OPTIONS)))
def test_generator_rejects_loop_options_that_cannot_apply(models, case):
    graph, options, error, message = BAD_LOOP_OPTIONS[case]
    with pytest.raises(error, match=f"Generator: {message}"):
        vampnet_onnx.Generator(models[graph], **options)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="this onnxruntime has CUDA",
)
def test_a_cuda_graph_without_cuda_says_why(models):
    with pytest.raises(ValueError, match="Generator: device 'cuda' needs onnxruntime's CUDA"):
        vampnet_onnx.Generator(models["transformer"], device="cuda", cuda_graph=True)


def test_batch_coupled_graph_equals_the_coupled_python_loop(models):
    codes, mask = problem(models["kind"], 2, 20, seed=4)
    graph = vampnet_onnx.Generator(models["coupled"])
    loop = vampnet_onnx.Generator(models["transformer"], batch_coupled=True)
    np.testing.assert_array_equal(
        graph.generate(codes, mask, steps=5, seed=2), loop.generate(codes, mask, steps=5, seed=2)
    )


def spec_generate(checkpoint, codec, z, mask, n_steps, batch_coupled):
    """VampNet's generate (docs/model.md §3.2) on its deterministic path (argmax tokens, no Gumbel
    noise), written from the spec over the independent float64 numpy forward: upstream logits
    layout [B, V, T * P], time-major flattening, float32 probabilities, schedule and re-mask
    rule. N0 is per item unless batch_coupled (upstream counts it over the whole batch)."""
    sd, kwargs = load_raw(checkpoint)
    codec_sd, _ = load_raw(codec)
    vocab, ncc = kwargs["vocab_size"], kwargs["n_conditioning_codebooks"]
    batch, n_codebooks, frames = z.shape
    n_pred = n_codebooks - ncc

    def flatten(x):  # [B, P, T] -> [B, T * P], index t * P + c
        return x.transpose(0, 2, 1).reshape(batch, -1)

    def unflatten(x):
        return x.reshape(batch, frames, n_pred).transpose(0, 2, 1)

    zm = np.where(mask, vocab, z)
    n0 = (zm == vocab).sum(axis=(1, 2))
    if batch_coupled:
        n0 = np.full(batch, n0.sum())
    for i in range(n_steps):
        r = np.float32((i + 1) / n_steps)
        logits = vampnet_logits(sd, kwargs, codec_sd, zm).astype(np.float32).transpose(0, 2, 1)
        tokens = logits.argmax(axis=-1)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
        chosen = np.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]
        zf = flatten(zm[:, ncc:])
        masked = zf == vocab
        tokens = np.where(masked, tokens, zf)
        chosen = np.where(masked, chosen, np.float32(np.inf))
        gamma = np.float32(math.cos(np.float32(r * np.float32(math.pi)) / np.float32(2)))
        gamma = min(max(gamma, np.float32(1e-10)), np.float32(1))
        new_zf = np.empty_like(zf)
        for b in range(batch):
            k = int(np.floor(gamma * np.float32(n0[b])))
            if i != n_steps - 1:
                k = max(1, min(int(masked[b].sum()) - 1, k))
            confidence = np.log(chosen[b])  # mask_temperature 0: no noise
            cut = np.sort(confidence)[k]
            new_zf[b] = np.where(confidence < cut, vocab, tokens[b])
        zm = np.concatenate([z[:, :ncc], unflatten(new_zf)], axis=1)
    return np.concatenate([z[:, :ncc], unflatten(tokens)], axis=1)


@pytest.mark.parametrize("batch, coupled", [(1, False), (2, True)])
def test_deterministic_mode_matches_a_from_spec_reference(models, batch, coupled):
    codes, mask = problem(models["kind"], batch, 24, seed=7)
    generator = vampnet_onnx.Generator(models["coupled" if coupled else "graph"])
    got = generator.generate(codes, mask, steps=6, temperature=0.0, mask_temperature=0.0)
    want = spec_generate(models["checkpoint"], models["codec"], codes, mask, 6, coupled)
    np.testing.assert_array_equal(got, want)


def test_trace_follows_the_schedule_and_keeps_the_prompt(models):
    kind = models["kind"]
    codes, mask = problem(kind, 2, 30, seed=8)
    session = vampnet_onnx.create_session(models["trace"])
    steps = 7
    feed = {
        "codes": codes.astype(np.int64),
        "mask": mask,
        **contracts.GENERATION.feed(
            **{**contracts.GENERATION_DEFAULTS, "n_steps": steps, "seed": 3}
        ),
    }
    final, codes_per_step, mask_per_step = session.run(
        ["codes_out", "codes_per_step", "mask_per_step"], feed
    )
    assert codes_per_step.shape == (steps, *codes.shape)
    np.testing.assert_array_equal(codes_per_step[-1], final)
    n0 = mask.sum(axis=(1, 2))
    for b in range(2):
        remaining = n0[b]
        for step in range(steps):
            remaining = reference.n_to_mask(step, steps, int(n0[b]), int(remaining))
            assert mask_per_step[step, b].sum() == remaining
            np.testing.assert_array_equal(codes_per_step[step, b][~mask[b]], codes[b][~mask[b]])
            assert not (mask_per_step[step, b] & ~mask[b]).any()
    assert not mask_per_step[-1].any()
    assert ((final >= 0) & (final < 1024)).all()


def test_one_step_generates_everything(models):
    codes, mask = problem(models["kind"], 2, 12, seed=9)
    out = vampnet_onnx.Generator(models["graph"]).generate(codes, mask, steps=1, seed=4)
    np.testing.assert_array_equal(out[~mask], codes[~mask])
    assert ((out >= 0) & (out < 1024)).all()


def test_graph_is_checked_and_stores_the_weights_once(models):
    model = onnx.load(str(models["graph"]))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == contracts.GENERATION.input_names
    assert [o.name for o in model.graph.output] == ["codes_out", "mask_out"]
    size, weights = models["graph"].stat().st_size, models["transformer"].stat().st_size
    assert size < weights * 1.01 + 20_000
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props[contracts.GENERATION_KEY])["defaults"] == contracts.GENERATION_DEFAULTS
    assert json.loads(props[contracts.CONFIG_KEY])["kind"] == models["kind"]


def test_python_fallback_gives_the_same_codes(models):
    codes, mask = problem(models["kind"], 1, 10, seed=10)
    native = vampnet_onnx.Generator(models["graph"], python_ops=False)
    fallback = vampnet_onnx.Generator(models["graph"], python_ops=True)
    np.testing.assert_array_equal(
        native.generate(codes, mask, steps=3, seed=6),
        fallback.generate(codes, mask, steps=3, seed=6),
    )


def test_zero_steps_in_the_graph_is_an_error_not_the_prompt(models):
    codes, mask = problem(models["kind"], 1, 5, seed=1)
    session = vampnet_onnx.create_session(models["graph"])
    feed = {
        "codes": codes.astype(np.int64),
        "mask": mask,
        **contracts.GENERATION.feed(**{**contracts.GENERATION_DEFAULTS, "n_steps": 0}),
    }
    with pytest.raises(Exception, match="MaskGitStep: n_steps must be >= 1, got 0"):
        session.run(None, feed)


def test_progress_bar_mode_gives_the_same_codes(models, capsys):
    codes, mask = problem(models["kind"], 1, 8, seed=2)
    loop = vampnet_onnx.Generator(models["transformer"])
    quiet = loop.generate(codes, mask, steps=3, seed=1)
    shown = loop.generate(codes, mask, steps=3, seed=1, progress=True)
    np.testing.assert_array_equal(quiet, shown)
    assert "generate" in capsys.readouterr().err


BAD_CALLS = [
    (lambda c, m: (c[:, :2], m[:, :2]), {}, r"codes must have shape \[B, \d+, T\], got"),
    (lambda c, m: (c, m[..., :3]), {}, "mask must have the shape of codes"),
    (lambda c, m: (c.astype(np.float32), m), {}, "codes must be an integer array, got float32"),
    (
        lambda c, m: (np.where(m, c, 1024), np.zeros_like(m)),
        {},
        r"codes must be in \[0, 1024\) where mask is false, got 1024 at",
    ),
    (lambda c, m: (c, m.astype(np.int64) * 2), {}, "mask must be bool or 0/1 integers"),
    (lambda c, m: (c, m), {"steps": 0}, "steps must be an int >= 1, got 0"),
    (lambda c, m: (c, m), {"top_p": 1.5}, r"top_p must be None or in \(0, 1\], got 1.5"),
    (lambda c, m: (c, m), {"top_k": -1}, "top_k must be None or an int >= 0, got -1"),
    (lambda c, m: (c, m), {"temperature": float("nan")}, "temperature must be a finite number"),
    (lambda c, m: (c, m), {"mask_temperature": -1.0}, "mask_temperature must be a finite"),
    (lambda c, m: (c, m), {"seed": 2**64}, "seed must be an int64"),
    (
        lambda c, m: (c, m),
        {"batch_offset": 2**32},
        r"batch_offset must be an int in \[0, 2\*\*32 - B = 4294967295\], got 4294967296",
    ),
    (
        lambda c, m: (c, m),
        {"seed": [1, 2]},
        r"seed must be an int or a sequence of B = 1 ints, got \[1, 2\]",
    ),
    (lambda c, m: (c, m), {"seed": [2**63]}, "seed must be an int64, got 9223372036854775808"),
    (
        lambda c, m: (c, m),
        {"batch_offset": [-1]},
        r"batch_offset must hold ints in \[0, 2\*\*32 - 1\], got -1",
    ),
]


@pytest.mark.parametrize("case", range(len(BAD_CALLS)))
def test_generate_rejects_bad_input_with_clear_errors(models, case):
    change, settings, message = BAD_CALLS[case]
    codes, mask = problem(models["kind"], 1, 6, seed=3)
    codes, mask = change(codes, mask)
    with pytest.raises((ValueError, TypeError), match=f"Generator.generate: {message}"):
        vampnet_onnx.Generator(models["graph"]).generate(codes, mask, **settings)


def test_masked_conditioning_codebooks_are_rejected(models):
    if models["kind"] != "c2f":
        pytest.skip("only the coarse-to-fine model has conditioning codebooks")
    codes, mask = problem("c2f", 1, 6, seed=3)
    mask[0, 2, 4] = True
    with pytest.raises(
        ValueError,
        match=r"mask must be false in the 4 conditioning codebooks, "
        r"got true at \[0, 2, 4\]",
    ):
        vampnet_onnx.Generator(models["graph"]).generate(codes, mask)


def test_generator_refuses_other_graphs(tmp_path):
    from conftest import op_model

    path = tmp_path / "op.onnx"
    onnx.save(op_model(ops.SAMPLE_TOKENS), str(path))
    with pytest.raises(ValueError, match="Generator: path must be a vampnet_onnx export"):
        vampnet_onnx.Generator(path)


def test_generator_names_what_an_older_generation_graph_lacks(models, tmp_path):
    """A generation graph from before an input was added gets an error that says so."""
    model = onnx.load(str(models["graph"]))
    kept = [i for i in model.graph.input if i.name != "batch_offset"]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    zero = onnx.helper.make_tensor("batch_offset", onnx.TensorProto.INT64, [], [0])
    model.graph.initializer.append(zero)  # the graph stays valid; the input is gone
    path = tmp_path / "old.generate.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="missing batch_offset: exported by an older vampnet-onnx"):
        vampnet_onnx.Generator(path)


def test_loop_invariant_work_is_hoisted_out_of_the_body(models):
    """The relative position bias depends only on T: it is computed once, before the loop, and
    every node left in the body reads something that changes from step to step."""
    model = onnx.load(str(models["graph"]))
    [loop] = [n for n in model.graph.node if n.op_type == "Loop"]
    body = loop.attribute[0].g
    varying = {i.name for i in body.input}
    for node in body.node:
        assert any(name in varying for name in node.input if name), node.name
        varying.update(node.output)
    hoisted = {n.op_type for n in model.graph.node}
    assert "Gather" in hoisted  # the bias table lookup


def test_the_graph_requires_what_the_contract_and_docs_say(models):
    """docs/generation.md gave batch_offset a default the graph did not have: every input but
    the slice ones is required, the slice ones are overridable initializers."""
    session = vampnet_onnx.create_session(models["graph"])
    required = contracts.GENERATION.required_input_names
    assert [i.name for i in session.get_inputs()] == required and "batch_offset" in required
    defaults = {i.name for i in session.get_overridable_initializers()}
    assert defaults == set(contracts.SLICE_DEFAULTS)
