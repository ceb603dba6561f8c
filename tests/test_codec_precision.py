"""fp16 codec graphs (`export.precision.codec_to_float16`) and int8 folders' codec graphs (fp32
computation from float16-stored weights, `codec_weights_to_float16`) against the fp32 ones: the
precision issue's quality gates on the small codec with the real rates, on ONNX Runtime's CPU
provider, and what the converted graphs keep in float32."""

from __future__ import annotations

import functools
import json

import numpy as np
import onnx
import pytest

from vampnet_onnx import configs, contracts, testing
from vampnet_onnx.codec import Codec, read_codec_config
from vampnet_onnx.export.codec import export_codec
from vampnet_onnx.export.precision import codec_to_float16, codec_weights_to_float16

HOP = 768
#: Encode tokens of the fp16 graph equal to the fp32 graph's, at least (the precision issue's
#: gate). A token differs where two codebook rows are nearly equidistant from the residual and
#: fp16's rounding (relative 2**-11) of the latents tips the choice; a flip changes the residual,
#: so the later codebooks of that frame may follow. Measured 99.6 % here and 99.99 % on the
#: full-size codec (10 s); with the quantizer in fp16 too, 99.0 % here, 98.75 % on a 10-s clip
#: with this codec and 99.3 % full size: why the quantizer stays float32.
MIN_TOKEN_AGREEMENT = 0.99
#: Decode SNR against the fp32 decode, dB (the issue's fp16 gate: an error 1 % of the signal's
#: amplitude; its int8 gate, 30 dB, is looser, and the int8 folder's codec is held to this one).
#: Measured 45.8 dB here on random codes, 45.7 dB on encoded ones (fp16).
MIN_DECODE_SNR_DB = 40.0
#: The converted variants: fp16 computation; fp32 computation from float16 weights; and that
#: with the Snake op, an int8 folder's codec (tests/test_snake.py compares the last two).
CONVERTERS = {
    "fp16": codec_to_float16,
    "fp16 weights": codec_weights_to_float16,
    "int8 folder": functools.partial(codec_weights_to_float16, snake_op=True),
}
#: Lengths that are not multiples of the hop (the graph pads them), 131 and 391 frames.
LENGTHS = (100_001, 300_007)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec_fp16")
    checkpoint = testing.write_codec_checkpoint(
        root / "codec.pth", configs.SMALL_CODEC_KWARGS, seed=1
    )
    exported = export_codec(checkpoint, root)
    return {
        "fp32": (exported.encode_path, exported.decode_path),
        **{
            name: tuple(
                convert(path, root / path.name.replace(".onnx", f".{name.replace(' ', '_')}.onnx"))
                for path in (exported.encode_path, exported.decode_path)
            )
            for name, convert in CONVERTERS.items()
        },
    }


@pytest.fixture(scope="module")
def codecs(graphs):
    return {name: Codec(*paths, intra_op_threads=2) for name, paths in graphs.items()}


