"""Random-weight checkpoints in the real on-disk formats, for tests and benchmarks.

The files are what the original `BaseModel.save(..., package=False)` writes: a `torch.save`
dict ``{"state_dict": ..., "metadata": {"kwargs": ...}}`` with the exact tensor names and
shapes of `vampnet_onnx.checkpoint`. Every tensor is random and non-trivial (LoRA ``lora_B``
non-zero, MASK rows non-zero, norm gains away from 1, weight-norm gains away from the norm of
``weight_v``) so a tensor mapped to the wrong place, transposed, or folded with the wrong
scale changes the numbers. Scales keep activations and logits of order one at any width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import codec_tensor_shapes, vampnet_tensor_shapes
from .configs import LORA_RANK, CodecConfig, VampNetConfig


def _save(path: str | Path, state_dict: dict[str, torch.Tensor], kwargs: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state_dict, "metadata": {"kwargs": dict(kwargs)}}, path)
    return path


def random_vampnet_state_dict(
    kwargs: dict[str, Any], seed: int = 0, lora: bool = True
) -> dict[str, torch.Tensor]:
    """Random float32 VampNet state dict for constructor `kwargs` (`lora` False: pre-LoRA file)."""
    config = VampNetConfig.from_kwargs(kwargs, "random_vampnet_state_dict")
    gen = torch.Generator().manual_seed(seed)

    def normal(shape: tuple, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std + mean

    state_dict = {}
    for name, shape in vampnet_tensor_shapes(config, with_lora=lora).items():
        if name.endswith("norm.weight") or ".norm_" in name:
            tensor = normal(shape, 0.2, 1.0)
        elif name.endswith(".lora_A"):
            tensor = normal(shape, shape[1] ** -0.5)
        elif name.endswith(".lora_B"):
            tensor = normal(shape, LORA_RANK**-0.5)
        elif name.endswith(".weight_g"):
            tensor = normal(shape, 0.3, 1.0)
        elif name.endswith(("weight_v", "relative_attention_bias.weight", "special.MASK")):
            tensor = normal(shape, 1.0)
        elif name.endswith("bias"):
            tensor = normal(shape, 0.1)
        else:  # linear and 1x1-conv weights: unit-variance outputs for unit-variance inputs
            tensor = normal(shape, (torch.tensor(shape[1:]).prod().item()) ** -0.5)
        state_dict[name] = tensor.contiguous()
    return state_dict


def random_codec_state_dict(kwargs: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 LAC state dict for constructor `kwargs`."""
    config = CodecConfig.from_kwargs(kwargs, "random_codec_state_dict")
    gen = torch.Generator().manual_seed(seed)
    state_dict = {}
    for name, shape in codec_tensor_shapes(config).items():
        if name.endswith(".alpha"):  # Snake frequencies are positive
            tensor = torch.rand(shape, generator=gen) + 0.5
        elif name.endswith(".weight_g"):
            tensor = torch.rand(shape, generator=gen) * 0.5 + 0.5
        elif name.endswith(".bias"):
            tensor = torch.randn(shape, generator=gen) * 0.01
        else:  # weight_v and raw codebook rows (non-unit norms, as real codebooks have)
            tensor = torch.randn(shape, generator=gen)
        state_dict[name] = tensor.contiguous()
    return state_dict


def write_vampnet_checkpoint(
    path: str | Path, kwargs: dict[str, Any], seed: int = 0, lora: bool = True
) -> Path:
    """Write a random VampNet checkpoint (``coarse.pth``/``c2f.pth`` format) to `path`."""
    return _save(path, random_vampnet_state_dict(kwargs, seed, lora), kwargs)


def write_codec_checkpoint(path: str | Path, kwargs: dict[str, Any], seed: int = 0) -> Path:
    """Write a random LAC checkpoint (``codec.pth`` format) to `path`."""
    return _save(path, random_codec_state_dict(kwargs, seed), kwargs)
