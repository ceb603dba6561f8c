"""Many audio files vamped on a Ray cluster (``vamp IN... --out-dir DIR --ray``): the optional
``[ray]`` extra, imported by nothing else in the package.

The driver (`vamp_files`) never touches audio. It plans the outputs and decides what is left to
do with the same rules as a local ``--out-dir`` run (`folder`: names, manifest, resume,
failures report), then streams the jobs through a Ray Data actor pool: each actor loads the
models once (a `pipeline.Vamp`, or `SingleGraphVamp` for a vamp.onnx), checks its files'
headers and vamps them with `folder.run_jobs`, writing each output itself through a temporary
file renamed into place. So every output is the file a local run writes for it, byte for byte
at the same thread count, whatever the number of workers or the order they finish in.

Where things must be: the inputs and the output folder on storage every node and the driver
see at the same paths; the models folder at the same path on every node that runs a worker
(shared, or copied to each); the driver need not hold it. A worker killed mid-run has its
files retried by Ray Data on another actor (an output only appears complete, so a file that
is redone is simply written again).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import audio, folder

#: Each actor's own onnxruntime threads when `vamp_files` is not told (one CPU per worker, as
#: many workers as the cluster has CPUs: the most files an hour on CPUs for our model sizes).
DEFAULT_THREADS = 1

#: Seconds a cluster's address may take to answer before the run is refused.
CONNECT_TIMEOUT_S = 10.0


@dataclass
class Summary:
    """What a `vamp_files` run did (every list holds `folder.Job`s or `folder.Failure`s)."""

    written: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    audio_seconds: float = 0.0  # of the inputs written
    wall_seconds: float = 0.0  # from the first job sent to the last result
    first_seconds: float = 0.0  # from the first job sent to the first result (workers starting)

    @property
    def audio_per_second(self) -> float:
        """Seconds of input audio vamped per wall-clock second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def line(self) -> str:
        """The run in one line: files written / skipped / failed and the throughput."""
        return (
            f"{len(self.written)} written, {len(self.skipped)} skipped (complete), "
            f"{len(self.failures)} failed; {self.audio_seconds:.1f} s of audio in "
            f"{self.wall_seconds:.1f} s ({self.audio_per_second:.3g} s of audio per second)"
        )


