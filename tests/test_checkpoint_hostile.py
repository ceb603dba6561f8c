"""Hostile checkpoint files: code-execution payloads written with each pickle technique and hidden
at several depths, tensors whose claimed sizes dwarf the file, damaged archives, and the wrong
kind of checkpoint. Each must be refused with a CheckpointError naming the file, run nothing,
and allocate nothing in proportion to what it claims.

The payloads are hand-assembled pickle opcodes inside a real `torch.save` archive, so each
technique is exactly the one named; a control test shows every payload runs its code when
unpickled the unsafe way."""

from __future__ import annotations

import json
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from vampnet_onnx import configs, testing
from vampnet_onnx.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_codec,
    load_lora_state_dict,
    load_vampnet,
)
from vampnet_onnx.cli import main

# STACK_GLOBAL needs pickle protocol 4, which makes torch warn before it refuses the file.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")

# --- pickle opcodes (pickletools documents each) ------------------------------------------


def _text(value: str) -> bytes:
    """BINUNICODE: push a str."""
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    """LONG1: push an int of any size."""
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _global(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0-2): push module.name, named inline."""
    return b"c" + f"{module}\n{name}\n".encode()


def _stack_global(module: str, name: str) -> bytes:
    """STACK_GLOBAL (protocol 4): push module.name, named by the two strings on the stack."""
    return _text(module) + _text(name) + b"\x93"


def _memo_stack_global(module: str, name: str) -> bytes:
    """STACK_GLOBAL whose names come back from the memo (MEMOIZE, BINGET), where a scanner that
    only reads the strings just before each STACK_GLOBAL loses track of them."""
    return _text(module) + b"\x94" + _text(name) + b"\x94" + b"0" + b"0" + b"h\x00h\x01\x93"


def _call(function: bytes, *args: bytes) -> bytes:
    """REDUCE: function(*args)."""
    return function + b"(" + b"".join(args) + b"tR"


def _dict(*items: tuple[str, bytes]) -> bytes:
    return b"}" + b"".join(_text(key) + value + b"s" for key, value in items)


def _checkpoint_pickle(state_dict: bytes, metadata: bytes, protocol: int = 2) -> bytes:
    """{"state_dict": ..., "metadata": ...}, the layout VampNet's files have."""
    body = _dict(("state_dict", state_dict), ("metadata", metadata))
    return b"\x80" + bytes([protocol]) + body + b"."


def _kwargs(*items: tuple[str, bytes]) -> bytes:
    return _dict(("kwargs", _dict(*items)))


def _write_archive(
    path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None, drop=()
) -> Path:
    """A torch.save zip archive (its real records) with data.pkl and the storages replaced."""
    torch.save({"state_dict": {"w": torch.ones(3)}, "metadata": {"kwargs": {}}}, path)
    with zipfile.ZipFile(path) as archive:
        records = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in records:
            short = name.split("/", 1)[1]
            if short in drop:
                continue
            if short == "data.pkl":
                data = data_pkl
            elif short.startswith("data/") and storages is not None:
                data = storages.pop(short[len("data/") :], b"")
            archive.writestr(name, data)
        archive_root = records[0][0].split("/", 1)[0]
        for key, data in (storages or {}).items():
            archive.writestr(f"{archive_root}/data/{key}", data)
    return path


# --- code execution -----------------------------------------------------------------------


def _python(marker: Path) -> bytes:
    return _text(f"open({str(marker)!r}, 'w').close()")


