"""Transformer export: ONNX vs torch vs an independent numpy forward, weights, metadata."""

from __future__ import annotations

import collections
import hashlib
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from numpy_forward import (
    linear_weight,
    load_raw,
    relative_bucket,
    to_btpv,
    vampnet_logits,
    weight_norm,
)
from vampnet_onnx import configs, testing
from vampnet_onnx.export.transformer import (
    CONFIG_KEY,
    export_module,
    export_transformer,
    read_config,
)
from vampnet_onnx.model.transformer import load_transformer, relative_position_bucket_table

KWARGS = {"coarse": configs.TINY_COARSE_KWARGS, "c2f": configs.TINY_C2F_KWARGS}
MASK = 1024


@pytest.fixture(scope="module")
def codec_path(tmp_path_factory):
    return testing.write_codec_checkpoint(
        tmp_path_factory.mktemp("codec") / "codec.pth", configs.TINY_CODEC_KWARGS, seed=3
    )


@pytest.fixture(scope="module", params=["coarse", "c2f"])
def exported(request, tmp_path_factory, codec_path):
    """(kind, checkpoint path, loaded torch model, export result, ORT session)."""
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    seed = {"coarse": 1, "c2f": 2}[kind]
    ckpt = testing.write_vampnet_checkpoint(root / f"{kind}.pth", KWARGS[kind], seed=seed)
    loaded = load_transformer(ckpt, codec_path)
    result = export_transformer(ckpt, codec_path, root / f"{kind}.onnx")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    return kind, ckpt, loaded, result, session


