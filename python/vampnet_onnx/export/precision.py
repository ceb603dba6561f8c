"""Precision passes over exported transformers: int8 weights for CPUs.

``int8``: onnxruntime's dynamic quantization (`onnxruntime.quantization.quantize_dynamic`, a
maintained quantizer; none is written here) of every MatMul whose weight is a constant — the
QKV, output and feed-forward projections and the classifier — with signed 8-bit weights, one
scale per output channel, and activations quantized per call (`DynamicQuantizeLinear`:
unsigned 8 bits, one scale per tensor, computed at run time, so no calibration data). The
attention's own products (queries x keys, weights x values) have no constant operand and stay
float32, as do the embedding table (a Gather), the norms, the relative position bias and the
softmax. Why these choices, and what they cost in accuracy: docs/precision.md.

The generation graph is built from the quantized transformer as from the float one, so the
sampling and re-masking ops see float32 logits and draw exactly as before.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from ..contracts import CONFIG_KEY
from .common import save_model

#: The precisions `vampnet-onnx export --precision` writes.
PRECISIONS = ("fp32", "int8")
DEFAULT_PRECISION = "fp32"


def check_precision(precision: str, where: str, name: str = "precision") -> str:
    """`precision` if it is one of `PRECISIONS`, else ValueError "<where>: <name> must ..."."""
    if precision not in PRECISIONS:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


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
        # The quantizer logs a suggestion to pre-process the model on the root logger; the
        # graph is already what it would make of it (shapes known, nothing to fold).
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
        props[CONFIG_KEY] = json.dumps(
            {**json.loads(props[CONFIG_KEY]), "precision": "int8"}, sort_keys=True
        )
        model = ir.load(str(written))
        model.metadata_props.clear()
        model.metadata_props.update(props)
        # The one save path: checked, external data by the one rule, renamed into place.
        save_model(model, out_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_path
