"""The VAMPNET_CUDA_OPS=ON build, where nvcc is present: it compiles, registers the CUDA ops, needs
no CUDA at load time, and its CPU ops give the default build's tokens. The CUDA kernels themselves
run only on a GPU (tests/gpu, docs/building.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

import vampnet_onnx
from conftest import op_model, random_step_problem, sample_feed, step_feed
from vampnet_onnx import ops

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = "libvampnet_onnx_ops.so"


@pytest.fixture(scope="module")
def cuda_library(tmp_path_factory) -> Path:
    """The op library built with -DVAMPNET_CUDA_OPS=ON in a fresh folder (the default
    architectures: sm_90 machine code and one compute_75 PTX, the fewest that cover the lent
    H100/H200 and, through the driver's JIT, every other card; the library alone, no Python
    module, so the build stays short)."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH: the CUDA ops cannot be compiled here")
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    if not sys.platform.startswith("linux"):
        pytest.skip("the CUDA build is checked on Linux")
    build = tmp_path_factory.mktemp("build-cuda-ops")
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"]
    configure += ["-DVAMPNET_CUDA_OPS=ON", "-DVAMPNET_BUILD_PYTHON=OFF"]
    configure += [f"-DCMAKE_CUDA_COMPILER={shutil.which('nvcc')}"]
    if shutil.which("ninja"):
        configure.append("-GNinja")
    if os.environ.get("ONNXRUNTIME_INCLUDE_DIR"):
        configure.append(f"-DONNXRUNTIME_INCLUDE_DIR={os.environ['ONNXRUNTIME_INCLUDE_DIR']}")
    build_command = ["cmake", "--build", str(build), "--target", "vampnet_onnx_ops"]
    for command in (configure, build_command):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build / LIBRARY


def session(library: str | Path, model) -> ort.InferenceSession:
    """A CPU session of `model` with `library` registered."""
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(library))
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )


def dynamic_dependencies(library: Path) -> list[str]:
    """The DT_NEEDED entries of an ELF shared library (readelf -d)."""
    if shutil.which("readelf") is None:
        pytest.skip("readelf not found")
    result = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [
        line.split("[")[1].rstrip("]") for line in result.stdout.splitlines() if "NEEDED" in line
    ]


def test_cuda_build_registers_the_cuda_ops(cuda_library):
    # The default build holds no CUDA ops, the CUDA build does: the ON switch is not a no-op.
    assert b"CUDAExecutionProvider" in cuda_library.read_bytes()
    assert b"CUDAExecutionProvider" not in Path(vampnet_onnx.get_library_path()).read_bytes()


def test_cuda_build_needs_no_cuda_library_at_load_time(cuda_library):
    needed = dynamic_dependencies(cuda_library)
    assert needed, "readelf listed no dependencies at all"
    assert not [name for name in needed if "cuda" in name or "nvrtc" in name], needed


@pytest.mark.parametrize(
    "dtype, temperature, top_k, top_p",
    [(np.float32, 1.0, 0, 1.0), (np.float32, 0.0, 0, 1.0), (np.float16, 0.8, 5, 0.9)],
)
def test_cuda_build_cpu_sample_tokens_matches_default_build(
    cuda_library, dtype, temperature, top_k, top_p
):
    logits_type = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    model = op_model(ops.SAMPLE_TOKENS, input_types={"logits": logits_type})
    logits = (np.random.default_rng(3).standard_normal((6, 40)) * 2).astype(dtype)
    feed = sample_feed(logits, temperature=temperature, top_k=top_k, top_p=top_p, seed=11)
    expected = session(vampnet_onnx.get_library_path(), model).run(None, feed)
    got = session(cuda_library, model).run(None, feed)
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(have, want)


def test_cuda_build_cpu_mask_git_step_matches_default_build(cuda_library):
    model = op_model(ops.MASK_GIT_STEP)
    logits, codes, mask = random_step_problem(np.random.default_rng(5))
    feed = step_feed(logits, codes, mask, step=1, n_steps=4, top_k=8, seed=9)
    expected = session(vampnet_onnx.get_library_path(), model).run(None, feed)
    got = session(cuda_library, model).run(None, feed)
    assert expected[1].any() and not expected[1].all()  # a step that re-masks some positions
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(have, want)
