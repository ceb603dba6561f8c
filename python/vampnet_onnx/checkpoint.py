"""Safe loading of VampNet (`coarse.pth`, `c2f.pth`), LAC (`codec.pth`) and WaveBeat
(`wavebeat.pth`) checkpoints.

The first two are `torch.save` zip archives holding ``{"state_dict": {name: tensor},
"metadata": {"kwargs": {...}}}``; WaveBeat's is a PyTorch Lightning checkpoint,
``{"state_dict": ..., "hyper_parameters": {...}, ...}`` (`load_wavebeat`). A pickle can name
any importable callable, so nothing here unpickles a file before checking every global it
references against an allowlist: torch's weights-only set (tensor and storage rebuilders,
``OrderedDict``) plus the two numpy globals that a numpy scalar in ``kwargs`` needs (and, for
WaveBeat only, Lightning's ``AttributeDict`` and ``ModelCheckpoint`` classes, loaded as inert
stand-ins: Lightning is never imported). Anything else is refused by name and never executed.

The architecture always comes from ``metadata["kwargs"]``: the class defaults of the original
code differ from the released configurations, and the original loader silently ignores missing
or unexpected tensors, so this module checks the tensor list both ways and every shape.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configs import (
    LORA_RANK,
    RELATIVE_ATTENTION_BUCKETS,
    CheckpointError,
    CodecConfig,
    VampNetConfig,
    WaveBeatConfig,
)

# Pickle global name -> object. Numpy writes scalars through `multiarray.scalar(dtype, bytes)`;
# files written with numpy 1.x spell the module `numpy.core`, numpy 2 spells it `numpy._core`.
_NUMPY_SCALAR = np._core.multiarray.scalar
_EXTRA_SAFE_GLOBALS = {
    "numpy._core.multiarray.scalar": _NUMPY_SCALAR,
    "numpy.core.multiarray.scalar": _NUMPY_SCALAR,
    "numpy.dtype": np.dtype,
}


class _LightningCallbackKey:
    """Stands in for a Lightning callback class: Lightning < 1.5 keys the checkpoint's
    ``callbacks`` states by the callback's class, which this loader reads as an inert marker."""


# Lightning names that a WaveBeat checkpoint may reference, each mapped to an inert stand-in.
# Lightning's AttributeDict (the type of ``hyper_parameters`` in some versions) is a dict
# subclass pickled as "new empty instance, then set items": a plain dict rebuilds it.
_LIGHTNING_SAFE_GLOBALS = {
    "pytorch_lightning.utilities.parsing.AttributeDict": dict,
    "lightning_fabric.utilities.data.AttributeDict": dict,
    "lightning.fabric.utilities.data.AttributeDict": dict,
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": _LightningCallbackKey,
}
# Rebuilding a numpy dtype instantiates its class; these never appear as globals in the file.
_NUMPY_DTYPE_CLASSES = [
    type(np.dtype(name))
    for name in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    )
]


@dataclass(frozen=True)
class Checkpoint:
    """One loaded checkpoint file.

    Attributes:
        path: the file read.
        sha256: hex digest of the file's bytes.
        kwargs: ``metadata["kwargs"]`` with numpy scalars turned into Python numbers.
        state_dict: tensor name -> CPU tensor, exactly as saved.
    """

    path: Path
    sha256: str
    kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# What a damaged or hostile archive can raise while being scanned or loaded: besides the archive
# and pickle errors, struct.error from an opcode cut short and TypeError/ValueError/LookupError
# from allowlisted callables (tensor rebuilding) given hostile arguments.
_UNREADABLE = (
    zipfile.BadZipFile,
    RuntimeError,
    pickle.UnpicklingError,
    EOFError,
    OSError,
    struct.error,
    TypeError,
    ValueError,
    LookupError,
)


