"""Audio files and VampNet's input preprocessing (no torch, no onnxruntime).

Samples are float32 arrays ``[channels, N]`` (or ``[N]`` for mono) in [-1, 1]. The pipeline
mirrors VampNet's ``Interface._preprocess`` (docs/model.md §4.1): resample to the codec rate,
average the channels, normalise the integrated loudness to -24 LUFS, then divide by the peak
where it exceeds 1. The right-padding to a multiple of the hop happens inside the encode graph.
`preprocess` also records the input's loudness, length and sample rate, which `restore` applies
to the generated audio (what VampNet's app does at the end).

Deliberate differences from the original: resampling uses soxr (VHQ) where the original uses
julius' sinc resampler; the loudness meter filters in float64 where the original's CPU path
filters in float32 (and its GPU path uses an FIR approximation).

Dependencies: numpy, soundfile, soxr and scipy (`scipy.signal.lfilter` for the K-weighting
biquads). The codec graphs' sessions are in `vampnet_onnx.codec`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr
from scipy.signal import lfilter

# libsndfile's C functions as soundfile binds them (its cffi module), for `_read_pieces`.
_LIBSNDFILE = getattr(soundfile, "_snd", None)
_FFI = getattr(soundfile, "_ffi", None)

#: VampNet's loudness target for the codec input (``Interface.loudness``).
TARGET_LOUDNESS = -24.0
#: The meter's floor: silence and anything quieter reads -70 LUFS.
MIN_LOUDNESS = -70.0

# BS.1770 gating: 400 ms blocks every 100 ms, absolute gate -70 LUFS, relative gate -10 LU;
# loudness = -0.691 + 10 log10(sum of channel mean squares), every channel weighted 1.
_BLOCK_S = 0.4
_BLOCK_STEP = 0.25
_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0
_LOUDNESS_OFFSET = -0.691
# Shorter signals are zero-padded to this duration for the measurement only.
_MIN_MEASURE_S = 0.5
# K-weighting as VampNet's meter (audiotools, after pyloudnorm) designs it at any rate, with
# the RBJ cookbook biquads: a +4 dB high shelf (1500 Hz, Q 1/sqrt 2), then a high pass (38 Hz,
# Q 0.5). At 48 kHz this reads 0.04 dB below the BS.1770 coefficient table at 1 kHz.
_SHELF_GAIN_DB = 4.0
_SHELF_HZ = 1500.0
_SHELF_Q = 1.0 / math.sqrt(2.0)
_HIGH_PASS_HZ = 38.0
_HIGH_PASS_Q = 0.5


#: The most channels a ``[channels, N]`` array may have: more is taken for ``[N, channels]``.
MAX_CHANNELS = 64


def _samples(x: Any, where: str, name: str = "x") -> np.ndarray:
    """Finite float array ``[N]`` or ``[channels, N]`` (float32 unless already float64)."""
    array = np.asarray(x)
    if array.ndim not in (1, 2) or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{where}: {name} must be a float array [N] or [channels, N], "
            f"got {array.dtype} {array.shape}"
        )
    channels, n = array.shape if array.ndim == 2 else (1, 0)
    if channels > MAX_CHANNELS or channels > n > 0:
        # soundfile.read returns [N, channels]: read as [channels, N], a stereo clip would be
        # N two-sample channels.
        raise ValueError(
            f"{where}: {name} must be [channels, N] with channels first (at most "
            f"{MAX_CHANNELS}, and no more channels than samples), got shape {array.shape}: "
            "for soundfile.read's [N, channels], pass x.T"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: {name} must be finite, got NaN or inf")
    return array if array.dtype == np.float64 else array.astype(np.float32, copy=False)


#: The input rates `preprocess` and `loudness` take, in Hz: the loudness meter's 100-ms steps
#: need some samples (1 or 5 Hz divided by zero), and nothing above 10 MHz is audio.
MIN_INPUT_RATE, MAX_INPUT_RATE = 1000, 10**7


def check_input_rate(sample_rate: Any, where: str, name: str = "sample_rate") -> int:
    """`sample_rate` if `preprocess` takes it (`MIN_INPUT_RATE` to `MAX_INPUT_RATE` Hz), else
    ValueError ``"<where>: <name> must be in [...] Hz, got ..."``."""
    rate = _rate(sample_rate, where, name)
    if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
        prefix = f"{where}: " if where else ""
        raise ValueError(
            f"{prefix}{name} must be in [{MIN_INPUT_RATE}, {MAX_INPUT_RATE}] Hz, got {rate}"
        )
    return rate


def _rate(sample_rate: Any, where: str, name: str = "sample_rate") -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise ValueError(f"{where}: {name} must be an int, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"{where}: {name} must be > 0, got {sample_rate}")
    return int(sample_rate)


# --- files -------------------------------------------------------------------------------


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file with soundfile (WAV, FLAC, OGG/Vorbis, MP3 and what libsndfile reads).

    Returns:
        (samples float32 ``[channels, N]`` in [-1, 1] (integer PCM is scaled by soundfile),
        sample rate in Hz).

    Raises:
        FileNotFoundError: `path` is not an existing file.
        ValueError: the file is not audio soundfile can decode (e.g. AAC/M4A: convert first).
    """
    path = check_input_path(path, "load_audio", "path")
    try:
        samples, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except soundfile.SoundFileError as err:
        raise _undecodable(path, "load_audio", "path", err) from err
    return np.ascontiguousarray(samples.T), int(sample_rate)


