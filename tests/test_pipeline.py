"""Pipeline: end to end under papermill, resume, redo after a change, failures, kill + resume, stage selection."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from w2s_nb.config import load_config
from w2s_nb.pipeline import StageFailed, run_pipeline
from w2s_nb.rundir import STAGES, RunDir
from w2s_nb.files import LOCK_ENV, read_json, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
W2S = [sys.executable, "-m", "w2s_nb.cli"]  # the `w2s` command


# Global batches of 16 = batch_size 8 x grad_accum 2, the same on 1 process and on 2 (8 per rank); D_gold,1 of 48 =
# 3 whole global batches (2 ranks pad an uneven last batch differently).
BATCHES = {f"{k}.{f}": v for k in ("weak.sft", "strong.sft", "stage2.pref") for f, v in (("batch_size", 8), ("grad_accum", 2))}


def tiny(tmp_path, name="t", **extra):
    """Overrides for a tiny run of the embedded world (the default's code paths at small sizes). A weak model trained
    this briefly rarely ends its solutions with a well-formed answer, so the paper's strict extraction would leave
    Stage I with nothing to keep: tiny runs read answers leniently (both rules are tested in test_answers)."""
    o = {"name": name, "out_dir": str(tmp_path), "device": "cpu",
         "data.n_gold1": 48, "data.n_gold2": 48, "data.n_test": 16, "data.answer_extraction": "lenient",
         "weak.sft.epochs": 2, "strong.sft.epochs": 1, "sampling.max_new_tokens": 64,
         "stage1.rounds": 1, "stage2.n": 4, "stage2.tau": 0.25, "stage2.tau_high": 0.25, "stage2.methods": ["dpo"],
         "stage2.pref.epochs": 1, **BATCHES}
    o.update(extra)
    return o


def _cfg(tmp_path, **kw):
    return load_config(ROOT / "configs" / "default.yaml", tiny(tmp_path, **kw))


def _env():
    return {k: v for k, v in os.environ.items() if k != LOCK_ENV} | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_invalid_config_fails_before_any_stage(tmp_path):
    r = subprocess.run([*W2S, "run", str(ROOT / "configs/default.yaml"),
                        "--set", f"out_dir={tmp_path}", "--set", "stage2.methods=[dpoo]"], capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and "stage2.methods=['dpoo']: expected one of dpo, orpo, simpo" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_end_to_end_papermill_resume_and_redo(tmp_path):
    logs = []
    rd = run_pipeline(_cfg(tmp_path), log=logs.append)
    assert [l.split()[1] for l in logs if "running" in l] == list(STAGES)
    for i, s in enumerate(STAGES):
        assert rd.path("notebooks", f"{i:02d}_{s}.ipynb").exists() and rd.path(s, "_done.json").exists()
    m = rd.manifest()
    assert m["versions"]["torch"] and m["config"]["data"]["n_gold1"] == 48
    assert all(m["stages"][s]["status"] == "done" for s in STAGES)
    assert m["stages"]["data"]["outputs"]["data/gold1.jsonl"]
    ev = read_json(rd.path("eval", "metrics.json"))
    assert {"weak", "weak_icl", "full_weak", "ceiling", "s1_r1_hybrid", "m_pro_dpo"} <= set(ev["models"])
    assert rd.path("report", "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the papermill parameters reached the notebook (not the parameters cell's defaults)
    nb = json.loads(rd.path("notebooks", "02_stage1.ipynb").read_text())
    assert nb["metadata"]["papermill"]["parameters"]["run_dir"] == str(rd.root.resolve())
    # each executed notebook is its stage's thin run notebook, cell for cell (+ papermill's injected parameters),
    # with no library code and no error output (e.g. IPython's "Session/line number was not unique")
    for i, s in enumerate(STAGES):
        src = json.loads((ROOT / "nbs" / "stages" / f"{i:02d}_{s}.ipynb").read_text())["cells"]
        ran = json.loads(rd.path("notebooks", f"{i:02d}_{s}.ipynb").read_text())["cells"]
        assert ["".join(c["source"]) for c in ran if "injected-parameters" not in c["metadata"].get("tags", [])] == \
               ["".join(c["source"]) for c in src]
        outs = [o for c in ran if c["cell_type"] == "code" for o in c["outputs"]]
        assert not [o for o in outs if o["output_type"] == "error" or "ERROR" in "".join(o.get("text", ""))], s
        assert [c["execution_count"] for c in ran if c["cell_type"] == "code"][0] == 1
    # second invocation: nothing to do
    logs.clear()
    run_pipeline(_cfg(tmp_path), log=logs.append)
    assert logs == [f"✓ {s:7s} up to date" for s in STAGES]
    # a Stage II parameter changed: stage2 and everything after it is redone, nothing before
    logs.clear()
    before = rd.path("stage1", "models.json").stat().st_mtime_ns
    run_pipeline(_cfg(tmp_path, **{"stage2.tau": 0.5, "stage2.tau_high": 0.5}), log=logs.append)
    redone = [l.split()[1] for l in logs if "running" in l]
    assert redone == ["stage2", "eval", "report"]
    assert rd.path("stage1", "models.json").stat().st_mtime_ns == before
    assert read_json(rd.path("stage2", "stage2_metrics.json"))["tau"] == 0.5


@pytest.mark.slow
def test_two_processes_from_project_root_with_relative_accelerate_config(tmp_path):
    """`w2s run configs/default.yaml` from the project root with num_processes=2 and the relative cpu_2proc.yaml: every
    training and sampling step runs on 2 ranks and the whole pipeline finishes. With the same global batches as a 1-process
    run, the weak model's training losses are equal (measured: identical on this CPU), and so are D_weak and Stage I's
    selection (the agree flags; greedy labels do not depend on how the prompts are split); the data splits do not depend
    on training at all. Stage II's samples may differ: a sampled batch's seed comes from its first id."""
    def run(name, **extra):
        sets = [f"--set={k}={json.dumps(v)}" for k, v in tiny(tmp_path, name=name, **extra).items()]
        r = subprocess.run([*W2S, "run", "configs/default.yaml", *sets], cwd=ROOT, env=_env(), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        return tmp_path / name
    one = run("one")
    two = run("two", num_processes=2, accelerate_config="environments/accelerate/cpu_2proc.yaml")
    results = [json.loads(p.read_text()) for p in two.rglob("result.json")]
    assert len(results) == 5 and {r["num_processes"] for r in results} == {2}  # weak, ceiling, full_weak, hybrid, dpo
    sampled = [p.parent for p in two.rglob("sampling.json")]  # weak, Stage I ICL, Stage II, 6 evaluations
    assert len(sampled) == 9 and all({"shard-00000-r0.jsonl", "shard-00000-r1.jsonl"} <= {p.name for p in d.iterdir()}
                                     for d in sampled)
    same = lambda rel: read_jsonl(one / rel) == read_jsonl(two / rel)
    assert all(same(f"data/{f}.jsonl") for f in ("gold1", "gold2_questions", "gold2_gold", "test"))
    loss = lambda d: [r["loss"] for r in read_jsonl(d / "weak" / "model" / "train_log.jsonl") if "loss" in r]
    assert loss(one) == pytest.approx(loss(two), rel=1e-5)
    assert same("weak/d_weak.jsonl") and same("stage1/round1/selection.jsonl")
    assert any(r["agree"] for r in read_jsonl(two / "stage1" / "round1" / "selection.jsonl"))
    assert {"s1_r1_hybrid", "m_pro_dpo"} <= set(read_json(two / "eval" / "metrics.json")["models"])


class Sampled(Exception):
    "Raised by the stand-in sampler: the stage reached its first sampling call."


def test_every_stage_samples_on_the_configured_processes(tmp_path, monkeypatch):
    "weak, stage1, stage2 and eval pass the run's num_processes and accelerate_config to generate_texts."
    import w2s_nb.sample, w2s_nb.stage1, w2s_nb.stage2, w2s_nb.weak
    from w2s_nb.eval import run_eval
    from w2s_nb.models import base_ref, model_entry
    from w2s_nb.files import atomic_write_json, atomic_write_jsonl
    calls = []
    def fake(*args, **kw): calls.append(kw); raise Sampled
    for mod in (w2s_nb.weak, w2s_nb.stage1, w2s_nb.stage2, w2s_nb.sample): monkeypatch.setattr(mod, "generate_texts", fake)
    cfg = load_config(ROOT / "configs" / "default.yaml", {
        "device": "cpu", "num_processes": 2, "accelerate_config": "/acc/cpu_2proc.yaml", "data.n_gold1": 0,
        "weak.finetune": "none", "strong.sft.grad_accum": 2, "stage2.pref.grad_accum": 2})
    rd = RunDir(tmp_path / "run")
    q = dict(id="q0", question="What is 1 plus 1?")
    atomic_write_jsonl(rd.path("data", "gold2_questions.jsonl"), [q])
    atomic_write_jsonl(rd.path("data", "gold2_gold.jsonl"), [dict(id="q0", solution="1 + 1 = 2", answer="2")])
    atomic_write_jsonl(rd.path("data", "test.jsonl"), [dict(q, solution="1 + 1 = 2", answer="2")])
    atomic_write_jsonl(rd.path("weak", "d_weak.jsonl"), [dict(q, text=" 1 + 1 = 2", pred="2")])
    atomic_write_jsonl(rd.path("weak", "demos.jsonl"), [dict(q, solution="1 + 1 = 2", correct=True)])
    atomic_write_json(rd.path("weak", "models.json"), {"weak": model_entry(base_ref(cfg.weak), rd, "weak", "weak_floor", "weak")})
    atomic_write_json(rd.path("stage1", "models.json"), {"m_plus": model_entry(base_ref(cfg.strong), rd, "strong", "stage1", "M_plus")})
    for run in (w2s_nb.weak.run_weak, w2s_nb.stage1.run_stage1, w2s_nb.stage2.run_stage2, run_eval):
        with pytest.raises(Sampled): run(cfg, rd)
    assert [(c["num_processes"], c["accelerate_config"]) for c in calls] == [(2, "/acc/cpu_2proc.yaml")] * 4


def test_failing_stage_names_stage_exception_and_notebook(tmp_path):
    cfg = _cfg(tmp_path, **{"data.n_gold1": 10 ** 6})
    with pytest.raises(StageFailed) as e:
        run_pipeline(cfg, log=lambda m: None)
    msg = str(e.value)
    assert "stage 'data' failed with DataError" in msg
    nb = Path(msg.split("full traceback is ")[1].strip())
    assert nb.exists() and "DataError" in nb.read_text()
    assert not (Path(cfg.out_dir) / cfg.name / "data" / "_done.json").exists()


def test_only_needs_up_to_date_predecessors(tmp_path):
    with pytest.raises(StageFailed, match="needs data, weak, stage1 to be up to date"):
        run_pipeline(_cfg(tmp_path), only=["stage2"], log=lambda m: None)


@pytest.mark.slow
def test_kill_mid_stage_then_rerun_loses_and_duplicates_nothing(tmp_path):
    """SIGKILL the pipeline while Stage I is sampling, then re-run: it finishes with every record once."""
    sets = [f"--set={k}={json.dumps(v)}" for k, v in tiny(tmp_path, name="k", **{"sampling.batch_size": 4, "sampling.shard_size": 4}).items()]
    cmd = [*W2S, "run", str(ROOT / "configs/default.yaml"), "--inline", *sets]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "k" / "stage1" / "round1" / "d_icl_shards"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("shard-*.jsonl"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL); proc.wait()
    n_before = len(list(shards.glob("shard-*.jsonl")))
    assert 2 <= n_before < 12, "the kill should land while Stage I is sampling"
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "✓ data    up to date" in r.stdout and "✓ weak    up to date" in r.stdout
    ids = [x["id"] for x in read_jsonl(tmp_path / "k" / "stage1" / "round1" / "d_icl.jsonl")]
    assert len(ids) == len(set(ids)) == 48
    shard_ids = [x["id"] for p in sorted(shards.glob("shard-*.jsonl")) for x in read_jsonl(p)]
    assert sorted(shard_ids) == sorted(ids)


def test_sweep_runs_each_seed_into_a_sibling_run_dir_then_the_across_seeds_report(tmp_path, monkeypatch, capsys):
    """`w2s sweep` with the pipeline replaced by a writer of finished fixture runs (a real run per seed is what
    test_end_to_end_papermill_resume_and_redo covers): the seeds' configs, run directories, options and the report."""
    import w2s_nb.pipeline
    from w2s_nb.cli import main
    from test_report import make_fixture_run
    calls = []
    def fake_pipeline(cfg, overrides=None, log=print, **kw):
        calls.append(dict(name=cfg.name, seed=cfg.seed, out_dir=cfg.out_dir, overrides=overrides, **kw))
        root = Path(cfg.out_dir) / cfg.name
        if not root.exists(): make_fixture_run(root, floor=0.20 + 0.05 * cfg.seed, seed=cfg.seed)
        return RunDir(root)
    monkeypatch.setattr(w2s_nb.pipeline, "run_pipeline", fake_pipeline)
    sets = ["--set", f"out_dir={tmp_path}", "--set", "name=w", "--set", "stage2.tau=0.7"]
    assert main(["sweep", str(ROOT / "configs/default.yaml"), "--seeds", "0", "1", "2", *sets, "--inline"]) == 0
    assert [(c["name"], c["seed"], c["out_dir"]) for c in calls] == [(f"w-seed{s}", s, str(tmp_path)) for s in (0, 1, 2)]
    assert calls[0]["overrides"] == [f"out_dir={tmp_path}", "name=w", "stage2.tau=0.7"]
    assert (calls[0]["inline"], calls[0]["force"], calls[0]["fresh_kernels"]) == (True, False, False)
    out = tmp_path / "w-seeds"
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.png", "compare.svg", "seeds.md", "seeds.png", "seeds.svg"}
    assert "| weak floor | 3 | 25.0 ± 5.0 | 20.0 to 30.0 |" in (out / "seeds.md").read_text()
    printed = capsys.readouterr().out
    assert str(tmp_path / "w-seed2") in printed and str(out / "seeds.md") in printed
    # the same seeds again: each run is handed to run_pipeline again (whose stage keys skip finished work), --out moves the report
    assert main(["sweep", str(ROOT / "configs/default.yaml"), "--seeds", "0", "1", "2", *sets, "--out", str(tmp_path / "elsewhere")]) == 0
    assert len(calls) == 6 and (tmp_path / "elsewhere" / "seeds.md").read_text() == (out / "seeds.md").read_text()
    assert main(["sweep", str(ROOT / "configs/default.yaml"), "--seeds", "0", "0", *sets]) == 2
    assert "give each seed once" in capsys.readouterr().err and len(calls) == 6


@pytest.mark.slow
def test_sweep_of_two_seeds_end_to_end_and_resumed(tmp_path):
    """A real tiny sweep (inline): two sibling runs with their own seeds; run again, every stage of both is up to date."""
    from w2s_nb.pipeline import run_sweep
    logs = []
    rds, written = run_sweep(_cfg(tmp_path, name="s"), [0, 1], inline=True, log=logs.append)
    assert [rd.root for rd in rds] == [tmp_path / "s-seed0", tmp_path / "s-seed1"]
    assert [read_json(rd.path("data", "data_summary.json"))["seed"] for rd in rds] == [0, 1]
    assert "seeds.md" in written and (tmp_path / "s-seeds" / "seeds.png").exists()
    logs.clear()
    run_sweep(_cfg(tmp_path, name="s"), [0, 1], inline=True, log=logs.append)
    assert [l for l in logs if not l.startswith("──")] == [f"✓ {s:7s} up to date" for s in STAGES] * 2


def _nb(path, *sources):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_shared_kernel_clean_namespace_same_process_and_replaced_when_dead(tmp_path):
    import papermill as pm
    from w2s_nb.pipeline import StageKernel
    first = _nb(tmp_path / "a.ipynb", "import os, json\nleft_over = 1\nopen('pid_a', 'w').write(str(os.getpid()))")
    second = _nb(tmp_path / "b.ipynb", "import os\nassert 'left_over' not in globals() and 'json' not in globals()\n"
                                       "open('pid_b', 'w').write(str(os.getpid()))")
    with StageKernel(tmp_path) as k:
        for nb in (first, second):
            pm.execute_notebook(str(nb), str(tmp_path / f"out-{nb.name}"), kernel_name="python3", progress_bar=False,
                                km=k.fresh_namespace())
        pid = (tmp_path / "pid_a").read_text()
        import nbformat                                       # cells numbered from 1, as in a fresh kernel
        assert nbformat.read(tmp_path / "out-b.ipynb", 4).cells[0].execution_count == 1
        assert (tmp_path / "pid_b").read_text() == pid      # one kernel process ran both notebooks
        os.kill(int(pid), signal.SIGKILL)                     # a dead kernel (e.g. out of memory) is replaced
        deadline = time.time() + 30
        while k.km.is_alive() and time.time() < deadline: time.sleep(0.1)
        pm.execute_notebook(str(second), str(tmp_path / "out-c.ipynb"), kernel_name="python3", progress_bar=False,
                            km=k.fresh_namespace())
        assert (tmp_path / "pid_b").read_text() != pid
        km = k.km
    assert not km.has_kernel                                  # closed with the run


def test_model_folders_are_fingerprinted_by_names_sizes_and_mtimes_without_reading_them(tmp_path, monkeypatch):
    "`input_fingerprints` (computed at every `w2s run`) never opens a model file; a new size or mtime changes it."
    import builtins
    import io
    from w2s_nb.pipeline import input_fingerprints
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        (model / name).write_bytes(b"w" * 4096)
    cfg = load_config(overrides={"weak.path": str(model), "strong.path": str(model / "model-00001-of-00002.safetensors")})

    def refuse(*a, **k): raise AssertionError(f"a model file was opened: {a[:1]}")
    weak, strong = input_fingerprints(cfg, "weak"), input_fingerprints(cfg, "stage1")   # imports done before the patch
    with monkeypatch.context() as m:
        for mod, name in ((builtins, "open"), (io, "open"), (os, "open")): m.setattr(mod, name, refuse)
        assert input_fingerprints(cfg, "weak") == weak and input_fingerprints(cfg, "stage1") == strong
    shard = model / "model-00002-of-00002.safetensors"
    st = shard.stat()
    shard.write_bytes(b"v" * 4096)                                   # same size, other bytes: only the mtime tells
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert input_fingerprints(cfg, "weak") != weak
    weak = input_fingerprints(cfg, "weak")
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with open(shard, "ab") as f: f.write(b"x")                      # a new size at the same mtime
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert input_fingerprints(cfg, "weak") != weak


def test_hub_models_are_fingerprinted_by_their_revision():
    from w2s_nb.pipeline import input_fingerprints
    pin = lambda rev: load_config(overrides={"strong.path": "meta-llama/Llama-2-70b-hf", "strong.revision": rev})
    a, b = input_fingerprints(pin("a" * 40), "stage1"), input_fingerprints(pin("b" * 40), "stage1")
    assert a == {"strong": {"hub": "meta-llama/Llama-2-70b-hf", "revision": "a" * 40}} and a != b


def test_checkpoint_settings_leave_stage_keys_unchanged():
    "How often a trainer checkpoints changes no result: turning it up or off keeps a finished run up to date."
    from w2s_nb.pipeline import stage_params
    base = load_config()
    other = load_config(overrides={"weak.sft.save_steps": 0, "strong.sft.save_steps": 5, "stage2.pref.save_total_limit": 9})
    assert all(stage_params(base, s) == stage_params(other, s) for s in STAGES)
    assert stage_params(base, "stage1") != stage_params(load_config(overrides={"strong.sft.lr": 1e-3}), "stage1")


def test_vllm_that_cannot_run_stops_the_run_before_any_stage(tmp_path):
    """`sampling.backend: vllm` where vLLM cannot run (no CUDA here) is refused when the run starts, not at the weak
    stage's first sampling call after its training: no stage runs, nothing is written."""
    cfg = load_config(ROOT / "configs" / "default.yaml", tiny(tmp_path, **{"sampling.backend": "vllm"}))
    with pytest.raises(RuntimeError, match="sampling.backend=vllm cannot run here: vLLM needs a CUDA device"):
        run_pipeline(cfg, inline=True, log=lambda s: None)
    assert not (tmp_path / "t" / "data").exists() and not (tmp_path / "t" / "manifest.json").exists()


def test_manifest_records_the_hardware_and_what_auto_resolved_to(tmp_path):
    from w2s_nb.pipeline import prepare_run
    import torch
    rd = prepare_run(load_config(ROOT / "configs" / "default.yaml", tiny(tmp_path, **{"weak.dtype": "auto"})))
    m = rd.manifest()
    assert m["precision"] == dict(device="cpu", sampling_backend="hf", weak="float32", strong="float32")
    assert m["hardware"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and m["hardware"]["cuda"] == []
    assert "vllm" in m["versions"]


def test_the_weak_stage_depends_on_the_strong_model_its_demonstrations_must_fit():
    """The weak stage picks the weak-ICL demonstrations so that every ICL prompt fits the *strong* model's context:
    another strong model, revision or context length gives it another key (and a re-run)."""
    from w2s_nb.pipeline import input_fingerprints, stage_key, stage_params
    def key(**o):
        cfg = load_config(ROOT / "configs" / "default.yaml", o)
        return stage_key("weak", stage_params(cfg, "weak"), "k", input_fingerprints(cfg, "weak"))
    base = key()
    assert key(**{"strong.context_length": 2048}) != base and key(**{"strong.revision": "abc"}) != base
    assert key(**{"stage1.demo_source": "gold1"}) != base and key(**{"strong.sft.lr": 0.5}) == base
