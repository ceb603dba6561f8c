"""Audio files, the BS.1770 loudness meter against published reference values, VampNet's
preprocessing and its restoration."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile

from vampnet_onnx import audio

SR = 48000


def sine(freq: float, dbfs: float, seconds: float, sample_rate: int = SR) -> np.ndarray:
    """Sine whose *peak* is `dbfs` dB below full scale (EBU Tech 3341 convention)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)


def stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x])


# --- loudness: reference values --------------------------------------------------------------
# Tolerance 0.1 LU: what EBU Tech 3341 allows a compliant meter. Our K-weighting is the one the
# original meter uses (RBJ biquads designed per rate), 0.04 dB below the BS.1770 table at 1 kHz.


@pytest.mark.parametrize("sample_rate", [48000, 44100])
def test_full_scale_997_hz_sine_reads_minus_3_01(sample_rate):
    """ITU-R BS.1770-4: a 0 dBFS sine at 997 Hz on one channel reads -3.01 LKFS."""
    x = sine(997, 0.0, 10.0, sample_rate)
    assert audio.loudness(x, sample_rate) == pytest.approx(-3.01, abs=0.1)


@pytest.mark.parametrize("dbfs", [-23.0, -33.0])
def test_ebu_3341_cases_1_and_2_stereo_sine(dbfs):
    """EBU Tech 3341 cases 1 and 2: stereo 1 kHz sine at -23 / -33 dBFS, 20 s."""
    assert audio.loudness(stereo(sine(1000, dbfs, 20.0)), SR) == pytest.approx(dbfs, abs=0.1)


def test_ebu_3341_case_3_relative_gate():
    """-36 / -23 / -36 dBFS for 10 / 60 / 10 s reads -23.0: the quiet parts are gated out."""
    x = np.concatenate([sine(1000, -36, 10), sine(1000, -23, 60), sine(1000, -36, 10)])
    assert audio.loudness(stereo(x), SR) == pytest.approx(-23.0, abs=0.1)


def test_ebu_3341_case_4_absolute_gate():
    """-72 / -36 / -23 / -36 / -72 dBFS for 10 / 10 / 60 / 10 / 10 s reads -23.0."""
    parts = [(-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)]
    x = np.concatenate([sine(1000, db, s) for db, s in parts])
    assert audio.loudness(stereo(x), SR) == pytest.approx(-23.0, abs=0.1)


def test_short_signal_is_zero_padded_to_half_a_second():
    """0.1 s of a 0 dBFS sine, padded to 0.5 s: two blocks, only the first (0.1 s of signal
    in 0.4 s) passes the gate: -3.01 + 10 log10(0.1 / 0.4) = -9.03."""
    x = sine(997, 0.0, 0.1)
    assert audio.loudness(x, SR) == pytest.approx(-3.01 + 10 * math.log10(0.25), abs=0.1)


def test_silence_reads_the_floor_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert audio.loudness(np.zeros(SR), SR) == audio.MIN_LOUDNESS == -70.0
        assert audio.loudness(np.zeros((2, 0)), SR) == -70.0
        assert audio.loudness(sine(1000, -80, 1.0), SR) == -70.0
        np.testing.assert_array_equal(audio.normalize_loudness(np.zeros(100), SR), 0.0)


def test_one_sample_is_measured_and_normalised():
    x = np.array([0.5], dtype=np.float32)
    assert -70.0 < audio.loudness(x, SR) < 0.0
    y = audio.normalize_loudness(x, SR)
    assert y.shape == (1,) and y.dtype == np.float32 and 0.0 < y[0] <= 1.0


# --- normalisation and preprocessing ---------------------------------------------------------


def test_normalize_loudness_hits_the_target():
    x = 0.01 * np.random.default_rng(0).standard_normal((2, 2 * SR))
    y = audio.normalize_loudness(x, SR, target=-24.0)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert audio.loudness(y, SR) == pytest.approx(-24.0, abs=0.01)


def test_normalize_loudness_limits_each_channel_peak_to_one():
    x = np.stack([sine(100, -40, 1.0), 0.5 * sine(100, -40, 1.0)])
    x[0, 100] = 0.9  # a click far above the tone makes channel 0's peak exceed 1 after gain
    y = audio.normalize_loudness(x, SR, target=-5.0)
    assert np.abs(y[0]).max() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(y[1]).max() <= 1.0