def _undecodable(path: Path, where: str, name: str, err: Exception) -> ValueError:
    prefix = f"{where}: " if where else ""
    return ValueError(
        f"{prefix}{name} must be an audio file soundfile can decode (WAV, FLAC, OGG, MP3, ...), "
        f"got '{path}' ({err})"
    )


def check_input_path(path: str | Path, where: str, name: str = "path") -> Path:
    """`path` as a Path if it is an audio file soundfile can open (its header is read, not
    its samples), else FileNotFoundError / ValueError ``"<where>: <name> must ..."``."""
    return file_info(path, where, name).path


@dataclass(frozen=True)
class AudioFileInfo:
    """An audio file's header: `path`, `sample_rate` (Hz), `n_channels`, `n_frames` (samples
    per channel), the soundfile `subtype` (e.g. ``"PCM_24"``) and `format` (e.g. ``"FLAC"``)."""

    path: Path
    sample_rate: int
    n_channels: int
    n_frames: int
    subtype: str
    format: str


def file_info(path: str | Path, where: str = "load_audio", name: str = "path") -> AudioFileInfo:
    """The header of the audio file `path` (its samples are not read), else
    FileNotFoundError / ValueError ``"<where>: <name> must ..."`` as `check_input_path`."""
    path = Path(path)
    if not path.is_file():
        prefix = f"{where}: " if where else ""
        raise FileNotFoundError(f"{prefix}{name} must be an existing file, got '{path}'")
    try:
        info = soundfile.info(path)
    except (soundfile.SoundFileError, RuntimeError) as err:
        raise _undecodable(path, where, name, err) from err
    return AudioFileInfo(
        path, info.samplerate, info.channels, info.frames, info.subtype, info.format
    )


def check_output_path(
    path: str | Path,
    where: str,
    name: str = "out_path",
    input_path: str | Path | None = None,
    *,
    sample_rate: int | None = None,
    subtype: str | None = None,
    hint: str | None = None,
) -> Path:
    """`path` as a Path if an audio file can be written there, checked before any work: an
    extension soundfile writes, an existing folder we may write to, and not the input file
    (`input_path`, compared as files, so links to it count too). Else ValueError
    ``"<where>: <name> must ..., got '<path>' ..."`` with the real reason.

    With `sample_rate` (Hz) also `check_output_format`: the format holds mono audio of
    `subtype` (None: the format's default) at exactly that rate; `hint`, if the rate is the
    trouble, says how to write at another (e.g. ``"--codec-rate writes at 44100 Hz"``).
    """
    path = Path(path)
    prefix = f"{where}: " if where else ""
    kind = path.suffix[1:].upper()
    if kind not in soundfile.available_formats():
        raise ValueError(
            f"{prefix}{name} must name a format soundfile can write by its extension (.wav, "
            f".flac, .ogg, ...), got '{path}'"
        )
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"{prefix}{name} must be in an existing folder, got '{path}'")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{prefix}{name} must be in a folder you may write to, got '{path}'")
    if path.is_dir():
        raise ValueError(f"{prefix}{name} must be a file name, got the folder '{path}'")
    same = input_path is not None and path.exists() and Path(input_path).exists()
    if same and os.path.samefile(path, input_path):
        raise ValueError(
            f"{prefix}{name} must not be the input file (it would be overwritten), got '{path}'"
        )
    if sample_rate is not None:
        check_output_format(path, sample_rate, subtype, where, name, hint)
    return path