def _safe_torch_load(
    path: str | Path, where: str, extra_globals: Mapping[str, Any] | None = None
) -> tuple[Path, Any]:
    """Unpickle a `torch.save` zip archive after refusing any global outside the allowlist
    (`_EXTRA_SAFE_GLOBALS`, plus `extra_globals`: name -> the object loaded for it)."""
    safe_globals = {**_EXTRA_SAFE_GLOBALS, **(extra_globals or {})}
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: path must be an existing file, got '{path}'")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            head = f.read(8)
        raise CheckpointError(
            f"{where}: '{path}' must be a torch.save zip archive, got a truncated or non-zip "
            f"file ({path.stat().st_size} bytes, starting {head!r})"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            compressed = [
                i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED
            ]
    except _UNREADABLE as err:
        raise CheckpointError(
            f"{where}: '{path}' must be a readable torch.save archive, got {_first_line(err)}"
        ) from err
    if compressed:
        # torch.save stores records uncompressed; a compressed one could inflate far beyond
        # the file's size before any other check.
        raise CheckpointError(
            f"{where}: '{path}' must store its records uncompressed as torch.save does, got "
            f"compressed member(s) {', '.join(compressed[:3])}"
        )
    try:
        # Scans the pickle opcodes without executing them.
        requested = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except _UNREADABLE as err:
        raise CheckpointError(
            f"{where}: '{path}' must be a readable torch.save archive, got {_first_line(err)}"
        ) from err
    refused = sorted(set(requested) - set(safe_globals))
    if refused:
        raise CheckpointError(
            f"{where}: '{path}' must reference only tensors, plain Python values and numpy "
            f"scalars, got pickle global(s) {', '.join(refused)} (refused: unpickling them "
            "could run code)"
        )
    allow = [(obj, name) for name, obj in safe_globals.items()] + _NUMPY_DTYPE_CLASSES
    try:
        with torch.serialization.safe_globals(allow):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as err:
        raise CheckpointError(
            f"{where}: '{path}' must be a readable torch.save archive, got {_first_line(err)}"
        ) from err
    return path, obj


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _plain(value: Any) -> Any:
    """Numpy scalars (allowed in kwargs) -> Python numbers, recursively through containers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a VampNet or LAC checkpoint without executing any pickled code.

    Args:
        path: a `torch.save` file with keys ``state_dict`` and ``metadata`` (``metadata`` must
            hold ``kwargs``; other metadata entries are ignored).

    Returns:
        The checkpoint; tensors stay in their saved dtype on the CPU.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch.save archive, references a
            pickle global outside the allowlist, or lacks the expected structure.
    """
    path, obj = _safe_torch_load(path, "load_checkpoint")
    where = f"load_checkpoint: '{path}'"
    if not isinstance(obj, Mapping) or "state_dict" not in obj or "metadata" not in obj:
        keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{where} must hold a dict with keys 'state_dict' and 'metadata', got {keys}"
        )
    state_dict, metadata = obj["state_dict"], obj["metadata"]
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("kwargs"), Mapping):
        raise CheckpointError(f"{where}: metadata must be a dict holding a 'kwargs' dict")
    return Checkpoint(
        path=path,
        sha256=file_sha256(path),
        kwargs=_plain(dict(metadata["kwargs"])),
        state_dict=_tensor_dict(state_dict, f"{where}: state_dict"),
    )


def _tensor_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where} must be a dict of name -> tensor, got {type(obj).__name__}")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{where} must map names to tensors, got {name!r} -> {type(value).__name__}"
            )
    return dict(obj)


