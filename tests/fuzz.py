"""Fuzz the edge CLI with mutated model files: no signal, no hang, no traceback, bounded memory.

``python tests/fuzz.py MODEL.tflite --n 300`` mutates the flatbuffer of a real deployment file N times
(bytes flipped, 32-bit fields overwritten with boundary values), re-embeds the card with a
recomputed SHA-256 (as an attacker who can write the file would), and runs ``predict`` (jsonl and
table) and ``info`` on each in a child process with a time and an address-space limit. It prints one
JSON summary: runs, signals, hangs, tracebacks, peak child RSS, outcomes; the exit status is 1 if
any run crashed, hung or printed a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BOUNDARY = (0, 1, 2, 3, 5, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


@dataclass(frozen=True)
class Run:
    """One child run: what it was, how it ended, its peak RSS and wall time."""

    case: str
    command: str
    returncode: int | None
    """None: killed after the timeout (a hang)."""
    traceback: bool
    one_line_error: bool
    peak_rss_mb: float
    seconds: float


def mutate(flat: bytes, rng: Any) -> bytes:
    """One random mutation of a flatbuffer: 1-8 byte flips, or a 32-bit field set to a boundary value."""
    data = bytearray(flat)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, len(data)))
            data[i] ^= 1 << int(rng.integers(0, 8))
    else:
        i = int(rng.integers(0, max(1, len(data) - 4))) & ~3  # flatbuffer fields are 4-aligned
        data[i:i + 4] = int(_BOUNDARY[int(rng.integers(0, len(_BOUNDARY)))]).to_bytes(4, "little")
    return bytes(data)


def write_mutants(src: Path, out: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` mutants of ``src`` in ``out``, each with its card re-embedded and re-hashed."""
    import numpy as np

    from edge.contract.card_archive import embed_card, read_card, strip_card

    card = read_card(src).with_updates(model_sha256="")
    flat = strip_card(src.read_bytes())
    rng = np.random.default_rng(seed)
    files = []
    for k in range(n):
        path = out / f"mutant_{k:04d}.tflite"
        path.write_bytes(embed_card(mutate(flat, rng), card))
        files.append(path)
    return files


def _limit(memory_mb: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_child(args: list[str], timeout_s: float, memory_mb: int, case: str, command: str) -> Run:
    """Run ``args`` with an address-space limit; reap it with wait4 for its own peak RSS."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                preexec_fn=lambda: _limit(memory_mb))
        deadline = t0 + timeout_s
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                status = None
                break
            time.sleep(0.02)
        proc.returncode = 0  # reaped here: keep Popen from waiting again
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if status is None:
        code = None
    else:
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    lines = [ln for ln in stderr.splitlines() if ln.startswith("Error: ")]
    return Run(case, command, code, "Traceback (most recent call last)" in stderr,
               code == 0 or len(lines) <= 1, round(usage.ru_maxrss / 1024, 1) if usage else 0.0,
               round(time.perf_counter() - t0, 2))


COMMANDS = ("predict-jsonl", "predict-table", "info")


def fuzz_files(files: list[Path], image: Path, timeout_s: float = 60, memory_mb: int = 4096,
               jobs: int = 1, commands: tuple[str, ...] = COMMANDS) -> list[Run]:
    """``commands`` (``predict`` as jsonl and as a table, ``info``) on each file, in limited children."""
    py = [sys.executable, "-m", "edge"]
    argv = {"predict-jsonl": lambda f: py + ["predict", str(f), str(image), "--format", "jsonl"],
            "predict-table": lambda f: py + ["predict", str(f), str(image)],
            "info": lambda f: py + ["info", str(f), "--probe-timeout", str(timeout_s / 2)]}
    tasks = [(f.name, c, argv[c](f)) for f in files for c in commands]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(lambda t: run_child(t[2], timeout_s, memory_mb, t[0], t[1]), tasks))


def summarise(runs: list[Run]) -> dict[str, Any]:
    """Counts: runs, signals, hangs, tracebacks, multi-line errors, exit statuses, peak RSS, slowest."""
    bad = [r for r in runs if r.returncode is None or (r.returncode or 0) < 0 or r.traceback or not r.one_line_error]
    return {
        "runs": len(runs),
        "signals": sum(1 for r in runs if r.returncode is not None and r.returncode < 0),
        "hangs": sum(1 for r in runs if r.returncode is None),
        "tracebacks": sum(1 for r in runs if r.traceback),
        "multi_line_errors": sum(1 for r in runs if not r.one_line_error),
        "exit_status": {str(k): sum(1 for r in runs if r.returncode == k) for k in sorted({r.returncode for r in runs
                                                                                            if r.returncode is not None})},
        "peak_rss_mb": max((r.peak_rss_mb for r in runs), default=0.0),
        "slowest_s": max((r.seconds for r in runs), default=0.0),
        "failures": [{"case": r.case, "command": r.command, "returncode": r.returncode} for r in bad[:20]],
    }


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python tests/fuzz.py", description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a real polyhead .tflite (with its card)")
    ap.add_argument("--n", type=int, default=300, help="number of mutants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="children at once")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per child before it counts as a hang")
    ap.add_argument("--memory-mb", type=int, default=4096, help="address-space limit per child")
    ap.add_argument("--extra", type=Path, nargs="*", default=[], help="more files to run (targeted cases)")
    ap.add_argument("--commands", default=",".join(COMMANDS), help=f"comma-separated, from {','.join(COMMANDS)}")
    args = ap.parse_args(argv)
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="polyhead-fuzz-") as tmp:
        out = Path(tmp)
        image = out / "image.png"
        Image.new("RGB", (64, 48), (120, 30, 200)).save(image)
        files = write_mutants(args.model, out, args.n, args.seed) + list(args.extra)
        t0 = time.perf_counter()
        runs = fuzz_files(files, image, args.timeout, args.memory_mb, args.jobs, tuple(args.commands.split(",")))
        summary = {"model": str(args.model), "mutants": args.n, "extra": len(args.extra), "seed": args.seed,
                   **summarise(runs), "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary, indent=1))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
