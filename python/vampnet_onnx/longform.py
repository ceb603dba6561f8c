"""Music longer than the model's window: continuing a clip (`Vamp.extend`, ``vampnet-onnx
extend``).

VampNet's coarse model sees 10 s at a time (575 frames at hop 768, 44.1 kHz). A continuation is
a chain of such windows (`windows`): window k begins with `context_frames` frames of codes that
are already there — the input's, or those an earlier window generated — kept in every codebook,
and generates the rest of the window, which is appended. No frame is generated twice: each
window's new frames start where the previous window's ended. The coarse codebooks are generated
window by window (each from the previous one's codes), then the fine codebooks of every new
frame by the coarse-to-fine model in its 3-s chunks over the whole sequence, as in a vamp, and
the sequence is decoded as one stream in the codec's bounded segments (`Vamp.decode`), so no
seam comes from separate decodes.

With a mask recipe (`looped`), the new frames are the input looped: new frame j is prompted by
input frame j mod K, kept where the recipe's mask over the input keeps it, so a preset continues
a clip as variations of it played again.

Random streams: window k draws MaskGitStep stream item `contracts.EXTEND_STREAM_BASE` + k (its
own, apart from a vamp's coarse chunks); the coarse-to-fine chunks draw theirs as in a vamp.

The join (`join`): the output is the input's samples (mixed to mono, at its rate) unchanged up
to `JOIN_S` before its end, then a linear crossfade over those `JOIN_S` seconds from the input
to the decoded stream, then the decoded stream alone (at the input's rate and loudness).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from .contracts import COARSE_STREAM_BASE, EXTEND_STREAM_BASE
from .settings import SamplingSettings

#: Seconds of context each window starts with, by default: 4 s of a 10-s window, the share of
#: its window MusicGen's continuation keeps as prompt (12 of 30 s) and inside the 2-5 s that
#: VampNet's author suggests; each window then adds about 6 s.
DEFAULT_CONTEXT_S = 4.0

#: Seconds over which the output crosses from the input's own samples to the decoded stream.
JOIN_S = 0.05

#: Longest continuation `Vamp.extend` takes, in seconds (a day: far past any window count that
#: matters, and a bound on the memory a typo could ask for).
MAX_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class Window:
    """One coarse window of a continuation, in frames of the whole sequence: the context is
    ``[start, new)``, the generated frames ``[new, stop)``; `stream` its random stream item."""

    start: int
    new: int
    stop: int
    stream: int


def windows(first_new: int, n_new: int, context_frames: int, window_frames: int) -> list[Window]:
    """The windows that generate frames ``[first_new, first_new + n_new)``, each starting with
    `context_frames` frames before its first new one (`first_new` >= `context_frames`) and at
    most `window_frames` long."""
    if not 0 <= context_frames < window_frames:
        raise ValueError(
            f"longform.windows: context_frames must be in [0, {window_frames}), got "
            f"{context_frames}"
        )
    step = window_frames - context_frames
    end = first_new + n_new
    return [
        Window(new - context_frames, new, min(new + step, end), EXTEND_STREAM_BASE + k)
        for k, new in enumerate(range(first_new, end, step))
    ]


def context_windows(n_frames: int, window_frames: int, context_frames: int) -> list[Window]:
    """The coarse windows of `vamp` with context over `n_frames` frames: window 0 is the first
    chunk ``[0, window_frames)`` (no context, as without context); window k > 0 starts with the
    `context_frames` frames before its first new one and generates the next
    ``window_frames - context_frames``. Window k draws stream item
    `contracts.COARSE_STREAM_BASE` + k, as chunk k does without context, so a file of one
    window is vamped the same either way."""
    if not 0 < context_frames < window_frames:
        raise ValueError(
            f"longform.context_windows: context_frames must be in (0, {window_frames}), got "
            f"{context_frames}"
        )
    plan = [Window(0, 0, min(window_frames, n_frames), COARSE_STREAM_BASE)]
    step = window_frames - context_frames
    for k, new in enumerate(range(window_frames, n_frames, step), start=1):
        plan.append(Window(new - context_frames, new, min(new + step, n_frames), k))
    return plan


def check_context(context_s: Any, where: str, window_s: float, supported: bool = True) -> float:
    """`vamp`'s context_s: seconds in [0, `window_s`), 0 where not `supported` (the single
    graph). Returns it as a float, or raises ValueError."""
    context_s = _number(context_s, where, "context_s")
    if not 0 <= context_s < window_s:
        raise ValueError(
            f"{where}: context_s must be in [0, {window_s:.3f}) (the model's window), got "
            f"{context_s:g}"
        )
    if context_s and not supported:
        raise ValueError(
            f"{where}: context_s must be 0 (the single graph runs upstream's independent "
            f"chunks; use a models folder), got {context_s:g}"
        )
    return context_s


def check_extend(
    seconds: Any, context_s: Any, input_seconds: float, window_s: float, where: str
) -> tuple[float, float]:
    """`seconds` and `context_s` of a continuation checked against the input's length and the
    model's window (both in seconds): (seconds, context_s) as floats, or ValueError."""
    seconds = _number(seconds, where, "seconds")
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"{where}: seconds must be in (0, {MAX_SECONDS:g}], got {seconds:g}")
    context_s = check_context(context_s, where, window_s)
    if context_s > input_seconds:
        raise ValueError(
            f"{where}: context_s must be at most the input's length, {input_seconds:.3f} s, got "
            f"{context_s:g}"
        )
    return seconds, context_s


