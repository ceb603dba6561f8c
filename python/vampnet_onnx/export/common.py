"""What every exporter shares: the opset rule, the torch export-and-check helper
(`export_torch_module`) and the one save path (`save_model`, with its external-data rule).
torch is imported only inside `export_torch_module`, so the graph builders that work on ONNX
files alone (`generation`, `vamp`) stay torch-free.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

DEFAULT_OPSET = 20
# Gelu(approximate="tanh") became a standard op at opset 20; below that the exporter writes
# the tanh formula out, which ORT still runs. Opsets under 18 lack the ops torch emits.
MIN_OPSET = 18
PRODUCER = "vampnet_onnx"
# Weights above this go to an external data file beside the graph. Protobuf cannot hold more
# than 2 GiB, and well below that onnxruntime loads external weights without a protobuf copy:
# a full-size 10-s vamp peaked at 4.08 GB instead of 5.32 GB, its sessions loaded in 2.7 s
# instead of 9.6 s, at the same speed (docs/architecture.md). Tiny graphs stay one file.
EXTERNAL_DATA_BYTES = 64 * 2**20


def check_opset(opset_version: int, where: str, name: str = "opset_version") -> int:
    """`opset_version` if it is an int in [`MIN_OPSET`, what the installed onnx knows], else
    ValueError "<where>: <name> must ..." (no "<where>: " when `where` is empty)."""
    prefix = f"{where}: " if where else ""
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset_version, bool) or not isinstance(opset_version, int):
        raise ValueError(f"{prefix}{name} must be an int, got {opset_version!r}")
    if opset_version < MIN_OPSET:
        raise ValueError(f"{prefix}{name} must be >= {MIN_OPSET}, got {opset_version}")
    if opset_version > newest:
        raise ValueError(
            f"{prefix}{name} must be at most {newest} (the installed onnx's newest), "
            f"got {opset_version}"
        )
    return opset_version


@dataclass(frozen=True)
class SavedModel:
    """A written graph: its file and its external weights file (None when stored inside)."""

    path: Path
    data_path: Path | None

    @property
    def files(self) -> list[Path]:
        return [self.path, *([self.data_path] if self.data_path else [])]

    @property
    def n_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


def weights_bytes(model: ir.Model) -> int:
    """Bytes of every initializer of `model`, subgraphs included."""
    return sum(
        value.const_value.nbytes
        for graph in model.graphs()
        for value in graph.initializers.values()
        if value.const_value is not None
    )


def save_model(model: ir.Model, path: str | Path, full_check: bool = False) -> SavedModel:
    """Write `model` to `path` and check the file with onnx.checker.

    Weights over `EXTERNAL_DATA_BYTES` go to ``<path>.data`` beside it, unless they are all
    read from one external data file in `path`'s folder already (a generation graph built from
    the transformer beside it): then the graph refers to that file (`shared_data_file`) and
    the weights are on disk once. The files appear only once written and checked (they are made
    in a temporary folder beside `path` and renamed into place), so a failed export leaves no
    broken model behind and an existing one intact.
    full_check: also run strict shape inference over the whole graph (not for graphs with our
    custom ops, which the checker cannot infer).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.producer_name = PRODUCER
    data_name = path.name + ".data"
    shared = shared_data_file(model, path.parent)
    external = shared is None and weights_bytes(model) > EXTERNAL_DATA_BYTES
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        # A graph that shares a data file is written beside it (the checker finds the data
        # beside the graph and refuses links), under a hidden name until checked.
        written = path.with_name(staging.name + ".onnx") if shared else staging / path.name
        ir.save(model, str(written), external_data=data_name if external else None)
        onnx.checker.check_model(str(written), full_check=full_check)
        data_path = path.with_name(data_name)
        if external:
            os.replace(staging / data_name, data_path)
        else:
            data_path.unlink(missing_ok=True)  # a stale one from a bigger model
            data_path = None
        os.replace(written, path)
    finally:
        written.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return SavedModel(path, data_path)