def random_codes(batch: int, n_codebooks: int, t: int, seed: int = 0) -> np.ndarray:
    """Codes ``[B, C, T]`` in [0, 1023] with about a third replaced by the mask token."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1024, (batch, n_codebooks, t))
    return np.where(rng.random(codes.shape) < 0.3, MASK, codes).astype(np.int64)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("t", [1, 7, 173, 575, 1000])
def test_onnx_logits_match_torch_module(exported, t, batch):
    _, _, loaded, _, session = exported
    codes = random_codes(batch, loaded.model.config.n_codebooks, t, seed=t)
    (logits,) = session.run(None, {"codes": codes})
    expected = loaded.model(torch.from_numpy(codes)).numpy()
    assert (
        logits.shape == expected.shape == (batch, t, loaded.model.config.n_predict_codebooks, 1024)
    )
    assert np.abs(logits - expected).max() <= 1e-4


@pytest.mark.parametrize("t", [173, 575])
def test_an_items_logits_do_not_depend_on_its_batch(exported, t):
    # Batched chunks (Vamp.vamp_batch) must draw the tokens of one-chunk runs, so every item's
    # logits must be the same bits at B = 1 and B > 1 (ORT's ReduceSum over the codebook axis
    # once summed in another order at B > 1: near-tie tokens flipped).
    _, _, loaded, _, session = exported
    codes = random_codes(4, loaded.model.config.n_codebooks, t, seed=t)
    (batched,) = session.run(None, {"codes": codes})
    for item in range(4):
        (alone,) = session.run(None, {"codes": codes[item : item + 1]})
        np.testing.assert_array_equal(alone[0], batched[item])


def test_onnx_runs_sequences_longer_than_2000_frames(exported):
    _, _, loaded, _, session = exported
    codes = random_codes(1, loaded.model.config.n_codebooks, 2048, seed=5)
    (logits,) = session.run(None, {"codes": codes})
    expected = loaded.model(torch.from_numpy(codes)).numpy()
    assert np.abs(logits - expected).max() <= 1e-4


@pytest.mark.parametrize("t", [1, 7, 173, 575])
def test_onnx_logits_match_independent_numpy_forward(exported, codec_path, t):
    # float64 numpy from the raw tensors vs float32 ORT. With d_model 64 and logits of order
    # one (|max| < 10), fp32 rounding over <= 256-term dot products and 2-3 layers stays
    # a few 1e-6 (measured <= 6e-6 up to T = 1000), so 1e-5 is a real check of the mapping.
    kind, ckpt, loaded, _, session = exported
    sd, kwargs = load_raw(ckpt)
    codec_sd, _ = load_raw(codec_path)
    codes = random_codes(2, kwargs["n_codebooks"], t, seed=100 + t)
    expected = to_btpv(
        vampnet_logits(sd, kwargs, codec_sd, codes), loaded.model.config.n_predict_codebooks
    )
    (logits,) = session.run(None, {"codes": codes})
    assert np.abs(logits - expected).max() <= 1e-5


def _expected_weights(sd: dict, codec_sd: dict, kwargs: dict) -> dict[str, np.ndarray]:
    """Initializer name -> folded checkpoint tensor, derived from the raw tensors."""
    n_cb, n_pred = kwargs["n_codebooks"], kwargs["n_codebooks"] - kwargs["n_conditioning_codebooks"]
    out_proj = sd["embedding.out_proj.weight"][:, :, 0]
    tables = [
        np.concatenate(
            [
                codec_sd[f"quantizer.quantizers.{c}.codebook.weight"],
                sd["embedding.special.MASK"][c : c + 1],
            ]
        )
        @ out_proj[:, 8 * c : 8 * c + 8].T
        for c in range(n_cb)
    ]
    classifier = weight_norm(sd["classifier.layers.0.weight_g"], sd["classifier.layers.0.weight_v"])
    # original row v * P + c -> our column c * V + v
    classifier = (
        classifier[:, :, 0].reshape(1024, n_pred, -1).transpose(1, 0, 2).reshape(n_pred * 1024, -1)
    )
    bias = sd["classifier.layers.0.bias"].reshape(1024, n_pred).T.reshape(-1)
    weights = {
        "embedding_table": np.concatenate(tables),
        "embedding_bias": sd["embedding.out_proj.bias"],
        "relative_attention_bias": sd[
            "transformer.layers.0.self_attn.relative_attention_bias.weight"
        ],
        "norm.weight": sd["transformer.norm.weight"],
        "classifier": classifier.T,
        "classifier_bias": bias,
    }
    for layer in range(kwargs["n_layers"]):
        p = f"transformer.layers.{layer}"
        weights[f"layers.{layer}.norm_1.weight"] = sd[f"{p}.norm_1.weight"]
        weights[f"layers.{layer}.norm_3.weight"] = sd[f"{p}.norm_3.weight"]
        weights[f"layers.{layer}.qkv"] = np.concatenate(
            [linear_weight(sd, f"{p}.self_attn.{w}") for w in ("w_qs", "w_ks", "w_vs")]
        ).T
        weights[f"layers.{layer}.out"] = linear_weight(sd, f"{p}.self_attn.fc").T
        weights[f"layers.{layer}.ffn_in"] = linear_weight(sd, f"{p}.feed_forward.w_1").T
        weights[f"layers.{layer}.ffn_out"] = linear_weight(sd, f"{p}.feed_forward.w_2").T
    return weights


def test_initializers_have_shape_mean_and_std_of_folded_tensors(exported, codec_path):
    _, ckpt, _, result, _ = exported
    sd, kwargs = load_raw(ckpt)
    codec_sd, _ = load_raw(codec_path)
    expected = _expected_weights(sd, codec_sd, kwargs)
    graph = onnx.load(str(result.path)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    assert set(expected) <= set(inits)
    for name, value in expected.items():
        got = inits[name].astype(np.float64)
        assert got.shape == value.shape, name
        assert got.mean() == pytest.approx(value.mean(), rel=1e-5, abs=1e-7), name
        assert got.std() == pytest.approx(value.std(), rel=1e-5), name
    # Everything else is a small graph constant (bucket table, offsets, shapes), not a weight.
    others = {name: v.size for name, v in inits.items() if name not in expected}
    assert max(others.values()) <= 92, others


def test_embedding_tables_are_codebook_rows_times_projection(exported, codec_path):
    _, ckpt, loaded, _, _ = exported
    sd, kwargs = load_raw(ckpt)
    codec_sd, _ = load_raw(codec_path)
    table = loaded.model.embedding_table.numpy().reshape(kwargs["n_codebooks"], 1025, -1)
    w = sd["embedding.out_proj.weight"][:, :, 0]
    last = kwargs["n_codebooks"] - 1
    codebook = codec_sd[f"quantizer.quantizers.{last}.codebook.weight"]
    np.testing.assert_allclose(table[last, 17], codebook[17] @ w[:, 8 * last :].T, atol=1e-6)
    mask_row = sd["embedding.special.MASK"][last] @ w[:, 8 * last :].T
    np.testing.assert_allclose(table[last, MASK], mask_row, atol=1e-6)
    # The out_proj bias is added once after the sum over codebooks, not inside any table.
    np.testing.assert_allclose(loaded.model.embedding_bias.numpy(), sd["embedding.out_proj.bias"])


def test_bucket_table_matches_spec_table():
    table = relative_position_bucket_table()
    spec = {
        0: 0,
        7: 7,
        8: 8,
        11: 8,
        12: 9,
        15: 9,
        16: 10,
        22: 10,
        23: 11,
        31: 11,
        32: 12,
        45: 12,
        46: 13,
        63: 13,
        64: 14,
        90: 14,
        91: 15,
    }
    assert {a: table[a] for a in spec} == spec
    assert len(table) == 92  # every larger distance is bucket 15 too


def test_position_bias_matches_float_log_buckets_up_to_4096(exported):
    _, _, loaded, _, _ = exported
    t = 4096
    bias = loaded.model.position_bias(t)[0, 0].numpy()
    positions = np.arange(t)
    bucket = relative_bucket(positions[None, :] - positions[:, None])
    expected = loaded.model.relative_attention_bias[:, 0].numpy()[bucket]
    np.testing.assert_array_equal(bias, expected)


def test_metadata_holds_config_and_checkpoint_hashes(exported, codec_path):
    kind, ckpt, _, result, _ = exported
    config = read_config(result.path)
    assert config == result.config
    kwargs = KWARGS[kind]
    assert config["kind"] == kind
    assert config["n_codebooks"] == kwargs["n_codebooks"]
    assert config["n_conditioning_codebooks"] == kwargs["n_conditioning_codebooks"]
    assert (config["vocab_size"], config["mask_token"]) == (1024, 1024)
    assert (config["d_model"], config["n_layers"], config["n_heads"]) == (
        kwargs["embedding_dim"],
        kwargs["n_layers"],
        kwargs["n_heads"],
    )
    assert config["hop_length"] == math.prod(configs.TINY_CODEC_KWARGS["decoder_rates"])
    assert config["sample_rate"] == 44100
    assert config["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert config["codec_sha256"] == hashlib.sha256(codec_path.read_bytes()).hexdigest()
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert json.loads(props[CONFIG_KEY]) == config


def test_graph_passes_checker_and_shape_inference(exported):
    _, _, loaded, result, _ = exported
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    (out,) = inferred.graph.output
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert dims == ["batch", "time", loaded.model.config.n_predict_codebooks, 1024]
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    (inp,) = inferred.graph.input
    assert inp.name == "codes" and inp.type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_classifier_ends_in_matmul_add_reshape_without_transpose(exported):
    _, _, _, result, _ = exported
    graph = onnx.load(str(result.path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    chain, name = [], "logits"
    for _ in range(3):
        node = producer[name]
        chain.append(node.op_type)
        name = node.input[0]
    assert chain == ["Reshape", "Add", "MatMul"]


def test_ort_fuses_rms_norms_and_scaled_attention_scores(exported, tmp_path):
    _, _, loaded, result, _ = exported
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(
        n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node
    )
    n_layers = loaded.model.config.n_layers
    assert ops["SimplifiedLayerNormalization"] == 2 * n_layers + 1
    assert ops["FusedMatMul"] == n_layers
    assert ops["Gelu"] == n_layers


def test_opset_18_export_matches_torch(exported, tmp_path):
    _, _, loaded, result, _ = exported
    path = export_module(loaded.model, tmp_path / "opset18.onnx", result.config, opset_version=18)
    assert onnx.load(str(path)).opset_import[0].version == 18
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    codes = random_codes(2, loaded.model.config.n_codebooks, 33)
    (logits,) = session.run(None, {"codes": codes})
    assert np.abs(logits - loaded.model(torch.from_numpy(codes)).numpy()).max() <= 1e-4


def test_opset_below_18_is_refused(exported, tmp_path):
    _, _, loaded, result, _ = exported
    with pytest.raises(ValueError, match="opset_version must be >= 18, got 17"):
        export_module(loaded.model, tmp_path / "old.onnx", result.config, opset_version=17)
