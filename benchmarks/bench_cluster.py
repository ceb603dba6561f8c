"""Throughput of ``vamp --out-dir`` on a local Ray cluster against the same run on one process.

Run: ``python -m benchmarks.bench_cluster [--files 8] [--seconds 10] [--workers 1 2]
[--steps 36] [--threads 1] [--json PATH]`` (needs the ray extra).

Writes `--files` clips of the demo's music (`demo.synth_music`, 44.1 kHz mono), then vamps them
into a fresh folder with the demo's small random-weight models (`demo.demo_models`), side by
side in one run:

- ``local``: `folder.run_jobs` in this process (what ``vamp IN... --out-dir DIR`` does), one
  `Vamp` with `--threads` onnxruntime threads;
- ``ray N``: `distributed.vamp_files` with N workers of `--threads` CPUs each, on a local Ray
  cluster of max(N) x `--threads` CPUs started once for the run.

Each contender runs once (a run is many files; `--repeats` is not used) and is timed from the
call to its return, model loading on the workers included; its outputs are checked to be the
local run's, byte for byte. The figures of merit are seconds of audio per wall-clock second and
its ratio to the local run, and for the Ray runs the seconds until the first file is written
(starting the workers, loading the models in each) and the rate after it. With tiny models they
show Ray's own costs, not the full-size models' speed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import machine_facts, parser, print_table, write_json


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(threads=1)
    p.add_argument("--files", type=int, default=8, help="clips to vamp (default 8)")
    p.add_argument("--seconds", type=float, default=10.0, help="each clip's length (default 10)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="default 1 2")
    p.add_argument("--steps", type=int, default=36, help="coarse steps (default 36)")
    args = p.parse_args(argv)

    import ray
    import soundfile

    from vampnet_onnx import demo, distributed, folder
    from vampnet_onnx.pipeline import Vamp

    models = demo.demo_models()
    audio_seconds = args.files * args.seconds
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = []
        for i in range(args.files):
            clips.append(root / "in" / f"clip{i}.wav")
            clips[-1].parent.mkdir(exist_ok=True)
            soundfile.write(clips[-1], demo.synth_music(args.seconds + 0.01 * i, 44100), 44100)

        def local(out: Path) -> None:
            jobs = folder.plan(clips, out)
            out.mkdir()
            vamp = Vamp(models, threads=args.threads)
            failures = folder.run_jobs(vamp, jobs, steps=args.steps)
            assert not failures, failures

        start = time.perf_counter()
        local(root / "local")
        runs = {"local": (time.perf_counter() - start, None)}
        ray.init(
            num_cpus=max(args.workers) * args.threads,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
        try:
            for workers in args.workers:
                out = root / f"ray{workers}"
                start = time.perf_counter()
                summary = distributed.vamp_files(
                    clips,
                    out,
                    models,
                    workers=workers,
                    threads=args.threads,
                    steps=args.steps,
                    progress=False,
                )
                runs[f"ray {workers}"] = (time.perf_counter() - start, summary)
                assert len(summary.written) == args.files, summary.line()
                for clip in clips:
                    name = folder.output_name(clip)
                    same = (out / name).read_bytes() == (root / "local" / name).read_bytes()
                    assert same, f"{name} differs from the local run's"
        finally:
            ray.shutdown()
    local_rate = audio_seconds / runs["local"][0]
    for name, (seconds, summary) in runs.items():
        rate = audio_seconds / seconds
        row = {"contender": name, "seconds": seconds, "audio_per_second": rate}
        if summary is not None:
            # After the first file: the workers have started and loaded the models.
            row["first_file_seconds"] = summary.first_seconds
            row["audio_per_second_after_first"] = (audio_seconds - args.seconds) / (
                summary.wall_seconds - summary.first_seconds
            )
        results.append(row)
        rows.append([name, f"{seconds:.1f}", f"{rate:.2f}", f"{rate / local_rate:.2f}x"])
        if summary is None:
            rows[-1] += ["-", "-"]
        else:
            after = row["audio_per_second_after_first"]
            rows[-1] += [f"{summary.first_seconds:.1f}", f"{after:.2f}"]
    print_table(
        f"vamp --out-dir: {args.files} clips of {args.seconds:g} s, demo models, "
        f"{args.steps} coarse steps, {args.threads} thread(s) per worker",
        [
            "contender",
            "seconds",
            "audio s / s",
            "vs local",
            "first file at s",
            "audio s / s after it",
        ],
        rows,
    )
    write_json(args.json, {"machine": machine_facts(args.threads), "runs": results})


if __name__ == "__main__":
    main()
