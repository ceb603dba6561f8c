"""The contracts of the exported graphs: their inputs and outputs, the metadata they carry, the
file names of an export folder, VampNet's chunking, and the layout of the random streams.

Both sides import this module and nothing of each other: the exporter (`vampnet_onnx.export`)
writes graphs that keep these contracts, the runtime (`generator`, `codec`, `beats`,
`pipeline`) reads them. The op schemas themselves are in `ops`; the settings' defaults and
limits in `settings`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from .ops import FLOAT, INT64, SAMPLING_INPUTS, OpSchema, Port
from .settings import SEED_DEFAULT, MaskSettings, SamplingSettings

# --- metadata -------------------------------------------------------------------------------

#: The transformer's config JSON (export.transformer; copied into the generation graphs).
CONFIG_KEY = "vampnet_onnx.config"
#: The generation graph's export settings (export.generation).
GENERATION_KEY = "vampnet_onnx.generation"
#: The codec graphs' config (export.codec; copied into vamp.onnx).
CODEC_CONFIG_KEY = "vampnet_onnx.codec_config"
#: The single graph's settings (export.vamp).
VAMP_KEY = "vampnet_onnx.vamp"
#: The weights' license, on every graph exported from weights that carry one (hub.py).
LICENSE_KEY = "vampnet_onnx.license"
#: Where the weights came from, e.g. ``hf://REPO@COMMIT`` (hub.py).
SOURCE_KEY = "vampnet_onnx.source"
#: The WaveBeat graph's config: rates and architecture (export.wavebeat).
WAVEBEAT_CONFIG_KEY = "vampnet_onnx.wavebeat_config"
#: On a graph exported with the standard-op bodies of the vampnet_onnx ops it uses
#: (`ops_functions`; ``export``'s default), which also runs where the op library cannot load:
#: `OP_BODIES_FUNCTIONS` (model-local functions beside the op nodes) or `OP_BODIES_INLINED`
#: (``export --inline-op-bodies``: the bodies in place of the op nodes). Absent: the graph's
#: op nodes need the library (``export --no-op-bodies``, or an export before the bodies).
OP_BODIES_KEY = "vampnet_onnx.op_bodies"
OP_BODIES_FUNCTIONS = "1"
OP_BODIES_INLINED = "inlined"
#: Beside `OP_BODIES_KEY`: which variant of the bodies the graph carries,
#: `ops_functions.VARIANTS` ("exact", or "portable": ``export --op-bodies-variant portable``).
OP_BODIES_VARIANT_KEY = "vampnet_onnx.op_bodies_variant"


def metadata(
    props: Mapping[str, str], key: str, where: str, name: str, source: str
) -> dict[str, Any]:
    """The JSON dict a vampnet_onnx export stores under `key` in a graph's metadata `props`
    (an onnx/onnx-ir model's metadata_props or an onnxruntime session's custom metadata map),
    or ValueError "<where>: <name> must be a vampnet_onnx export, which must have metadata
    <key>, got none in <source>"."""
    if key not in props:
        raise ValueError(
            f"{where}: {name} must be a vampnet_onnx export, which must have metadata {key}, "
            f"got none in {source}"
        )
    return json.loads(props[key])


