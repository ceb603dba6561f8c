"""Independent float64 numpy LAC codec, written from docs/model.md §1.7, §1.8 and §5.

It reads the raw checkpoint tensors (``weight_g``/``weight_v``, per-quantizer tensors) and
follows the original data flow: right-pad to a multiple of the hop, encoder, residual vector
quantiser (cosine-similarity nearest code, raw rows for the residual), ``from_codes`` sum and
decoder with the mean of the three MRF stacks and a final tanh.
"""

from __future__ import annotations

import math

import numpy as np

from numpy_forward import weight_norm


def conv1d(x, sd, name, stride=1, padding=0, dilation=1):
    """``x [B, C_in, L]`` through the weight-normed conv `name` (weight ``[C_out, C_in, K]``)."""
    w = weight_norm(sd[f"{name}.weight_g"], sd[f"{name}.weight_v"])
    k = w.shape[2]
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    n_out = (x.shape[2] - dilation * (k - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], n_out))
    for j in range(k):
        taps = x[:, :, j * dilation : j * dilation + stride * (n_out - 1) + 1 : stride]
        out += np.einsum("oi,bil->bol", w[:, :, j], taps)
    return out + sd[f"{name}.bias"][None, :, None]


def conv_transpose1d(x, sd, name, stride, padding):
    """Weight-normed transposed conv (weight ``[C_in, C_out, K]``, norm per input channel)."""
    w = weight_norm(sd[f"{name}.weight_g"], sd[f"{name}.weight_v"])
    k, n_in = w.shape[2], x.shape[2]
    full = np.zeros((x.shape[0], w.shape[1], (n_in - 1) * stride + k))
    for j in range(k):
        full[:, :, j : j + stride * (n_in - 1) + 1 : stride] += np.einsum(
            "io,bil->bol", w[:, :, j], x
        )
    return full[:, :, padding : full.shape[2] - padding] + sd[f"{name}.bias"][None, :, None]


def snake(x, sd, name):
    alpha = sd[f"{name}.alpha"]
    return x + 1.0 / (alpha + 1e-9) * np.sin(alpha * x) ** 2


def encode_latents(sd, kwargs, audio):
    """Audio ``[B, 1, N]`` -> encoder output ``[B, d_lat, ceil(N / hop)]`` (after padding)."""
    hop = math.prod(kwargs["decoder_rates"])
    n = audio.shape[2]
    x = np.pad(audio.astype(np.float64), ((0, 0), (0, 0), (0, math.ceil(n / hop) * hop - n)))
    x = conv1d(x, sd, "encoder.block.0", padding=3)
    for k, stride in enumerate(kwargs["encoder_rates"], start=1):
        for j, dilation in enumerate((1, 3, 9)):
            unit = f"encoder.block.{k}.block.{j}.block"
            y = snake(x, sd, f"{unit}.0")
            y = conv1d(y, sd, f"{unit}.1", padding=3 * dilation, dilation=dilation)
            y = conv1d(snake(y, sd, f"{unit}.2"), sd, f"{unit}.3")
            x = x + y
        x = snake(x, sd, f"encoder.block.{k}.block.3")
        x = conv1d(x, sd, f"encoder.block.{k}.block.4", stride=stride, padding=stride // 2)
    n_rates = len(kwargs["encoder_rates"])
    x = snake(x, sd, f"encoder.block.{n_rates + 1}")
    return conv1d(x, sd, f"encoder.block.{n_rates + 2}", padding=1)


def quantize(sd, kwargs, latents, unit_rows_for_residual=False):
    """docs/model.md §5.4: codes ``[B, n_codebooks, T]`` of latents ``[B, d_lat, T]``.

    `unit_rows_for_residual` True swaps in the L2-normalised row for the residual update (a
    wrong variant, to show that a test tells the two apart)."""
    residual, codes = latents, []
    for i in range(kwargs["n_codebooks"]):
        q = f"quantizer.quantizers.{i}"
        z_e = conv1d(residual, sd, f"{q}.in_proj").transpose(0, 2, 1)  # [B, T, d]
        rows = sd[f"{q}.codebook.weight"]
        unit_e = z_e / np.maximum(np.linalg.norm(z_e, axis=-1, keepdims=True), 1e-12)
        unit_rows = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
        code = np.argmax(unit_e @ unit_rows.T, axis=-1)  # cosine similarity
        chosen = (unit_rows if unit_rows_for_residual else rows)[code].transpose(0, 2, 1)
        residual = residual - conv1d(chosen, sd, f"{q}.out_proj")
        codes.append(code)
    return np.stack(codes, axis=1)


def from_codes(sd, kwargs, codes):
    """``sum_i out_proj_i(codebook_i[code_i])``: latents ``[B, d_lat, T]``."""
    total = 0.0
    for i in range(codes.shape[1]):
        q = f"quantizer.quantizers.{i}"
        rows = sd[f"{q}.codebook.weight"][codes[:, i]].transpose(0, 2, 1)
        total = total + conv1d(rows, sd, f"{q}.out_proj")
    return total


def decode(sd, kwargs, codes):
    """Codes ``[B, n, T]`` -> audio ``[B, 1, T * hop]`` (float64)."""
    x = conv1d(from_codes(sd, kwargs, codes), sd, "decoder.model.0", padding=3)
    for k, rate in enumerate(kwargs["decoder_rates"], start=1):
        block = f"decoder.model.{k}.block"
        x = snake(x, sd, f"{block}.0")
        x = conv_transpose1d(x, sd, f"{block}.1", stride=rate, padding=rate // 2)
        stacks = []
        for m, kernel in enumerate((3, 7, 11)):
            y = x
            for j, dilation in enumerate((1, 3, 5)):
                unit = f"{block}.2.mrf_blocks.{m}.block.{j}.layer"
                h = snake(y, sd, f"{unit}.0")
                h = conv1d(
                    h, sd, f"{unit}.1", padding=(kernel - 1) * dilation // 2, dilation=dilation
                )
                h = conv1d(snake(h, sd, f"{unit}.2"), sd, f"{unit}.3", padding=(kernel - 1) // 2)
                y = y + h
            stacks.append(y)
        x = sum(stacks) / 3.0
    n_rates = len(kwargs["decoder_rates"])
    x = snake(x, sd, f"decoder.model.{n_rates + 1}")
    return np.tanh(conv1d(x, sd, f"decoder.model.{n_rates + 2}", padding=3))
