"""What the app does, without the page: checks an upload, turns the controls into `Vamp.vamp`
keyword arguments, runs the variations as one `Vamp.vamp_batch` (or a continuation,
`Vamp.extend`) and writes what the page shows.

Gradio-free, so its errors are plain ValueErrors in the house format; `ui` shows them in the
page. Only the public API is called (`Vamp`, `presets`, `settings`, `audio`, `demo`).
"""

from __future__ import annotations

import math
import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .. import audio, demo, presets
from ..contracts import LICENSE_KEY, WAVEBEAT_FILE
from ..pipeline import Vamp
from ..settings import MaskSettings, SamplingSettings, check_seed, public_name

WHERE = "vampnet-onnx app"
#: Variations a run may ask for: each is a clip in the batch, so memory and time grow with it.
MAX_VARIATIONS = 4
#: The example clip's length (demo.synth_music): two bars at 120 bpm and a little more.
EXAMPLE_SECONDS = 6.0
#: Seeds the app draws for an empty seed field: small enough to read and type back.
_DRAWN_SEEDS = 2**31
#: "extend by" to start with (or --max-seconds where less): what one window adds at the
#: default context (10 - 4 s).
EXTEND_SECONDS = 6.0
#: The labels of the page's fields whose `Vamp` keyword is not their label (every other
#: control is labelled with its keyword, the CLI's flag without the dashes).
LABELS = {"seconds": "extend by (s)", "context_s": "context (s)", "inpaint": "inpaint (s)"}


@dataclass(frozen=True)
class Control:
    """One manual control: the `Vamp.vamp` keyword it sets, its default, whether it takes
    whole numbers, and the help text of its setting (`settings`)."""

    name: str
    default: Any
    integral: bool
    help: str


def _controls(settings_class) -> list[Control]:
    return [
        Control(
            public_name(f.name),
            f.default,
            f.metadata["limit"].kind is int,
            f.metadata["help"],
        )
        for f in fields(settings_class)
    ]


#: The sampling controls, then the mask recipe's, in the order the page and the API take them.
SAMPLING_CONTROLS = _controls(SamplingSettings)
MASK_CONTROLS = _controls(MaskSettings)
CONTROLS = SAMPLING_CONTROLS + MASK_CONTROLS


@dataclass(frozen=True)
class Result:
    """One run: the seed of variation 1 (variation i has seed + i), a float WAV per variation,
    the spectrograms of the input and the outputs, and the picture of the masks the
    variations were generated with (`masks_picture`)."""

    seed: int
    paths: list[Path]
    spectrograms: np.ndarray
    mask: np.ndarray


