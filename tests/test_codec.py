"""LAC codec: torch module vs ONNX graphs vs an independent numpy codec; folding; metadata;
the runtime `Codec` wrapper's validation."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import numpy_codec
from numpy_forward import load_raw
from vampnet_onnx import configs, testing
from vampnet_onnx.checkpoint import CheckpointError, load_codec
from vampnet_onnx.codec import (
    Codec,
    check_codes,
    decoded_length,
    read_codec_config,
    session_graph,
)
from vampnet_onnx.contracts import CODEC_CONFIG_KEY, CPU_CODEC_FILES, DECODE_FILE, ENCODE_FILE
from vampnet_onnx.export.codec import export_codec, export_codec_module
from vampnet_onnx.model.codec import fold_codec, load_codec_model

HOP = 768
N_CODEBOOKS = 14
# The released "768x" structure (rates, 14 codebooks of 1024 x 8) at tiny widths: latent width
# 2 * 2**4 = 32; decoder widths 96 // 2**k = 48, 24, 12, 6, 3, 1.
SMALL_KWARGS = {**configs.CODEC_KWARGS, "encoder_dim": 2, "decoder_dim": 96}


@pytest.fixture(scope="module")
def codec_path(tmp_path_factory):
    return testing.write_codec_checkpoint(
        tmp_path_factory.mktemp("codec") / "codec.pth", SMALL_KWARGS, seed=1
    )


@pytest.fixture(scope="module")
def loaded(codec_path):
    return load_codec_model(codec_path)


@pytest.fixture(scope="module")
def exported(codec_path, tmp_path_factory):
    return export_codec(codec_path, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def sessions(exported):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return tuple(
        ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        for p in (exported.encode_path, exported.decode_path)
    )


@pytest.fixture(scope="module")
def raw(codec_path):
    """(float64 state dict, kwargs) read straight from the file, for the numpy codec."""
    return load_raw(codec_path)


def random_audio(batch: int, n: int, seed: int) -> np.ndarray:
    """A decaying chord plus noise ``[B, 1, N]`` in about [-0.5, 0.5], float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44100
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220, 331, 1234))
    audio = 0.1 * tone * np.exp(-t) + 0.05 * rng.standard_normal((batch, 1, n))
    return audio.astype(np.float32)


def random_codes(batch: int, t: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, (batch, N_CODEBOOKS, t))


@pytest.mark.parametrize(
    ("n", "batch"), [(1, 2), (767, 2), (768, 2), (769, 2), (44100, 2), (441001, 1)]
)
def test_onnx_encode_tokens_match_torch(loaded, sessions, n, batch):
    audio = random_audio(batch, n, seed=n)
    (codes,) = sessions[0].run(None, {"audio": audio})
    expected = loaded.model.encode(torch.from_numpy(audio)).numpy()
    assert codes.dtype == np.int64
    assert codes.shape == expected.shape == (batch, N_CODEBOOKS, math.ceil(n / HOP))
    np.testing.assert_array_equal(codes, expected)


@pytest.mark.parametrize(("t", "batch"), [(1, 2), (2, 1), (58, 2)])
def test_onnx_decode_matches_torch(loaded, sessions, t, batch):
    codes = random_codes(batch, t, seed=t)
    (audio,) = sessions[1].run(None, {"codes": codes, "length": np.array(t * HOP)})
    expected = loaded.model.decode(torch.from_numpy(codes)).numpy()
    assert audio.dtype == np.float32
    assert audio.shape == expected.shape == (batch, 1, t * HOP)
    assert np.abs(audio - expected).max() <= 1e-4


def test_onnx_decode_keeps_the_first_length_samples(sessions):
    codes = random_codes(1, 3, seed=0)
    (whole,) = sessions[1].run(None, {"codes": codes, "length": np.array(3 * HOP)})
    for length in (0, 1, 2 * HOP + 5):
        (audio,) = sessions[1].run(None, {"codes": codes, "length": np.array(length)})
        assert audio.shape == (1, 1, length)
        np.testing.assert_array_equal(audio, whole[..., :length])