def test_preprocess_stereo_48k_to_mono_44k_at_minus_24():
    x = np.stack([sine(440, -10, 2.0), sine(660, -20, 2.0)]).astype(np.float32)
    y, info = audio.preprocess(x, SR)
    assert y.dtype == np.float32 and y.shape == (round(2 * SR * 44100 / SR),)
    assert audio.loudness(y, 44100) == pytest.approx(-24.0, abs=0.05)
    assert np.abs(y).max() <= 1.0
    assert info == audio.PreprocessInfo(SR, 2 * SR, audio.loudness(audio.to_mono(x), SR))


def test_preprocess_at_the_codec_rate_only_scales():
    x = sine(440, -30, 1.0, 44100).astype(np.float32)
    y, _ = audio.preprocess(x, 44100)
    gain = 10 ** ((-24.0 - audio.loudness(x, 44100)) / 20)
    np.testing.assert_allclose(y, x * gain, rtol=1e-6, atol=1e-7)


def test_preprocess_of_one_sample_and_of_silence():
    y, info = audio.preprocess(np.array([[0.25]], dtype=np.float32), SR)
    assert y.shape == (1,) and np.abs(y).max() <= 1.0 and info.n_samples == 1
    y, info = audio.preprocess(np.zeros((2, SR), dtype=np.float32), SR)
    assert info.loudness == -70.0 and not y.any()


def test_restore_gives_back_rate_length_and_loudness():
    x = np.stack([sine(440, -10, 1.5), sine(330, -12, 1.5)]).astype(np.float32)
    y, info = audio.preprocess(x, SR)
    z = audio.restore(y, info)
    assert z.dtype == np.float32 and z.shape == (x.shape[1],)
    assert audio.loudness(z, SR) == pytest.approx(info.loudness, abs=0.01)
    np.testing.assert_allclose(z[1000:-1000], audio.to_mono(x)[1000:-1000], atol=2e-3)


def test_resample_keeps_a_sine():
    y = audio.resample(sine(1000, -6, 1.0), SR, 44100)
    assert y.shape == (44100,)
    np.testing.assert_allclose(y[500:-500], sine(1000, -6, 1.0, 44100)[500:-500], atol=1e-3)