def read_metadata(path: str | Path, key: str, where: str) -> dict[str, Any]:
    """`metadata` of the graph file `path`, read without loading its weights; a missing,
    truncated or foreign file is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: path must be an existing .onnx file, got '{path}'")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as err:
        raise ValueError(
            f"{where}: path must be an ONNX graph file, got '{path}', which is not one or is "
            f"truncated ({err})"
        ) from err
    props = {p.key: p.value for p in model.metadata_props}
    return metadata(props, key, where, "path", f"'{path}'")


# --- file names of an export folder ---------------------------------------------------------

ENCODE_FILE = "codec.encode.onnx"
DECODE_FILE = "codec.decode.onnx"
#: The transformers and their generation graphs, by model kind.
TRANSFORMER_FILES = {"coarse": "coarse.onnx", "c2f": "c2f.onnx"}
GENERATION_FILES = {"coarse": "coarse.generate.onnx", "c2f": "c2f.generate.onnx"}
#: The step graphs (``export --step-graphs``): one iteration of the generation graph's loop,
#: for runtimes without ONNX's `Loop` (tract), which run it from a host loop
#: (`generator.Generator`).
STEP_FILES = {"coarse": "coarse.step.onnx", "c2f": "c2f.step.onnx"}
VAMP_FILE = "vamp.onnx"
#: The fp32 codec graphs for CPU sessions (`export.precision.write_cpu_codec`): each Snake
#: activation one op library `Snake` node instead of five standard ones, the weights read from
#: the fp32 graph's own data file. `codec.Codec` runs them on the CPU where they exist; CUDA
#: sessions keep the standard graphs (Snake has no CUDA kernel).
CPU_CODEC_FILES = {ENCODE_FILE: "codec.encode.cpu.onnx", DECODE_FILE: "codec.decode.cpu.onnx"}
#: Where the graphs run (`runtime.device_providers`): here, so that the CLI parses without
#: onnxruntime installed.
DEVICES = ("cpu", "cuda")
#: The precisions `vampnet-onnx export --precision` writes (export.precision); here, not
#: there, so that the CLI's parser needs neither torch nor onnx-ir.
PRECISIONS = ("fp32", "int8", "fp16")
DEFAULT_PRECISION = "fp32"
#: The beat tracker `pipeline.Vamp` opens for a beat mask (optional in a models folder).
WAVEBEAT_FILE = "wavebeat.onnx"
#: The graphs `pipeline.Vamp` reads from a models folder, in pipeline order.
MODEL_FILES = (ENCODE_FILE, GENERATION_FILES["coarse"], GENERATION_FILES["c2f"], DECODE_FILE)
#: The graphs the single graph is built from (`export.vamp`).
SOURCE_FILES = (ENCODE_FILE, TRANSFORMER_FILES["coarse"], TRANSFORMER_FILES["c2f"], DECODE_FILE)

# --- an output folder of many vamps (vamp IN... --out-dir DIR, `folder`) -------------------

#: The failures report: JSON ``{"format": FAILURES_FORMAT, "failed": [{"input", "output",
#: "reason"}, ...]}``, one entry per input that wrote nothing in the folder's last run, with
#: its one-line reason; written whole at the end of a run with failures, removed at the end
#: of a run without.
FAILURES_FILE = "failures.json"
FAILURES_FORMAT = "vampnet-onnx failures 1"
#: The manifest: JSON ``{"format": MANIFEST_FORMAT, "settings": {...}, "models": {file name:
#: sha256}}``, what every output in the folder was made with: the vamp settings (the seed and
#: `keep_rate` among them; a given mask by its sha256) and each graph file of the models. Written
#: before the first output; a rerun with other settings or models is refused (or redoes all).
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "vampnet-onnx manifest 1"


def require_files(folder: str | Path, names: Sequence[str], what: str) -> Path:
    """`folder` as a Path, or FileNotFoundError "<what> must be a folder with <names>
    (vampnet-onnx export), got '<folder>' without <the missing ones>"."""
    folder = Path(folder)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what} must be a folder with {', '.join(names)} (vampnet-onnx export), got "
            f"'{folder}' without {', '.join(missing)}"
        )
    return folder


def check_models_match(
    codec: Mapping[str, Any],
    coarse: Mapping[str, Any],
    c2f: Mapping[str, Any],
    files: Mapping[str, str],
    where: str,
) -> None:
    """That a codec config (`CODEC_CONFIG_KEY`) and the coarse and c2f transformer configs
    (`CONFIG_KEY`) come from one export: the model kinds, the codebook layout, the token
    vocabulary, the audio framing and the codec checkpoint the transformers embed. Else a
    ValueError naming the two `files` (keys "codec", "coarse", "c2f") that disagree.

    Raises ValueError "<where>: <file> and <file> must come from one export, got <field> <a>
    in <file> and <b> in <file>".
    """
    checks = [
        ("coarse", "kind", "coarse", "kind", "coarse"),
        ("c2f", "kind", "c2f", "kind", "c2f"),
        ("c2f", "n_codebooks", "codec", "n_codebooks", None),
        ("c2f", "n_conditioning_codebooks", "coarse", "n_codebooks", None),
    ]
    for model in ("coarse", "c2f"):
        checks += [
            (model, "vocab_size", "codec", "codebook_size", None),
            (model, "latent_dim", "codec", "codebook_dim", None),
            (model, "sample_rate", "codec", "sample_rate", None),
            (model, "hop_length", "codec", "hop_length", None),
            (model, "codec_sha256", "codec", "checkpoint_sha256", None),
        ]
    configs = {"codec": codec, "coarse": coarse, "c2f": c2f}
    for name, field, other, other_field, fixed in checks:
        got = configs[name].get(field)
        want = fixed if fixed is not None else configs[other].get(other_field)
        if got == want:
            continue
        if fixed is not None:
            raise ValueError(
                f"{where}: {files[name]} must hold a {field} {fixed!r} model, got {got!r}"
            )
        raise ValueError(
            f"{where}: {files[name]} and {files[other]} must come from one export, got "
            f"{field} {got!r} in {files[name]} and {other_field} {want!r} in {files[other]} "
            "(export them again together: vampnet-onnx export)"
        )


# --- VampNet's chunking (docs/model.md §4.3, §4.4) -------------------------------------------

