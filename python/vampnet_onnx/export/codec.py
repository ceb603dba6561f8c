"""Export the LAC codec to two ONNX graphs: ``codec.encode.onnx`` and ``codec.decode.onnx``.

* encode: ``audio`` float32 ``[B, 1, N]`` (any N >= 1, at the codec's sample rate) ->
  ``codes`` int64 ``[B, n_codebooks, T]``, T = ceil(N / hop). The right-padding to a multiple
  of the hop that the original ``preprocess`` does happens inside the graph.
* decode: ``codes`` int64 ``[B, n_codebooks, T]`` and ``length`` int64 scalar -> ``audio``
  float32 ``[B, 1, length]``: the first ``length`` of the T * hop decoded samples. The graph
  clamps ``length`` into ``[0, T * hop]`` and every code into ``[0, codebook_size)`` (a mask
  token 1024 would otherwise read the next codebook's first row); callers validate instead of
  relying on that: `vampnet_onnx.codec.Codec.decode` rejects such codes and lengths.

Batch, samples and time axes are dynamic. Each file carries the codec configuration as JSON
under the metadata key `CODEC_CONFIG_KEY` (read it without torch: `codec.read_codec_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..configs import CodecConfig
from ..contracts import CODEC_CONFIG_KEY, CODEC_DECODE, CODEC_ENCODE, DECODE_FILE, ENCODE_FILE
from ..model.codec import LACCodec, load_codec_model
from .common import DEFAULT_OPSET, check_opset, export_torch_module

# Example sizes for tracing: not 0 or 1, which torch.export would specialise.
_TRACE_BATCH = 2
_TRACE_FRAMES = 3


@dataclass(frozen=True)
class CodecExport:
    """Result of `export_codec`: the two files and the config dict stored in each; in a models
    folder of fp32 graphs, also their CPU variants (`export.precision.write_cpu_codec`)."""

    encode_path: Path
    decode_path: Path
    config: dict[str, Any]
    encode_cpu_path: Path | None = None
    decode_cpu_path: Path | None = None


def codec_config(config: CodecConfig, checkpoint_sha256: str) -> dict[str, Any]:
    """The metadata dict: what a runtime needs to frame audio and check codes."""
    return {
        "sample_rate": config.sample_rate,
        "hop_length": config.hop_length,
        "n_codebooks": config.n_codebooks,
        "codebook_size": config.codebook_size,
        "codebook_dim": config.codebook_dim,
        "latent_width": config.latent_width,
        "encoder_rates": list(config.encoder_rates),
        "decoder_rates": list(config.decoder_rates),
        "checkpoint_sha256": checkpoint_sha256,
        # What the graph computes in, and how its weights are stored: export.precision's
        # codec_to_float16 makes both "fp16", codec_weights_to_float16 the weights (int8 folders).
        "precision": "fp32",
        "weights": "fp32",
    }


class _EncodeGraph(nn.Module):
    def __init__(self, codec: LACCodec) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(audio)


class _DecodeGraph(nn.Module):
    def __init__(self, codec: LACCodec) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, codes: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        codes = codes.clamp(0, self.codec.config.codebook_size - 1)
        audio = self.codec.decode(codes)
        # A data-dependent length, clamped into [0, T * hop]. The samples are gathered by
        # index rather than sliced: tract cannot run a Slice to a data-dependent end (it drops
        # the symbol that sizes the result, "Symbol <Sym0> points to an invalid (dead ?)
        # SymbolScope") but runs a Range and a Gather. The checks only tell torch.export the
        # range.
        end = torch.minimum(length.clamp(min=0), torch.tensor(audio.shape[-1])).item()
        torch._check(end >= 0)
        torch._check(end <= audio.shape[-1])
        return audio.index_select(2, torch.arange(end, device=audio.device))


def export_codec_module(
    codec: LACCodec,
    out_dir: str | Path,
    config: dict[str, Any],
    opset_version: int = DEFAULT_OPSET,
    verbose: bool = False,
) -> tuple[Path, Path]:
    """Export an eval-mode `LACCodec` to ``out_dir/codec.encode.onnx`` and
    ``out_dir/codec.decode.onnx``, each checked and carrying `config` as metadata.

    Raises:
        ValueError: `opset_version` is too old.
    """
    check_opset(opset_version, "export_codec_module")
    out_dir = Path(out_dir)
    metadata = (CODEC_CONFIG_KEY, config)
    hop, n_codebooks = codec.config.hop_length, codec.config.n_codebooks
    batch = torch.export.Dim("batch")
    # A length that is not a multiple of the hop, so the padding is traced as computed.
    audio = torch.zeros(_TRACE_BATCH, 1, _TRACE_FRAMES * hop - 1)
    encode = export_torch_module(
        _EncodeGraph(codec),
        (audio,),
        (CODEC_ENCODE.input_names, CODEC_ENCODE.output_names),
        {"audio": {0: batch, 2: torch.export.Dim("samples")}},
        out_dir / ENCODE_FILE,
        metadata,
        opset_version,
        verbose,
    )
    codes = torch.zeros(_TRACE_BATCH, n_codebooks, _TRACE_FRAMES, dtype=torch.int64)
    length = torch.tensor(_TRACE_FRAMES * hop - 1, dtype=torch.int64)
    decode = export_torch_module(
        _DecodeGraph(codec),
        (codes, length),
        (CODEC_DECODE.input_names, CODEC_DECODE.output_names),
        {"codes": {0: batch, 2: torch.export.Dim("time")}, "length": None},
        out_dir / DECODE_FILE,
        metadata,
        opset_version,
        verbose,
    )
    return encode.path, decode.path


def export_codec(
    codec_path: str | Path,
    out_dir: str | Path,
    opset_version: int = DEFAULT_OPSET,
    verbose: bool = False,
) -> CodecExport:
    """``codec.pth`` -> checked ``codec.encode.onnx`` and ``codec.decode.onnx`` in `out_dir`.

    Args:
        codec_path: the LAC checkpoint; the architecture comes from its metadata kwargs.
        out_dir: folder for the two files (created if missing; existing files are replaced).
        opset_version: ONNX opset (>= 18).
        verbose: show the exporter's own messages.

    Raises:
        CheckpointError: the file is unsafe, unreadable or not a LAC checkpoint.
    """
    loaded = load_codec_model(codec_path)
    config = codec_config(loaded.config, loaded.checkpoint.sha256)
    encode_path, decode_path = export_codec_module(
        loaded.model, out_dir, config, opset_version, verbose
    )
    return CodecExport(encode_path, decode_path, config)
