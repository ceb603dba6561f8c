"""Independent float64 numpy forward pass of VampNet, written from docs/model.md §1.6, §1.7, §2.

It reads the raw checkpoint tensors (not the folded parameters of `vampnet_onnx.model`) and
follows the original data flow step by step: LoRA merge, codec-codebook embedding with the
MASK row, ``out_proj`` 1x1 conv, T5 buckets from the float log formula, pre-norm layers,
weight-normed classifier, and the original logits layout ``[B, V, T * P]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def load_raw(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(state dict as float64 arrays, metadata kwargs) of a checkpoint file."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.double().numpy() for k, v in obj["state_dict"].items()}, obj["metadata"]["kwargs"]


def linear_weight(sd: dict[str, np.ndarray], name: str) -> np.ndarray:
    """``[out, in]`` weight of a (possibly LoRA) linear: W + B @ A / 8 (docs/model.md §1.6)."""
    weight = sd[f"{name}.weight"]
    if f"{name}.lora_A" in sd:
        weight = weight + 0.125 * sd[f"{name}.lora_B"] @ sd[f"{name}.lora_A"]
    return weight


def weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """docs/model.md §1.7: g * v / ||v||, norm over every axis but 0."""
    norm = np.sqrt((v**2).sum(axis=tuple(range(1, v.ndim)), keepdims=True))
    return g * v / norm


def relative_bucket(relative: np.ndarray) -> np.ndarray:
    """docs/model.md §2.3 bucket of ``key - query`` (float64 log formula, 32 buckets,
    distance 128)."""
    bucket = np.where(relative > 0, 16, 0)
    a = np.abs(relative)
    with np.errstate(divide="ignore"):
        large = 8 + np.trunc(np.log(a / 8) / np.log(16) * 8)
    large = np.minimum(15, np.where(a < 8, 0, large)).astype(np.int64)
    return bucket + np.where(a < 8, a, large)


def rms_norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return weight * x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + 1e-6)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def vampnet_logits(
    sd: dict[str, np.ndarray], kwargs: dict, codec_sd: dict[str, np.ndarray], codes: np.ndarray
) -> np.ndarray:
    """Original-layout logits ``[B, V, T * P]`` for codes ``[B, C, T]`` (mask token = V)."""
    n_cb, n_heads = kwargs["n_codebooks"], kwargs["n_heads"]
    vocab, n_pred = kwargs["vocab_size"], kwargs["n_codebooks"] - kwargs["n_conditioning_codebooks"]
    batch, _, t = codes.shape

    latents = []
    for c in range(n_cb):
        table = np.concatenate(
            [
                codec_sd[f"quantizer.quantizers.{c}.codebook.weight"],
                sd["embedding.special.MASK"][c : c + 1],
            ]
        )
        latents.append(table[codes[:, c, :]].transpose(0, 2, 1))  # [B, 8, T]
    latent = np.concatenate(latents, axis=1)  # [B, 8C, T], codebook-major channels
    x = np.einsum("dk,bkt->bdt", sd["embedding.out_proj.weight"][:, :, 0], latent)
    x = (x + sd["embedding.out_proj.bias"][None, :, None]).transpose(0, 2, 1)  # [B, T, D]
    d = x.shape[-1]
    d_head = d // n_heads

    positions = np.arange(t)
    bucket = relative_bucket(positions[None, :] - positions[:, None])
    table = sd["transformer.layers.0.self_attn.relative_attention_bias.weight"]
    position_bias = table[bucket].transpose(2, 0, 1)  # [H, T, T]

    for layer in range(kwargs["n_layers"]):
        p = f"transformer.layers.{layer}"
        h = rms_norm(x, sd[f"{p}.norm_1.weight"])
        q, k, v = (
            (h @ linear_weight(sd, f"{p}.self_attn.{w}").T).reshape(batch, t, n_heads, d_head)
            for w in ("w_qs", "w_ks", "w_vs")
        )
        scores = np.einsum("bihe,bjhe->bhij", q, k) / np.sqrt(d_head) + position_bias[None]
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        attended = np.einsum("bhij,bjhe->bihe", probs, v).reshape(batch, t, d)
        x = x + attended @ linear_weight(sd, f"{p}.self_attn.fc").T
        h = rms_norm(x, sd[f"{p}.norm_3.weight"])
        u = h @ linear_weight(sd, f"{p}.feed_forward.w_1").T
        value, gate = u[..., : 2 * d], u[..., 2 * d :]
        x = x + (value * gelu_tanh(gate)) @ linear_weight(sd, f"{p}.feed_forward.w_2").T
    y = rms_norm(x, sd["transformer.norm.weight"])

    weight = weight_norm(sd["classifier.layers.0.weight_g"], sd["classifier.layers.0.weight_v"])
    conv_out = np.einsum("kd,btd->bkt", weight[:, :, 0], y)
    conv_out += sd["classifier.layers.0.bias"][None, :, None]  # [B, V * P, T], k = v * P + c
    # logits[b, v, t * P + c] = conv_out[b, v * P + c, t]
    return conv_out.reshape(batch, vocab, n_pred, t).transpose(0, 1, 3, 2).reshape(batch, vocab, -1)


def to_btpv(logits: np.ndarray, n_predict_codebooks: int) -> np.ndarray:
    """Original layout ``[B, V, T * P]`` -> ``[B, T, P, V]``."""
    batch, vocab, _ = logits.shape
    return logits.reshape(batch, vocab, -1, n_predict_codebooks).transpose(0, 2, 3, 1)
