"""Sampling and mask settings, defined once: defaults, limits, documentation and one check.

Each field is named like the graph input it feeds (`contracts.GENERATION`, `contracts.VAMP`)
and carries VampNet's default (docs/model.md §3.1, §4.7), its allowed values and the help text
that the CLI shows. The Python API (`Generator.generate`, `Vamp.vamp`) and the CLI take the same
names, with one exception kept from VampNet's app: the step count ``n_steps`` is called
``steps`` there (``--steps``). "Off" is one value each: top_k 0, top_p 1.0, periodic_prompt 0,
onset_mask_width 0 (the Python API also takes None for top_k and top_p).

Torch-free and onnxruntime-free: the exporter, the runtime and the CLI all import it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from .reference import check_range, range_text

#: The seed of every random draw: any int64.
SEED_DEFAULT = 0
#: Chunks per generation run (`pipeline.Vamp`'s batch_size, the CLI's --batch-size); results
#: do not depend on it.
BATCH_SIZE_DEFAULT = 8
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _fail(where: str, name: str, constraint: str, value: Any) -> None:
    prefix = f"{where}: " if where else ""  # the CLI's options name themselves
    raise ValueError(f"{prefix}{name} must {constraint}, got {value!r}")


def _as_float32(number: float) -> float:
    """`number` as the graph sees a float32 input (out of float32's range: +-inf)."""
    with np.errstate(over="ignore"):
        return float(np.float32(number))


@dataclass(frozen=True)
class Limit:
    """Allowed values of one setting, checked as given and as the graph sees them (float
    settings are float32 inputs, int settings int64).

    kind: int or float (float settings take any real number type, ints included).
    low, high: inclusive bounds; high None: no upper bound (then the value must be finite).
    low_open: low itself is not allowed.
    off: the value that None stands for (None: None is not allowed).
    graph_range: the single graph checks this input with CheckRange: errors use its wording
        (the type, then "be in [low, high]").
    """

    kind: type
    low: float
    high: float | None = None
    low_open: bool = False
    off: Any = None
    graph_range: bool = False

    def constraint(self) -> str:
        """The "must ..." text of an error for a value of the wrong type or below `low`."""
        prefix = "be None or " if self.off is not None else "be "
        if self.low_open:
            return f"{prefix}in ({range_text(self.low)}, {range_text(self.high)}]"
        what = "an int" if self.kind is int else "a finite number"
        return f"{prefix}{what} >= {range_text(self.low)}"

    def _within(self, number: float) -> bool:
        low_ok = number > self.low if self.low_open else number >= self.low
        high_ok = math.isfinite(number) if self.high is None else number <= self.high
        return low_ok and high_ok

    def check(self, name: str, value: Any, where: str) -> int | float:
        """`value` as a Python int/float within the limit, else ValueError
        ``"<where>: <name> must <constraint>, got <value>"``. numpy scalars of any width are
        accepted; a value that only the graph's type breaks (an int past int64, a float that
        float32 rounds out of range) names both."""
        if value is None and self.off is not None:
            return self.off
        integral = self.kind is int
        kinds = (int, np.integer) if integral else (int, float, np.integer, np.floating)
        if isinstance(value, bool) or not isinstance(value, kinds):
            if self.graph_range:
                _fail(where, name, "be an int" if integral else "be a number", value)
            _fail(where, name, self.constraint(), value)
        try:
            number = int(value) if integral else float(value)
        except OverflowError:  # an int too large for a float
            number = math.inf
        if self.graph_range:
            if number in (math.inf, -math.inf) and not isinstance(value, float | np.floating):
                # An int past what the graph's int64 / float32 holds: name it as given.
                _fail(
                    where, name, f"be in [{range_text(self.low)}, {range_text(self.high)}]", value
                )
            # The single graph's CheckRange op gives the same message.
            check_range(number, name, self.low, self.high, where)
        elif not self._within(number):
            # Past a closed upper bound says so; anything else breaks the constraint.
            too_high = self.high is not None and not self.low_open and number > self.high
            bound = f"be at most {range_text(self.high)}" if too_high else self.constraint()
            _fail(where, name, bound, value)
        if integral and not _INT64_MIN <= number <= _INT64_MAX:
            _fail(where, name, f"fit an int64 (at most {_INT64_MAX} in size)", value)
        if not integral and not self._within(_as_float32(number)):
            constraint = (
                self.constraint()
                if self.high is None or self.low_open
                else (f"be in [{range_text(self.low)}, {range_text(self.high)}]")
            )
            raise ValueError(
                f"{where}: {name} must {constraint} as a float32, got {value!r} "
                f"({range_text(_as_float32(number))} as a float32)"
            )
        return number


def setting(default: Any, limit: Limit, help: str, *, flag: str, metavar: str | None = None):
    """A settings field: its default, `Limit`, CLI help text and CLI flag."""
    return field(
        default=default,
        metadata={"limit": limit, "help": help, "flag": flag, "metavar": metavar},
    )


#: The Python API's and CLI's name of a field where it differs from the graph input's name.
PUBLIC_NAMES = {"n_steps": "steps"}


def public_name(name: str) -> str:
    """The keyword argument (and, with dashes, the CLI option) of the field `name`."""
    return PUBLIC_NAMES.get(name, name)


class _Settings:
    """validate() and the field helpers shared by the settings dataclasses."""

    def validate(self, where: str):
        """A copy with every value checked against its `Limit` and made a plain Python int or
        float (None becomes the off value); ValueError names the first bad field by its
        public name."""
        values = {
            f.name: f.metadata["limit"].check(public_name(f.name), getattr(self, f.name), where)
            for f in fields(self)
        }
        return replace(self, **values)

    @classmethod
    def from_public(cls, where: str, **kwargs: Any):
        """Validated settings from public keyword names (``steps=...``); other names are a
        TypeError as for a function call."""
        by_public = {public_name(f.name): f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - set(by_public))
        if unknown:
            raise TypeError(f"{where}: unexpected settings {unknown}")
        return cls(**{by_public[k]: v for k, v in kwargs.items()}).validate(where)

    def inputs(self) -> dict[str, Any]:
        """Field name -> value: the graph inputs these settings feed."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def public(self) -> dict[str, Any]:
        """Public name -> value: the keyword arguments of the Python API."""
        return {public_name(f.name): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def limits(cls) -> dict[str, Limit]:
        return {f.name: f.metadata["limit"] for f in fields(cls)}


#: More steps than this only ask for hours of work per chunk (VampNet runs 36; a full-size
#: coarse step takes about 2 s on 2 cores).
_MAX_STEPS = 10_000


@dataclass(frozen=True)
class SamplingSettings(_Settings):
    """How tokens are drawn: the generation graph's sampling inputs (VampNet's defaults)."""

    n_steps: int = setting(
        36, Limit(int, 1, _MAX_STEPS), "generation steps", flag="--steps", metavar="N"
    )
    temperature: float = setting(
        1.0, Limit(float, 0.0), "sampling temperature; 0 = argmax", flag="--temperature"
    )
    top_k: int = setting(
        0, Limit(int, 0, off=0), "keep the K likeliest tokens; 0 = off", flag="--top-k", metavar="K"
    )
    top_p: float = setting(
        1.0,
        Limit(float, 0.0, 1.0, low_open=True, off=1.0),
        "nucleus sampling mass, in (0, 1]; 1 = off",
        flag="--top-p",
        metavar="P",
    )
    mask_temperature: float = setting(
        10.5, Limit(float, 0.0), "re-masking noise (annealed)", flag="--mask-temperature"
    )


#: Upper bound of the mask's frame counts: a period or width past it only asks for absurd
#: draws or casts.
_MAX_FRAMES = 1_000_000
#: Upper bound of the kept seconds (about 116 days of audio).
_MAX_SECONDS = 1e7


#: Fields of `MaskSettings` that the single graph does not take.
HOST_ONLY_MASK_SETTINGS = ("onset_mask_width", "beat_mask_ms")


@dataclass(frozen=True)
class MaskSettings(_Settings):
    """What is kept from the input (VampNet's ``build_mask`` recipe and app defaults): every
    field but onset_mask_width and beat_mask_ms is an input of the single graph."""

    periodic_prompt: int = setting(
        7,
        Limit(int, 0, _MAX_FRAMES, graph_range=True),
        "keep every N-th frame (randomly phase-shifted); 0 = off",
        flag="--periodic-prompt",
        metavar="N",
    )
    periodic_width: int = setting(
        1,
        Limit(int, 0, _MAX_FRAMES, graph_range=True),
        "frames kept around each periodic frame, 2*(N//2)+1",
        flag="--periodic-width",
        metavar="N",
    )
    upper_codebook_mask: int = setting(
        3,
        Limit(int, 0, _MAX_FRAMES, graph_range=True),
        "keep only codebooks < N at the kept frames",
        flag="--upper-codebook-mask",
        metavar="N",
    )
    onset_mask_width: int = setting(
        0,
        Limit(int, 0, _MAX_FRAMES, graph_range=True),
        "also keep W frames on each side of detected onsets; 0 = off",
        flag="--onset-mask",
        metavar="W",
    )
    beat_mask_ms: float = setting(
        0.0,
        Limit(float, 0.0, _MAX_SECONDS),
        "also keep MS milliseconds after each beat (WaveBeat: needs wavebeat.onnx in the "
        "models folder); 0 = off",
        flag="--beat-mask",
        metavar="MS",
    )
    prefix_s: float = setting(
        0.0,
        Limit(float, 0.0, _MAX_SECONDS, graph_range=True),
        "keep the first S seconds",
        flag="--prefix",
        metavar="S",
    )
    suffix_s: float = setting(
        0.0,
        Limit(float, 0.0, _MAX_SECONDS, graph_range=True),
        "keep the last S seconds",
        flag="--suffix",
        metavar="S",
    )
    dropout: float = setting(
        0.0,
        Limit(float, 0.0, 1.0, graph_range=True),
        "drop this fraction of frames from the prompt, in [0, 1]",
        flag="--dropout",
        metavar="P",
    )

    def graph_inputs(self) -> dict[str, Any]:
        """`inputs` without the fields the single graph does not take."""
        return {k: v for k, v in self.inputs().items() if k not in HOST_ONLY_MASK_SETTINGS}

    def as_float32(self) -> MaskSettings:
        """The float fields rounded to float32, as the single graph's inputs hold them."""
        rounded = {
            name: float(np.float32(getattr(self, name)))
            for name, limit in self.limits().items()
            if limit.kind is float
        }
        return replace(self, **rounded)


def check_seed(seed: Any, where: str) -> int:
    """`seed` as a Python int, or ValueError "<where>: seed must be an int64, got ..."."""
    if (
        isinstance(seed, bool)
        or not isinstance(seed, int | np.integer)
        or not _INT64_MIN <= seed <= _INT64_MAX
    ):
        _fail(where, "seed", "be an int64", seed)
    return int(seed)


#: Intra-op threads a session may ask for: this many per CPU. More only adds switching (1000
#: hung onnxruntime's pool, 100000 grew memory without end).
THREADS_PER_CPU = 4


def max_threads() -> int:
    """The most intra-op threads a session may have: `THREADS_PER_CPU` x the CPUs."""
    return THREADS_PER_CPU * (os.cpu_count() or 1)


def check_threads(threads: Any, where: str, name: str = "threads") -> int | None:
    """`threads` (None: onnxruntime's choice) as an int in [1, `max_threads()`], or ValueError
    "<where>: <name> must be an int in [1, N] or None, got ..."; numpy ints taken."""
    if threads is None:
        return None
    limit = max_threads()
    if (
        isinstance(threads, bool)
        or not isinstance(threads, int | np.integer)
        or not 1 <= threads <= limit
    ):
        cpus = os.cpu_count() or 1
        _fail(
            where,
            name,
            f"be an int in [1, {limit}] ({THREADS_PER_CPU} per CPU, {cpus} CPUs) or None",
            threads,
        )
    return int(threads)
