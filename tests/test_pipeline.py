"""`vampnet_onnx.pipeline.Vamp`: VampNet's vamp end to end on tiny random-weight models.

The models are exported once for the module: tiny transformers (`configs.TINY_*_KWARGS`) and
the small codec with the real rates (hop 768, so frame counts are VampNet's).
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from vampnet_onnx import Cancelled, audio, masks, runtime
from vampnet_onnx.contracts import C2F_STEPS, C2F_STREAM_BASE, MODEL_FILES
from vampnet_onnx.pipeline import SingleGraphVamp, Vamp

SR = 44100
HOP = 768
FAST = dict(steps=1)


@pytest.fixture(scope="module")
def models(tiny_models_dir) -> Path:
    return tiny_models_dir


@pytest.fixture(scope="module")
def vamp(models) -> Vamp:
    return Vamp(models, threads=2)


def noise(seconds: float, sample_rate: int = SR, channels: int | None = None) -> np.ndarray:
    """Gaussian noise, std 0.1: float32 [N] or [channels, N]."""
    n = round(seconds * sample_rate)
    shape = (n,) if channels is None else (channels, n)
    return (np.random.default_rng(0).standard_normal(shape) * 0.1).astype(np.float32)


class Recorder:
    """Wraps a method and records each call's positional and keyword arguments."""

    def __init__(self, monkeypatch, owner, name: str):
        self.calls: list[tuple[tuple, dict]] = []
        original = getattr(owner, name)

        def record(*args, **kwargs):
            self.calls.append((args, kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, record)


def test_pipeline_does_not_import_torch():
    code = (
        "import sys, vampnet_onnx.pipeline, vampnet_onnx.demo, vampnet_onnx.cli; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


#: What an install without the export extra, and without ONNX Runtime's extra, cannot import.
_NOT_INSTALLED = (
    "torch",
    "onnx_ir",
    "onnxscript",
    "huggingface_hub",
    "onnxconverter_common",
    "onnxruntime",
)


def _cli_without(blocked: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from vampnet_onnx import cli\n"
        f"sys.exit(cli.main({argv!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("command", ["vamp", "export", "demo", "app"])
def test_the_cli_parses_without_the_optional_packages(command):
    # Every command's --help works from a bare install: no export extra, no ONNX Runtime.
    done = _cli_without(_NOT_INSTALLED, [command, "--help"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: vampnet-onnx {command}")


def test_without_onnxruntime_a_vamp_says_which_extra_to_install(models, tmp_path):
    source = tmp_path / "in.wav"
    soundfile.write(source, noise(0.1), SR)
    done = _cli_without(
        ("onnxruntime",), ["vamp", str(source), str(tmp_path / "o.wav"), "--models", str(models)]
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("vampnet-onnx vamp: error: ImportError: vampnet_onnx needs ONNX Runtime")
    assert "'vampnet-onnx[cpu]'" in line and "'vampnet-onnx[gpu]'" in line


def test_missing_model_files_are_named(models, tmp_path):
    for name in MODEL_FILES[1:3]:
        (tmp_path / name).write_bytes((models / name).read_bytes())
    with pytest.raises(FileNotFoundError) as err:
        Vamp(tmp_path)
    assert str(err.value).endswith("without codec.encode.onnx, codec.decode.onnx")


@pytest.mark.parametrize("n_samples", [1, 767, 768, 769, 3 * SR + 5])
def test_output_length_equals_input_length(vamp, n_samples):
    x = np.random.default_rng(n_samples).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    y, rate = vamp.vamp(x, SR, **FAST)
    assert rate == SR and y.shape == (n_samples,) and y.dtype == np.float32
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0


def test_silence_gives_finite_audio_at_the_input_loudness(vamp):
    y, _ = vamp.vamp(np.zeros(SR, np.float32), SR, **FAST)
    assert y.shape == (SR,) and np.isfinite(y).all()
    assert audio.loudness(y, SR) == pytest.approx(audio.MIN_LOUDNESS, abs=0.5)


def test_stereo_input_gives_mono_output(vamp):
    y, _ = vamp.vamp(noise(1.0, channels=2), SR, **FAST)
    assert y.shape == (SR,)


def test_48k_input_comes_back_at_48k_by_default(vamp):
    x = noise(1.5, 48000)
    y, rate = vamp.vamp(x, 48000, **FAST)
    assert rate == 48000 and y.shape == x.shape


def test_keep_rate_false_returns_the_codec_rate(vamp):
    y, rate = vamp.vamp(noise(1.5, 48000), 48000, keep_rate=False, **FAST)
    assert rate == SR and y.shape == (round(1.5 * SR),)


def test_output_loudness_matches_input(vamp):
    x = noise(2.0) * 0.3
    y, _ = vamp.vamp(x, SR, **FAST)
    # restore() normalises to the input's loudness; the peak limit can only lower it.
    assert audio.loudness(y, SR) == pytest.approx(audio.loudness(x, SR), abs=0.1)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_24"])
def test_integer_wav_files_vamp(vamp, tmp_path, subtype):
    path = tmp_path / "in.wav"
    soundfile.write(path, noise(1.0, 22050), 22050, subtype=subtype)
    out, rate = vamp.vamp_file(path, tmp_path / "out.wav", **FAST)
    info = soundfile.info(out)
    assert rate == 22050 and info.samplerate == 22050 and info.frames == 22050
    assert info.channels == 1


def test_vamp_mask_is_the_mask_vamp_generates_with(vamp):
    x = noise(1.0)
    recipe = dict(seed=3, periodic_prompt=5, onset_mask_width=2)
    mask = vamp.vamp_mask(x, SR, **recipe)
    given = vamp.vamp(x, SR, seed=3, mask=mask, **FAST)[0]
    np.testing.assert_array_equal(given, vamp.vamp(x, SR, **recipe, **FAST)[0])


@pytest.mark.parametrize("context_s", [0.0, 2.0])
def test_vamp_mask_applied_is_what_the_run_generated_with(vamp, monkeypatch, context_s):
    # 11 s: two coarse windows, so a seam inside the clip; dropout and the roll drawn with seed.
    x = noise(11.0)
    recipe = dict(seed=3, periodic_prompt=5, dropout=0.3, context_s=context_s)
    decoded = Recorder(monkeypatch, vamp, "decode")
    coarse = Recorder(monkeypatch, vamp.coarse, "generate")
    c2f = Recorder(monkeypatch, vamp.c2f, "generate")
    vamp.vamp(x, SR, **recipe, **FAST)
    codes_in = vamp.encode(audio.preprocess(x, SR, SR)[0])
    codes_out = decoded.calls[0][0][0]
    n_frames, n_coarse = codes_in.shape[2], vamp.coarse.n_codebooks
    # The masks the generators were given, stitched back: window 0 from frame 0, the last
    # window ending at the last frame (its first frames, any context, are window 0's).
    [first], [last] = ([args[1]] for args, _ in coarse.calls)
    run_mask = np.concatenate([args[1] for args, _ in c2f.calls], axis=2)[:, :, :n_frames]
    run_mask[:, :n_coarse, : first.shape[2]] = first
    overlap = first.shape[2] + last.shape[2] - n_frames
    assert overlap == round(context_s * SR / HOP)
    assert not last[:, :, :overlap].any()
    run_mask[:, :n_coarse, first.shape[2] :] = last[:, :, overlap:]

    applied = vamp.vamp_mask(x, SR, applied=True, **recipe)
    np.testing.assert_array_equal(applied, run_mask)
    np.testing.assert_array_equal(codes_out[~applied], codes_in[~applied])
    # The seam frames are where the recipe's mask says generate and the run keeps.
    assert (applied != vamp.vamp_mask(x, SR, **recipe)).any()


def test_vamp_mask_keeps_every_codebook_outside_the_inpaint_range(vamp):
    x = noise(1.5)
    recipe = vamp.vamp_mask(x, SR, seed=3, periodic_prompt=0)
    inpainted = vamp.vamp_mask(x, SR, seed=3, periodic_prompt=0, inpaint=(0.5, 1.0))
    first, stop = math.ceil(0.5 * SR / HOP), math.ceil(1.0 * SR / HOP)
    assert not inpainted[..., :first].any() and not inpainted[..., stop:].any()
    np.testing.assert_array_equal(inpainted[..., first:stop], recipe[..., first:stop])


@pytest.mark.parametrize("call", ["vamp", "vamp_batch", "extend"])
def test_a_cancel_set_before_the_call_stops_it_before_any_graph_runs(vamp, monkeypatch, call):
    ran = []
    interruptible = runtime._interruptible

    def counted(call, options):
        return interruptible(lambda: (ran.append(call), call())[1], options)

    monkeypatch.setattr(runtime, "_interruptible", counted)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="cancelled before it started"):
        if call == "vamp":
            vamp.vamp(noise(0.5), SR, cancel=cancel, **FAST)
        elif call == "vamp_batch":
            vamp.vamp_batch([noise(0.5)] * 2, SR, cancel=cancel, **FAST)
        else:
            vamp.extend(noise(0.5), SR, seconds=1.0, cancel=cancel, **FAST)
    assert ran == []


def test_a_cancel_set_while_extend_decodes_stops_its_last_decode(vamp, monkeypatch):
    # extend decodes twice (loudness first, then the samples it returns): a cancel set during
    # the first must stop the second, which runs as the output is assembled.
    cancel = threading.Event()
    decode = vamp.codec.decode
    calls = []

    def decode_then_cancel(*args, **kwargs):
        calls.append(args)
        decoded = decode(*args, **kwargs)
        cancel.set()
        return decoded

    monkeypatch.setattr(vamp.codec, "decode", decode_then_cancel)
    with pytest.raises(Cancelled, match="cancelled before it started"):
        vamp.extend(noise(0.5), SR, seconds=1.0, cancel=cancel, **FAST)
    assert len(calls) == 2


def test_a_cancel_set_during_a_run_terminates_the_graph_in_flight(models):
    # The single graph is one onnxruntime run, of about 12 s for a 10-s clip at 1000 steps here
    # (a 1-s clip took 0.5 s, a race with the timer): the event set after 0.5 s can only be
    # seen by terminating that run (onnxruntime's error is the cause).
    single = SingleGraphVamp(models / "vamp.onnx", threads=2)
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    try:
        with pytest.raises(Cancelled, match="the run was cancelled$") as stopped:
            single.vamp(noise(10.0), SR, steps=1000, cancel=cancel)
    finally:
        timer.cancel()
    assert "terminate flag" in str(stopped.value.__cause__)


def test_cancel_must_be_an_event(vamp):
    with pytest.raises(ValueError, match="^Vamp.vamp: cancel must be a threading.Event or None"):
        vamp.vamp(noise(0.1), SR, cancel=True, **FAST)


def test_same_seed_same_audio_other_seed_other_audio(vamp):
    x = noise(1.0)
    a, _ = vamp.vamp(x, SR, seed=3, **FAST)
    b, _ = vamp.vamp(x, SR, seed=3, **FAST)
    c, _ = vamp.vamp(x, SR, seed=4, **FAST)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(periodic_prompt=5, periodic_width=3, upper_codebook_mask=14),
        dict(prefix_s=2.0, suffix_s=1.0, dropout=0.3, upper_codebook_mask=8),
        dict(onset_mask_width=2, periodic_prompt=0, upper_codebook_mask=6),
    ],
    ids=["defaults", "wide-periodic-all-codebooks", "prefix-suffix-dropout", "onsets"],
)
def test_prompt_codes_are_kept_through_generation(vamp, settings):
    x, _ = audio.preprocess(np.tile(noise(0.25), 50), SR)  # 12.5 s: two coarse chunks
    full = dict(
        periodic_prompt=7,
        periodic_width=1,
        upper_codebook_mask=3,
        onset_mask_width=0,
        prefix_s=0.0,
        suffix_s=0.0,
        dropout=0.0,
    )
    mask = vamp.build_mask(x, 0, **{**full, **settings})
    codes = vamp.encode(x)
    out = vamp.generate(codes, mask, 0, steps=2)
    assert (~mask).any() and mask.any()
    np.testing.assert_array_equal(out[~mask], codes[~mask])
    assert out.shape == codes.shape and ((out >= 0) & (out < 1024)).all()


def test_coarse_chunks_are_575_frames_with_prompt_edges(vamp, monkeypatch):
    recorder = Recorder(monkeypatch, vamp.coarse, "generate")
    x = np.tile(noise(0.5), 25)  # 12.5 s -> 718 frames: chunks of 575 and 143
    vamp.vamp(x, SR, **FAST)
    lengths = [args[1].shape[2] for args, _ in recorder.calls]
    assert lengths == [575, masks.seconds_to_frames(12.5) - 575]
    for index, ((_, chunk_mask), kwargs) in enumerate(recorder.calls):
        assert chunk_mask.shape[1] == 4 and kwargs["steps"] == 1
        assert kwargs["batch_offset"] == index
        assert not chunk_mask[..., 0].any() and not chunk_mask[..., -1].any()


def test_chunk_without_prompt_keeps_its_edges_generated(vamp, monkeypatch):
    recorder = Recorder(monkeypatch, vamp.coarse, "generate")
    vamp.vamp(noise(1.0), SR, periodic_prompt=0, **FAST)
    [((_, chunk_mask), _)] = recorder.calls
    assert chunk_mask.all()


def test_c2f_runs_173_frame_chunks_with_upstream_settings(vamp, monkeypatch):
    recorder = Recorder(monkeypatch, vamp.c2f, "generate")
    vamp.vamp(noise(4.0), SR, temperature=0.5, top_p=0.9, mask_temperature=3.0, **FAST)
    n_frames = masks.seconds_to_frames(4.0)
    assert len(recorder.calls) == -(-n_frames // 173)
    for index, ((codes, chunk_mask), kwargs) in enumerate(recorder.calls):
        assert codes.shape == chunk_mask.shape == (1, 14, 173)
        assert not chunk_mask[:, :4].any()
        assert kwargs == dict(
            steps=C2F_STEPS, seed=0, batch_offset=C2F_STREAM_BASE + index, on_steps=None
        )
    # The padded tail of the last chunk is generated.
    (_, last_mask), _ = recorder.calls[-1]
    assert last_mask[:, 4:, n_frames % 173 :].all()


def test_chunks_batched_equal_chunk_by_chunk(models, monkeypatch):
    """The coarse chunks of one long file in one run (their own stream indexes) and the c2f
    chunks likewise give the audio of one run per chunk, sample for sample."""
    x = np.tile(noise(0.5), 42)  # 21 s: coarse chunks of 575, 575 and 59 frames
    by_chunk = Vamp(models, threads=2, batch_size=1).vamp(x, SR, seed=4, steps=2)
    batched = Vamp(models, threads=2, batch_size=8)
    coarse = Recorder(monkeypatch, batched.coarse, "generate")
    np.testing.assert_array_equal(batched.vamp(x, SR, seed=4, steps=2)[0], by_chunk[0])
    assert [args[0].shape[0] for args, _ in coarse.calls] == [2, 1]


#: Clips of different lengths and rates: two of 11 s (coarse chunks of 575 and 57 frames, each
#: length batched across the two), one shorter than a c2f chunk, one at 48 kHz.
BATCH_CLIPS = [
    (np.tile(noise(0.5), 22), SR, 3),
    (noise(0.1), SR, 5),
    (np.roll(np.tile(noise(0.5), 22), 999), SR, 3),
    (noise(2.0, 48000, channels=2), 48000, -8),
]


def test_vamp_batch_equals_vamp_clip_by_clip(vamp, monkeypatch):
    clips, rates, seeds = (list(column) for column in zip(*BATCH_CLIPS))
    want = [vamp.vamp(x, rate, seed=seed, steps=2) for x, rate, seed in BATCH_CLIPS]
    coarse = Recorder(monkeypatch, vamp.coarse, "generate")
    c2f = Recorder(monkeypatch, vamp.c2f, "generate")
    got = vamp.vamp_batch(clips, rates, seeds=seeds, batch_size=8, steps=2)
    for (y, rate), (want_y, want_rate) in zip(got, want):
        assert rate == want_rate
        np.testing.assert_array_equal(y, want_y)
    # Runs: one per chunk length (575, 57, and the two short clips' own), items from
    # several clips with their own seeds and stream indexes.
    assert sorted(args[0].shape[0] for args, _ in coarse.calls) == [1, 1, 2, 2]
    [seeds_575] = [kw["seed"] for args, kw in coarse.calls if args[0].shape[2] == 575]
    assert list(seeds_575) == [3, 3]
    assert max(args[0].shape[0] for args, _ in c2f.calls) == 8


def test_vamp_batch_with_small_batches_and_no_seeds_equals_vamp(vamp):
    """batch_size 1 runs one chunk a run; seeds=None is vamp's default seed for every clip."""
    clips = [noise(0.3), np.tile(noise(0.5), 3)]
    got = vamp.vamp_batch(clips, SR, batch_size=1, steps=1, periodic_prompt=3)
    for x, (y, _) in zip(clips, got):
        np.testing.assert_array_equal(y, vamp.vamp(x, SR, steps=1, periodic_prompt=3)[0])


def test_vamp_batch_runs_one_chunk_a_run_for_a_batch_coupled_graph(vamp, monkeypatch):
    """A batch-coupled schedule couples a run's items, so those graphs get one chunk a run."""
    monkeypatch.setattr(vamp.c2f, "batch_coupled", True)
    c2f = Recorder(monkeypatch, vamp.c2f, "generate")
    vamp.vamp_batch([noise(0.3), noise(4.0)], SR, steps=1)
    assert len(c2f.calls) == 3 and all(args[0].shape[0] == 1 for args, _ in c2f.calls)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (dict(seeds=[1]), r"Vamp.vamp_batch: seeds must be an int or a sequence of one per clip"),
        (dict(sample_rate=[SR]), r"sample_rate must be an int or a sequence of one per clip \(2\)"),
        (dict(batch_size=0), "Vamp.vamp_batch: batch_size must be an int >= 1, got 0"),
        (dict(seeds=[0, 2**63]), "Vamp.vamp: seed must be an int64, got 9223372036854775808"),
        (dict(dropout=2.0), r"Vamp.vamp: dropout must be in \[0, 1\], got 2"),
    ],
)
def test_vamp_batch_bad_arguments_fail_before_encoding(vamp, monkeypatch, call, message):
    encode = Recorder(monkeypatch, vamp.codec, "encode")
    call = {"sample_rate": SR, **call}
    with pytest.raises(ValueError, match=message):
        vamp.vamp_batch([noise(0.1), noise(0.2)], **call)
    assert encode.calls == []


def test_vamp_batch_refuses_a_single_seed_keyword(vamp):
    with pytest.raises(TypeError, match="Vamp.vamp_batch: seed must not be given"):
        vamp.vamp_batch([noise(0.1)], SR, seed=3)


def test_segmented_codec_equals_the_whole_file(models):
    x, _ = audio.preprocess(np.tile(noise(0.5), 40), SR)  # 20 s, 1149 frames
    whole = Vamp(models, threads=2, segment_frames=10_000)
    segmented = Vamp(models, threads=2, segment_frames=200)
    codes = whole.encode(x)
    np.testing.assert_array_equal(segmented.encode(x), codes)
    np.testing.assert_allclose(
        segmented.decode(codes, x.shape[0]), whole.decode(codes, x.shape[0]), atol=1e-4
    )


def test_two_minute_input_runs_in_bounded_segments(models, monkeypatch):
    vamp = Vamp(models, threads=2)
    encode = Recorder(monkeypatch, vamp.codec, "encode")
    decode = Recorder(monkeypatch, vamp.codec, "decode")
    coarse = Recorder(monkeypatch, vamp.coarse, "generate")
    c2f = Recorder(monkeypatch, vamp.c2f, "generate")
    x = np.tile(noise(1.0), 120)
    y, _ = vamp.vamp(x, SR, **FAST)
    assert y.shape == x.shape
    # Every array handed to a graph covers at most one segment plus its context, whatever the
    # input's length: that bounds the codec's activations, the largest intermediates.
    bound = vamp.segment_frames + 2 * vamp.context_frames
    assert len(encode.calls) == len(decode.calls) == 4  # 6891 frames / 1725
    assert max(args[0].shape[-1] for args, _ in encode.calls) <= bound * HOP
    assert max(args[0].shape[-1] for args, _ in decode.calls) <= bound
    assert max(args[0].shape[-1] for args, _ in coarse.calls) <= vamp.coarse_chunk_frames
    assert max(args[0].shape[-1] for args, _ in c2f.calls) == vamp.c2f_chunk_frames


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(seed=2**63), "Vamp.vamp: seed must be an int64, got 9223372036854775808"),
        (dict(steps=0), "Generator.generate: steps must be an int >= 1, got 0"),
        (dict(dropout=1.5), "Vamp.vamp: dropout must be in [0, 1], got 1.5"),
        (dict(periodic_prompt=-1), "Vamp.vamp: periodic_prompt must be in [0, 1000000], got -1"),
        (dict(periodic_width=2.5), "Vamp.vamp: periodic_width must be an int, got 2.5"),
    ],
)
def test_bad_settings_fail_before_encoding(vamp, monkeypatch, settings, message):
    encode = Recorder(monkeypatch, vamp.codec, "encode")
    with pytest.raises(ValueError) as err:
        vamp.vamp(noise(0.1), SR, **settings)
    assert str(err.value) == message and not encode.calls


