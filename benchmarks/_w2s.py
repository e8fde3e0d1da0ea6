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


def run_model(run_dir, model: str, sets: tuple = ()):
    """A finished run's `(RunDir, config with `sets` (KEY=VALUE) applied, ModelRef of model, its registry entry, test
    records)`; exits naming the run's models if `model` is not one."""
    from w2s_nb.config import load_config
    from w2s_nb.models import model_ref, read_models
    from w2s_nb.rundir import RunDir
    from w2s_nb.files import read_jsonl
    rd = RunDir(Path(run_dir)); cfg = load_config(rd.root / "config.yaml", list(sets)); models = read_models(rd)
    if model not in models: raise SystemExit(f"{model!r} is not a model of {run_dir}: expected one of {', '.join(models)}")
    return rd, cfg, model_ref(rd, models[model]), models[model], read_jsonl(rd.path("data", "test.jsonl"))
