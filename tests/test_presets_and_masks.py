"""VampNet's presets (`presets`), the beat mask (``beat_mask_ms``), a given mask (``mask=`` /
``--mask``) and time-range inpainting (``inpaint=`` / ``--inpaint``) on tiny random-weight
models."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import soundfile

from vampnet_onnx import beats, cli, contracts, presets
from vampnet_onnx.pipeline import SingleGraphVamp, Vamp

SR = 44100
HOP = 768

# app.py@72e2675 change_preset: (periodic_prompt, n_mask_codebooks, onset_mask_width, dropout,
# beat_mask_ms); "unconditional" returns no beat value upstream (docs/model.md §4.7): 0 here.
UPSTREAM_PRESETS = {
    "timbre transfer": (2, 1, 0, 0.0, 0),
    "small variation": (5, 4, 0, 0.0, 0),
    "small variation (follow beat)": (7, 4, 0, 0.0, 50),
    "medium variation": (7, 4, 0, 0.0, 0),
    "medium variation (follow beat)": (13, 4, 0, 0.0, 50),
    "large variation": (13, 4, 0, 0.2, 0),
    "large variation (follow beat)": (0, 4, 0, 0.0, 80),
    "unconditional": (0, 1, 0, 0.0, 0),
}


@pytest.fixture(scope="module")
def vamp(tiny_models_dir) -> Vamp:
    return Vamp(tiny_models_dir, threads=2)


@pytest.fixture
def captured_mask(vamp, monkeypatch) -> list:
    """The masks the generation stages get, one per clip (generation itself still runs)."""
    masks_seen = []
    original = vamp._generate_batch

    def generate(codes, masks, *args, **kwargs):
        masks_seen.extend(mask.copy() for mask in masks)
        return original(codes, masks, *args, **kwargs)

    monkeypatch.setattr(vamp, "_generate_batch", generate)
    return masks_seen


def noise(seconds: float) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(round(seconds * SR)) * 0.1).astype(np.float32)


def parsed(*argv: str):
    return cli.build_parser().parse_args(["vamp", "in.wav", "out.wav", "--models", "m", *argv])


# --- presets ------------------------------------------------------------------------------


def test_presets_are_upstreams_in_its_menu_order():
    names = ["periodic_prompt", "upper_codebook_mask", "onset_mask_width", "dropout"]
    got = {
        name: tuple(settings[k] for k in [*names, "beat_mask_ms"])
        for name, settings in presets.PRESETS.items()
    }
    assert list(got) == list(UPSTREAM_PRESETS)
    assert got == UPSTREAM_PRESETS


def test_an_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match=r"^presets: name must be one of 'timbre transfer', "):
        presets.preset("huge variation")


def test_a_preset_sets_its_fields_and_leaves_the_others_at_their_defaults():
    settings = cli._vamp_settings(parsed("--preset", "large variation"))
    assert settings["periodic_prompt"] == 13 and settings["dropout"] == 0.2
    assert settings["upper_codebook_mask"] == 4
    assert settings["periodic_width"] == 1 and settings["steps"] == 36


def test_explicit_options_win_over_the_preset():
    settings = cli._vamp_settings(parsed("--preset", "large variation", "--dropout", "0.05"))
    assert settings["dropout"] == 0.05 and settings["periodic_prompt"] == 13


def test_without_a_preset_the_defaults_are_vampnets_app_defaults():
    settings = cli._vamp_settings(parsed())
    assert (settings["periodic_prompt"], settings["upper_codebook_mask"]) == (7, 3)


def test_list_presets_prints_every_preset_and_needs_no_other_argument(capsys):
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args(["vamp", "--list-presets"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("  ")[0].strip() for line in lines] == list(UPSTREAM_PRESETS)
    assert "--periodic-prompt 13 --upper-codebook-mask 4" in lines[4]


def test_a_preset_runs_end_to_end(vamp, captured_mask):
    y, rate = vamp.vamp(noise(1.0), SR, steps=1, **presets.preset("timbre transfer"))
    assert y.shape == (SR,) and rate == SR
    [mask] = captured_mask
    # timbre transfer keeps codebook 0 only (upper_codebook_mask 1)
    assert mask[0, 1:].all() and not mask[0, 0].all()


# --- a given mask -------------------------------------------------------------------------


def test_a_given_mask_is_the_generation_mask(vamp, captured_mask):
    n_frames = math.ceil(SR / HOP)
    given = np.random.default_rng(1).integers(0, 2, (14, n_frames))
    vamp.vamp(noise(1.0), SR, steps=1, mask=given)
    np.testing.assert_array_equal(captured_mask[0], given[None].astype(bool))


def test_a_1d_mask_applies_to_every_codebook(vamp, captured_mask):
    n_frames = math.ceil(SR / HOP)
    given = np.arange(n_frames) % 3 == 0
    vamp.vamp(noise(1.0), SR, steps=1, mask=given)
    np.testing.assert_array_equal(captured_mask[0], np.broadcast_to(given, (1, 14, n_frames)))


def test_upstreams_batch_of_one_mask_is_accepted(vamp, captured_mask):
    given = np.random.default_rng(2).integers(0, 2, (1, 14, math.ceil(SR / HOP)))
    vamp.vamp(noise(1.0), SR, steps=1, mask=given)
    np.testing.assert_array_equal(captured_mask[0], given.astype(bool))


def test_a_mask_of_the_wrong_length_names_the_expected_shape(vamp):
    with pytest.raises(ValueError) as err:
        vamp.vamp(noise(1.0), SR, steps=1, mask=np.ones(50, bool))
    assert str(err.value) == (
        "Vamp.vamp: mask must have shape [58] or [14, 58] for this input (44100 samples at "
        "44100 Hz, hop 768), got [50]"
    )


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.full(58, 2), "mask must hold bools or the integers 0 and 1 (1 = generate), got dtype"),
        (np.ones((2, 14, 58), bool), "mask must be a non-empty [T], [n_codebooks, T] or [1, "),
        (np.full(58, 0.5), "mask must hold bools or the integers 0 and 1"),
        # Before: a TypeError from np.unique.
        (
            np.array([0, 1, None], dtype=object),
            "mask must hold bools or the integers 0 and 1 (1 = generate), got dtype object",
        ),
    ],
)
def test_a_malformed_mask_is_rejected_before_any_work(mask, message):
    with pytest.raises(ValueError) as err:
        Vamp.check_settings(mask=mask)
    assert str(err.value).startswith(f"Vamp.vamp: {message}")


def test_a_given_mask_excludes_the_recipe_settings():
    with pytest.raises(ValueError) as err:
        Vamp.check_settings(mask=np.ones(5, bool), periodic_prompt=3)
    assert str(err.value) == (
        "Vamp.vamp: periodic_prompt must be left at its default when a mask is given (the mask "
        "replaces the recipe), got 3"
    )


@pytest.mark.parametrize("name, value", [("mask", np.ones(5, bool)), ("inpaint", (0.0, 1.0))])
def test_the_single_graph_takes_no_mask_or_inpaint(name, value):
    with pytest.raises(ValueError, match=f"^SingleGraphVamp.vamp: {name} must be None"):
        SingleGraphVamp.check_settings(**{name: value})


def test_cli_mask_file_end_to_end(tiny_models_dir, tmp_path):
    wav = tmp_path / "in.wav"
    soundfile.write(wav, noise(1.0), SR)
    mask_file = tmp_path / "mask.npy"
    np.save(mask_file, np.zeros((14, 58), np.int64))
    out = tmp_path / "out.wav"
    argv = ["vamp", str(wav), str(out), "--models", str(tiny_models_dir), "--steps", "1"]
    assert cli.main([*argv, "--mask", str(mask_file), "--quiet"]) == 0
    assert soundfile.info(out).frames == SR


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "small variation"], "--mask must not come with --preset"),
        (["--dropout", "0.1"], "--mask must not come with --dropout"),
    ],
)
def test_cli_mask_with_recipe_options_is_an_error(tmp_path, capsys, extra, message):
    mask_file = tmp_path / "mask.npy"
    np.save(mask_file, np.zeros(58, bool))
    argv = ["vamp", "in.wav", str(tmp_path / "o.wav"), "--models", "m", "--mask", str(mask_file)]
    assert cli.main([*argv, *extra]) == 1
    assert capsys.readouterr().err.startswith(f"vampnet-onnx vamp: error: {message}")


def _mask_error(tmp_path, capsys, mask_file, wav=None) -> str:
    source = wav if wav is not None else tmp_path / "in.wav"
    argv = ["vamp", str(source), str(tmp_path / "o.wav"), "--models", "m", "--mask", str(mask_file)]
    assert cli.main(argv) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def test_cli_an_empty_or_renamed_or_folder_mask_is_one_line(tmp_path, capsys):
    """Before: EOFError, an .npz read as an archive, Errno 21."""
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    assert "--mask must be a numpy .npy array file, got" in _mask_error(tmp_path, capsys, empty)
    archive = tmp_path / "archive.npy"
    with open(archive, "wb") as file:
        np.savez(file, mask=np.zeros(58, bool))
    line = _mask_error(tmp_path, capsys, archive)
    assert line.endswith(f"--mask must be a .npy array, got '{archive}', an .npz archive")
    folder = tmp_path / "masks.npy"
    folder.mkdir()
    line = _mask_error(tmp_path, capsys, folder)
    assert line.endswith(f"--mask must be a .npy file (numpy.save), got the folder '{folder}'")


def test_cli_a_mask_longer_than_the_input_is_refused_from_its_header(tmp_path, capsys):
    """Before: a 1.1-GB mask was read whole before its shape was checked."""
    wav = tmp_path / "in.wav"
    soundfile.write(wav, noise(1.0), SR)
    big = tmp_path / "big.npy"
    np.lib.format.open_memmap(big, mode="w+", dtype=bool, shape=(14, 1_000_000)).flush()
    line = _mask_error(tmp_path, capsys, big, wav)
    assert "--mask must have at most 59 frames (the longest input's, about), got shape " in line
    assert "[14, 1000000]" in line


def test_cli_mask_must_be_npy_without_pickles(tmp_path, capsys):
    pickled = tmp_path / "mask.npy"
    np.save(pickled, np.array([object()]), allow_pickle=True)
    argv = ["vamp", "in.wav", str(tmp_path / "o.wav"), "--models", "m", "--mask", str(pickled)]
    assert cli.main(argv) == 1
    assert "--mask must be a numpy .npy array file" in capsys.readouterr().err


# --- inpainting ---------------------------------------------------------------------------


def test_inpaint_generates_only_the_range(vamp, captured_mask):
    x = noise(3.0)
    vamp.vamp(x, SR, steps=1, inpaint=(1.0, 2.0), periodic_prompt=0)
    [mask] = captured_mask
    n_frames = math.ceil(x.shape[0] / HOP)
    # Frame f starts at f * 768 / 44100 s: generated from the first frame at or after 1 s to
    # the last one before ceil(2 s) (docs/model.md §4.2's s2t).
    expected = np.zeros(n_frames, bool)
    expected[math.ceil(1.0 * SR / HOP) : math.ceil(2.0 * SR / HOP)] = True
    np.testing.assert_array_equal(mask[0], np.broadcast_to(expected, (14, n_frames)))


def test_inpaint_past_the_end_keeps_no_suffix(vamp, captured_mask):
    vamp.vamp(noise(1.0), SR, steps=1, inpaint=(0.5, 9.0), periodic_prompt=0)
    assert captured_mask[0][0, :, -1].all()


def test_inpaint_keeps_every_codebook_outside_the_range_whatever_the_recipe(vamp, captured_mask):
    x = noise(2.0)
    vamp.vamp(x, SR, steps=1, inpaint=(1.0, 2.0), upper_codebook_mask=0)
    [mask] = captured_mask
    assert not mask[0, :, : math.ceil(1.0 * SR / HOP)].any()
    assert mask[0, :, math.ceil(1.0 * SR / HOP) :].all()


def test_inpaint_applies_to_a_given_mask(vamp, captured_mask):
    n_frames = math.ceil(SR / HOP)
    vamp.vamp(noise(1.0), SR, steps=1, mask=np.ones(n_frames, bool), inpaint=(0.0, 0.5))
    expected = np.zeros(n_frames, bool)
    expected[: math.ceil(0.5 * SR / HOP)] = True
    np.testing.assert_array_equal(captured_mask[0][0], np.broadcast_to(expected, (14, n_frames)))


def test_inpaint_starting_after_the_input_is_an_error(vamp):
    with pytest.raises(ValueError) as err:
        vamp.vamp(noise(1.0), SR, steps=1, inpaint=(2.0, 3.0))
    assert str(err.value) == (
        "Vamp.vamp: inpaint must start at or before 0.993 s, where this input's last 768-sample "
        "frame starts, got (2, 3)"
    )


def test_inpaint_just_before_the_end_names_the_last_frame_start(vamp):
    """Before: 2.999 on a 3.0-s input read 'must start within the input (0 to 3.000 s)'."""
    with pytest.raises(
        ValueError, match=r"must start at or before 2\.995 s, .*got \(2\.999, 3\.5\)"
    ):
        vamp.vamp(noise(3.0), SR, steps=1, inpaint=(2.999, 3.5))


def test_an_inpaint_range_holding_no_frame_start_is_refused(vamp):
    """Before: (1.5, 1.5000001) generated nothing, silently."""
    with pytest.raises(
        ValueError,
        match=r"inpaint must hold the start of a 768-sample frame .* "
        r"got \(1\.5, 1\.5\), which holds none",
    ):
        vamp.vamp(noise(2.0), SR, steps=1, inpaint=(1.5, 1.5000001))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"inpaint": (2.0, 1.0)}, "inpaint must be (start, end) seconds with 0 <= start < end"),
        ({"inpaint": (-1.0, 1.0)}, "inpaint must be (start, end) seconds with 0 <= start < end"),
        (
            {"inpaint": (0, 1e308)},
            "inpaint must be (start, end) seconds with 0 <= start < end <= 1e+07, got (0, 1e+308)",
        ),
        (
            {"inpaint": (0, 2**1100)},
            "inpaint must be (start, end) seconds with 0 <= start < end <= 1e+07, got (0, inf)",
        ),
        ({"inpaint": "ab"}, "inpaint must be a pair (start, end) of numbers in seconds, got 'ab'"),
        ({"inpaint": "12"}, "inpaint must be a pair (start, end) of numbers in seconds, got '12'"),
        ({"inpaint": {1: 0, 2: 0}}, "inpaint must be a pair (start, end) of numbers in seconds"),
        ({"inpaint": (1, 2, 3)}, "inpaint must be a pair (start, end) of numbers in seconds"),
    ],
)
def test_bad_inpaint_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        Vamp.check_settings(**kwargs)
    assert str(err.value).startswith(f"Vamp.vamp: {message}")


def test_cli_inpaint_parses_two_seconds():
    assert cli._vamp_settings(parsed("--inpaint", "1.5", "4"))["inpaint"] == (1.5, 4.0)


def test_numpy_inpaint_pairs_are_taken():
    Vamp.check_settings(inpaint=np.array([0.5, 1.0]))
    Vamp.check_settings(inpaint=(np.float32(0.5), np.int64(2)))


# --- the beat mask ------------------------------------------------------------------------


def test_the_beat_mask_keeps_the_frames_after_each_beat(vamp, monkeypatch):
    # Beats at 0.1 s (a downbeat too) and 0.5 s: upstream's make_beat_mask keeps frames
    # [ceil(t * 44100 / 768), + ceil(0.05 * 44100 / 768) = 3) (docs/model.md §4.5, §7), then
    # the app ANDs it with the recipe and generates codebooks >= upper_codebook_mask again.
    monkeypatch.setattr(
        beats.BeatTracker,
        "extract_beats",
        lambda self, x, rate: (np.array([0.1, 0.5]), np.array([0.1])),
    )
    x = noise(1.0)
    mask = vamp.build_mask(x, 0, periodic_prompt=0, upper_codebook_mask=2, beat_mask_ms=50.0)
    expected = np.ones((14, math.ceil(SR / HOP)), bool)
    for frame in (6, 29):  # ceil(0.1 * 44100 / 768), ceil(0.5 * 44100 / 768)
        expected[:2, frame : frame + 3] = False
    np.testing.assert_array_equal(mask[0], expected)


def test_a_follow_beat_preset_runs_end_to_end_with_wavebeat(vamp, captured_mask):
    y, _ = vamp.vamp(noise(2.0), SR, steps=1, **presets.preset("medium variation (follow beat)"))
    assert y.shape == (2 * SR,) and np.isfinite(y).all()
    assert captured_mask[0][0, 4:].all()  # codebooks >= 4 always generated


def test_a_beat_mask_without_wavebeat_fails_before_any_audio_work(tiny_models_dir, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in contracts.MODEL_FILES:
        shutil.copy(tiny_models_dir / name, folder / name)
    with pytest.raises(FileNotFoundError) as err:
        Vamp(folder).vamp(np.zeros(10, np.float32), SR, beat_mask_ms=50.0)
    assert str(err.value) == (
        "Vamp.vamp: beat_mask_ms needs wavebeat.onnx in the models folder (vampnet-onnx export "
        f"--wavebeat wavebeat.pth, or --pretrained), got none in '{folder}'"
    )


def test_the_single_graph_takes_no_beat_mask():
    with pytest.raises(ValueError, match="^SingleGraphVamp.vamp: beat_mask_ms must be 0"):
        SingleGraphVamp.check_settings(beat_mask_ms=50.0)


def test_a_second_preset_is_an_error_not_a_silent_winner(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(
            [
                "vamp",
                "a.wav",
                "b.wav",
                "--models",
                "m",
                "--preset",
                "timbre transfer",
                "--preset",
                "small variation",
            ]
        )
    assert exit_.value.code == 2
    assert "--preset must be given once, got 'timbre transfer' and 'small variation'" in (
        capsys.readouterr().err
    )
