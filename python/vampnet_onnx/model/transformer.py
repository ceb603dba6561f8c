"""Export-friendly re-implementation of the VampNet transformer (eval mode), and the strict
mapping of checkpoint tensors onto it.

Every weight is folded offline so the graph holds only what inference needs:

* LoRA: ``W + LORA_SCALE * lora_B @ lora_A`` (what the original ``model.eval()`` merge does).
* Weight norm of the classifier: ``g * v / ||v||`` with the norm over all axes but 0.
* Input embedding: codec codebook rows (plus VampNet's learned MASK row) times the matching
  8-column slice of ``embedding.out_proj``: one ``[V + 1, d_model]`` table per codebook, the
  ``out_proj`` bias added once after the per-codebook sum.
* Classifier rows reordered from the original channel order ``v * P + c`` to ``c * V + v`` so
  the graph ends in MatMul -> Add -> Reshape ``[B, T, P, V]`` with no transpose.

Linear weights are stored ``[in, out]`` so each projection is a plain MatMul on an initializer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import (
    Checkpoint,
    load_codec,
    load_vampnet,
)
from ..configs import (
    LORA_SCALE,
    RELATIVE_ATTENTION_BUCKETS,
    RELATIVE_ATTENTION_MAX_DISTANCE,
    CheckpointError,
    CodecConfig,
    VampNetConfig,
)

RMS_NORM_EPS = 1e-6


def relative_position_bucket_table(
    n_buckets: int = RELATIVE_ATTENTION_BUCKETS,
    max_distance: int = RELATIVE_ATTENTION_MAX_DISTANCE,
) -> list[int]:
    """Bucket of a relative distance |key - query| = a, for a = 0 .. saturation (inclusive).

    T5 bidirectional bucketing: half the buckets per direction; within a half, distances below
    ``exact = half / 2`` get their own bucket, larger ones get
    ``exact + trunc(log(a / exact) / log(max_distance / exact) * (half - exact))``, capped at
    ``half - 1``. The truncated log is evaluated in exact integer arithmetic: it is the largest
    k with ``(a / exact) ** n >= (max_distance / exact) ** k``, n = half - exact. (A float log
    can land one bucket low exactly on the boundaries a = 16, 32, 64.) Every distance beyond
    the last entry shares the last entry's bucket, so the table serves any sequence length.
    The direction bit (key after query: + half) is added by the caller.
    """
    half = n_buckets // 2
    exact = half // 2
    n = half - exact
    table = []
    a = 0
    while not table or table[-1] < half - 1:
        if a < exact:
            table.append(a)
        else:
            k = max(k for k in range(n + 1) if a**n * exact**k >= max_distance**k * exact**n)
            table.append(min(half - 1, exact + k))
        a += 1
    return table


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x**2, -1) + 1e-6) * weight`` over the last axis of ``[..., D]``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written as Pow/ReduceMean/Add/Sqrt/Div/Mul: the pattern ORT fuses into
        # SimplifiedLayerNormalization (an Rsqrt would not match).
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + RMS_NORM_EPS) * self.weight


class TransformerLayer(nn.Module):
    """Pre-norm layer: ``x + attn(norm_1(x))`` then ``x + geglu_ffn(norm_3(x))``.

    Weights: ``qkv [D, 3D]`` (columns: queries, keys, values, each head-major), ``out [D, D]``,
    ``ffn_in [D, 4D]`` (columns: linear half, then the GELU-gated half), ``ffn_out [2D, D]``.
    """

    def __init__(self, config: VampNetConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.scale = config.d_head**-0.5
        self.norm_1 = RMSNorm(d)
        self.qkv = nn.Parameter(torch.zeros(d, 3 * d))
        self.out = nn.Parameter(torch.zeros(d, d))
        self.norm_3 = RMSNorm(d)
        self.ffn_in = nn.Parameter(torch.zeros(d, 4 * d))
        self.ffn_out = nn.Parameter(torch.zeros(2 * d, d))

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """x ``[B, T, D]``, position_bias ``[1, H, T, T]`` -> ``[B, T, D]``."""
        b, t, d = x.shape
        q, k, v = (
            h.reshape(b, t, self.n_heads, -1).transpose(1, 2)
            for h in (self.norm_1(x) @ self.qkv).split(d, dim=-1)
        )
        scores = (q @ k.transpose(-1, -2)) * self.scale + position_bias
        context = torch.softmax(scores, dim=-1) @ v
        x = x + context.transpose(1, 2).reshape(b, t, d) @ self.out
        value, gate = (self.norm_3(x) @ self.ffn_in).chunk(2, dim=-1)
        return x + (value * F.gelu(gate, approximate="tanh")) @ self.ffn_out


class VampNetTransformer(nn.Module):
    """VampNet's bidirectional transformer: codes ``[B, C, T]`` -> logits ``[B, T, P, V]``.

    ``codes`` are int64 in ``[0, V]`` with the mask token V already substituted; the caller
    validates the range (a larger code would read the next codebook's table).
    ``logits[b, t, c, v]`` (float32) is the score of token v for predicted codebook c
    (codebook ``n_conditioning_codebooks + c``) at frame t; it equals the original model's
    ``logits[b, v, t * P + c]``.
    """

    def __init__(self, config: VampNetConfig) -> None:
        super().__init__()
        self.config = config
        c, d = config.n_codebooks, config.d_model
        n_rows = config.vocab_size + 1
        # Row c * (V + 1) + token of the stacked tables; one Gather serves all codebooks.
        self.embedding_table = nn.Parameter(torch.zeros(c * n_rows, d))
        self.embedding_bias = nn.Parameter(torch.zeros(d))
        self.register_buffer("codebook_offsets", torch.arange(c) * n_rows, persistent=False)
        self.relative_attention_bias = nn.Parameter(
            torch.zeros(RELATIVE_ATTENTION_BUCKETS, config.n_heads)
        )
        self.register_buffer(
            "bucket_table", torch.tensor(relative_position_bucket_table()), persistent=False
        )
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(d)
        n_classes = config.n_predict_codebooks * config.vocab_size
        self.classifier = nn.Parameter(torch.zeros(d, n_classes))
        self.classifier_bias = nn.Parameter(torch.zeros(n_classes))

    def position_bias(self, t: int) -> torch.Tensor:
        """T5 relative position bias ``[1, H, T, T]``: entry (h, i, j) for query i, key j."""
        positions = torch.arange(t, device=self.bucket_table.device)
        relative = positions[None, :] - positions[:, None]
        saturation = self.bucket_table.shape[0] - 1
        distance = relative.abs().clamp(max=saturation).reshape(-1)
        bucket = self.bucket_table.index_select(0, distance).reshape(t, t) + (
            RELATIVE_ATTENTION_BUCKETS // 2
        ) * (relative > 0).to(torch.int64)
        return F.embedding(bucket, self.relative_attention_bias).permute(2, 0, 1).unsqueeze(0)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 ``[B, C, T]`` -> logits float32 ``[B, T, P, V]``."""
        b, _, t = codes.shape
        rows = codes + self.codebook_offsets[None, :, None]
        embedded = F.embedding(rows, self.embedding_table)  # [B, C, T, D]
        # The codebooks are summed by chained Adds rather than a ReduceSum over axis 1: ORT
        # reduces a middle axis in another order when B > 1 than when B = 1, so a chunk's
        # logits (and a near-tie token) would depend on what it is batched with.
        x = embedded[:, 0]
        for codebook in range(1, embedded.shape[1]):
            x = x + embedded[:, codebook]
        x = x + self.embedding_bias
        position_bias = self.position_bias(t)
        for layer in self.layers:
            x = layer(x, position_bias)
        logits = self.norm(x) @ self.classifier + self.classifier_bias
        return logits.reshape(b, t, self.config.n_predict_codebooks, self.config.vocab_size)


@dataclass
class MappingReport:
    """Where every checkpoint tensor went.

    Attributes:
        mapped: (file, tensor name, parameter of `VampNetTransformer` it is folded into).
        unused: (file, tensor name, why the transformer does not need it).
        n_parameters: number of parameters of the model, all of which were filled.
    """

    mapped: list[tuple[str, str, str]] = field(default_factory=list)
    unused: list[tuple[str, str, str]] = field(default_factory=list)
    n_parameters: int = 0

    def summary(self) -> str:
        """One line, e.g. ``368/368 coarse.pth tensors mapped, 4/...`` with the unused reasons."""
        total = Counter(f for f, _, _ in self.mapped + self.unused)
        used = Counter(f for f, _, _ in self.mapped)
        parts = [f"{used[f]}/{total[f]} {f} tensors mapped" for f in total]
        reasons = Counter(reason for _, _, reason in self.unused)
        unused = "; ".join(f"{n} unused: {reason}" for reason, n in reasons.items())
        filled = f"{self.n_parameters}/{self.n_parameters} parameters filled"
        return ", ".join(parts) + f" ({filled})" + (f"; {unused}" if unused else "")


def fold_lora(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """Merged LoRA weight ``W + LORA_SCALE * B @ A``; W ``[out, in]``, A ``[r, in]``,
    B ``[out, r]``; float64."""
    return weight.double() + LORA_SCALE * (lora_b.double() @ lora_a.double())


def fold_weight_norm(weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
    """Weight-norm fold ``g * v / ||v||``, the norm over all axes but 0 (no epsilon); float64."""
    v = weight_v.double()
    norm = v.flatten(1).norm(dim=1).reshape((-1,) + (1,) * (v.dim() - 1))
    return weight_g.double() * v / norm


def fold_checkpoints(
    vampnet: Checkpoint, config: VampNetConfig, codec: Checkpoint, codec_config: CodecConfig
) -> tuple[dict[str, torch.Tensor], MappingReport]:
    """Fold checked VampNet and LAC checkpoints into `VampNetTransformer` parameters.

    Returns:
        (parameter name -> float32 tensor for ``load_state_dict(strict=True)``, report).

    Raises:
        CheckpointError: the codec's codebooks do not fit the transformer's embedding.
    """
    where = f"fold_checkpoints: '{codec.path}'"
    if codec_config.codebook_size != config.vocab_size:
        raise CheckpointError(
            f"{where}: codebook_size must equal VampNet vocab_size {config.vocab_size}, "
            f"got {codec_config.codebook_size}"
        )
    if codec_config.codebook_dim != config.latent_dim:
        raise CheckpointError(
            f"{where}: codebook_dim must equal VampNet latent_dim {config.latent_dim}, "
            f"got {codec_config.codebook_dim}"
        )
    if codec_config.n_codebooks < config.n_codebooks:
        raise CheckpointError(
            f"{where}: n_codebooks must be >= VampNet n_codebooks {config.n_codebooks}, "
            f"got {codec_config.n_codebooks}"
        )
    sd, vfile, cfile = vampnet.state_dict, vampnet.path.name, codec.path.name
    report = MappingReport()
    params: dict[str, torch.Tensor] = {}

    def take(name: str, target: str) -> torch.Tensor:
        report.mapped.append((vfile, name, target))
        return sd[name]

    def linear(name: str, target: str) -> torch.Tensor:
        """Checkpoint linear (LoRA folded when present) as ``[in, out]`` float64."""
        weight = take(f"{name}.weight", target)
        if f"{name}.lora_A" in sd:
            weight = fold_lora(
                weight, take(f"{name}.lora_A", target), take(f"{name}.lora_B", target)
            )
        return weight.double().T

    latent, n_rows = config.latent_dim, config.vocab_size + 1
    out_proj = take("embedding.out_proj.weight", "embedding_table").double()[:, :, 0]
    mask_rows = take("embedding.special.MASK", "embedding_table").double()
    tables = []
    for c in range(config.n_codebooks):
        name = f"quantizer.quantizers.{c}.codebook.weight"
        report.mapped.append((cfile, name, "embedding_table"))
        rows = torch.cat([codec.state_dict[name].double(), mask_rows[c : c + 1]])
        tables.append(rows @ out_proj[:, c * latent : (c + 1) * latent].T)
    params["embedding_table"] = torch.cat(tables).reshape(config.n_codebooks * n_rows, -1)
    params["embedding_bias"] = take("embedding.out_proj.bias", "embedding_bias")
    params["relative_attention_bias"] = take(
        "transformer.layers.0.self_attn.relative_attention_bias.weight", "relative_attention_bias"
    )
    for layer in range(config.n_layers):
        src, dst = f"transformer.layers.{layer}", f"layers.{layer}"
        params[f"{dst}.norm_1.weight"] = take(f"{src}.norm_1.weight", f"{dst}.norm_1.weight")
        params[f"{dst}.qkv"] = torch.cat(
            [linear(f"{src}.self_attn.{w}", f"{dst}.qkv") for w in ("w_qs", "w_ks", "w_vs")], dim=1
        )
        params[f"{dst}.out"] = linear(f"{src}.self_attn.fc", f"{dst}.out")
        params[f"{dst}.norm_3.weight"] = take(f"{src}.norm_3.weight", f"{dst}.norm_3.weight")
        params[f"{dst}.ffn_in"] = linear(f"{src}.feed_forward.w_1", f"{dst}.ffn_in")
        params[f"{dst}.ffn_out"] = linear(f"{src}.feed_forward.w_2", f"{dst}.ffn_out")
    params["norm.weight"] = take("transformer.norm.weight", "norm.weight")

    weight = fold_weight_norm(
        take("classifier.layers.0.weight_g", "classifier"),
        take("classifier.layers.0.weight_v", "classifier"),
    )[:, :, 0]
    order = classifier_row_order(config.n_predict_codebooks, config.vocab_size)
    params["classifier"] = weight[order].T
    params["classifier_bias"] = take("classifier.layers.0.bias", "classifier_bias")[order]

    left_over = sorted(set(sd) - {name for file, name, _ in report.mapped if file == vfile})
    if left_over:
        raise CheckpointError(
            f"fold_checkpoints: every tensor of '{vampnet.path}' must be mapped, got "
            f"{len(left_over)} unmapped, first {left_over[0]}"
        )
    used = {name for file, name, _ in report.mapped if file == cfile}
    report.unused = [
        (cfile, name, _codec_unused_reason(name, config))
        for name in codec.state_dict
        if name not in used
    ]
    report.n_parameters = len(params)
    return {k: v.to(torch.float32).contiguous() for k, v in params.items()}, report


def classifier_row_order(n_predict_codebooks: int, vocab_size: int) -> torch.Tensor:
    """Index ``[P * V]``: our row ``c * V + v`` takes the original classifier row ``v * P + c``."""
    c = torch.arange(n_predict_codebooks)[:, None]
    v = torch.arange(vocab_size)[None, :]
    return (v * n_predict_codebooks + c).reshape(-1)


def _codec_unused_reason(name: str, config: VampNetConfig) -> str:
    if name.endswith(".codebook.weight"):
        return f"codebooks beyond the {config.n_codebooks} the {config.kind} model embeds"
    return "codec encoder/decoder/quantizer projections (used by the codec graph, not here)"


@dataclass(frozen=True)
class LoadedTransformer:
    """A model built from checkpoint files, with what it was built from.

    Attributes:
        model: eval-mode `VampNetTransformer`, every parameter filled, gradients off.
        report: where every checkpoint tensor went.
        vampnet, codec: the checked checkpoints (LoRA file already applied to `vampnet`).
        codec_config: the codec architecture (sample rate, hop length).
    """

    model: VampNetTransformer
    report: MappingReport
    vampnet: Checkpoint
    codec: Checkpoint
    codec_config: CodecConfig


def load_transformer(
    vampnet_path: str | Path, codec_path: str | Path, lora_path: str | Path | None = None
) -> LoadedTransformer:
    """Build the eval-mode transformer from checkpoint files.

    Args:
        vampnet_path: ``coarse.pth`` or ``c2f.pth``.
        codec_path: the LAC ``codec.pth`` whose raw codebooks feed the embedding.
        lora_path: optional separate LoRA state dict replacing the file's ``lora_A``/``lora_B``.

    Raises:
        CheckpointError: any loading, checking or folding failure.
    """
    vampnet, config = load_vampnet(vampnet_path, lora_path)
    codec, codec_config = load_codec(codec_path)
    params, report = fold_checkpoints(vampnet, config, codec, codec_config)
    model = VampNetTransformer(config)
    model.load_state_dict(params, strict=True)
    return LoadedTransformer(
        model.eval().requires_grad_(False), report, vampnet, codec, codec_config
    )
