"""Exported graphs in runtimes other than onnxruntime (docs/portable.md): OpenVINO's CPU plugin
(`OpenVINOSession`) and tract (`TractSession`), each behind the one method of an onnxruntime
session that our code calls, ``run(output_names, feed)``.

A graph that uses the vampnet_onnx ops runs in OpenVINO when it was exported with the bodies
inlined in their portable variant (``vampnet-onnx export --inline-op-bodies
--op-bodies-variant portable``): OpenVINO does not expand ONNX functions and computes float64
as float32, which the exact variant's arithmetic cannot take. Graphs that use none of the ops
(the transformers, the standard codec) run as they are.

tract (Sonos' ONNX runtime in Rust) has no ONNX `Loop`: it runs a step graph
(``export --step-graphs``) with the bodies inlined, which `Generator(path,
session=TractSession(path))` drives one run per step (docs/generation.md, "Step graphs").

Needs the ``portable`` extra (``pip install "vampnet-onnx[portable]"``); nothing else in the
package imports this module.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from . import ops
from .contracts import CONFIG_KEY, OP_BODIES_INLINED, OP_BODIES_KEY, OP_BODIES_VARIANT_KEY
from .ops_functions import checks_as_outputs
from .settings import MaskSettings, SamplingSettings

#: OpenVINO's CPU plugin holds int64 values in 32 bits: every int64 input (seeds, steps,
#: batch offsets, codes) must lie in this range, or the graph would compute with other values.
INT32_RANGE = (-(2**31), 2**31 - 1)

_REEXPORT = "vampnet-onnx export ... --inline-op-bodies --op-bodies-variant portable"


#: The settings a graph input may carry, by input name (`settings`' limits; a graph input is
#: never None, so no "None or" in the messages).
_LIMITS = {
    name: replace(limit, off=None)
    for name, limit in {**SamplingSettings.limits(), **MaskSettings.limits()}.items()
}


def check_settings(feed: Mapping[str, np.ndarray], where: str) -> None:
    """A ValueError for a setting in `feed` (a graph's input by name: temperature, top_k, top_p,
    mask_temperature, n_steps, step, the mask settings) outside its range, as `Generator` and
    `Vamp` check them: the in-graph checks of the bodies fail the run on onnxruntime, but
    OpenVINO runs past them (docs/portable.md, "Errors")."""
    for name, value in feed.items():
        value = np.asarray(value)
        if name in _LIMITS and value.size == 1:
            _LIMITS[name].check(name, value.reshape(()).item(), where)
    if "step" in feed and "n_steps" in feed:
        step, n_steps = (int(np.asarray(feed[n]).reshape(())) for n in ("step", "n_steps"))
        if not 0 <= step < n_steps:
            raise ValueError(f"{where}: step must be in [0, n_steps = {n_steps}), got {step}")


def _check_graph(path: Path) -> None:
    """A ValueError unless OpenVINO computes `path` as onnxruntime with the library would:
    no op nodes left, and inlined bodies of the portable variant."""
    model = onnx.load(str(path), load_external_data=False)
    if not any(o.domain == ops.DOMAIN for o in model.opset_import):
        meta = {p.key: p.value for p in model.metadata_props}
        inlined = meta.get(OP_BODIES_KEY) == OP_BODIES_INLINED
        if inlined and meta.get(OP_BODIES_VARIANT_KEY) != "portable":
            raise ValueError(
                f"OpenVINOSession: path must hold the portable variant of the op bodies "
                f"(OpenVINO computes float64 as float32, which the exact variant's arithmetic "
                f"cannot take), got '{path}' with the exact variant: re-export with {_REEXPORT}"
            )
        return
    raise ValueError(
        f"OpenVINOSession: path must be a graph with the op bodies inlined (OpenVINO neither "
        f"loads the op library nor expands ONNX functions), got '{path}', which has "
        f"vampnet_onnx nodes: re-export with {_REEXPORT}"
    )


class OpenVINOSession:
    """An exported graph compiled by OpenVINO for its CPU plugin, run as an onnxruntime
    session is: `run(output_names, feed)` -> a list of numpy arrays.

    path: a graph file (its external weights beside it). precision: OpenVINO's
    INFERENCE_PRECISION_HINT, "f32" by default (measured agreement in docs/portable.md);
    None keeps OpenVINO's own default (bf16 on CPUs with native bf16: faster, less exact).
    threads: the CPU plugin's inference threads (None: OpenVINO's default, every core)."""

    def __init__(
        self, path: str | os.PathLike, precision: str | None = "f32", threads: int | None = None
    ):
        try:
            import openvino
        except ImportError as error:
            raise ImportError(
                'OpenVINOSession needs OpenVINO: pip install "vampnet-onnx[portable]"'
            ) from error
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"OpenVINOSession: path must be a graph file, got '{path}'")
        if threads is not None and (
            isinstance(threads, bool) or int(threads) != threads or threads < 1
        ):
            raise ValueError(f"OpenVINOSession: threads must be an integer >= 1, got {threads!r}")
        _check_graph(path)
        config = {}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = openvino.Core()
        self.path = path
        self._compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._inputs = [port.get_any_name() for port in self._compiled.inputs]
        self._outputs = [port.get_any_name() for port in self._compiled.outputs]

    @property
    def input_names(self) -> list[str]:
        """The graph's inputs that OpenVINO kept (it drops inputs nothing reads)."""
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs `output_names` (None: all, in the graph's order) for `feed` (input name ->
        array; inputs OpenVINO dropped are ignored). int64 values must fit in int32
        (`INT32_RANGE`), and settings be in range (`check_settings`): a ValueError names the
        input otherwise."""
        names = self.output_names if output_names is None else list(output_names)
        unknown = [n for n in names if n not in self._outputs]
        if unknown:
            raise ValueError(
                f"OpenVINOSession.run: output_names must be among {self._outputs}, got {unknown}"
            )
        missing = [n for n in self._inputs if n not in feed]
        if missing:
            raise ValueError(
                f"OpenVINOSession.run: feed must hold {self._inputs}, missing {missing}"
            )
        check_settings(feed, "OpenVINOSession.run")
        low, high = INT32_RANGE
        inputs = {}
        for name in self._inputs:
            value = np.asarray(feed[name])
            if value.dtype == np.int64 and value.size and (value.min() < low or value.max() > high):
                bad = value.min() if value.min() < low else value.max()
                raise ValueError(
                    f"OpenVINOSession.run: {name} must be in [-2^31, 2^31 - 1] (OpenVINO's CPU "
                    f"plugin holds int64 in 32 bits), got {int(bad)}"
                )
            inputs[name] = value
        result = self._compiled(inputs)
        return [np.asarray(result[self._compiled.output(n)]) for n in names]


class TractSession:
    """The graph file `path` for tract, analysed and optimised for the shapes of each feed (one
    tract model per distinct set of input shapes and types, kept), run as an onnxruntime session
    is: `run(output_names, feed)`.

    tract must know every shape before a run, so the op bodies' input checks, which fail a run
    by a Reshape to a shape chosen by the data (`ops_functions.checks_as_outputs`), come out as
    extra outputs instead, and `run` raises ValueError with the check's message (house format,
    "MaskGitStep: step must be in [0, n_steps)") where one failed; checks on shapes alone fail
    while tract analyses the graph, with tract's error naming the check.

    Raises ImportError without the ``tract`` package, FileNotFoundError for a missing file,
    and tract's own error (tract.TractError: the node and the reason) for a graph that tract
    cannot load, or (at a run) analyse for the feed's shapes.
    """

    def __init__(self, path: str | Path):
        try:
            import tract
        except ImportError as err:
            raise ImportError(
                "TractSession: the tract package must be installed (pip install "
                "'vampnet-onnx[portable]'), got none"
            ) from err
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"TractSession: path must be an existing .onnx file, got '{path}'"
            )
        self.path = path
        model = onnx.load(str(path), load_external_data=False)
        # tract names an output after the node that makes it; the graph's names are the file's.
        self.output_names = [value.name for value in model.graph.output]
        rewritten, self._checks = checks_as_outputs(model)
        # The shapes come from each feed: with the file's symbolic ones tract analyses the
        # step graph but fails to run the bodies' arithmetic on shapes ("Rem: Undetermined
        # symbol in expression: max(1,4*time)"), and the symbolic shapes the file declares
        # for inner values (batch, time) would contradict concrete ones.
        del rewritten.graph.value_info[:]
        self._folder = tempfile.TemporaryDirectory(prefix="vampnet_onnx_tract_")
        self._file = Path(self._folder.name) / path.name
        onnx.save(rewritten, str(self._file))
        for location in _external_files(rewritten):
            _link_or_copy((path.parent / location).resolve(), self._file.parent / location)
        self._tract = tract
        model = tract.onnx().load(str(self._file))
        #: The graph's input names, in its order (tract runs inputs by position).
        self.input_names = [model.input_name(i) for i in range(model.input_count())]
        self._runnables: dict[tuple, object] = {}
        # A transformer's codes index its embeddings: tract aborts the process on an index out
        # of range (a Rust panic), so a graph with the transformer's configuration has its
        # codes checked first (onnxruntime fails such a run with an error).
        props = {p.key: p.value for p in rewritten.metadata_props}
        config = json.loads(props[CONFIG_KEY]) if CONFIG_KEY in props else None
        self._mask_token = int(config.get("mask_token", ops.MASK_TOKEN)) if config else None

    def _runnable(self, inputs: list[np.ndarray]):
        """tract's runnable model for inputs of these shapes and types, analysed once."""
        key = tuple((value.shape, value.dtype.str) for value in inputs)
        if key not in self._runnables:
            model = self._tract.onnx().load(str(self._file))
            for i, value in enumerate(inputs):
                model.set_input_fact(
                    i, ",".join([*map(str, value.shape), _TRACT_TYPES[value.dtype]])
                )
            for i in range(model.output_count()):
                model.set_output_fact(i, None)
            self._runnables[key] = model.into_model().into_runnable()
        return self._runnables[key]

    def run(
        self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The outputs `output_names` (None: all, in the graph's order) of one run on `feed`
        (input name -> array, every input of the graph), as onnxruntime's session.run; a
        ValueError with its message where an op body's input check fails."""
        missing = [name for name in self.input_names if name not in feed]
        if missing:
            raise ValueError(
                f"TractSession.run: feed must hold every input of the graph, got none for "
                f"{', '.join(missing)}"
            )
        unknown = [name for name in output_names or () if name not in self.output_names]
        if unknown:
            raise ValueError(
                f"TractSession.run: output_names must be among {self.output_names}, got "
                f"{', '.join(unknown)}"
            )
        inputs = [np.asarray(feed[name]) for name in self.input_names]
        for name, value in zip(self.input_names, inputs, strict=True):
            if value.dtype not in _TRACT_TYPES:
                allowed = ", ".join(sorted(str(dtype) for dtype in _TRACT_TYPES))
                raise ValueError(
                    f"TractSession.run: input '{name}' must be an array of one of {allowed}, "
                    f"got {value.dtype}"
                )
        if self._mask_token is not None and "codes" in feed:
            self._check_codes(np.asarray(feed["codes"]), feed.get("mask"))
        results = [result.to_numpy() for result in self._runnable(inputs).run(inputs)]
        by_name = dict(zip([*self.output_names, *self._checks], results, strict=True))
        failed = [message for name, message in self._checks.items() if not by_name[name].all()]
        if failed:
            raise ValueError(failed[0])
        return [by_name[name] for name in output_names or self.output_names]

    def _check_codes(self, codes: np.ndarray, mask: np.ndarray | None) -> None:
        """Refuses codes outside [0, mask token] (where `mask`, if given, is false: masked
        positions are replaced by the mask token in the graph)."""
        if not np.issubdtype(codes.dtype, np.integer):
            return  # tract's own type error names it
        bad = (codes < 0) | (codes > self._mask_token)
        where = ""
        if mask is not None and np.shape(mask) == codes.shape:
            bad &= ~np.asarray(mask, bool)
            where = " where mask is false"
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"TractSession.run: codes must be in [0, {self._mask_token}] (the mask token "
                f"{self._mask_token} included){where}, got {codes[index]} at "
                f"{list(index)}"
            )


#: tract's names of the element types of the graphs' inputs.
_TRACT_TYPES = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float16): "f16",
    np.dtype(np.float64): "f64",
    np.dtype(np.int64): "i64",
    np.dtype(np.int32): "i32",
    np.dtype(np.bool_): "bool",
}


def _link_or_copy(source: Path, target: Path) -> None:
    """`source` at `target` too: a hard link (tract refuses weights behind a symbolic link that
    leads out of the graph's folder), or where none can be made (another filesystem) a copy."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _external_files(model: onnx.ModelProto) -> set[str]:
    """The files, relative to the graph's, that hold `model`'s external weights."""
    return {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