def test_to_mono_averages_channels():
    x = np.array([[1.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(audio.to_mono(x), [0.5, 0.25])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: audio.loudness(np.zeros((1, 1, 5)), SR), r"x must be a float array \[N\]"),
        (lambda: audio.loudness(np.zeros(5, dtype=np.int16), SR), "x must be a float array"),
        (lambda: audio.loudness(np.full(5, np.inf), SR), "x must be finite"),
        (lambda: audio.loudness(np.zeros(5), 0), "sample_rate must be > 0, got 0"),
        (lambda: audio.loudness(np.zeros(5), 44100.0), "sample_rate must be an int"),
        (lambda: audio.preprocess(np.zeros((2, 0), np.float32), SR), "at least 1 sample"),
        (lambda: audio.resample(np.zeros(5), SR, -1), "to_sr must be > 0"),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- files ------------------------------------------------------------------------------------


def test_float_wav_round_trip_is_exact(tmp_path):
    x = (0.5 * np.random.default_rng(1).uniform(-1, 1, (2, 1000))).astype(np.float32)
    audio.write_audio(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    y, sample_rate = audio.load_audio(tmp_path / "a.wav")
    assert sample_rate == SR and y.dtype == np.float32 and y.shape == (2, 1000)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize(
    ("subtype", "step"), [("PCM_U8", 2.0**-7), ("PCM_16", 2.0**-15), ("PCM_24", 2.0**-23)]
)
def test_integer_pcm_is_scaled_to_unit_range(tmp_path, subtype, step):
    x = np.linspace(-1, 1 - step, 333).astype(np.float32)[None]
    audio.write_audio(tmp_path / "a.wav", x, 22050, subtype=subtype)
    assert soundfile.info(tmp_path / "a.wav").subtype == subtype
    y, sample_rate = audio.load_audio(tmp_path / "a.wav")
    assert sample_rate == 22050 and y.shape == (1, 333)
    assert y.min() >= -1.0 and y.max() <= 1.0
    np.testing.assert_allclose(y, x, atol=step)


def test_full_scale_int16_reads_as_minus_one(tmp_path):
    soundfile.write(tmp_path / "a.wav", np.array([-32768, 0, 32767], dtype=np.int16), 8000)
    y, _ = audio.load_audio(tmp_path / "a.wav")
    np.testing.assert_allclose(y[0], [-1.0, 0.0, 32767 / 32768])


@pytest.mark.parametrize("suffix", [".flac", ".ogg"])
def test_flac_and_ogg_load(tmp_path, suffix):
    x = sine(440, -6, 0.5).astype(np.float32)
    audio.write_audio(tmp_path / f"a{suffix}", stereo(x), SR)
    y, sample_rate = audio.load_audio(tmp_path / f"a{suffix}")
    assert sample_rate == SR and y.shape[0] == 2 and y.dtype == np.float32
    assert abs(y.shape[1] - x.shape[0]) <= 1024 if suffix == ".ogg" else y.shape[1] == x.shape[0]


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_audio: path must be an existing file"):
        audio.load_audio(tmp_path / "missing.wav")
    with pytest.raises(FileNotFoundError, match="path must be an existing file"):
        audio.load_audio(tmp_path)


@pytest.mark.parametrize("name", ["notes.wav", "song.m4a"])
def test_non_audio_file_is_refused_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not audio\n" * 20)
    with pytest.raises(ValueError, match=f"path must be an audio file .*{name}"):
        audio.load_audio(path)


def test_write_audio_refuses_unknown_extensions(tmp_path):
    with pytest.raises(ValueError, match="write_audio: path must name a format"):
        audio.write_audio(tmp_path / "a.xyz", np.zeros(10, np.float32), SR)


def test_audio_module_does_not_import_torch():
    """The runtime path must work without torch: nothing in vampnet_onnx.audio imports it."""
    code = "import sys, vampnet_onnx.audio, vampnet_onnx.masks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_output_path_checks_name_the_real_reason(tmp_path):
    source = tmp_path / "in.wav"
    audio.write_audio(source, np.zeros(100, np.float32), SR)
    cases = [
        (tmp_path / "missing" / "o.wav", "must be in an existing folder"),
        (tmp_path / "o.xyz", "must name a format soundfile can write"),
        (tmp_path, "must name a format"),
        (source, "must not be the input file"),
    ]
    for path, reason in cases:
        with pytest.raises(ValueError, match=f"here: out must .*{reason[5:]}"):
            audio.check_output_path(path, "here", "out", source)
    link = tmp_path / "link.wav"
    link.symlink_to(source)
    with pytest.raises(ValueError, match="must not be the input file"):
        audio.check_output_path(link, "here", "out", source)
    assert audio.check_output_path(tmp_path / "o.flac", "here", "out", source).name == "o.flac"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "o.wav"
    audio.write_audio(path, np.full(100, 0.5, np.float32), SR)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="with a valid subtype"):
        audio.write_audio(path, np.zeros(10, np.float32), SR, subtype="VORBIS")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.wav"]


def test_a_written_file_has_the_permissions_of_any_new_file(tmp_path):
    """Not the private 0600 of the temporary file it is written through."""
    audio.write_audio(tmp_path / "o.wav", np.zeros(100, np.float32), SR)
    (tmp_path / "plain").write_bytes(b"")
    mode = (tmp_path / "plain").stat().st_mode & 0o777
    assert (tmp_path / "o.wav").stat().st_mode & 0o777 == mode


# --- piece by piece: the same numbers in bounded memory ---------------------------------------


def _whole_signal_loudness(x: np.ndarray, sample_rate: int) -> float:
    """The gated loudness computed on the whole signal at once (the formula `LoudnessMeter`
    spreads over pieces): K-weighting, mean squares of 400-ms blocks every 100 ms, gates."""
    from scipy.signal import lfilter

    x = x[None] if x.ndim == 1 else x
    n = x.shape[-1]
    pad = int((0.5 - n / sample_rate) * sample_rate)
    block, step = int(0.4 * sample_rate), int(0.1 * sample_rate)
    n_blocks = math.ceil(max(n + max(pad, 0) - block, 0) / step) + 1
    y = x.astype(np.float64)
    for b, a in (audio._biquad_high_shelf(sample_rate), audio._biquad_high_pass(sample_rate)):
        y = lfilter(b, a, y, axis=-1)
    squares = np.zeros((x.shape[0], (n_blocks - 1) * step + block + 1))
    squares[:, 1 : n + 1] = y**2
    cumulative = np.cumsum(squares, axis=-1)
    starts = np.arange(n_blocks) * step
    total = ((cumulative[:, starts + block] - cumulative[:, starts]) / (0.4 * sample_rate)).sum(0)
    keep = total > 10 ** ((-70 + 0.691) / 10)
    if not keep.any():
        return -70.0
    gate = -0.691 + 10 * math.log10(total[keep].mean()) - 10
    keep &= total > 10 ** ((gate + 0.691) / 10)
    return max(-0.691 + 10 * math.log10(total[keep].mean()), -70.0)


@pytest.mark.parametrize("sample_rate", [44100, 48000, 11025])
@pytest.mark.parametrize("n", [1, 7000, 200_003])
def test_loudness_in_pieces_equals_the_whole_signal_formula(sample_rate, n):
    # Stereo, but mono for one sample: no more channels than samples (`audio.MAX_CHANNELS`).
    x = np.random.default_rng(n).standard_normal((min(2, n), n)).astype(np.float32) * 0.3
    assert audio.loudness(x, sample_rate) == _whole_signal_loudness(x, sample_rate)


@pytest.mark.parametrize("rate, channels", [(48000, 2), (44100, 1), (22050, 2)])
def test_preprocess_file_equals_preprocess_of_the_loaded_file(tmp_path, rate, channels):
    path = tmp_path / "in.wav"
    samples = np.random.default_rng(1).standard_normal((200_001, channels)) * 0.2
    soundfile.write(path, samples, rate, subtype="FLOAT")
    streamed, info = audio.preprocess_file(path)
    whole, whole_info = audio.preprocess(*audio.load_audio(path))
    assert info == whole_info
    np.testing.assert_array_equal(streamed, whole)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_restore_file_writes_what_restore_returns(tmp_path, rate):
    y = (np.random.default_rng(2).standard_normal(150_000) * 0.1).astype(np.float32)
    info = audio.PreprocessInfo(sample_rate=rate, n_samples=170_000, loudness=-17.5)
    path = audio.restore_file(y, info, tmp_path / "out.wav", subtype="FLOAT")
    written, written_rate = soundfile.read(path, dtype="float32")
    assert written_rate == rate
    np.testing.assert_array_equal(written, audio.restore(y, info))


def test_normalize_loudness_in_place(tmp_path):
    x = (np.random.default_rng(3).standard_normal(100_000) * 3).astype(np.float32)
    expected = audio.normalize_loudness(x, 44100)
    assert audio.normalize_loudness(x, 44100, out=x) is x
    np.testing.assert_array_equal(x, expected)


def _readable_formats() -> list[tuple[str, str]]:
    """(format, subtype) for every format soundfile writes and reads back with a header (RAW
    has none), with its default subtype; OGG with both its codecs."""
    cases = []
    for name in soundfile.available_formats():
        subtype = soundfile.default_subtype(name)
        if subtype is not None:
            cases.append((name, subtype))
    return [*cases, ("OGG", "OPUS")]


#: Formats libsndfile writes with one channel only.
_MONO_FORMATS = {"HTK", "SDS", "SVX", "WVE", "XI"}


@pytest.mark.parametrize("format, subtype", _readable_formats())
def test_streamed_read_equals_the_whole_read(tmp_path, format, subtype):
    """Every format, MP3 included: libsndfile 1.2.2 put thousands of silent samples after each
    piece of a piecewise MP3 read (soundfile's read seeks after every piece)."""
    # Opus only takes 8/12/16/24/48 kHz; 48 kHz suits every other format too.
    rate, n = 48000, 3 * 4096 + 123
    t = np.arange(n) / rate
    tone = 0.4 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t)
    path = tmp_path / f"in.{format.lower()}"
    # Stereo, to read interleaved frames, where the format has more than one channel.
    channels = 1 if format in _MONO_FORMATS else 2
    signal = np.stack([tone, -0.5 * tone][:channels], axis=1)
    soundfile.write(path, signal, rate, subtype, format=format)
    whole, _ = audio.load_audio(path)
    streamed = list(audio.stream_audio(path, piece=4096))
    assert all(p.shape[1] <= 4096 for p in streamed)
    np.testing.assert_array_equal(np.concatenate(streamed, axis=1), whole)


def test_an_mp3_file_preprocesses_as_its_whole_read(tmp_path):
    """`vamp IN OUT` (streamed) and `--out-dir` (whole reads) agree for MP3: piece boundaries
    at 65536, 131072 ... frames fall inside this file."""
    rate = 44100
    t = np.arange(4 * rate) / rate
    path = tmp_path / "in.mp3"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 440 * t), rate)
    streamed, info = audio.preprocess_file(path)
    whole, whole_info = audio.preprocess(*audio.load_audio(path))
    assert info == whole_info
    np.testing.assert_array_equal(streamed, whole)


