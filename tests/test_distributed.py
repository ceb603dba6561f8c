"""`vampnet_onnx.distributed` (``vamp IN... --out-dir DIR --ray``) on a local Ray cluster of two
CPUs: the outputs of a local ``--out-dir`` run byte for byte, resume, a killed worker, bad files
and the errors before work."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from vampnet_onnx import cli, folder
from vampnet_onnx.contracts import FAILURES_FILE, MANIFEST_FILE

ray = pytest.importorskip("ray")
distributed = pytest.importorskip("vampnet_onnx.distributed")

STEPS = ["--steps", "3"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for the module (vamp_files joins it: no address)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Five short clips of different lengths and rates (one stereo, one FLAC)."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(7)
    paths = []
    for i, (seconds, rate, suffix) in enumerate(
        [
            (0.6, 44100, "wav"),
            (1.1, 22050, "wav"),
            (0.4, 48000, "flac"),
            (0.9, 44100, "wav"),
            (0.7, 16000, "wav"),
        ]
    ):
        t = np.arange(int(seconds * rate)) / rate
        x = 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.02 * rng.standard_normal(t.size)
        if i == 3:
            x = np.stack([x, x[::-1]], axis=1)
        paths.append(root / f"clip{i}.{suffix}")
        soundfile.write(paths[-1], x.astype(np.float32), rate)
    return paths


@pytest.fixture(scope="module")
def local_outputs(clips, tiny_models_dir, tmp_path_factory):
    """What `vamp IN... --out-dir DIR` writes on this machine (one onnxruntime thread)."""
    out = tmp_path_factory.mktemp("local") / "out"
    argv = ["vamp", *map(str, clips), "--out-dir", str(out), "--models", str(tiny_models_dir)]
    assert cli.main([*argv, *STEPS, "--threads", "1", "--quiet"]) == 0
    return out


def _same_files(a: Path, b: Path, names) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_ray_writes_the_local_out_dir_outputs_byte_for_byte(
    cluster, clips, tiny_models_dir, local_outputs, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["vamp", *map(str, clips), "--out-dir", str(out), "--models", str(tiny_models_dir)]
    argv += [*STEPS, "--ray", "--workers", "2", "--batch-size", "2", "--quiet"]
    assert cli.main(argv) == 0
    names = [folder.output_name(p) for p in clips]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, MANIFEST_FILE])
    _same_files(local_outputs, out, names)
    # One manifest rule: a local rerun of the same command would go on from this folder.
    assert json.loads((out / MANIFEST_FILE).read_text()) == json.loads(
        (local_outputs / MANIFEST_FILE).read_text()
    )
    assert "5 written, 0 skipped (complete), 0 failed" in capsys.readouterr().out


def test_a_rerun_after_an_interrupted_run_does_only_the_rest(
    cluster, clips, tiny_models_dir, local_outputs, tmp_path
):
    out = tmp_path / "out"
    first = distributed.vamp_files(clips, out, tiny_models_dir, steps=3, progress=False)
    assert len(first.written) == 5
    # What a run stopped after three files leaves: two outputs missing, one half-written.
    names = [folder.output_name(p) for p in clips]
    for name in names[3:]:
        (out / name).unlink()
    (out / f".{names[4]}.abc123.tmp").write_bytes(b"half")
    again = distributed.vamp_files(clips, out, tiny_models_dir, steps=3, progress=False)
    assert sorted(j.input for j in again.written) == sorted(clips[3:])
    assert sorted(j.input for j in again.skipped) == sorted(clips[:3])
    assert not list(out.glob(".*.tmp"))
    _same_files(local_outputs, out, names)


def test_a_rerun_with_other_settings_is_refused_unless_told_to_overwrite(
    cluster, clips, tiny_models_dir, tmp_path
):
    out = tmp_path / "out"
    distributed.vamp_files(clips[:1], out, tiny_models_dir, steps=3, progress=False)
    with pytest.raises(ValueError, match="made with the setting steps 3 there, 4 here"):
        distributed.vamp_files(clips[:1], out, tiny_models_dir, steps=4, progress=False)
    redone = distributed.vamp_files(
        clips[:1], out, tiny_models_dir, steps=4, overwrite=True, progress=False
    )
    assert len(redone.written) == 1 and not redone.skipped


def _worker_pids() -> list[int]:
    """The processes of our Ray actors (Ray names them after the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"VampWorker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker in /proc")
def test_a_worker_killed_mid_run_has_its_files_redone(
    cluster, clips, tiny_models_dir, local_outputs, tmp_path
):
    out = tmp_path / "out"
    killed = []

    def kill_after_the_first_output() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            pids = _worker_pids()
            if pids and (any(out.glob("*.wav")) or any(out.glob("*.flac"))):
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_the_first_output, daemon=True)
    killer.start()
    summary = distributed.vamp_files(
        clips, out, tiny_models_dir, steps=3, workers=2, progress=False
    )
    killer.join()
    assert killed, "no worker was killed: the run ended before the first output appeared"
    assert len(summary.written) == 5 and not summary.failures
    assert not list(out.glob(".*.tmp"))
    _same_files(local_outputs, out, [folder.output_name(p) for p in clips])