def vamp_files(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    models: str | os.PathLike,
    *,
    address: str | None = None,
    workers: int | None = None,
    threads: int = DEFAULT_THREADS,
    gpus_per_worker: float = 0,
    batch_size: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    flags: Mapping[str, str] | None = None,
    seed: int = 0,
    **settings: Any,
) -> Summary:
    """Vamp every file of `inputs` into `out_dir` on Ray workers, as
    ``vampnet-onnx vamp IN... --out-dir DIR`` does on one machine (`folder`: same output names,
    same bytes, same manifest, resume and failures report).

    Args:
        inputs: audio files (paths as the workers see them).
        out_dir: the output folder (seen by the driver and every worker).
        models: a models folder (`pipeline.Vamp`) or a vamp.onnx (`SingleGraphVamp`), at this
            path on every worker's node.
        address: the Ray cluster to join (``ray start``'s address, ``"auto"``, or a
            ``ray://`` client address); None: the one this process already joined
            (``ray.init``), else a local one started for the run and stopped after it.
        workers: actors, each holding the models once; None: as many as the cluster's CPUs
            (GPUs with `gpus_per_worker`) hold.
        threads: CPUs each worker reserves, and its onnxruntime threads.
        gpus_per_worker: GPUs each worker reserves; > 0 runs the models on CUDA.
        batch_size: files a `vamp_batch` call (as `Vamp.vamp_batch`; the same outputs at any
            size).
        overwrite: redo every output (else complete ones are skipped, and a folder made with
            other settings or models is refused).
        progress: a bar over the files, on stderr.
        flags: how the caller names these arguments in messages (a front end's options, e.g.
            ``{"overwrite": "--overwrite"}``); keep_rate's entry is the whole advice on writing
            at the codec's rate instead.
        seed, settings: `Vamp.vamp`'s keyword arguments (keep_rate included), for every file.

    Returns:
        a `Summary`; failed files are also listed in ``out_dir/failures.json``.

    Raises:
        ImportError: Ray is not installed (the ``[ray]`` extra).
        ValueError: a bad setting, colliding output names, an unreachable `address`, a models
            folder that does not load on a worker (all before any input is read), or a folder
            holding another run's outputs.
    """
    flags = dict(flags or {})
    named = {k: flags.get(k, k) for k in ("threads", "batch_size", "workers", "gpus_per_worker")}
    where = "" if flags else "vamp_files: "
    ray = _import_ray()
    models = Path(models)
    vamp_class = _vamp_class(models)
    _check_positive(threads, where, named["threads"])
    _check_positive(batch_size, where, named["batch_size"])
    if workers is not None:
        _check_positive(workers, where, named["workers"])
    if isinstance(gpus_per_worker, bool) or not (
        isinstance(gpus_per_worker, int | float) and 0 <= gpus_per_worker < float("inf")
    ):
        raise ValueError(
            f"{where}{named['gpus_per_worker']} must be a number >= 0, got {gpus_per_worker!r}"
        )
    keep_rate = settings.pop("keep_rate", True)
    settings.pop("progress", None)  # the bar here is over files
    vamp_class.check_settings(seed=seed, **settings)
    settings = folder.run_settings(seed=seed, keep_rate=keep_rate, **settings)
    jobs = folder.plan(inputs, out_dir, flags.get("out_dir", "out_dir"))
    out_dir = Path(out_dir)
    rate_hint = flags.get("keep_rate", "keep_rate=False writes at the codec's 44.1 kHz")

    started = _join(ray, address, where, flags.get("address", "address"))
    try:
        options = _Options(models, threads, gpus_per_worker, batch_size, settings, rate_hint)
        _check_fits(ray, threads, gpus_per_worker, where, named)
        made = _probe(ray, options, where, flags.get("models", "models"))
        overwrite_flag = flags.get("overwrite", "overwrite=True")
        todo, done = folder.resume(out_dir, jobs, made, overwrite, overwrite_flag)
        folder.start(out_dir, todo, made)
        summary = Summary(skipped=done)
        try:
            _run(
                ray,
                options,
                todo,
                _workers(ray, workers, threads, gpus_per_worker),
                summary,
                progress,
            )
        finally:
            # A worker killed mid-write leaves its temporary file; the file itself was redone.
            folder.remove_temporaries(out_dir, todo)
            folder.write_failures(out_dir, summary.failures)
        return summary
    finally:
        if started:
            ray.shutdown()


@dataclass(frozen=True)
class _Options:
    """What every worker needs to know (small: it travels to each actor)."""

    models: Path
    threads: int
    gpus_per_worker: float
    batch_size: int
    settings: dict
    rate_hint: str

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    def load(self):
        """The models, as each worker holds them."""
        return _vamp_class(self.models)(self.models, threads=self.threads, device=self.device)


def _vamp_class(models: Path):
    from .pipeline import SingleGraphVamp, Vamp

    return SingleGraphVamp if models.suffix == ".onnx" else Vamp


def _check_positive(value: Any, where: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}{name} must be an integer >= 1, got {value!r}")


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "vamp_files: Ray Data must be installed (pip install 'vampnet-onnx[ray]'), got "
            f"none ({err})"
        ) from None
    return ray


def _join(ray, address: str | None, where: str, flag: str) -> bool:
    """Join the cluster at `address` (or the joined one, or a new local one); True when this
    call started the connection (and is to end it)."""
    _check_reachable(address, where, flag)
    if ray.is_initialized():
        return False
    # Ray's own logs and bars would bury ours: errors only, and our bar.
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
        shown = address if address is not None else "a local cluster"
        raise ValueError(
            f"{where}{flag} must be a reachable Ray cluster, got '{shown}' ({audio.one_line(err)})"
        ) from None
    return True


