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

# VampNet's defaults (SPEC.md §3.1, §4.7).
MASK_TOKEN = 1024
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MASK_TEMPERATURE = 10.5
DEFAULT_TOP_K = 0
DEFAULT_TOP_P = 1.0


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


_FLOAT = (TensorProto.FLOAT,)
_INT64 = (TensorProto.INT64,)
_LOGITS_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)

_SAMPLING_INPUTS = (
    Port("temperature", _FLOAT, "scalar >= 0; 0 is an exact argmax (ties: lowest index)"),
    Port("top_k", _INT64, "scalar >= 0; 0 or >= V: off"),
    Port("top_p", _FLOAT, "scalar in (0, 1]; 1: off"),
)

SAMPLE_TOKENS = OpSchema(
    name="SampleTokens",
    inputs=(
        Port("logits", _LOGITS_TYPES, "[..., V] unnormalised log-probabilities"),
        *_SAMPLING_INPUTS,
        Port("seed", _INT64, "scalar, the random stream's key"),
        Port("offset", _INT64, "scalar stream counter, e.g. the step index"),
        Port("first_row", _INT64, "scalar, flat index of this call's first row (default 0)", True),
    ),
    outputs=(
        Port("tokens", _INT64, "[...] sampled token per row"),
        Port(
            "logprob",
            _FLOAT,
            "[...] log-probability of the token under the filtered, "
            "temperature-scaled distribution (temperature 0: as at temperature 1)",
        ),
    ),
)