#: Rates libsndfile's Vorbis encoder does not refuse but crashes on (a segmentation fault in
#: libvorbis, seen with libsndfile 1.2.2 from 200,001 Hz up): refused before it is called.
_VORBIS_MAX_RATE = 200_000
#: What the named formats take, said in the error (libsndfile's own reason is less clear).
_RATES_TAKEN = {
    "MPEG_LAYER_III": "MP3 takes 8000 to 48000 Hz (MPEG's nine rates)",
    "OPUS": "Opus takes 8000, 12000, 16000, 24000 or 48000 Hz",
    "VORBIS": f"Vorbis takes up to {_VORBIS_MAX_RATE} Hz",
    "FLAC": "FLAC takes up to 65535 Hz, or multiples of 10 Hz up to 655350 Hz",
}


#: Sample types that mean the same in every container that takes them.
_LINEAR_SUBTYPES = {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}


def kept_subtype(path: str | Path, source: AudioFileInfo) -> str | None:
    """The subtype of the input file `source` kept for the output `path`: in the same format,
    or a linear one (PCM, float) that the output's format takes (24-bit FLAC to .flac or .wav
    stays 24-bit, float WAV stays float); else None, the output format's default (an MP3 input
    to .wav is PCM_16: libsndfile's MPEG-in-WAV is not written)."""
    kind = Path(path).suffix[1:].upper()
    same = kind == source.path.suffix[1:].upper() == source.format
    linear = source.subtype in _LINEAR_SUBTYPES and soundfile.check_format(kind, source.subtype)
    return source.subtype if same or linear else None


#: Formats whose headers hold the data's size in 32 bits (at most 4 GiB of samples).
_SIZE_32_FORMATS = ("WAV", "WAVEX", "AIFF")
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3}
_SAMPLE_BYTES.update({"PCM_32": 4, "FLOAT": 4, "DOUBLE": 8})


def max_frames(path: str | Path, subtype: str | None = None, channels: int = 1) -> int | None:
    """The most frames a file written at `path` (format from its extension, `subtype` or the
    format's default) can hold, where its format has a limit we know: WAV and AIFF store the
    data's size in 32 bits; None where there is none (W64, RF64, FLAC, ...) or it is unknown."""
    kind = Path(path).suffix[1:].upper()
    size = _SAMPLE_BYTES.get(output_subtype(path, subtype) or "")
    if kind not in _SIZE_32_FORMATS or size is None:
        return None
    # Room for the header's own chunks in the 32-bit size.
    return (2**32 - 1 - 4096) // (size * channels)


def output_subtype(path: str | Path, subtype: str | None = None) -> str | None:
    """The soundfile subtype a file written at `path` gets: `subtype` if given, else its
    format's default (``PCM_16`` for WAV and FLAC, ``VORBIS`` for OGG; None for RAW)."""
    return subtype or soundfile.default_subtype(Path(path).suffix[1:].upper())


def check_output_format(
    path: str | Path,
    sample_rate: int,
    subtype: str | None = None,
    where: str = "",
    name: str = "out_path",
    hint: str | None = None,
) -> str:
    """The subtype to write mono audio at `sample_rate` Hz to `path` with, if its format (from
    the extension) holds exactly that: a header (not RAW), `subtype` (None: the default), and
    the rate, as libsndfile writes and reads back a few samples of silence in memory (some
    formats silently store another rate: HTK, SVX, WVE ...); rates that crash an encoder are
    refused without calling it. Else ValueError naming `name`, the rate and the reason, then
    `hint` (how to write at another rate) where the rate is the trouble."""
    path = Path(path)
    prefix = f"{where}: " if where else ""
    kind = path.suffix[1:].upper()
    subtype = output_subtype(path, subtype)
    if soundfile.default_subtype(kind) is None:  # RAW: no header, so no default either
        raise ValueError(
            f"{prefix}{name} must name a format with a header (.wav, .flac, ...; .{kind.lower()} "
            f"has none to keep the rate and sample type), got '{path}'"
        )
    if not soundfile.check_format(kind, subtype):
        raise ValueError(
            f"{prefix}{name} must name a format that takes {subtype} samples, got '{path}'"
        )
    rate = _rate(sample_rate, where or "check_output_format", "sample_rate")
    reason = _format_refuses(kind, subtype, rate)
    if reason is not None:
        advice = f": {hint}" if hint else ""
        raise ValueError(
            f"{prefix}{name} must be a format that takes mono {subtype} audio at {rate} Hz, got "
            f"'{path}' ({_RATES_TAKEN.get(subtype, _RATES_TAKEN.get(kind, reason))}){advice}"
        )
    return subtype