def check_output_length(
    out_path: Any, subtype: str | None, source: Any, seconds: Any, where: str, name: str
) -> None:
    """The output file of a continuation of `source` (`audio.AudioFileInfo`) by `seconds` fits
    its format (`audio.max_frames`: a WAV or AIFF file holds at most 4 GiB), else ValueError
    naming `name` and the largest value that fits."""
    from . import audio

    if not isinstance(seconds, int | float | np.integer | np.floating) or isinstance(seconds, bool):
        return  # the continuation's own checks name it
    limit = audio.max_frames(out_path, subtype)
    if limit is None or source.n_frames + round(float(seconds) * source.sample_rate) <= limit:
        return
    most = math.floor((limit - source.n_frames) / source.sample_rate * 1000) / 1000
    kind = str(out_path).rpartition(".")[2]
    raise ValueError(
        f"{where}{': ' if where else ''}{name} must be at most {most:.3f} for this input to "
        f".{kind} (the format holds at most 4 GiB), got {float(seconds):g}; write .w64, .rf64 "
        "or .flac"
    )


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{where}: {name} must be a number of seconds, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class Loop:
    """The new frames of a continuation with a mask recipe (`looped`): their prompt `codes`
    int64 ``[1, n_codebooks, n_new]`` and `mask` bool ``[1, n_codebooks, n_new]`` (True =
    generate)."""

    codes: np.ndarray
    mask: np.ndarray


def looped(codes: np.ndarray, mask: np.ndarray, n_new: int) -> Loop:
    """The input's `codes` and its recipe's `mask` (both ``[1, n_codebooks, K]``, K >= 1)
    repeated over `n_new` new frames: new frame j takes input frame j mod K."""
    index = np.arange(n_new) % codes.shape[2]
    return Loop(codes[:, :, index], mask[:, :, index])


def extend_codes(
    vamp: Any,
    codes: np.ndarray,
    n_new: int,
    context_frames: int,
    seed: int,
    sampling: dict[str, Any],
    progress: bool = False,
    loop: Loop | None = None,
) -> tuple[np.ndarray, list[Window]]:
    """`codes` int64 ``[1, n_codebooks, K]`` (every frame kept) continued by `n_new` frames
    with `vamp`'s models (a `pipeline.Vamp`): (codes ``[1, n_codebooks, K + n_new]``, the
    coarse windows). sampling: the coarse stage's settings (`Vamp.generate`'s). `loop`: the
    new frames' prompt and mask (`looped`); None: every new frame generated."""
    n_kept = codes.shape[2]
    total = n_kept + n_new
    out = np.zeros((1, codes.shape[1], total), np.int64)
    out[:, :, :n_kept] = codes
    if loop is None:
        new_mask = np.ones((1, codes.shape[1], n_new), bool)
    else:
        out[:, :, n_kept:] = loop.codes
        new_mask = loop.mask
    coarse = vamp.coarse.n_codebooks
    plan = windows(n_kept, n_new, context_frames, vamp.coarse_chunk_frames)
    n_steps = SamplingSettings.from_public("Vamp.extend", **sampling).n_steps
    with tqdm(total=len(plan) * n_steps, desc="extend", unit="step", disable=not progress) as bar:
        for window in plan:
            new = window.new - window.start
            mask = np.zeros((1, coarse, window.stop - window.start), bool)
            mask[:, :, new:] = new_mask[:, :coarse, window.new - n_kept : window.stop - n_kept]
            chunk = (out[:, :coarse, window.start : window.stop], mask, seed, window.stream)
            [generated] = vamp._run_chunks(vamp.coarse, [chunk], 1, bar, per_step=True, **sampling)
            out[:, :coarse, window.new : window.stop] = generated[:, :, new:]
    fine = np.zeros(out.shape, bool)
    fine[:, coarse:, n_kept:] = new_mask[:, coarse:]
    [out] = vamp._c2f_batch([out], [fine], [seed], vamp.batch_size, progress)
    return out, plan


