"""The settings module: VampNet's defaults, one validate(), and everything that takes its
defaults and names from it (graph contracts, the Python API, the CLI)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

from vampnet_onnx import cli, contracts
from vampnet_onnx.generator import Generator
from vampnet_onnx.pipeline import Vamp
from vampnet_onnx.settings import MaskSettings, SamplingSettings, check_seed, public_name

# VampNet's defaults, from docs/model.md §3.1 and §4.7 (not from the code under test).
VAMPNET_SAMPLING = dict(n_steps=36, temperature=1.0, top_k=0, top_p=1.0, mask_temperature=10.5)
VAMPNET_MASK = dict(periodic_prompt=7, periodic_width=1, upper_codebook_mask=3, onset_mask_width=0)
VAMPNET_MASK |= dict(beat_mask_ms=0.0, prefix_s=0.0, suffix_s=0.0, dropout=0.0)


def test_defaults_are_vampnets():
    assert SamplingSettings().inputs() == VAMPNET_SAMPLING
    assert MaskSettings().inputs() == VAMPNET_MASK


def test_graph_defaults_come_from_the_settings():
    assert contracts.GENERATION_DEFAULTS == {**VAMPNET_SAMPLING, "seed": 0, "batch_offset": 0}
    mask_inputs = {
        k: v for k, v in VAMPNET_MASK.items() if k not in ("onset_mask_width", "beat_mask_ms")
    }
    assert contracts.VAMP_DEFAULTS == {"seed": 0, **VAMPNET_SAMPLING, **mask_inputs}
    assert set(contracts.VAMP_LIMITS) == set(mask_inputs)


def test_fields_are_named_like_the_graph_inputs():
    assert set(SamplingSettings().inputs()) <= set(contracts.GENERATION.input_names)
    graph_mask = set(MaskSettings().inputs()) - {"onset_mask_width", "beat_mask_ms"}
    assert graph_mask | set(SamplingSettings().inputs()) <= set(contracts.VAMP.input_names)


def test_none_means_off_and_numpy_scalars_become_python_numbers():
    settings = SamplingSettings(
        n_steps=np.int32(4), temperature=np.float32(0.5), top_k=None, top_p=None
    ).validate("here")
    assert settings.inputs() == dict(
        n_steps=4, temperature=0.5, top_k=0, top_p=1.0, mask_temperature=10.5
    )
    assert type(settings.n_steps) is int and type(settings.temperature) is float


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(steps=0), "here: steps must be an int >= 1, got 0"),
        (dict(steps=2.0), "here: steps must be an int >= 1, got 2.0"),
        (dict(top_p=0.0), r"here: top_p must be None or in \(0, 1\], got 0.0"),
        (dict(top_k=True), "here: top_k must be None or an int >= 0, got True"),
        (dict(temperature=float("inf")), "here: temperature must be a finite number >= 0"),
    ],
)
def test_sampling_errors_name_the_public_argument(settings, message):
    with pytest.raises(ValueError, match=message):
        SamplingSettings.from_public("here", **settings)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(onset_mask_width=-1), r"here: onset_mask_width must be in \[0, 1000000\], got -1"),
        (dict(dropout="0.5"), "here: dropout must be a number, got '0.5'"),
        (dict(prefix_s=float("nan")), r"here: prefix_s must be in \[0, 10000000\], got nan"),
    ],
)
def test_mask_errors_use_the_graphs_range_message(settings, message):
    with pytest.raises(ValueError, match=message):
        MaskSettings(**settings).validate("here")


def test_unknown_public_names_are_refused():
    with pytest.raises(TypeError, match=r"here: unexpected settings \['n_steps'\]"):
        SamplingSettings.from_public("here", n_steps=3)


def test_seed_must_fit_int64():
    assert check_seed(np.int64(-(2**63)), "here") == -(2**63)
    with pytest.raises(ValueError, match="here: seed must be an int64, got 9223372036854775808"):
        check_seed(2**63, "here")


def test_python_signatures_take_the_settings_defaults():
    defaults = {public_name(k): v for k, v in {**VAMPNET_SAMPLING, **VAMPNET_MASK}.items()}
    for function in (Vamp.vamp, Generator.generate):
        parameters = inspect.signature(function).parameters
        for name, value in defaults.items():
            if name in parameters:
                assert parameters[name].default == value, (function.__qualname__, name)
    assert set(defaults) <= set(inspect.signature(Vamp.vamp).parameters)


def test_cli_options_are_the_settings_with_their_defaults():
    args = cli.build_parser().parse_args(["vamp", "in.wav", "out.wav", "--models", "m"])
    settings = cli._vamp_settings(args)
    expected = {public_name(k): v for k, v in {**VAMPNET_SAMPLING, **VAMPNET_MASK}.items()}
    assert {k: settings[k] for k in expected} == expected
    assert set(settings) <= set(inspect.signature(Vamp.vamp).parameters)
    args = cli.build_parser().parse_args(
        ["vamp", "a", "b", "--models", "m", "--steps", "5", "--onset-mask", "2", "--top-p", "0.9"]
    )
    assert (args.n_steps, args.onset_mask_width, args.top_p) == (5, 2, 0.9)


def test_settings_contracts_configs_and_graph_builders_import_without_torch():
    code = (
        "import sys\n"
        "import vampnet_onnx.settings, vampnet_onnx.contracts, vampnet_onnx.configs\n"
        "import vampnet_onnx.export.generation, vampnet_onnx.export.vamp\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(top_p=1e-50), r"top_p must be None or in \(0, 1\] as a float32, got 1e-50 \(0 as"),
        (
            dict(mask_temperature=1e39),
            r"mask_temperature must be a finite number >= 0 as a float32",
        ),
        (dict(temperature=10**400), "temperature must be a finite number >= 0, got 1000"),
        (dict(top_k=99999999999999999999), "top_k must fit an int64 .*, got 99999999999999999999"),
        (dict(steps=2**63), "steps must be at most 10000, got 9223372036854775808"),
    ],
)
def test_values_are_checked_as_the_graph_sees_them(settings, message):
    """float32 and int64 graph inputs: a value only the cast breaks fails here, with the
    value the user gave, not later inside onnxruntime as "got 0" or an OverflowError."""
    with pytest.raises(ValueError, match=f"here: {message}"):
        SamplingSettings.from_public("here", **settings)


@pytest.mark.parametrize(
    "value", [np.int8(3), np.uint16(3), np.int64(3), np.float16(3.0), np.float32(3.0), 3, 3.0]
)
def test_numpy_scalars_of_any_width_are_accepted(value):
    integral = not isinstance(value, float | np.floating)
    settings = MaskSettings(periodic_prompt=value if integral else 7, prefix_s=value)
    checked = settings.validate("here")
    assert checked.prefix_s == 3.0 and type(checked.prefix_s) is float
    assert type(checked.periodic_prompt) is int
