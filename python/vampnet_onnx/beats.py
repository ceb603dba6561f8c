"""Beat tracking with the exported WaveBeat graph, and VampNet's beat-synced mask (numpy +
onnxruntime, no torch; docs/model.md §7).

`BeatTracker.extract_beats` does what VampNet's ``WaveBeat.extract_beats`` does through
WaveBeat's ``predict_beats_from_array``: resample to the network's rate, average the channels,
divide by the peak, run the network (``wavebeat.onnx``, sigmoid included), then pick the peaks
of each activation as WaveBeat's ``find_beats`` does: normalise by the maximum, keep local
maxima of at least 0.5, at least a quarter of a second apart for beats and half a second for
downbeats (`pick_beats`, with `find_peaks` the port of ``scipy.signal.find_peaks`` for those
two arguments). The WaveBeat that VampNet installs picks peaks this way; it has no DBN.

`beat_mask` is ``Interface.make_beat_mask`` on given beat times, exactly: the same float32
rounding of times to frames, downbeats taken out of the beats, windows, downsampling and
inversion.

Differences from upstream: resampling uses soxr (VHQ, `audio.resample`) where WaveBeat uses
julius' sinc resampler (the length is cut to julius' floor(N * rate / sr) samples); silence
gives no beats where upstream divides by a zero peak and tracks NaNs; `beat_mask` has no
``dropout`` (upstream draws it with torch's global generator) and refuses negative times.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .audio import resample, to_mono
from .contracts import WAVEBEAT, WAVEBEAT_CONFIG_KEY, WAVEBEAT_FILE, read_metadata
from .masks import seconds_to_frames
from .runtime import create_session, run

#: WaveBeat's peak picking (``find_beats``): the height a normalised activation must reach,
#: and the least distance between peaks in seconds (at most 4 beats and 2 downbeats a second).
PEAK_HEIGHT = 0.5
MIN_BEAT_DISTANCE_S = {"beat": 0.25, "downbeat": 0.5}


def read_wavebeat_config(path: str | Path) -> dict[str, Any]:
    """The `WAVEBEAT_CONFIG_KEY` metadata dict of ``wavebeat.onnx`` (weights are not loaded):
    audio_sample_rate, target_sample_rate, downsampling, the architecture, checkpoint_sha256."""
    return read_metadata(path, WAVEBEAT_CONFIG_KEY, "read_wavebeat_config")


def find_peaks(x: np.ndarray, height: float, distance: float) -> np.ndarray:
    """Indices of the peaks of `x` ``[N]``, as ``scipy.signal.find_peaks(x, height=height,
    distance=distance)[0]`` gives them, int64 ascending.

    A peak is a sample (or the middle sample, rounded down, of a flat run) higher than both
    neighbours; the first and last samples are never peaks. Peaks below `height` are dropped;
    then, from the highest down (ties in ``np.argsort`` order, as scipy), each kept peak removes
    the lower ones closer than ``ceil(distance)`` samples.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"find_peaks: x must be 1-D, got shape {x.shape}")
    if not distance >= 1:
        raise ValueError(f"find_peaks: distance must be >= 1, got {distance}")
    # Flat runs [start, end]: a run is a peak when both neighbours exist and are lower.
    edges = np.flatnonzero(x[1:] != x[:-1])
    starts = np.concatenate([[0], edges + 1])
    ends = np.concatenate([edges, [x.size - 1]])
    inner = (starts > 0) & (ends < x.size - 1)
    starts, ends = starts[inner], ends[inner]
    rising = x[starts - 1] < x[starts]
    falling = x[ends + 1] < x[starts]
    peaks = ((starts + ends) // 2)[rising & falling]
    peaks = peaks[x[peaks] >= height]
    keep = np.ones(peaks.size, dtype=bool)
    min_gap = math.ceil(distance)
    for j in np.argsort(x[peaks])[::-1]:
        if not keep[j]:
            continue
        near = np.abs(peaks - peaks[j]) < min_gap
        near[j] = False
        keep &= ~near
    return peaks[keep].astype(np.int64)


def pick_beats(activation: np.ndarray, frame_rate: float, beat_type: str = "beat") -> np.ndarray:
    """Beat times in seconds (float32, as upstream) from one activation ``[T]`` (frames at
    `frame_rate` Hz): WaveBeat's ``find_beats`` peak picking.

    The activation is divided by its largest magnitude (in float32), then `find_peaks` keeps
    peaks of at least `PEAK_HEIGHT` at least ``MIN_BEAT_DISTANCE_S[beat_type] * frame_rate``
    frames apart; frame i is at ``float32(i) / frame_rate`` seconds.
    """
    if beat_type not in MIN_BEAT_DISTANCE_S:
        raise ValueError(
            f"pick_beats: beat_type must be one of {list(MIN_BEAT_DISTANCE_S)}, got {beat_type!r}"
        )
    p = np.asarray(activation, dtype=np.float32)
    peak = np.max(np.abs(p)) if p.size else np.float32(0)
    if not peak > 0:
        return np.zeros(0, dtype=np.float32)
    peaks = find_peaks(p / peak, PEAK_HEIGHT, MIN_BEAT_DISTANCE_S[beat_type] * frame_rate)
    return peaks.astype(np.float32) / np.float32(frame_rate)


class BeatTracker:
    """``wavebeat.onnx`` on onnxruntime: beat and downbeat times of a piece of audio.

    Args:
        path: the graph (``wavebeat.onnx`` of a models folder, `export.wavebeat`).
        threads: intra-op threads of the session (None: onnxruntime's default).
        device: "cpu" or "cuda" (`runtime.device_providers`); ignored when `providers` given.
        providers: onnxruntime execution providers, instead of `device`.

    Attributes:
        config: the graph's metadata (`read_wavebeat_config`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        device: str | None = "cpu",
        providers: list | None = None,
    ) -> None:
        self.config = read_wavebeat_config(path)
        self._session = create_session(
            path, providers, threads, device=None if providers else device
        )
        names = [i.name for i in self._session.get_inputs()]
        if names != WAVEBEAT.input_names:
            raise ValueError(
                f"BeatTracker: path must be a {WAVEBEAT_FILE} (inputs {WAVEBEAT.input_names}), "
                f"got '{path}' with inputs {names}"
            )

    def activations(self, audio: np.ndarray) -> np.ndarray:
        """Beat and downbeat probabilities float32 ``[2, ceil(N / downsampling)]`` of audio
        ``[N]`` already at ``config["audio_sample_rate"]`` and peak-normalised."""
        feed = {"audio": np.ascontiguousarray(audio, dtype=np.float32)[None, None]}
        return run(self._session, None, feed)[0][0]

    def extract_beats(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Beat and downbeat times of `audio`, as WaveBeat's ``predict_beats_from_array``.

        Args:
            audio: float samples ``[N]`` (mono) or ``[channels, N]``, N >= 1, finite.
            sample_rate: Hz of `audio`.

        Returns:
            (beats, downbeats): float64 ``[n]`` seconds from the start, ascending (the float32
            times upstream computes, widened exactly). Silence gives two empty arrays.
        """
        where = "BeatTracker.extract_beats"
        array = np.asarray(audio)
        if (
            not np.issubdtype(array.dtype, np.floating)
            or array.ndim not in (1, 2)
            or array.shape[-1] < 1
        ):
            raise ValueError(
                f"{where}: audio must be a float array [N] or [channels, N] with N >= 1, got "
                f"{array.dtype} {array.shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: audio must be finite, got NaN or inf")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
            raise ValueError(f"{where}: sample_rate must be an int, got {sample_rate!r}")
        if sample_rate <= 0:
            raise ValueError(f"{where}: sample_rate must be > 0, got {sample_rate}")
        rate = self.config["audio_sample_rate"]
        x = array.astype(np.float32, copy=False)
        if sample_rate != rate:
            # julius keeps floor(N * rate / sample_rate) samples where soxr rounds.
            x = resample(x, int(sample_rate), rate)[..., : array.shape[-1] * rate // sample_rate]
        x = to_mono(x)
        peak = np.max(np.abs(x)) if x.size else np.float32(0)
        if not peak > 0:
            return np.zeros(0), np.zeros(0)
        activations = self.activations(x / peak)
        frame_rate = self.config["target_sample_rate"]
        return tuple(
            pick_beats(activation, frame_rate, beat_type).astype(np.float64)
            for activation, beat_type in zip(activations, ("beat", "downbeat"), strict=True)
        )


def _times(times: Any, where: str, name: str) -> np.ndarray:
    array = np.asarray(times)
    if (
        array.ndim != 1
        or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer))
        or not np.isfinite(array).all()
        or (array < 0).any()
    ):
        raise ValueError(
            f"{where}: {name} must be a 1-D array of finite seconds >= 0, got {array.dtype} "
            f"{array.shape}"
        )
    return array


