"""Checkpoint loading: safety, strict tensor lists, kwargs validation, folding formulas."""

from __future__ import annotations

import hashlib
import math
import pickle

import numpy as np
import pytest
import torch

from vampnet_onnx import configs, testing
from vampnet_onnx.checkpoint import (
    CheckpointError,
    CodecConfig,
    VampNetConfig,
    codec_tensor_shapes,
    load_checkpoint,
    load_codec,
    load_vampnet,
    vampnet_tensor_shapes,
)
from vampnet_onnx.model.transformer import fold_lora, fold_weight_norm, load_transformer


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny coarse, c2f and codec checkpoints in the real formats."""
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "coarse": testing.write_vampnet_checkpoint(
            root / "coarse.pth", configs.TINY_COARSE_KWARGS, seed=1
        ),
        "c2f": testing.write_vampnet_checkpoint(root / "c2f.pth", configs.TINY_C2F_KWARGS, seed=2),
        "codec": testing.write_codec_checkpoint(
            root / "codec.pth", configs.TINY_CODEC_KWARGS, seed=3
        ),
    }


def _save(path, state_dict, kwargs):
    torch.save({"state_dict": state_dict, "metadata": {"kwargs": kwargs}}, path)
    return path


class _RunsCode:
    """Unpickling this calls exec(): a stand-in for a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_load_checkpoint_reads_kwargs_state_dict_and_hash(files):
    ckpt = load_checkpoint(files["coarse"])
    assert ckpt.kwargs == configs.TINY_COARSE_KWARGS
    assert set(ckpt.state_dict) == set(
        vampnet_tensor_shapes(VampNetConfig.from_kwargs(configs.TINY_COARSE_KWARGS))
    )
    assert ckpt.sha256 == hashlib.sha256(files["coarse"].read_bytes()).hexdigest()


def test_crafted_pickle_does_run_code_when_loaded_unsafely(tmp_path):
    # Control for the refusal tests below: the crafted file really is malicious.
    marker = tmp_path / "marker"
    path = _save(tmp_path / "evil.pth", {}, {"x": _RunsCode(marker)})
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_checkpoint_is_refused_naming_the_global(tmp_path):
    marker = tmp_path / "marker"
    path = _save(tmp_path / "evil.pth", {}, {"x": _RunsCode(marker)})
    with pytest.raises(CheckpointError, match=r"builtins\.exec.*refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_plain_pickle_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": {}, "metadata": _RunsCode(marker)}))
    with pytest.raises(CheckpointError, match="must be a torch.save zip archive"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_file_is_refused_naming_the_path(files, tmp_path):
    path = tmp_path / "truncated.pth"
    data = files["coarse"].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth.*torch\.save zip archive"):
        load_checkpoint(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="must be an existing file"):
        load_checkpoint(tmp_path / "absent.pth")


def test_archive_without_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="keys 'state_dict' and 'metadata'"):
        load_checkpoint(path)


def test_metadata_without_kwargs_is_refused(tmp_path):
    path = tmp_path / "nokwargs.pth"
    torch.save({"state_dict": {}, "metadata": {"other": 1}}, path)
    with pytest.raises(CheckpointError, match="'kwargs' dict"):
        load_checkpoint(path)


def test_numpy_scalars_in_kwargs_are_accepted_as_python_numbers(tmp_path):
    kwargs = {**configs.TINY_COARSE_KWARGS, "n_layers": np.int64(2), "dropout": np.float32(0.5)}
    state_dict = testing.random_vampnet_state_dict(configs.TINY_COARSE_KWARGS)
    ckpt, config = load_vampnet(_save(tmp_path / "np.pth", state_dict, kwargs))
    assert type(ckpt.kwargs["n_layers"]) is int and config.n_layers == 2


def test_extra_metadata_entries_are_ignored(tmp_path):
    state_dict = testing.random_vampnet_state_dict(configs.TINY_COARSE_KWARGS)
    path = tmp_path / "extra.pth"
    torch.save(
        {"state_dict": state_dict, "metadata": {"kwargs": configs.TINY_COARSE_KWARGS, "x": 1}},
        path,
    )
    assert load_vampnet(path)[1].n_codebooks == 4


def _edited(tmp_path, edit):
    state_dict = testing.random_vampnet_state_dict(configs.TINY_COARSE_KWARGS)
    edit(state_dict)
    return _save(tmp_path / "edited.pth", state_dict, configs.TINY_COARSE_KWARGS)


