"""`vampnet_onnx.beats`: WaveBeat's peak picking, the BeatTracker on an exported tiny WaveBeat,
and VampNet's beat mask, against references written here from upstream's semantics
(wavebeat/eval.py ``find_beats``, scipy's ``find_peaks``, vampnet/interface.py
``make_beat_mask`` @ 72e2675)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import scipy.signal
from onnx import TensorProto, helper

from vampnet_onnx import audio, configs, testing
from vampnet_onnx.beats import BeatTracker, beat_mask, find_peaks, pick_beats
from vampnet_onnx.export.wavebeat import export_wavebeat

FRAME_RATE = 22050 / 256  # the released WaveBeat's activation rate, Hz


@pytest.fixture(scope="module")
def graph_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("beats")
    checkpoint = testing.write_wavebeat_checkpoint(
        root / "wavebeat.pth", configs.TINY_WAVEBEAT_HPARAMS, seed=5
    )
    return export_wavebeat(checkpoint, root / "wavebeat.onnx").path


@pytest.fixture(scope="module")
def tracker(graph_path):
    return BeatTracker(graph_path, threads=1)


# --- peak picking -----------------------------------------------------------------------------


def _reference_find_peaks(x, height, distance):
    """scipy's documented find_peaks for height and distance, one sample at a time."""
    x = [float(v) for v in x]
    peaks, i = [], 1
    while i < len(x) - 1:
        if x[i - 1] < x[i]:
            ahead = i + 1
            while ahead < len(x) - 1 and x[ahead] == x[i]:
                ahead += 1
            if x[ahead] < x[i]:
                peaks.append((i + ahead - 1) // 2)
                i = ahead
        i += 1
    peaks = [p for p in peaks if x[p] >= height]
    keep = [True] * len(peaks)
    for j in np.argsort([x[p] for p in peaks])[::-1]:
        if keep[j]:
            for k in range(len(peaks)):
                if k != j and abs(peaks[k] - peaks[j]) < math.ceil(distance):
                    keep[k] = False
    return np.array([p for p, kept in zip(peaks, keep, strict=True) if kept], dtype=np.int64)


def test_plateaus_peak_at_their_middle_and_edges_never_peak():
    x = np.array([1, 0, 2, 2, 0, 3, 3, 3, 0, 1, 1, 4], dtype=np.float32)
    np.testing.assert_array_equal(find_peaks(x, 0, 1), [2, 6])


def test_closer_peaks_yield_to_the_higher_one():
    x = np.zeros(20, np.float32)
    x[[3, 6, 10, 15]] = [0.9, 1.0, 0.8, 0.7]
    np.testing.assert_array_equal(find_peaks(x, 0, 4), [6, 10, 15])
    np.testing.assert_array_equal(find_peaks(x, 0, 4.5), [6, 15])  # ceil: 5 apart needed
    np.testing.assert_array_equal(find_peaks(x, 0.75, 1), [3, 6, 10])


def test_find_peaks_matches_reference_and_scipy_with_ties_and_plateaus():
    rng = np.random.default_rng(0)
    for _ in range(300):
        x = rng.integers(0, 5, rng.integers(1, 80)).astype(np.float32) / 4
        height, distance = rng.choice([0.0, 0.5]), rng.choice([1, 2.5, 6, 21.5])
        got = find_peaks(x, height, distance)
        np.testing.assert_array_equal(got, _reference_find_peaks(x, height, distance))
        np.testing.assert_array_equal(
            got, scipy.signal.find_peaks(x, height=height, distance=distance)[0]
        )


def test_pick_beats_normalises_and_spaces_beats_and_downbeats():
    activation = np.full(200, 0.1, np.float32)
    activation[[10, 40, 60, 150]] = [0.40, 0.30, 0.12, 0.25]  # the loudest peak is 0.4
    # Normalised: 1, 0.75, 0.3, 0.625; beats need ceil(86.13 / 4) = 22 frames between them,
    # downbeats ceil(86.13 / 2) = 44.
    want_beats = np.array([10, 40, 150], np.float32) / np.float32(FRAME_RATE)
    want_downbeats = np.array([10, 150], np.float32) / np.float32(FRAME_RATE)
    beats = pick_beats(activation, FRAME_RATE, "beat")
    assert beats.dtype == np.float32
    np.testing.assert_array_equal(beats, want_beats)
    np.testing.assert_array_equal(pick_beats(activation, FRAME_RATE, "downbeat"), want_downbeats)


def test_pick_beats_of_a_flat_activation_is_empty():
    assert pick_beats(np.zeros(50, np.float32), FRAME_RATE).size == 0
    assert pick_beats(np.full(50, 0.3, np.float32), FRAME_RATE).size == 0


# --- BeatTracker ------------------------------------------------------------------------------


def _reference_extract_beats(graph_path, x):
    """WaveBeat's predict_beats_from_array on audio already at 22.05 kHz: peak-normalise, run,
    then find_beats (scipy's find_peaks, float32 frame / rate) per channel."""
    session = ort.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    x = x / np.abs(x).max()
    activations = session.run(None, {"audio": x[None, None].astype(np.float32)})[0][0]
    times = []
    for p, seconds in zip(activations, (0.25, 0.5), strict=True):
        p = p / np.max(np.abs(p))
        peaks = scipy.signal.find_peaks(p, height=0.5, distance=FRAME_RATE * seconds)[0]
        times.append(peaks.astype(np.float32) / np.float32(FRAME_RATE))
    return times


def test_extract_beats_at_the_network_rate_matches_reference(tracker, graph_path):
    x = np.random.default_rng(1).normal(0, 0.2, 22050 * 4).astype(np.float32)
    beats, downbeats = tracker.extract_beats(x, 22050)
    want_beats, want_downbeats = _reference_extract_beats(graph_path, x)
    assert beats.dtype == downbeats.dtype == np.float64 and beats.size > 3
    np.testing.assert_array_equal(beats, want_beats)
    np.testing.assert_array_equal(downbeats, want_downbeats)


def test_extract_beats_resamples_to_julius_length_then_mixes_to_mono(tracker, graph_path):
    stereo = np.random.default_rng(2).normal(0, 0.2, (2, 44100 * 3 + 1)).astype(np.float32)
    beats, downbeats = tracker.extract_beats(stereo, 44100)
    # floor((3 * 44100 + 1) * 22050 / 44100) samples, as julius keeps.
    x = audio.to_mono(audio.resample(stereo, 44100, 22050)[:, : 3 * 22050])
    want_beats, want_downbeats = _reference_extract_beats(graph_path, x)
    np.testing.assert_array_equal(beats, want_beats)
    np.testing.assert_array_equal(downbeats, want_downbeats)


def test_silence_has_no_beats(tracker):
    beats, downbeats = tracker.extract_beats(np.zeros(22050, np.float32), 22050)
    assert beats.shape == downbeats.shape == (0,)


@pytest.mark.parametrize(
    ("x", "sample_rate", "message"),
    [
        (np.zeros(10, np.int16), 22050, r"audio must be a float array \[N\] or \[channels, N\]"),
        (np.zeros((1, 1, 10), np.float32), 22050, "audio must be a float array"),
        (np.zeros(0, np.float32), 22050, r"audio must be .* with N >= 1, got float32 \(0,\)"),
        (np.array([0.0, np.nan], np.float32), 22050, "audio must be finite, got NaN or inf"),
        (np.zeros(10, np.float32), 0, "sample_rate must be > 0, got 0"),
        (np.zeros(10, np.float32), 22050.0, "sample_rate must be an int, got 22050.0"),
    ],
)
def test_extract_beats_refuses_bad_arguments(tracker, x, sample_rate, message):
    with pytest.raises(ValueError, match=f"BeatTracker.extract_beats: {message}"):
        tracker.extract_beats(x, sample_rate)


def test_tracker_refuses_a_graph_without_wavebeat_metadata(tmp_path):
    node = helper.make_node("Identity", ["x"], ["y"])
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node], "g", [value("x", TensorProto.FLOAT, None)], [value("y", TensorProto.FLOAT, None)]
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(ValueError, match="must have metadata vampnet_onnx.wavebeat_config"):
        BeatTracker(path)


