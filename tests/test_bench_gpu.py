"""benchmarks/bench_gpu.py's smoke mode: every figure on the CPU with the demo's tiny models,
each value a number or an explicit "not measured: why" (no wall-clock assertions)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vampnet_onnx

ROOT = Path(__file__).resolve().parents[1]
FIGURES = [
    "forward_ms",
    "coarse_generate_s",
    "coarse_loop_s",
    "coarse_loop_bound_s",
    "coarse_loop_cuda_graph_s",
    "vamp_s",
    "batch_clips_per_s_B1",
    "batch_clips_per_s_B2",
]
CONTENDERS = ["ORT fp32", "ORT TF32", "ORT fp16", "torch fp32", "torch TF32"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("bench_gpu")
    argv = [sys.executable, "-m", "benchmarks.bench_gpu", "--device", "cpu", "--tiny"]
    argv += ["--repeats", "1", "--steps", "2", "--seconds", "2", "--clips", "2"]
    argv += ["--batches", "1", "2", "--workdir", str(tmp), "--json", str(tmp / "gpu.json")]
    # The vampnet_onnx this test imports (the installed one in CI, whose folder has the compiled
    # library; the source tree's has none there), and the repository for `benchmarks`.
    package_parent = str(Path(vampnet_onnx.__file__).resolve().parents[1])
    path = os.pathsep.join([package_parent, str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp / "gpu.json").read_text())


def test_every_figure_has_every_contender_measured_or_a_reason(report):
    assert list(report["figures"]) == FIGURES
    for figure, values in report["figures"].items():
        assert list(values) == CONTENDERS, figure
        for contender, value in values.items():
            measured = isinstance(value, float) and value > 0
            assert measured or value.startswith("not measured: "), (figure, contender, value)


def test_the_ort_contenders_are_measured_on_the_cpu(report):
    for figure, values in report["figures"].items():
        if figure == "coarse_loop_cuda_graph_s":
            continue
        assert all(isinstance(values[c], float) for c in ("ORT fp32", "ORT fp16")), figure


def test_tf32_is_not_measured_on_the_cpu_and_says_why(report):
    for values in report["figures"].values():
        assert values["ORT TF32"] == "not measured: TF32 is a CUDA matmul mode (device cpu)"
    assert "tf32_logits" not in report["machine"]


def test_the_cuda_graph_loop_is_not_measured_on_the_cpu_and_says_why(report):
    for contender in ("ORT fp32", "ORT fp16"):
        value = report["figures"]["coarse_loop_cuda_graph_s"][contender]
        assert value == "not measured: a CUDA graph needs --device cuda"


def test_memcpy_nodes_are_counted_per_precision_and_graph(report):
    graphs = ["coarse.onnx", "coarse.generate.onnx", "c2f.generate.onnx"]
    graphs += ["codec.encode.onnx", "codec.decode.onnx"]
    for precision in ("fp32", "fp16"):
        assert report["memcpy_nodes"][precision] == dict.fromkeys(graphs, 0)


def test_the_machine_facts_name_the_device_and_the_op_library(report):
    machine = report["machine"]
    assert machine["device"] == "cpu"
    assert machine["card"] is None
    assert isinstance(machine["op_library_has_cuda_ops"], bool)


def test_staged_names_the_graphs_it_lacks_and_exports_nothing(tmp_path):
    from benchmarks import bench_gpu

    with pytest.raises(SystemExit, match="--staged needs the graphs --prepare-only writes"):
        bench_gpu.main(["--staged", "--device", "cpu", "--workdir", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_tiny_refuses_the_full_size_staging_flags(tmp_path, capsys):
    from benchmarks import bench_gpu

    with pytest.raises(SystemExit):
        bench_gpu.main(["--tiny", "--staged", "--workdir", str(tmp_path)])
    assert "--prepare-only and --staged are for the full-size models" in capsys.readouterr().err
