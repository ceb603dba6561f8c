"""`Generator`: VampNet's iterative generation from an exported graph (numpy + onnxruntime).

Two modes, chosen by the file given:
- a generation graph (``*.generate.onnx``, `export.generation`): one `run` does every step
  inside ONNX Runtime;
- a plain transformer graph (``codes -> logits``): the same step loop driven from Python, one
  `run` of the transformer plus one `_kernels.mask_git_step` per step. Same tokens as the
  single graph for the same inputs and seed; for comparison and debugging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .contracts import (
    CONFIG_KEY,
    GENERATION,
    GENERATION_KEY,
    SLICE_DEFAULTS,
    TRANSFORMER,
    metadata,
)
from .ops import MASK_TOKEN
from .runtime import create_session, ort, run
from .settings import SamplingSettings, check_seed

_WHERE = "Generator.generate"
_DEFAULTS = SamplingSettings()


class Generator:
    """Generates VampNet codes from an exported coarse or coarse-to-fine graph.

    path: a generation graph or a transformer graph (see the module doc).
    providers: onnxruntime execution providers (default CPU).
    threads: intra-op threads of the session and of the Python-loop kernels (default: ORT's).
    batch_coupled: Python-loop mode only: count the schedule's N0 over the whole batch as
    upstream VampNet does (a generation graph has this fixed at export).
    python_ops, device: passed to `create_session` (device: "cpu" or "cuda"; asking for CUDA
    where onnxruntime cannot use it is an error, not a CPU fallback).
    """

    #: Who reports a bad setting (also for `pipeline.Vamp`, which generates through this).
    WHERE = _WHERE

    def __init__(
        self,
        path: str | Path,
        providers: Sequence | None = None,
        threads: int | None = None,
        batch_coupled: bool | None = None,
        python_ops: bool | None = None,
        device: str | None = None,
    ):
        self.session: ort.InferenceSession = create_session(
            path,
            providers=list(providers) if providers else None,
            intra_op_threads=threads,
            python_ops=python_ops,
            device=device,
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config: dict = metadata(meta, CONFIG_KEY, "Generator", "path", repr(str(path)))
        input_names = [i.name for i in self.session.get_inputs()]
        defaults = {i.name for i in self.session.get_overridable_initializers()}
        #: Whether the graph runs a slice of the steps (first_step, last_step inputs): graphs
        #: exported before those inputs existed run every step in one call.
        self.sliceable = set(SLICE_DEFAULTS) <= defaults
        if input_names == GENERATION.required_input_names:
            self.mode = "graph"
            settings = metadata(meta, GENERATION_KEY, "Generator", "path", repr(str(path)))
            exported_coupling = bool(settings.get("batch_coupled", False))
            if batch_coupled is not None and batch_coupled != exported_coupling:
                raise ValueError(
                    f"Generator: batch_coupled must match the graph's export setting "
                    f"{exported_coupling}, got {batch_coupled}"
                )
            self.batch_coupled = exported_coupling
        elif input_names == TRANSFORMER.input_names:
            self.mode = "python-loop"
            self.batch_coupled = bool(batch_coupled)
        else:
            required = GENERATION.required_input_names
            missing = [n for n in required if n not in input_names]
            hint = (
                f" (missing {', '.join(missing)}: exported by an older vampnet-onnx? export it "
                "again)"
                if set(input_names) < set(required)
                else ""
            )
            raise ValueError(
                f"Generator: path must hold a generation or transformer graph, got "
                f"{str(path)!r} with inputs {input_names}{hint}"
            )
        self.threads = threads or 1

    @property
    def n_codebooks(self) -> int:
        return int(self.config["n_codebooks"])

    @property
    def n_conditioning_codebooks(self) -> int:
        return int(self.config["n_conditioning_codebooks"])

    @property
    def mask_token(self) -> int:
        return int(self.config.get("mask_token", MASK_TOKEN))

    def generate(
        self,
        codes: np.ndarray,
        mask: np.ndarray,
        steps: int = _DEFAULTS.n_steps,
        temperature: float = _DEFAULTS.temperature,
        top_k: int | None = _DEFAULTS.top_k,
        top_p: float | None = _DEFAULTS.top_p,
        mask_temperature: float = _DEFAULTS.mask_temperature,
        seed: int | Sequence[int] = 0,
        progress: bool = False,
        batch_offset: int | Sequence[int] = 0,
        on_steps: Callable[[int], Any] | None = None,
    ) -> np.ndarray:
        """Fill the masked positions of `codes`.

        codes: integer [B, C, T] (C = the model's codebooks), each in [0, 1024) where mask is
        false; values under the mask are ignored. mask: bool (or 0/1) [B, C, T], true =
        generate, never true in the conditioning codebooks (c2f's first 4). steps,
        temperature, top_k, top_p, mask_temperature: `settings.SamplingSettings` (steps is its
        n_steps: VampNet runs 36 coarse, 2 coarse-to-fine; temperature 0 = argmax; top_k 0 and
        top_p 1 or None = off; mask_temperature scales the Gumbel noise on the re-masking
        confidences). seed: any int64. progress: a tqdm bar over the steps. batch_offset: the
        random-stream index of item 0, in [0, 2**32 - B]: item b draws the numbers of item
        batch_offset + b, so chunks of a longer piece generated one call each can draw as one
        batch would (docs/generation.md). seed and batch_offset may instead be sequences of B
        values, item b drawing with seed[b] the numbers of item batch_offset[b] (each in
        [0, 2**32 - 1]): pieces with their own seeds and stream indexes in one batch, each
        item as its own one-item call would be (with the per-item schedule). on_steps: called
        with the number of steps done after each step (e.g. a caller's own progress bar's
        update).
        With `progress` or `on_steps` a generation graph runs one step per call (its slice
        inputs, docs/generation.md), which gives the same tokens as one call; otherwise it
        runs every step in one call.
        Returns int64 [B, C, T] with every position filled; unmasked positions unchanged.
        """
        codes, mask = self._check_codes_and_mask(codes, mask)
        settings = SamplingSettings.from_public(
            _WHERE,
            steps=steps,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            mask_temperature=mask_temperature,
        ).inputs()
        settings |= self._check_keys(seed, batch_offset, codes.shape[0])
        stepwise = progress or on_steps is not None
        if self.mode == "graph" and not (stepwise and self.sliceable):
            feed = {"codes": codes, "mask": mask, **GENERATION.feed(**settings)}
            return run(self.session, ["codes_out"], feed)[0]
        steps = _step_counter(settings["n_steps"], progress, on_steps)
        if self.mode == "graph":
            return self._graph_slices(codes, mask, settings, steps)
        return self._python_loop(codes, mask, settings, steps)

    def _graph_slices(self, codes, mask, settings, steps) -> np.ndarray:
        """The generation graph one step per run: each run continues from the codes and mask
        the last one returned, with N0 counted once here, as the single run counts it."""
        feed = {"codes": codes, "mask": mask, **GENERATION.feed(**settings)}
        n_masked_start = mask.sum(axis=(1, 2)).astype(np.int64)
        for step in steps:
            feed |= GENERATION.feed(
                first_step=step, last_step=step + 1, n_masked_start=n_masked_start
            )
            feed["codes"], feed["mask"] = run(
                self.session,
                ["codes_out", "mask_out"],
                feed,
                release_memory=step + 1 == settings["n_steps"],
            )
        return feed["codes"]

    def _python_loop(self, codes, mask, settings, steps) -> np.ndarray:
        from . import _kernels

        n_steps = settings.pop("n_steps")
        n_masked_start = mask.sum(axis=(1, 2)).astype(np.int64)
        model_input = np.where(mask, self.mask_token, codes)
        for step in steps:
            logits = run(
                self.session,
                ["logits"],
                {"codes": model_input},
                release_memory=step + 1 == n_steps,
            )[0]
            codes, mask, model_input = _kernels.mask_git_step(
                logits,
                codes,
                mask,
                step,
                n_steps,
                n_masked_start=n_masked_start,
                batch_coupled=self.batch_coupled,
                threads=self.threads,
                **settings,
            )
        return codes

    @staticmethod
    def _check_keys(seed, batch_offset, batch: int) -> dict[str, Any]:
        """seed and batch_offset as ints, or as int64 [B] arrays where given per item."""
        per_item = {}
        for name, value in (("seed", seed), ("batch_offset", batch_offset)):
            if isinstance(value, int | np.integer):
                continue
            values = list(value) if isinstance(value, Sequence | np.ndarray) else []
            if len(values) != batch or not all(
                isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values
            ):
                raise ValueError(
                    f"{_WHERE}: {name} must be an int or a sequence of B = {batch} ints, got "
                    f"{value!r}"
                )
            per_item[name] = values
        seeds = [check_seed(v, _WHERE) for v in per_item.get("seed", [seed])]
        keys = {"seed": np.array(seeds, np.int64) if "seed" in per_item else seeds[0]}
        if "batch_offset" in per_item:
            bad = [int(v) for v in per_item["batch_offset"] if not 0 <= v <= 2**32 - 1]
            if bad:
                raise ValueError(
                    f"{_WHERE}: batch_offset must hold ints in [0, 2**32 - 1], got {bad[0]}"
                )
            keys["batch_offset"] = np.array(per_item["batch_offset"], np.int64)
        elif isinstance(batch_offset, bool) or not 0 <= batch_offset <= 2**32 - batch:
            raise ValueError(
                f"{_WHERE}: batch_offset must be an int in [0, 2**32 - B = {2**32 - batch}], "
                f"got {batch_offset!r}"
            )
        else:
            keys["batch_offset"] = int(batch_offset)
        return keys

    def _check_codes_and_mask(self, codes, mask) -> tuple[np.ndarray, np.ndarray]:
        codes, mask = np.asarray(codes), np.asarray(mask)
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"{_WHERE}: codes must be an integer array, got {codes.dtype}")
        if codes.ndim != 3 or codes.shape[1] != self.n_codebooks:
            raise ValueError(
                f"{_WHERE}: codes must have shape [B, {self.n_codebooks}, T], "
                f"got {list(codes.shape)}"
            )
        if mask.shape != codes.shape:
            raise ValueError(
                f"{_WHERE}: mask must have the shape of codes {list(codes.shape)}, "
                f"got {list(mask.shape)}"
            )
        if mask.dtype != np.bool_:
            if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
                raise TypeError(
                    f"{_WHERE}: mask must be bool or 0/1 integers, got {mask.dtype} values "
                    f"{np.unique(mask)[:5].tolist()}"
                )
            mask = mask.astype(bool)
        ncc = self.n_conditioning_codebooks
        if mask[:, :ncc].any():
            b, c, t = np.argwhere(mask[:, :ncc])[0]
            raise ValueError(
                f"{_WHERE}: mask must be false in the {ncc} conditioning codebooks, "
                f"got true at [{b}, {c}, {t}]"
            )
        vocab = self.mask_token
        bad = ~mask & ((codes < 0) | (codes >= vocab))
        if bad.any():
            b, c, t = np.argwhere(bad)[0]
            raise ValueError(
                f"{_WHERE}: codes must be in [0, {vocab}) where mask is false, "
                f"got {codes[b, c, t]} at [{b}, {c}, {t}]"
            )
        # Under the mask any value is ignored; keep the arrays the ops accept.
        return np.where(mask, 0, codes).astype(np.int64), np.ascontiguousarray(mask)


def _step_counter(
    n_steps: int, progress: bool, on_steps: Callable[[int], Any] | None
) -> Iterator[int]:
    """0 .. n_steps - 1, ticking a tqdm bar (`progress`) and `on_steps` after each step."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_steps, desc="generate", unit="step")
    try:
        for step in range(n_steps):
            yield step
            if bar is not None:
                bar.update()
            if on_steps is not None:
                on_steps(1)
    finally:
        if bar is not None:
            bar.close()