#: Chunk lengths in seconds (``chunk_size_s`` of the coarse and c2f models).
COARSE_CHUNK_S = 10.0
C2F_CHUNK_S = 3.0
#: Upstream's c2f call from ``vamp`` ignores the user's sampling settings: 2 steps, the rest at
#: the defaults.
C2F_SAMPLING = SamplingSettings(n_steps=2)
C2F_STEPS = C2F_SAMPLING.n_steps

# --- random streams (docs/ops.md, docs/generation.md) ---------------------------------------
# One seed keys every draw of a vamp; each draw has its own place in the ops' counter-based
# streams, so the single graph can reproduce the multi-graph pipeline exactly.

#: Coarse chunk i draws stream item i (MaskGitStep's batch_offset); so does coarse window i of
#: a vamp with context (`longform.context_windows`).
COARSE_STREAM_BASE = 0
#: Coarse-to-fine chunk i draws stream item C2F_STREAM_BASE + i.
C2F_STREAM_BASE = 2**30
#: A continuation's coarse window k (`longform.windows`) draws stream item
#: EXTEND_STREAM_BASE + k: apart from a vamp's coarse chunks (no input has 2**29 of them) and
#: from the coarse-to-fine chunks, which a continuation draws as a vamp does.
EXTEND_STREAM_BASE = 2**29
#: The mask's draws: SampleTokens rows ``(MASK_STREAM_ITEM << 32) + j``, apart from every
#: generation stream (items below 2**31 - 1).
MASK_STREAM_ITEM = 2**31 - 1
#: The stream offset of each random draw of the mask.
STREAM_SITES = {"roll": 0, "dropout": 1}

# --- graph inputs and outputs ---------------------------------------------------------------

TRANSFORMER = OpSchema(
    name="Transformer",
    inputs=(Port("codes", INT64, "[B, C, T] codes with MASK where to generate"),),
    outputs=(Port("logits", FLOAT, "[B, T, P, V] for the P predicted codebooks"),),
)

CODEC_ENCODE = OpSchema(
    name="CodecEncode",
    inputs=(Port("audio", FLOAT, "[B, 1, N] samples at the codec's rate, any N >= 1"),),
    outputs=(Port("codes", INT64, "[B, n_codebooks, ceil(N / hop)]"),),
)
CODEC_DECODE = OpSchema(
    name="CodecDecode",
    inputs=(
        Port("codes", INT64, "[B, n_codebooks, T], each in [0, codebook_size)"),
        Port("length", INT64, "scalar, samples to keep, in [0, T * hop]"),
    ),
    outputs=(Port("audio", FLOAT, "[B, 1, length]"),),
)

WAVEBEAT = OpSchema(
    name="WaveBeat",
    inputs=(
        Port(
            "audio",
            FLOAT,
            "[B, 1, N] samples at the config's audio_sample_rate (22.05 kHz), N >= 1, divided "
            "by their peak as WaveBeat's own preprocessing does",
        ),
    ),
    outputs=(
        Port(
            "activations",
            FLOAT,
            "[B, 2, ceil(N / downsampling)] beat and downbeat probabilities (sigmoid), one "
            "frame per 1 / target_sample_rate seconds",
        ),
    ),
)

#: The values `Generator.generate` takes for the generation graph's inputs a caller leaves out,
#: recorded in the graph's metadata: VampNet's (docs/model.md §3.1; the app runs 36 coarse
#: steps), batch_offset 0. The graph itself requires
#: each of them (docs/generation.md); only the slice inputs (first_step, last_step,
#: n_masked_start) have defaults in the graph (`SLICE_DEFAULTS`): callers that run every step at
#: once leave them out.
GENERATION_DEFAULTS = {**SamplingSettings().inputs(), "seed": SEED_DEFAULT, "batch_offset": 0}

#: Defaults of the generation graph's slice inputs, stored as overridable initializers.
SLICE_DEFAULTS = {"first_step": 0, "last_step": -1, "n_masked_start": [-1]}

