"""numpy twins of the ops: the same generator and the same arithmetic, readable first.

`sample_tokens` and `mask_git_step` give the same tokens, log-probabilities and masks, bit for
bit, as the C++ kernels (csrc/kernels/) for the same inputs and seed. To make that possible both
sides build exp/log/cos from IEEE +, -, *, / only (`det_exp`, `det_log`, `det_cos`), sum in
index order (np.cumsum, never the pairwise np.sum) and draw from Philox4x32-10.
"""

from __future__ import annotations

import math

import numpy as np

# --- Philox4x32-10 ------------------------------------------------------------------------

_MASK32 = np.uint64(0xFFFFFFFF)
_MUL0, _MUL1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_WEYL0, _WEYL1 = 0x9E3779B9, 0xBB67AE85


def philox4x32_10(counter: np.ndarray, key: tuple) -> np.ndarray:
    """Philox4x32-10 blocks: counter uint32 [..., 4], key (k0, k1), each an int or a uint
    array broadcasting with the counter's [...] -> uint32 [..., 4]."""
    words = np.asarray(counter, dtype=np.uint64)
    c0, c1, c2, c3 = (words[..., i] for i in range(4))
    k0, k1 = (np.asarray(k, dtype=np.uint64) & _MASK32 for k in key)
    for round_index in range(10):
        if round_index:
            k0, k1 = (k0 + np.uint64(_WEYL0)) & _MASK32, (k1 + np.uint64(_WEYL1)) & _MASK32
        p0, p1 = _MUL0 * c0, _MUL1 * c2  # 32 x 32 -> 64 bits, no overflow in uint64
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ k0,
            p1 & _MASK32,
            (p0 >> np.uint64(32)) ^ c3 ^ k1,
            p0 & _MASK32,
        )
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def random_block(seed, rows: np.ndarray, offset: int) -> np.ndarray:
    """The block of each row: key = seed, counter = (row, offset) as 64-bit words. -> [N, 4].
    seed: an int for every row, or int64 [N], one per row."""
    rows = np.asarray(rows, dtype=np.uint64).reshape(-1)
    offset_word = int(offset) % 2**64
    counter = np.stack(
        [
            rows & _MASK32,
            rows >> np.uint64(32),
            np.full_like(rows, offset_word & 0xFFFFFFFF),
            np.full_like(rows, offset_word >> 32),
        ],
        axis=-1,
    )
    if np.ndim(seed) == 0:
        seed_word = np.uint64(int(seed) % 2**64)
    else:  # the 64-bit two's complement of each seed
        seed_word = np.asarray(seed, dtype=np.int64).reshape(-1).view(np.uint64)
    return philox4x32_10(counter, (seed_word & _MASK32, seed_word >> np.uint64(32)))


def uniform53(hi_word: np.ndarray, lo_word: np.ndarray) -> np.ndarray:
    """Doubles in [0, 1) with 53 random bits from two uint32 words."""
    bits = (hi_word.astype(np.uint64) >> np.uint64(5)) << np.uint64(26)
    bits |= lo_word.astype(np.uint64) >> np.uint64(6)
    return bits.astype(np.float64) * 2.0**-53


# --- deterministic elementary functions (same operations as csrc/kernels/det_math.h) --------

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_EXP_UNDERFLOW = -700.0
_SQRT_HALF = 0.70710678118654752440


def det_exp(x: np.ndarray) -> np.ndarray:
    """exp for softmax weights (float64): 0 below -700, inf above 709."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.rint(x * _INV_LN2)
        r = (x - k * _LN2_HI) - k * _LN2_LO
        fact = float(math.factorial(14))
        p = np.full_like(r, 1.0 / fact)
        for n in range(13, 0, -1):
            fact /= n + 1
            p = p * r + 1.0 / fact
        p = p * r + 1.0
        k_int = np.clip(np.nan_to_num(k), -2000, 2000).astype(np.int64)
        out = np.ldexp(p, k_int)
    out = np.where(x < _EXP_UNDERFLOW, 0.0, out)
    out = np.where(x > 709.0, np.inf, out)
    return np.where(np.isnan(x), x, out)


def det_log(x: np.ndarray) -> np.ndarray:
    """Natural log (float64): 0 -> -inf, inf -> inf, negative or NaN -> NaN."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m, e = np.frexp(x)
        small = m < _SQRT_HALF
        m = np.where(small, m * 2.0, m)
        e = e - small
        f = m - 1.0
        s = f / (2.0 + f)
        z = s * s
        t = np.full_like(z, 1.0 / 23.0)
        for n in range(10, -1, -1):
            t = t * z + 1.0 / (2 * n + 1)
        log_m = 2.0 * s * t
        k = e.astype(np.float64)
        out = k * _LN2_HI + (log_m + k * _LN2_LO)
    out = np.where(x == 0.0, -np.inf, out)
    out = np.where(np.isinf(x) & (x > 0), np.inf, out)
    return np.where(np.isnan(x) | (x < 0), np.nan, out)


