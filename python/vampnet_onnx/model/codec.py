"""Export-friendly re-implementation of the LAC codec (eval mode) from ``codec.pth``.

The architecture is built from the checkpoint's ``metadata["kwargs"]`` (`CodecConfig`), never
from class defaults, and every width is derived as docs/model.md §1.8 says: the latent width is
``encoder_dim * 2**len(encoder_rates)`` and decoder block k has ``decoder_dim // 2**k`` channels.

Encoder and decoder modules are nested exactly as the checkpoint's tensor names are, so the
only mapping is the weight-norm fold ``weight_g, weight_v -> weight`` (`fold_weight_norm`; for
a transposed conv axis 0 is the *input* channel axis, which the fold keeps). The residual
quantiser's per-codebook tensors are stacked along a leading codebook axis instead:

* encoding: nearest code by cosine similarity, computed as the squared distance between the
  L2-normalised projection and the L2-normalised codebook rows (docs/model.md §5.4); the residual is
  updated with ``out_proj`` of the *raw* codebook row;
* decoding: ``z = sum_i out_proj_i(codebook_i[code_i])`` written as one gather of the raw rows of
  all codebooks, concatenated per frame, times the stacked ``out_proj`` weights, plus the sum of
  the ``out_proj`` biases (added once). The original decodes through a cosine re-quantisation
  of those rows, which returns the same indices unless two rows of a codebook point in exactly
  the same direction; the direct lookup is what the codes mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import Checkpoint, codec_tensor_shapes, load_codec
from ..configs import CodecConfig
from .transformer import fold_weight_norm

# Snake's guard against a zero frequency (part of the original activation).
SNAKE_EPS = 1e-9
# F.normalize's floor on the vector norm, used by the original nearest-code search.
NORMALIZE_EPS = 1e-12
ENCODER_DILATIONS = (1, 3, 9)
MRF_KERNELS = (3, 7, 11)
MRF_DILATIONS = (1, 3, 5)


class Snake(nn.Module):
    """``x + sin(alpha * x)**2 / (alpha + 1e-9)`` per channel of ``[B, C, L]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Reciprocal then multiply, as the original evaluates it (division rounds differently).
        return x + (self.alpha + SNAKE_EPS).reciprocal() * torch.sin(self.alpha * x).pow(2)


def _conv(c_in: int, c_out: int, kernel: int, dilation: int = 1, stride: int = 1) -> nn.Conv1d:
    """Length-preserving (for stride 1) conv with bias; the padding of the original layers."""
    padding = (kernel - 1) * dilation // 2 if stride == 1 else stride // 2
    return nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation)


