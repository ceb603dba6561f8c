"""Sessions: finding and registering the op library, model sources, the Python fallback."""

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import vampnet_onnx
from conftest import ONNX_IR_VERSION, op_model, sample_feed
from vampnet_onnx import contracts, ops, ops_functions, reference, runtime, settings


def test_library_is_installed_inside_the_package():
    path = Path(vampnet_onnx.get_library_path())
    assert path.is_file()
    assert path.parent == Path(vampnet_onnx.__file__).parent


@pytest.mark.parametrize(
    "platform, name",
    [
        ("linux", "libvampnet_onnx_ops.so"),
        ("darwin", "libvampnet_onnx_ops.dylib"),
        ("win32", "vampnet_onnx_ops.dll"),
    ],
)
def test_library_name_is_the_one_cmake_gives_on_each_platform(platform, name):
    assert runtime.library_name(platform) == name


def test_library_registers_into_a_plain_session():
    options = ort.SessionOptions()
    options.register_custom_ops_library(vampnet_onnx.get_library_path())
    session = ort.InferenceSession(op_model(ops.SAMPLE_TOKENS).SerializeToString(), options)
    tokens, _ = session.run(None, sample_feed(np.eye(3, dtype=np.float32), temperature=0.0))
    np.testing.assert_array_equal(tokens, [0, 1, 2])


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "proto"])
def test_create_session_accepts_every_model_source(tmp_path, kind):
    model = op_model(ops.SAMPLE_TOKENS)
    file = tmp_path / "op.onnx"
    file.write_bytes(model.SerializeToString())
    source = {"path": file, "str": str(file), "bytes": model.SerializeToString(), "proto": model}[
        kind
    ]
    session = vampnet_onnx.create_session(source, intra_op_threads=1)
    assert [i.name for i in session.get_inputs()] == ops.SAMPLE_TOKENS.input_names


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, settings.max_threads() + 1, 100_000, 2**31])
def test_create_session_rejects_bad_thread_counts(threads):
    """Before: 1000 hung, 100000 grew memory without end, 2**31 was a pybind TypeError."""
    limit = settings.max_threads()
    with pytest.raises(
        ValueError,
        match=rf"create_session: intra_op_threads must be an int in \[1, {limit}\] \(4 per CPU",
    ):
        vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS), intra_op_threads=threads)


def test_numpy_thread_counts_are_taken():
    session = vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS), intra_op_threads=np.int64(1))
    assert session.get_session_options().intra_op_num_threads == 1


def test_create_session_names_a_missing_file(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match="create_session: path_or_bytes must be an existing file, got '.*missing.onnx'",
    ):
        vampnet_onnx.create_session(tmp_path / "missing.onnx")


def test_create_session_rejects_other_sources():
    with pytest.raises(
        TypeError,
        match="create_session: path_or_bytes must be a path, bytes or onnx.ModelProto, got int",
    ):
        vampnet_onnx.create_session(42)


def _library_missing(monkeypatch, tmp_path):
    def missing():
        raise FileNotFoundError(f"no library in {tmp_path}")

    monkeypatch.setattr(runtime, "get_library_path", missing)


def test_falls_back_to_python_ops_with_a_warning_when_the_library_cannot_load(
    monkeypatch, tmp_path
):
    _library_missing(monkeypatch, tmp_path)
    logits = np.random.default_rng(0).standard_normal((6, 9)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="running the ops' Python fallback"):
        session = vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS))
    assert vampnet_onnx.op_path(session) == "pyop"
    tokens, logprob = session.run(None, sample_feed(logits, seed=4, offset=1))
    want = reference.sample_tokens(logits, seed=4, offset=1)
    np.testing.assert_array_equal(tokens, want[0])
    np.testing.assert_array_equal(logprob, want[1])


def test_python_ops_false_refuses_the_fallback(monkeypatch, tmp_path):
    _library_missing(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError, match="no library"):
        vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS), python_ops=False)


def test_python_ops_raise_the_same_errors():
    session = vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS), python_ops=True)
    with pytest.raises(Exception, match=r"SampleTokens: top_p must be in \(0, 1\], got 1.5"):
        session.run(None, sample_feed(np.zeros((2, 3), np.float32), top_p=1.5))


