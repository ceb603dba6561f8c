"""`vampnet-onnx export-transformer` command line."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from vampnet_onnx import configs, testing
from vampnet_onnx.checkpoint import CheckpointError
from vampnet_onnx.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {
        "c2f": testing.write_vampnet_checkpoint(root / "c2f.pth", configs.TINY_C2F_KWARGS, seed=2),
        "codec": testing.write_codec_checkpoint(
            root / "codec.pth", configs.TINY_CODEC_KWARGS, seed=3
        ),
    }


def test_help_lists_export_transformer(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "export-transformer" in capsys.readouterr().out


def test_export_transformer_help_describes_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export-transformer", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--codec" in out and "--out" in out and "CKPT" in out


def test_export_transformer_prints_mapping_count_and_writes_model(files, tmp_path, capsys):
    out = tmp_path / "c2f.onnx"
    assert (
        main(
            [
                "export-transformer",
                str(files["c2f"]),
                "--codec",
                str(files["codec"]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "62/62 c2f.pth tensors mapped" in printed and "14/424 codec.pth" in printed
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]


def test_export_transformer_error_is_one_line_without_traceback(files, tmp_path, capsys):
    code = main(
        [
            "export-transformer",
            str(files["codec"]),
            "--codec",
            str(files["codec"]),
            "--out",
            str(tmp_path / "x.onnx"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("vampnet-onnx export-transformer: error: load_vampnet:")


def test_export_transformer_verbose_raises_with_traceback(files, tmp_path):
    with pytest.raises(CheckpointError, match="kwargs must contain"):
        main(
            [
                "export-transformer",
                str(files["codec"]),
                "--codec",
                str(files["codec"]),
                "--out",
                str(tmp_path / "x.onnx"),
                "--verbose",
            ]
        )