def test_a_bad_file_is_reported_and_every_other_file_completes(
    cluster, clips, tiny_models_dir, local_outputs, tmp_path
):
    nan = tmp_path / "nan.wav"
    soundfile.write(nan, np.full(4000, np.nan, np.float32), 44100, subtype="FLOAT")
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    out = tmp_path / "out"
    inputs = [clips[0], nan, clips[1], text, tmp_path / "gone.wav"]
    summary = distributed.vamp_files(inputs, out, tiny_models_dir, steps=3, progress=False)
    assert sorted(j.input for j in summary.written) == sorted(clips[:2])
    _same_files(local_outputs, out, [folder.output_name(p) for p in clips[:2]])
    report = {Path(f["input"]).name: f["reason"] for f in folder.read_failures(out)}
    assert set(report) == {"nan.wav", "notes.wav", "gone.wav"}
    assert "finite" in report["nan.wav"]
    assert report["gone.wav"] == f"IN must be an existing file, got '{tmp_path / 'gone.wav'}'"
    assert (out / FAILURES_FILE).is_file()


def test_cli_reports_failures_with_status_1(cluster, clips, tiny_models_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["vamp", str(clips[0]), str(tmp_path / "gone.wav"), "--out-dir", str(out)]
    argv += ["--models", str(tiny_models_dir), *STEPS, "--ray", "--quiet"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"failed '{tmp_path / 'gone.wav'}': IN must be an existing file" in err
    assert f"1 of 2 inputs failed, listed in {out / FAILURES_FILE}" in err


def test_models_that_do_not_load_fail_once_before_any_file_is_read(
    cluster, clips, tmp_path, capsys
):
    missing = tmp_path / "models"
    missing.mkdir()
    out = tmp_path / "out"
    argv = ["vamp", str(clips[0]), "--out-dir", str(out), "--models", str(missing), "--ray"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"vampnet-onnx vamp: error: --models must load on the workers, got '{missing}' ("
    )
    assert "Vamp: models must be a folder with codec.encode.onnx" in err[0]
    assert not out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_address_is_one_line_before_work(clips, tiny_models_dir, tmp_path, capsys):
    address = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "out"
    argv = ["vamp", str(clips[0]), "--out-dir", str(out), "--models", str(tiny_models_dir)]
    assert cli.main([*argv, "--ray-address", address]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vampnet-onnx vamp: error: --ray-address must be a reachable Ray cluster, got "
        f"'{address}' ([Errno 111] Connection refused)"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("workers", 0, "vamp_files: workers must be an integer >= 1, got 0"),
        ("threads", 0, "vamp_files: threads must be an integer >= 1, got 0"),
        ("gpus_per_worker", -1, "vamp_files: gpus_per_worker must be a number >= 0, got -1"),
        ("batch_size", 1.5, "vamp_files: batch_size must be an integer >= 1, got 1.5"),
        ("steps", 0, "steps must be"),
    ],
)
def test_bad_options_are_refused_before_any_cluster_is_joined(
    option, value, message, clips, tiny_models_dir, tmp_path
):
    with pytest.raises(ValueError, match=message):
        distributed.vamp_files(clips, tmp_path / "out", tiny_models_dir, **{option: value})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workers", "2"], "--workers must come with --ray, got --workers 2 and no --ray"),
        (["--ray"], "--ray must come with --out-dir DIR, got no --out-dir"),
        (["--ray", "--gpus-per-worker", "1"], "--gpus-per-worker must come with --device cuda"),
    ],
)
def test_cli_refuses_cluster_options_that_do_not_fit(argv, message, clips, tmp_path, capsys):
    base = ["vamp", str(clips[0]), str(tmp_path / "o.wav"), "--models", str(tmp_path)]
    if "--ray" in argv and "--gpus-per-worker" in argv:
        base = ["vamp", str(clips[0]), "--out-dir", str(tmp_path / "o"), "--models", str(tmp_path)]
    assert cli.main([*base, *argv]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, value, message",
    [
        (
            "threads",
            3,
            "vamp_files: threads must be at most the CPUs of the cluster's largest node, 2, got 3",
        ),
        (
            "gpus_per_worker",
            1,
            "vamp_files: gpus_per_worker must be at most the GPUs of the "
            "cluster's largest node, 0, got 1",
        ),
    ],
)
def test_a_worker_larger_than_any_node_is_refused_not_waited_for(
    cluster, option, value, message, clips, tiny_models_dir, tmp_path
):
    with pytest.raises(ValueError, match=re.escape(message)):
        distributed.vamp_files(clips, tmp_path / "out", tiny_models_dir, **{option: value})
    assert not (tmp_path / "out").exists()