# --- which path runs the ops (op_path) -----------------------------------------------------------


def sampled_by(session) -> list[np.ndarray]:
    """SampleTokens' outputs from `session` on fixed logits, seed and offset."""
    logits = np.random.default_rng(1).standard_normal((5, 11)).astype(np.float32)
    return session.run(None, sample_feed(logits, temperature=0.7, seed=-9, offset=3))


def twin_sampled() -> list[np.ndarray]:
    logits = np.random.default_rng(1).standard_normal((5, 11)).astype(np.float32)
    return list(reference.sample_tokens(logits, temperature=0.7, seed=-9, offset=3))


def test_a_graph_without_bodies_runs_on_the_library():
    # Folders exported before the bodies (no op_bodies metadata) keep their path.
    session = vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS))
    assert vampnet_onnx.op_path(session) == "library"
    for got, want in zip(sampled_by(session), twin_sampled(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_graph_with_bodies_runs_on_the_library_where_it_loads():
    model = ops_functions.attach_functions(op_model(ops.SAMPLE_TOKENS))
    assert vampnet_onnx.op_path(vampnet_onnx.create_session(model)) == "library"


def test_a_graph_with_bodies_runs_them_with_a_warning_where_the_library_cannot_load(
    monkeypatch, tmp_path
):
    _library_missing(monkeypatch, tmp_path)
    model = ops_functions.attach_functions(op_model(ops.SAMPLE_TOKENS))
    with pytest.warns(RuntimeWarning, match="running the standard-op bodies the graph carries"):
        session = vampnet_onnx.create_session(model)
    assert vampnet_onnx.op_path(session) == "bodies"
    for got, want in zip(sampled_by(session), twin_sampled(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_graph_with_inlined_bodies_runs_them_even_with_the_library():
    model = ops_functions.inline_functions(op_model(ops.SAMPLE_TOKENS))
    model.metadata_props.add(key=contracts.OP_BODIES_KEY, value=contracts.OP_BODIES_INLINED)
    session = vampnet_onnx.create_session(model)
    assert vampnet_onnx.op_path(session) == "bodies"
    for got, want in zip(sampled_by(session), twin_sampled(), strict=True):
        np.testing.assert_array_equal(got, want)


def add_model() -> onnx.ModelProto:
    """y = x + x: a graph of standard ops only."""
    info = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "x"], ["y"])],
        "add",
        [info("x", onnx.TensorProto.FLOAT, [2])],
        [info("y", onnx.TensorProto.FLOAT, [2])],
    )
    opsets = [onnx.helper.make_opsetid("", 20)]
    return onnx.helper.make_model(graph, opset_imports=opsets, ir_version=ONNX_IR_VERSION)


def test_a_graph_without_the_ops_needs_no_library(monkeypatch, tmp_path, recwarn):
    _library_missing(monkeypatch, tmp_path)
    session = vampnet_onnx.create_session(add_model())
    assert vampnet_onnx.op_path(session) == "none"
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def _without_python_ops(monkeypatch, tmp_path):
    _library_missing(monkeypatch, tmp_path)
    monkeypatch.setattr(runtime, "_python_ops_available", lambda: False)


def test_a_graph_without_bodies_and_no_library_names_the_command_that_re_exports_it(
    monkeypatch, tmp_path
):
    _without_python_ops(monkeypatch, tmp_path)
    model = op_model(ops.SAMPLE_TOKENS)
    source = "hf://hugggof/vampnet@0123abc, fine-tune jazz"
    model.metadata_props.add(key=contracts.SOURCE_KEY, value=source)
    model.metadata_props.add(key=contracts.CONFIG_KEY, value='{"precision": "int8"}')
    onnx.save(model, str(tmp_path / contracts.GENERATION_FILES["coarse"]))
    (tmp_path / contracts.VAMP_FILE).write_bytes(b"")
    command = (
        "vampnet-onnx export --pretrained --repo hugggof/vampnet --revision 0123abc --lora jazz "
        f"--single-graph --precision int8 --out {tmp_path}"
    )
    with pytest.raises(ValueError) as raised:
        vampnet_onnx.create_session(tmp_path / contracts.GENERATION_FILES["coarse"])
    assert str(raised.value) == (
        "create_session: path_or_bytes must carry the standard-op bodies of the vampnet_onnx "
        f"ops it uses where the op library cannot be loaded (no library in {tmp_path}), got a "
        f"graph without them; re-export it with them: {command}"
    )