def data_files(graph: str | Path) -> list[Path]:
    """The external data files the graph file `graph` reads its weights from (its own
    ``<graph>.data``, or the transformer's that a generation graph shares), beside it."""
    graph = Path(graph)
    model = onnx.load(str(graph), load_external_data=False)
    names = {
        entry.value
        for tensor in _initializers(model.graph)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [graph.with_name(name) for name in sorted(names)]


def _initializers(graph: onnx.GraphProto):
    """The initializers of `graph` and of every subgraph (Loop and If bodies)."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attribute.g)
            for subgraph in attribute.graphs:
                yield from _initializers(subgraph)


def shared_data_file(model: ir.Model, folder: Path) -> str | None:
    """The name of the one external data file in `folder` that `model`'s large weights are
    read from (as loaded with onnx-ir, not yet in memory), when its in-memory weights stay
    under `EXTERNAL_DATA_BYTES`; else None."""
    names, inline = set(), 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                if Path(tensor.base_dir).resolve() != folder.resolve():
                    return None
                names.add(str(tensor.location))
            elif tensor is not None:
                inline += tensor.nbytes
    if len(names) != 1 or inline > EXTERNAL_DATA_BYTES:
        return None
    return names.pop()


def attach_op_bodies(path: str | Path, inline: bool = False, variant: str = "exact") -> bool:
    """Give the graph file `path` the standard-op bodies of the vampnet_onnx ops it uses
    (`with_op_bodies`), in place and atomically; its external weights are left as they are.
    Returns False (and leaves the file alone) for a graph that uses none of the ops."""
    path = Path(path)
    model = with_op_bodies(onnx.load(str(path), load_external_data=False), inline, variant)
    if model is None:
        return False
    staging = path.with_name(f".{path.name}.bodies")
    try:
        onnx.save(model, str(staging))
        onnx.checker.check_model(str(staging))
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return True


def with_op_bodies(
    model: onnx.ModelProto, inline: bool = False, variant: str = "exact"
) -> onnx.ModelProto | None:
    """`model` given the standard-op bodies of the vampnet_onnx ops it uses
    (`ops_functions.attach_functions`: model-local functions, so that runtimes without the op
    library run them, while onnxruntime with the library keeps the kernels) and the metadata
    entry `OP_BODIES_KEY` ("1"). inline: the bodies inlined instead
    (`ops_functions.inline_functions`: no node of the domain is left, for runtimes that do not
    expand model-local functions; the kernels never run), `OP_BODIES_KEY` "inlined". variant:
    the bodies' variant (`ops_functions.VARIANTS`), recorded as `OP_BODIES_VARIANT_KEY`. None
    for a graph that uses none of the ops."""
    from .. import ops
    from ..contracts import (
        OP_BODIES_FUNCTIONS,
        OP_BODIES_INLINED,
        OP_BODIES_KEY,
        OP_BODIES_VARIANT_KEY,
    )
    from ..ops_functions import attach_functions, inline_functions

    if not any(f.domain == ops.DOMAIN for f in model.opset_import):
        return None
    model = (inline_functions if inline else attach_functions)(model, variant)
    keys = (OP_BODIES_KEY, OP_BODIES_VARIANT_KEY)
    kept = [p for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    value = OP_BODIES_INLINED if inline else OP_BODIES_FUNCTIONS
    model.metadata_props.add(key=OP_BODIES_KEY, value=value)
    model.metadata_props.add(key=OP_BODIES_VARIANT_KEY, value=variant)
    return model


def stamp_metadata(path: str | Path, props: dict[str, str]) -> None:
    """Add (or replace) the metadata entries `props` of the graph file `path`, in place and
    atomically; its external weights file, if any, is left as it is."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    staging = path.with_name(f".{path.name}.stamp")
    try:
        onnx.save(model, str(staging))
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_exporter(verbose: bool):
    """Hide the exporter's informational warnings (missing torchvision ops, deprecations)."""
    if verbose:
        yield
        return
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_torch_module(
    module,
    example: tuple,
    names: tuple[list[str], list[str]],
    dynamic_shapes: dict[str, Any],
    path: str | Path,
    metadata: tuple[str, dict[str, Any]],
    opset_version: int = DEFAULT_OPSET,
    verbose: bool = False,
    where: str = "export_torch_module",
) -> SavedModel:
    """Export an eval-mode torch module with torch.export to `path`, store a JSON metadata
    entry, save (`save_model`) and fully check it.

    Args:
        module: the torch module; its parameters become the graph's initializers.
        example: example inputs for tracing (sizes other than 0 and 1, which torch.export
            would specialise).
        names: (input names, output names).
        dynamic_shapes: torch.export's dynamic shapes, by input name.
        metadata: (key, JSON-able dict) written into the graph's metadata.
        opset_version: ONNX opset, >= `MIN_OPSET`.
        verbose: show the exporter's own messages.
        where: who reports a bad `opset_version`.
    """
    import torch

    check_opset(opset_version, where)
    with _quiet_exporter(verbose), torch.no_grad():
        program = torch.onnx.export(
            module.eval().requires_grad_(False),
            example,
            input_names=names[0],
            output_names=names[1],
            dynamic_shapes=dynamic_shapes,
            opset_version=opset_version,
            dynamo=True,
            verbose=verbose,
        )
    key, config = metadata
    program.model.metadata_props[key] = json.dumps(config, sort_keys=True)
    return save_model(program.model, path, full_check=True)