def test_beats_module_does_not_import_torch():
    code = "import sys, vampnet_onnx.beats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- beat mask --------------------------------------------------------------------------------


def _reference_make_beat_mask(
    beats,
    downbeats,
    n_frames,
    n_codebooks=14,
    before=0.0,
    after=0.02,
    downbeats_on=True,
    upbeats_on=True,
    downbeat_step=1,
    beat_step=1,
    invert=True,
):
    """make_beat_mask, one beat at a time: float32 s2t of the tracker's float32 times, Python
    float s2t of the window lengths, list slices."""

    def s2t32(t):
        return math.ceil(np.float32(t) * np.float32(44100) / np.float32(768))

    beat_frames = [s2t32(t) for t in beats]
    downbeat_frames = [s2t32(t) for t in downbeats]
    beat_frames = [f for f in beat_frames if f not in downbeat_frames][::beat_step]
    downbeat_frames = downbeat_frames[::downbeat_step]
    b4, aft = math.ceil(before * 44100 / 768), math.ceil(after * 44100 / 768)
    row = [0] * n_frames
    for on, frames in ((upbeats_on, beat_frames), (downbeats_on, downbeat_frames)):
        for f in frames if on else []:
            window = row[f - b4 : f + aft]
            row[f - b4 : f + aft] = [1] * len(window)
    row = [1 - v if invert else v for v in row]
    return np.array([row] * n_codebooks, dtype=np.int64)


