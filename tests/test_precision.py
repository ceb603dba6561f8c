"""int8 and fp16 graphs (`export.precision`): accuracy against fp32 on the real-structure tiny
models, exact sampling from whatever logits the converted transformer gives, and the export
paths."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

import vampnet_onnx
from vampnet_onnx import cli, configs, contracts, testing
from vampnet_onnx.codec import read_codec_config
from vampnet_onnx.export import export_models
from vampnet_onnx.export.generation import export_generation
from vampnet_onnx.export.precision import convert_transformer
from vampnet_onnx.export.transformer import export_transformer

KWARGS = {"coarse": configs.TINY_COARSE_KWARGS, "c2f": configs.TINY_C2F_KWARGS}
#: Mean KL(fp32 || converted) gates, nats per position: the precision issue's full-size gates.
#: The tiny coarse model measures about 5e-4 (int8) and 4e-7 (fp16) at 100 frames.
MAX_MEAN_KL = {"int8": 0.01, "fp16": 0.001}
CONVERTED = ("int8", "fp16")


@pytest.fixture(scope="module", params=["coarse", "c2f"])
def graphs(request, tmp_path_factory):
    kind = request.param
    root = tmp_path_factory.mktemp(f"int8_{kind}")
    checkpoint = testing.write_vampnet_checkpoint(root / f"{kind}.pth", KWARGS[kind], seed=4)
    codec = testing.write_codec_checkpoint(root / "codec.pth", configs.TINY_CODEC_KWARGS, seed=5)
    fp32 = export_transformer(checkpoint, codec, root / f"{kind}.onnx").path
    graphs = {"kind": kind, "fp32": fp32}
    for precision in CONVERTED:
        converted = convert_transformer(fp32, precision, root / f"{kind}.{precision}.onnx")
        graphs[precision] = converted
        graphs[f"{precision}-generation"] = export_generation(
            converted, root / f"{kind}.{precision}.generate.onnx"
        ).path
    return graphs


def vampnet_problem(kind: str, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes and VampNet's default mask: every 7th frame kept in codebooks 0-2."""
    n_codebooks = KWARGS[kind]["n_codebooks"]
    codes = np.random.default_rng(seed).integers(0, 1024, (1, n_codebooks, frames))
    mask = np.ones(codes.shape, bool)
    mask[:, :3, ::7] = False
    mask[:, : KWARGS[kind]["n_conditioning_codebooks"]] = False
    return codes, mask


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("precision", CONVERTED)
def test_converted_logits_stay_close_to_fp32(graphs, precision):
    codes, mask = vampnet_problem(graphs["kind"], 120, seed=1)
    model_input = np.where(mask, 1024, codes)
    logits = [
        vampnet_onnx.create_session(graphs[p]).run(None, {"codes": model_input})[0]
        for p in ("fp32", precision)
    ]
    assert logits[1].dtype == np.float32  # what the ops are handed
    fp32, converted = (log_softmax(x) for x in logits)
    kl = (np.exp(fp32) * (fp32 - converted)).sum(-1)  # [B, T, P] nats
    assert kl.mean() <= MAX_MEAN_KL[precision], kl.mean()
    assert (fp32.argmax(-1) == converted.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("precision", CONVERTED)
def test_converted_graphs_record_their_precision(graphs, precision):
    for key in (precision, f"{precision}-generation"):
        model = onnx.load(str(graphs[key]), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props[contracts.CONFIG_KEY])["precision"] == precision
    model = onnx.load(str(graphs[precision]))
    ops = {node.op_type for node in model.graph.node}
    if precision == "int8":
        assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    else:
        types = {init.data_type for init in model.graph.initializer}
        assert onnx.TensorProto.FLOAT16 in types
        # The norms and the softmax compute in float32: their input is cast to float32.
        producer = {out: node for node in model.graph.node for out in node.output}
        for op_type in ("Softmax", "Pow"):  # Pow -> ReduceMean -> Sqrt: the norm, in float32
            nodes = [n for n in model.graph.node if n.op_type == op_type]
            assert nodes, op_type
            for node in nodes:
                cast = producer[node.input[0]]
                to = {a.name: a.i for a in cast.attribute}.get("to")
                assert (cast.op_type, to) == ("Cast", onnx.TensorProto.FLOAT), node.name


def test_int8_stores_the_gather_tables_as_float16(graphs):
    """The embedding table and the relative position bias are read through a float32 Cast of
    their fp32 values rounded to float16; the other float32 weights keep their bits."""
    from onnx import numpy_helper

    fp32 = {
        i.name: numpy_helper.to_array(i) for i in onnx.load(str(graphs["fp32"])).graph.initializer
    }
    model = onnx.load(str(graphs["int8"]))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    cast_from = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    tables = {"embedding_table", "relative_attention_bias"}
    assert tables <= gathered and tables <= set(cast_from)
    for name in tables:
        stored = weights[cast_from[name]]
        assert stored.dtype == np.float16
        np.testing.assert_array_equal(stored, fp32[name].astype(np.float16))
    for name in set(fp32) & set(weights):
        if weights[name].dtype == np.float32:
            np.testing.assert_array_equal(weights[name], fp32[name])


def test_fp32_graphs_record_fp32(graphs):
    fp32_props = onnx.load(str(graphs["fp32"]), load_external_data=False).metadata_props
    config = json.loads({p.key: p.value for p in fp32_props}[contracts.CONFIG_KEY])
    assert config["precision"] == "fp32"


@pytest.mark.parametrize("precision", CONVERTED)
def test_the_ops_sample_exactly_from_the_converted_logits(graphs, precision):
    """The converted generation graph (one run) and the Python loop over the converted
    transformer (one run of it per step, then the kernels) give the same tokens: the ops see
    that transformer's logits unchanged."""
    codes, mask = vampnet_problem(graphs["kind"], 30, seed=2)
    graph = vampnet_onnx.Generator(graphs[f"{precision}-generation"])
    loop = vampnet_onnx.Generator(graphs[precision])
    settings = dict(steps=4, seed=7, temperature=0.9, top_p=0.95)
    np.testing.assert_array_equal(
        graph.generate(codes, mask, **settings), loop.generate(codes, mask, **settings)
    )


@pytest.mark.parametrize("precision", CONVERTED)
def test_export_models_converted_folder_vamps_with_both_pipelines(
    tiny_models_dir, tmp_path, precision
):
    root = tmp_path / "checkpoints"
    coarse = testing.write_vampnet_checkpoint(root / "coarse.pth", configs.TINY_COARSE_KWARGS)
    c2f = testing.write_vampnet_checkpoint(root / "c2f.pth", configs.TINY_C2F_KWARGS, seed=2)
    codec = testing.write_codec_checkpoint(root / "codec.pth", configs.SMALL_CODEC_KWARGS)
    # Over an fp32 folder: its CPU codec graphs would run the old codec, so they go.
    out = shutil.copytree(tiny_models_dir, tmp_path / "m")
    result = export_models(
        out, codec=codec, coarse=coarse, c2f=c2f, precision=precision, single_graph=True
    )
    assert sorted(p.name for p in result.removed) == sorted(contracts.CPU_CODEC_FILES.values())
    assert not any((out / name).exists() for name in contracts.CPU_CODEC_FILES.values())
    for kind in ("coarse", "c2f"):
        assert result.transformers[kind].config["precision"] == precision
        generator = vampnet_onnx.Generator(result.generations[kind].path)
        assert generator.config["precision"] == precision
    # fp16 converts the codec too; int8's codec computes in fp32 from fp16-stored weights
    # (docs/precision.md).
    codec_precision = "fp16" if precision == "fp16" else "fp32"
    for graph in (result.codec.encode_path, result.codec.decode_path, result.vamp.path):
        config = read_codec_config(graph)
        assert (config["precision"], config["weights"]) == (codec_precision, "fp16")
    assert result.codec.config == read_codec_config(result.codec.encode_path)
    from vampnet_onnx.pipeline import SingleGraphVamp, Vamp

    samples = np.random.default_rng(0).standard_normal(30000).astype(np.float32) * 0.1
    for vamp in (Vamp(out, threads=2), SingleGraphVamp(result.vamp.path, threads=2)):
        y, rate = vamp.vamp(samples, 44100, steps=2)
        assert y.shape == samples.shape and rate == 44100 and np.isfinite(y).all()


def test_cli_export_transformer_int8(tmp_path, capsys):
    checkpoint = testing.write_vampnet_checkpoint(tmp_path / "c.pth", configs.TINY_COARSE_KWARGS)
    codec = testing.write_codec_checkpoint(tmp_path / "k.pth", configs.TINY_CODEC_KWARGS)
    out = tmp_path / "coarse.onnx"
    argv = ["export-transformer", str(checkpoint), "--codec", str(codec), "--out", str(out)]
    assert cli.main([*argv, "--precision", "int8"]) == 0
    assert capsys.readouterr().out.strip().endswith("d_model 64, int8)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth", "coarse.onnx", "k.pth"]
    assert vampnet_onnx.Generator(out).config["precision"] == "int8"


@pytest.mark.parametrize("precision", ["fp32", *CONVERTED])
def test_generated_tokens_follow_the_graphs_own_softmax(graphs, tmp_path, precision):
    """Summed log-likelihood z-test: one step of the generation graph reveals every masked
    position with a token drawn from the softmax of its transformer's logits (temperature 1,
    no top-k/top-p). For N independent draws S = sum log p(token) has mean sum E[log p] and
    variance sum Var[log p]; |z| <= 4 fails a right sampler with probability about 6e-5. The
    same test on tokens drawn at temperature 0.5 (another distribution) must fail, so it has
    the power to see a wrong sampler."""
    kind = graphs["kind"]
    transformer = graphs[precision]
    graph = (
        export_generation(transformer, tmp_path / "fp32.generate.onnx").path
        if precision == "fp32"
        else graphs[f"{precision}-generation"]
    )
    codes, mask = vampnet_problem(kind, 150, seed=6)
    model_input = np.where(mask, 1024, codes)
    logits = vampnet_onnx.create_session(transformer).run(None, {"codes": model_input})[0]
    log_p = log_softmax(logits)  # [1, T, P, V]
    n_cond = KWARGS[kind]["n_conditioning_codebooks"]
    b, c, t = np.nonzero(mask[:, n_cond:])  # the predicted positions, [N]
    rows = log_p[b, t, c]  # [N, V]
    p = np.exp(rows)
    mean = (p * rows).sum(-1)
    var = (p * rows**2).sum(-1) - mean**2

    def z(temperature: float) -> float:
        out = vampnet_onnx.Generator(graph).generate(
            codes, mask, steps=1, seed=11, temperature=temperature
        )
        drawn = rows[np.arange(len(rows)), out[:, n_cond:][b, c, t]]
        return float((drawn.sum() - mean.sum()) / np.sqrt(var.sum()))

    assert abs(z(1.0)) <= 4
    assert z(0.5) > 4
