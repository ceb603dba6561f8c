"""Continuation (`longform`, `Vamp.extend`, ``vampnet-onnx extend``) with tiny models: the window
layout, the context each window sees, the join, lengths, seeds and errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from vampnet_onnx import cli, longform, presets
from vampnet_onnx.contracts import EXTEND_STREAM_BASE
from vampnet_onnx.pipeline import Vamp

STEPS = 3


@pytest.fixture(scope="module")
def vamp(tiny_models_dir):
    return Vamp(tiny_models_dir, threads=2)


def _clip(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 2 * t))
    return (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("context", [0, 1, 230, 574])
def test_windows_generate_each_new_frame_once_after_their_context(context):
    plan = longform.windows(first_new=300, n_new=2000, context_frames=context, window_frames=575)
    assert plan[0].new == 300
    assert plan[-1].stop == 2300
    for k, window in enumerate(plan):
        assert window.new - window.start == context
        assert window.stop - window.start <= 575
        assert window.stream == EXTEND_STREAM_BASE + k
        if k:
            assert window.new == plan[k - 1].stop  # contiguous: none twice, none skipped


def test_windows_refuse_a_context_as_long_as_the_window():
    with pytest.raises(ValueError, match=r"context_frames must be in \[0, 575\), got 575"):
        longform.windows(575, 10, 575, 575)


def test_join_keeps_the_head_and_crossfades_into_the_tail():
    head, tail = np.full(100, 1.0, np.float32), np.full(50, -1.0, np.float32)
    out = longform.join(head, tail, 9)
    assert out.shape == (141,)
    assert np.array_equal(out[:91], head[:91])
    assert np.array_equal(out[100:], tail[9:])
    w = (np.arange(9) + 1) / 10
    np.testing.assert_allclose(out[91:100], 1 - 2 * w, rtol=0, atol=1e-7)


class _Spy:
    """Records the chunks the coarse windows are generated from."""

    def __init__(self, vamp):
        self.vamp, self.chunks = vamp, []
        self.run = vamp._run_chunks

    def __call__(self, generator, chunks, *args, **kwargs):
        out = self.run(generator, chunks, *args, **kwargs)
        if generator is self.vamp.coarse:
            self.chunks += [(c[0].copy(), c[1].copy(), c[3], o.copy()) for c, o in zip(chunks, out)]
        return out


def test_each_window_sees_the_final_codes_of_its_context_and_generates_only_new_frames(
    vamp, monkeypatch
):
    spy = _Spy(vamp)
    monkeypatch.setattr(vamp, "_run_chunks", spy)
    rng = np.random.default_rng(1)
    kept = rng.integers(0, 1024, (1, 14, 400)).astype(np.int64)
    context = 230
    codes, plan = longform.extend_codes(vamp, kept, 1000, context, 5, {"steps": STEPS})
    assert codes.shape == (1, 14, 1400)
    assert len(plan) == 3 and len(spy.chunks) == 3
    assert np.array_equal(codes[:, :, :400], kept)  # the input's frames, every codebook
    for window, (chunk, mask, stream, generated) in zip(plan, spy.chunks):
        assert stream == window.stream
        assert chunk.shape[2] == window.stop - window.start
        assert not mask[..., :context].any() and mask[..., context:].all()
        # The context it saw is what the output holds there (input or earlier windows).
        assert np.array_equal(chunk[..., :context], codes[:, :4, window.start : window.new])
        assert np.array_equal(generated[..., context:], codes[:, :4, window.new : window.stop])


def test_looped_repeats_the_input_frame_by_frame():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 1024, (1, 14, 7)).astype(np.int64)
    mask = rng.random((1, 14, 7)) < 0.5
    loop = longform.looped(codes, mask, 30)
    assert np.array_equal(loop.codes, np.tile(codes, (1, 1, 5))[:, :, :30])
    assert np.array_equal(loop.mask, np.tile(mask, (1, 1, 5))[:, :, :30])


def test_a_loop_keeps_its_codes_where_its_mask_keeps_them_in_every_codebook(vamp, monkeypatch):
    spy = _Spy(vamp)
    monkeypatch.setattr(vamp, "_run_chunks", spy)
    rng = np.random.default_rng(3)
    kept = rng.integers(0, 1024, (1, 14, 300)).astype(np.int64)
    loop = longform.Loop(
        rng.integers(0, 1024, (1, 14, 900)).astype(np.int64), rng.random((1, 14, 900)) < 0.7
    )
    context = 100
    codes, plan = longform.extend_codes(vamp, kept, 900, context, 5, {"steps": STEPS}, loop=loop)
    new = codes[:, :, 300:]
    assert np.array_equal(codes[:, :, :300], kept)
    assert np.array_equal(new[~loop.mask], loop.codes[~loop.mask])  # coarse and fine kept
    assert (new[loop.mask] != loop.codes[loop.mask]).mean() > 0.9  # the rest generated
    for window, (_, mask, _, _) in zip(plan, spy.chunks):
        assert not mask[..., :context].any()  # the context, kept
        expected = loop.mask[:, :4, window.new - 300 : window.stop - 300]
        assert np.array_equal(mask[..., context:], expected)


def test_a_preset_loops_the_input_under_its_mask_over_the_input(vamp, monkeypatch):
    spy = _Spy(vamp)
    monkeypatch.setattr(vamp, "_run_chunks", spy)
    x = _clip(3.0, 44100)
    recipe = presets.preset("small variation")
    vamp.extend(x, 44100, seconds=12.0, context_s=2.0, seed=7, steps=STEPS, **recipe)
    kept = x.shape[0] // 768
    input_mask = vamp.vamp_mask(x, 44100, seed=7, **recipe)[:, :4, :kept]
    assert input_mask.any() and not input_mask.all()
    context = vamp._context_frames(2.0)
    first = kept
    assert len(spy.chunks) == 2
    for _, mask, _, _ in spy.chunks:
        n = mask.shape[2] - context
        frames = (first - kept + np.arange(n)) % kept  # the input frames these new ones repeat
        assert np.array_equal(mask[..., context:], input_mask[..., frames])
        first += n


def test_extend_without_a_recipe_generates_every_new_frame(vamp, monkeypatch):
    spy = _Spy(vamp)
    monkeypatch.setattr(vamp, "_run_chunks", spy)
    vamp.extend(_clip(2.0, 44100), 44100, seconds=1.0, context_s=1.0, steps=STEPS)
    [(_, mask, _, _)] = spy.chunks
    context = vamp._context_frames(1.0)
    assert not mask[..., :context].any() and mask[..., context:].all()


def test_a_loop_needs_an_input_of_a_frame(vamp):
    with pytest.raises(ValueError, match="samples must hold at least one frame"):
        vamp.extend(np.zeros(500, np.float32), 44100, seconds=1.0, context_s=0, dropout=0.1)


def test_extend_adds_exactly_the_seconds_asked_and_keeps_the_input_up_to_the_join(vamp):
    for rate, seconds in ((44100, 0.02), (22050, 13.3), (48000, 1.0)):
        x = _clip(2.5, rate)
        y, out_rate = vamp.extend(x, rate, seconds=seconds, context_s=2.0, steps=STEPS)
        assert out_rate == rate
        assert y.shape == (x.shape[0] + round(seconds * rate),)
        join = x.shape[0] - round(longform.JOIN_S * rate)
        assert np.array_equal(y[:join], x[:join])
        assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
        assert np.abs(y[x.shape[0] :]).max() > 0  # music, not silence, after the join


def test_extend_mixes_a_stereo_input_to_mono_as_vamp_does(vamp):
    x = np.stack([_clip(1.5, 44100, 1), _clip(1.5, 44100, 2)])
    y, _ = vamp.extend(x, 44100, seconds=0.5, steps=STEPS)
    join = x.shape[1] - round(longform.JOIN_S * 44100)
    np.testing.assert_array_equal(
        y[:join], x.mean(axis=0, dtype=np.float64)[:join].astype(np.float32)
    )


def test_the_same_seed_gives_the_same_output_and_another_seed_other_new_frames(vamp):
    x = _clip(3.0, 44100)
    a, _ = vamp.extend(x, 44100, seconds=2.0, seed=3, steps=STEPS)
    b, _ = vamp.extend(x, 44100, seconds=2.0, seed=3, steps=STEPS)
    c, _ = vamp.extend(x, 44100, seconds=2.0, seed=4, steps=STEPS)
    assert np.array_equal(a, b)
    join = x.shape[0] - round(longform.JOIN_S * 44100)
    assert np.array_equal(a[:join], c[:join])
    assert not np.array_equal(a[x.shape[0] :], c[x.shape[0] :])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seconds": 0}, r"Vamp.extend: seconds must be in \(0, 86400\], got 0"),
        ({"seconds": float("nan")}, "Vamp.extend: seconds must be finite, got nan"),
        ({"seconds": 1, "context_s": -1}, r"context_s must be in \[0, 10.000\)"),
        ({"seconds": 1, "context_s": 10}, r"context_s must be in \[0, 10.000\)"),
        ({"seconds": 1, "context_s": 2.5}, "context_s must be at most the input's length"),
        ({"seconds": 1, "inpaint": (0, 1)}, "inpaint must not be given"),
        ({"seconds": 1, "periodic_prompt": -1}, "periodic_prompt must be"),
        ({"seconds": 1, "steps": 0}, "steps must be"),
    ],
)
def test_bad_values_are_refused_in_one_line(vamp, kwargs, message):
    with pytest.raises(ValueError, match=message):
        vamp.extend(_clip(2.0, 44100), 44100, **kwargs)


def test_cli_extend_writes_the_input_and_its_continuation(tiny_models_dir, tmp_path, capsys):
    source, out = tmp_path / "in.wav", tmp_path / "out.flac"
    soundfile.write(source, _clip(2.0, 16000), 16000, subtype="PCM_24")
    argv = ["extend", str(source), str(out), "--seconds", "1.5", "--context", "1"]
    assert cli.main([*argv, "--models", str(tiny_models_dir), "--steps", "3", "--quiet"]) == 0
    info = soundfile.info(out)
    assert (info.samplerate, info.frames, info.subtype) == (16000, 32000 + 24000, "PCM_24")
    assert "1.5 s added" in capsys.readouterr().out


def test_cli_extend_with_a_preset_writes_its_loop(tiny_models_dir, tmp_path, capsys):
    source, out = tmp_path / "in.wav", tmp_path / "out.wav"
    x = _clip(2.0, 44100)
    soundfile.write(source, x, 44100, subtype="FLOAT")
    argv = ["extend", str(source), str(out), "--seconds", "1", "--preset", "small variation"]
    argv += ["--dropout", "0.1", "--seed", "2", "--models", str(tiny_models_dir)]
    assert cli.main([*argv, "--steps", "3", "--quiet"]) == 0
    written, _ = soundfile.read(out, dtype="float32")
    settings = {**presets.preset("small variation"), "dropout": 0.1}
    expected, _ = Vamp(tiny_models_dir).extend(x, 44100, seconds=1, seed=2, steps=3, **settings)
    assert np.array_equal(written, expected)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seconds", "-1"], "--seconds must be in (0, 86400], got -1"),
        (["--seconds", "1", "--context", "5"], "--context must be at most the input's length"),
        (["--seconds", "1", "--top-p", "2"], "--top-p must be"),
        (["--seconds", "1", "--dropout", "2"], "--dropout must be"),
    ],
)
def test_cli_extend_refuses_bad_values_before_the_models_load(argv, message, tmp_path, capsys):
    source = tmp_path / "in.wav"
    soundfile.write(source, _clip(2.0, 16000), 16000)
    missing = tmp_path / "no-models"
    assert (
        cli.main(["extend", str(source), str(tmp_path / "o.wav"), *argv, "--models", str(missing)])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("context", [1, 200, 574])
def test_context_windows_cover_the_file_once_each_after_its_context(context):
    plan = longform.context_windows(3000, 575, context)
    assert (plan[0].start, plan[0].new, plan[0].stop, plan[0].stream) == (0, 0, 575, 0)
    assert plan[-1].stop == 3000
    for k, window in enumerate(plan[1:], start=1):
        assert window.new == plan[k - 1].stop
        assert window.new - window.start == context
        assert window.stop - window.start <= 575
        assert window.stream == k


class _CoarseSpy(_Spy):
    """Also records the coarse stage's output (the codes c2f starts from)."""

    def __init__(self, vamp):
        super().__init__(vamp)
        self.c2f = vamp._c2f_batch
        self.coarse_out = None

    def c2f_batch(self, codes, *args, **kwargs):
        self.coarse_out = [c.copy() for c in codes]
        return self.c2f(codes, *args, **kwargs)


