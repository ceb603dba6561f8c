"""`Vamp`: VampNet's audio-to-audio pipeline on ONNX Runtime (numpy + onnxruntime, no torch).

An exported models folder (``vampnet-onnx export``) holds the four graphs this reads:
``codec.encode.onnx``, ``coarse.generate.onnx``, ``c2f.generate.onnx``, ``codec.decode.onnx``.
The stages follow VampNet's ``Interface`` (docs/model.md §4):

1. `audio.preprocess`: resample to 44.1 kHz, mono, -24 LUFS, peak <= 1.
2. encode: audio -> codes ``[1, 14, T]``, T = ceil(N / hop).
3. `masks.build_mask` with VampNet's defaults (periodic prompt 7, width 1, upper codebook mask 3).
4. coarse: codebooks 0-3 in consecutive 10-s chunks (575 frames, no overlap); a chunk with any
   prompt gets its first and last frame forced to prompt (docs/model.md §4.3).
5. coarse-to-fine: 3-s chunks (173 frames), the tail padded with code 0 / mask True; codebooks
   0-3 condition, the fine positions of the mask are generated with upstream's fixed c2f
   settings (2 steps, temperature 1, mask temperature 10.5, no top-k/top-p; docs/model.md §4.4).
6. decode, then `audio.restore`: the input's length, loudness and (by default) sample rate.

Deviations from upstream, on purpose:

- Bounded memory: the codec runs on segments of `segment_frames` frames (default 3 coarse
  chunks, about 30 s) with `context_frames` of extra frames on each side that are computed and
  dropped, rather than on the whole file at once. Inside the codec's receptive field this equals
  the whole-file result up to float rounding; a code right at a segment edge can flip where
  two codebook rows are nearly tied. The generation stages already work chunk by chunk; only
  O(N) audio (4 bytes a sample per copy) and O(T) codes and masks (126 bytes a frame per copy)
  span the whole file.
- Seeds: one int seed keys every random draw, each at its own place in the ops' counter-based
  streams (docs/ops.md), which is what lets the single graph (`export.vamp`) reproduce this
  pipeline token for token: coarse chunk i generates with ``batch_offset = i``, c2f chunk i
  with ``batch_offset = C2F_STREAM_BASE + i``, and the mask's random roll and dropout frames
  are SampleTokens draws on equal logits (`masks.StreamRandom`). Upstream draws all of these
  from one torch stream, so the same seed gives other masks and tokens. Upstream's c2f takes
  no user seed; here it does, so a run is reproducible.
- float32 settings: prefix/suffix seconds and the dropout probability are rounded to float32
  (the single graph's input type) before use.
- Batches (`Vamp.vamp_batch`, or `Vamp(batch_size=N)` for one file's chunks): chunks of equal
  length run together, up to `batch_size` a run, each item with its own seed and stream index,
  so each draws the random numbers of its one-chunk run (per-item schedule, the default export;
  a graph exported with ``--batch-coupled`` gets one chunk a run). The tokens equal the
  one-chunk runs': an item's logits are the same bits at any B (the transformer sums its
  codebook embeddings in a fixed order; `tests/test_transformer.py` checks it).
- The onset mask uses `masks.detect_onsets`, a numpy approximation of librosa's detector.
- The output is mono (VampNet is a mono model); stereo input is averaged.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import audio, longform, masks
from .codec import Codec, decoded_length
from .contracts import (
    C2F_CHUNK_S,
    C2F_STEPS,
    C2F_STREAM_BASE,
    COARSE_CHUNK_S,
    COARSE_STREAM_BASE,
    CODEC_CONFIG_KEY,
    DECODE_FILE,
    ENCODE_FILE,
    GENERATION_FILES,
    MODEL_FILES,
    VAMP,
    VAMP_KEY,
    WAVEBEAT_FILE,
    check_models_match,
    metadata,
    require_files,
)
from .generator import Generator
from .runtime import cancel_on, create_session, run
from .settings import (
    BATCH_SIZE_DEFAULT,
    HOST_ONLY_MASK_SETTINGS,
    SEED_DEFAULT,
    MaskSettings,
    SamplingSettings,
    check_seed,
    public_name,
)

#: Frames of context around each codec segment; the LAC encoder and decoder see about 15 frames
#: to either side, so 32 leaves a margin.
CONTEXT_FRAMES = 32
_SAMPLING = SamplingSettings()
_MASK = MaskSettings()


def _spans(n: int, size: int) -> Iterator[tuple[int, int]]:
    """Consecutive ``[start, stop)`` spans of at most `size` covering ``[0, n)``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)


@dataclass(frozen=True)
class _Run:
    """`vamp`'s keyword arguments, checked (`_AudioToAudio._prepare`)."""

    seed: int
    mask_settings: MaskSettings
    sampling: SamplingSettings
    mask: np.ndarray | None
    inpaint: tuple[float, float] | None
    keep_rate: bool
    progress: bool
    context_s: float = 0.0


def _window_mask(mask: np.ndarray, n: int, window: longform.Window) -> np.ndarray:
    """The coarse stage's mask ``[1, n, stop - start]`` for one chunk or window of `mask`
    ``[1, C, T]``: its context frames kept, and upstream's seam rule (docs/model.md §4.3): a
    chunk with any kept frame among its new ones keeps its first and last frame too."""
    new = window.new - window.start
    chunk_mask = mask[:, :n, window.start : window.stop].copy()
    if not chunk_mask[:, :, new:].all():
        chunk_mask[:, :, [0, -1]] = False
    chunk_mask[:, :, :new] = False
    return chunk_mask


def _filled(out: np.ndarray, pieces: Iterable[np.ndarray]) -> np.ndarray:
    """`out` ``[N]`` written with consecutive `pieces`, from its start."""
    filled = 0
    for piece in pieces:
        out[filled : filled + piece.shape[0]] = piece
        filled += piece.shape[0]
    return out


def _check_batch_size(batch_size: Any, where: str) -> int:
    """`batch_size` as an int >= 1 (numpy ints taken, as everywhere else)."""
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"{where}: batch_size must be an int >= 1, got {batch_size!r}")
    return int(batch_size)


