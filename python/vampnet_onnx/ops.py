"""The op schemas: domain, names, inputs, outputs and attributes of the custom ops.

Defined once here and used by the graph builders, the Python fallback, the docs and the tests.
The C++ side (csrc/ops/) implements exactly these signatures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

DOMAIN = "vampnet_onnx"
VERSION = 1

#: VampNet's MASK token id: the vocabulary size, 1024 (docs/model.md §2.1).
MASK_TOKEN = 1024


@dataclass(frozen=True)
class Port:
    """One input or output: its name, ONNX element type(s) and whether it may be omitted."""

    name: str
    types: tuple[int, ...]
    doc: str
    optional: bool = False


@dataclass(frozen=True)
class Attribute:
    name: str
    type: int  # onnx.AttributeProto.AttributeType
    default: object
    doc: str


@dataclass(frozen=True)
class OpSchema:
    name: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    attributes: tuple[Attribute, ...] = ()

    @property
    def input_names(self) -> list[str]:
        return [port.name for port in self.inputs]

    @property
    def required_input_names(self) -> list[str]:
        return [port.name for port in self.inputs if not port.optional]

    @property
    def output_names(self) -> list[str]:
        return [port.name for port in self.outputs]

    def port(self, name: str) -> Port:
        for port in self.inputs + self.outputs:
            if port.name == name:
                return port
        raise KeyError(
            f"{self.name}: port must be one of {self.input_names + self.output_names}, got {name!r}"
        )

    def feed(self, **values) -> dict[str, np.ndarray]:
        """Inputs as arrays of the schema's (first) type: scalars become rank-0 arrays."""
        return {
            name: np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(self.port(name).types[0]))
            for name, value in values.items()
        }

    def make_node(
        self, inputs: list[str], outputs: list[str], node_name: str | None = None, **attributes
    ) -> onnx.NodeProto:
        """An ONNX node of this op; `inputs` may leave trailing optional inputs out."""
        required = sum(not port.optional for port in self.inputs)
        if not required <= len(inputs) <= len(self.inputs):
            raise ValueError(
                f"{self.name}: inputs must have {required} to {len(self.inputs)} names, "
                f"got {len(inputs)}"
            )
        if len(outputs) != len(self.outputs):
            raise ValueError(
                f"{self.name}: outputs must have {len(self.outputs)} names, got {len(outputs)}"
            )
        known = {attribute.name for attribute in self.attributes}
        for key in attributes:
            if key not in known:
                raise ValueError(
                    f"{self.name}: attribute must be one of {sorted(known)}, got {key!r}"
                )
        node = helper.make_node(
            self.name, inputs, outputs, name=node_name or self.name, domain=DOMAIN
        )
        # Added one by one: an attribute may be called "name" (CheckRange).
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attributes.items())
        return node


FLOAT = (TensorProto.FLOAT,)
INT64 = (TensorProto.INT64,)
_LOGITS_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)

SAMPLING_INPUTS = (
    Port("temperature", FLOAT, "scalar >= 0; 0 is an exact argmax (ties: lowest index)"),
    Port("top_k", INT64, "scalar >= 0; 0 or >= V: off"),
    Port("top_p", FLOAT, "scalar in (0, 1]; 1: off"),
)

SAMPLE_TOKENS = OpSchema(
    name="SampleTokens",
    inputs=(
        Port("logits", _LOGITS_TYPES, "[..., V] unnormalised log-probabilities"),
        *SAMPLING_INPUTS,
        Port("seed", INT64, "scalar, the random stream's key"),
        Port("offset", INT64, "scalar stream counter, e.g. the step index"),
        Port("first_row", INT64, "scalar, flat index of this call's first row (default 0)", True),
    ),
    outputs=(
        Port("tokens", INT64, "[...] sampled token per row"),
        Port(
            "logprob",
            FLOAT,
            "[...] log-probability of the token under the filtered, "
            "temperature-scaled distribution (temperature 0: as at temperature 1)",
        ),
    ),
)

MASK_GIT_STEP = OpSchema(
    name="MaskGitStep",
    inputs=(
        Port("logits", _LOGITS_TYPES, "[B, T, P, V] for the P predicted codebooks"),
        Port("codes", INT64, "[B, C, T] current codes; values at masked positions are ignored"),
        Port("mask", (TensorProto.BOOL,), "[B, C, T] true = still to generate"),
        Port("step", INT64, "scalar in [0, n_steps)"),
        Port("n_steps", INT64, "scalar >= 1"),
        *SAMPLING_INPUTS,
        Port("mask_temperature", FLOAT, "scalar >= 0, Gumbel noise scale (annealed)"),
        Port(
            "seed",
            INT64,
            "scalar, the random stream's key; or [B], item b's key",
        ),
        Port(
            "n_masked_start",
            INT64,
            "[B] masked positions per item before step 0 "
            "(default: counted from mask, right at step 0)",
            True,
        ),
        Port(
            "batch_offset",
            INT64,
            "scalar in [0, 2^32 - B], stream index of item 0 (default 0): item b draws the "
            "random streams of item batch_offset + b; or [B], each in [0, 2^32 - 1]: item b "
            "draws those of item batch_offset[b]",
            True,
        ),
    ),
    outputs=(
        Port("codes_out", INT64, "[B, C, T] sampled tokens written at masked positions"),
        Port("mask_out", (TensorProto.BOOL,), "[B, C, T] positions to generate next step"),
        Port("model_input", INT64, "[B, C, T] codes_out with MASK (= V) where mask_out"),
    ),
    attributes=(
        Attribute(
            "batch_coupled",
            onnx.AttributeProto.INT,
            0,
            "1: count N0 over the whole batch as upstream VampNet does",
        ),
    ),
)

CHECK_RANGE = OpSchema(
    name="CheckRange",
    inputs=(Port("x", (TensorProto.DOUBLE,), "scalar to check (cast to float64 first)"),),
    outputs=(
        Port(
            "ok",
            (TensorProto.BOOL,),
            "scalar true; the op fails instead of returning false. Where(ok, v, 0) makes v's "
            "consumers wait for the check",
        ),
    ),
    attributes=(
        Attribute("name", onnx.AttributeProto.STRING, "x", "the checked input's name"),
        Attribute("where", onnx.AttributeProto.STRING, "Vamp", "who checks, first in the message"),
        Attribute("min", onnx.AttributeProto.FLOAT, 0.0, "smallest allowed value"),
        Attribute("max", onnx.AttributeProto.FLOAT, 0.0, "largest allowed value"),
    ),
)

SNAKE = OpSchema(
    name="Snake",
    inputs=(
        Port("x", FLOAT, "[B, C, T] activations"),
        Port("alpha", FLOAT, "[1, C, 1] the channels' frequencies"),
        Port("inverse", FLOAT, "[1, C, 1] 1 / (alpha + 1e-9), as the codec computes it"),
    ),
    outputs=(Port("y", FLOAT, "[B, C, T] x + inverse * sin(alpha * x)^2"),),
)

SCHEMAS = (SAMPLE_TOKENS, MASK_GIT_STEP, CHECK_RANGE, SNAKE)


def opset_import() -> onnx.OperatorSetIdProto:
    """The opset import a model using these ops needs."""
    return helper.make_opsetid(DOMAIN, VERSION)
