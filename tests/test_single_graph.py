"""The single-graph vamp (``vamp.onnx``, `export.vamp`) against the multi-graph pipeline on tiny
random-weight models: the same mask, codes and audio for the same seed and settings."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import soundfile

import vampnet_onnx
from vampnet_onnx import audio, cli, contracts
from vampnet_onnx.contracts import SOURCE_FILES, VAMP_FILE
from vampnet_onnx.export.vamp import export_vamp
from vampnet_onnx.pipeline import SingleGraphVamp, Vamp

SR = 44100
#: The pipeline decodes with the CPU variant of the codec (the Snake op, docs/precision.md), the
#: graph with its standard nodes: the same codes, audio equal to float32 rounding (the small
#: codec measures 2.9e-5 at most).
AUDIO_ATOL = 1e-4


@pytest.fixture(scope="module")
def models(tiny_models_dir):
    return tiny_models_dir


@pytest.fixture(scope="module")
def single(models):
    return vampnet_onnx.create_session(models / VAMP_FILE, intra_op_threads=2)


@pytest.fixture(scope="module")
def vamp(models):
    # One codec segment for any input here, as the single graph has.
    return Vamp(models, threads=2, segment_frames=10_000)


def noise(n_samples: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n_samples) * 0.1).astype(np.float32)


MASK_DEFAULTS = {k: v for k, v in contracts.VAMP_DEFAULTS.items() if k in contracts.VAMP_LIMITS}
SAMPLING = dict(n_steps=2, temperature=1.0, top_k=0, top_p=1.0, mask_temperature=10.5)
CASES = [
    # (samples, seed, mask settings, sampling settings)
    (int(12.5 * SR), 7, {}, dict(n_steps=2, top_k=20, temperature=0.8)),  # 2 coarse chunks
    (1, 0, dict(periodic_prompt=0, upper_codebook_mask=0, dropout=1.0), dict(n_steps=3)),
    (
        2 * SR + 11,
        2**62 + 5,
        dict(
            periodic_prompt=0, periodic_width=0, upper_codebook_mask=14, prefix_s=5.0, dropout=0.7
        ),
        dict(n_steps=3, top_p=0.9),
    ),
    (
        2 * SR,
        -3,
        dict(
            periodic_prompt=200, periodic_width=8, upper_codebook_mask=2, prefix_s=0.1, suffix_s=0.7
        ),
        dict(n_steps=2, mask_temperature=3.0),
    ),
    (SR, 11, dict(periodic_prompt=1, periodic_width=2, suffix_s=3.0, dropout=0.25), {}),
    (767, 12, dict(periodic_prompt=4, periodic_width=3, dropout=0.3), dict(n_steps=1)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_single_graph_equals_the_pipeline_stage_by_stage(single, vamp, case):
    n_samples, seed, mask_settings, sampling = CASES[case]
    x, _ = audio.preprocess(noise(n_samples, case), SR)
    mask_settings = MASK_DEFAULTS | mask_settings
    sampling = SAMPLING | sampling
    feed = {"audio": x, **contracts.VAMP.feed(seed=seed, **sampling, **mask_settings)}
    audio_out, codes, mask, codes_out = single.run(None, feed)

    np.testing.assert_array_equal(codes, vamp.encode(x))
    want_mask = vamp.build_mask(x, seed, onset_mask_width=0, **mask_settings)
    np.testing.assert_array_equal(mask, want_mask)
    generation = dict(sampling)
    generation["steps"] = generation.pop("n_steps")
    want_codes = vamp.generate(codes, want_mask, seed, **generation)
    np.testing.assert_array_equal(codes_out, want_codes)
    assert not np.array_equal(codes_out[want_mask], codes[want_mask]) or not want_mask.any()
    np.testing.assert_array_equal(codes_out[~want_mask], codes[~want_mask])
    np.testing.assert_allclose(audio_out, vamp.decode(want_codes, x.shape[0]), atol=AUDIO_ATOL)
    assert audio_out.shape == x.shape


def test_single_graph_vamp_equals_vamp_end_to_end(models, vamp):
    """Preprocess and restore around the graph: the same audio as `Vamp.vamp`, at 48 kHz stereo."""
    samples = np.random.default_rng(3).standard_normal((2, 48000)).astype(np.float32) * 0.2
    settings = dict(seed=9, steps=3, periodic_prompt=5, dropout=0.2, prefix_s=0.25)
    one = SingleGraphVamp(models / VAMP_FILE, threads=2)
    y, rate = one.vamp(samples, 48000, **settings)
    want, want_rate = vamp.vamp(samples, 48000, **settings)
    assert rate == want_rate == 48000 and y.shape == want.shape == (48000,)
    np.testing.assert_allclose(y, want, atol=AUDIO_ATOL)
    y44, rate44 = one.vamp(samples, 48000, keep_rate=False, **settings)
    assert (rate44, y44.shape) == (SR, (44100,))


def test_python_ops_fallback_gives_the_same_audio(models, single):
    x, _ = audio.preprocess(noise(SR // 2, 5), SR)
    feed = {
        "audio": x,
        **contracts.VAMP.feed(**(contracts.VAMP_DEFAULTS | {"n_steps": 2, "seed": 4})),
    }
    fallback = vampnet_onnx.create_session(models / VAMP_FILE, python_ops=True)
    for got, want in zip(fallback.run(None, feed), single.run(None, feed)):
        np.testing.assert_array_equal(got, want)


BAD_SETTINGS = [
    ({"dropout": 1.5}, "Vamp: dropout must be in [0, 1], got 1.5"),
    ({"dropout": float("nan")}, "Vamp: dropout must be in [0, 1], got nan"),
    # Checked before use: a huge value would otherwise ask for a huge draw.
    ({"dropout": 1e30}, "Vamp: dropout must be in [0, 1], got 1e+30"),
    ({"prefix_s": 3e38}, "Vamp: prefix_s must be in [0, 10000000], got 3e+38"),
    ({"prefix_s": -0.5}, "Vamp: prefix_s must be in [0, 10000000], got -0.5"),
    ({"suffix_s": float("inf")}, "Vamp: suffix_s must be in [0, 10000000], got inf"),
    ({"periodic_prompt": -1}, "Vamp: periodic_prompt must be in [0, 1000000], got -1"),
    ({"periodic_prompt": 1_000_001}, "Vamp: periodic_prompt must be in [0, 1000000], got 1000001"),
    ({"periodic_width": -2}, "Vamp: periodic_width must be in [0, 1000000], got -2"),
    ({"upper_codebook_mask": -1}, "Vamp: upper_codebook_mask must be in [0, 1000000], got -1"),
    ({"n_steps": 0}, "MaskGitStep: n_steps must be >= 1, got 0"),
    ({"top_p": 0.0}, "MaskGitStep: top_p must be in (0, 1], got 0"),
]


@pytest.mark.parametrize("bad, message", BAD_SETTINGS)
def test_bad_settings_fail_inside_the_graph_with_the_house_format(single, bad, message):
    x, _ = audio.preprocess(noise(SR // 4, 1), SR)
    feed = {"audio": x, **contracts.VAMP.feed(**(contracts.VAMP_DEFAULTS | bad))}
    with pytest.raises(Exception, match=re.escape(message)):
        single.run(None, feed)


@pytest.mark.parametrize(
    "bad, message", [case for case in BAD_SETTINGS if set(case[0]) <= set(contracts.VAMP_LIMITS)]
)
def test_python_api_gives_the_graphs_messages_before_running(models, bad, message):
    name, value = next(iter(bad.items()))
    one = SingleGraphVamp(models / VAMP_FILE)
    for vamp_api, where in ((one, "SingleGraphVamp.vamp"), (Vamp(models), "Vamp.vamp")):
        with pytest.raises(ValueError, match=re.escape(message.replace("Vamp:", f"{where}:"))):
            vamp_api.vamp(noise(100, 0), SR, **{name: value})


def test_single_graph_refuses_the_onset_mask_and_other_graphs(models):
    with pytest.raises(ValueError, match="onset_mask_width must be 0 .* got 2"):
        SingleGraphVamp(models / VAMP_FILE).vamp(noise(1000, 0), SR, onset_mask_width=2)
    with pytest.raises(ValueError, match="SingleGraphVamp: path must be a vamp.onnx"):
        SingleGraphVamp(models / "coarse.generate.onnx")


def test_weights_are_stored_once_and_metadata_is_complete(models):
    size = (models / VAMP_FILE).stat().st_size
    sources = sum((models / name).stat().st_size for name in SOURCE_FILES)
    assert sources * 0.99 < size < sources * 1.01
    model = onnx.load(str(models / VAMP_FILE))
    onnx.checker.check_model(model, full_check=False)
    assert [i.name for i in model.graph.input] == contracts.VAMP.input_names
    assert [o.name for o in model.graph.output] == contracts.VAMP.output_names
    props = {p.key: p.value for p in model.metadata_props}
    settings = json.loads(props[contracts.VAMP_KEY])
    assert settings["coarse_chunk_frames"] == 575 and settings["c2f_chunk_frames"] == 173
    assert settings["defaults"] == contracts.VAMP_DEFAULTS
    assert json.loads(props[contracts.CODEC_CONFIG_KEY])["hop_length"] == 768


def test_export_refuses_incomplete_folders(models, tmp_path):
    (tmp_path / "codec.encode.onnx").write_bytes((models / "codec.encode.onnx").read_bytes())
    with pytest.raises(FileNotFoundError, match="without coarse.onnx, c2f.onnx, codec.decode.onnx"):
        export_vamp(tmp_path)


def test_cli_vamp_with_the_single_graph_writes_the_pipelines_audio(models, tmp_path, capsys):
    wav = tmp_path / "in.wav"
    soundfile.write(wav, np.random.default_rng(0).standard_normal(30000) * 0.1, 32000)
    outputs = {}
    for name, path in (("graph", models / VAMP_FILE), ("folder", models)):
        outputs[name] = tmp_path / f"{name}.wav"
        argv = ["vamp", str(wav), str(outputs[name]), "--models", str(path), "--steps", "2"]
        assert cli.main([*argv, "--quiet", "--seed", "3", "--dropout", "0.1"]) == 0
    graph, rate = soundfile.read(outputs["graph"], dtype="float32")
    folder, _ = soundfile.read(outputs["folder"], dtype="float32")
    assert rate == 32000 and graph.shape == (30000,)
    np.testing.assert_allclose(graph, folder, atol=1e-4)  # 16-bit files
    assert (
        cli.main(
            [
                "vamp",
                str(wav),
                str(tmp_path / "o.wav"),
                "--models",
                str(models / VAMP_FILE),
                "--onset-mask",
                "2",
            ]
        )
        == 1
    )
    assert "--onset-mask must be 0" in capsys.readouterr().err


def test_cli_export_single_graph_needs_both_models(tmp_path, capsys):
    argv = ["export", "--coarse", str(tmp_path / "c.pth"), "--codec", str(tmp_path / "x.pth")]
    assert cli.main([*argv, "--out", str(tmp_path), "--single-graph"]) == 1
    assert "--single-graph must come with both --coarse and --c2f" in capsys.readouterr().err


def test_single_graph_runs_without_torch(models):
    """The deployment path: onnxruntime + the op library, torch never imported."""
    code = (
        "import sys, numpy as np, vampnet_onnx\n"
        "from vampnet_onnx import contracts\n"
        f"s = vampnet_onnx.create_session({str(models / VAMP_FILE)!r})\n"
        "x = np.zeros(2000, np.float32)\n"
        "feed = {'audio': x, **contracts.VAMP.feed(**(contracts.VAMP_DEFAULTS | {'n_steps': 1}))}\n"
        "assert s.run(['audio_out'], feed)[0].shape == (2000,)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
