"""Step graphs (``export --step-graphs``, `export.generation.build_step_model`): one iteration
of the generation graph's loop, run once per step by `Generator` (its own onnxruntime session
or a session it is given). The generation graph's codes are the reference."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

import vampnet_onnx
from vampnet_onnx import contracts
from vampnet_onnx.export.common import attach_op_bodies
from vampnet_onnx.export.generation import export_step

N_CODEBOOKS = {"coarse": (4, 0), "c2f": (14, 4)}


@pytest.fixture(scope="module", params=["coarse", "c2f"])
def graphs(request, tiny_models_dir, tmp_path_factory):
    """One kind's generation graph (the tiny export's) and its step graphs: with the op
    bodies attached (export's default) and with them inlined."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"{kind}_step")
    transformer = shutil.copy(tiny_models_dir / contracts.TRANSFORMER_FILES[kind], root)
    step = export_step(transformer, root / contracts.STEP_FILES[kind]).path
    inlined = shutil.copy(step, root / f"{kind}.step.inlined.onnx")
    assert attach_op_bodies(step) and attach_op_bodies(inlined, inline=True)
    return {
        "kind": kind,
        "generate": tiny_models_dir / contracts.GENERATION_FILES[kind],
        "step": step,
        "inlined": inlined,
    }


def problem(kind, batch, frames, seed):
    """Random prompt codes and a mask (conditioning codebooks unmasked)."""
    rng = np.random.default_rng(seed)
    n_codebooks, n_conditioning = N_CODEBOOKS[kind]
    codes = rng.integers(0, 1024, (batch, n_codebooks, frames))
    mask = rng.random(codes.shape) < 0.7
    mask[:, :n_conditioning] = False
    return codes, mask


CASES = [
    (1, 23, 6, dict(seed=0)),
    (2, 17, 5, dict(seed=3, temperature=0.8, top_p=0.9)),
    (2, 11, 4, dict(seed=-12, top_k=20, mask_temperature=3.0, batch_offset=5)),
    (2, 9, 3, dict(seed=[7, -3], batch_offset=[2**32 - 1, 0])),
    (2, 13, 4, dict(temperature=0.0, mask_temperature=0.0)),
]


@pytest.mark.parametrize("batch, frames, steps, settings", CASES)
def test_the_step_loop_gives_the_codes_of_the_generation_graph(
    graphs, batch, frames, steps, settings
):
    codes, mask = problem(graphs["kind"], batch, frames, seed=frames)
    step = vampnet_onnx.Generator(graphs["step"], threads=2)
    assert step.mode == "step-graph"
    want = vampnet_onnx.Generator(graphs["generate"], threads=2).generate(
        codes, mask, steps=steps, **settings
    )
    np.testing.assert_array_equal(step.generate(codes, mask, steps=steps, **settings), want)


def test_one_run_is_one_slice_of_the_generation_graph(graphs):
    """Step 2 of 5 from the same codes, mask and N0: the same codes and mask as the generation
    graph's slice [2, 3)."""
    codes, mask = problem(graphs["kind"], 2, 12, seed=1)
    settings = dict(n_steps=5, temperature=0.7, top_k=0, top_p=1.0, mask_temperature=10.5)
    settings |= dict(seed=4, batch_offset=0, n_masked_start=mask.sum(axis=(1, 2)) + 3)
    step_feed = contracts.GENERATION_STEP.feed(step=2, **settings)
    slice_feed = contracts.GENERATION.feed(first_step=2, last_step=3, **settings)
    step = vampnet_onnx.create_session(graphs["step"]).run(
        None, {"codes": codes, "mask": mask, **step_feed}
    )
    sliced = vampnet_onnx.create_session(graphs["generate"]).run(
        ["codes_out", "mask_out"], {"codes": codes, "mask": mask, **slice_feed}
    )
    for got, want in zip(step, sliced):
        np.testing.assert_array_equal(got, want)


def test_the_step_graph_has_the_contracts_inputs_and_outputs(graphs):
    graph = onnx.load(str(graphs["step"]), load_external_data=False).graph
    assert [value.name for value in graph.input] == contracts.GENERATION_STEP.input_names
    assert [value.name for value in graph.output] == contracts.GENERATION_STEP.output_names
    n_codebooks = N_CODEBOOKS[graphs["kind"]][0]
    codes = graph.input[0].type.tensor_type.shape.dim
    # The transformer's own codebook count, not a symbol that contradicts it (tract refuses).
    assert [d.dim_param or d.dim_value for d in codes] == ["batch", n_codebooks, "time"]


def test_the_inlined_step_graph_gives_the_same_codes(graphs):
    """Bodies inlined, no op node left: onnxruntime runs the standard ops, same bits."""
    model = onnx.load(str(graphs["inlined"]), load_external_data=False)
    assert not any(node.domain == vampnet_onnx.DOMAIN for node in model.graph.node)
    codes, mask = problem(graphs["kind"], 2, 10, seed=2)
    settings = dict(steps=3, seed=5, temperature=0.9)
    np.testing.assert_array_equal(
        vampnet_onnx.Generator(graphs["inlined"], threads=2).generate(codes, mask, **settings),
        vampnet_onnx.Generator(graphs["step"], threads=2).generate(codes, mask, **settings),
    )


class CountingSession:
    """An onnxruntime session behind the plain ``run(output_names, feed)`` interface, counting
    its runs: what a foreign runtime's wrapper (portable.TractSession) looks like."""

    def __init__(self, path):
        self.session = vampnet_onnx.create_session(path)
        self.runs = 0

    def run(self, output_names, feed):
        self.runs += 1
        return self.session.run(output_names, feed)


def test_a_given_session_runs_the_step_graph_once_per_step(graphs):
    codes, mask = problem(graphs["kind"], 2, 15, seed=3)
    session = CountingSession(graphs["step"])
    generator = vampnet_onnx.Generator(graphs["step"], session=session)
    assert generator.mode == "step-graph"
    got = generator.generate(codes, mask, steps=4, seed=8, temperature=0.6)
    assert session.runs == 4
    want = vampnet_onnx.Generator(graphs["generate"]).generate(
        codes, mask, steps=4, seed=8, temperature=0.6
    )
    np.testing.assert_array_equal(got, want)


def test_a_given_session_runs_the_generation_graph_once(graphs):
    codes, mask = problem(graphs["kind"], 2, 15, seed=3)
    session = CountingSession(graphs["generate"])
    generator = vampnet_onnx.Generator(graphs["generate"], session=session)
    got = generator.generate(codes, mask, steps=4, seed=8, temperature=0.6)
    assert session.runs == 1
    want = vampnet_onnx.Generator(graphs["generate"]).generate(
        codes, mask, steps=4, seed=8, temperature=0.6
    )
    np.testing.assert_array_equal(got, want)


def test_a_given_session_must_not_come_with_a_transformer_graph(graphs, tiny_models_dir):
    transformer = tiny_models_dir / contracts.TRANSFORMER_FILES[graphs["kind"]]
    session = CountingSession(transformer)
    with pytest.raises(
        ValueError, match=r"Generator: session must come with a generation or step graph, got"
    ):
        vampnet_onnx.Generator(transformer, session=session)


@pytest.mark.parametrize(
    "session, options",
    [
        (object(), {}),
        ("counting", {"device": "cpu"}),
        ("counting", {"io_binding": True}),
    ],
)
def test_a_given_session_must_run_and_come_alone(graphs, session, options):
    if session == "counting":
        session = CountingSession(graphs["step"])
    with pytest.raises(
        ValueError, match=r"^Generator: session must be an object with run\(output_names, feed\)"
    ):
        vampnet_onnx.Generator(graphs["step"], session=session, **options)


def test_io_binding_is_refused_for_a_step_graph(graphs):
    with pytest.raises(ValueError, match="must be False for a generation or step graph"):
        vampnet_onnx.Generator(graphs["step"], io_binding=True)


def test_the_step_loop_ticks_once_per_step(graphs):
    codes, mask = problem(graphs["kind"], 1, 8, seed=4)
    ticks = []
    vampnet_onnx.Generator(graphs["step"]).generate(codes, mask, steps=3, on_steps=ticks.append)
    assert ticks == [1, 1, 1]


def test_an_int8_step_graph_gives_the_codes_of_the_int8_generation_graph(graphs, tmp_path):
    from vampnet_onnx.export.generation import export_generation
    from vampnet_onnx.export.precision import convert_transformer

    transformer = shutil.copy(
        graphs["generate"].with_name(contracts.TRANSFORMER_FILES[graphs["kind"]]), tmp_path
    )
    convert_transformer(transformer, "int8")
    step = export_step(transformer, tmp_path / "step.onnx").path
    generate = export_generation(transformer, tmp_path / "generate.onnx").path
    codes, mask = problem(graphs["kind"], 2, 10, seed=6)
    settings = dict(steps=3, seed=2, temperature=0.8)
    np.testing.assert_array_equal(
        vampnet_onnx.Generator(step).generate(codes, mask, **settings),
        vampnet_onnx.Generator(generate).generate(codes, mask, **settings),
    )