def test_onnx_decode_clamps_length_and_codes(sessions):
    """Documented graph behaviour for inputs `Codec.decode` refuses."""
    codes = random_codes(1, 2, seed=1)
    (whole,) = sessions[1].run(None, {"codes": codes, "length": np.array(2 * HOP)})
    (short,) = sessions[1].run(None, {"codes": codes, "length": np.array(-3)})
    (long,) = sessions[1].run(None, {"codes": codes, "length": np.array(10**9)})
    assert short.shape == (1, 1, 0)
    np.testing.assert_array_equal(long, whole)
    masked = codes.copy()
    masked[0, 5, 1] = 1024
    clamped = codes.copy()
    clamped[0, 5, 1] = 1023
    feed = {"length": np.array(2 * HOP)}
    (a,) = sessions[1].run(None, {"codes": masked, **feed})
    (b,) = sessions[1].run(None, {"codes": clamped, **feed})
    np.testing.assert_array_equal(a, b)


def test_encode_matches_numpy_codec(loaded, raw):
    sd, kwargs = raw
    audio = random_audio(2, 2 * HOP + 100, seed=7)
    latents = numpy_codec.encode_latents(sd, kwargs, audio)
    expected = numpy_codec.quantize(sd, kwargs, latents)
    codes = loaded.model.encode(torch.from_numpy(audio)).numpy()
    np.testing.assert_array_equal(codes, expected)


def test_decode_matches_numpy_codec(loaded, raw):
    sd, kwargs = raw
    codes = random_codes(2, 2, seed=8)
    expected = numpy_codec.decode(sd, kwargs, codes)
    audio = loaded.model.decode(torch.from_numpy(codes)).numpy()
    assert audio.shape == expected.shape == (2, 1, 2 * HOP)
    assert np.abs(audio - expected).max() <= 1e-4


def test_quantizer_nearest_code_is_cosine_with_raw_rows_for_the_residual(loaded, raw):
    """numpy twin of docs/model.md §5.4 on random latents, and two wrong rules it must not match."""
    sd, kwargs = raw
    latents = np.random.default_rng(3).standard_normal((1, 32, 300)) * 2.0
    codes = loaded.model.quantizer.encode(torch.from_numpy(latents).float()).numpy()
    np.testing.assert_array_equal(codes, numpy_codec.quantize(sd, kwargs, latents))
    # The test can tell: unit rows in the residual change the later codebooks ...
    wrong = numpy_codec.quantize(sd, kwargs, latents, unit_rows_for_residual=True)
    assert (wrong[:, 1:] != codes[:, 1:]).mean() > 0.5
    # ... and Euclidean distance to the raw rows picks other codes than cosine similarity.
    z_e = numpy_codec.conv1d(latents, sd, "quantizer.quantizers.0.in_proj")[0].T
    rows = sd["quantizer.quantizers.0.codebook.weight"]
    euclidean = ((z_e[:, None, :] - rows[None]) ** 2).sum(-1).argmin(-1)
    assert (euclidean != codes[0, 0]).mean() > 0.2


def test_weight_norm_fold_gives_row_norms_g(codec_path):
    checkpoint, config = load_codec(codec_path)
    params = fold_codec(checkpoint, config)
    sd = checkpoint.state_dict
    conv = params["encoder.block.1.block.4.weight"]  # [out, in, k]: one norm per output channel
    g = sd["encoder.block.1.block.4.weight_g"].flatten()
    torch.testing.assert_close(conv.flatten(1).norm(dim=1), g.abs(), rtol=1e-5, atol=0)
    # Transposed conv [in, out, k]: one norm per *input* channel, not per output channel.
    up = params["decoder.model.1.block.1.weight"]
    g = sd["decoder.model.1.block.1.weight_g"].flatten()
    assert up.shape == (96, 48, 12)
    torch.testing.assert_close(up.flatten(1).norm(dim=1), g.abs(), rtol=1e-5, atol=0)


def test_widths_come_from_the_checkpoint_kwargs(loaded):
    model = loaded.model
    assert model.quantizer.in_proj_weight.shape == (N_CODEBOOKS, 32, 8)
    ups = [model.decoder.model[k].block[1] for k in range(1, 7)]
    assert [(u.in_channels, u.out_channels, u.stride[0]) for u in ups] == [
        (96, 48, 6),
        (48, 24, 4),
        (24, 12, 4),
        (12, 6, 2),
        (6, 3, 2),
        (3, 1, 2),
    ]


def test_odd_decoder_rates_add_a_sample_per_rate_like_the_original(tmp_path):
    """TINY_CODEC_KWARGS has rates [3, 2, 2]: the rate-3 transposed conv makes 3L + 1."""
    path = testing.write_codec_checkpoint(tmp_path / "codec.pth", configs.TINY_CODEC_KWARGS)
    model = load_codec_model(path).model
    audio = model.decode(torch.zeros(1, N_CODEBOOKS, 5, dtype=torch.int64))
    assert audio.shape[-1] == decoded_length(5, [3, 2, 2]) == (5 * 3 + 1) * 4


