"""Run directory: atomic writes, hashes, skip/redo logic, manifest and the lock."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from w2s_nb.rundir import RunDir, stage_key, versions
from w2s_nb.files import (LOCK_ENV, RunLockedError, atomic_dir, atomic_write_json, atomic_write_jsonl, read_json,
                          read_jsonl, run_lock, sha256_file, sha256_path)


def _clean_env():
    return {k: v for k, v in os.environ.items() if k != LOCK_ENV}


def test_interrupted_write_keeps_old_file(tmp_path):
    """A writer killed before the rename leaves the old file intact."""
    p = tmp_path / "m.json"
    atomic_write_json(p, {"v": 1})
    code = textwrap.dedent(f"""
        import os, w2s_nb.rundir as r
        def stop(*a, **k): os.kill(os.getpid(), 9)   # die right before the rename
        os.replace = stop
        r.atomic_write_json({str(p)!r}, {{"v": 2}})
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=_clean_env())
    assert proc.returncode == -signal.SIGKILL
    assert read_json(p) == {"v": 1}


def test_jsonl_round_trip_and_atomic_dir(tmp_path):
    recs = [{"id": "a", "x": "ü"}, {"id": "b"}]
    assert read_jsonl(atomic_write_jsonl(tmp_path / "r.jsonl", recs)) == recs
    target = tmp_path / "adapter"
    with atomic_dir(target) as d:
        (d / "w.bin").write_bytes(b"1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "w.bin").write_bytes(b"2")
            raise RuntimeError("crash while saving")
    assert (target / "w.bin").read_bytes() == b"1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_hashes(tmp_path):
    (tmp_path / "a.txt").write_text("abc")
    assert sha256_file(tmp_path / "a.txt") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    h1 = sha256_path(tmp_path)
    (tmp_path / ".hidden").write_text("ignored")
    assert sha256_path(tmp_path) == h1
    (tmp_path / "b.txt").write_text("x")
    assert sha256_path(tmp_path) != h1
    big = tmp_path / "big.bin"
    big.write_bytes(b"0" * 3000)
    assert sha256_file(big, full_limit=1000) != sha256_file(big)


def test_skip_and_redo(tmp_path):
    rd = RunDir(tmp_path / "run")
    k_data = stage_key("data", {"n": 10})
    k_weak = stage_key("weak", {"lr": 1}, k_data)
    for stage, key in (("data", k_data), ("weak", k_weak)):
        rd.begin_stage(stage, key)
        atomic_write_jsonl(rd.path(stage, "out.jsonl"), [{"stage": stage}])
        rd.finish_stage(stage, key, wall_s=1.0)
    assert rd.is_done("data", k_data) and rd.is_done("weak", k_weak)
    m = rd.manifest()
    assert m["stages"]["weak"]["outputs"]["weak/out.jsonl"] == sha256_file(rd.path("weak", "out.jsonl"))
    # a changed data parameter changes the data key and, through the chain, the weak key
    k_data2 = stage_key("data", {"n": 11})
    assert not rd.is_done("data", k_data2)
    assert stage_key("weak", {"lr": 1}, k_data2) != k_weak
    # a partial stage started with the same key is resumed (kept), with another key it is cleared
    rd.begin_stage("weak", k_weak)
    assert rd.path("weak", "out.jsonl").exists() and not rd.is_done("weak", k_weak)
    rd.begin_stage("weak", "other")
    assert not rd.path("weak", "out.jsonl").exists()


def test_lock_refuses_second_process_and_releases_on_kill(tmp_path):
    root = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time; from w2s_nb.rundir import run_lock
        with run_lock({str(root)!r}):
            print('locked', flush=True); time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, env=_clean_env())
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match="in use by another process"):
        with run_lock(root):
            pass
    holder.kill(); holder.wait()
    with run_lock(root):  # SIGKILL released the lock: no stale lock
        assert os.environ[LOCK_ENV] == str(root.resolve())
        with run_lock(root):  # re-entrant for the holder and its children
            pass
    assert LOCK_ENV not in os.environ


def test_versions_lists_stack():
    v = versions()
    assert v["python"].count(".") == 2 and v["torch"] and "bitsandbytes" in v


def test_one_stage_table_is_what_the_run_directory_pipeline_and_registry_read():
    """Every stage's notebook exists, its function resolves and takes (cfg, rd), it needs only earlier stages, and the
    pipeline's, the run directory's and the model registry's views are the table's."""
    import inspect
    from pathlib import Path
    from w2s_nb import models, pipeline, rundir
    names = [s.name for s in rundir.STAGE_TABLE]
    assert tuple(names) == rundir.STAGES == pipeline.STAGES
    funcs = pipeline.stage_functions()
    for i, s in enumerate(rundir.STAGE_TABLE):
        assert (Path(__file__).parent.parent / "nbs" / "stages" / s.notebook).exists(), s.notebook
        assert list(inspect.signature(funcs[s.name]).parameters)[:2] == ["cfg", "rd"], s.function
        assert set(s.needs) <= set(names[:i]), s.name
        assert pipeline.STAGE_NOTEBOOKS[s.name] == s.notebook and pipeline.STAGE_PARAMS[s.name] == list(s.params)
    assert models.MODEL_STAGES == ("weak", "stage1", "stage2")
    assert rundir.STAGE_PRODUCTS["eval"] == "eval/metrics.json" and "report" not in rundir.STAGE_PRODUCTS
