"The `w2s run` command line the benchmarks time (one place, so both benchmarks run the same thing)."
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def w2s_run(name: str, sets: list, inline: bool = False, quiet: bool = False) -> tuple[int, float]:
    "Run `configs/default.yaml` as `runs/<name>` with `--set` overrides; (exit code, wall seconds)."
    cmd = [sys.executable, "-m", "w2s_nb.cli", "run", str(ROOT / "configs" / "default.yaml"),
           "--set", f"name={name}", "--set", f"out_dir={ROOT / 'runs'}",
           *[x for s in sets for x in ("--set", s)], *(["--inline"] if inline else [])]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL if quiet else None)
    return r.returncode, time.time() - t0
