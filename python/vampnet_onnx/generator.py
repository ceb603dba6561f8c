"""`Generator`: VampNet's iterative generation from an exported graph (numpy + onnxruntime).

Three modes, chosen by the file given:
- a generation graph (``*.generate.onnx``, `export.generation`): one `run` does every step
  inside ONNX Runtime;
- a step graph (``*.step.onnx``, ``export --step-graphs``): one iteration of the generation
  graph's loop, run once per step from Python, each run continuing from the codes and mask the
  last returned. Same tokens as the generation graph; for runtimes without ONNX's `Loop`
  (tract), whose session `Generator` takes in place of onnxruntime's (``session=``);
- a plain transformer graph (``codes -> logits``): the same step loop driven from Python, one
  `run` of the transformer plus one `_kernels.mask_git_step` per step. Same tokens as the
  single graph for the same inputs and seed; for comparison and debugging. With
  ``io_binding=True`` each step is instead one bound run of the transformer and one of a
  one-node `MaskGitStep` graph, over buffers that stay where the session computes (the GPU's
  memory on CUDA), and on CUDA the transformer's runs can be one captured CUDA graph
  (``cuda_graph=True``); docs/generation.md, "The Python loop on a GPU".
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
from onnx import helper

from . import ops
from .contracts import (
    CONFIG_KEY,
    GENERATION,
    GENERATION_KEY,
    GENERATION_STEP,
    SLICE_DEFAULTS,
    TRANSFORMER,
    metadata,
)
from .ops import MASK_TOKEN
from .runtime import create_session, device_providers, ort, run, run_bound
from .settings import SamplingSettings, check_seed

_WHERE = "Generator.generate"
_DEFAULTS = SamplingSettings()


class Generator:
    """Generates VampNet codes from an exported coarse or coarse-to-fine graph.

    path: a generation graph, a step graph or a transformer graph (see the module doc).
    providers: onnxruntime execution providers (default CPU).
    threads: intra-op threads of the session and of the Python-loop kernels (default: ORT's).
    batch_coupled: Python-loop mode only: count the schedule's N0 over the whole batch as
    upstream VampNet does (a generation graph has this fixed at export).
    python_ops, device: passed to `create_session` (device: "cpu" or "cuda"; asking for CUDA
    where onnxruntime cannot use it is an error, not a CPU fallback).
    io_binding: Python-loop mode only: run each step as bound runs of the transformer and of a
    one-node MaskGitStep graph, keeping codes, mask and logits on the session's device
    between them (same tokens as the plain loop).
    cuda_graph: Python-loop mode on device "cuda" only (implies io_binding): run the
    transformer as a CUDA graph, captured at its second run and replayed after, one graph per
    codes shape. Neither CUDA path has run on a GPU in this project's tests yet (tests/gpu
    checks them), and each warns so.
    session: for a generation or step graph, what runs it instead of an onnxruntime session:
    any object with ``run(output_names, feed) -> list of arrays`` (onnxruntime's signature),
    e.g. `portable.OpenVINOSession` or `portable.TractSession` (docs/portable.md). path's
    metadata and inputs are then read from the file. Not with providers, python_ops, device,
    io_binding or cuda_graph, which set up onnxruntime's session.
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
        io_binding: bool = False,
        cuda_graph: bool = False,
        session: Any = None,
    ):
        for name, value in (("io_binding", io_binding), ("cuda_graph", cuda_graph)):
            if not isinstance(value, bool):
                raise TypeError(f"Generator: {name} must be a bool, got {value!r}")
        if session is not None:
            onnxruntime_options = {
                "providers": providers,
                "python_ops": python_ops,
                "device": device,
                "io_binding": io_binding or None,
                "cuda_graph": cuda_graph or None,
            }
            given = {k: v for k, v in onnxruntime_options.items() if v is not None}
            if given or not callable(getattr(session, "run", None)):
                raise ValueError(
                    "Generator: session must be an object with run(output_names, feed) and "
                    "come without providers, python_ops, device, io_binding and cuda_graph, "
                    f"got {type(session).__name__} with {given}"
                )
        if cuda_graph:
            if device != "cuda" or providers:
                raise ValueError(
                    f"Generator: cuda_graph needs device='cuda' (and no providers), got "
                    f"device={device!r}, providers={providers}"
                )
            providers = device_providers(
                "cuda", "Generator", cuda_options={"enable_cuda_graph": "1"}
            )
            device = None
        #: Whether `session` is the caller's (run with its own run()) rather than onnxruntime's.
        self.foreign_session = session is not None
        if session is None:
            self.session: Any = create_session(
                path,
                providers=list(providers) if providers else None,
                intra_op_threads=threads,
                python_ops=python_ops,
                device=device,
            )
            meta = self.session.get_modelmeta().custom_metadata_map
            input_names = [i.name for i in self.session.get_inputs()]
            defaults = {i.name for i in self.session.get_overridable_initializers()}
        else:
            self.session = session
            meta, input_names, defaults = _graph_interface(path)
        self.config: dict = metadata(meta, CONFIG_KEY, "Generator", "path", repr(str(path)))
        #: Whether the graph runs a slice of the steps (first_step, last_step inputs): graphs
        #: exported before those inputs existed run every step in one call.
        self.sliceable = set(SLICE_DEFAULTS) <= defaults
        if input_names in (GENERATION.required_input_names, GENERATION_STEP.input_names):
            self.mode = "graph" if input_names == GENERATION.required_input_names else "step-graph"
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
                f"Generator: path must hold a generation, step or transformer graph, got "
                f"{str(path)!r} with inputs {input_names}{hint}"
            )
        if self.foreign_session and self.mode == "python-loop":
            raise ValueError(
                f"Generator: session must come with a generation or step graph, got "
                f"{str(path)!r}, a transformer graph (its loop runs our kernels)"
            )
        self.threads = threads or 1
        self.io_binding = io_binding or cuda_graph
        self._bound: _BoundLoop | None = None
        if self.io_binding:
            if self.mode != "python-loop":
                raise ValueError(
                    "Generator: io_binding and cuda_graph must be False for a generation or "
                    "step graph (they drive a transformer graph's Python loop), got "
                    f"io_binding={io_binding}, cuda_graph={cuda_graph} for {str(path)!r}"
                )
            self._bound = _BoundLoop(self, threads, python_ops, cuda_graph)

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
        runs every step in one call. A step graph always runs one step per call.
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
            if self.foreign_session:
                return self.session.run(["codes_out"], feed)[0]
            return run(self.session, ["codes_out"], feed)[0]
        steps = _step_counter(settings["n_steps"], progress, on_steps)
        if self.mode in ("graph", "step-graph"):
            return self._step_runs(codes, mask, settings, steps)
        if self._bound is not None:
            return self._bound.generate(codes, mask, settings, steps)
        return self._python_loop(codes, mask, settings, steps)

    def _step_runs(self, codes, mask, settings, steps) -> np.ndarray:
        """The generation graph (one slice of its steps per run) or the step graph, one run
        per step: each run continues from the codes and mask the last one returned, with N0
        counted once here, as the single run counts it."""
        schema = GENERATION if self.mode == "graph" else GENERATION_STEP
        n_masked_start = mask.sum(axis=(1, 2)).astype(np.int64)
        feed = {"codes": codes, "mask": mask}
        feed |= schema.feed(**settings, n_masked_start=n_masked_start)
        outputs = ["codes_out", "mask_out"]
        for step in steps:
            if self.mode == "graph":
                feed |= GENERATION.feed(first_step=step, last_step=step + 1)
            else:
                feed |= GENERATION_STEP.feed(step=step)
            if self.foreign_session:
                feed["codes"], feed["mask"] = self.session.run(outputs, feed)
            else:
                last = step + 1 == settings["n_steps"]
                feed["codes"], feed["mask"] = run(self.session, outputs, feed, release_memory=last)
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


