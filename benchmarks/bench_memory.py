"""Peak RSS of ``vampnet-onnx vamp`` against the input's length: memory must stay bounded.

Run: ``python -m benchmarks.bench_memory [--minutes 1 5 10] [--rate 48000] [--channels 2]
[--steps 1] [--onset-mask W] [--extend] [--threads 2] [--json PATH]``.

With ``--extend``, ``vampnet-onnx extend`` continues a 10-s input by each length instead (the
same target: adding 10 minutes within 1.2x of adding 1).

For each length, a synthesised WAV (`demo.synth_music`, at ``--rate`` with ``--channels``, so
the input is resampled and mixed down as a real file would be) is vamped by the CLI in a fresh
process with the demo's small random-weight models (`demo.demo_models`, exported on first use),
and that process's peak RSS is read from the kernel (``wait4``'s ``ru_maxrss``). The models are
small so that the audio's share of the memory shows; the ratio to the first length is the
figure of merit (issue target: a 10-minute input within 1.2x of a 1-minute one). A peak is one
run: `--repeats` is not used.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_facts, parser, print_table, write_json


def _write_input(path: Path, minutes: float, rate: int, channels: int) -> None:
    """A WAV of `minutes` of the demo's music, written a minute at a time (this process's
    memory is not the one measured, but it should not need GBs either)."""
    import soundfile

    from vampnet_onnx import demo

    minute = demo.synth_music(60.0, rate)
    with soundfile.SoundFile(path, "w", rate, channels, "PCM_16") as file:
        left = round(minutes * 60 * rate)
        while left > 0:
            piece = minute[: min(left, minute.shape[0])]
            file.write(np.repeat(piece[:, None], channels, axis=1))
            left -= piece.shape[0]


def _peak_rss_mib(argv: list[str]) -> tuple[float, float]:
    """Run `argv` to completion; (its peak RSS in MiB, seconds). A failure raises."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {process.stderr.read().decode()}")
    return usage.ru_maxrss / 1024.0, seconds


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0, 10.0])
    p.add_argument("--rate", type=int, default=48000, help="input sample rate (default 48000)")
    p.add_argument("--channels", type=int, default=2, help="input channels (default 2)")
    p.add_argument("--steps", type=int, default=1, help="coarse steps (default 1)")
    p.add_argument(
        "--onset-mask",
        type=int,
        default=0,
        metavar="W",
        help="vamp with --onset-mask W, the onset detector on (default 0: off)",
    )
    p.add_argument(
        "--extend",
        action="store_true",
        help="measure `extend` instead: a 10-s input continued by each --minutes (its memory "
        "must not grow with the length added either)",
    )
    args = p.parse_args(argv)

    from vampnet_onnx import demo

    models = demo.demo_models()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            source, out = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
            _write_input(source, 10 / 60 if args.extend else minutes, args.rate, args.channels)
            command = [sys.executable, "-m", "vampnet_onnx.cli"]
            if args.extend:
                command += ["extend", str(source), str(out), "--seconds", str(minutes * 60)]
            else:
                command += ["vamp", str(source), str(out), "--onset-mask", str(args.onset_mask)]
            command += ["--models", str(models), "--steps", str(args.steps), "--quiet"]
            command += ["--threads", str(args.threads)]
            peak, seconds = _peak_rss_mib(command)
            input_mib = source.stat().st_size / 2**20
            results.append({"minutes": minutes, "peak_rss_mib": peak, "seconds": seconds})
            ratio = peak / results[0]["peak_rss_mib"]
            rows.append([f"{minutes:g}", f"{input_mib:.0f}", f"{peak:.0f}", f"{ratio:.2f}x"])
            rows[-1].append(f"{seconds:.0f}")
            source.unlink()
    what = "extend of a 10-s input by" if args.extend else "vamp of"
    print_table(
        f"vampnet-onnx {what} the minutes below, demo models, {args.rate} Hz x "
        f"{args.channels} input, {args.steps} coarse step(s)"
        + ("" if args.extend else f", onset mask {args.onset_mask}"),
        ["minutes", "input MiB", "peak RSS MiB", "vs first", "seconds"],
        rows,
    )
    write_json(args.json, {"machine": machine_facts(args.threads), "runs": results})


if __name__ == "__main__":
    main()
