"""`vampnet_onnx.export.export_models`: the export as a library call (the CLI's `export` runs
it too, tests/test_cli_export.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import vampnet_onnx
from vampnet_onnx import configs, contracts, testing
from vampnet_onnx.checkpoint import CheckpointError
from vampnet_onnx.export import export_models
from vampnet_onnx.pipeline import Vamp


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny c2f and codec checkpoints in the real formats."""
    root = tmp_path_factory.mktemp("export_models")
    c2f = testing.write_vampnet_checkpoint(root / "c2f.pth", configs.TINY_C2F_KWARGS, seed=2)
    codec = testing.write_codec_checkpoint(root / "codec.pth", configs.TINY_CODEC_KWARGS, seed=3)
    return {"c2f": c2f, "codec": codec}


def test_export_models_writes_and_reports_the_folder(checkpoints, tmp_path):
    wavebeat = testing.write_wavebeat_checkpoint(
        tmp_path / "wavebeat.pth", configs.TINY_WAVEBEAT_HPARAMS, seed=4
    )
    out = tmp_path / "models"
    result = export_models(
        out, codec=checkpoints["codec"], c2f=checkpoints["c2f"], wavebeat=wavebeat
    )
    assert result.out == out and result.vamp is None
    assert result.wavebeat.path == out / contracts.WAVEBEAT_FILE
    assert result.wavebeat.path in result.files
    meta = contracts.read_metadata(result.wavebeat.path, contracts.WAVEBEAT_CONFIG_KEY, "test")
    assert meta["audio_sample_rate"] == 22050
    assert result.codec.encode_path == out / contracts.ENCODE_FILE
    assert result.codec.decode_path == out / contracts.DECODE_FILE
    assert list(result.transformers) == list(result.generations) == ["c2f"]
    assert result.transformers["c2f"].path == out / contracts.TRANSFORMER_FILES["c2f"]
    assert result.generations["c2f"].path == out / contracts.GENERATION_FILES["c2f"]
    assert "tensors mapped" in result.transformers["c2f"].report.summary()
    generator = vampnet_onnx.Generator(result.generations["c2f"].path)
    codes = np.random.default_rng(0).integers(0, 1024, (1, 14, 5))
    mask = np.zeros(codes.shape, bool)
    mask[:, 4:, 2:] = True
    out_codes = generator.generate(codes, mask, steps=2)
    np.testing.assert_array_equal(out_codes[~mask], codes[~mask])


def test_export_models_refuses_a_wrong_wavebeat_file_before_exporting(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match="must be a WaveBeat Lightning checkpoint"):
        export_models(
            tmp_path / "m",
            codec=checkpoints["codec"],
            c2f=checkpoints["c2f"],
            wavebeat=checkpoints["c2f"],
        )
    assert not (tmp_path / "m").exists()


def test_export_models_needs_a_transformer(checkpoints, tmp_path):
    with pytest.raises(
        ValueError, match="export_models: at least one of coarse and c2f must be given, got neither"
    ):
        export_models(tmp_path, codec=checkpoints["codec"])
    assert not any(tmp_path.iterdir())


def test_export_models_refuses_a_checkpoint_of_the_other_kind(checkpoints, tmp_path):
    with pytest.raises(
        ValueError, match="export_models: coarse must be a coarse checkpoint, got a c2f"
    ):
        export_models(tmp_path / "m", codec=checkpoints["codec"], coarse=checkpoints["c2f"])
    assert not (tmp_path / "m").exists()


def test_single_graph_needs_both_models(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="single_graph must come with both coarse and c2f"):
        export_models(
            tmp_path, codec=checkpoints["codec"], c2f=checkpoints["c2f"], single_graph=True
        )


