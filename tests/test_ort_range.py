"""The onnxruntime range and the Pythons the package promises, each in a virtual environment of
its own: the oldest onnxruntime it allows (``onnxruntime>=X`` in its requirements) and the newest
the index has run a generation graph of the tiny models and give the tokens this process gets;
an onnxruntime older than X is refused with the message docs/ops.md gives; Python 3.10 and
3.13 (the oldest and newest claimed) build the package and pass the torch-free op tests and the
same generation. The graphs are exported here, under this Python (torch's CPU wheel is at hand
for 3.11 only).

The onnxruntime runs install the wheel `.ci/run` builds (VAMPNET_WHEEL); the other Pythons build
the source tree. Skipped without the wheel or those Pythons, except under CI (CI=true), where
that is a failure: CI must test the range it promises.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vampnet_onnx import Generator

ROOT = Path(__file__).resolve().parent.parent
#: The torch-free tests each other Python runs (the cibuildwheel test command's).
TORCH_FREE_TESTS = (
    "test_runtime.py",
    "test_sample_tokens.py",
    "test_mask_git_step.py",
    "test_loop.py",
)
#: The last onnxruntime release before the oldest the package allows.
OLDER_ONNXRUNTIME = "1.20.1"
#: The Pythons the package claims at either end (pyproject's requires-python and classifiers).
OTHER_PYTHONS = ("3.10", "3.13")
#: Run in each environment: the coarse generation graph on the inputs in argv[1] (.npz), on the
#: library's kernels and, in a plain session without the library, on the op bodies the graph
#: carries; the codes written to argv[2] and argv[4] (.npy); the onnxruntime version printed.
GENERATE = """
import sys, numpy as np, onnxruntime
from vampnet_onnx import Generator
inputs = np.load(sys.argv[1])
plain = onnxruntime.InferenceSession(sys.argv[3], providers=["CPUExecutionProvider"])
for generator, out in ((Generator(sys.argv[3], python_ops=False), sys.argv[2]),
                       (Generator(sys.argv[3], session=plain), sys.argv[4])):
    codes = generator.generate(inputs["codes"], inputs["mask"], steps=4, temperature=1.0,
                               top_p=0.9, seed=11)
    np.save(out, codes)
print(onnxruntime.__version__)
"""
#: Registering the library in a runtime too old for it; prints the error.
REGISTER = """
import onnxruntime, vampnet_onnx
options = onnxruntime.SessionOptions()
try:
    options.register_custom_ops_library(vampnet_onnx.get_library_path())
except Exception as err:
    print(err)
else:
    print("registered")
"""


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def _missing(message: str):
    if _under_ci():
        pytest.fail(message)
    pytest.skip(message)


def oldest_onnxruntime() -> str:
    """X of the package's ``onnxruntime>=X`` requirement (the `cpu` extra)."""
    for requirement in importlib.metadata.requires("vampnet-onnx") or []:
        found = re.match(r"onnxruntime\s*>=\s*([\d.]+)", requirement)
        if found:
            return found.group(1)
    raise AssertionError("vampnet-onnx must require onnxruntime>=X in its cpu extra")


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def _venv(python: str, root: Path, *packages: str, no_deps: tuple[str, ...] = ()) -> Path:
    """A virtual environment of `python` with `packages` (and `no_deps` without theirs)."""
    subprocess.run([python, "-m", "venv", str(root)], check=True)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    for group, extra in ((no_deps, ["--no-deps"]), (packages, [])):
        if group:
            result = subprocess.run(
                [*pip, *extra, *group], env=_env(root), capture_output=True, text=True
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def _run(venv: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "python"), *args],
        env=_env(venv),
        capture_output=True,
        text=True,
        cwd=cwd or venv,
    )


@pytest.fixture(scope="module")
def wheel() -> Path:
    name = os.environ.get("VAMPNET_WHEEL", "")
    if not name:
        _missing("VAMPNET_WHEEL must name the built wheel (.ci/run sets it), got nothing")
    return Path(name)