class Studio:
    """The models folder's `Vamp`, loaded once, and a folder for the files the app writes;
    `license` is the models' license notice (a folder exported with ``--pretrained``) or None.

    Args:
        models: a folder written by ``vampnet-onnx export``.
        device: "cpu" or "cuda" (`Vamp`).
        max_seconds: the longest input accepted, in seconds.
    """

    def __init__(self, models: str | Path, device: str = "cpu", max_seconds: float = 60.0):
        if isinstance(max_seconds, bool) or not (
            isinstance(max_seconds, int | float) and 0 < max_seconds < math.inf
        ):
            raise ValueError(f"{WHERE}: max_seconds must be a number > 0, got {max_seconds!r}")
        self.vamp = Vamp(models, device=device)
        self.max_seconds = float(max_seconds)
        self.has_beats = (Path(models) / WAVEBEAT_FILE).is_file()
        self.precision = self.vamp.coarse.config.get("precision", "fp32")
        self.license = _license_notice(self.vamp)
        self.folder = Path(tempfile.mkdtemp(prefix="vampnet-onnx-app-"))
        self._run = 0

    def close(self) -> None:
        """Remove the files the app wrote."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def presets(self) -> list[str]:
        """The preset names this models folder can run (beat presets need wavebeat.onnx)."""
        return [
            name
            for name, values in presets.PRESETS.items()
            if self.has_beats or values["beat_mask_ms"] == 0
        ]

    def example_clip(self) -> Path:
        """The demo's synthesised music as a float WAV at 44.1 kHz."""
        path = self.folder / "example.wav"
        if not path.is_file():
            rate = 44100
            audio.write_audio(path, demo.synth_music(EXAMPLE_SECONDS, rate), rate, "FLOAT")
        return path

    def load(self, path: str | Path | None) -> tuple[np.ndarray, int]:
        """The input file's samples ``[channels, N]`` and rate, refused (ValueError) when
        missing, undecodable or longer than `max_seconds` (from its header, before reading)."""
        if path is None:
            raise ValueError(
                f"{WHERE}: input must be an audio file (upload or record one), got none"
            )
        info = audio.file_info(path, WHERE, "input")
        seconds = info.n_frames / info.sample_rate if info.sample_rate > 0 else math.inf
        if seconds > self.max_seconds:
            raise ValueError(
                f"{WHERE}: input must be at most {self.max_seconds:g} s long (--max-seconds), "
                f"got {seconds:.1f} s"
            )
        return audio.load_audio(path)

    def settings(
        self,
        values: dict[str, Any],
        seed: str | int | None,
        inpaint: str | None = None,
        controls: list[Control] = CONTROLS,
    ) -> dict[str, Any]:
        """`Vamp.vamp` keyword arguments from the `controls`' `values` (by keyword name; a
        continuation takes `SAMPLING_CONTROLS` only), the seed field (empty: a drawn seed) and
        the inpaint field ("START END" in seconds; empty: none), checked as `Vamp.vamp` checks
        them."""
        kwargs = {control.name: values[control.name] for control in controls}
        kwargs["seed"] = _seed(seed)
        if inpaint is not None and inpaint.strip():
            kwargs["inpaint"] = _inpaint(inpaint)
        Vamp.check_settings(**kwargs)
        return kwargs

    def generate(
        self,
        path: str | Path | None,
        settings: dict[str, Any],
        variations: Any,
        cancel: threading.Event | None = None,
    ) -> Result:
        """`variations` outputs of the input file with `settings` (`settings()`), as one
        `Vamp.vamp_batch`, variation i with seed + i: each equals ``Vamp.vamp(x, rate,
        seed=seed + i, **rest)``. Setting `cancel` stops the batch (`Cancelled`)."""
        if (
            isinstance(variations, bool)
            or not isinstance(variations, int | float)
            or variations != int(variations)
            or not 1 <= variations <= MAX_VARIATIONS
        ):
            raise ValueError(
                f"{WHERE}: variations must be an int in [1, {MAX_VARIATIONS}], got {variations!r}"
            )
        n = int(variations)
        x, rate = self.load(path)
        rest = dict(settings)
        seed = rest.pop("seed")
        seeds = [check_seed(seed + i, WHERE) for i in range(n)]
        # Each variation's mask as the run applies it: its own seed draws its roll and dropout.
        applied = [self.vamp.vamp_mask(x, rate, seed=s, applied=True, **rest) for s in seeds]
        outputs = self.vamp.vamp_batch(
            [x] * n, rate, seeds=seeds, progress=True, cancel=cancel, **rest
        )
        folder = self._new_run_folder()
        paths = []
        for i, (y, out_rate) in enumerate(outputs, 1):
            out = folder / f"variation-{i}-seed-{seeds[i - 1]}.wav"
            audio.write_audio(out, y, out_rate, "FLOAT")
            paths.append(out)
        signals = [audio.to_mono(x)] + [y for y, _ in outputs]
        titles = ["input"] + [f"output {i}" for i in range(1, n + 1)]
        figure = demo.spectrogram_figure(signals, titles, rate)
        return Result(seed, paths, figure, masks_picture(applied))

    def extend(
        self,
        path: str | Path | None,
        settings: dict[str, Any],
        seconds: Any,
        context: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """The input file continued by `seconds` of new music (`Vamp.extend`, with `settings`:
        `settings()` of `SAMPLING_CONTROLS` and the seed), as one float WAV: ``Vamp.extend(x,
        rate, seconds=seconds, context_s=context_s, **settings)``, context_s from the context
        field (seconds; empty: longform's default). `seconds` is at most `max_seconds`.
        Setting `cancel` stops it (`Cancelled`)."""
        if _is_number(seconds) and not 0 < seconds <= self.max_seconds:
            raise ValueError(
                f"{WHERE}: {LABELS['seconds']} must be in (0, {self.max_seconds:g}] "
                f"(--max-seconds), got {seconds:g}"
            )
        context_s = _context(context)
        x, rate = self.load(path)
        y, out_rate = self.vamp.extend(
            x,
            rate,
            seconds=seconds,
            context_s=context_s,
            progress=True,
            cancel=cancel,
            **settings,
        )
        out = self._new_run_folder() / f"continuation-seed-{settings['seed']}.wav"
        audio.write_audio(out, y, out_rate, "FLOAT")
        figure = demo.spectrogram_figure([audio.to_mono(x), y], ["input", "output"], rate)
        return Result(settings["seed"], [out], figure, None)

    def mask(self, path: str | Path | None, settings: dict[str, Any]) -> np.ndarray:
        """The picture of the mask variation 1 would generate with (`mask_picture`), as the
        run applies it."""
        x, rate = self.load(path)
        return mask_picture(self.vamp.vamp_mask(x, rate, applied=True, **settings))

    def _new_run_folder(self) -> Path:
        """A fresh folder for this run's files; the one before the last is removed, so the
        files the page still shows stay until the next run replaces them."""
        self._run += 1
        shutil.rmtree(self.folder / f"run-{self._run - 2}", ignore_errors=True)
        folder = self.folder / f"run-{self._run}"
        folder.mkdir()
        return folder


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: The public API's errors: ``<Class.method>: <keyword> must ...`` (`Vamp`, `Generator`).
_API_ERROR = re.compile(r"^(?:Vamp|Generator)\.\w+: (\w+) must ")


def in_app_words(message: str) -> str:
    """An error message of the public API as the page says it: ``vampnet-onnx app: <the
    control's label> must ...`` for ``Vamp.extend: context_s must ...``; other messages (the
    app's own, a file's) as they are."""
    match = _API_ERROR.match(message)
    if match is None:
        return message
    name = match.group(1)
    return f"{WHERE}: {LABELS.get(name, name)} must {message[match.end() :]}"


def _license_notice(vamp: Vamp) -> str | None:
    """The license notice the generation graphs carry (`contracts.LICENSE_KEY`, which
    ``vampnet-onnx export --pretrained`` writes into every graph), None where they carry none."""
    notices = {
        generator.session.get_modelmeta().custom_metadata_map.get(LICENSE_KEY)
        for generator in (vamp.coarse, vamp.c2f)
    }
    return "\n\n".join(sorted(notices - {None})) or None


def _seed(text: str | int | None) -> int:
    """The seed field: empty draws a seed; else an int64 (0 is an ordinary seed)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return secrets.randbelow(_DRAWN_SEEDS)
    if isinstance(text, str):
        try:
            return check_seed(int(text.strip()), WHERE)
        except ValueError:
            raise ValueError(f"{WHERE}: seed must be an int64 or empty, got {text!r}") from None
    return check_seed(text, WHERE)


def _context(text: str | None) -> float | None:
    """The context field: seconds, or empty for `Vamp.extend`'s default (None)."""
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{WHERE}: {LABELS['context_s']} must be a number of seconds or empty, got {text!r}"
        ) from None


