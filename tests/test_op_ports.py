"""The C++ ops name their inputs and outputs by the enums Input and Output (csrc/ops/<op>.h),
which must list the ports of the op's schema (vampnet_onnx.ops) in the same order and by the same
names: ONNX Runtime hands a custom op its inputs by position only, so a port out of place would
read the wrong tensor."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vampnet_onnx import ops

OPS_SOURCE = Path(__file__).resolve().parents[1] / "csrc" / "ops"


def snake_case(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def enum_ports(header: str, enum: str) -> list[str]:
    """The port names of `enum class <enum> : size_t {kFooBar, ..., kCount}`, as foo_bar."""
    match = re.search(rf"enum class {enum} : size_t \{{([^}}]*)\}}", header)
    assert match, f"enum class {enum} not found"
    names = [name.strip() for name in match.group(1).split(",") if name.strip()]
    assert names[-1] == "kCount", f"{enum} must end in kCount, got {names[-1]}"
    return [snake_case(name.removeprefix("k")) for name in names[:-1]]


@pytest.mark.parametrize("schema", ops.SCHEMAS, ids=lambda schema: schema.name)
def test_port_enums_list_the_schema_ports_in_order(schema):
    header = (OPS_SOURCE / f"{snake_case(schema.name)}.h").read_text()
    assert enum_ports(header, "Input") == schema.input_names
    assert enum_ports(header, "Output") == schema.output_names