def test_with_context_each_window_starts_with_what_the_window_before_generated(vamp, monkeypatch):
    spy = _CoarseSpy(vamp)
    monkeypatch.setattr(vamp, "_run_chunks", spy)
    monkeypatch.setattr(vamp, "_c2f_batch", spy.c2f_batch)
    x = _clip(25.0, 44100)
    vamp.vamp(x, 44100, steps=STEPS, context_s=3.0, periodic_prompt=0)
    context = round(3.0 * 44100 / 768)
    plan = longform.context_windows(spy.coarse_out[0].shape[2], 575, context)
    assert len(plan) == len(spy.chunks) == 4  # 1436 frames: 575, then 403 new a window
    out = spy.coarse_out[0]
    for k, (window, (chunk, mask, stream, generated)) in enumerate(zip(plan, spy.chunks)):
        assert stream == window.stream
        assert not mask[..., : window.new - window.start].any()
        assert mask[..., window.new - window.start :].all()  # no prompt: no seam frames kept
        if k:
            previous = spy.chunks[k - 1][3]
            seen = chunk[..., :context]
            # The context is the end of the previous window's output, as it generated it.
            assert np.array_equal(seen, previous[..., -context:])
            assert np.array_equal(seen, out[:, :4, window.start : window.new])
        assert np.array_equal(
            generated[..., window.new - window.start :], out[:, :4, window.new : window.stop]
        )