MASK_GIT_STEP = OpSchema(
    name="MaskGitStep",
    inputs=(
        Port("logits", _LOGITS_TYPES, "[B, T, P, V] for the P predicted codebooks"),
        Port("codes", _INT64, "[B, C, T] current codes; values at masked positions are ignored"),
        Port("mask", (TensorProto.BOOL,), "[B, C, T] true = still to generate"),
        Port("step", _INT64, "scalar in [0, n_steps)"),
        Port("n_steps", _INT64, "scalar >= 1"),
        *_SAMPLING_INPUTS,
        Port("mask_temperature", _FLOAT, "scalar >= 0, Gumbel noise scale (annealed)"),
        Port("seed", _INT64, "scalar, the random stream's key"),
        Port(
            "n_masked_start",
            _INT64,
            "[B] masked positions per item before step 0 "
            "(default: counted from mask, right at step 0)",
            True,
        ),
        Port(
            "batch_offset",
            _INT64,
            "scalar in [0, 2^32 - B], stream index of item 0 (default 0): item b draws the "
            "random streams of item batch_offset + b",
            True,
        ),
    ),
    outputs=(
        Port("codes_out", _INT64, "[B, C, T] sampled tokens written at masked positions"),
        Port("mask_out", (TensorProto.BOOL,), "[B, C, T] positions to generate next step"),
        Port("model_input", _INT64, "[B, C, T] codes_out with MASK (= V) where mask_out"),
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

SCHEMAS = (SAMPLE_TOKENS, MASK_GIT_STEP, CHECK_RANGE)

# --- graph contracts (not ops): the exported graphs' inputs and outputs --------------------

# Metadata keys: the transformer's config JSON (written by export.transformer), the
# generation graph's settings (export.generation) and the codec graphs' config (export.codec).
CONFIG_KEY = "vampnet_onnx.config"
GENERATION_KEY = "vampnet_onnx.generation"
CODEC_CONFIG_KEY = "vampnet_onnx.codec_config"

TRANSFORMER = OpSchema(
    name="Transformer",
    inputs=(Port("codes", _INT64, "[B, C, T] codes with MASK where to generate"),),
    outputs=(Port("logits", _FLOAT, "[B, T, P, V] for the P predicted codebooks"),),
)

# VampNet's generate defaults (SPEC.md §3.1, §4.7: the app runs 36 coarse steps).
GENERATION_DEFAULTS = {
    "n_steps": 36,
    "temperature": DEFAULT_TEMPERATURE,
    "top_k": DEFAULT_TOP_K,
    "top_p": DEFAULT_TOP_P,
    "mask_temperature": DEFAULT_MASK_TEMPERATURE,
    "seed": 0,
    "batch_offset": 0,
}

GENERATION = OpSchema(
    name="Generation",
    inputs=(
        Port("codes", _INT64, "[B, C, T] prompt codes; values at masked positions are ignored"),
        Port(
            "mask",
            (TensorProto.BOOL,),
            "[B, C, T] true = generate; false in conditioning codebooks",
        ),
        Port("n_steps", _INT64, "scalar >= 1, iterations of the loop (VampNet: 36 coarse)"),
        *_SAMPLING_INPUTS,
        Port("mask_temperature", _FLOAT, "scalar >= 0 (VampNet: 10.5)"),
        Port("seed", _INT64, "scalar, the random stream's key"),
        Port(
            "batch_offset",
            _INT64,
            "scalar in [0, 2^32 - B], stream index of item 0 (0 unless the batch continues "
            "another call's, as a chunk of a longer piece does)",
        ),
    ),
    outputs=(
        Port("codes_out", _INT64, "[B, C, T] every position filled"),
        Port(
            "codes_per_step", _INT64, "[S, B, C, T] codes after each step (trace export only)", True
        ),
        Port(
            "mask_per_step",
            (TensorProto.BOOL,),
            "[S, B, C, T] mask after each step (trace export only)",
            True,
        ),
    ),
)


# The single-graph vamp (export.vamp): VampNet's app defaults for the mask (SPEC.md §4.7).
VAMP_KEY = "vampnet_onnx.vamp"
VAMP_DEFAULTS = {
    "seed": 0,
    "n_steps": 36,
    "temperature": DEFAULT_TEMPERATURE,
    "top_k": DEFAULT_TOP_K,
    "top_p": DEFAULT_TOP_P,
    "mask_temperature": DEFAULT_MASK_TEMPERATURE,
    "periodic_prompt": 7,
    "periodic_width": 1,
    "upper_codebook_mask": 3,
    "prefix_s": 0.0,
    "suffix_s": 0.0,
    "dropout": 0.0,
}
#: Allowed ranges of the single graph's mask settings (checked in the graph by CheckRange and by
#: `pipeline.Vamp`): a period or width past the bound would only ask for absurd draws or casts.
VAMP_LIMITS = {
    "periodic_prompt": (0, 1_000_000),
    "periodic_width": (0, 1_000_000),
    "upper_codebook_mask": (0, 1_000_000),
    "prefix_s": (0.0, 1e7),
    "suffix_s": (0.0, 1e7),
    "dropout": (0.0, 1.0),
}
VAMP = OpSchema(
    name="Vamp",
    inputs=(
        Port(
            "audio",
            _FLOAT,
            "[N] mono samples at the codec's rate (44.1 kHz), N >= 1, loudness-normalised as "
            "vampnet_onnx.audio.preprocess does",
        ),
        Port("seed", _INT64, "scalar, the key of every random draw"),
        Port("n_steps", _INT64, "scalar >= 1, coarse generation steps (VampNet: 36)"),
        *_SAMPLING_INPUTS,
        Port("mask_temperature", _FLOAT, "scalar >= 0, the coarse stage's (VampNet: 10.5)"),
        Port("periodic_prompt", _INT64, "scalar >= 0, keep every n-th frame (0: off)"),
        Port("periodic_width", _INT64, "scalar >= 0, frames kept per period (2 * (w // 2) + 1)"),
        Port("upper_codebook_mask", _INT64, "scalar >= 0, codebooks >= it are all generated"),
        Port("prefix_s", _FLOAT, "scalar >= 0, seconds kept at the start"),
        Port("suffix_s", _FLOAT, "scalar >= 0, seconds kept at the end"),
        Port("dropout", _FLOAT, "scalar in [0, 1], share of frames dropped from the prompt"),
    ),
    outputs=(
        Port("audio_out", _FLOAT, "[N] the vamped audio, same length and rate as audio"),
        Port("codes", _INT64, "[1, 14, T] the encoder's codes, T = ceil(N / hop)"),
        Port(
            "mask", (TensorProto.BOOL,), "[1, 14, T] the mask built in the graph, true = generated"
        ),
        Port("codes_out", _INT64, "[1, 14, T] the generated codes that were decoded"),
    ),
)


def opset_import() -> onnx.OperatorSetIdProto:
    """The opset import a model using these ops needs."""
    return helper.make_opsetid(DOMAIN, VERSION)