def test_a_failed_export_leaves_the_folder_as_it_was(checkpoints, tmp_path, monkeypatch):
    from vampnet_onnx.export import generation

    out = tmp_path / "models"
    out.mkdir()
    (out / contracts.ENCODE_FILE).write_bytes(b"old")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(generation, "export_generation", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_models(out, codec=checkpoints["codec"], c2f=checkpoints["c2f"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]
    assert sorted(p.name for p in out.iterdir()) == [contracts.ENCODE_FILE]
    assert (out / contracts.ENCODE_FILE).read_bytes() == b"old"


def test_weights_over_the_limit_go_to_a_data_file_and_load(tmp_path, monkeypatch):
    """The external-data rule at a tiny limit: the graph and <name>.data appear together and
    onnxruntime runs the result; a smaller model later removes the stale data file."""
    import onnx
    import onnx_ir as ir

    from vampnet_onnx.export import common

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])
    weight = onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [weight]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    path = tmp_path / "m.onnx"
    monkeypatch.setattr(common, "EXTERNAL_DATA_BYTES", 8)
    saved = common.save_model(ir.from_proto(model), path)
    assert saved.data_path == tmp_path / "m.onnx.data" and saved.data_path.is_file()
    out = vampnet_onnx.create_session(path).run(None, {"x": np.ones(4, np.float32)})[0]
    np.testing.assert_array_equal(out, [1, 2, 3, 4])
    monkeypatch.setattr(common, "EXTERNAL_DATA_BYTES", 2**20)
    assert common.save_model(ir.from_proto(model), path).data_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_folder_with_external_weights_vamps(tmp_path, monkeypatch):
    """Full-size graphs keep their weights in <file>.data: at a small threshold the tiny models
    do too, each generation graph reads its transformer's file (the weights are on disk once),
    the export lists and moves those files, and the pipeline and the single graph run from the
    folder."""
    from vampnet_onnx.export import common
    from vampnet_onnx.pipeline import SingleGraphVamp, Vamp

    # Above the generation graphs' own small constants (under 2 kB), below every model's weights.
    monkeypatch.setattr(common, "EXTERNAL_DATA_BYTES", 2**16)
    root = tmp_path / "checkpoints"
    coarse = testing.write_vampnet_checkpoint(root / "coarse.pth", configs.TINY_COARSE_KWARGS)
    c2f = testing.write_vampnet_checkpoint(root / "c2f.pth", configs.TINY_C2F_KWARGS, seed=2)
    codec = testing.write_codec_checkpoint(root / "codec.pth", configs.SMALL_CODEC_KWARGS)
    out = tmp_path / "models"
    result = export_models(out, codec=codec, coarse=coarse, c2f=c2f, single_graph=True)
    data = sorted(p.name for p in out.iterdir() if p.suffix == ".data")
    graphs = ["c2f.onnx", "codec.decode.onnx", "codec.encode.onnx", "coarse.onnx", "vamp.onnx"]
    assert data == sorted(f"{name}.data" for name in graphs)
    assert sorted(p.name for p in result.files if p.suffix == ".data") == data
    for kind in ("coarse", "c2f"):
        generation = out / f"{kind}.generate.onnx"
        assert common.data_files(generation) == [out / f"{kind}.onnx.data"]
    assert common.data_files(out / "vamp.onnx") == [out / "vamp.onnx.data"]
    assert sorted(result.files) == sorted(out.iterdir())
    samples = np.random.default_rng(1).standard_normal(20000).astype(np.float32) * 0.1
    want, _ = Vamp(out, threads=2).vamp(samples, 44100, steps=2, seed=3)
    got, _ = SingleGraphVamp(out / contracts.VAMP_FILE, threads=2).vamp(
        samples, 44100, steps=2, seed=3
    )
    # The pipeline's CPU codec fuses Snake (docs/precision.md): audio to float32 rounding.
    np.testing.assert_allclose(got, want, atol=1e-4)


def _copy(folder, to):
    return shutil.copytree(folder, to)


def test_graphs_an_export_makes_inconsistent_are_removed_and_named(
    checkpoints, tiny_models_dir, tmp_path, capsys
):
    """Before: a vamp.onnx (and a coarse pair) of an earlier export stayed, and `--models
    DIR/vamp.onnx` silently ran the old codec."""
    out = _copy(tiny_models_dir, tmp_path / "models")
    # Another codec than the folder's, and c2f only: the coarse pair no longer fits it.
    result = export_models(out, codec=checkpoints["codec"], c2f=checkpoints["c2f"], progress=True)
    coarse = [contracts.TRANSFORMER_FILES["coarse"], contracts.GENERATION_FILES["coarse"]]
    stale = [contracts.VAMP_FILE, *coarse]
    assert sorted(p.name for p in result.removed) == sorted(stale)
    for name in stale:
        assert not (out / name).exists()
    assert (out / contracts.WAVEBEAT_FILE).exists()  # it depends on no codec
    printed = capsys.readouterr().out
    assert f"removed {contracts.VAMP_FILE}: it came from an earlier export" in printed
    assert "removed coarse.onnx: it came from an earlier export with another codec" in printed


def test_a_pair_of_the_same_codec_is_kept(tiny_models_dir, tmp_path):
    out = _copy(tiny_models_dir, tmp_path / "models")
    root = tiny_models_dir.parent
    result = export_models(out, codec=root / "codec.pth", c2f=root / "c2f.pth")
    assert [p.name for p in result.removed] == [contracts.VAMP_FILE]
    assert (out / contracts.GENERATION_FILES["coarse"]).exists()
    Vamp(out)  # the kept coarse pair and the new graphs belong together


@pytest.fixture(scope="module")
def stepped(checkpoints, tmp_path_factory):
    """export_models(step_graphs=True) of the tiny c2f model: its result."""
    out = tmp_path_factory.mktemp("stepped") / "models"
    return export_models(out, codec=checkpoints["codec"], c2f=checkpoints["c2f"], step_graphs=True)


def test_step_graphs_are_written_listed_and_run(stepped):
    step = stepped.out / contracts.STEP_FILES["c2f"]
    assert list(stepped.steps) == ["c2f"] and stepped.steps["c2f"].path == step
    assert step in stepped.files
    codes = np.random.default_rng(0).integers(0, 1024, (1, 14, 5))
    mask = np.zeros(codes.shape, bool)
    mask[:, 4:, 1:] = True
    generate = vampnet_onnx.Generator(stepped.generations["c2f"].path)
    np.testing.assert_array_equal(
        vampnet_onnx.Generator(step).generate(codes, mask, steps=2, seed=1),
        generate.generate(codes, mask, steps=2, seed=1),
    )


def test_a_step_graph_beside_a_rewritten_transformer_is_removed(checkpoints, stepped, tmp_path):
    """It would run the earlier transformer."""
    out = _copy(stepped.out, tmp_path / "models")
    result = export_models(out, codec=checkpoints["codec"], c2f=checkpoints["c2f"])
    step = out / contracts.STEP_FILES["c2f"]
    assert list(result.removed) == [step] and not step.exists()
    assert "would run its c2f transformer" in result.removed[step]