def test_the_re_export_command_of_a_graph_from_checkpoints_names_them_as_placeholders(
    monkeypatch, tmp_path
):
    _without_python_ops(monkeypatch, tmp_path)
    with pytest.raises(
        ValueError,
        match=r"re-export it with them: vampnet-onnx export --codec CODEC\.pth --coarse "
        r"COARSE\.pth --c2f C2F\.pth --out DIR$",
    ):
        vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS).SerializeToString())


def test_op_path_refuses_a_session_made_elsewhere():
    session = ort.InferenceSession(add_model().SerializeToString())
    with pytest.raises(
        ValueError, match="op_path: session must come from create_session, got InferenceSession"
    ):
        vampnet_onnx.op_path(session)


def test_make_node_checks_input_counts_and_attributes():
    with pytest.raises(ValueError, match="SampleTokens: inputs must have 6 to 7 names, got 2"):
        ops.SAMPLE_TOKENS.make_node(["a", "b"], ["t", "l"])
    with pytest.raises(ValueError, match="MaskGitStep: attribute must be one of"):
        ops.MASK_GIT_STEP.make_node([str(i) for i in range(10)], ["a", "b", "c"], coupled=1)
    node = ops.MASK_GIT_STEP.make_node(
        [str(i) for i in range(10)], ["a", "b", "c"], batch_coupled=1
    )
    assert node.domain == ops.DOMAIN == "vampnet_onnx"


@pytest.mark.parametrize("content", [b"not a model", None])
def test_a_truncated_or_foreign_file_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "broken.onnx"
    whole = op_model(ops.SAMPLE_TOKENS).SerializeToString()
    path.write_bytes(content if content is not None else whole[: len(whole) // 2])
    with pytest.raises(ValueError) as error:
        vampnet_onnx.create_session(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"create_session: path_or_bytes must be an ONNX model onnxruntime can load, got '{path}'"
    )


def _slow_loop_model() -> onnx.ModelProto:
    """A Loop of `n` identity MatMuls on a [256, 256] matrix: runs as long as n asks."""
    h = onnx.helper
    square = [256, 256]
    body = h.make_graph(
        [h.make_node("MatMul", ["x_in", "w"], ["y"]), h.make_node("Identity", ["c_in"], ["c"])],
        "body",
        [
            h.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            h.make_tensor_value_info("c_in", onnx.TensorProto.BOOL, []),
            h.make_tensor_value_info("x_in", onnx.TensorProto.FLOAT, square),
        ],
        [
            h.make_tensor_value_info("c", onnx.TensorProto.BOOL, []),
            h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, square),
        ],
    )
    graph = h.make_graph(
        [h.make_node("Loop", ["n", "", "x"], ["out"], body=body)],
        "slow",
        [
            h.make_tensor_value_info("n", onnx.TensorProto.INT64, []),
            h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, square),
        ],
        [h.make_tensor_value_info("out", onnx.TensorProto.FLOAT, square)],
        [onnx.numpy_helper.from_array(np.eye(256, dtype=np.float32), "w")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 20)], ir_version=ONNX_IR_VERSION)


def _bind(session: ort.InferenceSession, feed: dict) -> ort.IOBinding:
    binding = session.io_binding()
    for name, value in feed.items():
        binding.bind_cpu_input(name, value)
    binding.bind_output(session.get_outputs()[0].name)
    return binding


