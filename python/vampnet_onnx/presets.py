"""VampNet's named presets (the app's "preset" menu, docs/model.md §4.7) as mask settings.

A preset sets five `settings.MaskSettings` fields: ``periodic_prompt``, ``upper_codebook_mask``
("compression prompt" in the app), ``onset_mask_width``, ``dropout`` and ``beat_mask_ms``; the
other settings keep their defaults. Settings given explicitly win over the preset's::

    vamp.vamp(x, rate, **{**presets.preset("small variation"), "dropout": 0.1})

Where we differ from upstream: its "unconditional" branch never sets the beat mask, so choosing
it raises an UnboundLocalError in the app; here it sets ``beat_mask_ms`` 0 (no beat mask).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .settings import MaskSettings

__all__ = ["PRESETS", "preset", "describe"]

_FIELDS = ("periodic_prompt", "upper_codebook_mask", "onset_mask_width", "dropout", "beat_mask_ms")

#: name -> (periodic_prompt, upper_codebook_mask, onset_mask_width, dropout, beat_mask_ms), in
#: the app's menu order (app.py@72e2675, ``change_preset``).
_TABLE: dict[str, tuple[int, int, int, float, float]] = {
    "timbre transfer": (2, 1, 0, 0.0, 0.0),
    "small variation": (5, 4, 0, 0.0, 0.0),
    "small variation (follow beat)": (7, 4, 0, 0.0, 50.0),
    "medium variation": (7, 4, 0, 0.0, 0.0),
    "medium variation (follow beat)": (13, 4, 0, 0.0, 50.0),
    "large variation": (13, 4, 0, 0.2, 0.0),
    "large variation (follow beat)": (0, 4, 0, 0.0, 80.0),
    "unconditional": (0, 1, 0, 0.0, 0.0),
}


def _checked(values: tuple) -> dict[str, Any]:
    settings = dict(zip(_FIELDS, values))
    MaskSettings(**settings).validate("presets")
    return settings


#: name -> the `MaskSettings` field values the preset sets (checked at import).
PRESETS: dict[str, dict[str, Any]] = {name: _checked(values) for name, values in _TABLE.items()}


def preset(name: str) -> dict[str, Any]:
    """The mask settings of preset `name` (`PRESETS`), as `Vamp.vamp` keyword arguments, or
    ValueError "presets: name must be one of ..., got ..."."""
    if name not in PRESETS:
        choices = ", ".join(f"'{n}'" for n in PRESETS)
        raise ValueError(f"presets: name must be one of {choices}, got {name!r}")
    return dict(PRESETS[name])


def describe(name: str) -> str:
    """One line: the preset's settings, named as the CLI's flags."""
    flags = {f.name: f.metadata["flag"] for f in fields(MaskSettings)}
    return " ".join(f"{flags[k]} {v:g}" for k, v in preset(name).items())