GENERATION = OpSchema(
    name="Generation",
    inputs=(
        Port("codes", INT64, "[B, C, T] prompt codes; values at masked positions are ignored"),
        Port(
            "mask",
            (TensorProto.BOOL,),
            "[B, C, T] true = generate; false in conditioning codebooks",
        ),
        Port("n_steps", INT64, "scalar >= 1, iterations of the loop (VampNet: 36 coarse)"),
        *SAMPLING_INPUTS,
        Port("mask_temperature", FLOAT, "scalar >= 0 (VampNet: 10.5)"),
        Port(
            "seed",
            INT64,
            "scalar, the random stream's key; or [B], one key per item (declared rank 0)",
        ),
        Port(
            "batch_offset",
            INT64,
            "scalar in [0, 2^32 - B], stream index of item 0 (0 unless the batch continues "
            "another call's, as a chunk of a longer piece does); or [B], each item's own "
            "stream index in [0, 2^32 - 1] (declared rank 0)",
        ),
        Port(
            "first_step",
            INT64,
            "scalar, the first step this run makes (default 0); with last_step and "
            "n_masked_start it runs a slice of the steps, continuing from the codes and mask "
            "a previous slice returned",
            True,
        ),
        Port("last_step", INT64, "scalar, one past the last step (default -1: n_steps)", True),
        Port(
            "n_masked_start",
            INT64,
            "[B] masked positions per item before step 0, for a slice that does not start at "
            "step 0 (default [-1]: counted from mask)",
            True,
        ),
    ),
    outputs=(
        Port("codes_out", INT64, "[B, C, T] every position filled (after last_step)"),
        Port("mask_out", (TensorProto.BOOL,), "[B, C, T] still to generate after last_step"),
        Port(
            "codes_per_step", INT64, "[S, B, C, T] codes after each step (trace export only)", True
        ),
        Port(
            "mask_per_step",
            (TensorProto.BOOL,),
            "[S, B, C, T] mask after each step (trace export only)",
            True,
        ),
    ),
)

#: One step of the generation graph's loop as a graph of its own (`STEP_FILES`): the
#: transformer on the codes with MASK where masked, then `MaskGitStep`. Run for step = 0 ..
#: n_steps - 1, each run continuing from the codes and mask the last returned, it gives the
#: generation graph's codes for the same inputs.
GENERATION_STEP = OpSchema(
    name="GenerationStep",
    inputs=(
        GENERATION.port("codes"),
        Port("mask", (TensorProto.BOOL,), "[B, C, T] true = still to generate"),
        Port("step", INT64, "scalar in [0, n_steps), the step this run makes"),
        *(
            GENERATION.port(name)
            for name in (
                "n_steps",
                "temperature",
                "top_k",
                "top_p",
                "mask_temperature",
                "seed",
                "batch_offset",
            )
        ),
        Port(
            "n_masked_start",
            INT64,
            "[B] masked positions per item before step 0 (the step-0 mask's count, kept for "
            "every step: the schedule's N0)",
        ),
    ),
    outputs=(
        Port("codes_out", INT64, "[B, C, T] the codes after this step"),
        Port("mask_out", (TensorProto.BOOL,), "[B, C, T] still to generate after this step"),
    ),
)

_VAMP_MASK_SETTINGS = MaskSettings().graph_inputs()
#: The single graph's defaults: VampNet's app defaults (docs/model.md §4.7).
VAMP_DEFAULTS = {"seed": SEED_DEFAULT, **SamplingSettings().inputs(), **_VAMP_MASK_SETTINGS}
#: Allowed ranges of the single graph's mask settings (checked in the graph by CheckRange, and
#: by `pipeline.Vamp` through `settings.MaskSettings.validate`).
VAMP_LIMITS = {
    name: (limit.low, limit.high)
    for name, limit in MaskSettings.limits().items()
    if name in _VAMP_MASK_SETTINGS
}
VAMP = OpSchema(
    name="Vamp",
    inputs=(
        Port(
            "audio",
            FLOAT,
            "[N] mono samples at the codec's rate (44.1 kHz), N >= 1, loudness-normalised as "
            "vampnet_onnx.audio.preprocess does",
        ),
        Port("seed", INT64, "scalar, the key of every random draw"),
        Port("n_steps", INT64, "scalar >= 1, coarse generation steps (VampNet: 36)"),
        *SAMPLING_INPUTS,
        Port("mask_temperature", FLOAT, "scalar >= 0, the coarse stage's (VampNet: 10.5)"),
        Port("periodic_prompt", INT64, "scalar >= 0, keep every n-th frame (0: off)"),
        Port("periodic_width", INT64, "scalar >= 0, frames kept per period (2 * (w // 2) + 1)"),
        Port("upper_codebook_mask", INT64, "scalar >= 0, codebooks >= it are all generated"),
        Port("prefix_s", FLOAT, "scalar >= 0, seconds kept at the start"),
        Port("suffix_s", FLOAT, "scalar >= 0, seconds kept at the end"),
        Port("dropout", FLOAT, "scalar in [0, 1], share of frames dropped from the prompt"),
    ),
    outputs=(
        Port("audio_out", FLOAT, "[N] the vamped audio, same length and rate as audio"),
        Port("codes", INT64, "[1, 14, T] the encoder's codes, T = ceil(N / hop)"),
        Port(
            "mask", (TensorProto.BOOL,), "[1, 14, T] the mask built in the graph, true = generated"
        ),
        Port("codes_out", INT64, "[1, 14, T] the generated codes that were decoded"),
    ),
)