def load_lora_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a separate LoRA file (``loralib.lora_state_dict``: a plain name -> tensor dict).

    Its tensors replace the same-named ``lora_A``/``lora_B`` tensors of the base checkpoint
    (see `apply_lora_state_dict`), as the original loader does before merging.
    """
    path, obj = _safe_torch_load(path, "load_lora_state_dict")
    return _tensor_dict(obj, f"load_lora_state_dict: '{path}'")


def apply_lora_state_dict(base: Checkpoint, lora: Mapping[str, torch.Tensor]) -> Checkpoint:
    """Return `base` with its LoRA tensors replaced by those of `lora`.

    Raises:
        CheckpointError: a name in `lora` is not a LoRA tensor of `base`, or a shape differs.
    """
    state_dict = dict(base.state_dict)
    for name, tensor in lora.items():
        if not name.endswith((".lora_A", ".lora_B")) or name not in state_dict:
            raise CheckpointError(
                f"apply_lora_state_dict: tensor names must be LoRA tensors of '{base.path}', "
                f"got {name}"
            )
        if tuple(tensor.shape) != tuple(state_dict[name].shape):
            raise CheckpointError(
                f"apply_lora_state_dict: {name} must have shape "
                f"{tuple(state_dict[name].shape)}, got {tuple(tensor.shape)}"
            )
        state_dict[name] = tensor
    return Checkpoint(base.path, base.sha256, base.kwargs, state_dict)


def vampnet_tensor_shapes(config: VampNetConfig, with_lora: bool = True) -> dict[str, tuple]:
    """Name -> shape of every tensor a VampNet checkpoint of this configuration holds.

    `with_lora` False gives the list of files saved before LoRA layers existed.
    """
    d, c, r = config.d_model, config.n_codebooks, LORA_RANK
    shapes: dict[str, tuple] = {
        "embedding.special.MASK": (c, config.latent_dim),
        "embedding.out_proj.weight": (d, c * config.latent_dim, 1),
        "embedding.out_proj.bias": (d,),
    }

    def linear(name: str, n_out: int, n_in: int, lora: bool) -> None:
        shapes[f"{name}.weight"] = (n_out, n_in)
        if lora and with_lora:
            shapes[f"{name}.lora_A"] = (r, n_in)
            shapes[f"{name}.lora_B"] = (n_out, r)

    for layer in range(config.n_layers):
        p = f"transformer.layers.{layer}"
        shapes[f"{p}.norm_1.weight"] = (d,)
        linear(f"{p}.self_attn.w_qs", d, d, lora=True)
        linear(f"{p}.self_attn.w_ks", d, d, lora=False)
        linear(f"{p}.self_attn.w_vs", d, d, lora=True)
        linear(f"{p}.self_attn.fc", d, d, lora=True)
        if layer == 0:
            shapes[f"{p}.self_attn.relative_attention_bias.weight"] = (
                RELATIVE_ATTENTION_BUCKETS,
                config.n_heads,
            )
        shapes[f"{p}.norm_3.weight"] = (d,)
        linear(f"{p}.feed_forward.w_1", 4 * d, d, lora=True)
        linear(f"{p}.feed_forward.w_2", d, 2 * d, lora=True)
    shapes["transformer.norm.weight"] = (d,)
    n_classes = config.vocab_size * config.n_predict_codebooks
    shapes["classifier.layers.0.weight_v"] = (n_classes, d, 1)
    shapes["classifier.layers.0.weight_g"] = (n_classes, 1, 1)
    shapes["classifier.layers.0.bias"] = (n_classes,)
    return shapes


def codec_tensor_shapes(config: CodecConfig) -> dict[str, tuple]:
    """Name -> shape of every tensor a LAC checkpoint of this configuration holds."""
    shapes: dict[str, tuple] = {}

    def conv(name: str, n_out: int, n_in: int, kernel: int) -> None:
        shapes[f"{name}.weight_g"] = (n_out, 1, 1)
        shapes[f"{name}.weight_v"] = (n_out, n_in, kernel)
        shapes[f"{name}.bias"] = (n_out,)

    def conv_transpose(name: str, n_in: int, n_out: int, kernel: int) -> None:
        # Weight norm's axis 0 of a transposed conv is the input channel axis.
        shapes[f"{name}.weight_g"] = (n_in, 1, 1)
        shapes[f"{name}.weight_v"] = (n_in, n_out, kernel)
        shapes[f"{name}.bias"] = (n_out,)

    def snake(name: str, channels: int) -> None:
        shapes[f"{name}.alpha"] = (1, channels, 1)

    conv("encoder.block.0", config.encoder_dim, 1, 7)
    for k, stride in enumerate(config.encoder_rates, start=1):
        width = config.encoder_dim * 2 ** (k - 1)
        for j in range(3):
            unit = f"encoder.block.{k}.block.{j}.block"
            snake(f"{unit}.0", width)
            conv(f"{unit}.1", width, width, 7)
            snake(f"{unit}.2", width)
            conv(f"{unit}.3", width, width, 1)
        snake(f"encoder.block.{k}.block.3", width)
        conv(f"encoder.block.{k}.block.4", 2 * width, width, 2 * stride)
    n_enc, latent = len(config.encoder_rates), config.latent_width
    snake(f"encoder.block.{n_enc + 1}", latent)
    conv(f"encoder.block.{n_enc + 2}", latent, latent, 3)

    for i in range(config.n_codebooks):
        q = f"quantizer.quantizers.{i}"
        conv(f"{q}.in_proj", config.codebook_dim, latent, 1)
        conv(f"{q}.out_proj", latent, config.codebook_dim, 1)
        shapes[f"{q}.codebook.weight"] = (config.codebook_size, config.codebook_dim)

    conv("decoder.model.0", config.decoder_dim, latent, 7)
    for k, rate in enumerate(config.decoder_rates, start=1):
        c_in, c_out = config.decoder_width(k - 1), config.decoder_width(k)
        block = f"decoder.model.{k}.block"
        snake(f"{block}.0", c_in)
        conv_transpose(f"{block}.1", c_in, c_out, 2 * rate)
        for m, kernel in enumerate((3, 7, 11)):
            for j in range(3):
                unit = f"{block}.2.mrf_blocks.{m}.block.{j}.layer"
                snake(f"{unit}.0", c_out)
                conv(f"{unit}.1", c_out, c_out, kernel)
                snake(f"{unit}.2", c_out)
                conv(f"{unit}.3", c_out, c_out, kernel)
    n_dec = len(config.decoder_rates)
    snake(f"decoder.model.{n_dec + 1}", config.decoder_width(n_dec))
    conv(f"decoder.model.{n_dec + 2}", 1, config.decoder_width(n_dec), 7)
    return shapes


def check_tensors(checkpoint: Checkpoint, expected: Mapping[str, tuple]) -> None:
    """Require exactly the `expected` tensor names, each with its expected shape.

    Raises:
        CheckpointError: naming the first missing, unexpected or misshapen tensor (and how many
            more there are of each kind).
    """
    where = f"'{checkpoint.path}'"
    names = checkpoint.state_dict.keys()
    missing = [n for n in expected if n not in names]
    if missing:
        raise CheckpointError(
            f"{where}: state_dict must contain {missing[0]} {tuple(expected[missing[0]])}, got "
            f"no such tensor ({len(missing)} missing in all)"
        )
    unexpected = [n for n in names if n not in expected]
    if unexpected:
        raise CheckpointError(
            f"{where}: state_dict must not contain {unexpected[0]}, got it (not part of this "
            f"architecture; {len(unexpected)} unexpected in all)"
        )
    for name, shape in expected.items():
        got = tuple(checkpoint.state_dict[name].shape)
        if got != tuple(shape):
            raise CheckpointError(f"{where}: {name} must have shape {tuple(shape)}, got {got}")
        # BatchNorm's step counter is an integer by design (and unused in eval mode).
        if not checkpoint.state_dict[name].is_floating_point() and not name.endswith(
            ".num_batches_tracked"
        ):
            raise CheckpointError(
                f"{where}: {name} must be a floating-point tensor, "
                f"got {checkpoint.state_dict[name].dtype}"
            )


def load_vampnet(
    path: str | Path, lora_path: str | Path | None = None
) -> tuple[Checkpoint, VampNetConfig]:
    """Load and fully check a VampNet checkpoint (optionally with a separate LoRA file).

    Files written before LoRA existed (no ``lora_A``/``lora_B`` at all) are accepted: the
    original model then keeps ``lora_B`` at its zero initialisation, so the update is zero.

    Raises:
        CheckpointError: unsafe/unreadable file, unsupported kwargs, or tensor list mismatch.
    """
    checkpoint = load_checkpoint(path)
    config = VampNetConfig.from_kwargs(checkpoint.kwargs, f"load_vampnet: '{checkpoint.path}'")
    with_lora = any(n.endswith((".lora_A", ".lora_B")) for n in checkpoint.state_dict)
    check_tensors(checkpoint, vampnet_tensor_shapes(config, with_lora=with_lora))
    if lora_path is not None:
        if not with_lora:
            raise CheckpointError(
                f"load_vampnet: '{checkpoint.path}' must have LoRA tensors to take lora_path, "
                "got none"
            )
        checkpoint = apply_lora_state_dict(checkpoint, load_lora_state_dict(lora_path))
    return checkpoint, config


def load_codec(path: str | Path) -> tuple[Checkpoint, CodecConfig]:
    """Load and fully check a LAC codec checkpoint.

    Raises:
        CheckpointError: unsafe/unreadable file, invalid kwargs, or tensor list mismatch.
    """
    checkpoint = load_checkpoint(path)
    config = CodecConfig.from_kwargs(checkpoint.kwargs, f"load_codec: '{checkpoint.path}'")
    check_tensors(checkpoint, codec_tensor_shapes(config))
    return checkpoint, config


def wavebeat_tensor_shapes(config: WaveBeatConfig) -> dict[str, tuple]:
    """Name -> shape of every tensor a WaveBeat (dsTCN) checkpoint of this configuration holds:
    the Lightning module's own names (the model is the module, so there is no prefix)."""
    shapes: dict[str, tuple] = {}

    def batch_norm(name: str, channels: int) -> None:
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{tensor}"] = (channels,)
        shapes[f"{name}.num_batches_tracked"] = ()

    for block in range(config.nblocks):
        n_in, n_out = config.channels(block)
        p = f"blocks.{block}"
        shapes[f"{p}.conv1.weight"] = (n_out, n_in, config.kernel_size)
        shapes[f"{p}.conv1.bias"] = (n_out,)
        if config.act_type == "PReLU":
            shapes[f"{p}.act1.weight"] = (n_out,)
        shapes[f"{p}.res_conv.weight"] = (n_out, n_in, 1)
        shapes[f"{p}.res_conv.bias"] = (n_out,)
        if config.batch_norm:
            batch_norm(f"{p}.norm1", n_out)
            batch_norm(f"{p}.res_norm", n_out)
    shapes["output.weight"] = (2, config.channels(config.nblocks - 1)[1], 1)
    shapes["output.bias"] = (2,)
    return shapes


