"""Export the VampNet transformer to ONNX: ``codes [B, C, T] int64 -> logits [B, T, P, V]``.

The graph has dynamic batch and time axes (named ``batch`` and ``time``; any T >= 1, the
relative position bias is computed in-graph), float32 weights, and the model configuration
as JSON in the metadata property `CONFIG_KEY`, which the runtime reads instead of guessing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from ..checkpoint import Checkpoint, CodecConfig, VampNetConfig, file_sha256
from ..model.transformer import MappingReport, VampNetTransformer, load_transformer
from ..ops import CONFIG_KEY

DEFAULT_OPSET = 20
# Gelu(approximate="tanh") became a standard op at opset 20; below that the exporter writes
# the tanh formula out, which ORT still runs. Opsets under 18 lack the ops torch emits.
MIN_OPSET = 18
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
    }


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
        opset_version: ONNX opset, >= `MIN_OPSET`.
        verbose: show the exporter's own messages.

    Raises:
        ValueError: `opset_version` is too old.
    """
    if opset_version < MIN_OPSET:
        raise ValueError(
            f"export_module: opset_version must be >= {MIN_OPSET}, got {opset_version}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().requires_grad_(False)
    codes = torch.zeros(1, model.config.n_codebooks, _TRACE_T, dtype=torch.int64)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("time")}
    with _quiet_exporter(verbose), torch.no_grad():
        program = torch.onnx.export(
            model,
            (codes,),
            input_names=["codes"],
            output_names=["logits"],
            dynamic_shapes={"codes": dims},
            opset_version=opset_version,
            dynamo=True,
            verbose=verbose,
        )
    return save_checked(program, path, CONFIG_KEY, config)


def save_checked(program, path: Path, key: str, config: dict[str, Any]) -> Path:
    """Writes an exported program with `config` as JSON metadata under `key`, then checks it."""
    program.model.metadata_props[key] = json.dumps(config, sort_keys=True)
    program.model.producer_name = "vampnet_onnx"
    program.save(path)
    # full_check also runs strict shape inference over the whole graph.
    onnx.checker.check_model(str(path), full_check=True)
    return path


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
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if CONFIG_KEY not in props:
        raise ValueError(f"read_config: '{path}' must have metadata {CONFIG_KEY}, got none")
    return json.loads(props[CONFIG_KEY])
