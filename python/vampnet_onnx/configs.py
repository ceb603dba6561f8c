"""Model configurations, data only (no torch): the architecture read from a checkpoint's
``metadata["kwargs"]`` (`VampNetConfig`, `CodecConfig`) and the constructor kwargs of the
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


def _require(kwargs: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in kwargs:
        raise CheckpointError(f"{where}: kwargs must contain '{name}', got keys {sorted(kwargs)}")
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