def _inpaint(text: str) -> tuple[float, float]:
    """The inpaint field: two numbers of seconds, START END (a comma between them is taken)."""
    parts = text.replace(",", " ").split()
    try:
        if len(parts) == 2:
            return float(parts[0]), float(parts[1])
    except ValueError:
        pass
    raise ValueError(
        f"{WHERE}: inpaint must be two numbers of seconds, START END (or empty), got {text!r}"
    )


#: Mask picture colours: kept from the input (dark), generated (light), RGB.
_KEPT = np.array([40, 40, 60], np.uint8)
_GENERATED = np.array([250, 190, 90], np.uint8)
#: Pixels per codebook row, and the picture's least width in pixels.
_ROW_PX, _MIN_WIDTH = 16, 600
#: Background between the bands of `masks_picture`, in pixels and RGB.
_GAP_PX, _GAP = 8, np.array([255, 255, 255], np.uint8)


def mask_picture(mask: np.ndarray) -> np.ndarray:
    """bool mask ``[1, C, T]`` (True = generate) as uint8 RGB ``[C * 16, T * k, 3]``: codebook 0
    at the bottom (the coarsest, as a spectrogram has its low notes), frames left to right,
    each k >= 1 pixels wide so that short clips are still readable."""
    rows = np.asarray(mask, bool)[0][::-1]
    width = max(1, math.ceil(_MIN_WIDTH / rows.shape[1]))
    cells = np.repeat(np.repeat(rows, _ROW_PX, axis=0), width, axis=1)
    return np.where(cells[..., None], _GENERATED, _KEPT)


def masks_picture(masks: list[np.ndarray]) -> np.ndarray:
    """The masks of a run's variations, each bool ``[1, C, T]``, as one uint8 RGB picture: one
    `mask_picture` when they are all equal, else one band per variation, variation 1 at the top,
    `_GAP_PX` pixels of white between them."""
    if all(np.array_equal(masks[0], m) for m in masks[1:]):
        return mask_picture(masks[0])
    bands = [mask_picture(m) for m in masks]
    gap = np.broadcast_to(_GAP, (_GAP_PX, bands[0].shape[1], 3))
    return np.concatenate([part for band in bands for part in (band, gap)][:-1])