def music_like_audio(n: int, seed: int) -> np.ndarray:
    """A decaying chord plus noise ``[N]`` in about [-0.5, 0.5], float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44100
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220, 331, 1234))
    return (0.1 * tone * np.exp(-t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    return float(10 * np.log10((reference**2).sum() / ((other - reference) ** 2).sum()))


@pytest.mark.parametrize("variant", CONVERTERS)
def test_encode_tokens_match_fp32(codecs, variant):
    equal = []
    for n in LENGTHS:
        audio = music_like_audio(n, seed=n)
        fp32, fp16 = (codecs[name].encode(audio) for name in ("fp32", variant))
        assert fp16.dtype == np.int64 and fp16.shape == fp32.shape == (1, 14, -(-n // HOP))
        equal.append((fp16 == fp32).ravel())
    assert np.concatenate(equal).mean() >= MIN_TOKEN_AGREEMENT


@pytest.mark.parametrize("variant", CONVERTERS)
@pytest.mark.parametrize("source", ["random codes", "encoded codes"])
def test_decode_snr_against_fp32(codecs, variant, source):
    if source == "random codes":
        codes = np.random.default_rng(0).integers(0, 1024, (1, 14, 200))
    else:
        codes = codecs["fp32"].encode(music_like_audio(200 * HOP - 5, seed=3))
    length = 200 * HOP - 5
    fp32, fp16 = (codecs[name].decode(codes, length) for name in ("fp32", variant))
    assert fp16.dtype == np.float32 and fp16.shape == fp32.shape == (1, 1, length)
    assert snr_db(fp32, fp16) >= MIN_DECODE_SNR_DB


def signature(values) -> list[tuple]:
    return [(v.name, v.type.tensor_type.elem_type, str(v.type.tensor_type.shape)) for v in values]


def test_fp16_graphs_record_their_precision_and_keep_their_signature(graphs):
    for fp32_path, fp16_path in zip(graphs["fp32"], graphs["fp16"]):
        fp32_config, fp16_config = read_codec_config(fp32_path), read_codec_config(fp16_path)
        assert (fp32_config["precision"], fp32_config["weights"]) == ("fp32", "fp32")
        assert fp16_config == {**fp32_config, "precision": "fp16", "weights": "fp16"}
        fp32_model, fp16_model = (onnx.load(str(p)) for p in (fp32_path, fp16_path))
        assert signature(fp16_model.graph.input) == signature(fp32_model.graph.input)
        assert signature(fp16_model.graph.output) == signature(fp32_model.graph.output)
        weights = {i.name: i.data_type for i in fp16_model.graph.initializer}
        conv_weights = {n.input[1] for n in fp16_model.graph.node if n.op_type == "Conv"}
        assert {weights[name] for name in conv_weights} == {onnx.TensorProto.FLOAT16}


def test_the_quantizer_stays_float32(graphs):
    """The nearest-code search compares float32 distances, and the decoder's codebook lookup
    reads float32 rows and hands the first convolution a float32 sum rounded once."""
    encode, decode = (onnx.load(str(path)) for path in graphs["fp16"])
    for model in (encode, decode):
        weights = {i.name: i.data_type for i in model.graph.initializer}
        assert weights["codec.quantizer.codebooks"] == onnx.TensorProto.FLOAT
    types = {v.name: v.type.tensor_type.elem_type for v in encode.graph.value_info}
    argmins = [n for n in encode.graph.node if n.op_type == "ArgMin"]
    assert len(argmins) == 14
    assert {types[n.input[0]] for n in argmins} == {onnx.TensorProto.FLOAT}
    producer = {out: node for node in decode.graph.node for out in node.output}
    first_conv = next(n for n in decode.graph.node if n.op_type == "Conv")
    cast = producer[first_conv.input[0]]
    types = {v.name: v.type.tensor_type.elem_type for v in decode.graph.value_info}
    assert cast.op_type == "Cast" and types[cast.input[0]] == onnx.TensorProto.FLOAT


def test_fp16_weights_graphs_compute_in_float32_from_float16_weights(graphs):
    """Every convolution reads a float32 cast of a float16 weight, and nothing else in the
    graph is float16: the only rounding is the weights'."""
    for fp32_path, path in zip(graphs["fp32"], graphs["fp16 weights"]):
        config = read_codec_config(path)
        assert config == {**read_codec_config(fp32_path), "weights": "fp16"}
        model = onnx.load(str(path))
        weights = {i.name: i.data_type for i in model.graph.initializer}
        producer = {out: node for node in model.graph.node for out in node.output}
        for conv in (n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")):
            cast = producer[conv.input[1]]
            assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT
            assert weights[cast.input[0]] == onnx.TensorProto.FLOAT16
        assert weights["codec.quantizer.codebooks"] == onnx.TensorProto.FLOAT
        typed = [*model.graph.value_info, *model.graph.input, *model.graph.output]
        assert onnx.TensorProto.FLOAT16 not in {v.type.tensor_type.elem_type for v in typed}


def test_fp16_weights_are_the_fp32_weights_rounded(graphs):
    """Each float16 weight is its float32 weight rounded to nearest, under the same name once
    cast; every other weight is unchanged."""
    for fp32_path, path in zip(graphs["fp32"], graphs["fp16 weights"]):
        fp32 = {
            i.name: onnx.numpy_helper.to_array(i)
            for i in onnx.load(str(fp32_path)).graph.initializer
        }
        model = onnx.load(str(path))
        converted = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
        weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        assert set(fp32) == set(weights) - set(converted.values()) | set(converted)
        for name, array in fp32.items():
            stored = weights[converted.get(name, name)]
            expected = array.astype(np.float16) if name in converted else array
            np.testing.assert_array_equal(stored, expected)
            assert stored.dtype == expected.dtype


def test_an_int8_folders_codec_has_no_sine_left(graphs):
    for path in graphs["int8 folder"]:
        types = [node.op_type for node in onnx.load(str(path)).graph.node]
        assert "Sin" not in types and types.count("Snake") > 0


def test_the_snake_op_changes_the_codec_far_less_than_fp16_weights(codecs):
    """Same tokens as the graph without the op, and a decode within 100 dB of it (measured
    110 dB), where the fp16 weights themselves are about 46 dB from fp32."""
    plain, fused = (codecs[name] for name in ("fp16 weights", "int8 folder"))
    audio = music_like_audio(100_001, seed=7)
    np.testing.assert_array_equal(fused.encode(audio), plain.encode(audio))
    codes = np.random.default_rng(0).integers(0, 1024, (1, 14, 150))
    assert snr_db(plain.decode(codes, 150 * HOP), fused.decode(codes, 150 * HOP)) >= 100.0


def test_codec_to_float16_refuses_a_graph_without_convolutions(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [])
    graph.output.append(onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1]))
    model = onnx.helper.make_model(graph)
    model.metadata_props.add(key=contracts.CODEC_CONFIG_KEY, value=json.dumps({}))
    onnx.save(model, str(tmp_path / "relu.onnx"))
    with pytest.raises(ValueError, match="codec_to_float16: graph must hold a Conv, got none"):
        codec_to_float16(tmp_path / "relu.onnx")
