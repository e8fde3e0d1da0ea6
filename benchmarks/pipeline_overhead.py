"""Overhead of the papermill runner vs calling the stage functions directly in one process.

    python benchmarks/pipeline_overhead.py [--set KEY=VALUE ...]

Runs the same config twice from scratch — `w2s run --inline` (stage functions in this process) and
`w2s run` (stage notebooks under papermill) — and prints both wall times and the relative overhead
(goal: <= 10% on the default run).
"""
import argparse
import shutil

from _w2s import ROOT, w2s_run


def timed_run(name: str, sets: list[str], inline: bool) -> float:
    shutil.rmtree(ROOT / "runs" / name, ignore_errors=True)
    rc, wall = w2s_run(name, sets, inline=inline, quiet=True)
    if rc: raise SystemExit(f"w2s run {name} failed (exit {rc})")
    return wall


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