def test_graphs_exported_from_another_codec_are_refused_naming_the_files(models, tmp_path):
    """A coarse graph whose metadata names another codec.pth than the codec graphs: garbage
    codes if accepted, so Vamp refuses it and says which files disagree."""
    import json

    import onnx

    from vampnet_onnx.contracts import CONFIG_KEY

    for name in MODEL_FILES:
        (tmp_path / name).symlink_to(models / name)
    coarse = onnx.load(str(models / "coarse.generate.onnx"))
    for prop in coarse.metadata_props:
        if prop.key == CONFIG_KEY:
            config = json.loads(prop.value)
            prop.value = json.dumps({**config, "codec_sha256": "0" * 64})
    (tmp_path / "coarse.generate.onnx").unlink()
    onnx.save(coarse, str(tmp_path / "coarse.generate.onnx"))
    with pytest.raises(
        ValueError,
        match="Vamp: coarse.generate.onnx and codec.encode.onnx must come from one export, got "
        "codec_sha256 '0000",
    ):
        Vamp(tmp_path)


def test_vamp_file_checks_the_output_before_any_work(vamp, tmp_path, monkeypatch):
    """The Python API refuses an output it cannot write, or the input itself, before reading
    the input: nothing is encoded, the input is untouched."""
    source = tmp_path / "in.wav"
    audio.write_audio(source, noise(0.5), SR)
    before = source.read_bytes()

    def fail(*args, **kwargs):
        raise AssertionError("the input was read")

    monkeypatch.setattr(audio, "load_audio", fail)
    for out, reason in [
        (source, "out_path must not be the input file"),
        (tmp_path / "nowhere" / "o.wav", "out_path must be in an existing folder"),
        (tmp_path / "o.mp4", "out_path must name a format soundfile can write"),
    ]:
        with pytest.raises(ValueError, match=f"Vamp.vamp_file: {reason}"):
            vamp.vamp_file(source, out)
    assert source.read_bytes() == before