class _Residual(nn.Module):
    """``x + f(x)``; `f` is an `nn.Sequential` stored under the checkpoint's attribute name."""

    def __init__(self, name: str, *layers: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.add_module(name, nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + getattr(self, self.name)(x)


def _encoder_unit(width: int, dilation: int) -> _Residual:
    return _Residual(
        "block",
        Snake(width),
        _conv(width, width, 7, dilation),
        Snake(width),
        _conv(width, width, 1),
    )


def _decoder_unit(width: int, kernel: int, dilation: int) -> _Residual:
    # Both convs of a unit have the MRF stack's kernel; only the first is dilated.
    return _Residual(
        "layer",
        Snake(width),
        _conv(width, width, kernel, dilation),
        Snake(width),
        _conv(width, width, kernel),
    )


class _Stack(nn.Module):
    """Units applied in sequence, under the attribute name ``block``."""

    def __init__(self, units: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class MultiReceptiveField(nn.Module):
    """Mean (not sum) of three residual stacks with kernels 3, 7, 11 on the same input."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mrf_blocks = nn.ModuleList(
            _Stack([_decoder_unit(width, kernel, d) for d in MRF_DILATIONS])
            for kernel in MRF_KERNELS
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.mrf_blocks[0](x)
        for stack in self.mrf_blocks[1:]:
            total = total + stack(x)
        return total / len(self.mrf_blocks)


class Encoder(nn.Module):
    """Audio ``[B, 1, L]`` (L a multiple of the hop) -> latents ``[B, latent_width, L / hop]``."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(1, config.encoder_dim, 7)]
        width = config.encoder_dim
        for stride in config.encoder_rates:
            units = [_encoder_unit(width, d) for d in ENCODER_DILATIONS]
            down = _conv(width, 2 * width, 2 * stride, stride=stride)
            layers.append(_Stack([*units, Snake(width), down]))
            width *= 2
        layers += [Snake(width), _conv(width, width, 3)]
        self.block = nn.Sequential(*layers)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.block(audio)


class _UpsampleBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, rate: int) -> None:
        super().__init__()
        up = nn.ConvTranspose1d(c_in, c_out, 2 * rate, stride=rate, padding=rate // 2)
        self.block = nn.Sequential(Snake(c_in), up, MultiReceptiveField(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """Latents ``[B, latent_width, T]`` -> audio ``[B, 1, T * hop]`` in (-1, 1) (tanh)."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(config.latent_width, config.decoder_dim, 7)]
        for k, rate in enumerate(config.decoder_rates, start=1):
            layers.append(
                _UpsampleBlock(config.decoder_width(k - 1), config.decoder_width(k), rate)
            )
        last = config.decoder_width(len(config.decoder_rates))
        layers += [Snake(last), _conv(last, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model(latents)


class ResidualQuantizer(nn.Module):
    """LAC's residual vector quantiser, per-codebook tensors stacked on a leading axis.

    Parameters (n codebooks, V entries, d = codebook_dim, D = latent width; projections stored
    ``[in, out]`` so each is a plain MatMul):
        in_proj_weight ``[n, D, d]``, in_proj_bias ``[n, d]``,
        codebooks ``[n, V, d]`` (raw rows), unit_codebooks ``[n, V, d]`` (rows L2-normalised),
        unit_codebooks_sq ``[n, V]`` (their squared norms, 1 up to rounding),
        out_proj_weight ``[n, d, D]``, out_proj_bias ``[n, D]``.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        n, v, d, width = (
            config.n_codebooks,
            config.codebook_size,
            config.codebook_dim,
            config.latent_width,
        )
        self.in_proj_weight = nn.Parameter(torch.zeros(n, width, d))
        self.in_proj_bias = nn.Parameter(torch.zeros(n, d))
        self.codebooks = nn.Parameter(torch.zeros(n, v, d))
        self.unit_codebooks = nn.Parameter(torch.zeros(n, v, d))
        self.unit_codebooks_sq = nn.Parameter(torch.zeros(n, v))
        self.out_proj_weight = nn.Parameter(torch.zeros(n, d, width))
        self.out_proj_bias = nn.Parameter(torch.zeros(n, width))
        # Row c * V + code of the flattened codebooks: one gather serves all codebooks.
        self.register_buffer("codebook_offsets", torch.arange(n) * v, persistent=False)

    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, D, T]`` -> codes int64 ``[B, n, T]``, codebook by codebook."""
        residual = latents.transpose(1, 2)  # [B, T, D]
        codes = []
        for i in range(self.codebooks.shape[0]):
            projected = residual @ self.in_proj_weight[i] + self.in_proj_bias[i]  # [B, T, d]
            unit = projected / projected.norm(dim=-1, keepdim=True).clamp_min(NORMALIZE_EPS)
            # Squared distance of unit vectors; its argmin is the cosine-similarity argmax.
            distance = (
                unit.pow(2).sum(-1, keepdim=True)
                - 2 * unit @ self.unit_codebooks[i].T
                + self.unit_codebooks_sq[i]
            )
            code = distance.argmin(dim=-1)  # [B, T]; ties resolve to the lowest index
            quantized = self.codebooks[i][code] @ self.out_proj_weight[i] + self.out_proj_bias[i]
            residual = residual - quantized
            codes.append(code)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes int64 ``[B, n, T]`` in ``[0, V)`` -> latents ``[B, D, T]``."""
        b, n, t = codes.shape
        rows = (codes + self.codebook_offsets[None, :, None]).transpose(1, 2)  # [B, T, n]
        vectors = F.embedding(rows, self.codebooks.flatten(0, 1)).reshape(b, t, -1)
        latents = vectors @ self.out_proj_weight.flatten(0, 1) + self.out_proj_bias.sum(0)
        return latents.transpose(1, 2)


class LACCodec(nn.Module):
    """The LAC codec: audio ``[B, 1, N]`` at ``config.sample_rate`` <-> codes ``[B, n, T]``."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = ResidualQuantizer(config)
        self.decoder = Decoder(config)
        # The zeros that pad the audio to whole hops (`encode`); a buffer, not a torch.zeros
        # call, which the exporter writes as a ConstantOfShape without a value, whose float32
        # default tract 0.23 takes for float64.
        self.register_buffer("hop_zeros", torch.zeros(1, 1, config.hop_length), persistent=False)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio float32 ``[B, 1, N]``, N >= 1 -> codes int64 ``[B, n_codebooks, T]``.

        The audio is right-padded with zeros to ``ceil(N / hop) * hop`` samples first, as the
        original ``preprocess`` does, so T = ceil(N / hop) when every encoder rate is even (an
        odd rate drops a frame, as in the original).
        """
        hop = self.config.hop_length
        # Zeros concatenated rather than F.pad: tract takes a Pad's amount as a number when it
        # prepares the graph, and cannot when it depends on the length N.
        # (hop - N % hop) % hop, which tract simplifies to N's remainder negated (-8 for 4
        # samples short), written as the remainder of N - 1 >= 0, which it computes right.
        pad = hop - 1 - (audio.shape[-1] - 1) % hop
        zeros = self.hop_zeros[..., :pad].expand(audio.shape[0], 1, pad)
        padded = torch.cat([audio, zeros], dim=-1)
        return self.quantizer.encode(self.encoder(padded))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes int64 ``[B, n_codebooks, T]`` in ``[0, codebook_size)`` -> audio
        ``[B, 1, T * hop]`` (one more sample per odd decoder rate, as in the original)."""
        return self.decoder(self.quantizer.decode(codes))


def fold_codec(checkpoint: Checkpoint, config: CodecConfig) -> dict[str, torch.Tensor]:
    """Checked LAC checkpoint -> `LACCodec` parameters for ``load_state_dict(strict=True)``.

    Weight-normed convs get ``weight = g * v / ||v||`` (float64, cast once); every other
    encoder/decoder tensor keeps its name; quantiser tensors are stacked per codebook.
    """
    sd = checkpoint.state_dict
    params: dict[str, torch.Tensor] = {}
    for name in codec_tensor_shapes(config):
        if name.startswith("quantizer.") or name.endswith(".weight_g"):
            continue
        if name.endswith(".weight_v"):
            prefix = name.removesuffix(".weight_v")
            params[f"{prefix}.weight"] = fold_weight_norm(sd[f"{prefix}.weight_g"], sd[name])
        else:
            params[name] = sd[name]

    def stacked(field: str, fold: bool = False) -> torch.Tensor:
        tensors = []
        for i in range(config.n_codebooks):
            q = f"quantizer.quantizers.{i}.{field}"
            tensors.append(
                fold_weight_norm(sd[f"{q}.weight_g"], sd[f"{q}.weight_v"])[:, :, 0]
                if fold
                else sd[q]
            )
        return torch.stack(tensors)

    q = "quantizer."
    params[f"{q}in_proj_weight"] = stacked("in_proj", fold=True).transpose(1, 2)
    params[f"{q}in_proj_bias"] = stacked("in_proj.bias")
    params[f"{q}out_proj_weight"] = stacked("out_proj", fold=True).transpose(1, 2)
    params[f"{q}out_proj_bias"] = stacked("out_proj.bias")
    codebooks = stacked("codebook.weight").float()
    # Normalised in float32 with the original's function, so the rows are bit-identical to
    # the ones the original compares against at run time.
    unit = F.normalize(codebooks, dim=-1, eps=NORMALIZE_EPS)
    params[f"{q}codebooks"] = codebooks
    params[f"{q}unit_codebooks"] = unit
    params[f"{q}unit_codebooks_sq"] = unit.pow(2).sum(-1)
    return {k: v.to(torch.float32).contiguous() for k, v in params.items()}


@dataclass(frozen=True)
class LoadedCodec:
    """A codec built from ``codec.pth``: the eval-mode model and the checked checkpoint."""

    model: LACCodec
    checkpoint: Checkpoint

    @property
    def config(self) -> CodecConfig:
        return self.model.config


def load_codec_model(path: str | Path) -> LoadedCodec:
    """Build the eval-mode `LACCodec` (gradients off) from a ``codec.pth`` file.

    Raises:
        CheckpointError: unsafe/unreadable file, invalid kwargs, or tensor list mismatch.
    """
    checkpoint, config = load_codec(path)
    model = LACCodec(config)
    model.load_state_dict(fold_codec(checkpoint, config), strict=True)
    return LoadedCodec(model.eval().requires_grad_(False), checkpoint)
