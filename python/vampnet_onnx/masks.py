"""VampNet's prompt masks (docs/model.md §4.5), numpy only.

A mask is a bool array ``[B, C, T]`` (batch, codebooks, frames): **True = generate**, False =
keep the prompt's code (upstream uses int64 with 1 = generate; ``mask.astype(np.int64)``
converts). Builders take the shape and a `numpy.random.Generator` seeded by the caller (or, for the
pipeline, a `StreamRandom`: the ops' counter-based streams, which an ONNX graph reproduces), and
compose with `mask_and` / `mask_or`; `build_mask` chains them as VampNet's
``Interface.build_mask`` does.

Upstream behaviours kept on purpose: `periodic` keeps ``2 * (width // 2) + 1`` frames around
each period start (width 2 acts as 3), and its random roll is one offset for the whole batch
with wrap-around; `dropout` draws ``int(T * p)`` frames with replacement and sets them to
*generate* in every codebook. Differences: random numbers come from numpy, not torch, so the
same seed gives other masks than upstream; `onset_mask` uses the numpy onset detector of
`detect_onsets` (an approximation of librosa's ``onset_detect``) and clamps windows at frame 0,
where upstream's slice with a negative start selects nothing (or wraps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .contracts import MASK_STREAM_ITEM, STREAM_SITES
from .settings import MaskSettings, check_seed

Shape = tuple[int, int, int]
_DEFAULTS = MaskSettings()
# Rows of equal logits per SampleTokens call: bounds the memory of long dropout draws.
_DRAW_CELLS = 1 << 22


class StreamRandom:
    """Random integers for masks from the ops' counter-based streams (docs/ops.md).

    ``integers(low, high, size)`` samples SampleTokens on ``size`` rows of ``high - low`` equal
    logits with key `seed`, offset ``STREAM_SITES[site]`` and first row
    ``MASK_STREAM_ITEM << 32``, so the single-graph export draws exactly the same numbers with
    the op. Each draw site of `build_mask` gets its own offset (`at`), so a draw never depends on
    whether another one happened.
    """

    def __init__(self, seed: int, site: str = "roll") -> None:
        if site not in STREAM_SITES:
            raise ValueError(
                f"StreamRandom: site must be one of {list(STREAM_SITES)}, got {site!r}"
            )
        self.seed, self.site = check_seed(seed, "StreamRandom"), site

    def at(self, site: str) -> StreamRandom:
        """The same seed at another draw site."""
        return StreamRandom(self.seed, site)

    def integers(self, low: int, high: int, size: int | None = None) -> np.ndarray | int:
        """Uniform ints in ``[low, high)``: one (size None) or an int64 array of `size`."""
        if high <= low:
            raise ValueError(f"StreamRandom.integers: high must be > low = {low}, got {high}")
        n, width = 1 if size is None else int(size), int(high - low)
        try:
            from ._kernels import sample_tokens
        except ImportError:  # the numpy twin draws the same tokens
            from .reference import sample_tokens
        out = np.empty(n, dtype=np.int64)
        block = max(1, _DRAW_CELLS // width)
        for start in range(0, n, block):
            rows = min(block, n - start)
            tokens, _ = sample_tokens(
                np.zeros((rows, width), np.float32),
                1.0,
                0,
                1.0,
                self.seed,
                STREAM_SITES[self.site],
                (MASK_STREAM_ITEM << 32) + start,
            )
            out[start : start + rows] = tokens
        out += low
        return int(out[0]) if size is None else out

    def random(self, shape) -> np.ndarray:
        raise ValueError(
            "StreamRandom: linear_random needs uniform floats, which the stream draws do not "
            "provide; use rand_mask_intensity 1 or a numpy.random.Generator"
        )


def _shape(shape: Any, where: str) -> Shape:
    if (
        not isinstance(shape, tuple | list)
        or len(shape) != 3
        or not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in shape)
        or min(shape) < 1
    ):
        raise ValueError(f"{where}: shape must be (B, C, T) with positive ints, got {shape!r}")
    return tuple(int(n) for n in shape)


def _mask(mask: Any, where: str, name: str = "mask") -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype != bool or array.ndim != 3:
        raise ValueError(
            f"{where}: {name} must be a bool array [B, C, T], got {array.dtype} {array.shape}"
        )
    return array


def _count(value: Any, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{where}: {name} must be an int >= 0, got {value!r}")
    return int(value)


def _probability(value: Any, where: str, name: str) -> float:
    numbers = int | float | np.integer | np.floating
    if isinstance(value, bool) or not isinstance(value, numbers) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: {name} must be in [0, 1], got {value!r}")
    return float(value)


def seconds_to_frames(seconds: float, sample_rate: int = 44100, hop_length: int = 768) -> int:
    """Frames covering `seconds` of audio: ceil(seconds * sample_rate / hop_length)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds_to_frames: seconds must be finite and >= 0, got {seconds}")
    return math.ceil(seconds * sample_rate / hop_length)