def test_context_zero_is_upstreams_independent_chunks_and_a_short_file_is_the_same(vamp):
    long, short = _clip(12.0, 44100), _clip(6.0, 44100)
    plain, _ = vamp.vamp(long, 44100, steps=STEPS)
    assert np.array_equal(plain, vamp.vamp(long, 44100, steps=STEPS, context_s=0)[0])
    assert not np.array_equal(plain, vamp.vamp(long, 44100, steps=STEPS, context_s=3)[0])
    one_window, _ = vamp.vamp(short, 44100, steps=STEPS)
    assert np.array_equal(one_window, vamp.vamp(short, 44100, steps=STEPS, context_s=3)[0])


def test_vamp_batch_with_context_equals_each_clip_alone(vamp):
    clips = [_clip(12.0, 44100, 1), _clip(20.0, 22050, 2)]
    batch = vamp.vamp_batch(clips, [44100, 22050], seeds=[5, 6], steps=STEPS, context_s=2.0)
    for clip, rate, seed, (y, _) in zip(clips, [44100, 22050], [5, 6], batch):
        alone, _ = vamp.vamp(clip, rate, seed=seed, steps=STEPS, context_s=2.0)
        assert np.array_equal(y, alone)


def test_cli_vamp_context_is_checked_and_recorded_in_the_manifest(
    tiny_models_dir, tmp_path, capsys
):
    source = tmp_path / "in.wav"
    soundfile.write(source, _clip(11.0, 44100), 44100)
    base = ["vamp", str(source), "--models", str(tiny_models_dir), "--steps", "3", "--quiet"]
    assert cli.main([*base, "--out-dir", str(tmp_path / "o"), "--context", "10"]) == 1
    assert "--context must be in [0, 10.000)" in capsys.readouterr().err
    assert cli.main([*base, "--out-dir", str(tmp_path / "o"), "--context", "2"]) == 0
    manifest = (tmp_path / "o" / "manifest.json").read_text()
    assert '"context_s": 2.0' in manifest
    single = ["vamp", str(source), str(tmp_path / "s.wav"), "--models"]
    assert cli.main([*single, str(tiny_models_dir / "vamp.onnx"), "--context", "2"]) == 1
    assert "--context must be 0 (the single graph" in capsys.readouterr().err