@pytest.fixture(scope="module")
def generation(tiny_models_dir, tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """(the coarse generation graph, its inputs .npz, the codes this process generates)."""
    graph = tiny_models_dir / "coarse.generate.onnx"
    generator = Generator(graph, python_ops=False)
    rng = np.random.default_rng(5)
    shape = (2, generator.n_codebooks, 40)
    codes = rng.integers(0, 1024, shape, dtype=np.int64)
    mask = rng.random(shape) < 0.6
    inputs = tmp_path_factory.mktemp("ort-range") / "inputs.npz"
    np.savez(inputs, codes=codes, mask=mask)
    expected = generator.generate(codes, mask, steps=4, temperature=1.0, top_p=0.9, seed=11)
    return graph, inputs, expected


def _generates_the_same_codes(venv: Path, generation, tmp_path) -> str:
    graph, inputs, expected = generation
    out, bodies = tmp_path / "codes.npy", tmp_path / "bodies.npy"
    result = _run(venv, "-c", GENERATE, str(inputs), str(out), str(graph), str(bodies))
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(out), expected)
    # The standard-op bodies give the kernels' bits in this onnxruntime too (docs/ops.md).
    np.testing.assert_array_equal(np.load(bodies), expected)
    return result.stdout.strip()


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_the_oldest_and_newest_onnxruntime_generate_the_same_codes(
    which, wheel, generation, tmp_path
):
    oldest = oldest_onnxruntime()
    pin = f"onnxruntime=={oldest}" if which == "oldest" else "onnxruntime"
    venv = _venv(
        sys.executable, tmp_path / "venv", pin, "numpy", "onnx", "tqdm", no_deps=(str(wheel),)
    )
    version = _generates_the_same_codes(venv, generation, tmp_path)
    if which == "oldest":
        assert _minor(version) == _minor(oldest)
    else:
        assert _minor(version) >= _minor(oldest)


def test_an_older_onnxruntime_is_refused_naming_the_version(wheel, tmp_path):
    oldest = oldest_onnxruntime()
    older = OLDER_ONNXRUNTIME
    assert _minor(older) < _minor(oldest)
    venv = _venv(
        sys.executable,
        tmp_path / "venv",
        f"onnxruntime=={older}",
        "numpy",
        "onnx",
        "tqdm",
        no_deps=(str(wheel),),
    )
    result = _run(venv, "-c", REGISTER)
    assert result.returncode == 0, result.stderr[-3000:]
    minor = oldest.split(".")[1]
    # docs/ops.md: "an older runtime gets an error status naming the version".
    assert (
        f"vampnet_onnx: onnxruntime must provide ORT API version {minor} (onnxruntime >= "
        f"1.{minor}), got an older runtime" in result.stdout
    ), result.stdout


def _python(version: str) -> str:
    """An interpreter of `version`: on PATH, or a pyenv install (whose PATH shims run only
    the version pyenv has selected)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True)
    candidates.append(shutil.which(f"python{version}"))
    for candidate in filter(None, candidates):
        check = [str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        result = subprocess.run(check, capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip() == version:
            return str(candidate)
    _missing(f"python{version} must be installed to test the package under it, got none")


@pytest.mark.parametrize("version", OTHER_PYTHONS)
def test_the_oldest_and_newest_python_pass_the_torch_free_tests(version, generation, tmp_path):
    python = _python(version)
    venv = _venv(python, tmp_path / "venv", f"{ROOT}[cpu,test]")
    tests = [str(ROOT / "tests" / name) for name in TORCH_FREE_TESTS]
    result = _run(venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout, result.stdout[-500:]
    _generates_the_same_codes(venv, generation, tmp_path)
    info = json.loads(
        _run(venv, "-c", "import json, sys; print(json.dumps(sys.version_info[:2]))").stdout
    )
    assert info == [int(p) for p in version.split(".")]