def test_metadata_and_graph_signature(exported, codec_path):
    sha = hashlib.sha256(codec_path.read_bytes()).hexdigest()
    for path, inputs, outputs in (
        (exported.encode_path, ["audio"], ["codes"]),
        (exported.decode_path, ["codes", "length"], ["audio"]),
    ):
        config = read_codec_config(path)
        assert config == exported.config
        assert config["checkpoint_sha256"] == sha
        assert (config["sample_rate"], config["hop_length"]) == (44100, HOP)
        assert (config["n_codebooks"], config["codebook_size"], config["codebook_dim"]) == (
            N_CODEBOOKS,
            1024,
            8,
        )
        model = onnx.load(str(path))
        assert [i.name for i in model.graph.input] == inputs
        assert [o.name for o in model.graph.output] == outputs
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
        assert CODEC_CONFIG_KEY in {p.key for p in model.metadata_props}
    model = onnx.load(str(exported.decode_path))
    length = model.graph.input[1].type.tensor_type
    assert length.elem_type == onnx.TensorProto.INT64 and len(length.shape.dim) == 0


def test_codec_wrapper_round_trip(exported, sessions):
    codec = Codec(exported.encode_path, exported.decode_path, intra_op_threads=2)
    audio = random_audio(1, 1000, seed=2)
    codes = codec.encode(audio[0, 0])
    np.testing.assert_array_equal(codes, sessions[0].run(None, {"audio": audio})[0])
    decoded = codec.decode(codes, length=1000)
    assert decoded.shape == (1, 1, 1000)
    assert codec.decode(codes).shape == (1, 1, 2 * HOP)


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (np.full((1, N_CODEBOOKS, 2), 1024), r"codes must be in \[0, 1024\), got 1024"),
        (np.full((1, N_CODEBOOKS, 2), -1), r"codes must be in \[0, 1024\), got -1"),
        (np.zeros((1, 4, 2), dtype=np.int64), r"codes must have shape \[B, 14, T\]"),
        (np.zeros((N_CODEBOOKS, 2), dtype=np.int64), r"codes must have shape \[B, 14, T\]"),
        (np.zeros((1, N_CODEBOOKS, 0), dtype=np.int64), r"with T >= 1"),
        (np.zeros((1, N_CODEBOOKS, 2)), r"codes must be an integer array, got float64"),
    ],
)
def test_codec_wrapper_rejects_bad_codes(exported, codes, message):
    codec = Codec(decode_path=exported.decode_path)
    with pytest.raises(ValueError, match=message):
        codec.decode(codes)


def test_check_codes_names_the_mask_token_position():
    codes = np.zeros((2, N_CODEBOOKS, 3), dtype=np.int64)
    codes[1, 4, 2] = 1024
    with pytest.raises(ValueError, match=r"at \[b, c, t\] = \[1, 4, 2\].*mask token 1024"):
        check_codes(codes, N_CODEBOOKS, 1024, "here")


@pytest.mark.parametrize("length", [-1, 2 * HOP + 1, 1.5])
def test_codec_wrapper_rejects_bad_length(exported, length):
    codec = Codec(decode_path=exported.decode_path)
    with pytest.raises(ValueError, match="Codec.decode: length must be"):
        codec.decode(np.zeros((1, N_CODEBOOKS, 2), dtype=np.int64), length=length)


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros((1, 2, 100), dtype=np.float32), r"\[B, 1, N\] with N >= 1, got float32 \(1, 2"),
        (np.zeros(0, dtype=np.float32), r"with N >= 1, got float32 \(0,\)"),
        (np.full(10, np.nan, dtype=np.float32), "audio must be finite"),
        (np.zeros(10, dtype=np.int16), r"audio must be a float array .*, got int16"),
    ],
)
def test_codec_wrapper_rejects_bad_audio(exported, audio, message):
    codec = Codec(encode_path=exported.encode_path)
    with pytest.raises(ValueError, match=message):
        codec.encode(audio)


def test_codec_wrapper_rejects_graphs_of_different_checkpoints(exported, tmp_path):
    model = onnx.load(str(exported.decode_path))
    for prop in model.metadata_props:
        if prop.key == CODEC_CONFIG_KEY:
            prop.value = prop.value.replace(exported.config["checkpoint_sha256"], "0" * 64)
    other = tmp_path / "other.decode.onnx"
    onnx.save(model, str(other))
    with pytest.raises(ValueError, match="must come from the same codec.pth"):
        Codec(exported.encode_path, other)


