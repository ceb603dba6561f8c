"""examples/cpp: the C++ embedding example builds against the onnxruntime wheel's shared library,
registers the op library by path, runs test_loop.py's Loop model (both ops) and prints the same
codes as the Python API for the same seed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

import vampnet_onnx
from conftest import random_step_problem
from test_loop import loop_feed, loop_model

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(temperature=0.9, top_k=12, top_p=0.95, mask_temperature=10.5, seed=1234)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """vampnet_onnx_run, built with CMake in a fresh folder."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    build = tmp_path_factory.mktemp("build-example")
    configure = [
        "cmake",
        "-S",
        str(ROOT / "examples" / "cpp"),
        "-B",
        str(build),
        f"-DONNXRUNTIME_LIB_DIR={Path(onnxruntime.__file__).parent / 'capi'}",
    ]
    if shutil.which("ninja"):
        configure.append("-GNinja")
    if os.environ.get("ONNXRUNTIME_INCLUDE_DIR"):
        configure.append(f"-DONNXRUNTIME_INCLUDE_DIR={os.environ['ONNXRUNTIME_INCLUDE_DIR']}")
    for command in (configure, ["cmake", "--build", str(build)]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build / "vampnet_onnx_run"


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """The Loop model and its array inputs as files; the scalar settings go on the command line."""
    root = tmp_path_factory.mktemp("example-inputs")
    logits, codes, mask = random_step_problem(
        np.random.default_rng(4), batch=2, codebooks=4, predicted=3, frames=9, vocab=48
    )
    onnx.save(loop_model(), root / "loop.onnx")
    for name, array in dict(logits=logits, codes=codes, mask=mask).items():
        np.save(root / f"{name}.npy", array)
    return root, (logits, codes, mask)


def run_example(example: Path, root: Path, n_steps: int, settings: dict, *extra: str):
    command = [
        str(example),
        "--library",
        vampnet_onnx.get_library_path(),
        "--model",
        str(root / "loop.onnx"),
        "--threads",
        "2",
        *[f"{name}=@{root / name}.npy" for name in ("logits", "codes", "mask")],
        f"n_steps={n_steps}",
        *[f"{name}={value}" for name, value in settings.items()],
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True)


def parse_outputs(text: str) -> dict[str, np.ndarray]:
    """The example's output: per output a line "NAME TYPE [d0, ...]" and a line of values."""
    lines = text.splitlines()
    outputs = {}
    for header, values in zip(lines[::2], lines[1::2]):
        name, dtype, shape = header.split(" ", 2)
        dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
        parsed = np.float64 if dtype.startswith("float") else np.int64
        outputs[name] = np.array(values.split(), dtype=parsed).astype(dtype).reshape(dims)
    return outputs


@pytest.mark.parametrize("n_steps", [1, 5])
def test_example_prints_the_python_api_codes(example, problem, n_steps):
    root, (logits, codes, mask) = problem
    result = run_example(example, root, n_steps, SETTINGS)
    assert result.returncode == 0, result.stderr
    got = parse_outputs(result.stdout)
    session = vampnet_onnx.create_session(loop_model(), intra_op_threads=2)
    names = [output.name for output in session.get_outputs()]
    want = dict(zip(names, session.run(None, loop_feed(logits, codes, mask, n_steps, SETTINGS))))
    assert list(got) == names
    for name in names:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name])
    assert ((got["codes_final"] >= 0) & (got["codes_final"] < 48)).all()
    assert not got["mask_final"].any()


def test_example_prints_only_the_outputs_asked_for(example, problem):
    root, _ = problem
    result = run_example(example, root, 3, SETTINGS, "--print", "codes_final")
    assert result.returncode == 0, result.stderr
    assert list(parse_outputs(result.stdout)) == ["codes_final"]


def test_example_reports_op_errors_in_house_format(example, problem):
    root, _ = problem
    result = run_example(example, root, 3, dict(SETTINGS, top_p=3.0))
    assert result.returncode == 1
    assert "top_p must be in (0, 1], got 3" in result.stderr


def test_example_names_a_missing_input(example, problem):
    root, _ = problem
    settings = {k: v for k, v in SETTINGS.items() if k != "seed"}
    result = run_example(example, root, 3, settings)
    assert result.returncode == 1
    assert "vampnet_onnx_run: input 'seed' must be given as seed=VALUE" in result.stderr


