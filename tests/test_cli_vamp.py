"""`vampnet-onnx vamp` and `vampnet-onnx demo` end to end on tiny random-weight models."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile

from vampnet_onnx import cli, demo


@pytest.fixture(scope="module")
def models(tiny_models_dir) -> Path:
    return tiny_models_dir


@pytest.fixture
def wav(tmp_path) -> Path:
    """1.2 s of stereo noise at 48 kHz."""
    path = tmp_path / "in.wav"
    samples = np.random.default_rng(0).standard_normal((57600, 2)) * 0.1
    soundfile.write(path, samples, 48000)
    return path


def error_line(capsys) -> str:
    """The single line the command printed to stderr."""
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def test_vamp_writes_mono_audio_of_the_input_length_and_rate(models, wav, tmp_path, capsys):
    out = tmp_path / "out.wav"
    argv = ["vamp", str(wav), str(out), "--models", str(models), "--steps", "2", "--quiet"]
    assert cli.main([*argv, "--seed", "5", "--periodic-prompt", "3", "--top-p", "0.9"]) == 0
    info = soundfile.info(out)
    assert (info.frames, info.samplerate, info.channels) == (57600, 48000, 1)
    assert capsys.readouterr().out.strip() == f"wrote {out} (48000 Hz)"


def test_vamp_codec_rate_writes_44100(models, wav, tmp_path):
    out = tmp_path / "out.flac"
    argv = ["vamp", str(wav), str(out), "--models", str(models), "--steps", "1", "--quiet"]
    assert cli.main([*argv, "--codec-rate"]) == 0
    info = soundfile.info(out)
    assert (info.frames, info.samplerate) == (52920, 44100)


def test_vamp_missing_input_is_a_one_line_error(models, tmp_path, capsys):
    argv = ["vamp", str(tmp_path / "nope.wav"), str(tmp_path / "o.wav"), "--models", str(models)]
    assert cli.main(argv) == 1
    assert error_line(capsys) == (
        f"vampnet-onnx vamp: error: load_audio: path must be an existing file, got "
        f"'{tmp_path / 'nope.wav'}'"
    )


def test_vamp_non_audio_file_is_a_one_line_error(models, tmp_path, capsys):
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n")
    assert cli.main(["vamp", str(text), str(tmp_path / "o.wav"), "--models", str(models)]) == 1
    line = error_line(capsys)
    assert line.startswith("vampnet-onnx vamp: error: load_audio: path must be an audio file")
    assert str(text) in line and not (tmp_path / "o.wav").exists()


def test_vamp_incomplete_models_folder_names_the_missing_files(wav, tmp_path, capsys):
    assert cli.main(["vamp", str(wav), str(tmp_path / "o.wav"), "--models", str(tmp_path)]) == 1
    line = error_line(capsys)
    assert line.startswith("vampnet-onnx vamp: error: Vamp: models must be a folder with")
    assert line.endswith(
        "without codec.encode.onnx, coarse.generate.onnx, c2f.generate.onnx, codec.decode.onnx"
    )


def test_vamp_bad_setting_is_a_one_line_error(models, wav, tmp_path, capsys):
    argv = ["vamp", str(wav), str(tmp_path / "o.wav"), "--models", str(models)]
    assert cli.main([*argv, "--dropout", "2"]) == 1
    assert error_line(capsys) == "vampnet-onnx vamp: error: --dropout must be in [0, 1], got 2"


def test_vamp_verbose_raises(models, wav, tmp_path):
    argv = ["vamp", str(wav), str(tmp_path / "o.wav"), "--models", str(models), "--verbose"]
    with pytest.raises(ValueError, match="--dropout must be in"):
        cli.main([*argv, "--dropout", "2"])


@pytest.mark.parametrize("command", ["vamp", "demo", "export", "export-codec"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: vampnet-onnx" in capsys.readouterr().out


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB, unfiltered PNG as `demo.write_png` writes it: uint8 [H, W, 3]."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


def test_log_frequency_axis_puts_a_tone_at_its_log_position():
    """A 440 Hz tone lands on the row of 440 Hz on the 40 Hz - Nyquist log axis."""
    sr = 44100
    tone = np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    rows = demo.log_frequency(demo.spectrogram_db(tone), sr)
    assert rows.shape[0] == demo.LOG_ROWS
    expected = np.log(440 / 40) / np.log(sr / 2 / 40) * (demo.LOG_ROWS - 1)
    assert abs(int(np.argmax(rows.mean(axis=1))) - expected) <= 2


def test_write_png_round_trips(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_png(demo.write_png(tmp_path / "x.png", image)), image)


def test_demo_exports_once_and_writes_audio_and_spectrograms(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--seconds", "2", "--steps", "2", "--quiet"]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["in.wav", "out.wav", "spectrograms.png"]
    assert soundfile.info(out / "out.wav").frames == 88200
    image = read_png(out / "spectrograms.png")
    # Two titled log-frequency spectrograms over a time axis; 2 s at hop 256 -> 345 frames.
    assert image.shape == (2 * (demo._TITLE + demo.LOG_ROWS) + demo._BOTTOM, demo._LEFT + 353, 3)
    captured = capsys.readouterr()
    assert str(out / "spectrograms.png") in captured.out
    # --quiet: no export bar and no line per graph (they showed before).
    assert "export:" not in captured.err and "exported" not in captured.out
    models = tmp_path / "cache" / "vampnet-onnx" / "demo" / "models"
    assert sorted(p.name for p in (models.parent).iterdir()) == ["models"]
    stamp = (models / "coarse.generate.onnx").stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert (models / "coarse.generate.onnx").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--beat-mask", "100"], "--beat-mask"),
        (
            ["--preset", "medium variation (follow beat)"],
            "--preset 'medium variation (follow beat)'",
        ),
    ],
)
def test_the_demo_refuses_a_beat_mask_up_front(tmp_path, monkeypatch, capsys, extra, named):
    """Its models have no wavebeat.onnx: the error came after the export and the synthesis."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), *extra]) == 1
    assert error_line(capsys).startswith(
        f"vampnet-onnx demo: error: {named} must not come with the demo: a beat mask needs a "
        "beat tracker"
    )
    assert not (tmp_path / "cache").exists() and not (tmp_path / "demo").exists()