def _count(value: Any, where: str, name: str, optional: bool = False) -> int:
    if optional and value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        allowed = "an int >= 1 or None" if optional else "an int >= 1"
        raise ValueError(f"{where}: {name} must be {allowed}, got {value!r}")
    return int(value)


def beat_mask(
    beats_s: np.ndarray,
    downbeats_s: np.ndarray,
    n_frames: int,
    *,
    n_codebooks: int = 14,
    before_beat_s: float = 0.0,
    after_beat_s: float = 0.02,
    mask_downbeats: bool = True,
    mask_upbeats: bool = True,
    downbeat_downsample_factor: int | None = None,
    beat_downsample_factor: int | None = None,
    invert: bool = True,
    sample_rate: int = 44100,
    hop_length: int = 768,
) -> np.ndarray:
    """VampNet's beat-synced mask (``Interface.make_beat_mask``) for given beat times: int64
    ``[n_codebooks, n_frames]``, 1 = generate (with `invert`, the default, the beat windows are
    0: kept as prompt; without it they are the 1s).

    Steps, as upstream:

    1. Beat and downbeat times to frames: ``ceil(t * sample_rate / hop_length)`` computed in
       float32 (upstream's times are WaveBeat's float32 values, so its rounding is float32).
    2. Beats whose frame is a downbeat's frame are dropped; then every
       `beat_downsample_factor`-th beat and `downbeat_downsample_factor`-th downbeat is kept
       (None: all), from the first.
    3. With `mask_upbeats`, for each beat frame b, frames ``[b - before, b + after)`` are set,
       where before and after are `before_beat_s` and `after_beat_s` in frames (ceil, float64);
       then the same for downbeats with `mask_downbeats`. The window is a Python slice, so a
       start below 0 counts from the end (upstream's quirk, kept: usually an empty window).
    4. With `invert`, 0 and 1 swap; the row is repeated for every codebook.

    Args:
        beats_s, downbeats_s: 1-D seconds >= 0 (`BeatTracker.extract_beats`).
        n_frames: T >= 1, frames of the codes the mask is for.
        n_codebooks: rows >= 1 (14: the coarse-to-fine model's).
        sample_rate, hop_length: the codec's framing (44100 Hz, 768 samples).
    """
    where = "beat_mask"
    beats_s = _times(beats_s, where, "beats_s")
    downbeats_s = _times(downbeats_s, where, "downbeats_s")
    n_frames = _count(n_frames, where, "n_frames")
    n_codebooks = _count(n_codebooks, where, "n_codebooks")
    beat_step = _count(beat_downsample_factor, where, "beat_downsample_factor", optional=True)
    downbeat_step = _count(
        downbeat_downsample_factor, where, "downbeat_downsample_factor", optional=True
    )
    sample_rate = _count(sample_rate, where, "sample_rate")
    hop_length = _count(hop_length, where, "hop_length")
    for name, value in (("before_beat_s", before_beat_s), ("after_beat_s", after_beat_s)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float | np.number)
            or not 0 <= value < math.inf
        ):
            raise ValueError(f"{where}: {name} must be finite seconds >= 0, got {value!r}")
    before = seconds_to_frames(float(before_beat_s), sample_rate, hop_length)
    after = seconds_to_frames(float(after_beat_s), sample_rate, hop_length)

    def frames(times: np.ndarray) -> np.ndarray:
        return np.ceil(times.astype(np.float32) * np.float32(sample_rate) / np.float32(hop_length))

    beat_frames, downbeat_frames = frames(beats_s), frames(downbeats_s)
    beat_frames = beat_frames[~np.isin(beat_frames, downbeat_frames)][::beat_step]
    downbeat_frames = downbeat_frames[::downbeat_step]
    row = np.zeros(n_frames, dtype=np.int64)
    windows = [beat_frames] * bool(mask_upbeats) + [downbeat_frames] * bool(mask_downbeats)
    for frame in (int(f) for group in windows for f in group):
        row[frame - before : frame + after] = 1
    if invert:
        row = 1 - row
    return np.tile(row, (n_codebooks, 1))
