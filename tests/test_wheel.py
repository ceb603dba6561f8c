"""The binary wheel installs where no compiler is at hand and runs: `.ci/run` builds and repairs it
and names it in VAMPNET_WHEEL; these tests install it into a fresh virtual environment whose
PATH holds only that environment's bin folder (no cc, c++, cmake: a source build could not
happen) and run the op library and `vampnet-onnx demo` from it.

Without VAMPNET_WHEEL the tests are skipped, except under CI (CI=true), where a missing wheel is
a failure: CI must test the wheel it ships."""

from __future__ import annotations

import os
import re
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
    """A fresh virtual environment with the wheel and its export, audio and test extras
    installed from binary wheels only (the demo exports its random models with torch; the op
    tests run in it)."""
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
        f"{wheel}[cpu,export,audio,test]",
    ]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


#: The newest glibc the wheel may ask for: manylinux_2_28 (Ubuntu 20.04 has 2.31, RHEL 8 2.28).
MAX_GLIBC = (2, 28)


def _glibc(tag: str) -> tuple[int, int]:
    major, minor = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", tag).groups()
    return int(major), int(minor)


def test_wheel_is_tagged_manylinux_2_28_or_older(wheel):
    if not sys.platform.startswith("linux"):
        pytest.skip("manylinux tags are Linux wheels'")
    platforms = wheel.name.removesuffix(".whl").split("-")[-1].split(".")
    glibc = [_glibc(tag) for tag in platforms if tag.startswith("manylinux_")]
    assert glibc and max(glibc) <= MAX_GLIBC, wheel.name


def test_auditwheel_finds_no_symbol_newer_than_glibc_2_28(wheel):
    """The tag is checked by the symbols the libraries ask for (no old system is booted)."""
    pytest.importorskip("auditwheel")
    show = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True
    )
    assert show.returncode == 0, show.stderr
    text = " ".join(show.stdout.split())
    found = re.search(r'consistent with the following platform tag: "(manylinux_\w+)"', text)
    assert found and _glibc(found.group(1)) <= MAX_GLIBC, text
    assert "libstdc++" not in text


#: The op tests that run against the wheel's compiled library and kernels module (the wheel is
#: built by another compiler than the test suite's install: the same bits must come out).
OP_TESTS = (
    "test_sample_tokens.py",
    "test_mask_git_step.py",
    "test_loop.py",
    "test_rng.py",
    "test_properties.py",
    "test_edge_cases.py",
    "test_concurrency.py",
)


def test_wheel_ops_give_the_twins_bits(venv):
    tests = Path(__file__).parent
    command = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, *(str(tests / name) for name in OP_TESTS)],
        env=_fresh_env(venv),
        capture_output=True,
        text=True,
        cwd=tests.parent,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-500:]


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
