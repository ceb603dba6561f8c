"""Many audio files vamped into one output folder (``vamp IN... --out-dir DIR``), where one bad
file costs only itself.

- Names: each input goes to ``DIR/<its stem><its extension>``, or ``.wav`` where soundfile
  cannot write that extension. Two inputs with one output name, or an output that would be
  its own input, are refused before any work (`plan`): the command is wrong, not a file.
- Before any work each input is checked on its header (`check_jobs`): it exists, decodes, has
  at least one sample at a rate `audio.preprocess` takes, and its output's format holds the
  output's rate. One that fails is a
  failure; the others go on.
- During the work a file that fails (samples that are not finite, an inpaint range past its
  end, a write error...) is a failure named by its path, and the others complete (`run_jobs`;
  a batch that fails is run again file by file to find which).
- The failures report `contracts.FAILURES_FILE` in the folder lists every failure of the run
  with its one-line reason (`write_failures`); a run without failures removes an earlier one.
- Resumable (`resume`, then `start`): an output that exists is complete (every output is
  written to a temporary file and renamed into place at its end), so a rerun skips it and does
  the rest. The manifest `contracts.MANIFEST_FILE` records the settings and the models' sha256
  before the first output is written; a rerun whose settings or models differ is refused unless
  told to overwrite, which redoes every output. Outputs in a folder without a manifest (written
  before manifests, or by hand) are not taken as done: refused, or redone when told to
  overwrite.

Nothing here imports a front end; the CLI calls it, so does the cluster driver's worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from . import audio
from .contracts import FAILURES_FILE, FAILURES_FORMAT, MANIFEST_FILE, MANIFEST_FORMAT
from .settings import MaskSettings, SamplingSettings, public_name


@dataclass(frozen=True)
class Job:
    """One input file and the output file it is vamped to."""

    input: Path
    output: Path


@dataclass(frozen=True)
class Failure:
    """A job that wrote nothing, and why (one line, naming the setting or the check)."""

    job: Job
    reason: str


def output_name(path: Path) -> str:
    """The output file name of input `path`: its name, or its stem + ``.wav`` where soundfile
    cannot write its extension (``a.m4a`` -> ``a.wav``)."""
    suffix = path.suffix if path.suffix[1:].upper() in soundfile.available_formats() else ".wav"
    return path.stem + suffix


def plan(inputs: Sequence[str | Path], out_dir: str | Path, flag: str = "out_dir") -> list[Job]:
    """The jobs of `inputs` into `out_dir` (`output_name`), in the order given.

    Raises:
        ValueError: two inputs with one output name, or an output that is its input (the
            message names the folder as `flag`).
    """
    out_dir = Path(out_dir)
    jobs: dict[Path, Job] = {}
    for given in inputs:
        path = Path(given)
        out = out_dir / output_name(path)
        if out in jobs:
            raise ValueError(
                f"IN must have distinct names in {flag}, got '{jobs[out].input}' and '{path}', "
                f"both written to '{out}'"
            )
        if out.exists() and path.exists() and os.path.samefile(out, path):
            raise ValueError(
                f"{flag} must not be the input file (it would be overwritten), got '{path}'"
            )
        jobs[out] = Job(path, out)
    return list(jobs.values())


def check_jobs(
    jobs: Iterable[Job], output_rate: int | None = None, hint: str | None = None
) -> tuple[list[Job], list[Failure]]:
    """(the jobs whose input passes the header checks, the failures of the others).

    Args:
        output_rate: the outputs' rate in Hz; None: each input's own rate.
        hint: how to write at another rate, appended where the rate is the trouble.
    """
    good, failed = [], []
    for job in jobs:
        try:
            info = audio.file_info(job.input, "", "IN")
            if info.n_frames < 1:
                raise ValueError(f"IN must hold at least 1 sample, got '{job.input}'")
            audio.check_input_rate(info.sample_rate, "", f"the sample rate of '{job.input}'")
            rate = info.sample_rate if output_rate is None else output_rate
            subtype = audio.kept_subtype(job.output, info)
            audio.check_output_format(job.output, rate, subtype, "", "OUT", hint)
        except (ValueError, OSError) as err:
            failed.append(Failure(job, failure_reason(err)))
        else:
            good.append(job)
    return good, failed


def run_jobs(
    vamp: Any,
    jobs: Sequence[Job],
    *,
    seed: int = 0,
    batch_size: int = 1,
    on_written: Callable[[Job, int], None] | None = None,
    on_failed: Callable[[Failure], None] | None = None,
    **settings: Any,
) -> list[Failure]:
    """Vamp every job's input to its output with `vamp` (a `pipeline.Vamp` or
    `SingleGraphVamp`) and `settings` (`vamp`'s keyword arguments), each file as
    ``vamp.vamp_file(job.input, job.output, seed=seed, **settings)`` would; with a `Vamp`,
    `batch_size` files a `vamp_batch` call. A file that fails is returned (and passed to
    `on_failed`) and the others go on; `on_written(job, rate)` after each output. Ctrl-C
    stops the run (outputs already written stay)."""
    failures: list[Failure] = []

    def failed(job: Job, err: Exception) -> None:
        failures.append(Failure(job, failure_reason(err)))
        if on_failed is not None:
            on_failed(failures[-1])

    def written(job: Job, rate: int) -> None:
        if on_written is not None:
            on_written(job, rate)

    if not hasattr(vamp, "vamp_batch"):
        for job in jobs:
            try:
                _, rate = vamp.vamp_file(job.input, job.output, seed=seed, **settings)
            except Exception as err:  # one file's failure, whatever it is, costs only it
                failed(job, err)
            else:
                written(job, rate)
        return failures
    for first in range(0, len(jobs), batch_size):
        group = []
        for job in jobs[first : first + batch_size]:
            try:
                group.append((job, *audio.load_audio(job.input)))
            except Exception as err:
                failed(job, err)
        try:
            results = _vamp_group(vamp, group, seed, batch_size, settings)
        except Exception as err:
            if len(group) == 1:
                failed(group[0][0], err)
                continue
            results = []
            for member in group:  # which file it was: each alone (the same tokens, docs)
                try:
                    results += _vamp_group(vamp, [member], seed, batch_size, settings)
                except Exception as err_alone:
                    failed(member[0], err_alone)
        for job, y, rate in results:
            try:
                subtype = audio.kept_subtype(job.output, audio.file_info(job.input))
                audio.write_audio(job.output, y, rate, subtype)
            except Exception as err:
                failed(job, err)
            else:
                written(job, rate)
    return failures


def _vamp_group(vamp, group: list, seed: int, batch_size: int, settings: dict) -> list:
    """[(job, samples, rate)] of `vamp.vamp_batch` on the loaded `group` [(job, x, rate)]."""
    if not group:
        return []
    results = vamp.vamp_batch(
        [x for _, x, _ in group],
        [rate for _, _, rate in group],
        seeds=seed,
        batch_size=batch_size,
        **settings,
    )
    return [(job, y, rate) for (job, _, _), (y, rate) in zip(group, results)]


def run_settings(**settings: Any) -> dict[str, Any]:
    """`settings` (`vamp`'s keyword arguments) with every sampling and mask setting, seed and
    keep_rate filled in at its default where not given: the settings as a manifest records
    them, so that runs that differ only in which defaults were spelt out share a folder."""
    filled = {"seed": 0, "keep_rate": True}
    for cls in (SamplingSettings, MaskSettings):
        filled.update({public_name(f.name): f.default for f in fields(cls)})
    filled.update(settings)
    if not filled.get("context_s", 1):  # 0, the default, as the CLI records it: absent
        del filled["context_s"]
    return filled


def manifest(models: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a run with `settings` (`vamp`'s keyword arguments; `progress` left
    out, a mask array by its sha256) and the models folder (or vamp.onnx) `models`: every
    ``.onnx`` and ``.onnx.data`` file there by its sha256."""
    models = Path(models)
    if models.is_dir():
        files = sorted(p for p in models.iterdir() if p.name.endswith((".onnx", ".onnx.data")))
    else:
        files = [p for p in (models, models.with_name(models.name + ".data")) if p.is_file()]
    recorded = {k: _plain(v) for k, v in sorted(settings.items()) if k != "progress"}
    return {
        "format": MANIFEST_FORMAT,
        "settings": recorded,
        "models": {p.name: _sha256(p) for p in files},
    }


def resume(
    out_dir: str | Path,
    jobs: Sequence[Job],
    made: dict[str, Any],
    overwrite: bool = False,
    flag: str = "--overwrite",
) -> tuple[list[Job], list[Job]]:
    """(the jobs to run, the jobs whose output is already complete) in `out_dir` for a run
    whose manifest is `made` (`manifest`); nothing is written (`start` does that).

    Raises:
        ValueError: without `overwrite`, the folder's manifest records other settings or
            models (the first difference named), or outputs exist beside no manifest.
    """
    out_dir = Path(out_dir)
    path = out_dir / MANIFEST_FILE
    done = [] if overwrite else [job for job in jobs if job.output.exists()]
    if not overwrite and path.is_file():
        difference = _difference(_read_json(path, MANIFEST_FORMAT), made)
        if difference is not None:
            raise ValueError(
                f"the output folder must hold outputs of these settings and models to go "
                f"on, got '{out_dir}' made with {difference} ({MANIFEST_FILE}); {flag} "
                "redoes every output"
            )
    elif done:
        raise ValueError(
            f"the output folder must not hold outputs of an unknown run, got "
            f"'{done[0].output.name}' in '{out_dir}' and no {MANIFEST_FILE}; {flag} "
            "redoes every output"
        )
    return [job for job in jobs if job not in done], done


def start(out_dir: str | Path, todo: Sequence[Job], made: dict[str, Any]) -> None:
    """Make `out_dir` ready for the jobs `todo` of a run whose manifest is `made`: the folder
    made, the temporary files a killed run left for those outputs removed, the manifest
    written (before the first output, so that an interrupted run can be resumed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out_dir, todo)
    _write_json(out_dir / MANIFEST_FILE, made)


def remove_temporaries(out_dir: str | Path, jobs: Iterable[Job]) -> None:
    """Remove the temporary files that runs stopped mid-write (killed) left in `out_dir` for
    the outputs of `jobs` (none may be writing them now)."""
    for job in jobs:
        for stale in Path(out_dir).glob(f".{job.output.name}.*.tmp"):
            stale.unlink(missing_ok=True)


def _difference(recorded: dict, made: dict) -> str | None:
    """The first setting or model file that differs, in words, or None."""
    for part in ("settings", "models"):
        old, new = recorded.get(part, {}), made[part]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                what = "the model file" if part == "models" else "the setting"
                there, here = old.get(key, "absent"), new.get(key, "absent")
                return f"{what} {key} {there!r} there, {here!r} here"
    return None


def _plain(value: Any) -> Any:
    """A setting as JSON holds it: tuples as lists, numpy scalars as numbers, arrays by hash."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest = hashlib.sha256(array.tobytes() + str((array.dtype, array.shape)).encode())
        return f"sha256:{digest.hexdigest()}"
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_failures(out_dir: str | Path, failures: Sequence[Failure]) -> Path | None:
    """The failures report of a run into `out_dir` (`contracts.FAILURES_FILE`), written whole
    (a temporary file renamed into place), or, for a run without failures, an earlier one
    removed. Returns its path, or None when there is none."""
    path = Path(out_dir) / FAILURES_FILE
    if not failures:
        path.unlink(missing_ok=True)
        return None
    report = {
        "format": FAILURES_FORMAT,
        "failed": [
            {"input": str(f.job.input), "output": str(f.job.output), "reason": f.reason}
            for f in failures
        ],
    }
    _write_json(path, report)
    return path


def _write_json(path: Path, content: dict) -> None:
    """`content` as JSON at `path`, whole or not at all (a temporary file renamed into place)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(content, file, indent=1)
            file.write("\n")
        os.chmod(temporary, audio.new_file_mode())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _read_json(path: Path, kind: str) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{path} must be a {kind!r} file, got one that does not read ({err})"
        ) from None
    if not isinstance(content, dict) or content.get("format") != kind:
        raise ValueError(f"{path} must be a {kind!r} file, got another")
    return content


def read_failures(out_dir: str | Path) -> list[dict]:
    """The entries of `out_dir`'s failures report (``input``, ``output``, ``reason``), [] when
    it has none."""
    path = Path(out_dir) / FAILURES_FILE
    if not path.is_file():
        return []
    return _read_json(path, FAILURES_FORMAT)["failed"]


def failure_reason(err: BaseException) -> str:
    """One line: the message's first line, with the type where it is not the user's error."""
    text = audio.one_line(err)
    return text if isinstance(err, ValueError | OSError) else f"{type(err).__name__}: {text}"
