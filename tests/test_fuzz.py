"""The libFuzzer harness over the C++ kernels (csrc/fuzz/fuzz_kernels.cc) under ASan and UBSan:
the inputs that once found bugs, then a short run of 10^4 fresh inputs. The harness aborts on
any crash, sanitizer report, out-of-range token, broken invariant or error on valid input; the
long run (10^6 inputs) and its figures are in docs/reliability.md."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGRESSIONS = ROOT / "csrc" / "fuzz" / "regressions"
RUNS = 10_000
INSTALL_HINT = "Debian: apt-get install clang libclang-rt-dev"


def _libfuzzer_missing(tmp_path: Path) -> str | None:
    """Why libFuzzer cannot be used here, or None when clang++ links a trivial fuzzer."""
    if shutil.which("clang++") is None:
        return f"clang++ not found ({INSTALL_HINT})"
    if shutil.which("cmake") is None:
        return "cmake not found"
    source = tmp_path / "probe.cc"
    source.write_text(
        "#include <cstdint>\n#include <cstddef>\n"
        'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n'
    )
    probe = subprocess.run(
        ["clang++", "-fsanitize=fuzzer,address,undefined", str(source), "-o", str(tmp_path / "p")],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"clang++ cannot link libFuzzer ({INSTALL_HINT}): {probe.stderr.strip()[:300]}"
    return None


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    """fuzz_kernels built with the project's CMake option, in a fresh clang build folder."""
    build = tmp_path_factory.mktemp("build-fuzz")
    missing = _libfuzzer_missing(build)
    if missing:
        pytest.skip(f"libFuzzer unavailable: {missing}")
    configure = [
        "cmake",
        "-S",
        str(ROOT),
        "-B",
        str(build),
        "-DCMAKE_CXX_COMPILER=clang++",
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        "-DVAMPNET_BUILD_FUZZERS=ON",
        "-DVAMPNET_BUILD_PYTHON=OFF",
    ]
    if shutil.which("ninja"):
        configure.append("-GNinja")
    if os.environ.get("ONNXRUNTIME_INCLUDE_DIR"):
        configure.append(f"-DONNXRUNTIME_INCLUDE_DIR={os.environ['ONNXRUNTIME_INCLUDE_DIR']}")
    for command in (configure, ["cmake", "--build", str(build), "--target", "fuzz_kernels"]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build / "csrc" / "fuzz" / "fuzz_kernels"


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def test_inputs_that_found_bugs_now_pass(fuzzer, tmp_path):
    inputs = sorted(REGRESSIONS.iterdir())
    assert inputs, f"no regression inputs in {REGRESSIONS}"
    result = _run([str(fuzzer), *map(str, inputs)], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]


def test_short_fuzz_run_finds_nothing(fuzzer, tmp_path):
    # A fixed seed makes the run repeatable; -len_control=0 starts at full-size inputs (large
    # vocabularies and batches) instead of growing them over the first ~10^5 runs.
    result = _run(
        [
            str(fuzzer),
            f"-runs={RUNS}",
            "-seed=1",
            "-max_len=4096",
            "-len_control=0",
            f"-artifact_prefix={tmp_path}/",
        ],
        tmp_path,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir())
    assert result.returncode == 0, f"artifacts {crashes} in {tmp_path}\n{result.stderr[-4000:]}"
    assert f"Done {RUNS} runs" in result.stderr