PAYLOADS = {
    # name: pickle of a checkpoint whose loading would create the marker file
    "os.system as a state_dict tensor (GLOBAL)": lambda m: _checkpoint_pickle(
        _dict(("w", _call(_global("os", "system"), _text(f"touch '{m}'")))), _kwargs()
    ),
    "builtins.eval in metadata kwargs (STACK_GLOBAL)": lambda m: _checkpoint_pickle(
        _dict(), _kwargs(("n_layers", _call(_stack_global("builtins", "eval"), _python(m)))), 4
    ),
    "builtins.exec nested in metadata (memoized STACK_GLOBAL)": lambda m: _checkpoint_pickle(
        _dict(),
        _dict(
            ("kwargs", _dict()),
            ("extra", _dict(("deep", _call(_memo_stack_global("builtins", "exec"), _python(m))))),
        ),
        4,
    ),
    "builtins.exec by INST": lambda m: _checkpoint_pickle(
        _dict(), _kwargs(("x", b"(" + _python(m) + b"ibuiltins\nexec\n"))
    ),
    "getattr(__import__('os'), 'system') deep in the state_dict": lambda m: _checkpoint_pickle(
        _dict(
            (
                "layer",
                _dict(
                    (
                        "w",
                        _call(
                            _call(
                                _global("builtins", "getattr"),
                                _call(_global("builtins", "__import__"), _text("os")),
                                _text("system"),
                            ),
                            _text(f"touch '{m}'"),
                        ),
                    )
                ),
            )
        ),
        _kwargs(),
    ),
    "subprocess.Popen in metadata (GLOBAL)": lambda m: _checkpoint_pickle(
        _dict(),
        _dict(
            ("kwargs", _dict()),
            (
                "run",
                _call(_global("subprocess", "Popen"), b"(" + _text("touch") + _text(str(m)) + b"l"),
            ),
        ),
    ),
}


@pytest.mark.parametrize("technique", PAYLOADS)
def test_payload_runs_code_when_unpickled_unsafely(technique, tmp_path):
    # Control: each payload is live, so the refusals below are the loader's doing.
    marker = tmp_path / "marker"
    try:
        result = pickle.loads(PAYLOADS[technique](marker))
        popen = result["metadata"].get("run") if isinstance(result, dict) else None
        if popen is not None:
            popen.wait()
    except Exception:  # the payload's return value may not fit the dict; the code ran first
        pass
    assert marker.exists()


@pytest.mark.parametrize("loader", [load_checkpoint, load_vampnet, load_codec])
@pytest.mark.parametrize("technique", PAYLOADS)
def test_code_execution_payloads_are_refused_and_never_run(technique, loader, tmp_path):
    marker = tmp_path / "marker"
    path = _write_archive(tmp_path / "evil.pth", PAYLOADS[technique](marker))
    with pytest.raises(CheckpointError, match=r"evil\.pth.*(refused|readable torch\.save)"):
        loader(path)
    assert not marker.exists()


def test_refusal_names_the_global(tmp_path):
    path = _write_archive(
        tmp_path / "evil.pth", PAYLOADS["os.system as a state_dict tensor (GLOBAL)"](tmp_path)
    )
    with pytest.raises(CheckpointError, match=r"global\(s\) os\.system \(refused"):
        load_checkpoint(path)


# --- absurd sizes -------------------------------------------------------------------------


def _tensor(storage_numel: int, size, stride, offset: int = 0, key: str = "0") -> bytes:
    """torch._utils._rebuild_tensor_v2 over a float storage record `key` of storage_numel claimed
    elements, as torch.save writes a tensor."""
    storage = (
        b"("
        + _text("storage")
        + _global("torch", "FloatStorage")
        + _text(key)
        + _text("cpu")
        + _int(storage_numel)
        + b"tQ"
    )
    return _call(
        _global("torch._utils", "_rebuild_tensor_v2"),
        storage,
        _int(offset),
        b"(" + b"".join(map(_int, size)) + b"t",
        b"(" + b"".join(map(_int, stride)) + b"t",
        b"\x89",  # requires_grad False
        _call(_global("collections", "OrderedDict")),
    )


ABSURD_TENSORS = {
    # name: (tensor opcodes, bytes actually stored)
    "storage claims 4 TB": (_tensor(10**12, [3], [1]), 12),
    "storage claims 20 GB": (_tensor(5 * 10**9, [3], [1]), 12),
    "shape claims 10^12 elements of 3": (_tensor(3, [10**6, 10**6], [10**6, 1]), 12),
    "offset 10^15": (_tensor(3, [3], [1], offset=10**15), 12),
    "negative size": (_tensor(3, [-5], [1]), 12),
    "storage record missing": (_tensor(3, [3], [1], key="7"), 12),
    "record shorter than claimed": (_tensor(3, [3], [1]), 8),
}


