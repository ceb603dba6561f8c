"""`vampnet-onnx demo`: its cached random-weight models, music-like test audio, spectrograms
and a minimal PNG writer.

Only `demo_models` needs torch (the first time, to write and export the checkpoints); the
rest is numpy + zlib. `cli` parses the command and runs the vamp.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from . import configs
from .contracts import GENERATION, MODEL_FILES

DEMO_CHECKPOINTS = ("coarse.pth", "c2f.pth", "codec.pth")
#: The demo's models, all with the real structure: tiny transformers, a small codec.
_DEMO_KWARGS = (configs.TINY_COARSE_KWARGS, configs.TINY_C2F_KWARGS, configs.SMALL_CODEC_KWARGS)


def demo_cache() -> Path:
    """Where `demo` keeps its random checkpoints and exported models:
    ``$XDG_CACHE_HOME/vampnet-onnx/demo`` (default ``~/.cache/vampnet-onnx/demo``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vampnet-onnx" / "demo"


def _stamp() -> str:
    """What the cached demo models must have been exported for: the graph contracts' inputs
    (an export from an older version with other inputs is made again)."""
    return json.dumps({"generation": GENERATION.input_names})


def demo_models(verbose: bool = False, progress: bool = True) -> Path:
    """The demo's exported models folder, created on first use (needs torch) and again when
    it was exported for other graph contracts. verbose: the exporter's own messages;
    progress: the export's bar and a line per graph. The folder has no wavebeat.onnx: the
    demo takes no beat mask."""
    from . import testing
    from .export import export_models

    models = demo_cache() / "models"
    stamp = models / "contracts.json"
    if (
        all((models / name).is_file() for name in MODEL_FILES)
        and stamp.is_file()
        and stamp.read_text() == _stamp()
    ):
        return models
    models.parent.mkdir(parents=True, exist_ok=True)
    # Export into a fresh folder and rename it at the end, so an interrupted export is not
    # mistaken for a finished one next time.
    staging = Path(tempfile.mkdtemp(dir=models.parent, prefix="export-"))
    try:
        coarse, c2f, codec = (staging / name for name in DEMO_CHECKPOINTS)
        for path, kwargs, seed in zip((coarse, c2f), _DEMO_KWARGS, (1, 2)):
            testing.write_vampnet_checkpoint(path, kwargs, seed=seed)
        testing.write_codec_checkpoint(codec, _DEMO_KWARGS[2], seed=3)
        export_models(
            staging / "models",
            codec=codec,
            coarse=coarse,
            c2f=c2f,
            verbose=verbose,
            progress=progress,
        )
        (staging / "models" / "contracts.json").write_text(_stamp())
        shutil.rmtree(models, ignore_errors=True)
        (staging / "models").rename(models)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return models


#: A I-vi-IV-V progression in C major (MIDI notes of each chord).
_CHORDS = ((60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62))
#: Colour map anchors from silence (dark blue) to loud (pale yellow), RGB 0-255.
_COLOURS = np.array([[0, 0, 20], [90, 20, 120], [220, 70, 50], [255, 240, 160]], dtype=float)


#: A beat is rendered this long: its slowest decay, the chord's exp(-3 t), is down to 1e-6
#: (-120 dB) by then, below any output format's resolution.
_BEAT_TAIL_S = math.log(1e6) / 3.0


def synth_music(seconds: float = 6.0, sample_rate: int = 44100, bpm: float = 120.0) -> np.ndarray:
    """A chord progression (one chord a bar of four beats, decaying harmonic notes), a bass
    note, a kick on every beat and a noise hi-hat on the off-beats.

    Each beat is rendered once per chord (and start offset within a sample) and added over its
    `_BEAT_TAIL_S` seconds, so the time is linear in the length (an hour at 96 kHz included).

    Returns float32 ``[N]``, N = round(seconds * sample_rate), peak 0.9.
    """
    if not seconds > 0:
        raise ValueError(f"synth_music: seconds must be > 0, got {seconds}")
    n = round(seconds * sample_rate)
    beat = 60.0 / bpm
    y = np.zeros(n)
    rng = np.random.default_rng(0)
    tail = math.ceil(_BEAT_TAIL_S * sample_rate)
    rendered: dict[tuple[int, float], np.ndarray] = {}
    for k in range(math.ceil(seconds / beat)):
        start = k * beat
        first = math.ceil(start * sample_rate)
        if first >= n:
            break
        # The beat's own time at its first sample: the same for every beat where the beat is a
        # whole number of samples (120 bpm at any even rate), so one rendering per chord.
        offset = first / sample_rate - start
        key = ((k // 4) % len(_CHORDS), offset)
        if key not in rendered:
            if len(rendered) >= 2 * len(_CHORDS):
                rendered.clear()  # offsets that never repeat: memory stays bounded
            rendered[key] = _beat(_CHORDS[key[0]], np.arange(tail) / sample_rate + offset)
        stop = min(n, first + tail)
        y[first:stop] += rendered[key][: stop - first]
        # Hi-hat: 50 ms of noise on the off-beat.
        off = start + beat / 2
        hat = slice(math.ceil(off * sample_rate), min(n, math.ceil((off + 0.05) * sample_rate)))
        if hat.start < hat.stop:
            local = np.arange(hat.start, hat.stop) / sample_rate - off
            y[hat] += rng.standard_normal(local.shape[0]) * np.exp(-local * 60) * 0.15
    peak = np.abs(y).max()
    # A clip of a sample or two can be all zeros (every sine starts at 0).
    return (0.9 * y / peak if peak > 0 else y).astype(np.float32)


def _beat(chord: tuple[int, ...], local: np.ndarray) -> np.ndarray:
    """One beat at the times `local` (s, >= 0) after its start: the chord re-struck (plucked
    notes with three harmonics, the root an octave down added) and a kick sweeping 120 -> 45 Hz."""
    y = np.zeros(local.shape[0])
    env = np.exp(-local * 3.0)
    for note in chord + (chord[0] - 12,):
        freq = 440.0 * 2 ** ((note - 69) / 12)
        y += env * sum(np.sin(2 * np.pi * h * freq * local) / h**1.5 for h in (1, 2, 3)) * 0.15
    kick = np.sin(2 * np.pi * (45 * local + 75 * (1 - np.exp(-local * 30)) / 30))
    return y + kick * np.exp(-local * 12) * 0.6


def spectrogram_db(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Log-magnitude STFT (Hann) of mono `x` ``[N]``: float ``[n_fft // 2 + 1, frames]`` in dB
    relative to the maximum, clipped to [-80, 0]."""
    x = np.pad(np.asarray(x, dtype=np.float64), (n_fft // 2, n_fft // 2))
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=-1)).T ** 2
    db = 10 * np.log10(np.maximum(power, 1e-12))
    return np.clip(db - db.max(), -80.0, 0.0)


#: Rows of a spectrogram panel, log-spaced from `_F_MIN` Hz to Nyquist (as a musician reads it).
LOG_ROWS = 256
_F_MIN = 40.0


def log_frequency(db: np.ndarray, sample_rate: int, rows: int = LOG_ROWS) -> np.ndarray:
    """`spectrogram_db` output ``[bins, frames]`` resampled onto `rows` log-spaced frequencies
    from 40 Hz to Nyquist (linear interpolation between bins): ``[rows, frames]``, low first."""
    bins = db.shape[0]
    nyquist = sample_rate / 2
    freqs = _F_MIN * (nyquist / _F_MIN) ** (np.arange(rows) / (rows - 1))
    position = freqs / nyquist * (bins - 1)
    low = np.minimum(position.astype(int), bins - 2)
    frac = (position - low)[:, None]
    return db[low] * (1 - frac) + db[low + 1] * frac


def spectrogram_image(
    signals: list[np.ndarray], sample_rate: int = 44100, gap: int = 4
) -> np.ndarray:
    """Spectrograms of mono signals at `sample_rate` stacked top to bottom, each `LOG_ROWS` rows
    on a log frequency axis (40 Hz at the bottom, Nyquist at the top), `gap` white rows between
    them: uint8 RGB ``[H, W, 3]``, W = the longest."""
    panels = [log_frequency(spectrogram_db(s), sample_rate)[::-1] for s in signals]
    width = max(p.shape[1] for p in panels)
    rows = []
    for i, panel in enumerate(panels):
        level = (panel + 80.0) / 80.0 * (len(_COLOURS) - 1)
        low = np.minimum(level.astype(int), len(_COLOURS) - 2)
        frac = (level - low)[..., None]
        rgb = _COLOURS[low] * (1 - frac) + _COLOURS[low + 1] * frac
        rows.append(np.pad(rgb, ((0, 0), (0, width - panel.shape[1]), (0, 0))))
        if i < len(panels) - 1:
            rows.append(np.full((gap, width, 3), 255.0))
    return np.concatenate(rows).round().astype(np.uint8)


#: 3 x 5 pixel glyphs (rows top to bottom, "#" = ink) of the characters the figure's labels use.
_GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    ".": ("...", "...", "...", "...", ".#."),
    " ": ("...", "...", "...", "...", "..."),
    "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "z": ("...", "###", ".#.", "#..", "###"),
    "k": ("#..", "#.#", "##.", "#.#", "#.#"),
    "s": ("...", "###", "##.", "..#", "###"),
    "i": (".#.", "...", ".#.", ".#.", ".#."),
    "n": ("...", "##.", "#.#", "#.#", "#.#"),
    "p": ("...", "###", "#.#", "###", "#.."),
    "u": ("...", "#.#", "#.#", "#.#", "###"),
    "t": (".#.", "###", ".#.", ".#.", ".##"),
    "o": ("...", "###", "#.#", "#.#", "###"),
    "m": ("...", "###", "###", "#.#", "#.#"),
    "e": ("###", "#.#", "###", "#..", "###"),
}
_SCALE = 2  # pixels per glyph pixel
_CHAR_W, _CHAR_H = 4 * _SCALE, 5 * _SCALE  # a glyph and one column of space
_LEFT, _TITLE, _BOTTOM = 12 * _SCALE + 8, 5 * _SCALE + 6, 5 * _SCALE + 8


def _text(text: str) -> np.ndarray:
    """`text` as a bool ink bitmap ``[_CHAR_H, _CHAR_W * len(text)]``."""
    columns = []
    for char in text:
        glyph = np.array([[c == "#" for c in row] + [False] for row in _GLYPHS[char]])
        columns.append(np.kron(glyph, np.ones((_SCALE, _SCALE), bool)))
    return np.concatenate(columns, axis=1)


def _draw(image: np.ndarray, text: str, top: int, left: int) -> None:
    ink = _text(text)
    region = image[top : top + ink.shape[0], left : left + ink.shape[1]]
    region[ink[: region.shape[0], : region.shape[1]]] = 0


def _frequency_label(hz: float) -> str:
    return f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}"


def spectrogram_figure(
    signals: list[np.ndarray], titles: list[str], sample_rate: int = 44100, hop: int = 256
) -> np.ndarray:
    """`spectrogram_image` of `signals` with axes: each panel under its title (e.g. "input"),
    frequency ticks in Hz on the left (log axis, 100 Hz, 1k, 10k), time ticks in seconds
    below. uint8 RGB ``[H, W, 3]``, white margins, black text (digits, "Hz", "s" and the
    lower-case letters of the titles)."""
    if len(titles) != len(signals):
        raise ValueError(
            f"spectrogram_figure: titles must name every signal ({len(signals)}), got {titles}"
        )
    panels = [spectrogram_image([signal], sample_rate) for signal in signals]
    width = max(panel.shape[1] for panel in panels)
    height = sum(_TITLE + panel.shape[0] for panel in panels) + _BOTTOM
    image = np.full((height, _LEFT + width + 8, 3), 255, np.uint8)
    nyquist = sample_rate / 2
    top = 0
    for panel, title in zip(panels, titles):
        _draw(image, title, top + 2, _LEFT)
        _draw(image, "Hz", top + 2, 2)
        top += _TITLE
        image[top : top + panel.shape[0], _LEFT : _LEFT + panel.shape[1]] = panel
        for hz in (100.0, 1000.0, 10000.0):
            if hz >= nyquist:
                continue
            fraction = math.log(hz / _F_MIN) / math.log(nyquist / _F_MIN)
            row = top + round((LOG_ROWS - 1) * (1 - fraction))
            image[row, _LEFT - 4 : _LEFT] = 0
            label = _frequency_label(hz)
            _draw(image, label, max(0, row - _CHAR_H // 2), _LEFT - 6 - _CHAR_W * len(label))
        top += panel.shape[0]
    seconds = (width - 1) * hop / sample_rate
    step = next((s for s in (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600) if seconds / s <= 8), 1200)
    for k in range(int(seconds / step) + 1):
        column = _LEFT + round(k * step * sample_rate / hop)
        image[top : top + 3, column] = 0
        label = f"{k * step:g}" + (" s" if k == 0 else "")
        _draw(image, label, top + 5, min(column, image.shape[1] - _CHAR_W * len(label)))
    return image


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write uint8 RGB ``[H, W, 3]`` as an 8-bit truecolour PNG (no filtering, zlib level 6)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(
            f"write_png: image must be uint8 [H, W, 3] with H, W >= 1, got {image.dtype} "
            f"{image.shape}"
        )
    height, width = image.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    # Each scanline starts with its filter type (0 = none).
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path = Path(path)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
    return path