def test_example_runs_an_exported_generation_graph_like_the_generator(example, tmp_path):
    """The same program runs the real thing: a (tiny) coarse.generate.onnx exported from
    checkpoints, and prints the codes vampnet_onnx.Generator returns for the same seed."""
    from vampnet_onnx import configs, testing
    from vampnet_onnx.export.generation import export_generation
    from vampnet_onnx.export.transformer import export_transformer

    ckpt = testing.write_vampnet_checkpoint(tmp_path / "coarse.pth", configs.TINY_COARSE_KWARGS)
    codec = testing.write_codec_checkpoint(tmp_path / "codec.pth", configs.TINY_CODEC_KWARGS)
    transformer = export_transformer(ckpt, codec, tmp_path / "coarse.onnx").path
    graph = export_generation(transformer, tmp_path / "coarse.generate.onnx").path
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 1024, (1, 4, 20)).astype(np.int64)
    mask = rng.random((1, 4, 20)) < 0.7
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "mask.npy", mask)
    settings = dict(
        n_steps=6,
        temperature=1.0,
        top_k=0,
        top_p=0.9,
        mask_temperature=10.5,
        seed=77,
        batch_offset=3,
    )
    command = [
        str(example),
        "--library",
        vampnet_onnx.get_library_path(),
        "--model",
        str(graph),
        f"codes=@{tmp_path / 'codes.npy'}",
        f"mask=@{tmp_path / 'mask.npy'}",
        *[f"{name}={value}" for name, value in settings.items()],
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    got = parse_outputs(result.stdout)["codes_out"]
    want = vampnet_onnx.Generator(graph).generate(
        codes, mask, steps=6, top_p=0.9, mask_temperature=10.5, seed=77, batch_offset=3
    )
    np.testing.assert_array_equal(got, want)


def test_example_runs_the_single_graph_vamp(example, tiny_models_dir, tmp_path):
    """Single-graph deployment: one vamp.onnx plus the op library, run by the C++ app, gives the
    Python session's audio and codes."""
    from vampnet_onnx import audio, contracts

    x, _ = audio.preprocess(np.random.default_rng(2).standard_normal(30000) * 0.1, 44100)
    np.save(tmp_path / "audio.npy", x)
    settings = contracts.VAMP_DEFAULTS | dict(n_steps=3, seed=21, dropout=0.2, top_k=30)
    command = [
        str(example),
        "--library",
        vampnet_onnx.get_library_path(),
        "--model",
        str(tiny_models_dir / "vamp.onnx"),
        "--print",
        "codes_out",
        "--print",
        "audio_out",
        f"audio=@{tmp_path / 'audio.npy'}",
        *[f"{name}={value}" for name, value in settings.items()],
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    got = parse_outputs(result.stdout)
    session = vampnet_onnx.create_session(tiny_models_dir / "vamp.onnx")
    codes_out, audio_out = session.run(
        ["codes_out", "audio_out"], {"audio": x, **contracts.VAMP.feed(**settings)}
    )
    np.testing.assert_array_equal(got["codes_out"], codes_out)
    np.testing.assert_array_equal(got["audio_out"], audio_out)


def run_vamp(example, model, x_path, settings, *flags):
    command = [str(example), *flags, "--model", str(model), "--print", "codes_out"]
    command += [f"audio=@{x_path}", *[f"{name}={value}" for name, value in settings.items()]]
    return subprocess.run(command, capture_output=True, text=True)


def test_example_runs_the_single_graph_vamp_without_the_library(example, tiny_models_dir, tmp_path):
    """--no-library: vamp.onnx runs the bodies it carries, and gives the library's codes."""
    from vampnet_onnx import audio, contracts

    x, _ = audio.preprocess(np.random.default_rng(2).standard_normal(30000) * 0.1, 44100)
    np.save(tmp_path / "audio.npy", x)
    settings = contracts.VAMP_DEFAULTS | dict(n_steps=3, seed=21, dropout=0.2, top_k=30)
    model = tiny_models_dir / "vamp.onnx"
    result = run_vamp(example, model, tmp_path / "audio.npy", settings, "--no-library")
    assert result.returncode == 0, result.stderr
    session = vampnet_onnx.create_session(model)
    [codes_out] = session.run(["codes_out"], {"audio": x, **contracts.VAMP.feed(**settings)})
    np.testing.assert_array_equal(parse_outputs(result.stdout)["codes_out"], codes_out)


def test_example_refuses_library_with_no_library(example, tiny_models_dir, tmp_path):
    flags = ["--library", vampnet_onnx.get_library_path(), "--no-library"]
    result = run_vamp(example, tiny_models_dir / "vamp.onnx", tmp_path / "a.npy", {}, *flags)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "vampnet_onnx_run: --library must not come with --no-library, got both"
    )


def test_example_without_the_library_names_the_op_a_graph_without_bodies_needs(example, problem):
    root, _ = problem  # loop.onnx: the ops' nodes and no bodies
    command = [str(example), "--no-library", "--model", str(root / "loop.onnx")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert "vampnet_onnx_run: onnxruntime:" in result.stderr
    assert "MaskGitStep" in result.stderr