@pytest.mark.parametrize("channels", [2, 1])
def test_a_channels_last_array_is_refused_naming_the_layout(vamp, channels):
    """Before: [N, 2] (soundfile.read's layout) came back as 2 samples, without an error."""
    x = noise(0.5, channels=channels).T  # [N, channels]
    with pytest.raises(ValueError, match=r"x must be \[channels, N\] with channels first"):
        vamp.vamp(x, SR, steps=1)


@pytest.mark.parametrize("channels", [2, 1])
def test_vamp_batch_refuses_one_channels_last_array_as_the_batch(vamp, channels):
    """Before: vamp_batch([N, 2]) made N two-sample clips."""
    x = noise(0.5, channels=channels).T
    with pytest.raises(ValueError, match=r"clips must be a sequence of .*for one clip pass \[x\]"):
        vamp.vamp_batch(x, SR, steps=1)


def test_the_audio_classes_are_importable_from_the_package():
    """README imported Vamp from vampnet_onnx.pipeline while vampnet_onnx.Vamp did not exist."""
    import vampnet_onnx
    from vampnet_onnx import pipeline

    assert vampnet_onnx.Vamp is pipeline.Vamp
    assert vampnet_onnx.SingleGraphVamp is pipeline.SingleGraphVamp


def test_vamp_batch_takes_a_numpy_batch_size(vamp):
    """Before: np.int64(2) was refused while numpy ints are accepted elsewhere."""
    [(y, rate)] = vamp.vamp_batch([noise(0.3)], SR, batch_size=np.int64(2), steps=1)
    assert y.shape == (round(0.3 * SR),) and rate == SR