def _absurd_file(tmp_path: Path, name: str) -> Path:
    opcodes, stored = ABSURD_TENSORS[name]
    file = tmp_path / f"{name.replace(' ', '_')}.pth"
    return _write_archive(
        file, _checkpoint_pickle(_dict(("w", opcodes)), _kwargs()), {"0": b"\0" * stored}
    )


@pytest.mark.parametrize("name", ABSURD_TENSORS)
def test_tensors_claiming_more_than_the_file_holds_are_refused(name, tmp_path):
    path = _absurd_file(tmp_path, name)
    with pytest.raises(CheckpointError, match=rf"{re.escape(path.name)}.*readable torch\.save"):
        load_checkpoint(path)


def test_broadcast_tensor_of_absurd_shape_is_refused_by_the_shape_check(tmp_path):
    # Stride 0 makes 10^12 elements out of one stored float: legal for torch, and never
    # materialised; the expected-shape check then names it.
    state_dict = testing.random_vampnet_state_dict(configs.TINY_COARSE_KWARGS)
    huge = torch.zeros(1).expand(10**12)
    state_dict["transformer.norm.weight"] = huge
    path = tmp_path / "broadcast.pth"
    torch.save({"state_dict": state_dict, "metadata": {"kwargs": configs.TINY_COARSE_KWARGS}}, path)
    with pytest.raises(CheckpointError, match=r"transformer\.norm\.weight must have shape"):
        load_vampnet(path)


PEAK_MEMORY_SCRIPT = """
import json, resource, sys
from vampnet_onnx.checkpoint import CheckpointError, load_checkpoint
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcomes = []
for path in sys.argv[1:]:
    try:
        load_checkpoint(path)
        outcomes.append("loaded")
    except CheckpointError:
        outcomes.append("refused")
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) * 1024
print(json.dumps({"outcomes": outcomes, "peak_growth": grown}))
"""