def _per_clip(value: Any, n_clips: int, where: str, name: str) -> list:
    """`value` for each of `n_clips` clips: an int for all, or a sequence of one per clip."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return [value] * n_clips
    values = list(value) if isinstance(value, Sequence | np.ndarray) else None
    if values is None or len(values) != n_clips:
        raise ValueError(
            f"{where}: {name} must be an int or a sequence of one per clip ({n_clips}), got "
            f"{value!r}"
        )
    return values


def _check_given_mask(mask: Any, where: str, supported: bool) -> None:
    """A `vamp` mask argument: a 1-D or 2-D array of bools or 0/1 integers."""
    if not supported:
        raise ValueError(f"{where}: mask must be None (the single graph builds its own), got one")
    array = np.asarray(mask)
    if array.ndim not in (1, 2, 3) or array.size == 0 or (array.ndim == 3 and len(array) != 1):
        raise ValueError(
            f"{where}: mask must be a non-empty [T], [n_codebooks, T] or [1, n_codebooks, T] "
            f"array, got shape {list(array.shape)}"
        )
    if array.dtype != bool:
        # Object arrays never reach np.isin / np.unique (a TypeError there).
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{where}: mask must hold bools or the integers 0 and 1 (1 = generate), got "
                f"dtype {array.dtype}"
            )
        if not np.isin(array, (0, 1)).all():
            raise ValueError(
                f"{where}: mask must hold bools or the integers 0 and 1 (1 = generate), got "
                f"dtype {array.dtype} with values {np.unique(array)[:5].tolist()}"
            )


#: The latest inpaint end in seconds (as the mask recipe's seconds, `settings`): about 116 days.
INPAINT_MAX_S = 1e7


def _check_inpaint(inpaint: Any, where: str, supported: bool) -> None:
    """A `vamp` inpaint argument: a pair (start, end) of real numbers in seconds,
    0 <= start < end <= INPAINT_MAX_S."""
    if not supported:
        raise ValueError(
            f"{where}: inpaint must be None (the single graph builds its own mask; use "
            "prefix_s and suffix_s, or a models folder), got one"
        )
    pair = isinstance(inpaint, Sequence | np.ndarray) and not isinstance(inpaint, str | bytes)
    numbers = pair and len(inpaint) == 2 and all(_is_real(t) for t in inpaint)
    if not numbers:  # "12" is not (1, 2), nor a dict its keys
        raise ValueError(
            f"{where}: inpaint must be a pair (start, end) of numbers in seconds, got {inpaint!r}"
        )
    start, end = (_seconds(t) for t in inpaint)
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end <= INPAINT_MAX_S):
        raise ValueError(
            f"{where}: inpaint must be (start, end) seconds with 0 <= start < end <= "
            f"{INPAINT_MAX_S:g}, got ({start:g}, {end:g})"
        )


def _is_real(value: Any) -> bool:
    """An int or float (numpy scalars included), not a bool."""
    return not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)


def _seconds(value: Any) -> float:
    """`value` as a float; an int too large for one as inf (refused by the range check)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


