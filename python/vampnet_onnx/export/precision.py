"""Precision passes over exported transformers: int8 weights for CPUs, fp16 for GPUs.

``int8``: onnxruntime's dynamic quantization (`onnxruntime.quantization.quantize_dynamic`, a
maintained quantizer; none is written here) of every MatMul whose weight is a constant — the
QKV, output and feed-forward projections and the classifier — with signed 8-bit weights, one
scale per output channel, and activations quantized per call (`DynamicQuantizeLinear`:
unsigned 8 bits, one scale per tensor, computed at run time, so no calibration data). The
attention's own products (queries x keys, weights x values) have no constant operand and stay
float32, as do the embedding table (a Gather), the norms, the relative position bias and the
softmax. Why these choices, and what they cost in accuracy: docs/precision.md.

``fp16``: onnxconverter-common's float16 conversion (a maintained converter): weights and
activations in float16, except where accuracy needs float32 — the RMS norms' reductions
(`ReduceMean`, `Pow`, `Sqrt`) and the attention softmax — with the graph's input and output
types kept (`keep_io_types`), so the logits handed to the ops are float32. It runs on ONNX
Runtime's CPU provider too (slowly), which is where its numerics are tested.

The generation graph is built from the converted transformer as from the float one, so the
sampling and re-masking ops see float32 logits and draw exactly as before.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import onnx
import onnx_ir as ir

from ..contracts import CONFIG_KEY, PRECISIONS
from .common import save_model

#: Ops kept in float32 by the fp16 conversion: the norms' reductions and the softmax.
FP16_FLOAT32_OPS = ("ReduceMean", "Pow", "Sqrt", "Softmax")


def check_precision(precision: str, where: str, name: str = "precision") -> str:
    """`precision` if it is one of `PRECISIONS`, else ValueError "<where>: <name> must ..."."""
    if precision not in PRECISIONS:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def convert_transformer(
    path: str | Path, precision: str, out_path: str | Path | None = None
) -> Path:
    """An exported fp32 transformer graph -> its `precision` version ("int8" or "fp16"),
    written to `out_path` (default: replace `path`) through the one save path, with the
    config's "precision" set."""
    check_precision(precision, "convert_transformer")
    if precision == "int8":
        return quantize_transformer(path, out_path)
    if precision == "fp16":
        return to_float16(path, out_path)
    raise ValueError(f"convert_transformer: precision must not be fp32 here, got {precision!r}")


def to_float16(path: str | Path, out_path: str | Path | None = None) -> Path:
    """An exported transformer graph (fp32) -> its fp16 version (module doc), written to
    `out_path` (default: replace `path`); the config's "precision" becomes "fp16"."""
    from onnxconverter_common import float16

    path = Path(path)
    out_path = Path(out_path) if out_path is not None else path
    with warnings.catch_warnings():
        # It warns for every weight below float16's smallest normal number, which it clamps to
        # +-1e-7; the accuracy this costs is measured (docs/precision.md).
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(
            onnx.load(str(path)),
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP16_FLOAT32_OPS],
        )
    converted = ir.from_proto(model)
    converted.metadata_props[CONFIG_KEY] = _with_precision(
        converted.metadata_props[CONFIG_KEY], "fp16"
    )
    save_model(converted, out_path)
    return out_path


def _with_precision(config_json: str, precision: str) -> str:
    return json.dumps({**json.loads(config_json), "precision": precision}, sort_keys=True)


def quantize_transformer(path: str | Path, out_path: str | Path | None = None) -> Path:
    """An exported transformer graph (fp32, `export.transformer`) -> its int8 version.

    out_path: where to write it (default: replace `path`). The file appears only once
    written; its metadata is the source's with the config's "precision" set to "int8".
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(path)
    out_path = Path(out_path) if out_path is not None else path
    staging = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}."))
    try:
        written = staging / out_path.name
        # The quantizer logs a suggestion to pre-process the model on the root logger. It is
        # not taken: the figures in docs/precision.md are without that pre-processing.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                path,
                written,
                per_channel=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                # Only weight products: the attention's activation x activation MatMuls stay fp32.
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            root.setLevel(level)
        # The transformer's config (CONFIG_KEY) records the precision; the rest of the
        # metadata is the source's.
        source = onnx.load(str(path), load_external_data=False).metadata_props
        props = {prop.key: prop.value for prop in source}
        props[CONFIG_KEY] = _with_precision(props[CONFIG_KEY], "int8")
        model = ir.load(str(written))
        model.metadata_props.clear()
        model.metadata_props.update(props)
        # The one save path: checked, external data by the one rule, renamed into place.
        save_model(model, out_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_path