@pytest.mark.parametrize("bound", [False, True], ids=["run", "run_bound"])
def test_ctrl_c_stops_a_running_graph_inside_its_loop(bound):
    """Ctrl-C (KeyboardInterrupt in the main thread) during `runtime.run` or `run_bound` sets
    the run's terminate flag: onnxruntime stops inside the Loop with its terminate error (the
    cause) and the interrupt reaches the caller. Uninterrupted, the loop would run for
    minutes."""
    import _thread
    import signal
    import threading

    session = vampnet_onnx.create_session(_slow_loop_model(), intra_op_threads=1)
    feed = {"n": np.array(10**7, np.int64), "x": np.ones((256, 256), np.float32)}
    # A shell's background job starts with SIGINT ignored, and then interrupt_main does
    # nothing: Python's own handler, as in a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.5, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt) as interrupt:
            if bound:
                runtime.run_bound(session, _bind(session, feed))
            else:
                runtime.run(session, None, feed)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "terminate flag" in str(interrupt.value.__cause__)


def test_run_returns_the_outputs_and_raises_the_runs_errors():
    session = vampnet_onnx.create_session(_slow_loop_model(), intra_op_threads=1)
    x = np.arange(256 * 256, dtype=np.float32).reshape(256, 256)
    [out] = runtime.run(session, None, {"n": np.array(3, np.int64), "x": x})
    np.testing.assert_array_equal(out, x)
    with pytest.raises(Exception, match="invalid dimensions for input: x"):
        runtime.run(session, None, {"n": np.array(3, np.int64), "x": x[:2]})


def test_run_bound_writes_the_bound_outputs_and_raises_the_runs_errors():
    session = vampnet_onnx.create_session(_slow_loop_model(), intra_op_threads=1)
    x = np.arange(256 * 256, dtype=np.float32).reshape(256, 256)
    binding = _bind(session, {"n": np.array(3, np.int64), "x": x})
    runtime.run_bound(session, binding)
    np.testing.assert_array_equal(binding.copy_outputs_to_cpu()[0], x)
    bad = _bind(session, {"n": np.array(3, np.int64), "x": x[:2]})
    with pytest.raises(Exception, match="invalid dimensions for input: x"):
        runtime.run_bound(session, bad)


def test_sessions_stop_their_threads_spinning_when_a_run_ends():
    """onnxruntime's threads otherwise spin on for tens of milliseconds after a run, taking
    the cores from whatever runs next (docs/architecture.md, "Threads")."""
    session = vampnet_onnx.create_session(_slow_loop_model(), intra_op_threads=2)
    entry = session.get_session_options().get_session_config_entry
    assert entry("session.force_spinning_stop") == "1"


_ARENA_PROBE = """
import sys
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from vampnet_onnx import runtime

# y = sum(expand(x + x, [n])): the expanded 256 MiB intermediate is allocated from the CPU
# arena. The small x + x comes first because onnxruntime never hands back the arena's first
# region, as in a real graph, whose first allocations are small.
n = 64 * 2**20
graph = helper.make_graph(
    [
        helper.make_node("Add", ["x", "x"], ["x2"]),
        helper.make_node("Expand", ["x2", "shape"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0),
    ],
    "arena_probe",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    [helper.make_tensor("shape", TensorProto.INT64, [1], [n])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
options = ort.SessionOptions()
options.enable_cpu_mem_arena = sys.argv[1] != "no-arena"
session = ort.InferenceSession(model.SerializeToString(), options)


def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024


before = rss_mib()
feed = {"x": np.ones(1, np.float32)}
[y] = runtime.run(session, None, feed, release_memory=sys.argv[1] != "keep")
assert y == 2 * n, y
print(rss_mib() - before)
"""