def test_beat_windows_are_kept_and_downbeats_leave_the_beats():
    # 0.5 s -> ceil(28.7) = frame 29, 1.0 s -> ceil(57.4) = 58; after 0.02 s -> 2 frames.
    mask = beat_mask(np.array([0.5, 1.0]), np.array([1.0]), 100)
    want = np.ones((14, 100), np.int64)
    want[:, [29, 30, 58, 59]] = 0
    assert mask.dtype == np.int64
    np.testing.assert_array_equal(mask, want)


def test_before_window_upbeats_off_and_no_inversion():
    beats, downbeats = np.array([0.5, 1.0]), np.array([1.0])
    mask = beat_mask(beats, downbeats, 100, n_codebooks=4, before_beat_s=0.03, invert=False)
    want = np.zeros((4, 100), np.int64)
    want[:, [27, 28, 29, 30, 56, 57, 58, 59]] = 1  # before: ceil(1.72) = 2 frames
    np.testing.assert_array_equal(mask, want)
    only_downbeats = beat_mask(beats, downbeats, 100, mask_upbeats=False, invert=False)
    assert np.flatnonzero(only_downbeats[0]).tolist() == [58, 59]


def test_downsampling_keeps_every_nth_from_the_first():
    beats = np.array([0.5, 1.5, 2.5, 3.5])
    mask = beat_mask(beats, np.zeros(0), 300, beat_downsample_factor=2, invert=False)
    assert np.flatnonzero(mask[0]).tolist() == [29, 30, 144, 145]  # 0.5 s and 2.5 s


def test_times_round_to_frames_in_float32_as_upstream():
    # WaveBeat frame 3 is float32(3) / 86.13 s = 0.034829933 s: 2.0000 frames in float32
    # (upstream), 2.0000000x -> 3 in float64.
    t = np.float32(3) / np.float32(FRAME_RATE)
    assert math.ceil(float(t) * 44100 / 768) == 3
    mask = beat_mask(np.array([float(t)]), np.zeros(0), 10, invert=False)
    assert np.flatnonzero(mask[0]).tolist() == [2, 3]


def test_windows_starting_before_frame_zero_wrap_as_upstream_slices():
    # Frame 0 with 2 frames before: the slice [-2:2] is empty in 100 frames, frame 1 in 3.
    assert beat_mask(np.zeros(1), np.zeros(0), 100, before_beat_s=0.02).min() == 1
    np.testing.assert_array_equal(
        beat_mask(np.zeros(1), np.zeros(0), 3, n_codebooks=1, before_beat_s=0.02), [[1, 0, 1]]
    )


def test_beat_mask_matches_reference_on_random_beats():
    rng = np.random.default_rng(3)
    for _ in range(200):
        frames = np.sort(rng.choice(400, rng.integers(0, 30), replace=False))
        beats = (frames.astype(np.float32) / np.float32(FRAME_RATE)).astype(np.float64)
        downbeats = beats[rng.random(beats.size) < 0.3]
        options = {
            "before": float(rng.choice([0.0, 0.01, 0.05])),
            "after": float(rng.choice([0.0, 0.02, 0.1])),
            "downbeats_on": bool(rng.integers(2)),
            "upbeats_on": bool(rng.integers(2)),
            "downbeat_step": int(rng.integers(1, 4)),
            "beat_step": int(rng.integers(1, 4)),
            "invert": bool(rng.integers(2)),
        }
        n_frames = int(rng.integers(1, 300))
        got = beat_mask(
            beats,
            downbeats,
            n_frames,
            n_codebooks=2,
            before_beat_s=options["before"],
            after_beat_s=options["after"],
            mask_downbeats=options["downbeats_on"],
            mask_upbeats=options["upbeats_on"],
            downbeat_downsample_factor=options["downbeat_step"],
            beat_downsample_factor=options["beat_step"],
            invert=options["invert"],
        )
        want = _reference_make_beat_mask(beats, downbeats, n_frames, 2, **options)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beats_s": np.array([-0.1])}, "beats_s must be a 1-D array of finite seconds >= 0"),
        ({"downbeats_s": np.zeros((1, 1))}, "downbeats_s must be a 1-D array"),
        ({"n_frames": 0}, "n_frames must be an int >= 1, got 0"),
        ({"n_codebooks": True}, "n_codebooks must be an int >= 1, got True"),
        (
            {"beat_downsample_factor": 0},
            "beat_downsample_factor must be an int >= 1 or None, got 0",
        ),
        ({"before_beat_s": -0.01}, "before_beat_s must be finite seconds >= 0, got -0.01"),
        ({"after_beat_s": math.nan}, "after_beat_s must be finite seconds >= 0, got nan"),
    ],
)
def test_beat_mask_refuses_bad_arguments(kwargs, message):
    args = {"beats_s": np.array([0.5]), "downbeats_s": np.zeros(0), "n_frames": 10, **kwargs}
    with pytest.raises(ValueError, match=f"beat_mask: {message}"):
        beat_mask(**args)