def _graph_interface(path: str | Path) -> tuple[dict[str, str], list[str], set[str]]:
    """(metadata, required input names, names of inputs with defaults) of the graph file
    `path`, read without its weights: what `Generator` asks an onnxruntime session for."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Generator: path must be an existing .onnx file, got '{path}'")
    model = onnx.load(str(path), load_external_data=False)
    initializers = {tensor.name for tensor in model.graph.initializer}
    names = [value.name for value in model.graph.input]
    return (
        {prop.key: prop.value for prop in model.metadata_props},
        [name for name in names if name not in initializers],
        {name for name in names if name in initializers},
    )


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


def _step_model(logits_type: int, batch_coupled: bool) -> onnx.ModelProto:
    """`MaskGitStep` alone as a graph, with the op's port names as the graph's (its logits of
    `logits_type`, the transformer's output type): the step of `_BoundLoop`."""
    schema = ops.MASK_GIT_STEP
    bct = ["batch", "codebooks", "time"]
    shapes = {
        "logits": ["batch", "time", "predicted", "vocab"],
        "n_masked_start": ["batch"],
        # A scalar, or one value per item.
        "seed": None,
        "batch_offset": None,
        **dict.fromkeys(["codes", "mask", *schema.output_names], bct),
    }

    def values(ports: tuple[ops.Port, ...]) -> list[onnx.ValueInfoProto]:
        return [
            helper.make_tensor_value_info(
                port.name,
                logits_type if port.name == "logits" else port.types[0],
                shapes.get(port.name, []),
            )
            for port in ports
        ]

    node = schema.make_node(
        schema.input_names, schema.output_names, batch_coupled=int(batch_coupled)
    )
    graph = helper.make_graph(
        [node], "mask_git_step", values(schema.inputs), values(schema.outputs)
    )
    # IR version 10: what onnxruntime 1.21, the oldest release the op library supports, reads.
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), ops.opset_import()], ir_version=10
    )