def test_without_soundfiles_binding_a_file_is_read_whole(tmp_path, monkeypatch):
    path = tmp_path / "in.mp3"
    soundfile.write(path, np.linspace(-0.5, 0.5, 100_000), 44100)
    monkeypatch.setattr(audio, "_LIBSNDFILE", None)
    pieces = list(audio.stream_audio(path, piece=4096))
    assert len(pieces) == 1
    np.testing.assert_array_equal(pieces[0], audio.load_audio(path)[0])


@pytest.mark.parametrize("piece", [0, -1, 1.5, True])
def test_stream_audio_refuses_a_bad_piece(tmp_path, piece):
    with pytest.raises(ValueError, match="stream_audio: piece must be an int >= 1"):
        next(audio.stream_audio(tmp_path / "in.wav", piece=piece))


# --- the output's format, checked against the exact rate before any work ----------------------


@pytest.mark.parametrize(
    "name, rate, reason",
    [
        ("o.mp3", 96000, r"MP3 takes 8000 to 48000 Hz"),
        ("o.ogg", 352800, r"Vorbis takes up to 200000 Hz"),
        ("o.ogg", 384000, r"Vorbis takes up to 200000 Hz"),
        ("o.flac", 2**31 - 1, r"FLAC takes up to 65535 Hz"),
        ("o.flac", 65536, r"FLAC takes up to 65535 Hz"),
        ("o.htk", 44100, r"its header would read 44247 Hz"),
        ("o.wve", 44100, r"its header would read 8000 Hz"),
    ],
)
def test_output_format_is_checked_against_the_exact_rate(tmp_path, name, rate, reason):
    with pytest.raises(
        ValueError,
        match=f"here: out must be a format that takes mono .* audio at "
        f"{rate} Hz, got '.*{name}' \\({reason}.*\\): use another",
    ):
        audio.check_output_path(
            tmp_path / name, "here", "out", sample_rate=rate, hint="use another"
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name, rate, subtype",
    [
        ("o.wav", 2**31 - 1, "PCM_16"),
        ("o.mp3", 48000, "MPEG_LAYER_III"),
        ("o.ogg", 200000, "VORBIS"),
        ("o.flac", 655350, "PCM_16"),
        ("o.wav", 1, "PCM_16"),
    ],
)
def test_output_format_takes_the_rates_it_can_store(tmp_path, name, rate, subtype):
    assert audio.check_output_format(tmp_path / name, rate) == subtype


