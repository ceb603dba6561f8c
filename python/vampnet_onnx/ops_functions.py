"""Standard-op bodies of the vampnet_onnx ops: one ONNX function per op (docs/ops.md,
"Standard-op bodies").

A model that carries these functions beside its `vampnet_onnx` nodes (`attach_functions`)
runs in a runtime without our library: the runtime expands each node into its body. With the
library registered, onnxruntime keeps the node on our kernel. The bodies follow the kernels'
arithmetic operation by operation (Philox4x32-10 from exact integer operations, the softmax
weights, logs and cosine from IEEE double + - * /, sums in index order through CumSum), so on
onnxruntime they give the kernels' bits; tests/test_ops_functions.py checks that.

Built with plain `onnx.helper` (no torch, no onnxscript): the runtime imports this module.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import ops

#: The standard opset the bodies are written in: Split's num_outputs and Reduce*'s axes input
#: need 18, the lowest opset the exporter writes (export.common.MIN_OPSET).
FUNCTION_OPSET = 18

_INT32, _INT64, _UINT64, _FLOAT, _DOUBLE = (
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT64,
    TensorProto.FLOAT,
    TensorProto.DOUBLE,
)


class _Body:
    """Collects a function body's nodes; every value gets a fresh name, the prefix and a count
    (short: names make most of a body's bytes). A subgraph's prefix differs from its outer
    graph's, so that its names cannot clash with them."""

    def __init__(self, prefix: str = "v", portable: bool = False) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0
        self._prefix = prefix
        #: The portable variant (`VARIANTS`): float32 for the arithmetic the exact one does in
        #: float64, the runtime's Exp, Log and Cos, no Loop.
        self.portable = portable
        self.real = _FLOAT if portable else _DOUBLE

    def _name(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count}"

    def op(
        self,
        op_type: str,
        *inputs: str,
        n_outputs: int = 1,
        name: str = "",
        output: str | None = None,
        **attributes,
    ):
        """A node of the standard domain; returns its output name (a list if n_outputs > 1).
        output: the name of its (single) output, e.g. the function's output; default fresh."""
        outputs = [output] if output else [self._name() for _ in range(n_outputs)]
        if op_type == "Reshape":  # a 0 in a computed shape is an empty dimension, not "copy"
            attributes.setdefault("allowzero", 1)
        if op_type in ("Gather", "Slice") and not name:
            # onnxruntime 1.21 fuses Gathers and Slices of one tensor into a Split named after
            # the first of them: two such fusions of unnamed nodes in one graph got the same
            # name, and the session refused the model ("two nodes with same node name").
            name = f"{outputs[0]}_{op_type}"
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attributes))
        return outputs[0] if n_outputs == 1 else outputs

    def const(self, value, dtype) -> str:
        """A Constant node holding `value` as an array of `dtype` (numpy)."""
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        return self.op("Constant", value=tensor)

    def real_const(self, value) -> str:
        """A Constant of the variant's real type: float64 (exact) or float32 (portable)."""
        return self.const(value, np.float32 if self.portable else np.float64)

    def empty(self, shape: tuple[int, ...], dtype) -> str:
        """An empty tensor of `shape` (a 0 in it) and `dtype`, from ConstantOfShape: OpenVINO's
        ONNX frontend reads an empty Constant as a scalar."""
        value = numpy_helper.from_array(np.zeros(1, dtype=dtype))
        return self.op("ConstantOfShape", self.const(shape, np.int64), value=value)

    def attribute(self, name: str, kind: str) -> str:
        """The calling node's attribute `name` as a Constant (kind: "float" or "int")."""
        node = helper.make_node("Constant", [], [self._name()])
        node.attribute.append(
            helper.make_attribute_ref(f"value_{kind}", _ATTRIBUTE_KINDS[kind], ref_attr_name=name)
        )
        self.nodes.append(node)
        return node.output[0]

    def scalar(self, value: str, where: str, argument: str) -> str:
        """`value` as a rank-0 tensor. A tensor of several elements fails here, in a node whose
        name is the house-format message."""
        return self.op(
            "Reshape",
            value,
            self.const(np.zeros(0), np.int64),
            name=f"{where}: {argument} must be a scalar (one element)",
        )

    def passed(self, ok: str, message: str) -> str:
        """A bool [1], true, once the bool scalar `ok` holds; else the run fails in a node named
        `message`. Standard ops cannot raise, but a Reshape to an impossible shape fails in every
        runtime: `ok` (one element) is reshaped to [1] when true and to [2] when false. The
        result must flow into the outputs through an elementwise node (`check`): a Reshape or
        Squeeze right after it would be fused with it by onnxruntime's optimizer, and the check
        lost."""
        target = self.op("Where", ok, self.const([1], np.int64), self.const([2], np.int64))
        return self.op("Reshape", ok, target, name=message)

    def check(self, ok: str, message: str, value: str, scalar: bool = False) -> str:
        """`value` (not bool: see `check_flags`), read through a Where on `passed(ok,
        message)`: the check runs before anything that reads the result. scalar: `value` has
        rank 0 (kept so; else the result has at least rank 1)."""
        zero = self.op("CastLike", self.const(0, np.int32), value)
        checked = self.op("Where", self.passed(ok, message), value, zero)
        return self.op("Reshape", checked, self.const(np.zeros(0), np.int64)) if scalar else checked

    def branch(self, condition: str, then_branch, else_branch, outputs: list[tuple[int, int]]):
        """An If on the bool scalar `condition`; each branch is a function of a new _Body that
        adds the branch's nodes (reading this graph's values freely) and returns its output
        names. outputs: (element type, rank) of each output. -> the If's output names."""
        graphs = []
        for label, build in (("then", then_branch), ("else", else_branch)):
            self._count += 1
            sub = _Body(prefix=f"{self._prefix}{label[0]}{self._count}_", portable=self.portable)
            names = [sub.op("Identity", name) for name in build(sub)]
            infos = [
                helper.make_tensor_value_info(name, element, [f"{name}_{i}" for i in range(rank)])
                for name, (element, rank) in zip(names, outputs, strict=True)
            ]
            graphs.append(helper.make_graph(sub.nodes, f"{label}_branch", [], infos))
        return self.op(
            "If",
            condition,
            n_outputs=len(outputs),
            then_branch=graphs[0],
            else_branch=graphs[1],
        )

    def check_flags(self, ok: str, message: str, flags: str) -> str:
        """`check` for bool flags (onnxruntime's Where takes no bool values); the result has
        at least rank 1."""
        return self.op("And", flags, self.passed(ok, message))


_ATTRIBUTE_KINDS = {
    "float": onnx.AttributeProto.FLOAT,
    "int": onnx.AttributeProto.INT,
}


# --- Philox4x32-10 ---------------------------------------------------------------------------
#
# Exact variant (onnxruntime): a 32-bit word is a uint64 value below 2^32, 64-bit keys and
# counters are (low, high) word pairs on the last axis; the 32 x 32 -> 64-bit products are
# uint64 Mul (exact: below 2^64), their halves BitShift and BitwiseAnd, xor BitwiseXor. One
# round is seven nodes over [rows, 2] (`_philox_words`).
#
# Portable variant: a 32-bit word is carried as its eight 4-bit limbs (int32 in [0, 16), least
# significant first, on the last axis). Xor needs no BitwiseXor: a limb's xor is a lookup in
# the 16 x 16 table, Gather(table, 16 a + b). The 32 x 32 -> 64-bit multiply is a MatMul of
# the limbs by the multiplier's Toeplitz matrix: a limb product is at most 15^2 = 225 and a
# column of the product sums at most 8 of them, 1800 < 2^11, so every sum is exact in int32,
# and even where a runtime computes an integer MatMul in float32 or float16 (16-bit limbs
# would reach 2^33 and overflow int32). Carries are then propagated limb by limb. No int64,
# uint32 or BitShift either.

_LIMB_BITS = 4
_LIMB = 1 << _LIMB_BITS
_WORD_LIMBS = 32 // _LIMB_BITS
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)
_ROUNDS = 10
_WORD_MASK = 2**32 - 1
_XOR_TABLE = np.array([a ^ b for a in range(_LIMB) for b in range(_LIMB)], np.int32)


def _limbs(value: int, count: int = _WORD_LIMBS) -> list[int]:
    return [(value >> (_LIMB_BITS * i)) & (_LIMB - 1) for i in range(count)]


def _carry(body: _Body, columns: str, n_columns: int, n_limbs: int) -> str:
    """int32 [..., n_columns], column i worth 16^i (each at most 1800 here, so every sum with
    a carry stays far below 2^31) -> the first n_limbs limbs of their sum, int32
    [..., n_limbs] (limbs above are dropped: arithmetic mod 16^n_limbs)."""
    limb = body.const(_LIMB, np.int32)
    carry, limbs = None, []
    for column in body.op("Split", columns, axis=-1, num_outputs=n_columns, n_outputs=n_columns):
        total = column if carry is None else body.op("Add", column, carry)
        limbs.append(body.op("Mod", total, limb))
        carry = body.op("Div", total, limb)
        if len(limbs) == n_limbs:
            break
    else:
        limbs.append(carry)
    return body.op("Concat", *limbs[:n_limbs], axis=-1)


