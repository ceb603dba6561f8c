"""`vampnet-onnx export`: transformers and generation graphs for the models given."""

import numpy as np

import vampnet_onnx
from vampnet_onnx import cli, configs, testing


def test_export_writes_transformers_and_generation_graphs(tmp_path, capsys):
    coarse = testing.write_vampnet_checkpoint(tmp_path / "coarse.pth", configs.TINY_COARSE_KWARGS)
    c2f = testing.write_vampnet_checkpoint(tmp_path / "c2f.pth", configs.TINY_C2F_KWARGS)
    codec = testing.write_codec_checkpoint(tmp_path / "codec.pth", configs.SMALL_CODEC_KWARGS)
    out = tmp_path / "models"
    rc = cli.main(
        [
            "export",
            "--coarse",
            str(coarse),
            "--c2f",
            str(c2f),
            "--codec",
            str(codec),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "c2f.generate.onnx",
        "c2f.onnx",
        "coarse.generate.onnx",
        "coarse.onnx",
        "codec.decode.cpu.onnx",
        "codec.decode.onnx",
        "codec.encode.cpu.onnx",
        "codec.encode.onnx",
    ]
    assert "tensors mapped" in capsys.readouterr().out
    generator = vampnet_onnx.Generator(out / "c2f.generate.onnx")
    codes = np.random.default_rng(0).integers(0, 1024, (1, 14, 5))
    mask = np.zeros(codes.shape, bool)
    mask[:, 4:] = True
    out_codes = generator.generate(codes, mask, steps=2)
    np.testing.assert_array_equal(out_codes[:, :4], codes[:, :4])


def test_export_without_models_is_a_one_line_error(tmp_path, capsys):
    codec = testing.write_codec_checkpoint(tmp_path / "codec.pth", configs.TINY_CODEC_KWARGS)
    assert cli.main(["export", "--codec", str(codec), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "vampnet-onnx export: error: at least one of --coarse and --c2f must be given, got neither"
    ]


def test_export_codec_names_a_missing_checkpoint(tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    assert cli.main(["export-codec", str(missing), "--out", str(tmp_path / "m")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("vampnet-onnx export-codec: error:") and "nope.pth" in line


def test_export_refuses_a_model_of_the_other_kind(tmp_path, capsys):
    c2f = testing.write_vampnet_checkpoint(tmp_path / "c2f.pth", configs.TINY_C2F_KWARGS)
    codec = testing.write_codec_checkpoint(tmp_path / "codec.pth", configs.TINY_CODEC_KWARGS)
    args = ["export", "--coarse", str(c2f), "--codec", str(codec), "--out", str(tmp_path / "m")]
    assert cli.main(args) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--coarse must be a coarse checkpoint, got a c2f one" in line
    assert not (tmp_path / "m" / "coarse.onnx").exists()


def _export_error(tmp_path, capsys, *argv) -> str:
    assert cli.main(["export", *argv]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def test_a_checkpoint_given_to_the_wrong_option_is_named_and_leaves_no_folder(tmp_path, capsys):
    """Before: `--coarse codec.pth` named neither file nor option; `--codec wavebeat.pth`
    left an empty folder."""
    codec = testing.write_codec_checkpoint(tmp_path / "codec.pth", configs.TINY_CODEC_KWARGS)
    wavebeat = testing.write_wavebeat_checkpoint(
        tmp_path / "wavebeat.pth", configs.TINY_WAVEBEAT_HPARAMS
    )
    c2f = testing.write_vampnet_checkpoint(tmp_path / "c2f.pth", configs.TINY_C2F_KWARGS)
    out = tmp_path / "m"
    line = _export_error(
        tmp_path, capsys, "--coarse", str(codec), "--codec", str(codec), "--out", str(out)
    )
    assert line.startswith(
        f"vampnet-onnx export: error: --coarse must be a VampNet coarse checkpoint, got '{codec}'"
    )
    line = _export_error(
        tmp_path, capsys, "--c2f", str(c2f), "--codec", str(wavebeat), "--out", str(out)
    )
    assert line.startswith(
        f"vampnet-onnx export: error: --codec must be a LAC codec checkpoint, got '{wavebeat}'"
    )
    assert not out.exists()


def test_export_out_naming_a_file_is_one_line(tmp_path, capsys):
    """Before: [Errno 17] File exists, without the option."""
    target = tmp_path / "a.wav"
    target.write_bytes(b"")
    codec = testing.write_codec_checkpoint(tmp_path / "codec.pth", configs.TINY_CODEC_KWARGS)
    c2f = testing.write_vampnet_checkpoint(tmp_path / "c2f.pth", configs.TINY_C2F_KWARGS)
    line = _export_error(
        tmp_path, capsys, "--c2f", str(c2f), "--codec", str(codec), "--out", str(target)
    )
    assert line == f"vampnet-onnx export: error: --out must be a folder, got '{target}', a file"