def det_cos(x: np.ndarray) -> np.ndarray:
    """cos for |x| <= pi/2 (float64)."""
    x = np.asarray(x, dtype=np.float64)
    z = x * x
    fact = float(math.factorial(22))
    p = np.full_like(z, 1.0 / fact)
    for n in range(10, -1, -1):
        fact /= (2 * n + 2) * (2 * n + 1)
        p = p * (-z) + 1.0 / fact
    return p


# --- validation (the house error format) ------------------------------------------------------


def _fail(where: str, argument: str, constraint: str, got: object) -> None:
    raise ValueError(f"{where}: {argument} must {constraint}, got {got}")


def _check_sampling(where: str, temperature: float, top_k: int, top_p: float) -> None:
    if not temperature >= 0:
        _fail(where, "temperature", "be >= 0", _fmt(temperature))
    if top_k < 0:
        _fail(where, "top_k", "be >= 0", top_k)
    if not 0 < top_p <= 1:
        _fail(where, "top_p", "be in (0, 1]", _fmt(top_p))


def _fmt(value: float) -> str:
    """Floats as C++'s ostream prints them (6 significant digits), for identical messages."""
    return f"{float(value):g}"


def _logits_rows(where: str, logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.dtype not in (np.float32, np.float16):
        _fail(where, "logits", "be a float32 or float16 array", logits.dtype)
    if logits.ndim < 1:
        _fail(where, "logits", "have rank >= 1 [..., V]", "a scalar")
    n_rows = math.prod(logits.shape[:-1])
    if n_rows > 0 and logits.shape[-1] == 0:
        _fail(where, "logits", "have a non-empty last axis", "V = 0")
    return logits.astype(np.float32).reshape(n_rows, logits.shape[-1])


def _check_rows(where: str, rows: np.ndarray, row_ids: np.ndarray) -> None:
    """The kernel's checks, reported for the lowest bad row as the kernel does (within a row,
    a NaN or +inf before an all -inf row)."""
    bad = np.isnan(rows) | (rows == np.inf)
    dead = ~(rows > -np.inf).any(axis=1)
    problem = bad.any(axis=1) | dead
    if not problem.any():
        return
    r = int(np.argmax(problem))
    if bad[r].any():
        i = int(np.argmax(bad[r]))
        _fail(
            where,
            "logits",
            "be finite or -inf",
            f"{_fmt(rows[r, i])} at row {row_ids[r]}, index {i}",
        )
    _fail(where, "logits", "have a finite value in every row", f"row {row_ids[r]} all -inf")


# --- sampling -------------------------------------------------------------------------------


def _sample_rows(
    rows: np.ndarray, temperature: float, top_k: int, top_p: float, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sample each row of rows float32 [N, V] with uniforms u [N]. -> (tokens, logprob)."""
    n_rows, vocab = rows.shape
    if n_rows == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    x = rows.astype(np.float64)
    x_max = x.max(axis=1, keepdims=True)
    keep = rows > -np.inf

    if 0 < top_k < vocab:
        # Keep every logit >= the k-th largest: ties at the threshold stay, as upstream.
        threshold = -np.partition(-rows, top_k - 1, axis=1)[:, top_k - 1 : top_k]
        keep &= rows >= threshold

    if top_p < 1.0:
        # Nucleus on the unscaled softmax: in order of decreasing logit (ties: lower index
        # first) keep a token while the mass before it is <= top_p.
        weight = np.where(keep, det_exp(x - x_max), 0.0)
        total = np.cumsum(weight, axis=1)[:, -1:]
        order = np.argsort(-rows, axis=1, kind="stable")
        mass_through = np.cumsum(np.take_along_axis(weight, order, axis=1) / total, axis=1)
        removed = np.zeros_like(keep)
        removed[:, 1:] = mass_through[:, :-1] > np.float64(top_p)
        keep_sorted = ~removed
        np.put_along_axis(keep_sorted, order, keep_sorted.copy(), axis=1)
        keep &= keep_sorted

    scale = 1.0 if temperature in (0.0, 1.0) else float(temperature)
    # Removed tokens (-inf, filtered) get no weight; dividing only kept logits keeps
    # -inf / +inf (temperature +inf) out of the arithmetic.
    weight = np.where(keep, det_exp(np.where(keep, x - x_max, 0.0) / scale), 0.0)
    running = np.cumsum(weight, axis=1)
    total = running[:, -1]

    if temperature == 0.0:
        tokens = np.argmax(rows, axis=1)
    else:
        above = running > (u * total)[:, None]
        last_positive = vocab - 1 - np.argmax((weight > 0)[:, ::-1], axis=1)
        tokens = np.where(above.any(axis=1), np.argmax(above, axis=1), last_positive)

    p = weight[np.arange(n_rows), tokens] / total
    logprob = det_log(p.astype(np.float32).astype(np.float64)).astype(np.float32)
    return tokens.astype(np.int64), logprob


def sample_tokens(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    offset: int = 0,
    first_row: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample one token per row of logits [..., V] (float32 or float16).

    Returns (tokens int64 [...], logprob float32 [...]). Row r draws from the Philox stream
    (seed, first_row + r, offset). Contract: docs/ops.md, op SampleTokens.
    """
    where = "sample_tokens"
    temperature, top_p = float(np.float32(temperature)), float(np.float32(top_p))
    _check_sampling(where, temperature, int(top_k), top_p)
    if first_row < 0:
        _fail(where, "first_row", "be >= 0", first_row)
    logits = np.asarray(logits)
    rows = _logits_rows(where, logits)
    out_shape = logits.shape[:-1]
    if rows.shape[0] == 0:
        return np.zeros(out_shape, np.int64), np.zeros(out_shape, np.float32)
    row_ids = np.arange(rows.shape[0], dtype=np.uint64)
    _check_rows(where, rows, row_ids)
    bits = random_block(seed, row_ids + np.uint64(first_row), offset)
    tokens, logprob = _sample_rows(
        rows, temperature, int(top_k), top_p, uniform53(bits[:, 0], bits[:, 1])
    )
    return tokens.reshape(out_shape), logprob.reshape(out_shape)


# --- the generation step ----------------------------------------------------------------------


def _r(step: int, n_steps: int) -> np.float32:
    return np.float32((step + 1) / n_steps)


def schedule_count(step: int, n_steps: int, n0: int) -> int:
    """floor(gamma(r) * n0), VampNet's cosine schedule in its float32 arithmetic, unclamped."""
    angle = (_r(step, n_steps) * np.float32(math.pi)) / np.float32(2.0)
    gamma = np.float32(det_cos(np.float64(angle)))
    gamma = min(max(gamma, np.float32(1e-10)), np.float32(1.0))
    return int(np.floor(gamma * np.float32(n0)))


def n_to_mask(step: int, n_steps: int, n0: int, n_masked: int) -> int:
    """Positions left masked after `step`: the schedule, clamped to [1, n_masked - 1] except on
    the last step."""
    k = schedule_count(step, n_steps, n0)
    if step != n_steps - 1:
        k = max(1, min(n_masked - 1, k))
    return k


def noise_scale(mask_temperature: float, step: int, n_steps: int) -> np.float32:
    """The annealed Gumbel noise scale mask_temperature * (1 - r), float32."""
    return np.float32(mask_temperature) * (np.float32(1.0) - _r(step, n_steps))


def gumbel(u: np.ndarray) -> np.ndarray:
    """Standard Gumbel noise -log(-log(U)), U = max(u, 1e-20), as float32."""
    return (-det_log(-det_log(np.maximum(u, 1e-20)))).astype(np.float32)


def _checked_n0(where: str, n_masked_start, batch: int, positions: int) -> np.ndarray:
    """n_masked_start as MaskGitStep checks it: int64 [B], each in [0, T * P]."""
    n0 = np.asarray(n_masked_start)
    if n0.dtype != np.int64:
        _fail(where, "n_masked_start", "be a int64 array", n0.dtype)
    if n0.shape != (batch,):
        _fail(where, "n_masked_start", f"have shape [B] = [{batch}]", list(n0.shape))
    bad = (n0 < 0) | (n0 > positions)
    if bad.any():
        b = int(np.argmax(bad))
        _fail(where, "n_masked_start", f"be in [0, T * P = {positions}]", f"{n0[b]} for item {b}")
    return n0


def _item_keys(where: str, name: str, value, batch: int) -> np.ndarray | None:
    """A key argument of MaskGitStep (seed, batch_offset): None for one value (an int, or an
    array with one element), else the int64 [B] of one per item."""
    if isinstance(value, int | np.integer):
        return None
    keys = np.asarray(value)
    if keys.dtype != np.int64:
        _fail(where, name, "be a int64 array", keys.dtype)
    if keys.size == 1:
        return None
    if keys.shape != (batch,):
        _fail(
            where, name, f"have one element or shape [B] = [{batch}]", f"shape {list(keys.shape)}"
        )
    return keys


def mask_git_step(
    logits: np.ndarray,
    codes: np.ndarray,
    mask: np.ndarray,
    step: int,
    n_steps: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    mask_temperature: float = 10.5,
    seed: int | np.ndarray = 0,
    n_masked_start: np.ndarray | None = None,
    batch_coupled: bool = False,
    batch_offset: int | np.ndarray = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One VampNet generation step (docs/model.md §3.2).

    logits [B, T, P, V] float32/float16; codes int64 [B, C, T]; mask bool [B, C, T] (true = to
    generate; never true in the C - P conditioning codebooks). seed, batch_offset: an int (or
    a one-element array) for the batch, item b drawing stream item batch_offset + b; or int64
    [B], item b drawing with key seed[b] from stream item batch_offset[b]. Returns
    (codes_out, mask_out, model_input), each [B, C, T]. Contract: docs/ops.md, op MaskGitStep.
    """
    where = "mask_git_step"
    temperature, top_p = float(np.float32(temperature)), float(np.float32(top_p))
    mask_temperature = float(np.float32(mask_temperature))
    _check_sampling(where, temperature, int(top_k), top_p)
    if n_steps < 1:
        _fail(where, "n_steps", "be >= 1", n_steps)
    if not 0 <= step < n_steps:
        _fail(where, "step", f"be in [0, n_steps = {n_steps})", step)
    if not (mask_temperature >= 0 and math.isfinite(mask_temperature)):
        _fail(where, "mask_temperature", "be finite and >= 0", _fmt(mask_temperature))
    logits, codes, mask = np.asarray(logits), np.asarray(codes), np.asarray(mask)
    if codes.dtype != np.int64:
        _fail(where, "codes", "be a int64 array", codes.dtype)
    if mask.dtype != np.bool_:
        _fail(where, "mask", "be a bool array", mask.dtype)
    if logits.ndim != 4:
        _fail(where, "logits", "have rank 4 [B, T, P, V]", f"shape {list(logits.shape)}")
    if codes.ndim != 3:
        _fail(where, "codes", "have rank 3 [B, C, T]", f"shape {list(codes.shape)}")
    if mask.shape != codes.shape:
        _fail(where, "mask", f"have the shape of codes {list(codes.shape)}", list(mask.shape))
    batch, n_codebooks, frames = codes.shape
    _, _, predicted, vocab = logits.shape
    if logits.shape[:2] != (batch, frames):
        _fail(
            where,
            "logits",
            f"have shape [B, T, P, V] with B, T of codes {list(codes.shape)}",
            list(logits.shape),
        )
    if not 1 <= predicted <= n_codebooks:
        _fail(
            where,
            "logits",
            f"have P in [1, C = {n_codebooks}] predicted codebooks",
            f"P = {predicted}",
        )
    if vocab < 1:
        _fail(where, "logits", "have V >= 1", "V = 0")
    seeds = _item_keys(where, "seed", seed, batch)
    streams = _item_keys(where, "batch_offset", batch_offset, batch)
    if streams is None:
        batch_offset = int(np.asarray(batch_offset).reshape(-1)[0])
        if not 0 <= batch_offset <= 2**32 - batch:
            _fail(where, "batch_offset", f"be in [0, 2^32 - B = {2**32 - batch}]", batch_offset)
    else:
        bad = (streams < 0) | (streams > 2**32 - 1)
        if bad.any():
            b = int(np.argmax(bad))
            _fail(where, "batch_offset", "be in [0, 2^32 - 1]", f"{streams[b]} for item {b}")
    ncc = n_codebooks - predicted
    # One scan in the kernel's (b, t, c) order: the first bad cell, whichever check it fails.
    conditioning_masked = np.zeros_like(mask)
    conditioning_masked[:, :ncc] = mask[:, :ncc]
    bad_code = ~mask & ((codes < 0) | (codes >= vocab))
    bad_cell = (conditioning_masked | bad_code).transpose(0, 2, 1)
    if bad_cell.any():
        b, t, c = np.argwhere(bad_cell)[0]
        if conditioning_masked[b, c, t]:
            _fail(
                where,
                "mask",
                f"be false in the {ncc} conditioning codebooks",
                f"true at [{b}, {c}, {t}]",
            )
        _fail(
            where,
            "codes",
            f"be in [0, {vocab}) where mask is false",
            f"{codes[b, c, t]} at [{b}, {c}, {t}]",
        )

    positions = frames * predicted
    if n_masked_start is not None:
        n_masked_start = _checked_n0(where, n_masked_start, batch, positions)
    if codes.size == 0:
        # No cells: nothing to sample or write, and no per-item work (B may be 2^32 - 1).
        return codes.copy(), np.zeros_like(mask), codes.copy()
    # Flat position p = t * P + c over the predicted codebooks, as upstream's codebook_flatten.
    flat_mask = mask[:, ncc:, :].transpose(0, 2, 1).reshape(batch, positions)
    counts = flat_mask.sum(axis=1).astype(np.int64)
    n0 = counts.copy() if n_masked_start is None else n_masked_start.copy()
    if batch_coupled:
        n0[:] = n0.sum()

    item, position = np.nonzero(flat_mask)
    rows = logits.astype(np.float32).reshape(batch, positions, vocab)[item, position]
    stream_item = (item + batch_offset if streams is None else streams[item]).astype(np.uint64)
    row_ids = (stream_item << np.uint64(32)) | position.astype(np.uint64)
    _check_rows(where, rows, item * positions + position)
    row_seeds = int(np.asarray(seed).reshape(-1)[0]) if seeds is None else seeds[item]
    bits = random_block(row_seeds, row_ids, step)
    tokens, logprob = _sample_rows(
        rows, temperature, int(top_k), top_p, uniform53(bits[:, 0], bits[:, 1])
    )
    noise = gumbel(uniform53(bits[:, 2], bits[:, 3]))
    confidence = logprob + noise_scale(mask_temperature, step, n_steps) * noise

    flat_codes = codes[:, ncc:, :].transpose(0, 2, 1).reshape(batch, positions).copy()
    flat_codes[item, position] = tokens
    flat_new_mask = np.zeros_like(flat_mask)
    for b in range(batch):
        mine = item == b
        conf_b = confidence[mine]
        k = n_to_mask(step, n_steps, int(n0[b]), int(counts[b]))
        # Masked again: confidence strictly below the k-th smallest (0-based); unmasked
        # positions count as +inf, so k >= count keeps every masked position masked.
        cut = np.partition(conf_b, k)[k] if k < conf_b.size else np.float32(np.inf)
        flat_new_mask[b, position[mine]] = conf_b < cut

    def unflatten(flat: np.ndarray) -> np.ndarray:
        return flat.reshape(batch, frames, predicted).transpose(0, 2, 1)

    codes_out = codes.copy()
    codes_out[:, ncc:, :] = unflatten(flat_codes)
    mask_out = np.zeros_like(mask)
    mask_out[:, ncc:, :] = unflatten(flat_new_mask)
    model_input = np.where(mask_out, vocab, codes_out).astype(np.int64)
    return codes_out, mask_out, model_input


def range_text(value: float) -> str:
    """As the ops print a range check's numbers: integral values as integers."""
    value = float(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return _fmt(value)


def check_range(value: float, name: str, low: float, high: float, where: str = "Vamp") -> bool:
    """The CheckRange op (docs/ops.md): True, or ValueError
    ``"<where>: <name> must be in [low, high], got <value>"`` (NaN fails)."""
    value = float(value)
    if not low <= value <= high:
        _fail(where, name, f"be in [{range_text(low)}, {range_text(high)}]", range_text(value))
    return True


def snake(x: np.ndarray, alpha: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """The Snake op (docs/ops.md): ``x + inverse * sin(alpha * x)^2`` in float32, x ``[B, C, T]``
    and alpha, inverse ``[1, C, 1]``, with numpy's sine (the op's own is a float32 polynomial a
    few ulp from it: tests/test_snake.py bounds the difference)."""
    x, alpha, inverse = (np.asarray(a) for a in (x, alpha, inverse))
    for name, value in (("x", x), ("alpha", alpha), ("inverse", inverse)):
        if value.dtype != np.float32:
            _fail("Snake", name, "be a float32 tensor", value.dtype)
    if x.ndim != 3:
        _fail("Snake", "x", "have rank 3 [B, C, T]", f"shape {_shape_text(x.shape)}")
    channels = x.shape[1]
    for name, value in (("alpha", alpha), ("inverse", inverse)):
        if value.shape != (1, channels, 1):
            _fail(
                "Snake",
                name,
                f"have shape [1, {channels}, 1] (C of x)",
                f"shape {_shape_text(value.shape)}",
            )
    with np.errstate(invalid="ignore"):  # sin(inf) is NaN, as the op's
        s = np.sin(alpha * x)
    return x + inverse * (s * s)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"