def _carry_groups(body: _Body, groups: str, n_groups: int) -> str:
    """int32 [..., n_groups], group j worth 2^(16 j) (each below 2^23, so every sum with a
    carry stays below 2^24: exact even where a runtime divides integers in float32) -> the
    limbs of their sum mod 2^(16 n_groups), int32 [..., 4 n_groups]: four carries of 16 bits
    where `_carry` takes sixteen of 4 (the products' carries were most of a round's nodes)."""
    base = body.const(1 << 16, np.int32)
    carry, digits = None, []
    for group in body.op("Split", groups, axis=-1, num_outputs=n_groups, n_outputs=n_groups):
        total = group if carry is None else body.op("Add", group, carry)
        digits.append(body.op("Mod", total, base))
        if len(digits) < n_groups:
            carry = body.op("Div", total, base)
    digits = body.op("Unsqueeze", body.op("Concat", *digits, axis=-1), body.const([-1], np.int64))
    places = body.const([_LIMB**i for i in range(16 // _LIMB_BITS)], np.int32)
    limbs = body.op("Mod", body.op("Div", digits, places), body.const(_LIMB, np.int32))
    leading = body.op("Shape", groups, start=0, end=-1)
    shape = body.op("Concat", leading, body.const([4 * n_groups], np.int64), axis=0)
    return body.op("Reshape", limbs, shape)


def _xor(body: _Body, a: str, b: str) -> str:
    """Limbs of a ^ b, for limbs a and b of the same or broadcasting shapes."""
    index = body.op("Add", body.op("Mul", a, body.const(_LIMB, np.int32)), b)
    return body.op("Gather", body.const(_XOR_TABLE, np.int32), index)


def _slice(body: _Body, value: str, start: int, end: int, axis: int) -> str:
    return body.op(
        "Slice",
        value,
        body.const([start], np.int64),
        body.const([end], np.int64),
        body.const([axis], np.int64),
    )


def _round_keys(body: _Body, key: str) -> str:
    """The ten round keys, int32 limbs [K, 10, 2, 8], from the key's limbs [K, 2, 8]: round r
    uses key + r * (Weyl constants) mod 2^32, added limb by limb."""
    offsets = np.array(
        [[_limbs((r * weyl) % 2**32) for weyl in _WEYL] for r in range(_ROUNDS)], np.int32
    )
    columns = body.op(
        "Add", body.op("Unsqueeze", key, body.const([1], np.int64)), body.const(offsets, np.int32)
    )  # [K, 10, 2, 8]
    return _carry(body, columns, _WORD_LIMBS, _WORD_LIMBS)


def _philox_round(body: _Body, multiplied: str, xored: str, key_r: str) -> tuple[str, str]:
    """One Philox round (portable variant) on limb pairs (c0, c2) and (c1, c3), int32
    [N, 2, 8], with the round's key limbs key_r ([N or 1, 2, 8]) -> the new pairs."""
    # Column k of (limbs a) x (limbs of M) is sum_i a_i m_(k-i): a MatMul by M's Toeplitz
    # matrix; its columns summed four at a time into groups of 16 bits (column 4j + i worth
    # 16^i in group j) by the same MatMul: each group is at most 1800 (1 + 16 + 256 + 4096) <
    # 2^23, and every partial sum of the MatMul too.
    n_columns = 2 * _WORD_LIMBS - 1
    toeplitz = np.zeros((2, _WORD_LIMBS, n_columns), np.int64)
    for w, multiplier in enumerate(_MULTIPLIERS):
        for i in range(_WORD_LIMBS):
            toeplitz[w, i, i : i + _WORD_LIMBS] = _limbs(multiplier)
    n_groups = 2 * _WORD_LIMBS // 4
    grouping = np.zeros((n_columns, n_groups), np.int64)
    for k in range(n_columns):
        grouping[k, k // 4] = _LIMB ** (k % 4)
    grouped = (toeplitz @ grouping).astype(np.int32)
    axis2 = body.const([2], np.int64)
    limbs = body.op("Unsqueeze", multiplied, axis2)  # [N, 2, 1, 8]
    groups = body.op("Squeeze", body.op("MatMul", limbs, body.const(grouped, np.int32)), axis2)
    product = _carry_groups(body, groups, n_groups)  # M0 c0, M1 c2
    # c0' = hi(M1 c2) ^ c1 ^ k0, c2' = hi(M0 c0) ^ c3 ^ k1; c1' = lo(M1 c2), c3' = lo(M0 c0).
    product = body.op("Gather", product, body.const([1, 0], np.int64), axis=1)
    high = _slice(body, product, _WORD_LIMBS, 2 * _WORD_LIMBS, axis=-1)
    low = _slice(body, product, 0, _WORD_LIMBS, axis=-1)
    return _xor(body, _xor(body, high, xored), key_r), low


def _philox(body: _Body, counter: str, key: str, key_rows: str | None = None) -> tuple[str, str]:
    """Philox4x32-10 (docs/ops.md). counter: the words c0..c3, uint64 [N, 4] (exact variant) or
    int32 limbs [N, 4, 8] (portable); key: the key's words, [K, 2] or [K, 2, 8]; key_rows:
    int64 [N], row n's key (absent: K = N or 1, broadcast). The round keys are computed once
    per key, not per row. Returns the block's words as pairs (w0, w2) and (w1, w3), each
    [N, 2] or [N, 2, 8]."""
    # The pair multiplied in each round, (c0, c2), and the pair xored in, (c1, c3).
    multiplied = body.op("Gather", counter, body.const([0, 2], np.int64), axis=1)
    xored = body.op("Gather", counter, body.const([1, 3], np.int64), axis=1)
    if not body.portable:
        return _philox_words(body, multiplied, xored, key, key_rows)
    round_keys = _round_keys(body, key)
    for r in range(_ROUNDS):
        key_r = body.op("Gather", round_keys, body.const(r, np.int64), axis=1)
        if key_rows is not None:
            key_r = body.op("Gather", key_r, key_rows, axis=0)
        multiplied, xored = _philox_round(body, multiplied, xored, key_r)
    return multiplied, xored


def _philox_words(
    body: _Body, multiplied: str, xored: str, key: str, key_rows: str | None
) -> tuple[str, str]:
    """The exact variant's ten rounds on uint64 words: (c0, c2) and (c1, c3) [N, 2], the key
    [K, 2]. Round r's key is key + r * (Weyl constants) mod 2^32, for every key at once."""
    offsets = np.array([[(r * weyl) % 2**32 for weyl in _WEYL] for r in range(_ROUNDS)], np.uint64)
    mask = body.const(_WORD_MASK, np.uint64)
    round_keys = body.op(
        "BitwiseAnd",
        body.op(
            "Add",
            body.op("Unsqueeze", key, body.const([1], np.int64)),
            body.const(offsets, np.uint64),
        ),
        mask,
    )  # [K, 10, 2]
    if key_rows is not None:
        round_keys = body.op("Gather", round_keys, key_rows, axis=0)  # [N, 10, 2]
    multipliers = body.const(np.array(_MULTIPLIERS, np.uint64), np.uint64)
    swap = body.const([1, 0], np.int64)
    thirty_two = body.const(32, np.uint64)
    for r in range(_ROUNDS):
        # (M1 c2, M0 c0): c0' = hi(M1 c2) ^ c1 ^ k0, c2' = hi(M0 c0) ^ c3 ^ k1;
        # c1' = lo(M1 c2), c3' = lo(M0 c0).
        product = body.op("Gather", body.op("Mul", multiplied, multipliers), swap, axis=1)
        key_r = body.op("Gather", round_keys, body.const(r, np.int64), axis=1)
        high = body.op("BitShift", product, thirty_two, direction="RIGHT")
        multiplied = body.op("BitwiseXor", body.op("BitwiseXor", high, xored), key_r)
        xored = body.op("BitwiseAnd", product, mask)
    return multiplied, xored


def _int64_words(body: _Body, value: str) -> str:
    """int64 [...] -> the words of its 64-bit two's complement, (low word, high word), in the
    variant's form: uint64 [..., 2] (exact), int32 limbs [..., 2, 8] (portable: the one place
    it uses int64 arithmetic, splitting the int64 inputs)."""
    if not body.portable:
        value = body.op("Unsqueeze", body.op("Cast", value, to=_UINT64), body.const([-1], np.int64))
        shifted = body.op("BitShift", value, body.const([0, 32], np.uint64), direction="RIGHT")
        return body.op("BitwiseAnd", shifted, body.const(_WORD_MASK, np.uint64))
    return _stacked_words(body, _split_portable(body, value, 2 * _WORD_LIMBS))


def _pair_words(body: _Body, low: str, high: str) -> str:
    """Two int64 [...] words, each in [0, 2^32) -> the pair in the variant's form (uint64
    [..., 2] or int32 limbs [..., 2, 8])."""
    if not body.portable:
        last = body.const([-1], np.int64)
        pair = body.op(
            "Concat", body.op("Unsqueeze", low, last), body.op("Unsqueeze", high, last), axis=-1
        )
        return body.op("Cast", pair, to=_UINT64)
    return _stacked_words(
        body, _split_portable(body, low, _WORD_LIMBS) + _split_portable(body, high, _WORD_LIMBS)
    )


def _divmod_16_bits(body: _Body, value: str) -> tuple[str, str]:
    """(q, r) with value = q 2^16 + r, 0 <= r < 2^16, for int64 [...] `value`, exact where a
    runtime divides integers in float32 (OpenVINO's CPU plugin: int32 values above 2^24 lose
    bits there) and whether it truncates or floors: Div's quotient is then off by at most
    one (the float32 error over 2^16 is below 2^-8), which the remainder's range corrects.
    Mul, Sub and comparisons are exact in int32 (and wrap, which leaves r exact)."""
    base = body.const(1 << 16, np.int64)
    one = body.const(1, np.int64)
    zero = body.const(0, np.int64)
    q = body.op("Div", value, base)
    r = body.op("Sub", value, body.op("Mul", q, base))
    low = body.op("Less", r, zero)
    q = body.op("Where", low, body.op("Sub", q, one), q)
    r = body.op("Where", low, body.op("Add", r, base), r)
    high = body.op("GreaterOrEqual", r, base)
    q = body.op("Where", high, body.op("Add", q, one), q)
    r = body.op("Where", high, body.op("Sub", r, base), r)
    return q, r


def _split_portable(body: _Body, value: str, n: int) -> list[str]:
    """The `n` lowest 4-bit limbs of int64 [...] `value` (two's complement), as int64 pieces
    [..., 4], lowest first: 16 bits at a time (`_divmod_16_bits`), each part's four limbs at
    once by Div and Mod of a value below 2^16 (exact in float32 too). No
    BitwiseAnd: OpenVINO 2026.4's CPU plugin computed it on other values from one run of a
    graph to the next. `value` gets its last axis of 1 before the arithmetic, not each limb
    after it: with an Unsqueeze per limb, tract's optimiser ran out of 6 GiB on
    `random_block_model` alone (73 MB in this form). Where int64 is held in 32 bits
    (OpenVINO), the quotient past the low word is 0 or -1: its sign extension, as the value's
    own high word."""
    per_part = 16 // _LIMB_BITS
    places = body.const([_LIMB**i for i in range(per_part)], np.int64)
    base = body.const(_LIMB, np.int64)
    value = body.op("Unsqueeze", value, body.const([-1], np.int64))
    pieces = []
    for _ in range(n // per_part):
        value, part = _divmod_16_bits(body, value)
        pieces.append(body.op("Mod", body.op("Div", part, places), base))
    return pieces


def _stacked_words(body: _Body, pieces: list[str]) -> str:
    """int64 pieces [..., k] of 16 limbs in all (`_split_portable`), low word's first -> int32
    [..., 2, 8]."""
    limbs = body.op("Concat", *pieces, axis=-1)  # [..., 16]
    second_last = body.const([-2], np.int64)
    words = [
        body.op("Unsqueeze", _slice(body, limbs, k, k + _WORD_LIMBS, axis=-1), second_last)
        for k in (0, _WORD_LIMBS)
    ]
    return body.op("Cast", body.op("Concat", *words, axis=-2), to=_INT32)


def _random_blocks(
    body: _Body, seed: str, row_words: str, offset: str, key_rows: str | None = None
) -> tuple[str, str]:
    """The Philox block of each row: key = seed, counter = (row, offset) as 64-bit words.
    seed: int64 [K]; row_words: the rows' words in the variant's form (`_int64_words`: uint64
    [N, 2] or int32 limbs [N, 2, 8]); offset: int64 [1]; key_rows: int64 [N], the key of each
    row (absent: K = N or 1, broadcast). -> pairs (w0, w2) and (w1, w3), in that form."""
    offset_words = body.op("Expand", _int64_words(body, offset), body.op("Shape", row_words))
    counter = body.op("Concat", row_words, offset_words, axis=1)  # [N, 4(, 8)]
    return _philox(body, counter, _int64_words(body, seed), key_rows)


def _uniforms(body: _Body, even_words: str, odd_words: str) -> str:
    """The 53-bit uniforms of the blocks: (w0, w1) -> u1, (w2, w3) -> u2, float64 [N, 2].

    u = ((w0 >> 5) 2^26 + (w1 >> 6)) 2^-53 in float64: the words are exact (below 2^32), a
    shift right is Floor of a product by a power of two, and every product and sum below is an
    integer below 2^53 scaled by a power of two: all exact.

    Portable variant: float32 [N, 2], u1 = (w0 >> 8) 2^-24 and u2 = (w2 >> 8) 2^-24, the
    kernel's uniforms cut to their first 24 bits: the six high limbs scaled by powers of two
    are exact in float32, and so is every partial sum (a multiple of 2^-24 below 1)."""
    if body.portable:
        high_limbs = _slice(body, even_words, _WORD_LIMBS - 6, _WORD_LIMBS, axis=-1)
        place = body.const([2.0 ** (_LIMB_BITS * i - 24) for i in range(6)], np.float32)
        terms = body.op("Mul", body.op("Cast", high_limbs, to=_FLOAT), place)
        return body.op("ReduceSum", terms, body.const([-1], np.int64), keepdims=0)
    high = body.op(
        "Floor",
        body.op("Mul", body.op("Cast", even_words, to=_DOUBLE), body.const(2.0**-5, np.float64)),
    )
    low = body.op(
        "Floor",
        body.op("Mul", body.op("Cast", odd_words, to=_DOUBLE), body.const(2.0**-6, np.float64)),
    )
    bits = body.op("Add", body.op("Mul", high, body.const(2.0**26, np.float64)), low)
    return body.op("Mul", bits, body.const(2.0**-53, np.float64))


def random_block_model(variant: str = "exact") -> onnx.ModelProto:
    """A model of the bodies' generator alone, to check a runtime's Philox words against the
    kernel's: inputs `seed`, `row`, `offset`, int64 [N] each (the 64-bit two's complement is
    used, as the ops do); output `limbs`, int32 [N, 4, 8]: limb i of word w (w0..w3) is bits
    4i..4i+3 of the word, as the portable bodies hold it (`limb_words` gives the words; the
    exact variant holds uint64 words, cut into limbs here). variant: as `function`'s."""
    body = _Body(portable=_portable(variant, "random_block_model"))
    even, odd = _random_blocks(body, "seed", _int64_words(body, "row"), "offset")
    pairs = body.op("Concat", even, odd, axis=1)  # w0 w2 w1 w3
    words = body.op("Gather", pairs, body.const([0, 2, 1, 3], np.int64), axis=1)
    if body.portable:
        body.op("Identity", words, output="limbs")
    else:  # uint64 words [N, 4] -> their limbs
        places = body.const([_LIMB**i for i in range(_WORD_LIMBS)], np.uint64)
        digits = body.op("Div", body.op("Unsqueeze", words, body.const([-1], np.int64)), places)
        limbs = body.op("Mod", digits, body.const(_LIMB, np.uint64))
        body.op("Cast", limbs, to=_INT32, output="limbs")
    inputs = [
        helper.make_tensor_value_info(name, _INT64, ["N"]) for name in ("seed", "row", "offset")
    ]
    graph = helper.make_graph(
        body.nodes,
        "random_block",
        inputs,
        [helper.make_tensor_value_info("limbs", _INT32, ["N", 4, _WORD_LIMBS])],
    )
    # IR version 10: the newest that onnxruntime 1.21, the oldest the package allows, loads.
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", FUNCTION_OPSET)], ir_version=10
    )


def limb_words(limbs: np.ndarray) -> np.ndarray:
    """`random_block_model`'s limbs [..., 8] -> the words, uint32 [...]."""
    place = np.array([_LIMB**i for i in range(_WORD_LIMBS)], np.uint64)
    return (np.asarray(limbs).astype(np.uint64) * place).sum(axis=-1).astype(np.uint32)


# --- det_exp, det_log, det_cos: the kernels' IEEE double arithmetic, node by node -------------
#
# csrc/kernels/det_math.h builds exp, log and cos from + - * / only, so that every machine gives
# the same bits; each operation below is one of its operations, in its order, on float64
# tensors (onnxruntime's elementwise float64 kernels round each operation once, as IEEE wants,
# and never fuse separate nodes into an FMA). Only the exact steps are spelled differently: the
# kernel's power-of-two scalings by bit manipulation become a table lookup or exact products.

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_ROUND_SHIFT = 1.5 * 2.0**52
_EXP_UNDERFLOW = -700.0
_SQRT_HALF = 0.70710678118654752440
# exp's argument lies in [-700, 0] in the bodies (x - max x over a temperature): its k =
# round(x / ln 2) in [-1010, 0], and 2^k is looked up in this table of exact powers of two.
_EXP_MIN_K = -1010
# frexp's arguments lie in [2^-255, 2^255) (or are 0).
_FREXP_LIMIT = 256


def _inverse_factorial(n: int) -> float:
    # n! is exact in float64 up to 22!, so 1 / n! is one correctly rounded division, as the
    # kernel's compile-time table.
    return 1.0 / float(math.factorial(n))


def _horner(body: _Body, x: str, coefficients: list[float]) -> str:
    """((c[-1] x + c[-2]) x + ...) x + c[0], one Mul and one Add node per degree."""
    p = body.const(coefficients[-1], np.float64)
    for c in reversed(coefficients[:-1]):
        p = body.op("Add", body.op("Mul", p, x), body.const(c, np.float64))
    return p


def _exp_in_range(body: _Body, x: str) -> str:
    """det::exp_in_range for float64 x [N, V] in [-700, 0]: Cody-Waite reduction, Taylor series
    to r^14 / 14!, exact scaling by 2^k, looked up with GatherElements in the table repeated
    for each row (onnxruntime's Gather took five times as long, measured on [433, 1024]).
    Portable variant: the runtime's float32 Exp."""
    if body.portable:
        return body.op("Exp", x)
    shift = body.const(_ROUND_SHIFT, np.float64)
    scaled = body.op("Mul", x, body.const(_INV_LN2, np.float64))
    k = body.op("Sub", body.op("Add", scaled, shift), shift)  # round to nearest, ties to even
    r = body.op(
        "Sub",
        body.op("Sub", x, body.op("Mul", k, body.const(_LN2_HI, np.float64))),
        body.op("Mul", k, body.const(_LN2_LO, np.float64)),
    )
    p = _horner(body, r, [_inverse_factorial(n) for n in range(15)])
    powers = np.array([[2.0**-i for i in range(-_EXP_MIN_K + 1)]])
    table_shape = body.op(
        "Concat",
        body.op("Shape", x, start=0, end=1),
        body.const([len(powers[0])], np.int64),
        axis=0,
    )
    table = body.op("Expand", body.const(powers, np.float64), table_shape)  # [N, 1011]
    index = body.op("Cast", body.op("Neg", k), to=_INT32)
    return body.op("Mul", p, body.op("GatherElements", table, index, axis=1))


def _frexp(body: _Body, x: str) -> tuple[str, str]:
    """(m, e) with x = m 2^e, m in [0.5, 1), e float64, for float64 x in [2^-255, 2^255) (0
    gives some m and e: `_log` replaces its result). e is estimated from the runtime's Log,
    within one of it whatever Log's last bits, x is scaled by the exact power 2^-e looked up in
    a table, and one exact step each way corrects the estimate: frexp's exact result, in 21
    nodes where halving steps took 86."""
    safe = body.op("Max", x, body.const(2.0 ** -(_FREXP_LIMIT - 1), np.float64))
    log2 = body.op("Mul", body.op("Log", safe), body.const(1.0 / math.log(2.0), np.float64))
    e = body.op("Add", body.op("Floor", log2), body.const(1.0, np.float64))
    e = body.op(
        "Min",
        body.op("Max", e, body.const(-float(_FREXP_LIMIT - 1), np.float64)),
        body.const(float(_FREXP_LIMIT), np.float64),
    )
    # table[i] = 2^-(i - 255) for e = i - 255 in [-255, 256]
    table = np.array([2.0 ** -(i - (_FREXP_LIMIT - 1)) for i in range(2 * _FREXP_LIMIT)])
    index = body.op(
        "Cast", body.op("Add", e, body.const(_FREXP_LIMIT - 1.0, np.float64)), to=_INT32
    )
    m = body.op("Mul", safe, body.op("Gather", body.const(table, np.float64), index))  # [0.25, 2)
    big = body.op("GreaterOrEqual", m, body.const(1.0, np.float64))
    m = body.op("Where", big, body.op("Mul", m, body.const(0.5, np.float64)), m)
    e = body.op("Add", e, body.op("Cast", big, to=_DOUBLE))
    small = body.op("Less", m, body.const(0.5, np.float64))
    m = body.op("Where", small, body.op("Mul", m, body.const(2.0, np.float64)), m)
    e = body.op("Sub", e, body.op("Cast", small, to=_DOUBLE))
    return m, e


def _log(body: _Body, x: str) -> str:
    """det::log for float64 x = 0 (-> -inf) or in [2^-255, 2^255) (the bodies' arguments:
    probabilities of float32 and Gumbel noise's logs). Portable variant: the runtime's float32
    Log."""
    if body.portable:
        return body.op("Log", x)
    m, e = _frexp(body, x)
    small = body.op("Less", m, body.const(_SQRT_HALF, np.float64))
    m = body.op("Where", small, body.op("Mul", m, body.const(2.0, np.float64)), m)
    k = body.op("Sub", e, body.op("Cast", small, to=_DOUBLE))
    f = body.op("Sub", m, body.const(1.0, np.float64))
    s = body.op("Div", f, body.op("Add", body.const(2.0, np.float64), f))
    z = body.op("Mul", s, s)
    t = _horner(body, z, [1.0 / (2 * n + 1) for n in range(12)])
    log_m = body.op("Mul", body.op("Mul", body.const(2.0, np.float64), s), t)
    out = body.op(
        "Add",
        body.op("Mul", k, body.const(_LN2_HI, np.float64)),
        body.op("Add", log_m, body.op("Mul", k, body.const(_LN2_LO, np.float64))),
    )
    zero = body.op("Equal", x, body.const(0.0, np.float64))
    return body.op("Where", zero, body.const(-np.inf, np.float64), out)


def _cos(body: _Body, x: str) -> str:
    """det::cos for float64 |x| <= pi/2: Taylor series to x^22 / 22!, in -z = -(x x).
    Portable variant: the runtime's float32 Cos."""
    if body.portable:
        return body.op("Cos", x)
    minus_z = body.op("Neg", body.op("Mul", x, x))
    return _horner(body, minus_z, [_inverse_factorial(2 * n) for n in range(12)])


# --- sampling: csrc/kernels/sampling.h ----------------------------------------------------------


def _softmax_weights(body: _Body, d: str, keep: str, runtime_exp: bool = False) -> str:
    """weight_of: exp(d) for kept tokens whose d = (x - max) / T is >= -700, else 0.

    Exact variant: d is never NaN there (its rows are checked before, and `_sample_rows`
    clamps -inf before the division), so the argument of exp is max(d, -700), in the table's
    range, and the weights of the other tokens are zeroed by a product with 0 (exp is finite
    and positive there): the same values as a Where, which onnxruntime runs 5 to 7 times slower
    than Max or Mul on float64 (measured on [1730, 1024]). runtime_exp: the runtime's float64
    Exp instead of det_exp (`_sample_chunk`'s certified fast path)."""
    kept = body.op("And", keep, body.op("GreaterOrEqual", d, body.real_const(_EXP_UNDERFLOW)))
    if body.portable:
        safe = body.op("Where", kept, d, body.real_const(0.0))  # never NaN or -inf in exp
        return body.op("Where", kept, _exp_in_range(body, safe), body.real_const(0.0))
    safe = body.op("Max", d, body.real_const(_EXP_UNDERFLOW))
    exp = body.op("Exp", safe) if runtime_exp else _exp_in_range(body, safe)
    return body.op("Mul", exp, _as_real(body, kept))


def _as_real(body: _Body, flags: str) -> str:
    """bool -> 0.0 / 1.0 of the variant's real type, through uint8 (onnxruntime casts bool to
    float64 four times slower than bool to uint8 to float64)."""
    return body.op("Cast", body.op("Cast", flags, to=TensorProto.UINT8), to=body.real)


def _last(body: _Body, value: str) -> str:
    """The last column of a [N, n] tensor, as [N, 1]. The slice ends at n, read from the
    shape, not at a huge constant: tract mis-simplifies min(n, 2^62) in the width it infers."""
    axis1 = body.const([1], np.int64)
    end = body.op("Shape", value, start=1, end=2)
    return body.op("Slice", value, body.const([-1], np.int64), end, axis1)


def _top_p_keep(body: _Body, x: str, d: str, keep: str, top_p: str) -> str:
    """The nucleus filter: bool [N, V], true for the tokens top-p keeps. d: x - max x in the
    real type, unscaled.

    In the order of decreasing logit, ties by lower index (TopK's order, by the ONNX spec), a
    token stays while the mass before it, a running sum of w / S in that order, is <= top_p.
    That mass never decreases, so the kept tokens are a prefix of the order, ending at the L-th
    token: a token is kept iff it comes no later than that one, (x, -index) >= (v_L, -i_L).
    The caller applies it only when top_p < 1 (exact variant: an If; portable: every time, the
    result ignored at top_p = 1)."""
    one = body.const(1, np.int64)
    axis1 = body.const([1], np.int64)
    vocab = body.op("Shape", x, start=1, end=2)  # [1]
    weight = _softmax_weights(body, d, keep)
    total = _last(body, body.op("CumSum", weight, one))
    values, order = body.op("TopK", x, vocab, axis=1, n_outputs=2)
    mass = body.op(
        "CumSum", body.op("Div", body.op("GatherElements", weight, order, axis=1), total), one
    )
    within = body.op("LessOrEqual", mass, body.op("Cast", top_p, to=body.real))
    n_within = body.op("ReduceSum", body.op("Cast", within, to=_INT64), axis1)  # [N, 1]
    last = body.op("Sub", body.op("Min", body.op("Add", n_within, one), vocab), one)
    v_last = body.op("GatherElements", values, last, axis=1)
    i_last = body.op("GatherElements", order, last, axis=1)
    index = body.op("Range", body.const(0, np.int64), body.op("Squeeze", vocab), one)
    return body.op(
        "Or",
        body.op("Greater", x, v_last),
        body.op("And", body.op("Equal", x, v_last), body.op("LessOrEqual", index, i_last)),
    )


#: Rows per chunk of the exact variant's sampling (at most): onnxruntime's elementwise kernels
#: run about twice as fast per element on float64 [512, 1024] tensors as on [1730, 1024] ones
#: (measured: a chain of 30 Mul/Add, 2 threads, 0.25 against 0.47 ms a pass for 1730 rows),
#: and MaskGitStep's body on c2f's 1730 masked rows took 55-75 ms instead of 90.
_CHUNK_ROWS = 512


def _sample_rows(
    body: _Body, x: str, x_max: str, temperature: str, top_k: str, top_p: str, u: str
) -> tuple[str, str]:
    """RowSampler::sample on N >= 1 rows -> (tokens int64 [N, 1], p32 [N, 1]: the tokens'
    probabilities rounded to float32, whose log the caller takes, once for all rows).

    The portable variant samples all rows at once (`_sample_chunk`; tract has no Loop). The
    exact variant transposes the float32 logits once, to [V, N] (the rows as columns: sums run
    down the columns, where onnxruntime's CumSum is some ten times faster than along rows, and
    a float32 transpose costs a tenth of a float64 one), and samples them in a Loop over
    ceil(N / _CHUNK_ROWS) chunks of equal width (`_sample_columns`; the rows padded with at
    most one row a chunk, of zeros, whose draws are dropped). Each row's arithmetic is the same
    whatever the layout and chunk, so are its bits."""
    if body.portable:
        return _sample_chunk(body, x, x_max, temperature, top_k, top_p, u)
    one = body.const([1], np.int64)
    n_rows = body.op("Shape", x, start=0, end=1)  # [1]
    chunk_rows = body.const([_CHUNK_ROWS], np.int64)
    n_chunks = body.op("Div", body.op("Sub", body.op("Add", n_rows, chunk_rows), one), chunk_rows)
    size = body.op("Div", body.op("Sub", body.op("Add", n_rows, n_chunks), one), n_chunks)
    padding = body.op("Sub", body.op("Mul", n_chunks, size), n_rows)
    zero = body.const([0], np.int64)
    pads = body.op("Concat", zero, zero, padding, zero, axis=0)  # [begin0, begin1, end0, end1]
    rows_x, rows_max, rows_u = (body.op("Pad", value, pads) for value in (x, x_max, u))
    # Each row's smallest logit bounds its weights' arguments from below (`_sample_columns`).
    rows_min = body.op("ReduceMin", rows_x, one)
    columns_x, columns_max, columns_min, columns_u = (
        body.op("Transpose", value, perm=[1, 0]) for value in (rows_x, rows_max, rows_min, rows_u)
    )

    loop = _Body(prefix=f"{body._prefix}s{len(body.nodes)}_", portable=False)
    start = loop.op("Mul", loop.op("Reshape", "chunk_index", one), size)
    stop = loop.op("Add", start, size)
    chunk = [
        loop.op("Slice", value, start, stop, one)
        for value in (columns_x, columns_max, columns_min, columns_u)
    ]

    def chunk_rows_of(b: _Body) -> tuple[str, str]:
        """The chunk's logits and maxima as rows, [n, V] and [n, 1], for the filters."""
        return tuple(b.op("Slice", value, start, stop, zero) for value in (rows_x, rows_max))

    tokens, p32 = _sample_columns(loop, chunk_rows_of, *chunk, temperature, top_k, top_p)
    loop.op("Identity", "chunk_condition", output="chunk_condition_out")
    loop.op("Identity", tokens, output="chunk_tokens")
    loop.op("Identity", p32, output="chunk_p32")
    graph = helper.make_graph(
        loop.nodes,
        "sample_chunk",
        [
            helper.make_tensor_value_info("chunk_index", _INT64, []),
            helper.make_tensor_value_info("chunk_condition", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("chunk_condition_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("chunk_tokens", _INT64, [1, "rows"]),
            helper.make_tensor_value_info("chunk_p32", _DOUBLE, [1, "rows"]),
        ],
    )
    stacked = body.op("Loop", body.op("Squeeze", n_chunks), "", n_outputs=2, body=graph)
    flat = body.const([-1, 1], np.int64)
    return tuple(
        body.op("Slice", body.op("Reshape", value, flat), zero, n_rows, zero) for value in stacked
    )


def _sample_chunk(
    body: _Body, x: str, x_max: str, temperature: str, top_k: str, top_p: str, u: str
) -> tuple[str, str]:
    """RowSampler::sample, portable variant. x: float32 [N, V]; x_max: its checked row maxima
    [N, 1] (`_checked_max`); temperature, top_k, top_p: checked scalars; u: float32 [N, 1].
    -> (tokens int64 [N, 1], p32 [N, 1]: the token's probability w / S rounded to float32; its
    log is the logprob, VampNet's confidence). Every filter runs, its result ignored when it
    is off (no If: tract does not carry shape symbols into an If's branches)."""
    vocab = body.op("Shape", x, start=1, end=2)  # [1]
    keep = body.op("Greater", x, body.const(-np.inf, np.float32))
    d = body.op("Sub", body.op("Cast", x, to=body.real), body.op("Cast", x_max, to=body.real))
    top_k_on = _top_k_on(body, top_k, vocab)
    # top-k: the k-th of all logits sorted (a TopK of a data-dependent k: tract drops the
    # symbol that sizes it), a k of 1 when off, the threshold then ignored
    k = body.op("Where", top_k_on, top_k, body.const(1, np.int64))
    ranked = body.op("TopK", x, vocab, axis=1, n_outputs=2)[0]
    index = body.op("Sub", k, body.const(1, np.int64))
    axis1 = body.const([1], np.int64)
    threshold = body.op("Unsqueeze", body.op("Gather", ranked, index, axis=1), axis1)
    above = body.op("GreaterOrEqual", x, threshold)
    keep = body.op("And", keep, body.op("Or", body.op("Not", top_k_on), above))
    nucleus = _top_p_keep(body, x, d, keep, top_p)
    top_p_on = body.op("Less", top_p, body.const(1.0, np.float32))
    keep = body.op("And", keep, body.op("Or", body.op("Not", top_p_on), nucleus))
    # Removed tokens' differences become 0 before the division: -inf / inf would be NaN.
    # Temperature 0 and 1 use the unscaled weights.
    d = body.op("Where", keep, d, body.real_const(0.0))
    scale = body.op(
        "Where",
        _unit(body, temperature),
        body.real_const(1.0),
        body.op("Cast", temperature, to=_FLOAT),
    )
    weight = _softmax_weights(body, body.op("Div", d, scale), keep)
    tokens, p = _draw(body, x, weight, temperature, u)
    return tokens, _float32(body, p)


def _top_k_on(body: _Body, top_k: str, vocab: str) -> str:
    """Whether top-k filters: off at 0 and at k >= V."""
    return body.op(
        "And",
        body.op("Greater", top_k, body.const(0, np.int64)),
        body.op("Less", top_k, body.op("Squeeze", vocab)),
    )


def _unit(body: _Body, temperature: str) -> str:
    """Whether the weights are unscaled: temperature 0 and 1 (no division: the kernel's bits)."""
    return body.op(
        "Or",
        body.op("Equal", temperature, body.const(0.0, np.float32)),
        body.op("Equal", temperature, body.const(1.0, np.float32)),
    )


def _kept_columns(body: _Body, rows, x: str, filtered: str, top_k: str, top_p: str) -> str:
    """The exact variant's kept tokens, bool [V, n]: the finite logits that top-k and top-p
    keep. x: the chunk's logits as columns, float32 [V, n]; rows(b): the chunk's logits and
    maxima as rows, [n, V] and [n, 1], built in b (the filters' TopK work along rows);
    filtered: whether top-k or top-p is on. Without a filter on, one comparison of x; else the
    filters on the rows, each behind an If that skips it when off, transposed."""

    def filters(b: _Body) -> list[str]:
        x_rows, max_rows = rows(b)
        keep = b.op("Greater", x_rows, b.const(-np.inf, np.float32))
        vocab = b.op("Shape", x_rows, start=1, end=2)  # [1]
        bool2 = [(TensorProto.BOOL, 2)]

        def top_k_filter(f: _Body) -> list[str]:
            # every logit >= the k-th largest stays (ties at the threshold too)
            axis1 = f.const([1], np.int64)
            values = f.op("TopK", x_rows, f.op("Reshape", top_k, axis1), axis=1, n_outputs=2)[0]
            return [f.op("And", keep, f.op("GreaterOrEqual", x_rows, _last(f, values)))]

        keep = b.branch(_top_k_on(b, top_k, vocab), top_k_filter, lambda f: [keep], bool2)
        kept = keep

        def top_p_filter(f: _Body) -> list[str]:
            d_rows = f.op(
                "Sub", f.op("Cast", x_rows, to=_DOUBLE), f.op("Cast", max_rows, to=_DOUBLE)
            )
            return [f.op("And", kept, _top_p_keep(f, x_rows, d_rows, kept, top_p))]

        keep = b.branch(
            b.op("Less", top_p, b.const(1.0, np.float32)), top_p_filter, lambda f: [kept], bool2
        )
        return [b.op("Transpose", keep, perm=[1, 0])]

    return body.branch(
        filtered,
        filters,
        lambda b: [b.op("Greater", x, b.const(-np.inf, np.float32))],
        [(TensorProto.BOOL, 2)],
    )


def _scaled(body: _Body, d: str, temperature: str) -> str:
    """The exact variant's scaled differences d / T (float64, d's shape), with removed tokens'
    differences (-inf) clamped to -DBL_MAX before the division (-inf / inf would be NaN; a Max
    is faster than a Where): their weight is 0 whatever it is, and a kept token's difference
    is finite, unchanged. Temperature 0 and 1: d itself (no division: the kernel's bits)."""
    return body.branch(
        _unit(body, temperature),
        lambda b: [d],
        lambda b: [
            b.op(
                "Div",
                b.op("Max", d, b.real_const(-np.finfo(np.float64).max)),
                b.op("Cast", temperature, to=_DOUBLE),
            )
        ],
        [(_DOUBLE, 2)],
    )


def _sample_columns(
    body: _Body,
    rows,
    x: str,
    x_max: str,
    x_min: str,
    u: str,
    temperature: str,
    top_k: str,
    top_p: str,
) -> tuple[str, str]:
    """RowSampler::sample, exact variant, on a chunk of rows laid out as columns. x: float32
    [V, n]; x_max, x_min: each row's checked maximum (`_checked_max`) and minimum, [1, n]; u:
    float64 [1, n]; rows(b): the chunk as rows (`_kept_columns`); temperature, top_k, top_p:
    checked scalars. -> (tokens int64 [1, n], p32 [1, n]: the token's probability w / S
    rounded to float32, in float64; its log is the logprob, VampNet's confidence).

    Most chunks take the fast case: no filter on, and every row's smallest scaled difference
    (min - max) / T >= -700 (division and rounding are monotone, so it bounds the row's
    others; -inf fails it). Then every token is kept and none is clamped, and the weights are
    exp(d / T) at once: the general case's values (a Max that changes nothing and a product
    with 1), in two passes instead of seven. The kept flags are then one true that broadcasts.

    The draw is made from the runtime's Exp first and kept where `_draw_columns` certifies it
    to be det_exp's, else the chunk is drawn again from det_exp."""
    x_max = body.op("Cast", x_max, to=_DOUBLE)
    d = body.op("Sub", body.op("Cast", x, to=_DOUBLE), x_max)
    unit = _unit(body, temperature)
    scale = body.op("Where", unit, body.real_const(1.0), body.op("Cast", temperature, to=_DOUBLE))
    lowest = body.op("Div", body.op("Sub", body.op("Cast", x_min, to=_DOUBLE), x_max), scale)
    vocab = body.op("Shape", x, start=0, end=1)  # [1]
    filtered = body.op(
        "Or",
        _top_k_on(body, top_k, vocab),
        body.op("Less", top_p, body.const(1.0, np.float32)),
    )
    fast = body.op(
        "And",
        body.op("Not", filtered),
        _all(body, body.op("GreaterOrEqual", lowest, body.real_const(_EXP_UNDERFLOW))),
    )
    keep = body.branch(
        fast,
        lambda b: [b.const([[True]], np.bool_)],
        lambda b: [_kept_columns(b, rows, x, filtered, top_k, top_p)],
        [(TensorProto.BOOL, 2)],
    )
    real2 = [(_DOUBLE, 2)]

    def fast_weights(b: _Body) -> list[str]:
        return [
            b.branch(
                unit,
                lambda a: [a.op("Exp", d)],
                lambda a: [a.op("Exp", a.op("Div", d, a.op("Cast", temperature, to=_DOUBLE)))],
                real2,
            )
        ]

    def general_weights(b: _Body) -> list[str]:
        return [_softmax_weights(b, _scaled(b, d, temperature), keep, runtime_exp=True)]

    weight = body.branch(fast, fast_weights, general_weights, real2)
    fast_tokens, fast_p, certified = _draw_columns(body, x, weight, temperature, u, certify=True)

    def exact(b: _Body) -> list[str]:
        weight = _softmax_weights(b, _scaled(b, d, temperature), keep)
        tokens, p, _ = _draw_columns(b, x, weight, temperature, u)
        return [tokens, _float32(b, p)]

    return tuple(
        body.branch(
            _all(body, certified),
            lambda b: [fast_tokens, _float32(b, fast_p)],
            exact,
            [(_INT64, 2), (_DOUBLE, 2)],
        )
    )


def _float32(body: _Body, p: str) -> str:
    """p rounded to float32, in the real type."""
    return body.op("Cast", body.op("Cast", p, to=_FLOAT), to=body.real)


#: The exact variant's fast path (`_draw_columns`): a draw from weights of the runtime's float64
#: Exp is kept when every comparison it rests on clears this margin, relative to the row's
#: total S, for V <= 1024 tokens, and V / 1024 times it for more. With weights within 1e-14
#: of det_exp's, relatively (45 units in the last place; det_exp is within 1 of exp,
#: onnxruntime's Exp within 2, measured), the two running sums of V positive terms in the same
#: order differ by at most 1e-14 S and V roundings each, V 2^-53 S (2.3e-13 S for V = 1024),
#: and u S by one rounding more: the comparisons with u S by at most about 4.8e-13 S at
#: V = 1024, and p = w / S by 2.5e-13 p. The margin is 3.8 times that.
_CERTAIN = 2.0**-39  # 1.8e-12


def _draw(body: _Body, x: str, weight: str, temperature: str, u: str) -> tuple[str, str]:
    """The portable variant's draw from the weights [N, V] -> (tokens int64 [N, 1], p = w / S
    [N, 1]): the first index whose running sum exceeds u S; if rounding leaves none, the last
    token of positive weight. Temperature 0: the argmax, lowest index on ties (ArgMax's
    default). Flags as int32."""
    sampling = body.op("Greater", temperature, body.const(0.0, np.float32))
    axis1 = body.const([1], np.int64)
    running = body.op("CumSum", weight, body.const(1, np.int64))
    total = _last(body, running)
    above = body.op("Cast", body.op("Greater", running, body.op("Mul", u, total)), to=_INT32)
    first_above = body.op("ArgMax", above, axis=1)
    any_above = body.op("Cast", body.op("ReduceMax", above, axis1), to=TensorProto.BOOL)
    positive = body.op("Cast", body.op("Greater", weight, body.real_const(0.0)), to=_INT32)
    last_positive = body.op("ArgMax", positive, axis=1, select_last_index=1)
    drawn = body.op("Where", any_above, first_above, last_positive)
    tokens = body.op("Where", sampling, drawn, body.op("ArgMax", x, axis=1))
    p = body.op("Div", body.op("GatherElements", weight, tokens, axis=1), total)
    return tokens, p


def _draw_columns(
    body: _Body, x: str, weight: str, temperature: str, u: str, certify: bool = False
) -> tuple[str, str, str | None]:
    """The exact variant's draw, on rows laid out as columns: x float32 [V, n], weight float64
    [V, n], u [1, n] -> (tokens int64 [1, n], p = w / S [1, n] in float64, and with `certify`
    a bool [1, n]: true where the token and p rounded to float32 are those of any weights
    within 1e-14 of these, relatively (`_CERTAIN`: the margin, times V / 1024 past 1024
    tokens)).

    The first index whose running sum exceeds u S; if rounding leaves none, the last token of
    positive weight. Temperature 0: the argmax, lowest index on ties (ArgMax's default). Flags
    as uint8 (onnxruntime casts bool to it 10 times faster than to int32). Some running sum
    exceeds u S iff the last, S, does: the sums never decrease.

    A token t is certain when the running sums s[t - 1] and s[t] (s[-1] = 0 <= u S needs none)
    are both farther than the margin from u S: the sums never decrease, so any weights within
    the bound give the same first index above u S (or none: then s[t] = S, below u S). p
    rounded to float32 is certain when p - p margin and p + p margin round to the same
    float32. The certificate is exact arithmetic on the bound, not a statistical guess."""
    sampling = body.op("Greater", temperature, body.const(0.0, np.float32))
    running = body.op("CumSum", weight, body.const(0, np.int64))
    total = body.op(
        "Slice",
        running,
        body.const([-1], np.int64),
        body.const([2**62], np.int64),
        body.const([0], np.int64),
    )  # [1, n]
    bar = body.op("Mul", u, total)
    any_above = body.op("Greater", total, bar)

    def drawn(b: _Body) -> list[str]:
        above = b.op("Cast", b.op("Greater", running, bar), to=TensorProto.UINT8)
        first_above = b.op("ArgMax", above, axis=0)

        def fallback(f: _Body) -> list[str]:
            positive = f.op(
                "Cast", f.op("Greater", weight, f.real_const(0.0)), to=TensorProto.UINT8
            )
            last_positive = f.op("ArgMax", positive, axis=0, select_last_index=1)
            return [f.op("Where", any_above, first_above, last_positive)]

        return [b.branch(_all(b, any_above), lambda a: [first_above], fallback, [(_INT64, 2)])]

    tokens = body.branch(sampling, drawn, lambda b: [b.op("ArgMax", x, axis=0)], [(_INT64, 2)])
    p = body.op("Div", body.op("GatherElements", weight, tokens, axis=0), total)
    if not certify:
        return tokens, p, None

    vocab = body.op("Cast", body.op("Shape", weight, start=0, end=1), to=_DOUBLE)
    relative = body.op(
        "Mul",
        body.op(
            "Max",
            body.op("Div", vocab, body.const(1024.0, np.float64)),
            body.const(1.0, np.float64),
        ),
        body.const(_CERTAIN, np.float64),
    )  # [1]
    margin = body.op("Mul", total, relative)  # [1, n]
    before = body.op(
        "Max", body.op("Sub", tokens, body.const(1, np.int64)), body.const(0, np.int64)
    )

    def clear(index: str) -> str:
        s = body.op("GatherElements", running, index, axis=0)
        return body.op("Greater", body.op("Abs", body.op("Sub", s, bar)), margin)

    token_certain = body.op(
        "Or", body.op("Not", sampling), body.op("And", clear(tokens), clear(before))
    )
    # p (1 -+ margin) as p -+ p margin: onnxruntime's common-subexpression elimination took
    # Mul(p, 1 - 2^-39) and Mul(p, 1 + 2^-39) for one value (the constants are equal in
    # float32), and every p for certain.
    spread = body.op("Mul", p, relative)
    low = body.op("Cast", body.op("Sub", p, spread), to=_FLOAT)
    high = body.op("Cast", body.op("Add", p, spread), to=_FLOAT)
    p_certain = body.op("Equal", low, high)
    return tokens, p, body.op("And", token_certain, p_certain)


def _checked_sampling(
    body: _Body, where: str, temperature: str, top_k: str, top_p: str
) -> tuple[str, str, str]:
    """The sampling scalars as rank 0, checked as check_sampling_params does."""
    temperature = body.scalar(temperature, where, "temperature")
    top_k = body.scalar(top_k, where, "top_k")
    top_p = body.scalar(top_p, where, "top_p")
    temperature = body.check(
        body.op("GreaterOrEqual", temperature, body.const(0.0, np.float32)),  # NaN fails
        f"{where}: temperature must be >= 0",
        temperature,
        scalar=True,
    )
    top_k = body.check(
        body.op("GreaterOrEqual", top_k, body.const(0, np.int64)),
        f"{where}: top_k must be >= 0",
        top_k,
        scalar=True,
    )
    in_range = body.op(
        "And",
        body.op("Greater", top_p, body.const(0.0, np.float32)),
        body.op("LessOrEqual", top_p, body.const(1.0, np.float32)),
    )
    top_p = body.check(in_range, f"{where}: top_p must be in (0, 1]", top_p, scalar=True)
    return temperature, top_k, top_p


def _checked_max(body: _Body, where: str, x: str, read: str | None = None) -> str:
    """The row maxima float32 [N, 1] of logits x [N, V], once the rows are checked: finite or
    -inf, a finite value in every row. read: bool [N], the rows whose draws are kept, the only
    ones checked (absent: all).

    The checks guard the maxima, not x: every weight is computed from x - max, so nothing that
    could fail on a bad value runs before them, and no pass over all logits is spent on them."""
    bad = body.op("Or", body.op("IsNaN", x), body.op("IsInf", x, detect_negative=0))
    if read is not None:
        read = body.op("Unsqueeze", read, body.const([1], np.int64))  # [N, 1]
        bad = body.op("And", bad, read)
    x_max = body.check(
        _none(body, bad),
        f"{where}: logits must be finite or -inf",
        body.op("ReduceMax", x, body.const([1], np.int64)),
    )
    dead = body.op("Equal", x_max, body.const(-np.inf, np.float32))
    if read is not None:
        dead = body.op("And", dead, read)
    return body.check(
        _none(body, dead),
        f"{where}: logits must have a finite value in every row",
        x_max,
    )


def _row_words(body: _Body, first_row: str, row_index: str) -> str:
    """The words of the rows first_row + row_index (int64 scalar and [N]), in the variant's
    form (`_int64_words`).

    The portable variant splits first_row on its own and adds the limbs with carries:
    vamp.onnx's mask draws pass a constant first_row above 2^31 (`MASK_STREAM_ITEM << 32`),
    which OpenVINO holds only while it folds constants, in 64 bits, before its CPU plugin
    computes int64 in 32 (measured: the sum first split gives other rows there)."""
    if not body.portable:
        return _int64_words(body, body.op("Add", row_index, first_row))
    n_limbs = 2 * _WORD_LIMBS
    flat = body.const([-1, n_limbs], np.int64)
    columns = body.op(
        "Add",
        body.op("Reshape", _int64_words(body, first_row), flat),
        body.op("Reshape", _int64_words(body, row_index), flat),
    )
    limbs = _carry(body, columns, n_limbs, n_limbs)
    return body.op("Reshape", limbs, body.const([-1, 2, _WORD_LIMBS], np.int64))


def _sample_tokens(portable: bool) -> onnx.FunctionProto:
    where = ops.SAMPLE_TOKENS.name
    body = _Body(portable=portable)
    temperature, top_k, top_p = _checked_sampling(body, where, "temperature", "top_k", "top_p")
    seed = body.scalar("seed", where, "seed")
    offset = body.scalar("offset", where, "offset")
    first_row = body.scalar("first_row", where, "first_row")
    first_row = body.check(
        body.op("GreaterOrEqual", first_row, body.const(0, np.int64)),
        f"{where}: first_row must be >= 0",
        first_row,
        scalar=True,
    )
    logits = body.op("Cast", "logits", to=_FLOAT)
    shape = body.op("Shape", logits)
    rows_shape = body.op("Slice", shape, body.const([0], np.int64), body.const([-1], np.int64))
    vocab = body.op("Slice", shape, body.const([-1], np.int64), body.const([2**62], np.int64))
    n_rows = body.op("ReduceProd", rows_shape)  # [1]; 1 for logits of rank 1
    non_empty = body.op(
        "Or",
        body.op("Greater", vocab, body.const(0, np.int64)),
        body.op("Equal", n_rows, body.const(0, np.int64)),
    )
    if portable:  # [0, 0] logits as [0, 1], so that the row of zeros below has a width
        vocab = body.op("Max", vocab, body.const([1], np.int64))
    x_shape = body.check(
        body.op("Squeeze", non_empty),
        f"{where}: logits must have a non-empty last axis",
        body.op("Concat", n_rows, vocab, axis=0),
    )
    x = body.op("Reshape", logits, x_shape)
    x_max = _checked_max(body, where, x)

    def sample(branch: _Body, x: str, x_max: str, n_rows: str) -> list[str]:
        row_index = branch.op(
            "Range",
            branch.const(0, np.int64),
            branch.op("Squeeze", n_rows),
            branch.const(1, np.int64),
        )
        reshape1 = branch.const([1], np.int64)
        even, odd = _random_blocks(
            branch,
            branch.op("Reshape", seed, reshape1),
            _row_words(branch, first_row, row_index),
            branch.op("Reshape", offset, reshape1),
        )
        u = _slice(branch, _uniforms(branch, even, odd), 0, 1, axis=1)  # [N, 1]: u of (w0, w1)
        tokens, p32 = _sample_rows(branch, x, x_max, temperature, top_k, top_p, u)
        return [tokens, branch.op("Cast", _log(branch, p32), to=_FLOAT)]

    # No rows: empty outputs, and no operator runs on an empty tensor (onnxruntime 1.21's TopK
    # and MatMul fail on some, its TopK with a floating-point exception). The portable variant
    # samples one row of zeros more and drops it, without If: tract does not carry the graph's
    # shape symbols into an If's branches.
    if portable:
        first = body.const([0], np.int64)
        zeros = body.op(
            "Expand",
            body.const(0.0, np.float32),
            body.op("Concat", body.const([1], np.int64), vocab, axis=0),
        )
        padded = sample(
            body,
            body.op("Concat", x, zeros, axis=0),
            body.op("Concat", x_max, body.const([[0.0]], np.float32), axis=0),
            body.op("Add", n_rows, body.const([1], np.int64)),
        )
        tokens, logprob = (body.op("Slice", value, first, n_rows, first) for value in padded)
    else:
        tokens, logprob = body.branch(
            body.op("Squeeze", body.op("Greater", n_rows, body.const(0, np.int64))),
            lambda branch: sample(branch, x, x_max, n_rows),
            lambda branch: [branch.empty((0, 1), np.int64), branch.empty((0, 1), np.float32)],
            [(_INT64, 2), (_FLOAT, 2)],
        )
    body.op("Reshape", tokens, rows_shape, output="tokens")
    body.op("Reshape", logprob, rows_shape, output="logprob")
    return _function(ops.SAMPLE_TOKENS, body)


# --- MaskGitStep: csrc/kernels/mask_git_step.h ----------------------------------------------------


def _mask_git_schedule(
    body: _Body, step: str, n_steps: str, n0: str, n_masked: str, mask_temperature: str
) -> tuple[str, str]:
    """n_to_mask and noise_scale in the kernel's float32 arithmetic. step, n_steps: int64
    scalars; n0, n_masked: int64 [B]. -> (k int64 [B], the noise scale float32 scalar)."""
    one = body.const(1, np.int64)
    step_1 = body.op("Add", step, one)
    # float32 of the float64 quotient equals the float32 quotient (a double rounding through
    # 53 >= 2 * 24 + 2 bits is innocuous for a division), so the portable variant divides in
    # float32 with the kernel's result.
    ratio = body.op(
        "Div", body.op("Cast", step_1, to=body.real), body.op("Cast", n_steps, to=body.real)
    )
    r = body.op("Cast", ratio, to=_FLOAT)
    angle = body.op(
        "Div",
        body.op("Mul", r, body.const(np.float32(math.pi), np.float32)),
        body.const(2.0, np.float32),
    )
    gamma = body.op("Cast", _cos(body, body.op("Cast", angle, to=body.real)), to=_FLOAT)
    gamma = body.op(
        "Min",
        body.op("Max", gamma, body.const(np.float32(1e-10), np.float32)),
        body.const(1.0, np.float32),
    )
    product = body.op("Mul", gamma, body.op("Cast", n0, to=_FLOAT))
    k = body.op("Cast", body.op("Floor", product), to=_INT64)
    # Every step but the last leaves between 1 and (masked - 1) positions masked.
    clamped = body.op("Max", one, body.op("Min", body.op("Sub", n_masked, one), k))
    last = body.op("Equal", step_1, n_steps)
    scale = body.op("Mul", mask_temperature, body.op("Sub", body.const(1.0, np.float32), r))
    return body.op("Where", last, k, clamped), scale


def _all(body: _Body, flags: str) -> str:
    """Whether every element of the bool tensor `flags` is true (also when it is empty), as a
    bool scalar."""
    if body.portable:
        n_false = body.op(
            "ReduceSum", body.op("Cast", body.op("Not", flags), to=_INT64), keepdims=0
        )
        return body.op("Equal", n_false, body.const(0, np.int64))
    return body.op("Not", _any(body, body.op("Not", flags)))


def _none(body: _Body, flags: str) -> str:
    """Whether no element of the bool tensor `flags` is true (also when it is empty)."""
    return _all(body, body.op("Not", flags)) if body.portable else body.op("Not", _any(body, flags))


def _any(body: _Body, flags: str) -> str:
    """Whether some element of the bool tensor `flags` is true, as a bool scalar: the maximum
    of its uint8 values and one 0 appended (so that an empty tensor gives false). Exact
    variant: onnxruntime reduces uint8 some 80 times faster than the int64 sum of the
    portable `_all` (measured on [1730, 1024])."""
    flat = body.op("Reshape", flags, body.const([-1], np.int64))
    padded = body.op("Concat", flat, body.const([False], np.bool_), axis=0)
    largest = body.op("ReduceMax", body.op("Cast", padded, to=TensorProto.UINT8), keepdims=0)
    return body.op("Cast", largest, to=TensorProto.BOOL)


def _item_values(body: _Body, value: str, batch: str, where: str, argument: str) -> tuple[str, str]:
    """A key input of MaskGitStep (one element, or [B]) as int64 [B], and a bool scalar: true
    when it had one element."""
    flat = body.op("Reshape", value, body.const([-1], np.int64))
    expanded = body.op(
        "Expand", flat, batch, name=f"{where}: {argument} must have one element or shape [B]"
    )
    one = body.op("Equal", body.op("Size", flat), body.const(1, np.int64))
    return expanded, one


def _mask_git_step(portable: bool) -> onnx.FunctionProto:
    where = ops.MASK_GIT_STEP.name
    body = _Body(portable=portable)
    temperature, top_k, top_p = _checked_sampling(body, where, "temperature", "top_k", "top_p")
    n_steps = body.scalar("n_steps", where, "n_steps")
    n_steps = body.check(
        body.op("GreaterOrEqual", n_steps, body.const(1, np.int64)),
        f"{where}: n_steps must be >= 1",
        n_steps,
        scalar=True,
    )
    step = body.scalar("step", where, "step")
    step_ok = body.op(
        "And",
        body.op("GreaterOrEqual", step, body.const(0, np.int64)),
        body.op("Less", step, n_steps),
    )
    step = body.check(step_ok, f"{where}: step must be in [0, n_steps)", step, scalar=True)
    mask_temperature = body.scalar("mask_temperature", where, "mask_temperature")
    finite = body.op(
        "And",
        body.op("GreaterOrEqual", mask_temperature, body.const(0.0, np.float32)),
        body.op("Not", body.op("IsInf", mask_temperature)),
    )
    mask_temperature = body.check(
        finite, f"{where}: mask_temperature must be finite and >= 0", mask_temperature, scalar=True
    )

    # Shapes: logits [B, T, P, V], codes and mask [B, C, T]; ncc = C - P conditioning codebooks.
    # Every dimension below is read from the checked shapes, so nothing runs before the check.
    codes_shape = body.op("Shape", "codes")
    logits_shape = body.op("Shape", "logits")
    shape_ok = _all(
        body,
        body.op(
            "Concat",
            body.op("Equal", body.op("Shape", "mask"), codes_shape),
            body.op(
                "Equal",
                _slice(body, logits_shape, 0, 2, axis=0),
                body.op("Gather", codes_shape, body.const([0, 2], np.int64)),
            ),
            body.op(
                "GreaterOrEqual",
                _slice(body, logits_shape, 2, 4, axis=0),
                body.const([1, 1], np.int64),
            ),
            body.op(
                "LessOrEqual",
                _slice(body, logits_shape, 2, 3, axis=0),
                _slice(body, codes_shape, 1, 2, axis=0),
            ),
            axis=0,
        ),
    )
    shapes = body.check(
        shape_ok,
        f"{where}: logits must have shape [B, T, P, V] with B, T of codes [B, C, T] (the shape of "
        "mask), 1 <= P <= C, V >= 1",
        body.op("Concat", codes_shape, logits_shape, axis=0),
    )

    def dim(i: int) -> str:
        return _slice(body, shapes, i, i + 1, axis=0)  # [1]

    batch, codebooks, frames, predicted, vocab = dim(0), dim(1), dim(2), dim(5), dim(6)
    logits = body.op("Cast", "logits", to=_FLOAT)
    conditioning = body.op("Sub", codebooks, predicted)
    positions = body.op("Mul", frames, predicted)  # [1]: T P
    n_rows = body.op("Mul", batch, positions)
    axis1 = body.const([1], np.int64)
    zero1 = body.const([0], np.int64)

    # The cells: the mask must be false in the conditioning codebooks, codes in [0, V) where
    # the mask is false.
    mask_conditioning = body.op("Slice", "mask", zero1, conditioning, axis1)
    mask = body.check_flags(
        _all(body, body.op("Not", mask_conditioning)),
        f"{where}: mask must be false in the conditioning codebooks",
        "mask",
    )
    code_out_of_range = body.op(
        "Or",
        body.op("Less", "codes", body.const(0, np.int64)),
        body.op("GreaterOrEqual", "codes", body.op("Squeeze", vocab)),
    )
    codes = body.check(
        _all(body, body.op("Or", mask, body.op("Not", code_out_of_range))),
        f"{where}: codes must be in [0, V) where mask is false",
        "codes",
    )

    # Flat positions p = t P + c of the predicted codebooks, per item: [B, T P].
    mask_predicted = body.op("Slice", mask, conditioning, codebooks, axis1)  # [B, P, T]
    items_shape = body.op("Concat", batch, positions, axis=0)
    flat_mask = body.op(
        "Reshape", body.op("Transpose", mask_predicted, perm=[0, 2, 1]), items_shape
    )
    n_masked = body.op("ReduceSum", body.op("Cast", flat_mask, to=_INT64), axis1, keepdims=0)

    n0 = body.op(
        "Reshape", "n_masked_start", batch, name=f"{where}: n_masked_start must have shape [B]"
    )
    n0_ok = body.op(
        "And",
        body.op("GreaterOrEqual", n0, body.const(0, np.int64)),
        body.op("LessOrEqual", n0, positions),
    )
    n0 = body.check(
        _all(body, n0_ok),
        f"{where}: n_masked_start must be in [0, T * P]",
        n0,
    )
    coupled = body.op(
        "Not", body.op("Equal", body.attribute("batch_coupled", "int"), body.const(0, np.int64))
    )
    n0 = body.op(
        "Where", coupled, body.op("Expand", body.op("ReduceSum", n0, keepdims=1), batch), n0
    )

    # Keys and streams: item b draws with key seed[b] from stream item batch_offset + b (one
    # batch_offset) or batch_offset[b] (one per item), each in [0, 2^32).
    seeds, _ = _item_values(body, "seed", batch, where, "seed")
    offsets, one_offset = _item_values(body, "batch_offset", batch, where, "batch_offset")
    item_index = body.op(
        "Range", body.const(0, np.int64), body.op("Squeeze", batch), body.const(1, np.int64)
    )
    streams = body.op("Where", one_offset, body.op("Add", offsets, item_index), offsets)
    streams_ok = body.op(
        "And",
        body.op("GreaterOrEqual", streams, body.const(0, np.int64)),
        body.op("Less", streams, body.const(2**32, np.int64)),
    )
    streams = body.check(
        _all(body, streams_ok),
        f"{where}: batch_offset must be in [0, 2^32 - B] (one for the batch) or "
        "[0, 2^32 - 1] (one per item)",
        streams,
    )

    def step_rows(branch: _Body) -> list[str]:
        flat = branch.const([-1], np.int64)
        rows_by_items = branch.op("Reshape", logits, branch.op("Concat", n_rows, vocab, axis=0))
        if branch.portable:
            # Every row b T P + p of the logits [B T P, V] is sampled, and one row of zeros
            # past them (item B, key and stream 0), so that no tensor is empty; only the
            # masked rows' logits are checked and their draws kept. No NonZero: tract cannot
            # size what follows by its count (docs/generation.md, "Step graphs").
            zeros = branch.op(
                "Expand", branch.const(0.0, np.float32), branch.op("Concat", axis1, vocab, axis=0)
            )
            x = branch.op("Concat", rows_by_items, zeros, axis=0)  # [M = B T P + 1, V]
            read = branch.op(
                "Concat",
                branch.op("Reshape", flat_mask, n_rows),
                branch.const([False], np.bool_),
                axis=0,
            )
            rows = branch.op(
                "Range",
                branch.const(0, np.int64),
                branch.op("Squeeze", branch.op("Add", n_rows, axis1)),
                branch.const(1, np.int64),
            )
            item_seeds = branch.op("Concat", seeds, zero1, axis=0)
            item_streams = branch.op("Concat", streams, zero1, axis=0)
        else:
            # Only the masked positions are sampled (and their logits checked): the M rows
            # rows[j] = b T P + p of the logits [B T P, V] where the flat mask is true.
            rows = branch.op(
                "Reshape", branch.op("NonZero", branch.op("Reshape", flat_mask, n_rows)), flat
            )
            x = branch.op("Gather", rows_by_items, rows, axis=0)  # [M, V]
            read, item_seeds, item_streams = None, seeds, streams
        x_max = _checked_max(branch, where, x, read)

        # The stream of row (b, p): counter (p, stream_b, step, 0) under key seed[b]. T P = 0
        # leaves no rows, but onnxruntime refuses an integer division by 0 even then.
        divisor = branch.op("Max", positions, branch.const([1], np.int64))
        item = branch.op("Div", rows, divisor)
        position = branch.op("Mod", rows, divisor)
        row_words = _pair_words(branch, position, branch.op("Gather", item_streams, item, axis=0))
        even, odd = _random_blocks(
            branch, item_seeds, row_words, branch.op("Reshape", step, axis1), item
        )
        uniforms = _uniforms(branch, even, odd)  # [M, 2]
        tokens, p32 = _sample_rows(
            branch, x, x_max, temperature, top_k, top_p, _slice(branch, uniforms, 0, 1, axis=1)
        )
        # The logprob's log and the noise's first, -log(-log u2), in one pass.
        u2 = branch.op("Max", _slice(branch, uniforms, 1, 2, axis=1), branch.real_const(1e-20))
        logs = _log(branch, branch.op("Concat", p32, u2, axis=1))  # [M, 2]
        logprob = branch.op("Cast", _slice(branch, logs, 0, 1, axis=1), to=_FLOAT)
        minus_log_u2 = branch.op("Neg", _slice(branch, logs, 1, 2, axis=1))
        noise = branch.op("Cast", branch.op("Neg", _log(branch, minus_log_u2)), to=_FLOAT)

        k, scale = _mask_git_schedule(branch, step, n_steps, n0, n_masked, mask_temperature)
        confidence = branch.op("Add", logprob, branch.op("Mul", scale, noise))  # [M, 1]

        def scattered(values: str, fill: str) -> str:
            """[M, 1] values of the masked rows -> [B, T P], `fill` (a scalar) elsewhere."""
            if branch.portable:  # every row's value, in order: the first B T P are the items'
                full = branch.op("Slice", values, zero1, n_rows, zero1)
                return branch.op("Where", flat_mask, branch.op("Reshape", full, items_shape), fill)
            background = branch.op("Expand", fill, n_rows)
            indices = branch.op("Unsqueeze", rows, flat)
            full = branch.op("ScatterND", background, indices, branch.op("Reshape", values, flat))
            return branch.op("Reshape", full, items_shape)

        # Masked again: confidence strictly below the k-th smallest (0-based) over the item's
        # positions, unmasked ones counting as +inf; one +inf column more makes index k valid
        # for every k <= T P (and T = 0).
        inf = branch.const(np.inf, np.float32)
        confidence = scattered(confidence, inf)
        padded = branch.op(
            "Concat",
            confidence,
            branch.op("Expand", inf, branch.op("Concat", batch, axis1, axis=0)),
            axis=1,
        )
        index = branch.op(
            "Reshape", branch.op("Min", k, positions), branch.const([-1, 1], np.int64)
        )
        if branch.portable:  # and one +inf row more, so that B = 0 leaves no TopK empty
            width = branch.op("Concat", axis1, branch.op("Add", positions, axis1), axis=0)
            padded = branch.op("Concat", padded, branch.op("Expand", inf, width), axis=0)
            index = branch.op("Concat", index, branch.const([[0]], np.int64), axis=0)
        ascending = branch.op(
            "TopK", padded, branch.op("Add", positions, axis1), axis=1, largest=0, n_outputs=2
        )[0]
        cut = branch.op("GatherElements", ascending, index, axis=1)  # [B (+ 1), 1]
        if branch.portable:
            cut = branch.op("Slice", cut, zero1, batch, zero1)
        mask_again = branch.op("And", flat_mask, branch.op("Less", confidence, cut))

        def to_codebooks(flat_values: str) -> str:
            """[B, T P] -> [B, P, T]."""
            grid3 = branch.op("Concat", batch, frames, predicted, axis=0)
            return branch.op("Transpose", branch.op("Reshape", flat_values, grid3), perm=[0, 2, 1])

        codes_predicted = branch.op("Slice", codes, conditioning, codebooks, axis1)
        sampled = branch.op(
            "Where",
            mask_predicted,
            to_codebooks(scattered(tokens, branch.const(0, np.int64))),
            codes_predicted,
        )
        codes_out = branch.op(
            "Concat", branch.op("Slice", codes, zero1, conditioning, axis1), sampled, axis=1
        )
        # The conditioning codebooks' mask is all false (checked above). Sliced here again:
        # a Slice's output read inside an If makes onnxruntime's EliminateSlice warn.
        unmasked = branch.op("Slice", mask, zero1, conditioning, axis1)
        mask_out = branch.op("Concat", unmasked, to_codebooks(mask_again), axis=1)
        return [codes_out, mask_out]

    # Nothing masked (also B = 0 or T = 0): nothing to sample, the codes stay and the mask,
    # all false, too; and no operator runs on an empty tensor (onnxruntime 1.21's TopK dies
    # with a floating-point exception on one).
    # The portable variant, which never makes an empty tensor, runs the step as it is: tract
    # does not carry the graph's shape symbols into an If's branches.
    codes_out, mask_out = (
        step_rows(body)
        if body.portable
        else body.branch(
            body.op("Greater", body.op("ReduceSum", n_masked, keepdims=0), body.const(0, np.int64)),
            step_rows,
            lambda branch: [codes, mask],
            [(_INT64, 3), (TensorProto.BOOL, 3)],
        )
    )
    body.op("Identity", codes_out, output="codes_out")
    body.op("Identity", mask_out, output="mask_out")
    mask_token = body.op("Squeeze", vocab)
    if portable:  # V as a sum of ones: an int64 tensor where tract would keep its shape type
        # (which its API cannot hand out; it folds a Cast away), not a value read from a shape
        ones = numpy_helper.from_array(np.ones(1, np.int64))
        mask_token = body.op("ReduceSum", body.op("ConstantOfShape", vocab, value=ones), keepdims=0)
    body.op("Where", mask_out, mask_token, codes_out, output="model_input")
    return _function(ops.MASK_GIT_STEP, body)


# --- CheckRange and Snake -----------------------------------------------------------------------


def _check_range(portable: bool) -> onnx.FunctionProto:
    """ok = true when min <= x <= max (NaN fails); else the run fails. The message cannot hold
    the node's own `where`, `name` or value (a node name is fixed text): the failing node says
    which op failed and the range's attributes are on the calling node."""
    body = _Body(portable=portable)
    x = body.scalar("x", "CheckRange", "x")
    if portable:  # the float attributes' own type; a runtime without float64 computes so anyway
        x = body.op("Cast", x, to=_FLOAT)
    low = body.op("Cast", body.attribute("min", "float"), to=body.real)
    high = body.op("Cast", body.attribute("max", "float"), to=body.real)
    ok = body.op("And", body.op("LessOrEqual", low, x), body.op("LessOrEqual", x, high))
    checked = body.check_flags(ok, "CheckRange: x must be in [min, max]", ok)  # [1]
    body.op("Reshape", checked, body.const(np.zeros(0), np.int64), output="ok")
    return _function(ops.CHECK_RANGE, body)


# csrc/kernels/snake.cc's float32 constants: the Cody-Waite parts of pi/2, the minimax
# polynomials of sin and cos on [-pi/4, pi/4], and the rounding shift 1.5 * 2^23.
_SNAKE_FAST_LIMIT = 8192.0
_TWO_OVER_PI = 0.636619772367581
_PI_OVER_2 = (1.5703125, 4.837512969970703125e-4, 7.549789954891882e-8)
_SIN = (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4)
_COS = (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5)
_ROUNDING_SHIFT = 12582912.0


def _snake(portable: bool) -> onnx.FunctionProto:
    """y = x + inverse * sin(alpha x)^2 with the kernel's float32 operations in its order, its
    sine polynomial included, so the bits are the kernel's; where |alpha x| > 8192 (or NaN,
    inf) the kernel calls std::sin and the body the runtime's Sin."""
    body = _Body(portable=portable)

    def f32(value: float) -> str:
        return body.const(value, np.float32)

    def rounded(v: str) -> str:
        shift = f32(_ROUNDING_SHIFT)
        return body.op("Sub", body.op("Add", v, shift), shift)

    def mul(a: str, b: str) -> str:
        return body.op("Mul", a, b)

    def add(a: str, b: str) -> str:
        return body.op("Add", a, b)

    t = mul("alpha", "x")
    j = rounded(mul(t, f32(_TWO_OVER_PI)))
    r = t
    for part in _PI_OVER_2:
        r = body.op("Sub", r, mul(j, f32(part)))
    z = mul(r, r)
    sin_r = add(
        r, mul(mul(r, z), add(f32(_SIN[0]), mul(z, add(f32(_SIN[1]), mul(z, f32(_SIN[2]))))))
    )
    cos_r = add(
        body.op("Sub", f32(1.0), mul(f32(0.5), z)),
        mul(mul(z, z), add(f32(_COS[0]), mul(z, add(f32(_COS[1]), mul(z, f32(_COS[2])))))),
    )
    half = mul(j, f32(0.5))
    odd = body.op("Not", body.op("Equal", half, rounded(half)))
    s = body.op("Where", odd, cos_r, sin_r)
    fast = add("x", mul("inverse", mul(s, s)))
    library_sine = body.op("Sin", t)
    slow = add("x", mul("inverse", mul(library_sine, library_sine)))
    within = body.op("LessOrEqual", body.op("Abs", t), f32(_SNAKE_FAST_LIMIT))
    body.op("Where", within, fast, slow, output="y")
    return _function(ops.SNAKE, body)


# --- the functions ------------------------------------------------------------------------------


def _function(schema: ops.OpSchema, body: _Body) -> onnx.FunctionProto:
    defaults = [
        helper.make_attribute(attribute.name, attribute.default) for attribute in schema.attributes
    ]
    return helper.make_function(
        ops.DOMAIN,
        schema.name,
        schema.input_names,
        schema.output_names,
        body.nodes,
        [helper.make_opsetid("", FUNCTION_OPSET)],
        attribute_protos=defaults,
        doc_string=f"The standard-op body of {ops.DOMAIN}.{schema.name} (docs/ops.md).",
    )


#: The bodies' variants. "exact": the kernels' arithmetic, float64 where they compute in double,
#: exp, log and cos from + - * / (det_math.h), Philox on uint64 words, the rows sampled in a
#: Loop over chunks and what the settings switch off skipped behind If: the kernels' bits
#: on onnxruntime. "portable": float32 throughout, the runtime's Exp, Log and Cos, uniforms of
#: 24 bits, the rounds written out: for runtimes that compute float64 as float32 (OpenVINO's
#: CPU plugin) or have no Loop (tract); the same Philox words, its own agreement (docs/ops.md).
VARIANTS = {
    "exact": "the kernels' bits on onnxruntime (float64, Loop)",
    "portable": "float32, no Loop: OpenVINO, tract and runtimes without float64",
}

_BUILDERS = {
    ops.SAMPLE_TOKENS.name: _sample_tokens,
    ops.MASK_GIT_STEP.name: _mask_git_step,
    ops.CHECK_RANGE.name: _check_range,
    ops.SNAKE.name: _snake,
}


def _portable(variant: str, where: str) -> bool:
    if variant not in VARIANTS:
        raise ValueError(f"{where}: variant must be one of {list(VARIANTS)}, got {variant!r}")
    return variant == "portable"


def function(
    op_type: str, opset: int = FUNCTION_OPSET, variant: str = "exact"
) -> onnx.FunctionProto:
    """The standard-op body of op `op_type` ("SampleTokens", ...) as an ONNX function in domain
    `vampnet_onnx`, version 1, with the schema's inputs, outputs and attributes (ops.py). A node
    must pass every input, the optional ones included: a function body cannot test for an
    omitted input (`attach_functions` fills them in).

    opset: the standard opset the body imports, which must be the model's (onnx's checker
    requires it): >= 18; the bodies use no operator whose meaning changed since 18.
    variant: one of `VARIANTS`."""
    portable = _portable(variant, "function")
    if op_type not in _BUILDERS:
        raise ValueError(f"function: op_type must be one of {sorted(_BUILDERS)}, got {op_type!r}")
    if not FUNCTION_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(
            f"function: opset must be in [{FUNCTION_OPSET}, {onnx.defs.onnx_opset_version()}], "
            f"got {opset}"
        )
    proto = _BUILDERS[op_type](portable)
    proto.opset_import[0].version = opset
    return proto


def _graphs(graph: onnx.GraphProto):
    """`graph` and every subgraph in it (Loop and If bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _graphs(subgraph)


def _fill_defaults(node: onnx.NodeProto, schema: ops.OpSchema, prefix: str) -> list:
    """Nodes computing what the op does for `node`'s omitted optional inputs, which a function
    body cannot detect; the inputs are wired to `node`. prefix: unique in the model, starts
    the new values' names. -> the nodes to insert before it."""
    inputs = list(node.input) + [""] * (len(schema.inputs) - len(node.input))
    added = []

    def const(name: str, value: int) -> str:
        tensor = numpy_helper.from_array(np.asarray(value, np.int64))
        added.append(helper.make_node("Constant", [], [name], value=tensor))
        return name

    for i, port in enumerate(schema.inputs):
        if inputs[i] or not port.optional:
            continue
        name = f"{prefix}_{port.name}"
        if port.name in ("first_row", "batch_offset"):
            inputs[i] = const(name, 0)
        else:  # n_masked_start: the masked positions of the predicted codebooks, per item
            logits, mask = inputs[0], inputs[2]
            added += [
                helper.make_node("Shape", [logits], [f"{name}_p"], start=2, end=3),
                helper.make_node("Neg", [f"{name}_p"], [f"{name}_start"]),
                helper.make_node(
                    "Slice",
                    [mask, f"{name}_start", const(f"{name}_end", [2**62]), const(f"{name}_1", [1])],
                    [f"{name}_predicted"],
                ),
                helper.make_node("Cast", [f"{name}_predicted"], [f"{name}_int"], to=_INT64),
                helper.make_node(
                    "ReduceSum", [f"{name}_int", const(f"{name}_axes", [1, 2])], [name], keepdims=0
                ),
            ]
            inputs[i] = name
    node.ClearField("input")
    node.input.extend(inputs)
    return added


def attach_functions(model: onnx.ModelProto, variant: str = "exact") -> onnx.ModelProto:
    """A copy of `model` carrying the standard-op bodies of the vampnet_onnx ops it uses (in
    its graph or in Loop / If bodies), and only those, so that it also runs where the library
    cannot be registered. A node that leaves optional inputs out gets them computed beside it,
    as the op would (0 for first_row and batch_offset, the mask's count for n_masked_start):
    a body needs every input. Functions of these ops already in the model are replaced.
    variant: one of `VARIANTS`."""
    _portable(variant, "attach_functions")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < FUNCTION_OPSET:
        raise ValueError(
            f"attach_functions: model must import the standard opset >= {FUNCTION_OPSET}, "
            f"got {opset or 'none'}"
        )
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # no serialization: a model may be close to protobuf's 2 GB
    model = copy
    schemas = {schema.name: schema for schema in ops.SCHEMAS}
    used = set()
    count = itertools.count()
    for graph in _graphs(model.graph):
        nodes = []
        for node in graph.node:
            if node.domain == ops.DOMAIN and node.op_type in schemas:
                used.add(node.op_type)
                prefix = f"vampnet_onnx_default_{next(count)}"
                nodes += _fill_defaults(node, schemas[node.op_type], prefix)
            nodes.append(node)
        graph.ClearField("node")
        graph.node.extend(nodes)
    kept = [f for f in model.functions if not (f.domain == ops.DOMAIN and f.name in used)]
    model.ClearField("functions")
    model.functions.extend(kept + [function(name, opset, variant) for name in sorted(used)])
    # Model-local functions with attribute defaults need IR version 9 (onnx 1.14).
    model.ir_version = max(model.ir_version, 9)
    return model


def inline_functions(model: onnx.ModelProto, variant: str = "exact") -> onnx.ModelProto:
    """A copy of `model` with the standard-op bodies of the vampnet_onnx ops it uses inlined
    (`attach_functions`, then onnx's inliner): every op node, in Loop and If bodies too, is
    replaced by its body's nodes, so that no node of the domain is left and neither are the
    functions, nor the domain's opset import. For runtimes that do not expand model-local
    functions; onnxruntime runs the standard ops even with the library registered.
    variant: one of `VARIANTS`."""
    import onnx.inliner

    attached = attach_functions(model, variant)
    ids = [(ops.DOMAIN, schema.name) for schema in ops.SCHEMAS]
    inlined = onnx.inliner.inline_selected_functions(attached, ids)
    kept = [o for o in inlined.opset_import if o.domain != ops.DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    return inlined


#: The suffixes onnx's inliner appends to the node names of an inlined body ("__1", ...).
_INLINED_SUFFIX = re.compile(r"(__\d+)+$")


def checks_as_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of `model` whose inlined input checks (`_Body.passed`: a Reshape of the bool
    `ok` to a shape chosen by a Where on `ok` itself) no longer fail the run but hand `ok`
    out as an extra graph output, for runtimes that must know every shape before the run
    (tract): the caller fails the run where one is false. Only checks of the main graph.
    -> (the copy, {extra output name: the check's message})."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    made_by = {output: node for node in graph.node for output in node.output}
    one = "vampnet_onnx_check_shape"
    checks = {}
    for node in graph.node:
        target = made_by.get(node.input[1]) if node.op_type == "Reshape" else None
        if target is None or target.op_type != "Where" or target.input[0] != node.input[0]:
            continue
        output = f"vampnet_onnx_check_{len(checks)}"
        checks[output] = _INLINED_SUFFIX.sub("", node.name)
        node.input[1] = one
        graph.node.append(helper.make_node("Identity", [node.input[0]], [output]))
        graph.output.append(helper.make_tensor_value_info(output, TensorProto.BOOL, []))
    if checks:
        graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), one))
    return copy, checks