class _BoundLoop:
    """The Python loop over bound buffers (`Generator(io_binding=True)`).

    Per codes shape [B, C, T], buffers on the session's device, reused by every call of that
    shape: the model input, the logits [B, T, P, V], and two each of codes and mask, which
    the steps use in turn (a step reads one pair and writes the other, and the next model
    input). A step is one bound run of the transformer (model input -> logits) and one of
    `_step_model` (logits, codes, mask -> the other codes and mask, model input); the
    scalars are bound from host memory, where the op reads them. Only the final codes are
    copied to the host. Without a CUDA graph only the last shape's buffers are kept. With
    one, every buffer the transformer sees keeps its address, as a replay needs: each shape
    gets its own graph, and its buffers live as long as the generator.
    """

    def __init__(
        self, generator: Generator, threads: int | None, python_ops: bool | None, cuda_graph: bool
    ):
        transformer = generator.session
        self.transformer = transformer
        self.device = "cuda" if "CUDAExecutionProvider" in transformer.get_providers() else "cpu"
        if cuda_graph or self.device == "cuda":
            warnings.warn(
                "Generator: the IO-binding loop on CUDA (io_binding, cuda_graph) has not yet "
                "run on a GPU in vampnet-onnx's tests; compare its codes with the plain loop's "
                "(tests/gpu does)",
                RuntimeWarning,
                stacklevel=3,
            )
        [logits] = transformer.get_outputs()
        self.logits_type = np.float16 if logits.type == "tensor(float16)" else np.float32
        predicted = generator.n_codebooks - generator.n_conditioning_codebooks
        self.logits_tail = (predicted, generator.mask_token)
        self.step = create_session(
            _step_model(
                helper.np_dtype_to_tensor_dtype(np.dtype(self.logits_type)),
                generator.batch_coupled,
            ),
            intra_op_threads=threads,
            python_ops=python_ops,
            device=self.device,
        )
        self.cuda_graph = cuda_graph
        self.mask_token = generator.mask_token
        self._by_shape: dict[tuple[int, ...], SimpleNamespace] = {}

    def _new(self, shape, dtype) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, 0)

    def _buffers(self, shape: tuple[int, ...]) -> SimpleNamespace:
        if shape in self._by_shape:
            return self._by_shape[shape]
        if not self.cuda_graph:
            self._by_shape.clear()
        batch, _, time = shape
        buffers = SimpleNamespace(
            model_input=self._new(shape, np.int64),
            logits=self._new((batch, time, *self.logits_tail), self.logits_type),
            codes=[self._new(shape, np.int64) for _ in range(2)],
            mask=[self._new(shape, np.bool_) for _ in range(2)],
            # onnxruntime reserves graph id 0.
            graph_id=len(self._by_shape) + 1 if self.cuda_graph else None,
        )
        buffers.forward = self.transformer.io_binding()
        buffers.forward.bind_ortvalue_input("codes", buffers.model_input)
        buffers.forward.bind_ortvalue_output("logits", buffers.logits)
        buffers.steps = []
        for read, write in ((0, 1), (1, 0)):
            binding = self.step.io_binding()
            binding.bind_ortvalue_input("logits", buffers.logits)
            binding.bind_ortvalue_input("codes", buffers.codes[read])
            binding.bind_ortvalue_input("mask", buffers.mask[read])
            binding.bind_ortvalue_output("codes_out", buffers.codes[write])
            binding.bind_ortvalue_output("mask_out", buffers.mask[write])
            binding.bind_ortvalue_output("model_input", buffers.model_input)
            buffers.steps.append(binding)
        self._by_shape[shape] = buffers
        return buffers

    def generate(self, codes, mask, settings, steps) -> np.ndarray:
        """`Generator.generate`'s loop: codes int64 and mask bool [B, C, T], settings its
        checked inputs (n_steps and the keys included), steps its step counter."""
        buffers = self._buffers(codes.shape)
        buffers.model_input.update_inplace(np.where(mask, self.mask_token, codes))
        buffers.codes[0].update_inplace(codes)
        buffers.mask[0].update_inplace(mask)
        n_steps = settings["n_steps"]
        # Kept referenced until the loop ends: a binding may read the arrays in place.
        host = ops.MASK_GIT_STEP.feed(
            **settings, n_masked_start=mask.sum(axis=(1, 2)).astype(np.int64)
        )
        for binding in buffers.steps:
            for name, value in host.items():
                binding.bind_cpu_input(name, value)
        read = 0
        for step in steps:
            last = step + 1 == n_steps
            host["step"] = np.array(step, np.int64)
            buffers.steps[read].bind_cpu_input("step", host["step"])
            run_bound(
                self.transformer,
                buffers.forward,
                release_memory=last,
                graph_id=buffers.graph_id,
            )
            run_bound(self.step, buffers.steps[read], release_memory=last)
            read = 1 - read
        # A CPU OrtValue's numpy() is a view of the buffer, which the next call overwrites.
        return buffers.codes[read].numpy().copy()
