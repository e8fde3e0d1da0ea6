"""Overhead of the papermill runner vs calling the stage functions directly in one process.

    python benchmarks/pipeline_overhead.py [--set KEY=VALUE ...]

Runs the same config twice from scratch — `w2s run --inline` (stage functions in this process) and
`w2s run` (stage notebooks under papermill) — and prints both wall times and the relative overhead
(goal: <= 10% on the default run).
"""
import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_run(name: str, sets: list[str], inline: bool) -> float:
    shutil.rmtree(ROOT / "runs" / name, ignore_errors=True)
    cmd = [sys.executable, "-c", "import sys; from w2s_nb.cli import main; sys.exit(main(sys.argv[1:]))", "run", str(ROOT / "configs" / "default.yaml"), "--set", f"name={name}",
           "--set", f"out_dir={ROOT / 'runs'}", *[x for s in sets for x in ("--set", s)], *(["--inline"] if inline else [])]
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    direct = timed_run("overhead-inline", a.set, inline=True)
    papermill = timed_run("overhead-papermill", a.set, inline=False)
    print(f"direct (in-process stage functions): {direct:.1f} s")
    print(f"papermill (stage notebooks):         {papermill:.1f} s")
    print(f"overhead: {papermill - direct:+.1f} s ({100 * (papermill - direct) / direct:+.1f}%)")


if __name__ == "__main__":
    main()