def test_the_spectrogram_figure_has_titles_and_axes_around_the_panels():
    """Before: two bare panels, no telling which is the input nor what the axes are."""
    rate = 44100
    x = demo.synth_music(3.0, rate)
    y = (np.random.default_rng(0).standard_normal(2 * rate) * 0.1).astype(np.float32)
    figure = demo.spectrogram_figure([x, y], ["input", "output"], rate)
    top, left = demo._TITLE, demo._LEFT
    for signal in (x, y):
        panel = demo.spectrogram_image([signal], rate)
        h, w = panel.shape[:2]
        np.testing.assert_array_equal(figure[top : top + h, left : left + w], panel)
        title = figure[top - demo._TITLE : top, left : left + 6 * demo._CHAR_W]
        assert (title == 0).any()  # the title's ink
        top += h + demo._TITLE
    # Frequency labels left of the panels, time ticks below them at 0, 1, 2 s.
    assert (figure[demo._TITLE : demo._TITLE + demo.LOG_ROWS, : left - 4] == 0).any()
    axis = top - demo._TITLE
    for second in (0, 1, 2):
        assert (figure[axis : axis + 3, left + round(second * rate / 256)] == 0).all()


def test_the_spectrogram_figure_needs_a_title_per_signal():
    with pytest.raises(ValueError, match="titles must name every signal"):
        demo.spectrogram_figure([np.zeros(100, np.float32)], [])