def test_missing_tensor_is_named(tmp_path):
    path = _edited(tmp_path, lambda sd: sd.pop("transformer.layers.1.norm_3.weight"))
    with pytest.raises(CheckpointError, match=r"must contain transformer\.layers\.1\.norm_3"):
        load_vampnet(path)


def test_unexpected_tensor_is_named(tmp_path):
    def add(sd):
        sd["transformer.layers.1.self_attn.relative_attention_bias.weight"] = torch.ones(32, 4)

    with pytest.raises(CheckpointError, match=r"must not contain transformer\.layers\.1\.self"):
        load_vampnet(_edited(tmp_path, add))


def test_wrong_shape_is_named(tmp_path):
    def transpose(sd):
        sd["transformer.layers.0.feed_forward.w_2.weight"] = torch.ones(128, 64)

    with pytest.raises(CheckpointError, match=r"w_2\.weight must have shape \(64, 128\)"):
        load_vampnet(_edited(tmp_path, transpose))


def test_partial_lora_is_refused(tmp_path):
    path = _edited(tmp_path, lambda sd: sd.pop("transformer.layers.0.self_attn.fc.lora_B"))
    with pytest.raises(CheckpointError, match=r"must contain transformer\.layers\.0\.self_attn"):
        load_vampnet(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flash_attn": True}, "flash_attn must be False"),
        ({"r_cond_dim": 64}, "r_cond_dim must be 0"),
        ({"cond_dim": 3}, "cond_dim must be 0"),
        ({"ctrl_dims": {"rms": 1}}, "ctrl_dims must be None"),
        ({"noise_mode": "random"}, "noise_mode must be 'mask'"),
        ({"n_conditioning_codebooks": 4}, r"n_conditioning_codebooks must be in \[0, n_codebooks"),
        ({"n_heads": 5}, "embedding_dim must be divisible by n_heads"),
        ({"n_layers": 0}, "n_layers must be > 0"),
        ({"n_layers": True}, "n_layers must be int"),
        ({"n_layers": None}, "n_layers must be int"),
    ],
)
def test_unsupported_vampnet_kwargs_are_refused(change, message):
    with pytest.raises(CheckpointError, match=message):
        VampNetConfig.from_kwargs({**configs.TINY_COARSE_KWARGS, **change})


def test_missing_architecture_kwarg_is_refused_instead_of_defaulted():
    kwargs = dict(configs.TINY_COARSE_KWARGS)
    del kwargs["flash_attn"]  # the original class default (True) would be wrong here
    with pytest.raises(CheckpointError, match="kwargs must contain 'flash_attn'"):
        VampNetConfig.from_kwargs(kwargs)


def test_codec_rates_with_different_hops_are_refused():
    with pytest.raises(CheckpointError, match="product of encoder_rates must equal"):
        CodecConfig.from_kwargs({**configs.TINY_CODEC_KWARGS, "encoder_rates": [2, 2]})


def test_full_size_tensor_lists_match_the_spec_parameter_counts():
    # docs/model.md §1.5: parameters without LoRA, and the LoRA tensors on top.
    for kwargs, base, lora in (
        (configs.COARSE_KWARGS, 333_026_464, 2_867_200),
        (configs.C2F_KWARGS, 275_459_312, 2_293_760),
    ):
        config = VampNetConfig.from_kwargs(kwargs)
        plain = sum(math.prod(s) for s in vampnet_tensor_shapes(config, False).values())
        full = sum(math.prod(s) for s in vampnet_tensor_shapes(config).values())
        assert (plain, full - plain) == (base, lora)


def test_768x_codec_tensor_list_has_the_spec_widths():
    shapes = codec_tensor_shapes(CodecConfig.from_kwargs(configs.CODEC_KWARGS))
    assert shapes["encoder.block.4.block.4.weight_v"] == (1024, 512, 16)
    assert shapes["encoder.block.6.weight_v"] == (1024, 1024, 3)
    assert shapes["quantizer.quantizers.13.in_proj.weight_v"] == (8, 1024, 1)
    assert shapes["quantizer.quantizers.13.codebook.weight"] == (1024, 8)
    assert shapes["decoder.model.1.block.1.weight_v"] == (1536, 768, 12)
    assert shapes["decoder.model.1.block.1.weight_g"] == (1536, 1, 1)
    assert shapes["decoder.model.6.block.2.mrf_blocks.2.block.2.layer.3.weight_v"] == (24, 24, 11)
    assert shapes["decoder.model.8.weight_v"] == (1, 24, 7)


def test_tiny_codec_uses_floor_division_for_decoder_widths(files):
    _, config = load_codec(files["codec"])
    assert [config.decoder_width(k) for k in range(4)] == [12, 6, 3, 1]
    assert config.hop_length == 12 and config.latent_width == 32


