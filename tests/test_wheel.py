"""The binary wheel installs where no compiler is at hand and runs: `.ci/run` builds and repairs it
and names it in VAMPNET_WHEEL; these tests install it into a fresh virtual environment whose
PATH holds only that environment's bin folder (no cc, c++, cmake: a source build could not
happen) and run the op library and `vampnet-onnx demo` from it.

Without VAMPNET_WHEEL the tests are skipped, except under CI (CI=true), where a missing wheel is
a failure: CI must test the wheel it ships."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

COMPILERS = ("cc", "c++", "gcc", "g++", "clang", "clang++", "cmake")
#: The demo's input length and its output's sample rate (cli._demo).
DEMO_SECONDS = 1
DEMO_SAMPLE_RATE = 44100


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The repaired wheel named by VAMPNET_WHEEL."""
    name = os.environ.get("VAMPNET_WHEEL", "")
    if not name:
        message = "VAMPNET_WHEEL must name the built wheel (.ci/run sets it), got nothing"
        if _under_ci():
            pytest.fail(message)
        pytest.skip(message)
    path = Path(name)
    assert path.is_file(), f"VAMPNET_WHEEL must be an existing file, got {name!r}"
    return path


def _fresh_env(venv: Path) -> dict[str, str]:
    """The environment of a process in `venv`: its bin folder alone on PATH, no compiler
    variables, nothing of the test's own Python environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CC", "CXX", "PYTHONPATH", "PYTHONHOME", "CMAKE_ARGS")
    }
    env["PATH"] = str(venv / "bin")
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel and its export and audio extras installed from
    binary wheels only (the extras: the demo exports its random models with torch)."""
    root = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    env = _fresh_env(root)
    assert [c for c in COMPILERS if shutil.which(c, path=env["PATH"])] == []
    install = [
        str(root / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        # Bytecode for torch's thousands of modules would take half the install: Python writes
        # it for what the demo imports anyway.
        "--no-compile",
        "--only-binary",
        ":all:",
        f"{wheel}[cpu,export,audio]",
    ]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def test_wheel_is_manylinux_on_linux(wheel):
    if not sys.platform.startswith("linux"):
        pytest.skip("manylinux tags are Linux wheels'")
    assert "-manylinux_" in wheel.name, wheel.name


def test_wheel_op_library_registers_from_the_fresh_environment(venv):
    script = (
        "import onnxruntime, vampnet_onnx\n"
        "options = onnxruntime.SessionOptions()\n"
        "options.register_custom_ops_library(vampnet_onnx.get_library_path())\n"
        "print(vampnet_onnx.get_library_path())\n"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        env=_fresh_env(venv),
        capture_output=True,
        text=True,
        cwd=venv,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(venv)


def test_wheel_demo_writes_audible_audio_of_the_input_length(venv, tmp_path):
    env = _fresh_env(venv)
    # A cache of its own: the demo exports its models with the wheel's exporter, not a cached
    # export from another version.
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    out = tmp_path / "demo"
    command = ["vampnet-onnx", "demo", "--seconds", str(DEMO_SECONDS), "--steps", "2"]
    result = subprocess.run(
        [*command, "--out", str(out)], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Python fallback" not in result.stderr
    samples, rate = soundfile.read(out / "out.wav", dtype="float32", always_2d=True)
    assert rate == DEMO_SAMPLE_RATE
    assert samples.shape[0] == DEMO_SECONDS * DEMO_SAMPLE_RATE
    assert np.isfinite(samples).all()
    # Random weights make noise-like audio at normal loudness; silence would be ~0.
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 1e-3
