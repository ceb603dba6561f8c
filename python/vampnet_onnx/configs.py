"""Model configurations, data only (no torch): the architecture read from a checkpoint's
``metadata["kwargs"]`` (`VampNetConfig`, `CodecConfig`) or a WaveBeat Lightning checkpoint's
``hyper_parameters`` (`WaveBeatConfig`), and the constructor kwargs of the
released models and of the tiny test models with the same structure.

`checkpoint` (which needs torch) validates files against these; the runtime and the demo read
them without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LORA_RANK = 8
# loralib scales the low-rank update by lora_alpha / r; VampNet keeps the default alpha 1.
LORA_SCALE = 1.0 / LORA_RANK
RELATIVE_ATTENTION_BUCKETS = 32
RELATIVE_ATTENTION_MAX_DISTANCE = 128


class CheckpointError(ValueError):
    """A checkpoint file is unsafe, unreadable, or does not match the expected model."""


def _require(
    kwargs: Mapping[str, Any], name: str, kind: type, where: str, container: str = "kwargs"
) -> Any:
    if name not in kwargs:
        raise CheckpointError(
            f"{where}: {container} must contain '{name}', got keys {sorted(kwargs)}"
        )
    value = kwargs[name]
    # bool is an int subclass; a flag where a size belongs is a broken file.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CheckpointError(f"{where}: {name} must be {kind.__name__}, got {value!r}")
    return value


def _positive(name: str, value: int, where: str) -> int:
    if value <= 0:
        raise CheckpointError(f"{where}: {name} must be > 0, got {value}")
    return value


@dataclass(frozen=True)
class VampNetConfig:
    """Transformer architecture, read from a VampNet checkpoint's ``metadata["kwargs"]``.

    Attributes:
        n_codebooks: C, codebooks the model embeds (4 coarse, 14 c2f).
        n_conditioning_codebooks: leading codebooks given, never predicted (0 coarse, 4 c2f).
        n_layers, n_heads: transformer depth and attention heads.
        d_model: model width (``embedding_dim`` in the original kwargs).
        vocab_size: V, codec codebook size; the mask token id is V.
        latent_dim: codec codebook vector width (8).
    """

    n_codebooks: int
    n_conditioning_codebooks: int
    n_layers: int
    n_heads: int
    d_model: int
    vocab_size: int
    latent_dim: int

    @property
    def n_predict_codebooks(self) -> int:
        """P = C - n_conditioning_codebooks, the codebooks that get logits."""
        return self.n_codebooks - self.n_conditioning_codebooks

    @property
    def mask_token(self) -> int:
        return self.vocab_size

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kind(self) -> str:
        """``"coarse"`` when nothing is conditioned on, else ``"c2f"``."""
        return "coarse" if self.n_conditioning_codebooks == 0 else "c2f"

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], where: str = "VampNetConfig") -> VampNetConfig:
        """Validate VampNet constructor kwargs; reject options this exporter does not implement.

        Raises:
            CheckpointError: a required kwarg is missing or has an unsupported value.
        """
        sizes = {
            name: _positive(name, _require(kwargs, name, int, where), where)
            for name in (
                "n_codebooks",
                "n_layers",
                "n_heads",
                "embedding_dim",
                "vocab_size",
                "latent_dim",
            )
        }
        n_cond = _require(kwargs, "n_conditioning_codebooks", int, where)
        if not 0 <= n_cond < sizes["n_codebooks"]:
            raise CheckpointError(
                f"{where}: n_conditioning_codebooks must be in [0, n_codebooks="
                f"{sizes['n_codebooks']}), got {n_cond}"
            )
        # FlashMHA has other parameter names and no relative position bias.
        if _require(kwargs, "flash_attn", bool, where):
            raise CheckpointError(f"{where}: flash_attn must be False, got True")
        # These enable FiLM conditioning or control encoders: extra inputs and tensors.
        for name in ("r_cond_dim", "cond_dim"):
            if kwargs.get(name, 0) not in (0, None):
                raise CheckpointError(f"{where}: {name} must be 0, got {kwargs[name]!r}")
        if kwargs.get("ctrl_dims") not in (None, {}):
            raise CheckpointError(f"{where}: ctrl_dims must be None, got {kwargs['ctrl_dims']!r}")
        if kwargs.get("noise_mode", "mask") != "mask":
            raise CheckpointError(
                f"{where}: noise_mode must be 'mask', got {kwargs['noise_mode']!r}"
            )
        if sizes["embedding_dim"] % sizes["n_heads"]:
            raise CheckpointError(
                f"{where}: embedding_dim must be divisible by n_heads={sizes['n_heads']}, "
                f"got {sizes['embedding_dim']}"
            )
        return cls(
            n_codebooks=sizes["n_codebooks"],
            n_conditioning_codebooks=n_cond,
            n_layers=sizes["n_layers"],
            n_heads=sizes["n_heads"],
            d_model=sizes["embedding_dim"],
            vocab_size=sizes["vocab_size"],
            latent_dim=sizes["latent_dim"],
        )


@dataclass(frozen=True)
class CodecConfig:
    """LAC codec architecture, read from ``codec.pth``'s ``metadata["kwargs"]``.

    Attributes:
        encoder_dim: width of the first encoder conv; doubles with every encoder block.
        encoder_rates: encoder strides.
        decoder_dim: width of the first decoder conv; halves (floor) with every decoder block.
        decoder_rates: decoder upsampling factors.
        n_codebooks: residual quantiser depth.
        codebook_size: entries per codebook (the transformer's vocab_size).
        codebook_dim: codebook vector width (the transformer's latent_dim).
        sample_rate: audio sample rate in Hz.
    """

    encoder_dim: int
    encoder_rates: tuple[int, ...]
    decoder_dim: int
    decoder_rates: tuple[int, ...]
    n_codebooks: int
    codebook_size: int
    codebook_dim: int
    sample_rate: int

    @property
    def hop_length(self) -> int:
        """Audio samples per token frame: the product of the decoder rates."""
        return math.prod(self.decoder_rates)

    @property
    def latent_width(self) -> int:
        """Width of encoder output, quantiser and decoder input: encoder_dim * 2**len(rates)."""
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    def decoder_width(self, k: int) -> int:
        """Channels after decoder block k (k = 0 is the first conv): floor(decoder_dim / 2**k)."""
        return self.decoder_dim // 2**k

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], where: str = "CodecConfig") -> CodecConfig:
        """Validate LAC constructor kwargs.

        Raises:
            CheckpointError: a required kwarg is missing or invalid, or the encoder and decoder
                rates give different hop lengths.
        """
        sizes = {
            name: _positive(name, _require(kwargs, name, int, where), where)
            for name in (
                "encoder_dim",
                "decoder_dim",
                "n_codebooks",
                "codebook_size",
                "codebook_dim",
                "sample_rate",
            )
        }
        rates = {}
        for name in ("encoder_rates", "decoder_rates"):
            value = kwargs.get(name)
            if (
                not isinstance(value, list | tuple)
                or not value
                or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in value)
            ):
                raise CheckpointError(
                    f"{where}: {name} must be a non-empty list of positive ints, got {value!r}"
                )
            rates[name] = tuple(value)
        if math.prod(rates["encoder_rates"]) != math.prod(rates["decoder_rates"]):
            raise CheckpointError(
                f"{where}: product of encoder_rates must equal product of decoder_rates "
                f"{math.prod(rates['decoder_rates'])}, got {math.prod(rates['encoder_rates'])}"
            )
        return cls(**sizes, **rates)


_HPARAMS = "hyper_parameters"
#: WaveBeat activations upstream knows (``wavebeat.dstcn.get_activation``); others build nothing.
WAVEBEAT_ACTIVATIONS = ("PReLU", "ReLU", "SELU", "ELU")


@dataclass(frozen=True)
class WaveBeatConfig:
    """WaveBeat's dsTCN architecture and rates, read from a Lightning checkpoint's
    ``hyper_parameters`` (docs/model.md §7).

    Attributes:
        nblocks: blocks, each a strided conv with a strided 1x1 residual conv.
        kernel_size, stride: of every block's conv.
        dilation_growth, stack_size: block n dilates by dilation_growth ** (n % stack_size).
        channel_width, channel_growth: block 0 has channel_width outputs, each next block
            channel_growth more.
        batch_norm: ``norm_type == "BatchNorm"`` (a BatchNorm after both convs), else none.
        act_type: one of `WAVEBEAT_ACTIVATIONS`.
        audio_sample_rate: Hz of the network's input audio (22050 released).
        target_sample_rate: Hz of its activation frames (audio_sample_rate / target_factor).
    """

    nblocks: int
    kernel_size: int
    stride: int
    dilation_growth: int
    stack_size: int
    channel_width: int
    channel_growth: int
    batch_norm: bool
    act_type: str
    audio_sample_rate: int
    target_sample_rate: float

    def dilation(self, block: int) -> int:
        return self.dilation_growth ** (block % self.stack_size)

    def channels(self, block: int) -> tuple[int, int]:
        """(input, output) channels of `block` (the first takes mono audio)."""
        width = self.channel_width + block * self.channel_growth
        return (1 if block == 0 else width - self.channel_growth), width

    @classmethod
    def from_hparams(
        cls, hparams: Mapping[str, Any], where: str = "WaveBeatConfig"
    ) -> WaveBeatConfig:
        """Validate a dsTCN model's saved hyper-parameters.

        Raises:
            CheckpointError: a required entry is missing or has a value the original model
                cannot run with (not mono in, beat and downbeat out; an unknown activation; a
                block whose conv and residual lengths differ).
        """
        for name, want in (("ninputs", 1), ("noutputs", 2)):
            if _require(hparams, name, int, where, _HPARAMS) != want:
                raise CheckpointError(f"{where}: {name} must be {want}, got {hparams[name]}")
        sizes = {
            name: _positive(name, _require(hparams, name, int, where, _HPARAMS), where)
            for name in (
                "nblocks",
                "kernel_size",
                "stride",
                "dilation_growth",
                "stack_size",
                "channel_width",
                "audio_sample_rate",
            )
        }
        growth = _require(hparams, "channel_growth", int, where, _HPARAMS)
        if growth < 0:
            raise CheckpointError(f"{where}: channel_growth must be >= 0, got {growth}")
        act_type = hparams.get("act_type")
        if act_type not in WAVEBEAT_ACTIVATIONS:
            raise CheckpointError(
                f"{where}: act_type must be one of {list(WAVEBEAT_ACTIVATIONS)}, got {act_type!r}"
            )
        target = hparams.get("target_sample_rate")
        if isinstance(target, bool) or not isinstance(target, int | float) or not target > 0:
            raise CheckpointError(
                f"{where}: target_sample_rate must be a number > 0, got {target!r}"
            )
        config = cls(
            **sizes,
            channel_growth=growth,
            batch_norm=hparams.get("norm_type") == "BatchNorm",
            act_type=act_type,
            target_sample_rate=float(target),
        )
        for block in range(config.nblocks):
            # The conv pads (k - 1) * d // 2 on each side; an odd (k - 1) * d makes its output
            # one frame shorter than the residual's and the original's sum fails.
            if (config.kernel_size - 1) * config.dilation(block) % 2:
                raise CheckpointError(
                    f"{where}: (kernel_size - 1) * dilation must be even in every block, got "
                    f"({config.kernel_size} - 1) * {config.dilation(block)} in block {block}"
                )
        return config


# --- constructor kwargs ----------------------------------------------------------------------

_VAMPNET_DEFAULTS = {
    "r_cond_dim": 0,
    "latent_dim": 8,
    "vocab_size": 1024,
    "flash_attn": False,
    "noise_mode": "mask",
    "dropout": 0.1,
    "ctrl_dims": None,
    "cfg_dropout_prob": 0.2,
    "cond_dim": 0,
}

#: Released configurations (docs/model.md §1.4): coarse and coarse-to-fine at full size.
COARSE_KWARGS: dict[str, Any] = {
    **_VAMPNET_DEFAULTS,
    "n_heads": 20,
    "n_layers": 20,
    "n_codebooks": 4,
    "n_conditioning_codebooks": 0,
    "embedding_dim": 1280,
}
C2F_KWARGS: dict[str, Any] = {
    **COARSE_KWARGS,
    "n_layers": 16,
    "n_codebooks": 14,
    "n_conditioning_codebooks": 4,
}
#: Tiny widths with the real structure (vocab 1024, latent 8, codebook counts, LoRA rank 8).
TINY_COARSE_KWARGS: dict[str, Any] = {
    **COARSE_KWARGS,
    "n_heads": 4,
    "n_layers": 2,
    "embedding_dim": 64,
}
TINY_C2F_KWARGS: dict[str, Any] = {
    **C2F_KWARGS,
    "n_heads": 4,
    "n_layers": 3,
    "embedding_dim": 64,
}

#: The "768x" LAC recipe VampNet was trained with (docs/model.md §5.1): hop 768, 14 codebooks.
CODEC_KWARGS: dict[str, Any] = {
    "encoder_dim": 64,
    "encoder_rates": [2, 6, 8, 8],
    "decoder_dim": 1536,
    "decoder_rates": [6, 4, 4, 2, 2, 2],
    "n_codebooks": 14,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "quantizer_dropout": False,
    "sample_rate": 44100,
}
#: Tiny codec; decoder_dim 12 with three rates gives widths 12, 6, 3, 1 (floor division).
TINY_CODEC_KWARGS: dict[str, Any] = {
    **CODEC_KWARGS,
    "encoder_dim": 4,
    "encoder_rates": [2, 3, 2],
    "decoder_dim": 12,
    "decoder_rates": [3, 2, 2],
}
#: Tiny widths with the real rates (hop 768, so T = ceil(N / 768) frames): for end-to-end audio
#: tests, where TINY_CODEC_KWARGS' odd rates would change the frame and sample counts.
SMALL_CODEC_KWARGS: dict[str, Any] = {**CODEC_KWARGS, "encoder_dim": 2, "decoder_dim": 96}

#: WaveBeat as released (its README's training command; the checkpoint's hyper_parameters hold
#: these among the training options): 22.05 kHz in, 22050 / 256 Hz activations.
WAVEBEAT_HPARAMS: dict[str, Any] = {
    "ninputs": 1,
    "noutputs": 2,
    "nblocks": 8,
    "kernel_size": 15,
    "stride": 2,
    "dilation_growth": 8,
    "channel_growth": 32,
    "channel_width": 32,
    "stack_size": 4,
    "grouped": False,
    "causal": False,
    "skip_connections": False,
    "norm_type": "BatchNorm",
    "act_type": "PReLU",
    "audio_sample_rate": 22050,
    "target_factor": 256,
    "target_sample_rate": 22050 / 256,
}
#: Tiny widths and kernels with the released strides and rates (activations at 22050 / 256 Hz).
TINY_WAVEBEAT_HPARAMS: dict[str, Any] = {
    **WAVEBEAT_HPARAMS,
    "kernel_size": 5,
    "channel_width": 4,
    "channel_growth": 2,
}