def _rss_growth_after_a_run(mode: str) -> float:
    """MiB of RSS a run of a graph with a 256 MiB intermediate leaves behind, in a fresh
    process (mode "release", "keep" or "no-arena": a session without an arena)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _ARENA_PROBE, mode], capture_output=True, text=True, check=True
    )
    return float(result.stdout)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_run_hands_the_arena_back_unless_asked_to_keep_it():
    """The default run frees its activations when it ends (a vamp's stages do not pile up);
    release_memory=False keeps them in the arena for the next run of the same size."""
    assert _rss_growth_after_a_run("keep") > 200
    assert _rss_growth_after_a_run("release") < 50


def test_run_releases_nothing_from_a_session_without_an_arena():
    """onnxruntime refuses a shrink request where there is no arena: run must not ask."""
    assert _rss_growth_after_a_run("no-arena") < 50


def test_device_cpu_is_the_cpu_provider():
    session = vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS), device="cpu")
    assert session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here"
)
def test_cuda_where_onnxruntime_has_none_is_an_error_naming_the_fix():
    """No silent CPU fallback: the error says which provider is missing, what this
    onnxruntime has, and how to install the GPU package."""
    with pytest.raises(ValueError) as error:
        vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS), device="cuda")
    message = str(error.value)
    assert message.startswith("create_session: device 'cuda' needs onnxruntime's CUDAExecution")
    assert "CPUExecutionProvider" in message and "pip install onnxruntime-gpu" in message


def test_device_must_be_known_and_not_given_with_providers():
    with pytest.raises(ValueError, match=r"device must be one of \['cpu', 'cuda'\], got 'tpu'"):
        vampnet_onnx.create_session(op_model(ops.SAMPLE_TOKENS), device="tpu")
    with pytest.raises(ValueError, match="device and providers must not both be given"):
        vampnet_onnx.create_session(
            op_model(ops.SAMPLE_TOKENS), providers=["CPUExecutionProvider"], device="cpu"
        )


def test_both_onnxruntime_packages_are_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(runtime, "_ort_packages", lambda: ["onnxruntime", "onnxruntime-gpu"])
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="both onnxruntime and onnxruntime-gpu are installed"):
        runtime.device_providers("cuda")


def test_cuda_runs_exact_fp32_matrix_products_unless_told_otherwise(monkeypatch):
    """onnxruntime's CUDA provider defaults to TF32 (a 10-bit mantissa in matmuls and
    convolutions) and to timing cuDNN's algorithms: every CUDA session asks for exact fp32 and
    the heuristic's choice, and extra options add to that."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider"])
    cpu = "CPUExecutionProvider"
    options = {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"}
    assert runtime.device_providers("cuda") == [("CUDAExecutionProvider", options), cpu]
    graph = runtime.device_providers("cuda", cuda_options={"enable_cuda_graph": "1"})
    assert graph[0] == ("CUDAExecutionProvider", {**options, "enable_cuda_graph": "1"})


def test_cuda_sessions_ask_for_deterministic_kernels_and_cpu_sessions_keep_the_default():
    cuda = runtime._session_options(2, [("CUDAExecutionProvider", {}), "CPUExecutionProvider"])
    assert cuda.use_deterministic_compute
    assert not runtime._session_options(2, ["CPUExecutionProvider"]).use_deterministic_compute


def test_memcpy_nodes_counts_those_inside_loop_bodies():
    h = onnx.helper
    body = h.make_graph(
        [h.make_node("MemcpyToHost", ["x"], ["y"]), h.make_node("Identity", ["y"], ["z"])],
        "body",
        [],
        [],
    )
    graph = h.make_graph(
        [
            h.make_node("MemcpyFromHost", ["a"], ["b"]),
            h.make_node("Loop", ["n", "c"], ["d"], body=body),
        ],
        "main",
        [],
        [],
    )
    assert runtime.memcpy_nodes(h.make_model(graph)) == 2


def test_the_cpu_adds_no_memcpy_nodes_to_our_ops(tmp_path):
    path = tmp_path / "sample.onnx"
    onnx.save(op_model(ops.SAMPLE_TOKENS), path)
    assert runtime.added_memcpy_nodes(path, "cpu", intra_op_threads=1) == 0


_HEAP_PROBE = """
import ctypes, sys
import numpy as np
from vampnet_onnx.runtime import bound_heap_growth

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "bound":
    assert bound_heap_growth()
mapped = libc.mallinfo2().hblkhd
freed = np.ones(2 << 20)  # 16 MiB, mapped; freeing it raises glibc's threshold to 16 MiB
del freed
kept = np.ones(1 << 19)  # 4 MiB: mapped of its own only below the threshold
print(libc.mallinfo2().hblkhd - mapped >= kept.nbytes)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="glibc's malloc",
)
@pytest.mark.parametrize("mode, mapped", [("bound", "True"), ("free", "False")])
def test_bound_heap_growth_keeps_large_arrays_in_their_own_mappings(mode, mapped):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _HEAP_PROBE, mode], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == mapped