def full(shape: Shape) -> np.ndarray:
    """Generate everything: all True ``[B, C, T]``."""
    return np.ones(_shape(shape, "full"), dtype=bool)


def linear_random(shape: Shape, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Each position generated independently with probability `rate` (1: all, 0: none)."""
    shape = _shape(shape, "linear_random")
    rate = _probability(rate, "linear_random", "rate")
    return rng.random(shape) < rate


def inpaint(shape: Shape, n_prefix: int, n_suffix: int) -> np.ndarray:
    """Keep the first `n_prefix` and last `n_suffix` frames, generate the rest."""
    mask = full(_shape(shape, "inpaint"))
    n_prefix = _count(n_prefix, "inpaint", "n_prefix")
    n_suffix = _count(n_suffix, "inpaint", "n_suffix")
    mask[:, :, :n_prefix] = False
    if n_suffix:
        mask[:, :, -n_suffix:] = False
    return mask


def periodic(
    shape: Shape,
    period: int,
    width: int = 1,
    random_roll: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Keep frames around every `period`-th frame, generate the rest.

    Frames ``[j - width // 2, j + width // 2]`` (clipped to the sequence) are kept for every
    j with ``j % period == 0``. With `random_roll` the whole mask (all items alike) is rolled
    in time by an offset drawn uniformly from ``[0, period)`` with `rng`. Period 0: all True.
    """
    shape = _shape(shape, "periodic")
    period = _count(period, "periodic", "period")
    half = _count(width, "periodic", "width") // 2
    mask = full(shape)
    if period == 0:
        return mask
    t = shape[2]
    for j in range(0, t, period):
        mask[:, :, max(0, j - half) : min(t, j + half + 1)] = False
    if random_roll:
        if rng is None:
            raise ValueError("periodic: rng must be given when random_roll is True, got None")
        mask = np.roll(mask, int(rng.integers(0, period)), axis=-1)
    return mask


def dropout(mask: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Set ``int(T * p)`` frames, drawn uniformly with replacement, to generate (all
    codebooks): it drops prompt frames, not generated ones."""
    mask = _mask(mask, "dropout").copy()
    p = _probability(p, "dropout", "p")
    t = mask.shape[2]
    mask[:, :, rng.integers(0, t, int(t * p))] = True
    return mask


# build_mask's argument `dropout` (the settings' name) hides the function inside it.
_drop_frames = dropout


def codebook_unmask(mask: np.ndarray, n_codebooks: int) -> np.ndarray:
    """Keep codebooks ``< n_codebooks`` entirely (the conditioning codebooks)."""
    mask = _mask(mask, "codebook_unmask").copy()
    mask[:, : _count(n_codebooks, "codebook_unmask", "n_codebooks")] = False
    return mask


def codebook_mask(mask: np.ndarray, n_codebooks: int) -> np.ndarray:
    """Generate codebooks ``>= n_codebooks`` entirely (VampNet's "upper codebook mask")."""
    mask = _mask(mask, "codebook_mask").copy()
    mask[:, _count(n_codebooks, "codebook_mask", "n_codebooks") :] = True
    return mask


def mask_and(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Generate where both generate (upstream: elementwise min)."""
    a, b = _mask(a, "mask_and", "a"), _mask(b, "mask_and", "b")
    if a.shape != b.shape:
        raise ValueError(f"mask_and: b must have the shape of a {a.shape}, got {b.shape}")
    return a & b


def mask_or(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Generate where either generates (upstream: clamped sum)."""
    a, b = _mask(a, "mask_or", "a"), _mask(b, "mask_or", "b")
    if a.shape != b.shape:
        raise ValueError(f"mask_or: b must have the shape of a {a.shape}, got {b.shape}")
    return a | b


# --- onsets ------------------------------------------------------------------------------

_N_FFT = 2048
# Peak picking windows in seconds, converted to frames as librosa's onset_detect does.
_PRE_MAX_S, _POST_MAX_S, _PRE_AVG_S, _POST_AVG_S, _WAIT_S = 0.03, 0.0, 0.10, 0.10, 0.03
_DELTA = 0.07
_TOP_DB = 80.0


#: Spectrogram frames computed at a time (16 MB of float64 frames): `onset_strength`'s memory
#: does not grow with the signal.
_ONSET_CHUNK_FRAMES = 1024


def onset_strength(audio: np.ndarray, hop_length: int) -> np.ndarray:
    """Spectral-flux onset envelope ``[frames]``, one value per `hop_length` samples.

    Log-power spectrogram (Hann window 2048, frames centred on ``t * hop_length``, dB floored
    80 dB below the maximum), positive first difference in time averaged over frequency,
    delayed by one frame plus ``2048 // (2 * hop_length)`` (librosa's framing compensation).

    Computed `_ONSET_CHUNK_FRAMES` frames at a time, twice (the floor needs the whole
    spectrogram's maximum first): only the envelope, 8 bytes a frame, spans the signal.
    """
    audio = np.asarray(audio)
    n_frames = 1 + audio.shape[0] // hop_length
    chunks = [
        (first, min(n_frames, first + _ONSET_CHUNK_FRAMES))
        for first in range(0, n_frames, _ONSET_CHUNK_FRAMES)
    ]
    floor = max(_log_power(audio, *chunk, hop_length).max() for chunk in chunks) - _TOP_DB
    flux = np.empty(n_frames - 1)
    for first, stop in chunks:
        # From the chunk's previous frame on, so the first difference reaches back into it.
        begin = max(first - 1, 0)
        db = np.maximum(_log_power(audio, begin, stop, hop_length), floor)
        flux[begin : stop - 1] = np.maximum(0.0, np.diff(db, axis=0)).mean(axis=1)
    delay = 1 + _N_FFT // (2 * hop_length)
    return np.concatenate([np.zeros(delay), flux])[:n_frames]


def _log_power(audio: np.ndarray, first: int, stop: int, hop_length: int) -> np.ndarray:
    """dB power spectrum (floored at -100 dB) of frames ``[first, stop)``: frame t centred on
    sample ``t * hop_length`` of `audio` zero-padded on both sides, Hann window 2048."""
    begin = first * hop_length - _N_FFT // 2
    end = (stop - 1) * hop_length + _N_FFT // 2
    piece = np.zeros(end - begin)
    inside = slice(max(begin, 0), min(end, audio.shape[0]))
    piece[inside.start - begin : inside.stop - begin] = audio[inside]
    starts = np.arange(stop - first) * hop_length
    frames = piece[starts[:, None] + np.arange(_N_FFT)] * np.hanning(_N_FFT + 1)[:-1]
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    return 10.0 * np.log10(np.maximum(power, 1e-10))


def detect_onsets(audio: np.ndarray, sample_rate: int, hop_length: int) -> np.ndarray:
    """Onset frames (int64, ascending) of mono `audio`, in units of `hop_length` samples.

    An approximation of ``librosa.onset.onset_detect(backtrack=True)``: spectral flux on a
    log-power spectrogram (librosa uses a mel spectrogram), normalised to [0, 1]; a frame is an
    onset if it is the maximum within [-0.03 s, +1 frame), exceeds the mean within
    [-0.1 s, +0.1 s] by 0.07 and comes more than 0.03 s after the previous onset; each onset
    then moves back to the preceding local minimum of the envelope.
    """
    envelope = onset_strength(audio, hop_length)
    envelope = envelope - envelope.min()
    if envelope.max() <= 0:
        return np.zeros(0, dtype=np.int64)
    envelope /= envelope.max()
    fps = sample_rate / hop_length
    pre_max, post_max = int(_PRE_MAX_S * fps), int(_POST_MAX_S * fps) + 1
    pre_avg, post_avg = int(_PRE_AVG_S * fps), int(_POST_AVG_S * fps) + 1
    wait = int(_WAIT_S * fps)
    onsets: list[int] = []
    n = envelope.shape[0]
    for i in range(n):
        window_max = envelope[max(0, i - pre_max) : min(n, i + post_max)].max()
        window_mean = envelope[max(0, i - pre_avg) : min(n, i + post_avg)].mean()
        if (
            envelope[i] == window_max
            and envelope[i] >= window_mean + _DELTA
            and (not onsets or i > onsets[-1] + wait)
        ):
            onsets.append(i)
    # Local minima of the envelope (frame 0 counts as one) to backtrack to.
    inner = envelope[1:-1]
    minima = np.concatenate(
        [[0], np.flatnonzero((inner <= envelope[:-2]) & (inner < envelope[2:])) + 1]
    )
    backtracked = minima[np.searchsorted(minima, onsets, side="right") - 1]
    return backtracked.astype(np.int64)


def onset_mask(
    shape: Shape,
    audio: np.ndarray,
    sample_rate: int = 44100,
    hop_length: int = 768,
    width: int = 1,
) -> np.ndarray:
    """Keep frames ``[onset - width, onset + width)`` around every detected onset.

    Args:
        shape: (B, C, T); every item gets the same mask (upstream analyses one signal).
        audio: mono ``[N]`` at `sample_rate`, framed like the codes (preprocessed codec input).
        width: frames on each side (upstream's ``onset_mask_width``).
    """
    shape = _shape(shape, "onset_mask")
    width = _count(width, "onset_mask", "width")
    audio = np.asarray(audio)
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(
            f"onset_mask: audio must be a mono float array [N], got {audio.dtype} {audio.shape}"
        )
    mask = full(shape)
    for onset in detect_onsets(audio, sample_rate, hop_length):
        mask[:, :, max(0, onset - width) : onset + width] = False
    return mask


#: `build_mask`'s other names for two arguments: upstream's, and this module's earlier one.
_BUILD_MASK_ALIASES = {
    "periodic_prompt_width": "periodic_width",
    "_dropout": "dropout",
    "dropout_p": "dropout",
}


def build_mask(
    shape: Shape,
    rng: np.random.Generator | StreamRandom,
    rand_mask_intensity: float = 1.0,
    prefix_s: float = _DEFAULTS.prefix_s,
    suffix_s: float = _DEFAULTS.suffix_s,
    periodic_prompt: int = _DEFAULTS.periodic_prompt,
    periodic_width: int = _DEFAULTS.periodic_width,
    onset_mask_width: int = _DEFAULTS.onset_mask_width,
    dropout: float = _DEFAULTS.dropout,
    upper_codebook_mask: int = _DEFAULTS.upper_codebook_mask,
    n_conditioning_codebooks: int = 0,
    audio: np.ndarray | None = None,
    sample_rate: int = 44100,
    hop_length: int = 768,
    **upstream_names: Any,
) -> np.ndarray:
    """VampNet's mask recipe (``Interface.build_mask``) with its defaults: bool ``[B, C, T]``.

    ``linear_random(rand_mask_intensity) AND inpaint(prefix, suffix) AND
    periodic(periodic_prompt, periodic_width, rolled) [AND onset_mask(onset_mask_width)]``,
    then `dropout` (with probability `dropout`), `codebook_unmask` (conditioning codebooks
    kept) and `codebook_mask` (codebooks >= upper_codebook_mask generated). With the
    defaults: every 7th frame (randomly phase-shifted) is kept in codebooks 0-2, everything
    else is generated.

    Args:
        prefix_s, ..., upper_codebook_mask: the `settings.MaskSettings` fields, same names and
            defaults.
        upstream_names: upstream's names for two of them, accepted too:
            ``periodic_prompt_width`` (= periodic_width) and ``_dropout`` (= dropout; also
            ``dropout_p``, this function's earlier name).
        prefix_s, suffix_s: seconds kept at the start / end, in frames of `hop_length` samples
            at `sample_rate` (rounded up).
        audio: mono codec input ``[N]``; required when onset_mask_width > 0.
        rng: a numpy Generator (one sequence of draws), or a `StreamRandom` (each draw at its
            own stream site; rand_mask_intensity must then be 1).
    """

    given = {"periodic_width": periodic_width, "dropout": dropout}
    for alias, value in upstream_names.items():
        if alias not in _BUILD_MASK_ALIASES:
            raise TypeError(f"build_mask: unexpected keyword argument {alias!r}")
        given[_BUILD_MASK_ALIASES[alias]] = value
    periodic_width, dropout = given["periodic_width"], given["dropout"]

    def site(name: str):
        return rng.at(name) if isinstance(rng, StreamRandom) else rng

    mask = (
        full(shape)
        if isinstance(rng, StreamRandom) and rand_mask_intensity == 1.0
        else linear_random(shape, rand_mask_intensity, rng)
    )
    n_prefix = seconds_to_frames(prefix_s, sample_rate, hop_length)
    n_suffix = seconds_to_frames(suffix_s, sample_rate, hop_length)
    mask = mask_and(mask, inpaint(shape, n_prefix, n_suffix))
    mask = mask_and(
        mask,
        periodic(shape, periodic_prompt, periodic_width, random_roll=True, rng=site("roll")),
    )
    if _count(onset_mask_width, "build_mask", "onset_mask_width") > 0:
        if audio is None:
            raise ValueError("build_mask: audio must be given when onset_mask_width > 0, got None")
        mask = mask_and(mask, onset_mask(shape, audio, sample_rate, hop_length, onset_mask_width))
    mask = _drop_frames(mask, dropout, site("dropout"))
    mask = codebook_unmask(mask, n_conditioning_codebooks)
    return codebook_mask(mask, upper_codebook_mask)
