"""Mask builders: VampNet's semantics (docs/model.md §4.5) with bool masks, True = generate."""

from __future__ import annotations

import numpy as np
import pytest

from vampnet_onnx import masks

SHAPE = (2, 4, 30)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def kept_frames(mask: np.ndarray) -> list[int]:
    """Frames kept (False) in item 0, codebook 0."""
    return np.flatnonzero(~mask[0, 0]).tolist()


def test_linear_random_extremes_and_rate():
    assert masks.linear_random(SHAPE, 1.0, rng()).all()
    assert not masks.linear_random(SHAPE, 0.0, rng()).any()
    # 40 000 Bernoulli(0.3) draws: standard error 0.0023, so 0.01 is over 4 sigma.
    mask = masks.linear_random((4, 10, 1000), 0.3, rng())
    assert mask.dtype == bool and mask.shape == (4, 10, 1000)
    assert abs(mask.mean() - 0.3) < 0.01


def test_same_seed_same_mask():
    a = masks.build_mask(SHAPE, rng(5), rand_mask_intensity=0.8, dropout=0.3)
    b = masks.build_mask(SHAPE, rng(5), rand_mask_intensity=0.8, dropout=0.3)
    np.testing.assert_array_equal(a, b)


def test_inpaint_keeps_prefix_and_suffix():
    mask = masks.inpaint(SHAPE, 3, 2)
    assert kept_frames(mask) == [0, 1, 2, 28, 29]
    assert (mask == mask[:1, :1]).all()  # same in every item and codebook
    assert masks.inpaint(SHAPE, 0, 0).all()
    assert not masks.inpaint(SHAPE, 40, 0).any()


@pytest.mark.parametrize(
    ("width", "kept"),
    [
        (0, [0, 7, 14, 21, 28]),
        (1, [0, 7, 14, 21, 28]),
        # Upstream keeps [j - w // 2, j + w // 2]: width 2 acts as 3, clipped at the ends.
        (2, [0, 1, 6, 7, 8, 13, 14, 15, 20, 21, 22, 27, 28, 29]),
        (3, [0, 1, 6, 7, 8, 13, 14, 15, 20, 21, 22, 27, 28, 29]),
    ],
)
def test_periodic_effective_width_is_odd(width, kept):
    assert kept_frames(masks.periodic(SHAPE, 7, width)) == kept


def test_periodic_zero_period_generates_everything():
    assert masks.periodic(SHAPE, 0, 3, random_roll=True, rng=rng()).all()


def test_periodic_roll_shifts_every_item_alike_with_wraparound():
    plain = masks.periodic(SHAPE, 7)
    offset = int(rng(3).integers(0, 7))
    rolled = masks.periodic(SHAPE, 7, random_roll=True, rng=rng(3))
    np.testing.assert_array_equal(rolled, np.roll(plain, offset, axis=-1))
    assert (rolled == rolled[:1]).all()
    with pytest.raises(ValueError, match="rng must be given when random_roll is True"):
        masks.periodic(SHAPE, 7, random_roll=True)


def test_dropout_sets_int_t_p_draws_to_generate_in_all_codebooks():
    base = masks.periodic(SHAPE, 1)  # everything kept
    mask = masks.dropout(base, 0.5, rng(1))
    drawn = np.unique(rng(1).integers(0, 30, 15))  # int(30 * 0.5) frames, with replacement
    assert np.flatnonzero(mask[0, 0]).tolist() == drawn.tolist()
    assert (mask == mask[:1, :1]).all()
    assert not masks.dropout(base, 0.0, rng()).any()
    np.testing.assert_array_equal(masks.dropout(~base, 0.5, rng()), ~base)  # never adds prompt


def test_codebook_unmask_and_mask():
    mask = masks.linear_random(SHAPE, 0.5, rng())
    unmasked = masks.codebook_unmask(mask, 2)
    assert not unmasked[:, :2].any() and (unmasked[:, 2:] == mask[:, 2:]).all()
    upper = masks.codebook_mask(mask, 3)
    assert upper[:, 3:].all() and (upper[:, :3] == mask[:, :3]).all()
    assert masks.codebook_mask(mask, 0).all()


def test_mask_and_or_are_min_and_clamped_sum():
    a = masks.linear_random(SHAPE, 0.5, rng(1))
    b = masks.linear_random(SHAPE, 0.5, rng(2))
    ai, bi = a.astype(np.int64), b.astype(np.int64)
    np.testing.assert_array_equal(masks.mask_and(a, b), np.minimum(ai, bi).astype(bool))
    np.testing.assert_array_equal(masks.mask_or(a, b), np.clip(ai + bi, 0, 1).astype(bool))
    with pytest.raises(ValueError, match=r"b must have the shape of a \(2, 4, 30\)"):
        masks.mask_and(a, b[:, :2])


