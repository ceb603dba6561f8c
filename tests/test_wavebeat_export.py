"""WaveBeat: the Lightning checkpoint loader, the torch module against an independent numpy
dsTCN, and ``wavebeat.onnx`` against the torch module."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vampnet_onnx import configs, testing
from vampnet_onnx.checkpoint import CheckpointError, file_sha256, load_wavebeat
from vampnet_onnx.configs import WaveBeatConfig
from vampnet_onnx.contracts import WAVEBEAT_CONFIG_KEY, read_metadata
from vampnet_onnx.export.wavebeat import export_wavebeat
from vampnet_onnx.model.wavebeat import load_wavebeat_model

HPARAMS = configs.TINY_WAVEBEAT_HPARAMS
# Float32 convolutions summed in another order (oneDNN vs ORT's kernels) move probabilities by
# a few ulps per block; 1e-5 is two orders above what eight blocks give (observed <= 1e-7).
ONNX_ATOL = 1e-5
# The numpy twin runs in float64 from the same float32 weights: the difference is the torch
# module's float32 rounding, of order 1e-6 relative over eight blocks.
NUMPY_ATOL = 1e-4


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    return testing.write_wavebeat_checkpoint(
        tmp_path_factory.mktemp("wavebeat") / "wavebeat.pth", HPARAMS, seed=1
    )


@pytest.fixture(scope="module")
def exported(checkpoint_path, tmp_path_factory):
    return export_wavebeat(checkpoint_path, tmp_path_factory.mktemp("onnx") / "wavebeat.onnx")


def _numpy_dstcn(state: dict[str, np.ndarray], hparams: dict, audio: np.ndarray) -> np.ndarray:
    """WaveBeat's logits from upstream's description (wavebeat/dstcn.py), float64:
    ``[B, 1, N]`` -> ``[B, 2, T]``."""

    def conv(x, weight, bias, stride, dilation, padding):
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
        span = dilation * (weight.shape[2] - 1) + 1
        n_out = (x.shape[2] - span) // stride + 1
        y = np.zeros((x.shape[0], weight.shape[0], n_out))
        for tap in range(weight.shape[2]):
            start = tap * dilation
            window = x[:, :, start : start + stride * (n_out - 1) + 1 : stride]
            y += np.einsum("oi,bit->bot", weight[:, :, tap], window)
        return y + bias[None, :, None]

    def batch_norm(x, name):
        scale = state[f"{name}.weight"] / np.sqrt(state[f"{name}.running_var"] + 1e-5)
        shift = state[f"{name}.bias"] - state[f"{name}.running_mean"] * scale
        return x * scale[None, :, None] + shift[None, :, None]

    x = audio.astype(np.float64)
    k = hparams["kernel_size"]
    for n in range(hparams["nblocks"]):
        p = f"blocks.{n}"
        d = hparams["dilation_growth"] ** (n % hparams["stack_size"])
        s = hparams["stride"]
        y = conv(x, state[f"{p}.conv1.weight"], state[f"{p}.conv1.bias"], s, d, (k - 1) * d // 2)
        y = batch_norm(y, f"{p}.norm1")
        y = np.where(y >= 0, y, state[f"{p}.act1.weight"][None, :, None] * y)  # PReLU
        r = conv(x, state[f"{p}.res_conv.weight"], state[f"{p}.res_conv.bias"], s, 1, 0)
        x = y + batch_norm(r, f"{p}.res_norm")
    return conv(x, state["output.weight"], state["output.bias"], 1, 1, 0)


def _audio(batch: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 1, n)).astype(np.float32)


@pytest.mark.parametrize("lightning_classes", [True, False])
def test_lightning_checkpoint_loads_without_lightning(tmp_path, lightning_classes):
    path = testing.write_wavebeat_checkpoint(
        tmp_path / "w.ckpt", HPARAMS, seed=2, lightning_classes=lightning_classes
    )
    checkpoint, config = load_wavebeat(path)
    assert config == WaveBeatConfig.from_hparams(HPARAMS)
    assert type(checkpoint.kwargs) is dict and checkpoint.kwargs["target_factor"] == 256
    assert checkpoint.sha256 == file_sha256(path)
    assert not any(name.startswith("pytorch_lightning") for name in sys.modules)


def test_released_structure_grows_channels_by_channel_growth():
    config = WaveBeatConfig.from_hparams(configs.WAVEBEAT_HPARAMS)
    assert [config.channels(n) for n in (0, 1, 7)] == [(1, 32), (32, 64), (224, 256)]
    assert [config.dilation(n) for n in range(8)] == [1, 8, 64, 512] * 2
    assert config.stride**config.nblocks == 256
    assert config.target_sample_rate == 22050 / 256


def test_torch_module_matches_numpy_dstcn(checkpoint_path):
    model = load_wavebeat_model(checkpoint_path).model
    state = {k: v.double().numpy() for k, v in load_wavebeat(checkpoint_path)[0].state_dict.items()}
    audio = _audio(2, 3000, seed=3)
    want = _numpy_dstcn(state, HPARAMS, audio)
    got = model(torch.from_numpy(audio)).numpy()
    assert got.shape == want.shape == (2, 2, 12)
    np.testing.assert_allclose(got, want, rtol=0, atol=NUMPY_ATOL)


@pytest.mark.parametrize("n_samples", [1, 256, 257, 22050 + 13])
def test_onnx_activations_match_torch(checkpoint_path, exported, n_samples):
    model = load_wavebeat_model(checkpoint_path).model
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    audio = _audio(2, n_samples, seed=n_samples)
    got = session.run(["activations"], {"audio": audio})[0]
    want = torch.sigmoid(model(torch.from_numpy(audio))).numpy()
    assert got.shape == (2, 2, -(-n_samples // 256))
    np.testing.assert_allclose(got, want, rtol=0, atol=ONNX_ATOL)


def test_graph_metadata_holds_rates_and_checkpoint_hash(checkpoint_path, exported):
    meta = read_metadata(exported.path, WAVEBEAT_CONFIG_KEY, "test")
    assert meta == exported.config
    assert meta["audio_sample_rate"] == 22050 and meta["target_sample_rate"] == 22050 / 256
    assert meta["downsampling"] == 256
    assert meta["checkpoint_sha256"] == file_sha256(checkpoint_path)


def test_vampnet_checkpoint_is_not_a_wavebeat_one(tmp_path):
    path = testing.write_vampnet_checkpoint(tmp_path / "c2f.pth", configs.TINY_C2F_KWARGS)
    with pytest.raises(
        CheckpointError,
        match=r"load_wavebeat: '.*c2f.pth' must be a WaveBeat Lightning checkpoint with keys "
        r"'state_dict' and 'hyper_parameters', got \['metadata', 'state_dict'\]",
    ):
        load_wavebeat(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nblocks": None}, "hyper_parameters must contain 'nblocks'"),
        ({"noutputs": 3}, "noutputs must be 2, got 3"),
        ({"act_type": "GELU"}, "act_type must be one of"),
        ({"target_sample_rate": 0}, "target_sample_rate must be a number > 0, got 0"),
        ({"kernel_size": 4, "dilation_growth": 1}, r"\(kernel_size - 1\) \* dilation must be even"),
    ],
)
def test_unsupported_hyper_parameters_are_refused(tmp_path, change, message):
    path = testing.write_wavebeat_checkpoint(tmp_path / "w.ckpt", HPARAMS, lightning_classes=False)
    obj = torch.load(path, weights_only=True)
    hparams = {**obj["hyper_parameters"], **change}
    obj["hyper_parameters"] = {k: v for k, v in hparams.items() if v is not None}
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=f"load_wavebeat: '.*w.ckpt': {message}"):
        load_wavebeat(path)


def test_missing_tensor_is_named(tmp_path):
    path = testing.write_wavebeat_checkpoint(tmp_path / "w.ckpt", HPARAMS, lightning_classes=False)
    obj = torch.load(path, weights_only=True)
    del obj["state_dict"]["blocks.3.res_norm.running_var"]
    torch.save(obj, path)
    with pytest.raises(
        CheckpointError, match=r"state_dict must contain blocks.3.res_norm.running_var \(10,\)"
    ):
        load_wavebeat(path)


def test_other_lightning_globals_are_refused(tmp_path):
    path = tmp_path / "w.ckpt"
    obj = {"state_dict": {}, "hyper_parameters": {}, "loops": {"fit": pickle_bait}}
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="got pickle global\\(s\\) .*pickle_bait"):
        load_wavebeat(path)


def pickle_bait():
    """A module-level function: the pickle names it as a global to call."""