@pytest.mark.parametrize(("kind", "n_vampnet", "n_codebooks"), [("coarse", 44, 4), ("c2f", 62, 14)])
def test_every_checkpoint_tensor_is_mapped_or_listed_unused(files, kind, n_vampnet, n_codebooks):
    report = load_transformer(files[kind], files["codec"]).report
    name = files[kind].name
    assert f"{n_vampnet}/{n_vampnet} {name} tensors mapped" in report.summary()
    assert f"{n_codebooks}/424 codec.pth tensors mapped" in report.summary()
    listed = {(f, n) for f, n, _ in report.mapped + report.unused}
    codec_names = load_checkpoint(files["codec"]).state_dict
    vampnet_names = load_checkpoint(files[kind]).state_dict
    assert listed == {("codec.pth", n) for n in codec_names} | {(name, n) for n in vampnet_names}


def test_codec_with_other_codebook_width_is_refused(files, tmp_path):
    codec = testing.write_codec_checkpoint(
        tmp_path / "codec.pth", {**configs.TINY_CODEC_KWARGS, "codebook_dim": 4}
    )
    with pytest.raises(CheckpointError, match="codebook_dim must equal VampNet latent_dim 8"):
        load_transformer(files["coarse"], codec)


def test_codec_with_too_few_codebooks_is_refused(files, tmp_path):
    codec = testing.write_codec_checkpoint(
        tmp_path / "codec.pth", {**configs.TINY_CODEC_KWARGS, "n_codebooks": 9}
    )
    with pytest.raises(CheckpointError, match="n_codebooks must be >= VampNet n_codebooks 14"):
        load_transformer(files["c2f"], codec)


def test_fold_lora_adds_one_eighth_of_b_times_a():
    gen = torch.Generator().manual_seed(0)
    w, a, b = (torch.randn(s, generator=gen) for s in ((6, 5), (8, 5), (6, 8)))
    expected = w.double().numpy() + (b.double().numpy() @ a.double().numpy()) / 8
    np.testing.assert_allclose(fold_lora(w, a, b).numpy(), expected, rtol=1e-12)


def test_fold_weight_norm_gives_rows_of_norm_abs_g():
    gen = torch.Generator().manual_seed(0)
    g, v = torch.randn(7, 1, 1, generator=gen), torch.randn(7, 5, 3, generator=gen)
    folded = fold_weight_norm(g, v)
    np.testing.assert_allclose(folded.flatten(1).norm(dim=1), g.abs().flatten(), rtol=1e-12)
    assert torch.all(torch.sign(folded[:, 0, 0]) == torch.sign(g[:, 0, 0] * v[:, 0, 0]))


def test_checkpoint_without_lora_tensors_folds_plain_weights(files, tmp_path):
    path = testing.write_vampnet_checkpoint(
        tmp_path / "old.pth", configs.TINY_COARSE_KWARGS, seed=4, lora=False
    )
    model = load_transformer(path, files["codec"]).model
    saved = load_checkpoint(path).state_dict["transformer.layers.0.self_attn.fc.weight"]
    torch.testing.assert_close(model.layers[0].out, saved.T, rtol=0, atol=0)


def test_separate_lora_file_replaces_lora_tensors(files, tmp_path):
    base = load_checkpoint(files["coarse"]).state_dict
    name = "transformer.layers.1.feed_forward.w_2"
    lora = {f"{name}.lora_B": torch.zeros_like(base[f"{name}.lora_B"])}
    torch.save(lora, tmp_path / "lora.pth")
    model = load_transformer(files["coarse"], files["codec"], tmp_path / "lora.pth").model
    torch.testing.assert_close(model.layers[1].ffn_out, base[f"{name}.weight"].T, rtol=0, atol=0)


def test_separate_lora_file_with_other_tensors_is_refused(files, tmp_path):
    torch.save({"transformer.norm.weight": torch.ones(64)}, tmp_path / "lora.pth")
    with pytest.raises(CheckpointError, match="must be LoRA tensors.*transformer.norm.weight"):
        load_transformer(files["coarse"], files["codec"], tmp_path / "lora.pth")


def test_malicious_lora_file_is_refused(files, tmp_path):
    marker = tmp_path / "marker"
    torch.save({"x": _RunsCode(marker)}, tmp_path / "lora.pth")
    with pytest.raises(CheckpointError, match=r"builtins\.exec"):
        load_transformer(files["coarse"], files["codec"], tmp_path / "lora.pth")
    assert not marker.exists()
