"""Random-weight checkpoints in the real on-disk formats, for tests and benchmarks.

The VampNet and LAC files are what the original `BaseModel.save(..., package=False)` writes: a
`torch.save` dict ``{"state_dict": ..., "metadata": {"kwargs": ...}}`` with the exact tensor
names and shapes of `vampnet_onnx.checkpoint`; the WaveBeat file is a PyTorch Lightning
checkpoint (`write_wavebeat_checkpoint`). Every tensor is random and non-trivial (LoRA ``lora_B``
non-zero, MASK rows non-zero, norm gains away from 1, weight-norm gains away from the norm of
``weight_v``) so a tensor mapped to the wrong place, transposed, or folded with the wrong
scale changes the numbers. Scales keep activations and logits of order one at any width.
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from .checkpoint import codec_tensor_shapes, vampnet_tensor_shapes, wavebeat_tensor_shapes
from .configs import LORA_RANK, CodecConfig, VampNetConfig, WaveBeatConfig


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


def random_wavebeat_state_dict(hparams: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 WaveBeat state dict for `hparams` (BatchNorm statistics included)."""
    config = WaveBeatConfig.from_hparams(hparams, "random_wavebeat_state_dict")
    gen = torch.Generator().manual_seed(seed)
    state_dict = {}
    for name, shape in wavebeat_tensor_shapes(config).items():
        if name.endswith(".num_batches_tracked"):
            tensor = torch.tensor(1000, dtype=torch.int64)
        elif name.endswith("running_var"):
            tensor = torch.rand(shape, generator=gen) + 0.5
        elif name.endswith(("norm1.weight", "res_norm.weight")):
            tensor = torch.randn(shape, generator=gen) * 0.2 + 1.0
        elif name.endswith("act1.weight"):  # PReLU slopes
            tensor = torch.rand(shape, generator=gen) * 0.5
        elif len(shape) == 1:  # biases, BatchNorm shifts and running means
            tensor = torch.randn(shape, generator=gen) * 0.1
        else:  # conv weights: the residual sum of two convs keeps unit variance
            fan_in = shape[1] * shape[2]
            tensor = torch.randn(shape, generator=gen) * (2 * fan_in) ** -0.5
        state_dict[name] = tensor.contiguous()
    return state_dict


def _lightning_stand_ins() -> tuple[type, type, dict[str, types.ModuleType]]:
    """Lightning's ``AttributeDict`` and ``ModelCheckpoint`` classes under their real module
    names (which the pickle records), with the modules to put in `sys.modules` while saving."""
    attribute_dict = type("AttributeDict", (dict,), {})
    model_checkpoint = type("ModelCheckpoint", (), {})
    modules = {
        name: types.ModuleType(name)
        for name in (
            "pytorch_lightning",
            "pytorch_lightning.utilities",
            "pytorch_lightning.utilities.parsing",
            "pytorch_lightning.callbacks",
            "pytorch_lightning.callbacks.model_checkpoint",
        )
    }
    for cls, module in (
        (attribute_dict, "pytorch_lightning.utilities.parsing"),
        (model_checkpoint, "pytorch_lightning.callbacks.model_checkpoint"),
    ):
        cls.__module__ = module
        setattr(modules[module], cls.__name__, cls)
    return attribute_dict, model_checkpoint, modules


def write_wavebeat_checkpoint(
    path: str | Path, hparams: dict[str, Any], seed: int = 0, lightning_classes: bool = True
) -> Path:
    """Write a random WaveBeat checkpoint as PyTorch Lightning 1.x saves one to `path`.

    The dict holds what ``Trainer.save_checkpoint`` writes for the original training script:
    epoch and step counters, the Lightning version, the model's ``state_dict`` (no prefix: the
    model is the Lightning module), ``hparams_name`` and ``hyper_parameters``, the Adam and
    StepLR states and the ModelCheckpoint callback's state. With `lightning_classes`, the
    hyper-parameters are pickled as Lightning's ``AttributeDict`` and the callback state is
    keyed by the ``ModelCheckpoint`` class, as Lightning before 1.5 does (the loader must read
    those names without Lightning); otherwise both are plain.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = OrderedDict(random_wavebeat_state_dict(hparams, seed))
    attribute_dict, model_checkpoint, modules = _lightning_stand_ins()
    callback = {
        "monitor": "val_loss/Joint F-measure",
        "best_model_score": torch.tensor(0.5),
        "best_model_path": "",
        "current_score": torch.tensor(0.5),
        "dirpath": "",
    }
    obj = {
        "epoch": 1,
        "global_step": 100,
        "pytorch-lightning_version": "1.1.8",
        "callbacks": {model_checkpoint if lightning_classes else "ModelCheckpoint": callback},
        "optimizer_states": [
            {
                "state": {i: {"step": 100, "exp_avg": torch.zeros(1)} for i in range(2)},
                "param_groups": [
                    {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "params": [0, 1]}
                ],
            }
        ],
        "lr_schedulers": [{"step_size": 10, "gamma": 0.5, "base_lrs": [1e-3], "last_epoch": 1}],
        "state_dict": state_dict,
        "hparams_name": "kwargs",
        "hyper_parameters": (attribute_dict if lightning_classes else dict)(hparams),
    }
    with mock.patch.dict(sys.modules, modules):
        torch.save(obj, path)
    return path