def test_cli_extend_refuses_an_addition_the_output_format_cannot_hold(tmp_path, capsys):
    source = tmp_path / "in.wav"
    soundfile.write(source, _clip(2.0, 16000), 16000, subtype="FLOAT")
    argv = ["extend", str(source), str(tmp_path / "o.wav"), "--seconds", "86400"]
    assert cli.main([*argv, "--models", str(tmp_path / "no-models")]) == 1
    err = capsys.readouterr().err.strip()
    # A float WAV holds (2^32 - 1 - 4096) / 4 frames: 67107.8 s at 16 kHz, the input's 2 s in.
    assert err.endswith(
        "--seconds must be at most 67106.799 for this input to .wav (the format holds at most "
        "4 GiB), got 86400; write .w64, .rf64 or .flac"
    )
    assert not (tmp_path / "o.wav").exists()


def test_joined_pieces_are_the_whole_join():
    rng = np.random.default_rng(3)
    head = rng.standard_normal(1000).astype(np.float32)
    tail = rng.standard_normal(3000).astype(np.float32)
    pieces = [tail[:7], tail[7:30], tail[30:2000], tail[2000:]]
    streamed = np.concatenate(list(longform.joined(head, iter(pieces), 50)))
    assert np.array_equal(streamed, longform.join(head, tail, 50))


def test_extend_file_writes_what_extend_returns(vamp, tmp_path):
    source, out = tmp_path / "in.wav", tmp_path / "out.wav"
    x = _clip(2.0, 32000)
    soundfile.write(source, x, 32000, subtype="FLOAT")
    settings = dict(seconds=12.0, context_s=1.5, seed=9, steps=STEPS)
    vamp.extend_file(source, out, **settings)
    written, rate = soundfile.read(out, dtype="float32")
    expected, _ = vamp.extend(x, 32000, **settings)
    assert rate == 32000
    assert np.array_equal(written, expected)


def test_ctrl_c_stops_a_continuation_and_leaves_no_file(vamp, tmp_path):
    import _thread
    import signal
    import threading

    source, out = tmp_path / "in.wav", tmp_path / "out.wav"
    soundfile.write(source, _clip(2.0, 44100), 44100)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, _thread.interrupt_main)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            # Minutes of work uninterrupted: 10 minutes added, 36 steps a window.
            vamp.extend_file(source, out, seconds=600.0)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]