class _AudioToAudio:
    """`vamp` and `vamp_file` around a subclass's `_vamp_preprocessed` (the codec-rate part):
    settings checked before any work, `audio.preprocess` before, `audio.restore` after."""

    sample_rate: int
    #: Whether `vamp` can build the masks the host computes: onsets (onset_mask_width > 0),
    #: beats (beat_mask_ms > 0) and a given mask.
    has_host_masks = True
    #: Codebooks of the mask (the codec's, set by the subclass from its models).
    n_codebooks: int

    def vamp(
        self,
        samples: np.ndarray,
        sample_rate: int,
        *,
        seed: int = 0,
        steps: int = _SAMPLING.n_steps,
        temperature: float = _SAMPLING.temperature,
        top_k: int | None = _SAMPLING.top_k,
        top_p: float | None = _SAMPLING.top_p,
        mask_temperature: float = _SAMPLING.mask_temperature,
        periodic_prompt: int = _MASK.periodic_prompt,
        periodic_width: int = _MASK.periodic_width,
        upper_codebook_mask: int = _MASK.upper_codebook_mask,
        onset_mask_width: int = _MASK.onset_mask_width,
        beat_mask_ms: float = _MASK.beat_mask_ms,
        prefix_s: float = _MASK.prefix_s,
        suffix_s: float = _MASK.suffix_s,
        dropout: float = _MASK.dropout,
        mask: np.ndarray | None = None,
        inpaint: tuple[float, float] | None = None,
        context_s: float = 0.0,
        keep_rate: bool = True,
        progress: bool = False,
        cancel: threading.Event | None = None,
    ) -> tuple[np.ndarray, int]:
        """Vamp on `samples` with VampNet's app defaults (docs/model.md §4.7).

        Args:
            samples: float ``[N]`` or ``[channels, N]`` in [-1, 1], N >= 1.
            sample_rate: Hz.
            seed: any int64: the key of every random draw (mask and generation).
            steps, temperature, top_k, top_p, mask_temperature: the coarse stage's sampling
                (`settings.SamplingSettings`, `Generator.generate`); c2f always uses upstream's
                fixed settings.
            periodic_prompt, periodic_width, upper_codebook_mask, onset_mask_width,
                beat_mask_ms, prefix_s, suffix_s, dropout: the mask recipe
                (`settings.MaskSettings`, `masks.build_mask`; 0 turns a periodic prompt, onset
                or beat mask off; `SingleGraphVamp` has no onset or beat mask). Named presets:
                `presets.preset`.
            mask: instead of the recipe, the mask itself: bool or 0/1 ints, 1 = generate,
                ``[T]`` (every codebook), ``[n_codebooks, T]`` or upstream's
                ``[1, n_codebooks, T]``, T = ceil(N' / hop) for the
                N' samples of the input at the codec's rate (`Vamp` only; the recipe settings
                must then be left at their defaults).
            inpaint: (start, end) seconds: generate only frames ceil(start * rate / hop) up
                to ceil(end * rate / hop), keep every codebook of the others as it is; inside,
                the recipe (or `mask`) applies: periodic_prompt=0 regenerates it all (`Vamp`
                only; upstream's prefix_s/suffix_s keep only codebooks < upper_codebook_mask).
            context_s: 0 (upstream's independent 10-s coarse chunks), or seconds in [0, 10):
                each coarse window after the first starts with the last `context_s` seconds
                the window before it generated, kept in every coarse codebook, so windows
                connect (`longform.context_windows`; `Vamp` only).
            keep_rate: return audio at `sample_rate` (True) or at the codec's 44.1 kHz.
            progress: tqdm bars over the chunks of each stage (`Vamp`; the single graph is one
                run and shows none).
            cancel: an event that another thread (a front end's Stop button) may set to stop
                the vamp: the graph running then stops at its next node and `vamp` raises
                `runtime.Cancelled` (`runtime.cancel_on`); None: only Ctrl-C stops it.

        Returns:
            (float32 mono ``[N']`` with the input's duration and loudness, its rate in Hz);
            N' = N when `keep_rate`.
        """
        with cancel_on(cancel, f"{type(self).__name__}.vamp"):
            checked = self._prepare(
                mask=mask,
                inpaint=inpaint,
                context_s=context_s,
                seed=seed,
                steps=steps,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                mask_temperature=mask_temperature,
                periodic_prompt=periodic_prompt,
                periodic_width=periodic_width,
                upper_codebook_mask=upper_codebook_mask,
                onset_mask_width=onset_mask_width,
                beat_mask_ms=beat_mask_ms,
                prefix_s=prefix_s,
                suffix_s=suffix_s,
                dropout=dropout,
                keep_rate=keep_rate,
                progress=progress,
            )
            y, info = self._run(checked, *audio.preprocess(samples, sample_rate, self.sample_rate))
            return audio.restore(y, info, self.sample_rate), info.sample_rate

    def _prepare(
        self,
        *,
        mask: np.ndarray | None = None,
        inpaint: tuple[float, float] | None = None,
        context_s: float = 0.0,
        keep_rate: bool = True,
        progress: bool = False,
        **settings: Any,
    ) -> _Run:
        """`vamp`'s keyword arguments checked, before any audio work."""
        seed, mask_settings, sampling = self.check_settings(
            mask=mask, inpaint=inpaint, context_s=context_s, **settings
        )
        if mask_settings.beat_mask_ms > 0:
            self.beat_tracker()  # a missing wavebeat.onnx fails before any audio work
        return _Run(
            seed, mask_settings, sampling, mask, inpaint, keep_rate, progress, float(context_s)
        )

    def _run(
        self, checked: _Run, x: np.ndarray, info: audio.PreprocessInfo
    ) -> tuple[np.ndarray, audio.PreprocessInfo]:
        """The `checked` run on preprocessed `x` ``[N]`` at the codec rate (overwritten) ->
        (vamped ``[N]``, the info `audio.restore` is to use)."""
        given, info = self._run_inputs(checked, x, info)
        y = self._vamp_preprocessed(
            x,
            checked.seed,
            checked.mask_settings,
            checked.sampling,
            checked.progress,
            given,
            self._context_frames(checked.context_s),
        )
        return y, info

    def _run_inputs(
        self, checked: _Run, x: np.ndarray, info: audio.PreprocessInfo
    ) -> tuple[np.ndarray | None, audio.PreprocessInfo]:
        """(the mask ``[1, C, T]`` for preprocessed `x` when `checked` has a given one or an
        inpaint range, None for the recipe's, built later; what `audio.restore` is to give back:
        the input's rate and length with keep_rate, else the codec's rate and x's length)."""
        given = None if checked.mask is None else self._given_mask(checked.mask, x.shape[0])
        if checked.inpaint is not None:
            if given is None:
                given = self.build_mask(x, checked.seed, **checked.mask_settings.inputs())
            given = self._inpainted(given, checked.inpaint)
        if not checked.keep_rate:
            info = replace(info, sample_rate=self.sample_rate, n_samples=x.shape[0])
        return given, info

    @classmethod
    def check_settings(
        cls,
        seed: int = 0,
        mask: np.ndarray | None = None,
        inpaint: tuple[float, float] | None = None,
        context_s: float = 0.0,
        **settings: Any,
    ) -> tuple[int, MaskSettings, SamplingSettings]:
        """`vamp`'s seed and settings (its keyword names) checked as `vamp` checks them, so a
        caller can fail before loading models or audio: (seed, mask, sampling) with the
        defaults filled in. `mask` and `inpaint` are checked here as far as they can be
        without the audio (type, values, which settings they exclude). Raises ValueError
        naming the argument, TypeError for an unknown name."""
        where = f"{cls.__name__}.vamp"
        seed = check_seed(seed, where)
        mask_names = {f.name for f in fields(MaskSettings)}
        mask_settings = MaskSettings(**{k: v for k, v in settings.items() if k in mask_names})
        mask_settings = mask_settings.validate(where)
        for name in HOST_ONLY_MASK_SETTINGS:
            if getattr(mask_settings, name) != 0 and not cls.has_host_masks:
                raise ValueError(
                    f"{where}: {name} must be 0 (the single graph has no onset detector or beat "
                    f"tracker; use a models folder), got {settings[name]!r}"
                )
        if mask is not None:
            _check_given_mask(mask, where, cls.has_host_masks)
            changed = [k for k in mask_names if getattr(mask_settings, k) != getattr(_MASK, k)]
            if changed:
                raise ValueError(
                    f"{where}: {changed[0]} must be left at its default when a mask is given "
                    f"(the mask replaces the recipe), got {settings[changed[0]]!r}"
                )
        if inpaint is not None:
            _check_inpaint(inpaint, where, cls.has_host_masks)
        longform.check_context(context_s, where, COARSE_CHUNK_S, cls.has_host_masks)
        sampling = SamplingSettings.from_public(
            Generator.WHERE, **{k: v for k, v in settings.items() if k not in mask_names}
        )
        return seed, mask_settings, sampling

    def _inpainted(self, mask: np.ndarray, inpaint: tuple[float, float]) -> np.ndarray:
        """`mask` ``[1, C, T]`` with every frame outside `inpaint` kept (False) in every
        codebook: frames ceil(start * rate / hop) up to ceil(end * rate / hop) stay as they are."""
        start, end = (float(t) for t in inpaint)
        n_frames = mask.shape[-1]
        first = masks.seconds_to_frames(start, self.sample_rate, self.hop_length)
        stop = min(n_frames, masks.seconds_to_frames(end, self.sample_rate, self.hop_length))
        where = f"{type(self).__name__}.vamp"
        if first >= n_frames:
            # Frame f covers [f, f + 1) hops: the range takes the frames that start inside it.
            last = (n_frames - 1) * self.hop_length / self.sample_rate
            raise ValueError(
                f"{where}: inpaint must start at or before {last:.3f} s, where this input's last "
                f"{self.hop_length}-sample frame starts, got ({start:g}, {end:g})"
            )
        if first >= stop:
            raise ValueError(
                f"{where}: inpaint must hold the start of a {self.hop_length}-sample frame (one "
                f"every {self.hop_length / self.sample_rate * 1000:.2f} ms), got ({start:g}, "
                f"{end:g}), which holds none and would generate nothing"
            )
        kept = mask.copy()
        kept[..., :first] = False
        kept[..., stop:] = False
        return kept

    def _given_mask(self, mask: np.ndarray, n_samples: int) -> np.ndarray:
        """A `vamp` mask argument as bool ``[1, n_codebooks, T]``, its length checked."""
        n_frames = math.ceil(n_samples / self.hop_length)
        mask = np.asarray(mask).astype(bool)
        given = list(mask.shape)
        if mask.ndim == 3:  # upstream's [B, C, T] with B = 1
            mask = mask[0]
        if mask.ndim == 1:
            mask = np.broadcast_to(mask, (self.n_codebooks, mask.shape[0]))
        if mask.shape != (self.n_codebooks, n_frames):
            raise ValueError(
                f"{type(self).__name__}.vamp: mask must have shape [{n_frames}] or "
                f"[{self.n_codebooks}, {n_frames}] for this input ({n_samples} samples at "
                f"{self.sample_rate} Hz, hop {self.hop_length}), got {given}"
            )
        return np.ascontiguousarray(mask[None])

    def _vamp_preprocessed(
        self,
        x: np.ndarray,
        seed: int,
        mask_settings: MaskSettings,
        sampling: SamplingSettings,
        progress: bool,
        mask: np.ndarray | None,
        context_frames: int = 0,
    ) -> np.ndarray:
        """Preprocessed mono `x` ``[N]`` at the codec rate -> vamped audio ``[N]``; `mask`:
        bool ``[1, C, T]`` instead of the recipe of `mask_settings`; `context_frames`: of each
        coarse window after the first (0: independent chunks)."""
        raise NotImplementedError

    def _context_frames(self, context_s: float) -> int:
        """`vamp`'s context_s in codec frames (0 stays 0: independent chunks)."""
        return round(context_s * self.sample_rate / self.hop_length)

    def vamp_file(
        self,
        in_path: str | Path,
        out_path: str | Path,
        *,
        cancel: threading.Event | None = None,
        **settings: Any,
    ) -> tuple[Path, int]:
        """`vamp` on an audio file, written to `out_path` (format from the extension, the
        input's subtype where that format takes it: `audio.kept_subtype`).

        settings: the keyword arguments of `vamp`; cancel: as `vamp`'s (a cancelled run writes
        nothing). Returns (out_path, its sample rate in Hz).
        Raises FileNotFoundError / ValueError for a missing or undecodable input, and ValueError
        before any work for an output that cannot be written (`audio.check_output_path`: no
        such folder, no permission, no audio extension, the input file itself, or a format
        that cannot hold the output's rate, e.g. a 96-kHz input to .mp3). The output appears
        whole or not at all.
        """
        where = f"{type(self).__name__}.vamp_file"
        out_path = audio.check_output_path(out_path, where, "out_path", in_path)
        checked = self._prepare(**settings)
        source = audio.file_info(in_path)
        subtype = audio.kept_subtype(out_path, source)
        audio.check_output_path(
            out_path,
            where,
            "out_path",
            in_path,
            sample_rate=self._output_rate(source, checked.keep_rate),
            subtype=subtype,
            hint=f"keep_rate=False writes at the codec's {self.sample_rate} Hz",
        )
        # File to file, piece by piece at both ends (`audio.preprocess_file`, `restore_file`):
        # the one whole-input array is the codec-rate mono signal, which the run overwrites
        # with its output, so memory stays bounded whatever the input's length.
        with cancel_on(cancel, where):
            y, info = self._run(checked, *audio.preprocess_file(in_path, self.sample_rate))
        audio.restore_file(y, info, out_path, self.sample_rate, subtype)
        return out_path, info.sample_rate

    def output_rate(self, in_path: str | Path, keep_rate: bool = True) -> int:
        """The sample rate in Hz of `vamp_file`'s output for the audio file `in_path`: the
        input's with `keep_rate`, else the codec's (read from the header only; an input rate
        `audio.preprocess` does not take is a ValueError)."""
        return self._output_rate(audio.file_info(in_path), keep_rate)

    def _output_rate(self, source: audio.AudioFileInfo, keep_rate: bool) -> int:
        rate = source.sample_rate
        audio.check_input_rate(rate, "load_audio", f"the sample rate of '{source.path}'")
        return rate if keep_rate else self.sample_rate