def test_read_codec_config_rejects_other_graphs(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match=f"must have metadata {CODEC_CONFIG_KEY}, got none"):
        read_codec_config(path)


def test_export_rejects_missing_and_non_codec_files(tmp_path):
    with pytest.raises(CheckpointError, match="path must be an existing file"):
        export_codec(tmp_path / "missing.pth", tmp_path)
    vampnet = testing.write_vampnet_checkpoint(tmp_path / "coarse.pth", configs.TINY_COARSE_KWARGS)
    with pytest.raises(CheckpointError, match="kwargs must contain 'encoder_dim'"):
        export_codec(vampnet, tmp_path)
    text = tmp_path / "codec.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="must be a torch.save zip archive"):
        export_codec(text, tmp_path)


def test_export_rejects_old_opsets(loaded, tmp_path):
    with pytest.raises(ValueError, match="opset_version must be >= 18, got 17"):
        export_codec_module(loaded.model, tmp_path, {}, opset_version=17)


def test_a_decode_graph_given_as_the_encode_graph_is_named(exported):
    with pytest.raises(ValueError, match="Codec: encode_path must be a codec.encode.onnx"):
        Codec(exported.decode_path, exported.decode_path)


# --- the CPU variants of an fp32 folder's codec graphs (contracts.CPU_CODEC_FILES) ---------


def _op_types(path) -> set[tuple[str, str]]:
    return {
        (n.domain, n.op_type) for n in onnx.load(str(path), load_external_data=False).graph.node
    }


@pytest.mark.parametrize("name", [ENCODE_FILE, DECODE_FILE])
def test_an_fp32_folder_has_cpu_codec_graphs_with_the_snake_op(tiny_models_dir, name):
    standard, variant = tiny_models_dir / name, tiny_models_dir / CPU_CODEC_FILES[name]
    assert ("", "Sin") in _op_types(standard) and ("vampnet_onnx", "Snake") not in _op_types(
        standard
    )
    assert ("vampnet_onnx", "Snake") in _op_types(variant) and ("", "Sin") not in _op_types(variant)
    assert read_codec_config(variant) == read_codec_config(standard)


def test_a_cpu_codec_session_runs_the_variant_and_a_cuda_one_the_standard_graph(tiny_models_dir):
    encode = tiny_models_dir / ENCODE_FILE
    variant = tiny_models_dir / CPU_CODEC_FILES[ENCODE_FILE]
    assert session_graph(encode) == variant
    assert session_graph(encode, device="cpu") == variant
    assert session_graph(encode, ["CPUExecutionProvider"]) == variant
    assert session_graph(encode, device="cuda") == encode
    assert session_graph(encode, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == encode
    codec = Codec(encode, tiny_models_dir / DECODE_FILE)
    assert codec.graph_paths == {
        "encode_path": variant,
        "decode_path": tiny_models_dir / CPU_CODEC_FILES[DECODE_FILE],
    }


def test_a_folder_without_cpu_codec_graphs_runs_the_standard_ones(tiny_models_dir, tmp_path):
    for name in (ENCODE_FILE, DECODE_FILE):
        (tmp_path / name).symlink_to(tiny_models_dir / name)
    codec = Codec(tmp_path / ENCODE_FILE, tmp_path / DECODE_FILE)
    assert codec.graph_paths == {
        "encode_path": tmp_path / ENCODE_FILE,
        "decode_path": tmp_path / DECODE_FILE,
    }


def test_the_cpu_codec_gives_the_standard_codes_and_audio(tiny_models_dir):
    """The fused Snake computes the same float32 operations in another order of evaluation
    (docs/ops.md): the codes agree exactly on music-like input, the audio to float32 rounding."""
    standard = {
        n: ort.InferenceSession(str(tiny_models_dir / n)) for n in (ENCODE_FILE, DECODE_FILE)
    }
    codec = Codec(tiny_models_dir / ENCODE_FILE, tiny_models_dir / DECODE_FILE)
    audio = random_audio(1, 3 * 44100, seed=5)
    codes = codec.encode(audio[0, 0])
    np.testing.assert_array_equal(codes, standard[ENCODE_FILE].run(None, {"audio": audio})[0])
    length = np.array(codes.shape[2] * HOP, np.int64)
    want = standard[DECODE_FILE].run(None, {"codes": codes, "length": length})[0]
    got = codec.decode(codes)
    snr = 10 * np.log10((want.astype(np.float64) ** 2).sum() / ((got - want) ** 2).sum())
    assert snr >= 100.0, snr
