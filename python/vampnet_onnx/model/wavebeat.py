"""Export-friendly WaveBeat (Steinmetz & Reiss 2021): the dsTCN beat and downbeat network, in
eval mode, built from a Lightning checkpoint's ``hyper_parameters`` (`WaveBeatConfig`).

Each block is a strided, dilated conv (padding ``(k - 1) * d // 2`` on each side) with an
optional BatchNorm and an activation, plus a strided 1x1 residual conv with its own optional
BatchNorm; the two are summed. A final 1x1 conv gives two channels of logits, beats and
downbeats, one frame per ``stride ** nblocks`` input samples (docs/model.md §7). The modules
are nested as the checkpoint names its tensors, so the state dict loads as saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import Checkpoint, load_wavebeat
from ..configs import WaveBeatConfig


def _activation(name: str, channels: int) -> nn.Module:
    if name == "PReLU":
        return nn.PReLU(channels)
    return {"ReLU": nn.ReLU, "SELU": nn.SELU, "ELU": nn.ELU}[name]()


class _Block(nn.Module):
    def __init__(self, config: WaveBeatConfig, block: int) -> None:
        super().__init__()
        n_in, n_out = config.channels(block)
        dilation = config.dilation(block)
        self.conv1 = nn.Conv1d(
            n_in,
            n_out,
            config.kernel_size,
            stride=config.stride,
            dilation=dilation,
            padding=(config.kernel_size - 1) * dilation // 2,
        )
        self.norm1 = nn.BatchNorm1d(n_out) if config.batch_norm else nn.Identity()
        self.act1 = _activation(config.act_type, n_out)
        self.res_conv = nn.Conv1d(n_in, n_out, 1, stride=config.stride)
        self.res_norm = nn.BatchNorm1d(n_out) if config.batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.norm1(self.conv1(x))) + self.res_norm(self.res_conv(x))


class WaveBeat(nn.Module):
    """Audio ``[B, 1, N]`` at ``config.audio_sample_rate`` -> logits ``[B, 2, T]`` (beats,
    downbeats), T = ceil(N / stride ** nblocks) frames at ``config.target_sample_rate``."""

    def __init__(self, config: WaveBeatConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(_Block(config, block) for block in range(config.nblocks))
        self.output = nn.Conv1d(config.channels(config.nblocks - 1)[1], 2, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio
        for block in self.blocks:
            x = block(x)
        return self.output(x)


@dataclass(frozen=True)
class LoadedWaveBeat:
    """A WaveBeat built from its checkpoint: the eval-mode model and the checked checkpoint."""

    model: WaveBeat
    checkpoint: Checkpoint

    @property
    def config(self) -> WaveBeatConfig:
        return self.model.config


def load_wavebeat_model(path: str | Path) -> LoadedWaveBeat:
    """Build the eval-mode `WaveBeat` (gradients off) from a WaveBeat Lightning checkpoint.

    Raises:
        CheckpointError: unsafe/unreadable file, not a WaveBeat checkpoint, unsupported
            hyper-parameters, or tensor list mismatch.
    """
    checkpoint, config = load_wavebeat(path)
    model = WaveBeat(config)
    state_dict = {
        k: v.to(torch.float32) if v.is_floating_point() else v
        for k, v in checkpoint.state_dict.items()
    }
    model.load_state_dict(state_dict, strict=True)
    return LoadedWaveBeat(model.eval().requires_grad_(False), checkpoint)