def test_build_mask_defaults_keep_every_7th_frame_in_codebooks_0_to_2():
    mask = masks.build_mask((1, 4, 70), rng(0))
    kept = np.flatnonzero(~mask[0, 0])
    assert len(kept) == 10 and (np.diff(kept) == 7).all()
    assert (mask[0, :3] == mask[0, :1]).all()  # same frames in codebooks 0-2
    assert mask[0, 3].all()  # upper codebook mask 3


def test_build_mask_c2f_keeps_conditioning_codebooks():
    mask = masks.build_mask(
        (1, 14, 50), rng(0), periodic_prompt=0, n_conditioning_codebooks=4, upper_codebook_mask=4
    )
    assert not mask[:, :4].any() and mask[:, 4:].all()


def test_build_mask_prefix_in_seconds_rounds_up_to_frames():
    # 0.5 s at 44.1 kHz / hop 768 = 28.7 frames -> 29 kept.
    mask = masks.build_mask((1, 4, 100), rng(0), prefix_s=0.5, periodic_prompt=0)
    assert kept_frames(mask) == list(range(29))
    assert masks.seconds_to_frames(0.5) == 29


def click_track(onset_s: list[float], seconds: float = 3.0, sample_rate: int = 44100):
    """Decaying 440 Hz bursts starting at `onset_s` (smooth decay, so only starts are onsets)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    audio = np.zeros_like(t)
    for start in onset_s:
        after = np.clip(t - start, 0, None)
        audio += np.where(t >= start, np.sin(2 * np.pi * 440 * after) * np.exp(-after * 8), 0)
    return audio


def test_detect_onsets_finds_burst_starts():
    starts = [0.5, 1.3, 2.2]
    onsets = masks.detect_onsets(click_track(starts), 44100, 768)
    expected = [s * 44100 / 768 for s in starts]  # 28.7, 74.6, 126.3
    assert len(onsets) == 3
    assert all(abs(o - e) <= 2 for o, e in zip(onsets, expected))


def _whole_onset_strength(audio: np.ndarray, hop: int) -> np.ndarray:
    """The onset envelope's definition on the whole signal at once (masks.onset_strength's
    docstring): dB power of Hann-2048 frames centred on t * hop, floored 80 dB below the
    maximum, positive first difference averaged over frequency, delayed 1 + 2048 // (2 hop)."""
    audio = audio.astype(np.float64)
    n_frames = 1 + audio.shape[0] // hop
    padded = np.pad(audio, (1024, 1024 + hop))
    frames = padded[np.arange(n_frames)[:, None] * hop + np.arange(2048)]
    power = np.abs(np.fft.rfft(frames * np.hanning(2049)[:-1], axis=-1)) ** 2
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    flux = np.maximum(0.0, np.diff(db, axis=0)).mean(axis=1)
    return np.concatenate([np.zeros(1 + 2048 // (2 * hop)), flux])[:n_frames]


@pytest.mark.parametrize("n", [0, 1, 767, 768 * 20, 768 * 21 + 5, 50_000])
def test_onset_strength_in_chunks_equals_the_whole_signal(monkeypatch, n):
    """Chunked so that memory does not grow with the input (a 15-min file peaked at 3.46 GB):
    the same bits as the whole-signal computation, at any chunk boundary."""
    monkeypatch.setattr(masks, "_ONSET_CHUNK_FRAMES", 7)
    audio = click_track([0.1, 0.4, 0.7], seconds=1.2)[:n]
    np.testing.assert_array_equal(
        masks.onset_strength(audio, 768), _whole_onset_strength(audio, 768)
    )


def test_detect_onsets_of_silence_is_empty():
    assert masks.detect_onsets(np.zeros(44100), 44100, 768).size == 0


def test_onset_mask_keeps_width_frames_each_side_clamped_at_zero():
    audio = click_track([0.5, 1.3])
    onsets = masks.detect_onsets(audio, 44100, 768)
    mask = masks.onset_mask((1, 2, 120), audio, width=2)
    expected = sorted({f for o in onsets for f in range(o - 2, o + 2)})
    assert kept_frames(mask) == expected
    # An onset at frame 0 keeps [0, width), where upstream's slice [-w:w] would keep nothing.
    early = masks.onset_mask((1, 1, 50), click_track([0.0], 1.0), width=3)
    assert kept_frames(early)[:3] == [0, 1, 2]


def test_build_mask_with_onsets_needs_audio():
    with pytest.raises(ValueError, match="audio must be given when onset_mask_width > 0"):
        masks.build_mask(SHAPE, rng(), onset_mask_width=1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: masks.linear_random((2, 4), 0.5, rng()), r"shape must be \(B, C, T\)"),
        (lambda: masks.linear_random((2, 4, 0), 0.5, rng()), r"shape must be \(B, C, T\)"),
        (lambda: masks.linear_random(SHAPE, 1.5, rng()), r"rate must be in \[0, 1\], got 1.5"),
        (lambda: masks.inpaint(SHAPE, -1, 0), "n_prefix must be an int >= 0, got -1"),
        (lambda: masks.periodic(SHAPE, 2.5), "period must be an int >= 0, got 2.5"),
        (lambda: masks.dropout(np.ones(SHAPE), 0.1, rng()), "mask must be a bool array"),
        (lambda: masks.dropout(np.ones(SHAPE, bool), -0.1, rng()), r"p must be in \[0, 1\]"),
        (lambda: masks.seconds_to_frames(-1.0), "seconds must be finite and >= 0"),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_stream_random_draws_are_sample_tokens_on_equal_logits():
    """StreamRandom's integers are SampleTokens draws (so a graph can make them): rows from
    MASK_STREAM_ITEM << 32, offset = the site's number, the same in blocks or at once."""
    from vampnet_onnx import _kernels, reference

    draws = masks.StreamRandom(11, "dropout")
    got = draws.integers(3, 40, 500)
    tokens, _ = reference.sample_tokens(
        np.zeros((500, 37), np.float32), 1.0, 0, 1.0, 11, 1, masks.MASK_STREAM_ITEM << 32
    )
    np.testing.assert_array_equal(got, tokens + 3)
    assert ((got >= 3) & (got < 40)).all() and len(np.unique(got)) == 37
    roll = masks.StreamRandom(11).integers(0, 7)
    assert roll == int(
        _kernels.sample_tokens(
            np.zeros((1, 7), np.float32), 1.0, 0, 1.0, 11, 0, masks.MASK_STREAM_ITEM << 32
        )[0][0]
    )
    # Blocks of rows (long draws) give the one-call numbers.
    wide = masks.StreamRandom(2, "dropout")
    original = masks._DRAW_CELLS
    try:
        masks._DRAW_CELLS = 64
        blocked = wide.integers(0, 30, 50)
    finally:
        masks._DRAW_CELLS = original
    np.testing.assert_array_equal(blocked, wide.integers(0, 30, 50))


def test_stream_random_masks_are_reproducible_and_site_independent():
    a = masks.build_mask((1, 14, 300), masks.StreamRandom(5), periodic_prompt=7, dropout=0.3)
    b = masks.build_mask((1, 14, 300), masks.StreamRandom(5), periodic_prompt=7, dropout=0.3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(
        a, masks.build_mask((1, 14, 300), masks.StreamRandom(6), periodic_prompt=7, dropout=0.3)
    )
    # The dropout draws do not depend on whether the periodic roll happened.
    no_roll = masks.build_mask(
        (1, 14, 300),
        masks.StreamRandom(5),
        periodic_prompt=0,
        dropout=0.3,
        upper_codebook_mask=14,
    )
    assert no_roll.all()
    kept = ~masks.build_mask(
        (1, 14, 300),
        masks.StreamRandom(5),
        periodic_prompt=300,
        periodic_width=601,
        dropout=0.3,
        upper_codebook_mask=14,
    )
    dropped = np.unique(masks.StreamRandom(5, "dropout").integers(0, 300, 90))
    assert set(np.flatnonzero(kept[0, 0])) == set(range(300)) - set(dropped.tolist())
    with pytest.raises(ValueError, match="StreamRandom: linear_random needs uniform floats"):
        masks.build_mask((1, 4, 10), masks.StreamRandom(0), rand_mask_intensity=0.5)


def test_build_mask_takes_upstreams_argument_names_too():
    ours = masks.build_mask(SHAPE, rng(5), periodic_width=3, dropout=0.3)
    upstream = masks.build_mask(SHAPE, rng(5), periodic_prompt_width=3, _dropout=0.3)
    earlier = masks.build_mask(SHAPE, rng(5), periodic_width=3, dropout_p=0.3)
    np.testing.assert_array_equal(ours, upstream)
    np.testing.assert_array_equal(ours, earlier)
    with pytest.raises(TypeError, match="build_mask: unexpected keyword argument 'dropuot'"):
        masks.build_mask(SHAPE, rng(5), dropuot=0.3)