def load_wavebeat(path: str | Path) -> tuple[Checkpoint, WaveBeatConfig]:
    """Load and fully check a WaveBeat Lightning checkpoint without executing pickled code.

    Args:
        path: a `torch.save` file (``.ckpt``/``.pth``) with ``state_dict`` (the dsTCN model's
            tensors) and ``hyper_parameters`` (its constructor arguments and the training
            options, among them ``audio_sample_rate`` and ``target_sample_rate``). Other
            entries (optimizer and scheduler states, callbacks, loops) are ignored.

    Returns:
        The checkpoint (``kwargs`` holds the hyper-parameters) and the architecture.

    Raises:
        CheckpointError: unsafe/unreadable file, not a Lightning checkpoint (a VampNet or LAC
            file, say), unsupported hyper-parameters, or tensor list mismatch.
    """
    path, obj = _safe_torch_load(path, "load_wavebeat", _LIGHTNING_SAFE_GLOBALS)
    where = f"load_wavebeat: '{path}'"
    required = ("state_dict", "hyper_parameters")
    if not isinstance(obj, Mapping) or not all(key in obj for key in required):
        keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{where} must be a WaveBeat Lightning checkpoint with keys 'state_dict' and "
            f"'hyper_parameters', got {keys}"
        )
    if not isinstance(obj["hyper_parameters"], Mapping):
        kind = type(obj["hyper_parameters"]).__name__
        raise CheckpointError(f"{where}: hyper_parameters must be a dict, got {kind}")
    hparams = _plain(dict(obj["hyper_parameters"]))
    checkpoint = Checkpoint(
        path=path,
        sha256=file_sha256(path),
        kwargs=hparams,
        state_dict=_tensor_dict(obj["state_dict"], f"{where}: state_dict"),
    )
    config = WaveBeatConfig.from_hparams(hparams, where)
    check_tensors(checkpoint, wavebeat_tensor_shapes(config))
    return checkpoint, config