def _format_refuses(kind: str, subtype: str, rate: int) -> str | None:
    """Why libsndfile cannot write mono `subtype` audio at `rate` Hz as `kind`, or None."""
    crash = _crashing_rate(subtype, rate)
    if crash is not None:
        return crash
    trial = io.BytesIO()
    try:
        with soundfile.SoundFile(trial, "w", rate, 1, subtype, format=kind) as file:
            file.write(np.zeros(16, np.float32))
        trial.seek(0)
        stored = soundfile.info(trial).samplerate
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as err:
        return one_line(err)
    return None if stored == rate else f"its header would read {stored} Hz"


def _crashing_rate(subtype: str | None, rate: int) -> str | None:
    """Why libsndfile is not to be asked to write `subtype` at `rate` Hz at all, or None."""
    if rate > _MAX_FILE_RATE:
        return f"libsndfile takes rates up to {_MAX_FILE_RATE} Hz"
    if subtype == "VORBIS" and rate > _VORBIS_MAX_RATE:
        return _RATES_TAKEN["VORBIS"]
    return None


#: libsndfile keeps a rate in a C int.
_MAX_FILE_RATE = 2**31 - 1


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (libsndfile's and onnxruntime's run on)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def write_audio(
    path: str | Path, x: np.ndarray, sample_rate: int, subtype: str | None = None
) -> None:
    """Write samples ``[N]`` or ``[channels, N]`` in [-1, 1]; the format follows the extension.

    The file appears whole or not at all: it is written to a temporary file in the same folder
    and renamed over `path` at the end.

    Args:
        subtype: soundfile subtype, e.g. ``"PCM_16"`` (the WAV default), ``"PCM_24"``,
            ``"FLOAT"``; integer subtypes clip samples outside [-1, 1].

    Raises:
        ValueError: bad samples or rate, an unwritable path, or a subtype the format lacks.
    """
    x = _samples(x, "write_audio")
    sample_rate = _rate(sample_rate, "write_audio")
    with _written(path, sample_rate, 1 if x.ndim == 1 else x.shape[0], subtype) as file:
        file.write(x.T)


@contextlib.contextmanager
def _written(
    path: str | Path, sample_rate: int, n_channels: int, subtype: str | None
) -> Iterator[soundfile.SoundFile]:
    """An open SoundFile that becomes `path` when the block ends without an error (written to
    a temporary file in the same folder, renamed into place); on an error nothing is left."""
    path = check_output_path(path, "write_audio", "path")
    crash = _crashing_rate(output_subtype(path, subtype), sample_rate)
    if crash is not None:
        raise ValueError(
            f"write_audio: sample_rate must be one {path.suffix} takes, got {sample_rate} ({crash})"
        )
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        try:
            file = soundfile.SoundFile(
                temporary, "w", sample_rate, n_channels, subtype, format=path.suffix[1:].upper()
            )
        except (soundfile.SoundFileError, TypeError, ValueError) as err:
            # A subtype the format lacks raises ValueError.
            raise ValueError(
                f"write_audio: path must name a format soundfile can write (.wav, .flac, .ogg, "
                f"...) with a valid subtype, got '{path}' subtype {subtype!r} ({err})"
            ) from err
        with file:
            yield file
        # Some formats store another rate than the one asked for without an error.
        stored = soundfile.info(temporary).samplerate
        if stored != sample_rate:
            raise ValueError(
                f"write_audio: sample_rate must be one {path.suffix} can store, got "
                f"{sample_rate} (its header would read {stored} Hz)"
            )
        # mkstemp makes the file private (0600); the output gets the permissions any new file
        # would (0666 less the umask).
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def new_file_mode() -> int:
    """The permissions any new file gets, 0o666 less the process's umask (reading the umask
    means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


# --- signal processing -------------------------------------------------------------------


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average of the channels: ``[channels, N]`` -> ``[N]`` (``[N]`` is returned as is)."""
    x = _samples(x, "to_mono")
    return x if x.ndim == 1 else x.mean(axis=0, dtype=np.float64).astype(x.dtype)