def test_demo_exports_again_when_the_cache_is_from_other_contracts(tmp_path, monkeypatch):
    """A demo cache exported for other graph inputs (an older version) is exported again
    instead of failing."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    models = demo.demo_cache() / "models"
    models.mkdir(parents=True)
    for name in (
        "codec.encode.onnx",
        "coarse.generate.onnx",
        "c2f.generate.onnx",
        "codec.decode.onnx",
    ):
        (models / name).write_bytes(b"stale")
    (models / "contracts.json").write_text('{"generation": ["codes"]}')
    argv = ["demo", "--out", str(tmp_path / "demo"), "--seconds", "1", "--steps", "1", "--quiet"]
    assert cli.main(argv) == 0
    assert (models / "coarse.generate.onnx").read_bytes() != b"stale"


def test_vamp_refuses_to_overwrite_its_input(models, wav, capsys):
    before = wav.read_bytes()
    assert cli.main(["vamp", str(wav), str(wav), "--models", str(models), "--quiet"]) == 1
    assert "OUT must not be the input file (it would be overwritten)" in error_line(capsys)
    assert wav.read_bytes() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dropout", "2"], "vampnet-onnx vamp: error: --dropout must be in [0, 1], got 2"),
        (["--beat-mask", "-1"], "error: --beat-mask must be a finite number >= 0, got -1.0"),
        (["--steps", "0"], "error: --steps must be an int >= 1, got 0"),
        (["--top-k", "99999999999999999999"], "error: --top-k must fit an int64"),
        (["--steps", "9223372036854775808"], "error: --steps must be at most 10000"),
        (["--top-p", "1e-50"], "error: --top-p must be None or in (0, 1] as a float32, got 1e-50"),
    ],
)
def test_bad_settings_fail_before_the_models_are_read(wav, tmp_path, capsys, extra, message):
    """The models folder does not exist: the settings error shows it was never opened."""
    out = tmp_path / "o.wav"
    argv = ["vamp", str(wav), str(out), "--models", str(tmp_path / "no-models"), *extra]
    assert cli.main(argv) == 1
    assert message in error_line(capsys)
    assert not out.exists()


def test_an_unwritable_output_fails_before_the_models_are_read(wav, tmp_path, capsys):
    out = tmp_path / "missing" / "o.wav"
    argv = ["vamp", str(wav), str(out), "--models", str(tmp_path / "no-models")]
    assert cli.main(argv) == 1
    assert error_line(capsys) == (
        f"vampnet-onnx vamp: error: OUT must be in an existing folder, got '{out}'"
    )


def test_ctrl_c_is_one_line_and_status_130(models, wav, tmp_path, capsys, monkeypatch):
    from vampnet_onnx.pipeline import Vamp

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Vamp, "vamp_file", interrupted)
    out = tmp_path / "o.wav"
    assert cli.main(["vamp", str(wav), str(out), "--models", str(models), "--quiet"]) == 130
    assert error_line(capsys) == "vampnet-onnx vamp: interrupted"
    assert not out.exists()


@pytest.mark.skipif(
    "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
    reason="CUDA is available here",
)
def test_device_cuda_without_cuda_is_one_line_before_loading(wav, tmp_path, capsys):
    argv = ["vamp", str(wav), str(tmp_path / "o.wav"), "--models", str(tmp_path / "none")]
    assert cli.main([*argv, "--device", "cuda"]) == 1
    line = error_line(capsys)
    assert line.startswith("vampnet-onnx vamp: error: --device 'cuda' needs onnxruntime's")


def test_synth_music_stays_finite_on_long_clips():
    # Beats that start late once overflowed exp() before their start (inf * 0 = NaN), so a
    # demo over about a minute fed NaN to the pipeline.
    with np.errstate(over="raise", invalid="raise"):
        x = demo.synth_music(70.0, 8000)
    assert np.isfinite(x).all() and np.abs(x).max() == pytest.approx(0.9)


def test_synth_music_renders_each_chord_once_however_long(monkeypatch):
    """Before: every beat computed over the whole signal, so synth_music(120, 96000) did not
    finish in 8 minutes. Now a beat is rendered once per chord and added over its tail: work
    linear in the length."""
    calls = []
    render = demo._beat
    monkeypatch.setattr(demo, "_beat", lambda *args: calls.append(1) or render(*args))
    x = demo.synth_music(120.0, 96000)
    assert x.shape == (120 * 96000,) and np.isfinite(x).all()
    assert len(calls) == len(demo._CHORDS)


def test_a_beat_is_the_chord_and_kick_from_its_start():
    """The first beat's samples (before the second beat and the hi-hat) are `_beat` at t."""
    rate = 8000
    x = demo.synth_music(2.0, rate).astype(np.float64)
    t = np.arange(rate // 4) / rate
    first = demo._beat(demo._CHORDS[0], t)
    # synth_music normalises its peak to 0.9: compare shapes.
    np.testing.assert_allclose(x[: rate // 4] / x[100], first / first[100], rtol=1e-4, atol=1e-4)


def write_noise(path: Path, seconds: float, sample_rate: int, seed: int) -> Path:
    samples = np.random.default_rng(seed).standard_normal(round(seconds * sample_rate)) * 0.1
    soundfile.write(path, samples, sample_rate)
    return path


def test_vamp_out_dir_writes_what_vamp_in_out_writes(models, tmp_path, capsys):
    """Several inputs (other lengths, rates and formats) to --out-dir, batched: each output is
    the file `vamp IN OUT` writes with the same options, byte for byte."""
    (tmp_path / "in").mkdir()
    inputs = [
        write_noise(tmp_path / "in" / "a.wav", 1.2, 48000, 1),
        write_noise(tmp_path / "in" / "b.flac", 0.3, 44100, 2),
        write_noise(tmp_path / "in" / "c.wav", 4.0, 22050, 3),
    ]
    options = ["--models", str(models), "--steps", "1", "--seed", "6", "--quiet"]
    out_dir = tmp_path / "new" / "out"
    argv = ["vamp", *map(str, inputs), "--out-dir", str(out_dir), "--batch-size", "2"]
    assert cli.main([*argv, *options]) == 0
    written = [out_dir / "a.wav", out_dir / "b.flac", out_dir / "c.wav"]
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [f"wrote {p} ({r} Hz)" for p, r in zip(written, (48000, 44100, 22050))]
    for path, out in zip(inputs, written):
        one = tmp_path / f"one{out.suffix}"
        assert cli.main(["vamp", str(path), str(one), *options]) == 0
        assert one.read_bytes() == out.read_bytes()


def test_vamp_out_dir_refuses_inputs_with_one_name(models, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    first = write_noise(tmp_path / "a.wav", 0.1, 44100, 1)
    second = write_noise(tmp_path / "x" / "a.wav", 0.1, 44100, 2)
    argv = ["vamp", str(first), str(second), "--out-dir", str(tmp_path / "out")]
    assert cli.main([*argv, "--models", str(models)]) == 1
    assert error_line(capsys) == (
        f"vampnet-onnx vamp: error: IN must have distinct names in --out-dir, got '{first}' and "
        f"'{second}', both written to '{tmp_path / 'out' / 'a.wav'}'"
    )
    assert not (tmp_path / "out").exists()


def test_vamp_out_dir_refuses_to_overwrite_an_input(models, tmp_path, capsys):
    path = write_noise(tmp_path / "a.wav", 0.1, 44100, 1)
    before = path.read_bytes()
    argv = ["vamp", str(path), "--out-dir", str(tmp_path), "--models", str(models)]
    assert cli.main(argv) == 1
    assert error_line(capsys) == (
        f"vampnet-onnx vamp: error: --out-dir must not be the input file (it would be "
        f"overwritten), got '{path}'"
    )
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["a.wav"], "IN OUT must be two paths (or IN... with --out-dir DIR), got 1"),
        (
            ["a.wav", "b.wav", "c.wav"],
            "IN OUT must be two paths (or IN... with --out-dir DIR), got 3",
        ),
        (["a.wav", "b.wav", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ],
)
def test_vamp_path_count_and_batch_size_are_checked_first(tmp_path, capsys, argv, message):
    full = ["vamp", *argv, "--models", str(tmp_path / "no-models")]
    assert cli.main(full) == 1
    assert error_line(capsys) == f"vampnet-onnx vamp: error: {message}"


# --- the output's format against the exact rate, before any work ----------------------------


def write_rate(path: Path, sample_rate: int, n: int = 4000) -> Path:
    """A WAV file whatever the name says."""
    samples = np.random.default_rng(4).standard_normal(n) * 0.1
    soundfile.write(path, samples, sample_rate, format="WAV")
    return path


@pytest.mark.parametrize(
    "rate, name, reason",
    [
        (96000, "o.mp3", "MP3 takes 8000 to 48000 Hz"),
        (352800, "o.ogg", "Vorbis takes up to 200000 Hz"),
        (384000, "o.ogg", "Vorbis takes up to 200000 Hz"),
        (1_000_000, "o.flac", "FLAC takes up to 65535 Hz"),
    ],
)
def test_an_output_format_that_cannot_take_the_rate_fails_before_any_work(
    tmp_path, capsys, rate, name, reason
):
    """Before: after the vamp (MP3, FLAC), or a segmentation fault leaving a temporary file
    (OGG at 352.8 / 384 kHz). Now: before the models are read (there are none here)."""
    source = write_rate(tmp_path / "in.wav", rate)
    argv = ["vamp", str(source), str(tmp_path / name), "--models", str(tmp_path / "none")]
    assert cli.main(argv) == 1
    line = error_line(capsys)
    assert line.startswith("vampnet-onnx vamp: error: OUT must be a format that takes mono")
    assert f"audio at {rate} Hz, got '{tmp_path / name}'" in line
    assert f"({reason}" in line and line.endswith(
        "--codec-rate writes at the codec's 44.1 kHz, or write .wav, which takes any rate"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


@pytest.mark.parametrize("rate", [1, 5, 2**31 - 1])
def test_an_input_rate_preprocess_cannot_take_fails_before_any_work(tmp_path, capsys, rate):
    """Before: a ZeroDivisionError in the loudness meter (1 and 5 Hz), or work at 2 GHz."""
    source = write_rate(tmp_path / "in.wav", rate)
    argv = ["vamp", str(source), str(tmp_path / "o.wav"), "--models", str(tmp_path / "none")]
    assert cli.main(argv) == 1
    assert error_line(capsys) == (
        f"vampnet-onnx vamp: error: the sample rate of IN ('{source}') must be in [1000, "
        f"10000000] Hz, got {rate}"
    )


def test_a_raw_output_fails_before_any_work(tmp_path, capsys):
    source = write_rate(tmp_path / "in.wav", 44100)
    argv = ["vamp", str(source), str(tmp_path / "o.raw"), "--models", str(tmp_path / "none")]
    assert cli.main(argv) == 1
    assert "OUT must name a format with a header" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_codec_rate_writes_a_96k_input_as_mp3(models, tmp_path):
    source = write_rate(tmp_path / "in.wav", 96000, 20000)
    out = tmp_path / "o.mp3"
    argv = ["vamp", str(source), str(out), "--models", str(models), "--steps", "1", "--quiet"]
    assert cli.main([*argv, "--codec-rate"]) == 0
    assert soundfile.info(out).samplerate == 44100


def test_vamp_file_checks_the_output_format_before_any_work(models, tmp_path, monkeypatch):
    from vampnet_onnx.pipeline import Vamp

    vamp = Vamp(models)
    monkeypatch.setattr(Vamp, "encode", lambda *a, **k: pytest.fail("encoded"))
    source = write_rate(tmp_path / "in.wav", 96000)
    with pytest.raises(
        ValueError,
        match=r"Vamp.vamp_file: out_path must be a format .* 96000 Hz"
        r".*keep_rate=False writes at the codec's 44100 Hz",
    ):
        vamp.vamp_file(source, tmp_path / "o.mp3", steps=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


# --- --out-dir: one bad file costs only itself ---------------------------------------------


def write_nan(path: Path) -> Path:
    samples = np.full(20000, np.nan, np.float32)
    soundfile.write(path, samples, 44100, subtype="FLOAT")
    return path


def out_dir_run(models, inputs, out_dir, *extra) -> int:
    argv = ["vamp", *map(str, inputs), "--out-dir", str(out_dir), "--models", str(models)]
    return cli.main([*argv, "--steps", "1", "--seed", "3", "--quiet", *extra])


def test_a_file_that_fails_during_work_costs_only_itself(models, tmp_path, capsys):
    """Before: nothing written, an empty folder left, a message naming no file."""
    (tmp_path / "in").mkdir()
    good = [
        write_noise(tmp_path / "in" / "a.wav", 1.2, 48000, 1),
        write_noise(tmp_path / "in" / "b.flac", 0.3, 44100, 2),
        write_noise(tmp_path / "in" / "d.ogg", 0.5, 44100, 3),
    ]
    bad = write_nan(tmp_path / "in" / "bad.wav")
    out_dir = tmp_path / "out"
    # Batches of two: the bad file shares its batch with d.ogg.
    assert out_dir_run(models, [*good[:2], bad, good[2]], out_dir, "--batch-size", "2") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vampnet-onnx vamp: failed '{bad}': preprocess: x must be finite, got NaN or inf",
        f"vampnet-onnx vamp: 1 of 4 inputs failed, listed in {out_dir / 'failures.json'}",
    ]
    report = json.loads((out_dir / "failures.json").read_text())
    assert report["failed"] == [
        {
            "input": str(bad),
            "output": str(out_dir / "bad.wav"),
            "reason": "preprocess: x must be finite, got NaN or inf",
        }
    ]
    alone = tmp_path / "alone"
    assert out_dir_run(models, good, alone, "--batch-size", "2") == 0
    for name in ("a.wav", "b.flac"):
        assert (out_dir / name).read_bytes() == (alone / name).read_bytes()
    # An Ogg stream has a random serial number: the same samples, not the same bytes.
    np.testing.assert_array_equal(
        soundfile.read(out_dir / "d.ogg")[0], soundfile.read(alone / "d.ogg")[0]
    )
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "a.wav",
        "b.flac",
        "d.ogg",
        "failures.json",
        "manifest.json",
    ]


def test_inputs_that_fail_their_checks_are_named_before_any_work(models, tmp_path, capsys):
    good = write_noise(tmp_path / "a.wav", 0.3, 44100, 1)
    missing = tmp_path / "gone.wav"
    text = tmp_path / "notes.flac"
    text.write_text("not audio\n")
    # A WAV named .flac: its output is a .flac, which cannot take 100001 Hz.
    odd = write_rate(tmp_path / "odd.flac", 100001)
    out_dir = tmp_path / "out"
    assert out_dir_run(models, [good, missing, text, odd], out_dir, "--batch-size", "1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    prefix = "vampnet-onnx vamp: failed"
    assert err[0] == f"{prefix} '{missing}': IN must be an existing file, got '{missing}'"
    assert err[1].startswith(f"{prefix} '{text}': IN must be an audio file soundfile can decode")
    assert err[2].startswith(f"{prefix} '{odd}': OUT must be a format that takes mono PCM_16 audio")
    assert "at 100001 Hz" in err[2] and "--codec-rate" in err[2]
    report = json.loads((out_dir / "failures.json").read_text())
    assert [entry["input"] for entry in report["failed"]] == [str(missing), str(text), str(odd)]
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.wav", "failures.json", "manifest.json"]


def test_when_no_input_can_be_vamped_nothing_is_made(tmp_path, capsys):
    missing = tmp_path / "gone.wav"
    out_dir = tmp_path / "out"
    argv = ["vamp", str(missing), str(tmp_path / "gone2.wav"), "--out-dir", str(out_dir)]
    assert cli.main([*argv, "--models", str(tmp_path / "none")]) == 1
    assert error_line(capsys) == (
        f"vampnet-onnx vamp: error: IN must be an existing file, got '{missing}' (and 1 more "
        "inputs that cannot)"
    )
    assert not out_dir.exists()


def test_an_inpaint_range_past_one_short_file_costs_only_it(models, tmp_path, capsys):
    long = write_noise(tmp_path / "long.wav", 1.5, 44100, 1)
    short = write_noise(tmp_path / "short.wav", 0.4, 44100, 2)
    out_dir = tmp_path / "out"
    assert out_dir_run(models, [long, short], out_dir, "--inpaint", "1.0", "1.4") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"vampnet-onnx vamp: failed '{short}': Vamp.vamp: inpaint must start")
    assert (out_dir / "long.wav").is_file() and not (out_dir / "short.wav").exists()


def test_a_run_without_failures_removes_an_earlier_report(models, tmp_path, capsys):
    good = write_noise(tmp_path / "a.wav", 0.3, 44100, 1)
    bad = write_nan(tmp_path / "b.wav")
    out_dir = tmp_path / "out"
    assert out_dir_run(models, [good, bad], out_dir) == 1
    assert (out_dir / "failures.json").is_file()
    write_noise(bad, 0.3, 44100, 2)
    assert out_dir_run(models, [good, bad], out_dir) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.wav", "b.wav", "manifest.json"]


def test_with_the_single_graph_a_bad_file_costs_only_itself(models, tmp_path, capsys):
    good = write_noise(tmp_path / "a.wav", 0.3, 44100, 1)
    bad = write_nan(tmp_path / "b.wav")
    out_dir = tmp_path / "out"
    argv = ["vamp", str(bad), str(good), "--out-dir", str(out_dir)]
    assert cli.main([*argv, "--models", str(models / "vamp.onnx"), "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert f"failed '{bad}': preprocess: x must be finite, got NaN or inf" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.wav", "failures.json", "manifest.json"]


@pytest.mark.parametrize("threads", ["1000", "100000", str(2**31), "0"])
def test_threads_beyond_four_per_cpu_fail_before_the_models_are_read(
    wav, tmp_path, capsys, threads
):
    """Before: 1000 hung, 100000 grew memory without end, 2**31 was a pybind TypeError."""
    from vampnet_onnx.settings import max_threads

    argv = ["vamp", str(wav), str(tmp_path / "o.wav"), "--models", str(tmp_path / "none")]
    assert cli.main([*argv, "--threads", threads]) == 1
    assert error_line(capsys) == (
        f"vampnet-onnx vamp: error: --threads must be an int in [1, {max_threads()}] (4 per CPU, "
        f"{os.cpu_count()} CPUs) or None, got {threads}"
    )


@pytest.mark.parametrize(
    "source, subtype, out, written",
    [
        ("in.flac", "PCM_24", "o.flac", "PCM_24"),
        ("in.flac", "PCM_24", "o.wav", "PCM_24"),
        ("in.wav", "FLOAT", "o.wav", "FLOAT"),
        ("in.wav", "FLOAT", "o.flac", "PCM_16"),  # FLAC holds no float: its default
        ("in.mp3", "MPEG_LAYER_III", "o.wav", "PCM_16"),
    ],
)
def test_the_output_keeps_the_inputs_subtype_where_its_format_takes_it(
    models, tmp_path, source, subtype, out, written
):
    """Before: a 24-bit input was written as 16-bit."""
    path = tmp_path / source
    samples = np.random.default_rng(1).standard_normal(22050) * 0.1
    soundfile.write(path, samples, 44100, subtype=subtype)
    argv = ["vamp", str(path), str(tmp_path / out), "--models", str(models), "--steps", "1"]
    assert cli.main([*argv, "--quiet"]) == 0
    assert soundfile.info(tmp_path / out).subtype == written


# --- --out-dir: resumable, with a manifest --------------------------------------------------


def _three_inputs(tmp_path) -> list[Path]:
    (tmp_path / "in").mkdir()
    return [
        write_noise(tmp_path / "in" / f"{name}.wav", 0.3, 44100, i) for i, name in enumerate("abc")
    ]


def test_a_rerun_skips_complete_outputs_and_finishes_the_rest(models, tmp_path, capsys):
    inputs = _three_inputs(tmp_path)
    out_dir = tmp_path / "out"
    assert out_dir_run(models, inputs, out_dir) == 0
    first = {p.name: p.read_bytes() for p in out_dir.glob("*.wav")}
    kept = (out_dir / "a.wav").stat().st_mtime_ns
    # As a run killed before c.wav was renamed into place leaves the folder:
    (out_dir / "c.wav").rename(out_dir / ".c.wav.abcd1234.tmp")
    capsys.readouterr()
    assert out_dir_run(models, inputs, out_dir) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"skipped 2 complete output(s) in {out_dir} (--overwrite redoes them)",
        f"wrote {out_dir / 'c.wav'} (44100 Hz)",
    ]
    assert {p.name: p.read_bytes() for p in out_dir.glob("*.wav")} == first
    assert (out_dir / "a.wav").stat().st_mtime_ns == kept
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.wav", "b.wav", "c.wav", "manifest.json"]


def test_the_manifest_records_the_settings_and_the_models_hashes(models, tmp_path):
    import hashlib

    inputs = _three_inputs(tmp_path)[:1]
    out_dir = tmp_path / "out"
    assert out_dir_run(models, inputs, out_dir, "--periodic-prompt", "5") == 0
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["format"] == "vampnet-onnx manifest 1"
    assert manifest["settings"]["seed"] == 3 and manifest["settings"]["steps"] == 1
    assert manifest["settings"]["periodic_prompt"] == 5
    graph = models / "coarse.generate.onnx"
    assert manifest["models"][graph.name] == hashlib.sha256(graph.read_bytes()).hexdigest()


def test_a_rerun_with_other_settings_is_refused_unless_overwrite(models, tmp_path, capsys):
    inputs = _three_inputs(tmp_path)[:2]
    out_dir = tmp_path / "out"
    assert out_dir_run(models, inputs, out_dir) == 0
    before = (out_dir / "a.wav").read_bytes()
    capsys.readouterr()
    assert out_dir_run(models, inputs, out_dir, "--temperature", "0.5") == 1
    assert error_line(capsys) == (
        f"vampnet-onnx vamp: error: the output folder must hold outputs of these settings and "
        f"models to go on, got '{out_dir}' made with the setting temperature 1.0 there, 0.5 "
        "here (manifest.json); --overwrite redoes every output"
    )
    assert (out_dir / "a.wav").read_bytes() == before
    assert out_dir_run(models, inputs, out_dir, "--temperature", "0.5", "--overwrite") == 0
    assert (out_dir / "a.wav").read_bytes() != before
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["settings"]["temperature"] == 0.5


def test_outputs_beside_no_manifest_are_not_taken_as_done(models, tmp_path, capsys):
    inputs = _three_inputs(tmp_path)[:1]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "a.wav").write_bytes(b"someone's file")
    assert out_dir_run(models, inputs, out_dir) == 1
    assert "must not hold outputs of an unknown run, got 'a.wav'" in error_line(capsys)
    assert out_dir_run(models, inputs, out_dir, "--overwrite") == 0
    assert soundfile.info(out_dir / "a.wav").frames == round(0.3 * 44100)


def test_inputs_from_a_file_join_the_ones_given(models, tmp_path, capsys):
    inputs = _three_inputs(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{inputs[1]}\n\n  {inputs[2]}  \n")
    out_dir = tmp_path / "out"
    argv = ["vamp", str(inputs[0]), "--inputs-from", str(listing), "--out-dir", str(out_dir)]
    assert cli.main([*argv, "--models", str(models), "--steps", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"wrote {out_dir / n} (44100 Hz)" for n in ("a.wav", "b.wav", "c.wav")]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--inputs-from", "LIST"], "--inputs-from must come with --out-dir DIR, got no --out-dir"),
        (["--out-dir", "D", "--inputs-from", "MISSING"], "--inputs-from must be an existing file"),
        ([], "IN must be given: IN OUT, or IN... (or --inputs-from FILE) with --out-dir DIR"),
    ],
)
def test_inputs_from_errors_are_one_line_before_any_work(tmp_path, capsys, extra, message):
    (tmp_path / "LIST").write_text("a.wav\n")
    argv = [a if a not in ("LIST", "MISSING", "D") else str(tmp_path / a) for a in extra]
    assert cli.main(["vamp", *argv, "--models", str(tmp_path / "none")]) == 1
    assert error_line(capsys).startswith(f"vampnet-onnx vamp: error: {message}")
