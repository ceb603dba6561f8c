"""Sessions with the op library registered, or else the standard-op bodies a graph carries
(`op_path` says which); numpy + onnxruntime only, torch is never imported."""

from __future__ import annotations

import contextlib
import contextvars
import importlib.resources
import importlib.util
import json
import os
import shlex
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import onnx

from .contracts import (
    CONFIG_KEY,
    DEFAULT_PRECISION,
    DEVICES,
    OP_BODIES_INLINED,
    OP_BODIES_KEY,
    SOURCE_KEY,
    VAMP_FILE,
    VAMP_KEY,
)
from .settings import check_threads

try:
    import onnxruntime as ort
except ImportError as err:
    raise ImportError(
        "vampnet_onnx needs ONNX Runtime, installed with one extra: pip install "
        "'vampnet-onnx[cpu]' (onnxruntime), or 'vampnet-onnx[gpu]' (onnxruntime-gpu, for CUDA); "
        "one of the two, never both"
    ) from err


#: glibc's initial mmap threshold: allocations from 128 KiB up get mappings of their own.
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def bound_heap_growth() -> bool:
    """Fix glibc's mmap threshold at `MMAP_THRESHOLD` for this process (programs call this:
    the CLI, the cluster's workers). glibc raises the threshold each time it frees a mapped
    block (up to 32 MiB), after which numpy's large arrays come from the heap, which keeps
    what it grew: a long run's memory then grows with its length (``bench_memory --extend``:
    445 MiB to add 10 minutes against 349 MiB for 1, 332 and 332 MiB with the threshold fixed).
    Leaves a threshold set by ``MALLOC_MMAP_THRESHOLD_`` alone. Returns whether it was set
    (False off glibc)."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def library_name(platform: str = sys.platform) -> str:
    """File name of the op library as CMake names a shared library on `platform` (a
    `sys.platform` value): vampnet_onnx_ops.dll on Windows, libvampnet_onnx_ops.dylib on macOS,
    libvampnet_onnx_ops.so elsewhere."""
    if platform == "win32":
        return "vampnet_onnx_ops.dll"
    if platform == "darwin":
        return "libvampnet_onnx_ops.dylib"
    return "libvampnet_onnx_ops.so"


ModelSource = str | os.PathLike | bytes | onnx.ModelProto


def get_library_path() -> str:
    """Path of the compiled op library installed inside the package (`library_name()`:
    libvampnet_onnx_ops.so, libvampnet_onnx_ops.dylib or vampnet_onnx_ops.dll).

    Register it with `SessionOptions.register_custom_ops_library(path)`, or from C/C++ with
    `RegisterCustomOpsLibrary_V2`. Raises FileNotFoundError if the package was installed without it.
    """
    package = importlib.resources.files("vampnet_onnx")
    library = package / library_name()
    if not library.is_file():
        raise FileNotFoundError(
            f"get_library_path: the op library {library_name()} must be installed in {package}, "
            "got none (reinstall the package with `pip install .` so that it is built)"
        )
    return str(library)


def _provider_names(providers: list) -> list[str]:
    """The names in an onnxruntime providers list (names, or (name, options) pairs)."""
    return [p[0] if isinstance(p, tuple) else p for p in providers]


def _session_options(intra_op_threads: int | None, providers: list = ()) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if _CUDA in _provider_names(providers):
        # Kernels without atomics where onnxruntime has a choice (its CUDA reductions, the
        # norms' means among them): the same logits, bit for bit, run after run.
        options.use_deterministic_compute = True
    # The intra-op threads stop spinning when a run ends. Left spinning (onnxruntime's
    # default), they keep the cores busy for tens of milliseconds after it, and whatever runs
    # next (the other session of a step, the caller's own work) waits for them
    # (docs/architecture.md, "Threads").
    options.add_session_config_entry("session.force_spinning_stop", "1")
    # Errors only: a generation graph's slice inputs are overridable initializers, which
    # onnxruntime warns about on every load although they are meant to be (three scalars that
    # const folding would not help).
    options.log_severity_level = 3
    intra_op_threads = check_threads(intra_op_threads, "create_session", "intra_op_threads")
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    return options


def _model_bytes(path_or_bytes: ModelSource) -> str | bytes:
    if isinstance(path_or_bytes, onnx.ModelProto):
        return path_or_bytes.SerializeToString()
    if isinstance(path_or_bytes, bytes):
        return path_or_bytes
    if isinstance(path_or_bytes, (str, os.PathLike)):
        path = Path(path_or_bytes)
        if not path.is_file():
            raise FileNotFoundError(
                f"create_session: path_or_bytes must be an existing file, got {str(path)!r}"
            )
        return str(path)
    raise TypeError(
        "create_session: path_or_bytes must be a path, bytes or onnx.ModelProto, "
        f"got {type(path_or_bytes).__name__}"
    )


#: The CUDA provider's options for every CUDA session (`device_providers`).
CUDA_OPTIONS = {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"}

#: The devices a session can be asked for by name.
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def _ort_packages() -> list[str]:
    """The installed distributions that provide the `onnxruntime` module."""
    from importlib import metadata

    names = ("onnxruntime", "onnxruntime-gpu")
    installed = []
    for name in names:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        installed.append(name)
    return installed


def device_providers(
    device: str,
    where: str = "create_session",
    name: str = "device",
    cuda_options: dict[str, str] | None = None,
) -> list:
    """The execution providers for `device` ("cpu" or "cuda"), checked against this
    onnxruntime: asking for CUDA where it is unavailable is an error that says why and names
    the fix, never a silent fall back to the CPU. Our ops run on the CPU provider beside CUDA.
    On CUDA, matrix products and convolutions run in exact fp32 (``use_tf32`` 0): onnxruntime's
    CUDA provider would otherwise round their inputs to TF32 (a 10-bit mantissa), an
    approximation whose error against the exact path has not been measured here
    (docs/precision.md). cuDNN's convolution algorithms are chosen by its heuristic, not by
    timing them at the first run (onnxruntime's default), which could choose another algorithm,
    rounding otherwise, in another process. cuda_options: more CUDA provider options (e.g.
    ``{"enable_cuda_graph": "1"}``), over these."""
    prefix = f"{where}: " if where else ""
    if device not in DEVICES:
        raise ValueError(f"{prefix}{name} must be one of {list(DEVICES)}, got {device!r}")
    if device == "cpu":
        return [_CPU]
    packages = _ort_packages()
    available = ort.get_available_providers()
    if _CUDA not in available:
        if len(packages) > 1:
            why = (
                f"both {' and '.join(packages)} are installed and overwrite each other's "
                "onnxruntime module: pip uninstall -y onnxruntime onnxruntime-gpu, then pip "
                "install onnxruntime-gpu"
            )
        else:
            why = (
                f"onnxruntime {ort.__version__} ({', '.join(packages) or 'unknown package'}) has "
                f"only {available}: pip uninstall -y onnxruntime, then pip install "
                "onnxruntime-gpu (its CUDA version must match the driver's)"
            )
        raise ValueError(f"{prefix}{name} 'cuda' needs onnxruntime's {_CUDA}; {why}")
    return [(_CUDA, {**CUDA_OPTIONS, **(cuda_options or {})}), _CPU]


_OP_PATH = "_vampnet_onnx_op_path"  # the attribute create_session sets on its sessions


def op_path(session: ort.InferenceSession) -> str:
    """Which path runs the vampnet_onnx ops of `session`, a session `create_session` made:

    * "library": the compiled op library is registered: its kernels run the graph's op nodes,
      if it has any (same seed, same tokens on every machine);
    * "bodies": their standard-op bodies, which the graph carries (the library could not load,
      or the graph was exported with the bodies inlined): on onnxruntime the kernels' bits,
      slower (docs/ops.md, "Standard-op bodies");
    * "pyop": the numpy twins through onnxruntime-extensions' PyOp (`pyop`), slowest;
    * "none": the library could not load, and the graph uses none of the ops (the
      transformers, the fp32 codec, WaveBeat), so needs none.
    """
    path = getattr(session, _OP_PATH, None)
    if path is None:
        raise ValueError(
            f"op_path: session must come from create_session, got {type(session).__name__} "
            "made elsewhere"
        )
    return path


def _ops_of(model: onnx.ModelProto) -> tuple[set[str], bool, str | None]:
    """(the vampnet_onnx op types `model`'s nodes use, Loop and If bodies included; whether
    it carries a function for each; its `OP_BODIES_KEY` metadata)."""
    from .ops import DOMAIN

    used, pending = set(), [model.graph]
    while pending:
        graph = pending.pop()
        for node in graph.node:
            if node.domain == DOMAIN:
                used.add(node.op_type)
            for attribute in node.attribute:
                pending += [attribute.g] if attribute.HasField("g") else list(attribute.graphs)
    carried = {f.name for f in model.functions if f.domain == DOMAIN}
    meta = {p.key: p.value for p in model.metadata_props}
    return used, used <= carried, meta.get(OP_BODIES_KEY)


def _loaded(path_or_bytes: ModelSource, source: str | bytes) -> onnx.ModelProto:
    """The model of `path_or_bytes` without its external weights (only its nodes, functions
    and metadata are read)."""
    if isinstance(path_or_bytes, onnx.ModelProto):
        return path_or_bytes
    try:
        if isinstance(source, bytes):
            return onnx.load_from_string(source)
        return onnx.load(source, load_external_data=False)
    except Exception as err:  # protobuf's DecodeError, or a file that is not one
        what = f"'{source}'" if isinstance(source, str) else "the model bytes"
        raise ValueError(
            f"create_session: path_or_bytes must be an ONNX model onnxruntime can load, got "
            f"{what} ({err})"
        ) from err


def _reexport_command(model: onnx.ModelProto, path: str | os.PathLike | None = None) -> str:
    """The ``vampnet-onnx export`` command that writes `model` (an exported graph; `path`:
    its file) again with the standard-op bodies (export's default): the weights it came from
    (``--pretrained`` at the recorded revision, or the checkpoints as placeholders), its
    precision, ``--single-graph`` where its folder holds a vamp.onnx, and its folder."""
    meta = {p.key: p.value for p in model.metadata_props}
    source = meta.get(SOURCE_KEY, "")
    if source.startswith("hf://"):
        repo_at, _, lora = source[len("hf://") :].partition(", fine-tune ")
        repo, _, revision = repo_at.partition("@")
        argv = ["--pretrained", "--repo", repo, "--revision", revision]
        argv += ["--lora", lora] if lora else []
    else:
        argv = ["--codec", "CODEC.pth", "--coarse", "COARSE.pth", "--c2f", "C2F.pth"]
    folder = Path(path).parent if path is not None else None
    if VAMP_KEY in meta or (folder is not None and (folder / VAMP_FILE).is_file()):
        argv.append("--single-graph")
    config = json.loads(meta.get(CONFIG_KEY, "{}"))
    config = config.get("coarse", config)  # vamp.onnx holds both transformers' configs
    used, _, _ = _ops_of(model)
    precision = config.get("precision", "int8" if "Snake" in used else DEFAULT_PRECISION)
    if precision != DEFAULT_PRECISION:
        argv += ["--precision", precision]
    argv += ["--out", str(folder) if folder is not None else "DIR"]
    return shlex.join(["vampnet-onnx", "export", *argv])


def create_session(
    path_or_bytes: ModelSource,
    providers: list | None = None,
    intra_op_threads: int | None = None,
    *,
    python_ops: bool | None = None,
    device: str | None = None,
) -> ort.InferenceSession:
    """An onnxruntime.InferenceSession with the vampnet_onnx ops available; `op_path(session)`
    says which path runs them.

    path_or_bytes: an .onnx path, serialized model bytes or an onnx.ModelProto.
    providers: onnxruntime execution providers (default: CPU).
    intra_op_threads: the session's intra-op thread count (default: onnxruntime's choice).
    device: "cpu" or "cuda" (`device_providers`), instead of `providers`.
    python_ops: False: the compiled library only (its load error is raised); True: the
    pure-Python fallback (numpy twins through onnxruntime-extensions' PyOp); None: the compiled
    library, and where it cannot be loaded, with a RuntimeWarning, the standard-op bodies the
    graph carries (`export`'s default), or for a graph without them the Python fallback if
    onnxruntime-extensions is installed; else a ValueError naming the command that re-exports
    the graph with its bodies. A graph that uses none of the ops, or whose bodies are
    inlined, needs no library.
    """
    source = _model_bytes(path_or_bytes)
    if device is not None:
        if providers:
            raise ValueError(
                f"create_session: device and providers must not both be given, got {device!r} "
                f"and {providers}"
            )
        providers = device_providers(device)
    providers = providers or [_CPU]
    if python_ops:
        return _python_ops_session(source, providers, intra_op_threads)
    options = _session_options(intra_op_threads, providers)
    try:
        options.register_custom_ops_library(get_library_path())
    except (FileNotFoundError, RuntimeError, OSError) as error:
        if python_ops is False:
            raise
        return _without_library(path_or_bytes, source, providers, intra_op_threads, error)
    session = _load(source, options, providers)
    # Read from onnxruntime's copy: parsing the model again would cost more than the check.
    inlined = session.get_modelmeta().custom_metadata_map.get(OP_BODIES_KEY) == OP_BODIES_INLINED
    return _with_path(session, "bodies" if inlined else "library")


def _without_library(
    path_or_bytes: ModelSource,
    source: str | bytes,
    providers: list,
    intra_op_threads: int | None,
    error: Exception,
) -> ort.InferenceSession:
    """`create_session`'s path where the op library could not be loaded (`error`)."""
    options = _session_options(intra_op_threads, providers)
    model = _loaded(path_or_bytes, source)
    used, carried, bodies = _ops_of(model)
    if not used:
        path = "bodies" if bodies == OP_BODIES_INLINED else "none"
        return _with_path(_load(source, options, providers), path)
    if carried:
        warnings.warn(
            f"create_session: the compiled op library could not be loaded ({error}); running "
            "the standard-op bodies the graph carries instead (the kernels' tokens on "
            "onnxruntime, slower; docs/ops.md)",
            RuntimeWarning,
            stacklevel=3,
        )
        return _with_path(_load(source, options, providers), "bodies")
    named = str(path_or_bytes) if isinstance(path_or_bytes, (str, os.PathLike)) else None
    command = _reexport_command(model, named)
    if not _python_ops_available():
        raise ValueError(
            "create_session: path_or_bytes must carry the standard-op bodies of the "
            f"vampnet_onnx ops it uses where the op library cannot be loaded ({error}), got "
            f"a graph without them; re-export it with them: {command}"
        ) from error
    warnings.warn(
        f"create_session: the compiled op library could not be loaded ({error}) and the graph "
        "carries no standard-op bodies; running the ops' Python fallback instead (much "
        f"slower). Re-exported with the bodies, it runs without the library: {command}",
        RuntimeWarning,
        stacklevel=3,
    )
    return _python_ops_session(source, providers, intra_op_threads)


def _python_ops_available() -> bool:
    """Whether onnxruntime-extensions, which the Python fallback runs on, is installed."""
    return importlib.util.find_spec("onnxruntime_extensions") is not None


def _python_ops_session(
    source: str | bytes, providers: list, intra_op_threads: int | None
) -> ort.InferenceSession:
    from .pyop import create_python_ops_session

    session = create_python_ops_session(
        source, providers, _session_options(intra_op_threads, providers)
    )
    return _with_path(session, "pyop")


def _with_path(session: ort.InferenceSession, path: str) -> ort.InferenceSession:
    setattr(session, _OP_PATH, path)
    return session


def _load(
    source: str | bytes, options: ort.SessionOptions, providers: list
) -> ort.InferenceSession:
    """An InferenceSession; onnxruntime's load errors (a truncated or foreign file, a missing
    external-data file) become one ValueError line naming the file."""
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime's pybind errors share no base class but Exception
        if not type(err).__module__.startswith("onnxruntime"):
            raise
        what = f"'{source}'" if isinstance(source, str) else "the model bytes"
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"create_session: path_or_bytes must be an ONNX model onnxruntime can load, got "
            f"{what} ({detail})"
        ) from err
    if _CUDA in _provider_names(providers) and _CUDA not in session.get_providers():
        # onnxruntime falls back to the CPU with only a log line when CUDA fails to start.
        raise ValueError(
            f"create_session: providers asked for {_CUDA}, which failed to start (no GPU, or "
            f"the NVIDIA driver / CUDA / cuDNN libraries missing or of another version); in use "
            f"instead: {session.get_providers()}"
        )
    return session


def memcpy_nodes(model: onnx.ModelProto) -> int:
    """Memcpy nodes (MemcpyToHost / MemcpyFromHost) in `model`'s graph and its subgraphs (Loop
    and If bodies): the copies onnxruntime adds between devices, which a session's optimized
    model shows (`added_memcpy_nodes`)."""

    def in_graph(graph: onnx.GraphProto) -> int:
        n = 0
        for node in graph.node:
            n += node.op_type.startswith("Memcpy")
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    n += in_graph(attribute.g)
                for subgraph in attribute.graphs:
                    n += in_graph(subgraph)
        return n

    return in_graph(model.graph)


def added_memcpy_nodes(
    path: str | os.PathLike, device: str, intra_op_threads: int | None = None
) -> int:
    """How many Memcpy nodes onnxruntime adds to the graph file `path` on `device` ("cpu" or
    "cuda"), with the compiled op library registered: the session saves its optimized model
    (weights apart, in a temporary folder) and they are counted there (`memcpy_nodes`). On
    CUDA, each edge between a node the CUDA provider runs and one left to the CPU (an op with
    no CUDA kernel, ours in a build without VAMPNET_CUDA_OPS) costs one; the CPU adds none."""
    source = _model_bytes(Path(path))
    options = _session_options(intra_op_threads)
    options.register_custom_ops_library(get_library_path())
    with tempfile.TemporaryDirectory(prefix="vampnet_onnx-optimized-") as folder:
        optimized = Path(folder) / "optimized.onnx"
        options.optimized_model_filepath = str(optimized)
        # Full-size weights would overflow protobuf's 2 GB inside the saved model.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "optimized.onnx.data"
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        _load(source, options, device_providers(device, "added_memcpy_nodes"))
        return memcpy_nodes(onnx.load(str(optimized), load_external_data=False))


def run(
    session: ort.InferenceSession,
    output_names: list[str] | None,
    feed: dict,
    *,
    release_memory: bool = True,
) -> list:
    """`session.run(output_names, feed)` that Ctrl-C stops.

    Python handles signals only between bytecodes, so a long onnxruntime run (a full-size
    coarse chunk takes over a minute on 2 cores) would ignore Ctrl-C until it returns. Here
    the run happens on a worker thread while this thread waits; a KeyboardInterrupt sets the
    run's `RunOptions.terminate`, waits for onnxruntime to stop at its next node, and is
    raised again (its cause: onnxruntime's "terminate" error).

    release_memory: hand the session's CPU arena back when the run ends (onnxruntime's arena
    shrinkage), so that the activations of one graph are not kept while the next graph runs:
    a vamp then peaks at its weights plus its largest stage instead of the sum of every
    stage's (docs/architecture.md, "Memory"). False for a run that the same session follows
    at once with same-sized work (a generation's steps but the last), which reuses the arena.
    """
    options = _run_options(session, release_memory)
    return _interruptible(lambda: session.run(output_names, feed, options), options)


def run_bound(
    session: ort.InferenceSession,
    binding: ort.IOBinding,
    *,
    release_memory: bool = True,
    graph_id: int | None = None,
) -> None:
    """`session.run_with_iobinding(binding)`, as `run` runs a feed: Ctrl-C stops it, and
    release_memory hands the CPU arena back. The outputs are where `binding` binds them.

    graph_id: the CUDA graph this run captures or replays (onnxruntime's ``gpu_graph_id`` run
    option; a session made with ``enable_cuda_graph``): one per set of bound shapes, >= 1.
    """
    options = _run_options(session, release_memory)
    if graph_id is not None:
        options.add_run_config_entry("gpu_graph_id", str(graph_id))
    _interruptible(lambda: session.run_with_iobinding(binding, options), options)


class Cancelled(Exception):
    """A run stopped because the cancel event of its `cancel_on` scope was set."""


#: The cancel event of the current `cancel_on` scope (None: runs are not cancellable). A
#: context variable, so that every run inside a `Vamp.vamp` sees it without each stage passing
#: it on, and two threads' scopes do not meet.
_CANCEL: contextvars.ContextVar = contextvars.ContextVar("vampnet_onnx_cancel", default=None)


@contextlib.contextmanager
def cancel_on(event: threading.Event | None, where: str, name: str = "cancel"):
    """A scope in which setting `event` (from any thread) stops the work: a `run` or
    `run_bound` in flight gets onnxruntime's `RunOptions.terminate` and stops at its next node,
    one not yet started does not start; either raises `Cancelled` in the thread that entered
    the scope (within about 0.1 s plus one node). None: nothing is cancellable. ValueError
    "<where>: <name> must be a threading.Event or None, got ..." for anything else."""
    if event is not None and not isinstance(event, threading.Event):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be a threading.Event or None, got {event!r}")
    token = _CANCEL.set(event)
    try:
        yield
    finally:
        _CANCEL.reset(token)


def _run_options(session: ort.InferenceSession, release_memory: bool) -> ort.RunOptions:
    options = ort.RunOptions()
    # Errors reach the caller as exceptions; onnxruntime's own log line for a stopped run
    # would only repeat it on stderr.
    options.log_severity_level = 4
    if release_memory and session.get_session_options().enable_cpu_mem_arena:
        # onnxruntime refuses a shrink request for a device without an arena.
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def _interruptible(call, options: ort.RunOptions):
    """`call()` on a worker thread, stopped through `options.terminate` on Ctrl-C (`run`) or
    when the `cancel_on` scope's event is set."""
    cancel = _CANCEL.get()
    if cancel is not None and cancel.is_set():
        raise Cancelled("the run was cancelled before it started")
    outcome: dict = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["result"] = call()
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err
        finally:
            done.set()

    # An Event, not Thread.join: a join that a KeyboardInterrupt breaks into can report the
    # thread finished while it still runs.
    threading.Thread(target=work, name="vampnet_onnx-run", daemon=True).start()
    try:
        while not done.wait(0.1):
            if cancel is not None and cancel.is_set():
                options.terminate = True
                done.wait()
                if "error" in outcome:
                    raise Cancelled("the run was cancelled") from outcome["error"]
    except KeyboardInterrupt:
        options.terminate = True
        done.wait()
        raise KeyboardInterrupt("onnxruntime run stopped") from outcome.get("error")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