@dataclass(frozen=True)
class Tail:
    """A continuation's output after the input's first N - `fade` samples: `pieces()` yields
    its `fade` + `added` samples (the crossfade's share, then the addition) as consecutive
    float32 pieces, anew at each call."""

    pieces: Callable[[], Iterator[np.ndarray]]
    fade: int
    added: int


def resampled_tail(
    decoded: Iterable[np.ndarray],
    first: int,
    skip: int,
    count: int,
    from_rate: int,
    to_rate: int,
    meter: Any = None,
) -> Iterator[np.ndarray]:
    """The stream given as consecutive pieces `decoded` (mono, `from_rate`) from its sample
    `first`, resampled to `to_rate`, its first `skip` samples dropped: `count` samples in all
    (zero-padded at the end), as pieces. `meter` (an `audio.LoudnessMeter`) also measures the
    whole stream, from sample 0."""
    from .audio import _resampled_pieces

    def from_first() -> Iterator[np.ndarray]:
        position = 0
        for piece in decoded:
            if meter is not None:
                meter.add(piece[None])
            lo = max(first - position, 0)
            position += piece.shape[0]
            if lo < piece.shape[0]:
                yield piece[None, lo:]

    left = count
    for piece in _resampled_pieces(from_first(), from_rate, to_rate, 1):
        piece = piece[0]
        cut = min(skip, piece.shape[0])
        skip -= cut
        piece = piece[cut:][:left]
        left -= piece.shape[0]
        if piece.shape[0]:
            yield piece
    while left > 0:
        yield np.zeros(min(left, 1 << 16), np.float32)
        left -= min(left, 1 << 16)


def joined(head: np.ndarray, tail: Iterable[np.ndarray], fade: int) -> Iterator[np.ndarray]:
    """`join` of `head` and the pieces of `tail` (at least `fade` samples), as consecutive
    pieces."""
    cut = head.shape[0] - fade
    yield head[:cut]
    start, gathered = [], 0
    for piece in tail:
        if gathered < fade:
            take = piece[: fade - gathered]
            start.append(take)
            gathered += take.shape[0]
            piece = piece[take.shape[0] :]
            if gathered == fade:
                yield join(head[cut:], np.concatenate(start), fade)
        if piece.shape[0]:
            yield piece


def join(head: np.ndarray, tail: np.ndarray, fade: int) -> np.ndarray:
    """float32 ``[len(head) + len(tail) - fade]``: `head` unchanged up to its last `fade`
    samples, a linear crossfade over those from `head` to the first `fade` samples of `tail`,
    then the rest of `tail`."""
    fade = min(fade, head.shape[0], tail.shape[0])
    out = np.empty(head.shape[0] + tail.shape[0] - fade, np.float32)
    cut = head.shape[0] - fade
    out[:cut] = head[:cut]
    # Weights (i + 1) / (fade + 1): neither end is all of one signal, so a fade of one sample
    # still mixes both.
    w = (np.arange(fade, dtype=np.float64) + 1.0) / (fade + 1.0)
    out[cut : head.shape[0]] = (head[cut:] * (1.0 - w) + tail[:fade] * w).astype(np.float32)
    out[head.shape[0] :] = tail[fade:]
    return out
