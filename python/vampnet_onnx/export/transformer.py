"""Export the VampNet transformer to ONNX: ``codes [B, C, T] int64 -> logits [B, T, P, V]``.

The graph has dynamic batch and time axes (named ``batch`` and ``time``; any T >= 1, the
relative position bias is computed in-graph), float32 weights, and the model configuration
as JSON in the metadata property `CONFIG_KEY`, which the runtime reads instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Checkpoint, file_sha256
from ..configs import CodecConfig, VampNetConfig
from ..contracts import CONFIG_KEY, TRANSFORMER, read_metadata
from ..model.transformer import MappingReport, VampNetTransformer, load_transformer
from .common import DEFAULT_OPSET, export_torch_module

# Example length for tracing: not 0 or 1, which torch.export would specialise.
_TRACE_T = 7


@dataclass(frozen=True)
class TransformerExport:
    """Result of `export_transformer`.

    Attributes:
        path: the written ``.onnx`` file.
        config: the JSON-able dict stored under `CONFIG_KEY`.
        report: where every checkpoint tensor went.
    """

    path: Path
    config: dict[str, Any]
    report: MappingReport


def transformer_config(
    config: VampNetConfig,
    codec_config: CodecConfig,
    vampnet: Checkpoint,
    codec: Checkpoint,
    lora_sha256: str | None = None,
) -> dict[str, Any]:
    """The metadata dict: model sizes, token conventions, audio framing and file hashes."""
    return {
        "kind": config.kind,
        "n_codebooks": config.n_codebooks,
        "n_conditioning_codebooks": config.n_conditioning_codebooks,
        "n_predict_codebooks": config.n_predict_codebooks,
        "vocab_size": config.vocab_size,
        "mask_token": config.mask_token,
        "latent_dim": config.latent_dim,
        "d_model": config.d_model,
        "n_layers": config.n_layers,
        "n_heads": config.n_heads,
        "sample_rate": codec_config.sample_rate,
        "hop_length": codec_config.hop_length,
        "checkpoint_sha256": vampnet.sha256,
        "codec_sha256": codec.sha256,
        "lora_sha256": lora_sha256,
        # export.precision.convert_transformer rewrites it for int8 / fp16 graphs.
        "precision": "fp32",
    }


def export_module(
    model: VampNetTransformer,
    path: str | Path,
    config: dict[str, Any],
    opset_version: int = DEFAULT_OPSET,
    verbose: bool = False,
) -> Path:
    """Export an eval-mode `VampNetTransformer` to `path` and check the result.

    Args:
        model: the module; its parameters become the graph's initializers (same names).
        path: output ``.onnx`` file; weights are stored inside it unless over 2 GB.
        config: JSON-able dict stored under `CONFIG_KEY`.
        opset_version: ONNX opset, >= `export.common.MIN_OPSET`.
        verbose: show the exporter's own messages.

    Raises:
        ValueError: `opset_version` is too old.
    """
    codes = torch.zeros(1, model.config.n_codebooks, _TRACE_T, dtype=torch.int64)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("time")}
    saved = export_torch_module(
        model,
        (codes,),
        (TRANSFORMER.input_names, TRANSFORMER.output_names),
        {"codes": dims},
        path,
        (CONFIG_KEY, config),
        opset_version,
        verbose,
        where="export_module",
    )
    return saved.path


def export_transformer(
    vampnet_path: str | Path,
    codec_path: str | Path,
    out_path: str | Path,
    lora_path: str | Path | None = None,
    opset_version: int = DEFAULT_OPSET,
    verbose: bool = False,
) -> TransformerExport:
    """Checkpoint files -> checked ONNX transformer.

    Args:
        vampnet_path: ``coarse.pth`` or ``c2f.pth``.
        codec_path: the LAC ``codec.pth`` whose codebooks the model embeds.
        out_path: the ``.onnx`` file to write.
        lora_path: optional separate LoRA state dict, applied before folding.
        opset_version: ONNX opset (>= 18).
        verbose: show the exporter's own messages.

    Raises:
        CheckpointError: the files are unsafe, unreadable or do not match each other.
    """
    loaded = load_transformer(vampnet_path, codec_path, lora_path)
    config = transformer_config(
        loaded.model.config,
        loaded.codec_config,
        loaded.vampnet,
        loaded.codec,
        file_sha256(lora_path) if lora_path is not None else None,
    )
    path = export_module(loaded.model, out_path, config, opset_version, verbose)
    return TransformerExport(path=path, config=config, report=loaded.report)


def read_config(path: str | Path) -> dict[str, Any]:
    """The `CONFIG_KEY` metadata dict of an exported transformer (weights are not loaded)."""
    return read_metadata(path, CONFIG_KEY, "read_config")