def test_a_raw_output_is_refused_for_its_missing_header(tmp_path):
    with pytest.raises(ValueError, match=r"out must name a format with a header .* got '.*o.raw'"):
        audio.check_output_path(tmp_path / "o.raw", "", "out", sample_rate=44100)


def test_a_subtype_the_format_lacks_is_refused(tmp_path):
    with pytest.raises(ValueError, match="out must name a format that takes VORBIS samples"):
        audio.check_output_format(tmp_path / "o.wav", 44100, "VORBIS", "", "out")


def test_writing_vorbis_at_a_rate_that_crashes_libvorbis_is_an_error_not_a_crash(tmp_path):
    """libvorbis crashed (status 139) on 352.8 and 384 kHz, leaving the temporary file."""
    code = (
        "import sys, numpy as np; from vampnet_onnx import audio\n"
        "try: audio.write_audio(sys.argv[1], np.zeros(4096, np.float32), 384000)\n"
        "except ValueError as err: print(err)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "o.ogg")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "sample_rate must be one .ogg takes, got 384000 (Vorbis takes up to" in run.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_format_that_would_store_another_rate_is_not_written(tmp_path):
    with pytest.raises(ValueError, match=r"its header would read 44247 Hz"):
        audio.write_audio(tmp_path / "o.htk", np.zeros(100, np.float32), 44100)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(5000, 2), (5000, 1), (65, 100)])
def test_channels_last_or_implausible_channel_counts_are_refused(shape):
    """soundfile.read's [N, 2] was read as N channels of two samples: 2 samples came back."""
    x = np.zeros(shape, np.float32)
    with pytest.raises(
        ValueError,
        match=r"preprocess: x must be \[channels, N\] with channels "
        r"first \(at most 64, and no more channels than samples\), got shape",
    ):
        audio.preprocess(x, 44100)


def test_channels_first_arrays_are_taken():
    y, info = audio.preprocess(np.zeros((2, 5000), np.float32), 44100)
    assert y.shape == (5000,) and info.n_samples == 5000


@pytest.mark.parametrize("rate", [1, 5, 999, 10**7 + 1, 2**40])
def test_input_rates_outside_what_preprocess_takes_are_one_line(rate):
    """Before: 1 and 5 Hz divided by zero in the loudness meter."""
    x = np.zeros(50_000, np.float32)
    message = rf"preprocess: sample_rate must be in \[1000, 10000000\] Hz, got {rate}"
    with pytest.raises(ValueError, match=message):
        audio.preprocess(x, rate)


def test_an_input_too_short_for_one_codec_sample_is_one_line():
    with pytest.raises(ValueError, match="x must last at least one sample at the codec's 44100"):
        audio.preprocess(np.zeros(1, np.float32), 10**7)
