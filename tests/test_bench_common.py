"""benchmarks/common.py's cache rule: a cached export is made again when it is missing, older
than the files it is made from, or older than the exporter code that writes it."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import outdated  # noqa: E402


def test_a_missing_export_is_outdated(tmp_path):
    assert outdated(tmp_path / "coarse.onnx", ("transformer",))


def test_an_export_newer_than_its_inputs_and_exporter_is_current(tmp_path):
    checkpoint, graph = tmp_path / "coarse.pth", tmp_path / "coarse.onnx"
    checkpoint.write_bytes(b"c")
    graph.write_bytes(b"g")
    os.utime(checkpoint, (1, 1))
    assert not outdated(graph, ("transformer",), checkpoint)


def test_an_export_older_than_an_input_is_outdated(tmp_path):
    checkpoint, graph = tmp_path / "coarse.pth", tmp_path / "coarse.onnx"
    graph.write_bytes(b"g")
    checkpoint.write_bytes(b"c")
    os.utime(graph, (1, 1))
    os.utime(checkpoint, (2, 2))
    assert outdated(graph, (), checkpoint)


def test_an_export_older_than_its_exporter_code_is_outdated(tmp_path):
    """What a cache keyed on the graph's input names alone missed: graphs written by older
    code, with today's inputs, measured as if today's code had made them."""
    graph = tmp_path / "coarse.onnx"
    graph.write_bytes(b"g")
    os.utime(graph, (1, 1))
    assert outdated(graph, ("transformer",))
    assert not outdated(graph, ())
