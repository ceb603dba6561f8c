"""Every option of every command with bad values: one line on stderr, a non-zero status, no
traceback, and no output file left behind.

The walk takes the options from the parser itself, so a new option is fuzzed without a change
here. Each call is set up to fail (missing models or checkpoints, a bad value) before any slow
work: it checks the error path, not the commands' results (see test_cli_*.py for those).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import soundfile

from vampnet_onnx import cli

#: Values that are wrong for most options; where one happens to be valid the call fails on the
#: missing models or checkpoints instead, which must be a one-line error too.
BAD_VALUES = [
    "-1",
    "0",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "1e-50",
    "abc",
    "",
    "99999999999999999999",
    "-99999999999999999999",
    "2.5",
    "/nonexistent/x",
]


def _options(command: str) -> list[argparse.Action]:
    parser = cli.build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = commands.choices[command]
    return [a for a in sub._actions if a.option_strings and a.nargs != 0 and a.dest != "help"]


def _base(command: str, root: Path) -> tuple[list[str], list[Path]]:
    """(argv that reaches the option checks, the outputs that must not appear)."""
    missing = root / "missing"
    if command == "vamp":
        out = root / "out.wav"
        return ["vamp", str(root / "in.wav"), str(out), "--models", str(missing)], [out]
    if command == "demo":
        # --out names a file: the demo refuses it before making or exporting models.
        return ["demo", "--out", str(root / "in.wav")], [root / "out.wav"]
    if command == "export":
        out = root / "models"
        argv = ["export", "--codec", str(missing / "codec.pth"), "--c2f", str(missing)]
        return [*argv, "--out", str(out)], [out]
    if command == "extend":
        out = root / "out.wav"
        argv = ["extend", str(root / "in.wav"), str(out), "--seconds", "1"]
        return [*argv, "--models", str(missing)], [out]
    if command == "app":
        # The models load before the server starts: a missing folder fails without one.
        return ["app", "--models", str(missing)], []
    if command == "export-codec":
        out = root / "codec"
        return ["export-codec", str(missing / "codec.pth"), "--out", str(out)], [out]
    out = root / "t.onnx"
    return ["export-transformer", str(missing), "--codec", str(missing), "--out", str(out)], [out]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        status = cli.main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        status = exit_info.code
    return status, capsys.readouterr().err


COMMANDS = ["vamp", "extend", "demo", "export", "export-codec", "export-transformer", "app"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_with_bad_values_is_a_one_line_error(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a value taken as a relative path stays in here
    soundfile.write(tmp_path / "in.wav", np.zeros(4800), 48000)
    launched = _record_launches(monkeypatch) if command == "app" else []
    rng = np.random.default_rng(5)
    argv, outputs = _base(command, tmp_path)
    options = _options(command)
    assert options, command
    for action in options:
        if action.type is Path:
            # Any string is a valid path; these cannot be made (a file stands in the way).
            values = [str(tmp_path / "in.wav" / "x"), str(tmp_path / "in.wav" / "x" / "y.pth")]
        else:
            values = [*BAD_VALUES, *(str(v) for v in rng.normal(0, 1e6, 3))]
        for value in values:
            flag = action.option_strings[-1]
            # An option given twice takes the last: the base's own --out etc. are replaced.
            status, err = _run([*argv, flag, value], capsys)
            lines = err.strip().splitlines()
            case = f"{command} {flag} {value!r}: {err!r}"
            assert status in (1, 2), case
            assert len(lines) == 1 and "Traceback" not in err, case
            assert lines[0].startswith(f"vampnet-onnx {command}: "), case
            for path in outputs:
                assert not path.exists(), case
    assert launched == []  # no call of the app started a server


def _record_launches(monkeypatch) -> list:
    """The calls of Gradio's `Blocks.launch` from now on (none without Gradio installed)."""
    launched: list = []
    try:
        import gradio
    except ImportError:
        return launched
    monkeypatch.setattr(gradio.Blocks, "launch", lambda *args, **kwargs: launched.append(args))
    return launched
