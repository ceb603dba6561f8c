"""`vampnet_onnx.folder`: output names, the checks before work and the failures report (the
runs themselves: tests/test_cli_vamp.py's --out-dir tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from vampnet_onnx import folder
from vampnet_onnx.contracts import FAILURES_FILE, FAILURES_FORMAT


@pytest.mark.parametrize(
    "name, out", [("a.wav", "a.wav"), ("b.flac", "b.flac"), ("c.m4a", "c.wav"), ("d", "d.wav")]
)
def test_an_output_keeps_the_input_name_where_soundfile_writes_its_extension(name, out):
    assert folder.output_name(Path("in") / name) == out


def test_plan_refuses_two_inputs_with_one_output_name(tmp_path):
    with pytest.raises(ValueError, match="IN must have distinct names in DIR, got 'x/a.wav' and"):
        folder.plan(["x/a.wav", "y/a.flac", "y/a.wav"], tmp_path, "DIR")


def test_check_jobs_keeps_order_and_names_each_failure(tmp_path):
    good = tmp_path / "a.wav"
    soundfile.write(good, np.zeros(100), 44100)
    empty = tmp_path / "e.wav"
    soundfile.write(empty, np.zeros(0), 44100)
    jobs = folder.plan([good, tmp_path / "gone.wav", empty], tmp_path / "out")
    kept, failed = folder.check_jobs(jobs)
    assert kept == [jobs[0]]
    assert [(f.job, f.reason) for f in failed] == [
        (jobs[1], f"IN must be an existing file, got '{tmp_path / 'gone.wav'}'"),
        (jobs[2], f"IN must hold at least 1 sample, got '{empty}'"),
    ]


def test_the_failures_report_round_trips_and_a_clean_run_removes_it(tmp_path):
    job = folder.Job(Path("in/a.wav"), tmp_path / "a.wav")
    path = folder.write_failures(tmp_path, [folder.Failure(job, "why")])
    assert path == tmp_path / FAILURES_FILE
    report = json.loads(path.read_text())
    assert report == {
        "format": FAILURES_FORMAT,
        "failed": [{"input": "in/a.wav", "output": str(tmp_path / "a.wav"), "reason": "why"}],
    }
    assert folder.read_failures(tmp_path) == report["failed"]
    assert folder.write_failures(tmp_path, []) is None
    assert list(tmp_path.iterdir()) == []
    assert folder.read_failures(tmp_path) == []


class _Batches:
    """A stand-in `Vamp` whose batch fails when any clip is negative (as a bad file would)."""

    def __init__(self):
        self.calls = []

    def vamp_batch(self, clips, rates, *, seeds, batch_size, **settings):
        self.calls.append(len(clips))
        if any(clip.min() < 0 for clip in clips):
            raise ValueError("preprocess: x must be finite, got NaN or inf")
        return [(clip[0], rate) for clip, rate in zip(clips, rates)]


def test_a_failing_batch_is_run_again_file_by_file(tmp_path):
    paths = []
    for name, value in (("a", 0.1), ("b", -0.1), ("c", 0.2)):
        paths.append(tmp_path / f"{name}.wav")
        soundfile.write(paths[-1], np.full(100, value), 44100, subtype="FLOAT")
    jobs = folder.plan(paths, tmp_path / "out")
    (tmp_path / "out").mkdir()
    vamp = _Batches()
    written = []
    failures = folder.run_jobs(
        vamp, jobs, batch_size=3, on_written=lambda job, rate: written.append(job)
    )
    assert vamp.calls == [3, 1, 1, 1]
    assert [f.job for f in failures] == [jobs[1]]
    assert written == [jobs[0], jobs[2]]
    np.testing.assert_allclose(soundfile.read(jobs[2].output)[0], 0.2, atol=1e-4)


def test_no_module_but_the_cluster_driver_imports_ray():
    """The ray extra is optional: importing the package, its CLI and every other module
    imports neither Ray nor the driver."""
    import pkgutil
    import subprocess
    import sys

    import vampnet_onnx

    names = [
        m.name
        for m in pkgutil.walk_packages(vampnet_onnx.__path__, "vampnet_onnx.")
        if m.name != "vampnet_onnx.distributed"
        and not m.name.rpartition(".")[2].startswith(("_", "lib"))  # compiled, not Python
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] == 'ray' or m == 'vampnet_onnx.distributed'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