class Vamp(_AudioToAudio):
    """VampNet's vamp from an exported models folder.

    Args:
        models: folder with `MODEL_FILES` (``vampnet-onnx export --coarse --c2f --codec``).
        threads: intra-op threads per onnxruntime session (None: onnxruntime's default).
        segment_frames: codec frames per encode/decode segment (memory bound; default three
            coarse chunks, about 30 s).
        context_frames: extra frames computed and dropped on each side of a segment.
        providers: onnxruntime execution providers (None: CPU).
        device: "cpu" or "cuda" instead of `providers` (`runtime.device_providers`: CUDA
            where onnxruntime cannot use it is an error, not a CPU fallback).
        batch_size: chunks of equal length per generation run (the coarse chunks of a long
            file, the c2f chunks), each with its own random stream; `vamp_batch` takes its
            own. Same tokens at any batch size; default 1, one chunk a run: on a CPU a
            batch gains little at full size and its activations grow with B (on a GPU,
            batch).

    Raises:
        FileNotFoundError: a graph is missing (all missing names are listed).
        ValueError: the graphs do not belong together (codebooks, hop).
    """

    def __init__(
        self,
        models: str | Path,
        threads: int | None = None,
        segment_frames: int | None = None,
        context_frames: int = CONTEXT_FRAMES,
        providers: list | None = None,
        device: str | None = None,
        batch_size: int = 1,
    ) -> None:
        models = require_files(models, MODEL_FILES, "Vamp: models")
        self.codec = Codec(
            models / ENCODE_FILE, models / DECODE_FILE, threads, providers, device=device
        )
        self.coarse = Generator(
            models / GENERATION_FILES["coarse"], providers, threads, device=device
        )
        self.c2f = Generator(models / GENERATION_FILES["c2f"], providers, threads, device=device)
        config = self.codec.config
        self.sample_rate = int(config["sample_rate"])
        self.hop_length = int(config["hop_length"])
        self._check_models(config)
        self.coarse_chunk_frames = masks.seconds_to_frames(
            COARSE_CHUNK_S, self.sample_rate, self.hop_length
        )
        self.c2f_chunk_frames = masks.seconds_to_frames(
            C2F_CHUNK_S, self.sample_rate, self.hop_length
        )
        self.segment_frames = segment_frames or 3 * self.coarse_chunk_frames
        for name, value, low in (
            ("segment_frames", self.segment_frames, 1),
            ("context_frames", context_frames, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Vamp: {name} must be an int >= {low}, got {value!r}")
        self.context_frames = context_frames
        self.batch_size = _check_batch_size(batch_size, "Vamp")
        self.n_codebooks = self.c2f.n_codebooks
        self.models = models
        # WaveBeat is opened on the first vamp that asks for a beat mask: most runs never do.
        self._session_options = {"threads": threads, "providers": providers, "device": device}
        self._beat_tracker = None

    def _check_models(self, config: dict) -> None:
        if decoded_length(1, config["decoder_rates"]) != self.hop_length:
            raise ValueError(
                f"Vamp: the codec's decoder_rates must multiply to its hop {self.hop_length} "
                f"with even rates, got {config['decoder_rates']}"
            )
        files = {"codec": ENCODE_FILE, **GENERATION_FILES}
        check_models_match(config, self.coarse.config, self.c2f.config, files, "Vamp")

    def _vamp_preprocessed(
        self, x, seed, mask_settings, sampling, progress, mask, context_frames=0
    ) -> np.ndarray:
        [y] = self._vamp_preprocessed_batch(
            [x], [seed], mask_settings, sampling, progress, [mask], self.batch_size, context_frames
        )
        return y

    def _vamp_preprocessed_batch(
        self,
        xs: list[np.ndarray],
        seeds: list[int],
        mask_settings: MaskSettings,
        sampling: SamplingSettings,
        progress: bool,
        given_masks: list[np.ndarray | None],
        batch_size: int,
        context_frames: int = 0,
    ) -> list[np.ndarray]:
        """`_vamp_preprocessed` of several clips: masks (each with its seed), codes and audio
        clip by clip, the generation in batches of chunks of every clip."""
        clips = list(zip(xs, seeds, given_masks))
        mask_list = [
            self.build_mask(x, seed, **mask_settings.inputs()) if mask is None else mask
            for x, seed, mask in clips
        ]
        codes = [self.encode(x, progress) for x in xs]
        codes = self._generate_batch(
            codes,
            mask_list,
            seeds,
            batch_size,
            progress=progress,
            context_frames=context_frames,
            **sampling.public(),
        )
        # Each clip's input is not needed any more: its output is decoded into it.
        return [self.decode(c, x.shape[0], progress, out=x) for c, x in zip(codes, xs)]

    def _continuation(
        self,
        samples: np.ndarray,
        sample_rate: int,
        *,
        seconds: float,
        context_s: float | None = None,
        seed: int = SEED_DEFAULT,
        progress: bool = False,
        **sampling: Any,
    ):
        """`extend`'s work up to its output: (the input mixed to mono ``[N]``, the input's
        `audio.PreprocessInfo`, the continuation's `longform.Tail`), every value checked first."""
        where = "Vamp.extend"
        recipe_names = {f.name for f in fields(MaskSettings)}
        names = {public_name(f.name) for f in fields(SamplingSettings)} | recipe_names
        for name in sampling:
            if name not in names:
                raise ValueError(
                    f"{where}: {name} must not be given: a continuation takes the sampling "
                    f"and mask recipe settings ({', '.join(sorted(names))})"
                )
        looped = any(name in recipe_names for name in sampling)
        seed, mask_settings, settings = self.check_settings(seed=seed, **sampling)
        if mask_settings.beat_mask_ms > 0:
            self.beat_tracker()  # a missing wavebeat.onnx fails before any audio work
        x, info = audio.preprocess(samples, sample_rate, self.sample_rate)  # checks `samples`
        head = audio.to_mono(np.asarray(samples, np.float32))
        input_s = info.n_samples / info.sample_rate
        if context_s is None:
            context_s = min(longform.DEFAULT_CONTEXT_S, input_s)
        seconds, context_s = longform.check_extend(
            seconds, context_s, input_s, COARSE_CHUNK_S, where
        )
        hop = self.hop_length
        kept = x.shape[0] // hop  # whole frames only: the last, part padding, is generated anew
        if looped and not kept:
            raise ValueError(
                f"{where}: samples must hold at least one frame ({hop} samples at "
                f"{self.sample_rate} Hz) to be looped under a mask recipe, got "
                f"{info.n_samples} at {info.sample_rate} Hz"
            )
        context = min(kept, self._context_frames(context_s))
        added = round(seconds * info.sample_rate)
        # Frames to the end of the addition, with a frame to spare for the resampler's filter.
        end = x.shape[0] + math.ceil(seconds * self.sample_rate) + hop
        n_new = math.ceil(end / hop) - kept
        codes = self.encode(x, progress)[:, :, :kept]
        loop = None
        if looped:
            mask = self.build_mask(x, seed, **mask_settings.inputs())[:, :, :kept]
            loop = longform.looped(codes, mask, n_new)
        del x
        codes, _ = longform.extend_codes(
            self, codes, n_new, context, seed, settings.public(), progress, loop
        )
        return head, info, self._tail(codes, info, added, progress)

    def extend(
        self,
        samples: np.ndarray,
        sample_rate: int,
        *,
        seconds: float,
        cancel: threading.Event | None = None,
        **settings: Any,
    ) -> tuple[np.ndarray, int]:
        """Continue a clip by `seconds` of new music (`longform`: 10-s windows, each starting
        with `context_s` seconds of the codes already there, only new frames appended).

        Args:
            samples: float ``[N]`` or ``[channels, N]``.
            sample_rate: Hz.
            seconds: how much to add, in (0, `longform.MAX_SECONDS`]; any length, the
                windows follow one another.
            settings: context_s (seconds of codes each window starts with, in [0, 10) and at
                most the input's length; None: `longform.DEFAULT_CONTEXT_S`, or the input's
                length where that is shorter), seed (any int64), progress (tqdm bars), and the
                coarse stage's steps, temperature, top_k, top_p, mask_temperature
                (`settings.SamplingSettings`). Without a mask setting every new frame is
                generated; with any (`settings.MaskSettings`, e.g. ``**presets.preset(name)``)
                the new frames are the input looped, prompted by its codes where the recipe's
                mask over the input (onset and beat masks included) keeps them
                (`longform.looped`).
            cancel: as `vamp`'s: setting it stops the continuation (`runtime.Cancelled`).

        Returns:
            (float32 mono ``[N + round(seconds * sample_rate)]``, `sample_rate`): the input
            mixed to mono, unchanged up to `longform.JOIN_S` before its end, crossfaded there
            into the continuation, at the input's loudness (`_tail`).
        """
        with cancel_on(cancel, "Vamp.extend"):
            head, info, tail = self._continuation(samples, sample_rate, seconds=seconds, **settings)
            out = np.empty(info.n_samples + tail.added, np.float32)
            # The decode runs as the pieces are drawn: inside the scope too.
            _filled(out, longform.joined(head, tail.pieces(), tail.fade))
        return out, info.sample_rate

    def _tail(self, codes: np.ndarray, info: audio.PreprocessInfo, added: int, progress: bool):
        """The continuation's samples after the input's first N - fade (`longform.Tail`): the
        stream decoded from `codes` (whole sequence, input frames first), resampled to the
        input's rate from `longform.JOIN_S` before its end, at the input's loudness as
        `audio.restore` gives a vamp's output (the whole decoded stream measured, so any length
        added gets the same gain), its peak limited to 1. Decoded twice, piece by piece (a
        first pass measures loudness and peak), so memory does not grow with `added`."""
        rate, n = info.sample_rate, info.n_samples
        fade = min(n, max(1, round(longform.JOIN_S * rate)))
        # Resampled from a margin before the crossfade, so the filter's start-up is cut off.
        margin = min(n - fade, 1024)
        first = round((n - fade - margin) * self.sample_rate / rate)
        n_stream = codes.shape[2] * self.hop_length

        def pieces(meter=None, desc="decode"):
            decoded = self._decoded_pieces(codes, n_stream, progress, desc)
            return longform.resampled_tail(
                decoded, first, margin, fade + added, self.sample_rate, rate, meter
            )

        meter = audio.LoudnessMeter(self.sample_rate, 1, n_stream)
        largest = max((float(np.abs(p).max()) for p in pieces(meter, "measure")), default=0.0)
        gain = audio._gain(meter.value(), info.loudness)
        # Scaled and limited as `audio.restore` scales a vamp's output.
        return longform.Tail(
            lambda: (audio._scaled(p, gain, largest * gain) for p in pieces()), fade, added
        )

    def extend_file(
        self, in_path: str | Path, out_path: str | Path, **settings: Any
    ) -> tuple[Path, int]:
        """`extend` on an audio file, written to `out_path` (the input's subtype where the
        format takes it; whole or not at all). settings: `extend`'s keyword arguments.
        Returns (out_path, its sample rate). The output is checked before any work."""
        where = "Vamp.extend_file"
        source = audio.file_info(in_path)
        subtype = audio.kept_subtype(out_path, source)
        out_path = audio.check_output_path(
            out_path, where, "out_path", in_path, sample_rate=source.sample_rate, subtype=subtype
        )
        longform.check_output_length(
            out_path, subtype, source, settings.get("seconds"), where, "seconds"
        )
        samples, rate = audio.load_audio(in_path)
        head, info, tail = self._continuation(samples, rate, **settings)
        del samples
        with audio._written(out_path, rate, 1, subtype) as file:
            for piece in longform.joined(head, tail.pieces(), tail.fade):
                file.write(piece)
        return out_path, rate

    def vamp_batch(
        self,
        clips: Sequence[np.ndarray],
        sample_rate: int | Sequence[int],
        *,
        seeds: int | Sequence[int] | None = None,
        batch_size: int = BATCH_SIZE_DEFAULT,
        cancel: threading.Event | None = None,
        **settings: Any,
    ) -> list[tuple[np.ndarray, int]]:
        """`vamp` on several clips at once: one ``(samples, sample_rate)`` per clip, equal to
        ``vamp(clip, rate, seed=seed, **settings)`` for each, with the generation batched.

        Args:
            clips: float ``[N]`` or ``[channels, N]`` arrays, any lengths.
            sample_rate: Hz, of every clip, or one per clip.
            seeds: one per clip; an int: the same for every clip; None: `vamp`'s default seed
                (SEED_DEFAULT, 0) for every clip, so each result is plain ``vamp(clip, rate)``.
                (Distinct clips need no distinct seeds: their masks and tokens come from their
                own audio; pass ``range(len(clips))`` for distinct draws anyway.)
            batch_size: chunks per generation run: the coarse chunks of every clip (10 s, 575
                frames, and each clip's shorter last one) grouped by length, then the 3-s c2f
                chunks, up to `batch_size` each run, every chunk with its clip's seed and its
                own stream index (per-item keys, docs/generation.md). A graph exported with
                ``--batch-coupled`` runs one chunk a run (its schedule couples a run's items).
            cancel: as `vamp`'s: setting it stops the whole batch (`runtime.Cancelled`).
            settings: the other keyword arguments of `vamp` (not `seed`), the same for every
                clip; a given `mask` must fit every clip.

        Memory holds every clip's audio, codes and masks at once: pass a few clips at a time
        (the CLI passes `batch_size` files a call).
        """
        where = "Vamp.vamp_batch"
        if isinstance(clips, np.ndarray) and (
            clips.ndim < 2 or (clips.ndim == 2 and clips.shape[0] > clips.shape[1])
        ):
            # One clip passed as the batch (soundfile.read's [N, channels] included) would be
            # N clips of a sample or two each.
            raise ValueError(
                f"{where}: clips must be a sequence of [N] or [channels, N] arrays (or one "
                f"[clips, N] array), got one array of shape {clips.shape}: for one clip pass [x] "
                "([x.T] for soundfile.read's [N, channels])"
            )
        clips = list(clips)
        rates = _per_clip(sample_rate, len(clips), where, "sample_rate")
        seed_list = _per_clip(SEED_DEFAULT if seeds is None else seeds, len(clips), where, "seeds")
        batch_size = _check_batch_size(batch_size, where)
        if "seed" in settings:
            raise TypeError(f"{where}: seed must not be given (pass seeds, one per clip)")
        runs = [self._prepare(seed=seed, **settings) for seed in seed_list]
        if not runs:
            return []
        with cancel_on(cancel, where):
            prepared = []
            for clip, rate, checked in zip(clips, rates, runs):
                x, info = audio.preprocess(clip, rate, self.sample_rate)
                prepared.append((x, *self._run_inputs(checked, x, info)))
            first = runs[0]
            ys = self._vamp_preprocessed_batch(
                [x for x, _, _ in prepared],
                [checked.seed for checked in runs],
                first.mask_settings,
                first.sampling,
                first.progress,
                [given for _, given, _ in prepared],
                batch_size,
                self._context_frames(first.context_s),
            )
        return [
            (audio.restore(y, info, self.sample_rate), info.sample_rate)
            for y, (_, _, info) in zip(ys, prepared)
        ]

    # --- stages ----------------------------------------------------------------------------

    def n_frames(self, n_samples: int) -> int:
        """Codec frames of `n_samples` samples at the codec rate: ceil(n / hop)."""
        return math.ceil(n_samples / self.hop_length)

    def build_mask(self, x: np.ndarray, seed: int, **settings: Any) -> np.ndarray:
        """The generation mask bool ``[1, 14, T]`` (True = generate) for preprocessed mono `x`
        ``[N]`` at 44.1 kHz. settings: `vamp`'s mask arguments (`settings.MaskSettings`).

        `masks.build_mask`'s recipe, then, with beat_mask_ms > 0, as VampNet's app does: AND
        the beat mask (`beats.beat_mask`: ``beat_mask_ms`` after each beat kept) and generate
        codebooks >= upper_codebook_mask again."""
        seed = check_seed(seed, "Vamp.vamp")
        # Rounded as the single graph's float32 inputs are, so both build the same mask.
        values = MaskSettings(**settings).validate("Vamp.vamp").as_float32().inputs()
        beat_mask_ms = values.pop("beat_mask_ms")
        shape = (1, self.n_codebooks, self.n_frames(x.shape[0]))
        mask = masks.build_mask(
            shape,
            masks.StreamRandom(seed),
            **values,
            audio=x,
            sample_rate=self.sample_rate,
            hop_length=self.hop_length,
        )
        if beat_mask_ms > 0:
            mask = masks.mask_and(mask, self.beat_mask(x, beat_mask_ms)[None])
            mask = masks.codebook_mask(mask, values["upper_codebook_mask"])
        return mask

    def vamp_mask(
        self, samples: np.ndarray, sample_rate: int, *, applied: bool = False, **settings: Any
    ) -> np.ndarray:
        """The mask bool ``[1, n_codebooks, T]`` (True = generate) that ``vamp(samples,
        sample_rate, **settings)`` generates with, without generating: the recipe's (onset and
        beat masks, and the random roll and dropout drawn with `seed`, included) or the given
        `mask`, with the `inpaint` range applied; T = the frames of the input at the codec's
        rate. settings: `vamp`'s keyword arguments, checked as `vamp` checks them.

        applied: False: that mask, as `vamp`'s `mask` argument takes it. True: as the stages
        apply it, exactly the positions the run regenerates (every other keeps the input's
        code): in the coarse codebooks, each 10-s chunk (or `context_s` window) with any kept
        frame keeps its first and last frame too (upstream's seam rule, docs/model.md §4.3),
        and a window's context frames are kept. For showing a run's mask (the app)."""
        checked = self._prepare(**settings)
        x, info = audio.preprocess(samples, sample_rate, self.sample_rate)
        mask, _ = self._run_inputs(checked, x, info)
        if mask is None:
            mask = self.build_mask(x, checked.seed, **checked.mask_settings.inputs())
        if not applied:
            return mask
        n = self.coarse.n_codebooks
        out = mask.copy()
        for window in self._coarse_windows(mask.shape[2], self._context_frames(checked.context_s)):
            new = window.new - window.start
            out[:, :n, window.new : window.stop] = _window_mask(mask, n, window)[:, :, new:]
        return out

    def beat_mask(self, x: np.ndarray, after_beat_ms: float) -> np.ndarray:
        """bool ``[n_codebooks, T]``: False (keep) from each beat of `x` (preprocessed mono
        ``[N]`` at the codec rate; WaveBeat's beats and downbeats) to `after_beat_ms` after
        it, True elsewhere (upstream's ``make_beat_mask`` with its app's arguments)."""
        from . import beats

        beat_s, downbeat_s = self.beat_tracker().extract_beats(x, self.sample_rate)
        mask = beats.beat_mask(
            beat_s,
            downbeat_s,
            self.n_frames(x.shape[0]),
            n_codebooks=self.n_codebooks,
            after_beat_s=after_beat_ms / 1000.0,
            sample_rate=self.sample_rate,
            hop_length=self.hop_length,
        )
        return mask.astype(bool)

    def beat_tracker(self):
        """The `beats.BeatTracker` of the models folder's wavebeat.onnx, opened once."""
        if self._beat_tracker is None:
            from .beats import BeatTracker

            path = self.models / WAVEBEAT_FILE
            if not path.is_file():
                raise FileNotFoundError(
                    f"Vamp.vamp: beat_mask_ms needs {WAVEBEAT_FILE} in the models folder "
                    f"(vampnet-onnx export --wavebeat wavebeat.pth, or --pretrained), got none "
                    f"in '{self.models}'"
                )
            self._beat_tracker = BeatTracker(path, **self._session_options)
        return self._beat_tracker

    def _segments(self, n_frames: int, desc: str, progress: bool):
        """(start, stop, lo, hi) frame spans: the segment kept and the one computed."""
        spans = list(_spans(n_frames, self.segment_frames))
        for start, stop in tqdm(spans, desc=desc, unit="segment", disable=not progress):
            lo = max(0, start - self.context_frames)
            yield start, stop, lo, min(n_frames, stop + self.context_frames)

    def encode(self, x: np.ndarray, progress: bool = False) -> np.ndarray:
        """Preprocessed mono `x` ``[N]`` at 44.1 kHz -> codes int64 ``[1, 14, ceil(N / hop)]``,
        one segment at a time."""
        hop = self.hop_length
        n_frames = self.n_frames(x.shape[0])
        codes = np.empty((1, self.codec.config["n_codebooks"], n_frames), dtype=np.int64)
        for start, stop, lo, hi in self._segments(n_frames, "encode", progress):
            segment = self.codec.encode(x[lo * hop : hi * hop])
            codes[:, :, start:stop] = segment[:, :, start - lo : stop - lo]
        return codes

    def decode(
        self,
        codes: np.ndarray,
        n_samples: int,
        progress: bool = False,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Codes ``[1, 14, T]`` -> float32 audio ``[n_samples]`` (n_samples <= T * hop) at
        44.1 kHz, one segment at a time; written into `out` (float32 ``[n_samples]``) when
        given, e.g. the encoded input that is no longer needed."""
        y = np.empty(n_samples, dtype=np.float32) if out is None else out
        return _filled(y, self._decoded_pieces(codes, n_samples, progress))

    def _decoded_pieces(
        self, codes: np.ndarray, n_samples: int, progress: bool = False, desc: str = "decode"
    ) -> Iterator[np.ndarray]:
        """`decode` of `codes` as consecutive float32 pieces, one per codec segment."""
        hop = self.hop_length
        for start, stop, lo, hi in self._segments(codes.shape[2], desc, progress):
            segment = self.codec.decode(codes[:, :, lo:hi])
            stop_sample = min(stop * hop, n_samples)
            if stop_sample > start * hop:
                yield segment[0, 0, (start - lo) * hop :][: stop_sample - start * hop]

    def generate(
        self,
        codes: np.ndarray,
        mask: np.ndarray,
        seed: int,
        *,
        progress: bool = False,
        **sampling: Any,
    ) -> np.ndarray:
        """Coarse then coarse-to-fine generation over VampNet's chunks.

        codes: int64 ``[1, 14, T]`` from `encode`. mask: bool ``[1, 14, T]``, True = generate.
        sampling: `Generator.generate`'s steps, temperature, top_k, top_p, mask_temperature
        for the coarse stage. Returns int64 ``[1, 14, T]``; every position with mask False
        keeps its code.
        """
        [out] = self._generate_batch(
            [codes], [mask], [seed], self.batch_size, progress=progress, **sampling
        )
        return out

    def _generate_batch(
        self, codes, masks, seeds, batch_size, *, progress, context_frames=0, **sampling
    ):
        """`generate` of several clips (lists of codes, masks and seeds), chunks batched."""
        if context_frames:
            codes = self._coarse_windows_batch(
                codes, masks, seeds, batch_size, progress, context_frames, **sampling
            )
        else:
            codes = self._coarse_batch(codes, masks, seeds, batch_size, progress, **sampling)
        return self._c2f_batch(codes, masks, seeds, batch_size, progress)

    def _run_chunks(
        self, generator: Generator, chunks: list, batch_size: int, bar, per_step: bool, **sampling
    ) -> list[np.ndarray]:
        """Generate `chunks`, each ``(codes [1, C, t], mask [1, C, t], seed, stream index)``, in
        runs of up to `batch_size` chunks of one length (one a run for a batch-coupled graph,
        whose schedule couples a run's items), each item with its own seed and stream index;
        returns each chunk's codes ``[1, C, t]``, in order. `bar` counts steps of a chunk
        (`per_step`) or chunks."""
        if generator.batch_coupled:
            batch_size = 1
        by_length: dict[int, list[int]] = {}
        for i, (codes, _, _, _) in enumerate(chunks):
            by_length.setdefault(codes.shape[2], []).append(i)
        out: list[np.ndarray] = [np.empty(0)] * len(chunks)
        for indexes in by_length.values():
            for lo in range(0, len(indexes), batch_size):
                run = indexes[lo : lo + batch_size]
                seeds = [chunks[i][2] for i in run]
                streams = [chunks[i][3] for i in run]
                # One seed and consecutive streams are the scalar keys (what graphs from before
                # per-item keys take, and every one-chunk run).
                consecutive = streams == list(range(streams[0], streams[0] + len(run)))
                scalar = consecutive and len(set(seeds)) == 1
                keys = dict(
                    seed=seeds[0] if scalar else seeds,
                    batch_offset=streams[0] if scalar else streams,
                )
                size = len(run)
                on_steps = None
                if per_step and not bar.disable:
                    on_steps = lambda n, size=size: bar.update(n * size)  # noqa: E731
                generated = generator.generate(
                    np.concatenate([chunks[i][0] for i in run]),
                    np.concatenate([chunks[i][1] for i in run]),
                    on_steps=on_steps,
                    **keys,
                    **sampling,
                )
                if not per_step:
                    bar.update(size)
                for j, i in enumerate(run):
                    out[i] = generated[j : j + 1]
        return out

    def coarse_vamp(
        self, codes: np.ndarray, mask: np.ndarray, seed: int, *, progress: bool = False, **sampling
    ) -> np.ndarray:
        """The coarse stage (upstream's ``coarse_vamp``): codebooks 0-3 of `codes` regenerated
        where `mask` (both ``[1, 14, T]``) is True, in 10-s chunks; the fine codebooks are
        returned unchanged. sampling: as in `generate`. progress: one bar over every step of
        every chunk (the coarse stage is most of a vamp's time, so it reports per step)."""
        [out] = self._coarse_batch([codes], [mask], [seed], self.batch_size, progress, **sampling)
        return out

    def _coarse_windows(self, n_frames: int, context_frames: int) -> list[longform.Window]:
        """The coarse stage's windows over `n_frames` frames: upstream's independent 10-s
        chunks (no context frames; chunk k draws stream `COARSE_STREAM_BASE` + k), or with
        `context_frames`, `longform.context_windows`."""
        if context_frames:
            return longform.context_windows(n_frames, self.coarse_chunk_frames, context_frames)
        return [
            longform.Window(start, start, stop, COARSE_STREAM_BASE + k)
            for k, (start, stop) in enumerate(_spans(n_frames, self.coarse_chunk_frames))
        ]

    def _coarse_batch(self, codes, masks, seeds, batch_size, progress, **sampling) -> list:
        """`coarse_vamp` of several clips, the chunks of all of them batched."""
        n = self.coarse.n_codebooks
        chunks, places = [], []
        for clip, (clip_codes, mask, seed) in enumerate(zip(codes, masks, seeds)):
            for window in self._coarse_windows(clip_codes.shape[2], 0):
                start, stop = window.start, window.stop
                chunk_mask = _window_mask(mask, n, window)
                chunks.append((clip_codes[:, :n, start:stop], chunk_mask, seed, window.stream))
                places.append((clip, start, stop))
        n_steps = SamplingSettings.from_public(Generator.WHERE, **sampling).n_steps
        with tqdm(
            total=len(chunks) * n_steps, desc="coarse", unit="step", disable=not progress
        ) as bar:
            generated = self._run_chunks(
                self.coarse, chunks, batch_size, bar, per_step=True, **sampling
            )
        out = [c.copy() for c in codes]
        for (clip, start, stop), chunk_codes in zip(places, generated):
            out[clip][:, :n, start:stop] = chunk_codes
        return out

    def _coarse_windows_batch(
        self, codes, masks, seeds, batch_size, progress, context_frames, **sampling
    ) -> list:
        """The coarse stage of several clips in connected windows (`longform.context_windows`):
        window k of every clip in one run after window k - 1, each starting with the last
        `context_frames` frames the window before it generated, kept."""
        n = self.coarse.n_codebooks
        out = [c.copy() for c in codes]
        plans = [self._coarse_windows(c.shape[2], context_frames) for c in codes]
        n_steps = SamplingSettings.from_public(Generator.WHERE, **sampling).n_steps
        total = sum(len(plan) for plan in plans) * n_steps
        with tqdm(total=total, desc="coarse", unit="step", disable=not progress) as bar:
            for k in range(max(len(plan) for plan in plans)):
                chunks, places = [], []
                for clip, plan in enumerate(plans):
                    if k >= len(plan):
                        continue
                    window = plan[k]
                    chunk_mask = _window_mask(masks[clip], n, window)
                    chunk = out[clip][:, :n, window.start : window.stop]
                    chunks.append((chunk, chunk_mask, seeds[clip], window.stream))
                    places.append((clip, window))
                generated = self._run_chunks(
                    self.coarse, chunks, batch_size, bar, per_step=True, **sampling
                )
                for (clip, window), chunk_codes in zip(places, generated):
                    new = window.new - window.start
                    out[clip][:, :n, window.new : window.stop] = chunk_codes[:, :, new:]
        return out

    def coarse_to_fine(
        self, codes: np.ndarray, mask: np.ndarray, seed: int, *, progress: bool = False
    ) -> np.ndarray:
        """The coarse-to-fine stage (upstream's ``coarse_to_fine``): the fine codebooks of
        `codes` ``[1, 14, T]`` regenerated where `mask` is True, conditioned on codebooks 0-3,
        in 3-s chunks with upstream's fixed settings (`C2F_STEPS` steps, default sampling)."""
        [out] = self._c2f_batch([codes], [mask], [seed], self.batch_size, progress)
        return out

    def _c2f_batch(self, codes, masks, seeds, batch_size, progress) -> list:
        """`coarse_to_fine` of several clips, the chunks of all of them batched."""
        chunk = self.c2f_chunk_frames
        chunks, places, padded = [], [], []
        for clip, (clip_codes, mask, seed) in enumerate(zip(codes, masks, seeds)):
            n_frames = clip_codes.shape[2]
            pad = -n_frames % chunk
            padded_codes = np.pad(clip_codes, ((0, 0), (0, 0), (0, pad)))
            padded_mask = np.pad(mask, ((0, 0), (0, 0), (0, pad)), constant_values=True)
            padded_mask[:, : self.c2f.n_conditioning_codebooks] = False
            padded.append(padded_codes)
            for index, (start, stop) in enumerate(_spans(n_frames + pad, chunk)):
                chunks.append(
                    (
                        padded_codes[:, :, start:stop],
                        padded_mask[:, :, start:stop],
                        seed,
                        C2F_STREAM_BASE + index,
                    )
                )
                places.append((clip, start, stop))
        with tqdm(
            total=len(chunks), desc="coarse-to-fine", unit="chunk", disable=not progress
        ) as bar:
            generated = self._run_chunks(
                self.c2f, chunks, batch_size, bar, per_step=False, steps=C2F_STEPS
            )
        out = [p.copy() for p in padded]
        for (clip, start, stop), chunk_codes in zip(places, generated):
            out[clip][:, :, start:stop] = chunk_codes
        return [o[:, :, : c.shape[2]] for o, c in zip(out, codes)]


class SingleGraphVamp(_AudioToAudio):
    """`Vamp` from one ``vamp.onnx`` (``vampnet-onnx export --single-graph``, `export.vamp`).

    Same results as `Vamp` on inputs short enough for one codec segment (about 30 s; longer
    ones differ only where `Vamp`'s segmented codec rounds differently), token for token:
    `preprocess` and `restore` run here in numpy, everything between in one onnxruntime `run`.
    Differences: no onset mask, no progress bars (one run), and the codec works on the whole
    input at once, so memory grows with its length (meant for clips). No `vamp_batch`: the
    graph takes one clip (``audio [N]``) a run; batch clips with `Vamp`.

    Args:
        path: the ``vamp.onnx`` file (with ``vamp.onnx.data`` beside it for full-size models).
        threads, providers, python_ops, device: as `Vamp` / `create_session`.
    """

    has_host_masks = False

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        providers: list | None = None,
        python_ops: bool | None = None,
        device: str | None = None,
    ) -> None:
        self.session = create_session(
            path,
            providers=providers,
            intra_op_threads=threads,
            python_ops=python_ops,
            device=device,
        )
        names = [i.name for i in self.session.get_inputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        if names != VAMP.input_names or CODEC_CONFIG_KEY not in meta:
            raise ValueError(
                f"SingleGraphVamp: path must be a vamp.onnx from vampnet-onnx export "
                f"--single-graph, got '{path}' with inputs {names}"
            )
        config = metadata(meta, CODEC_CONFIG_KEY, "SingleGraphVamp", "path", f"'{path}'")
        self.sample_rate = int(config["sample_rate"])
        self.hop_length = int(config["hop_length"])
        self.n_codebooks = int(config["n_codebooks"])
        self.settings = json.loads(meta.get(VAMP_KEY, "{}"))

    def _vamp_preprocessed(
        self, x, seed, mask_settings, sampling, progress, mask, context_frames=0
    ) -> np.ndarray:
        inputs = {"seed": seed, **sampling.inputs(), **mask_settings.graph_inputs()}
        feed = {"audio": x, **VAMP.feed(**inputs)}
        return run(self.session, ["audio_out"], feed)[0]