def _check_reachable(address: str | None, where: str, flag: str) -> None:
    """A ``host:port`` or ``ray://host:port`` address answers on its port (within
    `CONNECT_TIMEOUT_S`): Ray's own connection retries a missing cluster for minutes."""
    if address is None or address == "auto" or address.startswith("local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(
            f"{where}{flag} must be host:port, ray://host:port or auto, got '{address}'"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except (OSError, OverflowError) as err:
        raise ValueError(
            f"{where}{flag} must be a reachable Ray cluster, got '{address}' ({err})"
        ) from None


def _check_fits(ray, threads: int, gpus: float, where: str, named: dict) -> None:
    """A worker's CPUs and GPUs fit on one of the cluster's nodes (else Ray would wait for
    them forever)."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    cpus = max((node.get("CPU", 0) for node in nodes), default=0)
    if threads > cpus:
        raise ValueError(
            f"{where}{named['threads']} must be at most the CPUs of the cluster's largest node, "
            f"{cpus:g}, got {threads}"
        )
    most = max((node.get("GPU", 0) for node in nodes), default=0)
    if gpus > most:
        raise ValueError(
            f"{where}{named['gpus_per_worker']} must be at most the GPUs of the cluster's "
            f"largest node, {most:g}, got {gpus:g}"
        )


def _probe(ray, options: _Options, where: str, flag: str) -> dict:
    """Load the models once on a worker, as the actors will, and return the run's manifest
    (`folder.manifest`, hashed there: the driver may not hold the models). A folder that does
    not load fails here, once, before any input is read."""

    def load_and_describe(options: _Options) -> dict:
        options.load()
        return folder.manifest(options.models, options.settings)

    task = ray.remote(load_and_describe).options(
        num_cpus=options.threads, num_gpus=options.gpus_per_worker, max_retries=0
    )
    try:
        return ray.get(task.remote(options))
    except ray.exceptions.RayTaskError as err:
        cause = err.cause if isinstance(err.cause, Exception) else err
        raise ValueError(
            f"{where}{flag} must load on the workers, got '{options.models}' "
            f"({folder.failure_reason(cause)})"
        ) from None


def _workers(ray, workers: int | None, threads: int, gpus: float) -> int:
    """The actor pool's size: `workers`, or as many as the cluster's resources hold."""
    if workers is not None:
        return workers
    resources = ray.cluster_resources()
    count = int(resources.get("CPU", 1) // threads)
    if gpus > 0:
        count = min(count, int(resources.get("GPU", 0) // gpus))
    return max(count, 1)


def _worker_class(options: _Options):
    """The actor class of a run, with its options bound (they need not travel through Ray's
    object store as constructor arguments)."""

    class VampWorker:
        def __init__(self) -> None:
            from .runtime import bound_heap_growth

            bound_heap_growth()  # a worker's process lives as long as the run
            self.vamp = options.load()
            keep_rate = options.settings.get("keep_rate", True)
            self.output_rate = None if keep_rate else self.vamp.sample_rate
            self.hint = options.rate_hint if keep_rate else None

        def __call__(self, batch: dict) -> dict:
            jobs = [folder.Job(Path(i), Path(o)) for i, o in zip(batch["input"], batch["output"])]
            good, failures = folder.check_jobs(jobs, self.output_rate, self.hint)
            failures += folder.run_jobs(
                self.vamp, good, batch_size=options.batch_size, **options.settings
            )
            reasons = {f.job: f.reason for f in failures}
            return {
                "input": [str(j.input) for j in jobs],
                "output": [str(j.output) for j in jobs],
                "reason": [reasons.get(j, "") for j in jobs],
                "seconds": [0.0 if j in reasons else _seconds(j.input) for j in jobs],
            }

    return VampWorker


def _seconds(path: Path) -> float:
    info = audio.file_info(path)
    return info.n_frames / info.sample_rate


def _run(
    ray, options: _Options, todo: list, workers: int, summary: Summary, progress: bool
) -> None:
    """The jobs `todo` through an actor pool of `workers`, results into `summary`."""
    from tqdm import tqdm

    if not todo:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    rows = [{"input": str(job.input), "output": str(job.output)} for job in todo]
    by_output = {str(job.output): job for job in todo}
    # Files per call: the batch size, or fewer where that leaves workers idle (the outputs
    # are the same at any batch size).
    per_call = max(1, min(options.batch_size, -(-len(todo) // workers)))
    dataset = ray.data.from_items(rows).map_batches(
        _worker_class(options),
        batch_size=per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(todo))),
        num_cpus=options.threads,
        num_gpus=options.gpus_per_worker,
    )
    begin = time.perf_counter()
    with tqdm(
        total=len(todo), desc="vamp", unit="file", disable=not progress, file=sys.stderr
    ) as bar:
        for row in dataset.iter_rows():
            if not summary.first_seconds:
                summary.first_seconds = time.perf_counter() - begin
            job = by_output[str(row["output"])]
            if row["reason"]:
                summary.failures.append(folder.Failure(job, str(row["reason"])))
            else:
                summary.written.append(job)
                summary.audio_seconds += float(row["seconds"])
            bar.update(1)
    summary.wall_seconds = time.perf_counter() - begin
