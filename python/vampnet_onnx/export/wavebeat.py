"""Export WaveBeat to ``wavebeat.onnx``: ``audio`` float32 ``[B, 1, N]`` (any N >= 1, at the
config's ``audio_sample_rate``, peak-normalised) -> ``activations`` float32 ``[B, 2, T]``, the
beat and downbeat probabilities, T = ceil(N / downsampling) frames at ``target_sample_rate``.

The sigmoid that the original applies after the network (``predict_beats_from_array``) is part
of the graph; resampling, the mono mix, the peak normalisation and the peak picking are not
(`vampnet_onnx.beats`). Batch and samples are dynamic. The file carries the config as JSON under
`WAVEBEAT_CONFIG_KEY` (read it without torch: `beats.read_wavebeat_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..configs import WaveBeatConfig
from ..contracts import WAVEBEAT, WAVEBEAT_CONFIG_KEY
from ..model.wavebeat import WaveBeat, load_wavebeat_model
from .common import DEFAULT_OPSET, export_torch_module

# Example sizes for tracing: not 0 or 1, which torch.export would specialise; a length that
# is not a multiple of the downsampling, so every block's rounding is traced as computed.
_TRACE_BATCH = 2
_TRACE_FRAMES = 3


@dataclass(frozen=True)
class WaveBeatExport:
    """Result of `export_wavebeat`: the file and the config dict stored in it."""

    path: Path
    config: dict[str, Any]


def wavebeat_config(config: WaveBeatConfig, checkpoint_sha256: str) -> dict[str, Any]:
    """The metadata dict: the rates a runtime needs to feed the graph and read its frames, and
    the architecture for reference."""
    return {
        "audio_sample_rate": config.audio_sample_rate,
        "target_sample_rate": config.target_sample_rate,
        "downsampling": config.stride**config.nblocks,
        "nblocks": config.nblocks,
        "kernel_size": config.kernel_size,
        "stride": config.stride,
        "dilation_growth": config.dilation_growth,
        "stack_size": config.stack_size,
        "channel_width": config.channel_width,
        "channel_growth": config.channel_growth,
        "batch_norm": config.batch_norm,
        "act_type": config.act_type,
        "checkpoint_sha256": checkpoint_sha256,
        # export --precision converts the transformers and the codec; the beat tracker is
        # always written in fp32.
        "precision": "fp32",
    }


class _ActivationGraph(nn.Module):
    def __init__(self, model: WaveBeat) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(audio))


def export_wavebeat_module(
    model: WaveBeat,
    path: str | Path,
    config: dict[str, Any],
    opset_version: int = DEFAULT_OPSET,
    verbose: bool = False,
) -> Path:
    """Export an eval-mode `WaveBeat` to `path`, checked and carrying `config` as metadata.

    Raises:
        ValueError: `opset_version` is out of range.
    """
    samples = _TRACE_FRAMES * config["downsampling"] - 1
    saved = export_torch_module(
        _ActivationGraph(model),
        (torch.zeros(_TRACE_BATCH, 1, samples),),
        (WAVEBEAT.input_names, WAVEBEAT.output_names),
        {"audio": {0: torch.export.Dim("batch"), 2: torch.export.Dim("samples")}},
        path,
        (WAVEBEAT_CONFIG_KEY, config),
        opset_version,
        verbose,
        where="export_wavebeat_module",
    )
    return saved.path


def export_wavebeat(
    wavebeat_path: str | Path,
    path: str | Path,
    opset_version: int = DEFAULT_OPSET,
    verbose: bool = False,
) -> WaveBeatExport:
    """A WaveBeat Lightning checkpoint -> a checked ``wavebeat.onnx`` at `path`.

    Args:
        wavebeat_path: the checkpoint (``wavebeat.pth`` / ``.ckpt``); the architecture and
            rates come from its ``hyper_parameters``.
        path: the graph file to write (its folder is created; an existing file is replaced).
        opset_version: ONNX opset (>= 18).
        verbose: show the exporter's own messages.

    Raises:
        CheckpointError: the file is unsafe, unreadable or not a WaveBeat checkpoint.
    """
    loaded = load_wavebeat_model(wavebeat_path)
    config = wavebeat_config(loaded.config, loaded.checkpoint.sha256)
    return WaveBeatExport(
        export_wavebeat_module(loaded.model, path, config, opset_version, verbose), config
    )