def _peak_memory_of_loading(paths: list[Path]) -> dict:
    """Loads each file in a fresh process: which were refused, and how much its peak RSS grew."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_SCRIPT, *map(str, paths)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_absurd_claims_allocate_nothing_in_proportion(tmp_path):
    # The claims add up to terabytes; a loader that believed any of them would grow by far
    # more than the 64 MiB allowed here (torch's own import and first load take less).
    report = _peak_memory_of_loading([_absurd_file(tmp_path, name) for name in ABSURD_TENSORS])
    assert report["outcomes"] == ["refused"] * len(ABSURD_TENSORS)
    assert report["peak_growth"] < 64 * 2**20


def test_compressed_member_inflating_far_beyond_the_file_is_refused(tmp_path):
    # A consistent tensor of 5 * 10^7 floats whose 200 MB record deflates to ~200 KB.
    n = 5 * 10**7
    path = tmp_path / "bomb.pth"
    tensor_pickle = _checkpoint_pickle(_dict(("w", _tensor(n, [n], [1]))), _kwargs())
    _write_archive(path, tensor_pickle, drop=("data/0",))
    with zipfile.ZipFile(path, "a") as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        info = zipfile.ZipInfo(f"{root}/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as record:
            for _ in range(n // 2**20):
                record.write(bytes(4 * 2**20))
            record.write(bytes(4 * (n % 2**20)))
    assert path.stat().st_size < 1_000_000
    report = _peak_memory_of_loading([path])
    assert report["outcomes"] == ["refused"]
    assert report["peak_growth"] < 64 * 2**20


@pytest.mark.parametrize(
    "metadata",
    [
        _kwargs(("x", _call(_global("numpy", "dtype"), _text("Q9"), b"\x89", b"\x88"))),
        _kwargs(("x", _call(_global("collections", "OrderedDict"), _int(5)))),
        _kwargs(("x", _call(_global("_codecs", "encode"), _text("a"), _text("no-such-codec")))),
        _kwargs(("x", _call(_global("torch._utils", "_rebuild_tensor_v2"), _int(1)))),
    ],
    ids=["dtype", "OrderedDict", "_codecs.encode", "_rebuild_tensor_v2"],
)
def test_allowlisted_callables_with_hostile_arguments_are_refused(metadata, tmp_path):
    path = _write_archive(tmp_path / "odd.pth", _checkpoint_pickle(_dict(), metadata))
    with pytest.raises(CheckpointError, match=r"odd\.pth"):
        load_checkpoint(path)


# --- damaged archives ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def coarse(tmp_path_factory) -> Path:
    return testing.write_vampnet_checkpoint(
        tmp_path_factory.mktemp("hostile") / "coarse.pth", configs.TINY_COARSE_KWARGS, seed=1
    )


@pytest.fixture(scope="module")
def codec(tmp_path_factory) -> Path:
    return testing.write_codec_checkpoint(
        tmp_path_factory.mktemp("hostile") / "codec.pth", configs.TINY_CODEC_KWARGS, seed=3
    )


@pytest.mark.parametrize("keep", [0, 10, 0.5, 0.99, -22, -1])
def test_truncated_archives_are_refused(coarse, tmp_path, keep):
    # Cut inside the first record, in the middle, inside the central directory, and just
    # before the end-of-directory record's last byte.
    data = coarse.read_bytes()
    cut = int(keep * len(data)) if isinstance(keep, float) else keep % len(data)
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"cut\.pth"):
        load_checkpoint(path)


TENSOR_PICKLE = _checkpoint_pickle(_dict(("w", _tensor(3, [3], [1]))), _kwargs())


def test_archive_with_a_pickle_cut_before_its_stop_is_refused(tmp_path):
    path = _write_archive(tmp_path / "short.pth", TENSOR_PICKLE[:-1], {"0": bytes(12)})
    with pytest.raises(CheckpointError, match=r"short\.pth.*readable torch\.save"):
        load_checkpoint(path)


def test_archive_with_a_pickle_cut_inside_an_opcode_is_refused(tmp_path):
    cut = TENSOR_PICKLE.index(b"state_dict") - 2  # inside BINUNICODE's 4-byte length
    path = _write_archive(tmp_path / "short.pth", TENSOR_PICKLE[:cut], {"0": bytes(12)})
    with pytest.raises(CheckpointError, match=r"short\.pth.*readable torch\.save"):
        load_checkpoint(path)


def test_archive_without_its_pickle_is_refused(tmp_path):
    path = _write_archive(tmp_path / "nopickle.pth", b"", drop=("data.pkl",))
    with pytest.raises(CheckpointError, match=r"nopickle\.pth.*readable torch\.save"):
        load_checkpoint(path)


def test_unrelated_zip_and_empty_file_are_refused(tmp_path):
    unrelated = tmp_path / "photos.pth"
    with zipfile.ZipFile(unrelated, "w") as archive:
        archive.writestr("holiday.jpg", b"\xff\xd8\xff" + bytes(100))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (unrelated, empty):
        with pytest.raises(CheckpointError, match=re.escape(path.name)):
            load_checkpoint(path)


# --- the wrong kind of checkpoint ---------------------------------------------------------


def test_codec_given_as_a_vampnet_model_is_refused(codec):
    with pytest.raises(CheckpointError, match=r"load_vampnet: '.*codec\.pth': kwargs must"):
        load_vampnet(codec)


def test_vampnet_model_given_as_a_codec_is_refused(coarse):
    with pytest.raises(CheckpointError, match=r"load_codec: '.*coarse\.pth': kwargs must"):
        load_codec(coarse)


def test_full_checkpoint_given_as_a_lora_file_is_refused(coarse):
    with pytest.raises(CheckpointError, match=r"coarse\.pth' must map names to tensors"):
        load_lora_state_dict(coarse)


@pytest.mark.parametrize("swap", ["codec as CKPT", "model as --codec"])
def test_export_command_names_the_wrong_file_in_one_line(coarse, codec, tmp_path, capsys, swap):
    checkpoint, codec_arg = (codec, codec) if swap == "codec as CKPT" else (coarse, coarse)
    out = tmp_path / "model.onnx"
    status = main(
        ["export-transformer", str(checkpoint), "--codec", str(codec_arg), "--out", str(out)]
    )
    assert status == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "kwargs must contain" in error
    assert not out.exists()