def resample(x: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """Resample ``[N]`` or ``[channels, N]`` from `from_sr` to `to_sr` Hz with soxr (VHQ).

    The output has about N * to_sr / from_sr samples (soxr's count, within one of it); equal
    rates return a copy.
    """
    x = _samples(x, "resample")
    from_sr, to_sr = _rate(from_sr, "resample", "from_sr"), _rate(to_sr, "resample", "to_sr")
    if from_sr == to_sr:
        return x.copy()
    # soxr wants [N, channels].
    return np.ascontiguousarray(soxr.resample(x.T, from_sr, to_sr, quality="VHQ").T)


def _resampled_pieces(
    pieces: Iterable[np.ndarray], from_sr: int, to_sr: int, n_channels: int
) -> Iterator[np.ndarray]:
    """Consecutive pieces ``[channels, n]`` of a signal -> the pieces of that signal at `to_sr`:
    soxr's streaming resampler gives the samples of `resample` on the whole signal, bit for bit
    (same filter, same quality), in memory that does not grow with the signal."""
    if from_sr == to_sr:
        yield from pieces
        return
    stream = soxr.ResampleStream(from_sr, to_sr, n_channels, dtype="float32", quality="VHQ")
    previous = None
    for piece in pieces:
        if previous is not None:
            yield stream.resample_chunk(np.ascontiguousarray(previous.T)).T
        previous = piece
    last = np.zeros((0, n_channels), np.float32) if previous is None else previous.T
    yield stream.resample_chunk(np.ascontiguousarray(last), last=True).T


def _biquad_high_shelf(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    a_gain = 10.0 ** (_SHELF_GAIN_DB / 40.0)
    w0 = 2.0 * math.pi * _SHELF_HZ / sample_rate
    cos_w0, alpha = math.cos(w0), math.sin(w0) / (2.0 * _SHELF_Q)
    k = 2.0 * math.sqrt(a_gain) * alpha
    b = [
        a_gain * ((a_gain + 1) + (a_gain - 1) * cos_w0 + k),
        -2.0 * a_gain * ((a_gain - 1) + (a_gain + 1) * cos_w0),
        a_gain * ((a_gain + 1) + (a_gain - 1) * cos_w0 - k),
    ]
    a = [
        (a_gain + 1) - (a_gain - 1) * cos_w0 + k,
        2.0 * ((a_gain - 1) - (a_gain + 1) * cos_w0),
        (a_gain + 1) - (a_gain - 1) * cos_w0 - k,
    ]
    return np.array(b) / a[0], np.array(a) / a[0]


def _biquad_high_pass(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    w0 = 2.0 * math.pi * _HIGH_PASS_HZ / sample_rate
    cos_w0, alpha = math.cos(w0), math.sin(w0) / (2.0 * _HIGH_PASS_Q)
    b = [(1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2]
    a = [1 + alpha, -2.0 * cos_w0, 1 - alpha]
    return np.array(b) / a[0], np.array(a) / a[0]


class LoudnessMeter:
    """Integrated loudness (ITU-R BS.1770-4, gated) of a signal fed in consecutive pieces, in
    memory that does not grow with its length: `loudness` of the whole signal, bit for bit.

    Args:
        sample_rate: Hz; the K-weighting filters are designed for this rate.
        n_channels: channels of every piece; their powers are summed with weight 1 each.
        n_samples: the whole signal's length (the 400-ms blocks are laid out from it).
    """

    def __init__(self, sample_rate: int, n_channels: int, n_samples: int) -> None:
        self.sample_rate = sample_rate
        pad = int((_MIN_MEASURE_S - n_samples / sample_rate) * sample_rate)
        self._block = int(_BLOCK_S * sample_rate)
        step = int(_BLOCK_S * _BLOCK_STEP * sample_rate)
        n_blocks = math.ceil(max(n_samples + max(pad, 0) - self._block, 0) / step) + 1
        self._starts = np.arange(n_blocks) * step
        # Running sums of squares are kept only where a block starts or ends: cumulative[j] is
        # the sum of the first j squared K-weighted samples, summed in order, as np.cumsum does.
        self._marks = np.union1d(self._starts, self._starts + self._block)
        self._cumulative = np.zeros((n_channels, self._marks.size))
        self._running = np.zeros(n_channels)
        self._filters = [_biquad_high_shelf(sample_rate), _biquad_high_pass(sample_rate)]
        self._states = [np.zeros((n_channels, 2)) for _ in self._filters]
        self._seen = 0

    def add(self, x: np.ndarray) -> None:
        """Feed the next samples ``[n_channels, n]``."""
        y = np.asarray(x, dtype=np.float64)
        for i, (b, a) in enumerate(self._filters):
            y, self._states[i] = lfilter(b, a, y, axis=-1, zi=self._states[i])
        squares = np.concatenate([self._running[:, None], y**2], axis=-1)
        sums = np.cumsum(squares, axis=-1)  # sums[:, t] = cumulative[seen + t]
        here = (self._marks >= self._seen) & (self._marks <= self._seen + y.shape[-1])
        self._cumulative[:, here] = sums[:, self._marks[here] - self._seen]
        self._running = sums[:, -1]
        self._seen += y.shape[-1]

    def value(self) -> float:
        """The loudness in LUFS of everything fed, floored at -70; the signal counts as zeros
        past its end (padded to 0.5 s, the last block completed)."""
        past = self._marks > self._seen
        self._cumulative[:, past] = self._running[:, None]
        ends = np.searchsorted(self._marks, self._starts + self._block)
        begins = np.searchsorted(self._marks, self._starts)
        power = (self._cumulative[:, ends] - self._cumulative[:, begins]) / (
            _BLOCK_S * self.sample_rate
        )
        total = power.sum(axis=0)
        keep = total > _power(_ABSOLUTE_GATE)
        if not keep.any():
            return MIN_LOUDNESS
        relative_gate = _lufs(total[keep].mean()) + _RELATIVE_GATE
        keep &= total > _power(relative_gate)
        return max(_lufs(total[keep].mean()), MIN_LOUDNESS)


#: Samples per piece when a whole signal is processed piece by piece (about 1.5 s at 44.1 kHz):
#: the temporaries stay a few MB whatever the length.
_PIECE = 1 << 16


def _pieces(n: int) -> Iterator[slice]:
    return (slice(start, min(n, start + _PIECE)) for start in range(0, n, _PIECE))


def loudness(x: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770-4, gated) in LUFS, floored at -70.

    Args:
        x: ``[N]`` or ``[channels, N]``; channel powers are summed with weight 1 each.
        sample_rate: Hz; the K-weighting filters are designed for this rate.

    Signals shorter than 0.5 s are zero-padded to 0.5 s for the measurement; blocks of 400 ms
    every 100 ms, the last one completed with zeros; blocks at or below -70 LUFS are dropped
    (absolute gate), then those at or below the mean of the rest minus 10 LU (relative gate).
    Measured piece by piece (`LoudnessMeter`): the memory does not grow with N.
    """
    x = _samples(x, "loudness")
    sample_rate = check_input_rate(sample_rate, "loudness")
    x = x[None] if x.ndim == 1 else x
    meter = LoudnessMeter(sample_rate, x.shape[0], x.shape[-1])
    for piece in _pieces(x.shape[-1]):
        meter.add(x[:, piece])
    return meter.value()


def _lufs(power: float) -> float:
    return _LOUDNESS_OFFSET + 10.0 * math.log10(power)


def _power(lufs: float) -> float:
    """The summed mean square whose loudness is `lufs` (gates compare powers, not logs)."""
    return 10.0 ** ((lufs - _LOUDNESS_OFFSET) / 10.0)


def normalize_loudness(
    x: np.ndarray,
    sample_rate: int,
    target: float = TARGET_LOUDNESS,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Scale to `target` LUFS, then divide each channel by its peak where the peak exceeds 1.

    Args:
        x: ``[N]`` or ``[channels, N]``.
        sample_rate: Hz.
        target: LUFS (VampNet: -24).
        out: a float32 array of x's shape to write into (may be `x` itself); None: a new one.

    Returns:
        float32, same shape (`out` when given). Silence stays silence (its loudness reads -70,
        the gain is finite).
    """
    x = _samples(x, "normalize_loudness")
    if not math.isfinite(target):
        raise ValueError(f"normalize_loudness: target must be finite, got {target}")
    gain = _gain(loudness(x, sample_rate), target)
    out = np.empty(x.shape, np.float32) if out is None else out
    x2, out2 = (x[None], out[None]) if x.ndim == 1 else (x, out)
    largest = np.zeros(x2.shape[0], np.float32)
    for piece in _pieces(x2.shape[-1]):
        np.maximum(largest, np.abs(x2[:, piece]).max(axis=-1), out=largest)
    peaks = largest.astype(np.float64) * gain
    for piece in _pieces(x2.shape[-1]):
        for channel in range(x2.shape[0]):
            out2[channel, piece] = _scaled(x2[channel, piece], gain, peaks[channel])
    return out


def _gain(measured: float, target: float) -> float:
    return 10.0 ** ((target - measured) / 20.0)


def _scaled(x: np.ndarray, gain: float, peak: float) -> np.ndarray:
    """float32(x * gain), divided by the scaled signal's `peak` where it exceeds 1 (computed in
    float64; max|x| * gain is the peak of x * gain exactly: rounding is monotonic)."""
    y = x.astype(np.float64) * gain
    return (y / peak if peak > 1.0 else y).astype(np.float32)


@dataclass(frozen=True)
class PreprocessInfo:
    """What `preprocess` changed, for `restore`.

    Attributes:
        sample_rate: the input's rate in Hz.
        n_samples: the input's length in samples at that rate.
        loudness: the input's integrated loudness (LUFS, mono mix, floored at -70).
    """

    sample_rate: int
    n_samples: int
    loudness: float


def preprocess(
    x: np.ndarray,
    sample_rate: int,
    codec_sample_rate: int = 44100,
    target: float = TARGET_LOUDNESS,
) -> tuple[np.ndarray, PreprocessInfo]:
    """VampNet's codec input: resample, mono, -24 LUFS, peak <= 1 (docs/model.md §4.1 steps 1-4).

    Args:
        x: ``[N]`` or ``[channels, N]``, N >= 1.
        sample_rate: rate of `x` in Hz.
        codec_sample_rate: the codec's rate (44100 for VampNet's LAC).
        target: loudness target in LUFS.

    Returns:
        (float32 ``[M]`` at `codec_sample_rate`, M = soxr's resampled length, about
        N * codec_rate / rate; the info `restore` needs).
    """
    x = _samples(x, "preprocess")
    sample_rate = check_input_rate(sample_rate, "preprocess")
    if x.shape[-1] < 1:
        raise ValueError(f"preprocess: x must have at least 1 sample, got shape {x.shape}")
    x = x[None] if x.ndim == 1 else x
    pieces = (x[:, piece] for piece in _pieces(x.shape[-1]))
    return _preprocessed(pieces, x.shape, sample_rate, codec_sample_rate, target)


def preprocess_file(
    path: str | Path, codec_sample_rate: int = 44100, target: float = TARGET_LOUDNESS
) -> tuple[np.ndarray, PreprocessInfo]:
    """`preprocess` of the audio file `path` (as `load_audio` reads it), read piece by piece:
    the same result, and only the float32 output is whole-file sized in memory.

    Raises:
        FileNotFoundError / ValueError: as `load_audio`.
    """
    path = check_input_path(path, "load_audio", "path")
    with _opened(path) as file:
        if file.frames < 1:
            raise ValueError(f"preprocess: path must hold at least 1 sample, got '{path}'")
        shape = (file.channels, file.frames)
        pieces = _read_pieces(file, path, _PIECE)
        rate = check_input_rate(file.samplerate, "preprocess", f"path's sample rate ('{path}')")
        return _preprocessed(pieces, shape, rate, codec_sample_rate, target)


def stream_audio(path: str | Path, piece: int = _PIECE) -> Iterator[np.ndarray]:
    """The samples of the audio file `path` as consecutive float32 pieces ``[channels, n]``,
    n <= `piece` frames: concatenated, exactly what `load_audio` returns, in any format (MP3
    included), in memory that does not grow with the file.

    Raises:
        FileNotFoundError / ValueError: as `load_audio`; ValueError: `piece` < 1, or a file
            that ends before the length its header gives.
    """
    if isinstance(piece, bool) or not isinstance(piece, int | np.integer) or piece < 1:
        raise ValueError(f"stream_audio: piece must be an int >= 1, got {piece!r}")
    path = check_input_path(path, "load_audio", "path")
    with _opened(path) as file:
        yield from _read_pieces(file, path, int(piece))


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[soundfile.SoundFile]:
    try:
        file = soundfile.SoundFile(path)
    except soundfile.SoundFileError as err:
        raise _undecodable(path, "load_audio", "path", err) from err
    with file:
        yield file


def _read_pieces(file: soundfile.SoundFile, path: Path, piece: int) -> Iterator[np.ndarray]:
    """`file`'s `file.frames` frames from its start, float32 ``[channels, n]`` pieces.

    libsndfile's own read, straight: `SoundFile.read` seeks back to where it thinks the read
    ended after every call, and libsndfile 1.2.2 seeks inexactly in MP3 (a few thousand
    samples of silence after each piece); reading on without seeking gives the whole read's
    samples in every format. Where soundfile's binding is not there to call, the file is read
    whole (exact, not bounded)."""
    if _LIBSNDFILE is None:
        yield np.ascontiguousarray(file.read(dtype="float32", always_2d=True).T)
        return
    left = file.frames
    while left > 0:
        n = min(piece, left)
        out = np.empty((n, file.channels), np.float32)
        got = _LIBSNDFILE.sf_readf_float(file._file, _FFI.cast("float *", _FFI.from_buffer(out)), n)
        if got < n:
            raise ValueError(
                f"load_audio: path must hold the {file.frames} frames its header gives, got "
                f"'{path}' ending after {file.frames - left + got}"
            )
        left -= n
        yield np.ascontiguousarray(out.T)


def _preprocessed(
    pieces: Iterable[np.ndarray],
    shape: tuple[int, int],
    sample_rate: int,
    codec_sample_rate: int,
    target: float,
) -> tuple[np.ndarray, PreprocessInfo]:
    """`preprocess` of the signal of `shape` ``(channels, N)`` given as consecutive pieces."""
    n_channels, n_samples = shape
    meter = LoudnessMeter(sample_rate, 1, n_samples)

    def measured(pieces):
        for piece in pieces:
            piece = _samples(piece, "preprocess")  # a file's pieces are checked as arrays are
            meter.add(to_mono(piece)[None])
            yield piece

    # soxr's count is within one of the ratio; the slack is cut below (a view, no copy).
    y = np.empty(math.ceil(n_samples * codec_sample_rate / sample_rate) + 2, np.float32)
    filled = 0
    for piece in _resampled_pieces(measured(pieces), sample_rate, codec_sample_rate, n_channels):
        mono = to_mono(piece)
        y[filled : filled + mono.shape[-1]] = mono
        filled += mono.shape[-1]
    y = y[:filled]
    if filled == 0:
        raise ValueError(
            f"preprocess: x must last at least one sample at the codec's {codec_sample_rate} Hz, "
            f"got {n_samples} samples at {sample_rate} Hz"
        )
    info = PreprocessInfo(sample_rate, n_samples, meter.value())
    return normalize_loudness(y, codec_sample_rate, target, out=y), info


def restore(y: np.ndarray, info: PreprocessInfo, codec_sample_rate: int = 44100) -> np.ndarray:
    """Generated mono audio ``[M]`` at the codec rate -> the input's rate, length and loudness.

    Resampled to ``info.sample_rate``, cut or zero-padded to ``info.n_samples``, normalised to
    ``info.loudness`` with the peak limited to 1. Returns float32 ``[info.n_samples]``.
    """
    gain, peak = _restore_gain(y, info, codec_sample_rate)
    out = np.empty(info.n_samples, np.float32)
    filled = 0
    for piece in _restored_pieces(y, info, codec_sample_rate):
        out[filled : filled + piece.shape[0]] = _scaled(piece, gain, peak)
        filled += piece.shape[0]
    return out


def restore_file(
    y: np.ndarray,
    info: PreprocessInfo,
    path: str | Path,
    codec_sample_rate: int = 44100,
    subtype: str | None = None,
) -> Path:
    """`restore` written to the audio file `path` (`write_audio`'s rules: format from the
    extension, whole or not at all) piece by piece, without a whole-file copy in memory."""
    gain, peak = _restore_gain(y, info, codec_sample_rate)
    with _written(path, info.sample_rate, 1, subtype) as file:
        for piece in _restored_pieces(y, info, codec_sample_rate):
            file.write(_scaled(piece, gain, peak))
    return Path(path)


def _restore_gain(y: np.ndarray, info: PreprocessInfo, codec_sample_rate: int):
    """(gain, peak after the gain) that `normalize_loudness` would use on the restored signal,
    measured over its pieces (a first pass; the second scales and keeps them)."""
    y = _samples(y, "restore", "y")
    if y.ndim != 1:
        raise ValueError(f"restore: y must be mono [M], got shape {y.shape}")
    if not math.isfinite(info.loudness):
        raise ValueError(f"normalize_loudness: target must be finite, got {info.loudness}")
    meter = LoudnessMeter(info.sample_rate, 1, info.n_samples)
    largest = np.float32(0.0)
    for piece in _restored_pieces(y, info, codec_sample_rate):
        meter.add(piece[None])
        largest = max(largest, np.abs(piece).max(initial=np.float32(0.0)))
    gain = _gain(meter.value(), info.loudness)
    return gain, float(largest) * gain


def _restored_pieces(
    y: np.ndarray, info: PreprocessInfo, codec_sample_rate: int
) -> Iterator[np.ndarray]:
    """`y` resampled to the input's rate, cut or zero-padded to its length, piece by piece."""
    pieces = (y[None, piece] for piece in _pieces(y.shape[0]))
    left = info.n_samples
    for piece in _resampled_pieces(pieces, codec_sample_rate, info.sample_rate, 1):
        piece = piece[0, :left]
        left -= piece.shape[0]
        if piece.shape[0]:
            yield piece
    while left > 0:
        yield np.zeros(min(left, _PIECE), np.float32)
        left -= _PIECE
