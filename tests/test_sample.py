"Engine sampling: n samples, seeds, stop strings, batching = one-by-one, shards, kill + resume, generate_texts."
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from w2s_nb.config import ModelConfig, SamplingConfig
from w2s_nb.models import ModelRef, load_model, load_tokenizer
from w2s_nb.rundir import read_jsonl
from w2s_nb.sample import generate_texts, read_shards, sample


@pytest.fixture(scope="module")
def mt(tiny_model_dir):
    cfg = ModelConfig(path=tiny_model_dir, finetune="lora")
    return load_model(ModelRef(tiny_model_dir), cfg, "cpu"), load_tokenizer(ModelRef(tiny_model_dir), cfg)


# prompts of different lengths, so batches need real (left) padding
PROMPTS = [{"id": f"q{i}", "prompt": "Question: What is " + " plus ".join(str(i + k) for k in range(1 + i % 4)) + "?\nAnswer:"}
           for i in range(10)]


def test_n_samples_in_input_order(mt):
    recs = sample(*mt, PROMPTS, n=3, temperature=1.0, max_new_tokens=6, batch_size=6, seed=0)
    assert [r["id"] for r in recs] == [p["id"] for p in PROMPTS]
    assert [r["prompt"] for r in recs] == [p["prompt"] for p in PROMPTS]
    assert all(len(r["samples"]) == 3 and all(isinstance(s, str) for s in r["samples"]) for r in recs)
    assert any(len(set(r["samples"])) > 1 for r in recs)   # sampled, not copies
    greedy = sample(*mt, ["Question: 1?\nAnswer:"], n=4, max_new_tokens=6)
    assert greedy[0]["id"] == 0 and len(set(greedy[0]["samples"])) == 1 and len(greedy[0]["samples"]) == 4


def test_same_seed_same_output(mt):
    kw = dict(n=2, temperature=1.0, top_p=0.9, max_new_tokens=8, batch_size=4)
    a, b = sample(*mt, PROMPTS, seed=7, **kw), sample(*mt, PROMPTS, seed=7, **kw)
    assert a == b and a != sample(*mt, PROMPTS, seed=8, **kw)


def test_batched_greedy_equals_one_by_one(mt):
    batched = sample(*mt, PROMPTS, max_new_tokens=12, batch_size=32)
    single = sample(*mt, PROMPTS, max_new_tokens=12, batch_size=1)
    assert batched == single


def test_token_budget_shrinks_batches_of_long_prompts(mt, monkeypatch):
    model, tok = mt
    long = [{"id": f"l{i}", "prompt": "Question: " + " plus ".join(["7"] * 30) + f" plus {i}?\nAnswer:"} for i in range(4)]
    prompts, calls = long + PROMPTS, []
    gen = model.generate
    def spy(*a, **k):
        calls.append(tuple(k["input_ids"].shape)); return gen(*a, **k)
    monkeypatch.setattr(model, "generate", spy)
    plain = sample(model, tok, prompts, max_new_tokens=6, batch_size=8)
    assert [b for b, _ in calls] == [8, 6]
    longest = max(len(tok(p["prompt"])["input_ids"]) for p in long)
    budget = 2 * (longest + 6)                                # two long prompts a call; short ones fit 8
    calls.clear()
    budgeted = sample(model, tok, prompts, max_new_tokens=6, batch_size=8, max_batch_tokens=budget)
    assert calls[0] == (2, longest) and calls[1][0] == 2 and sum(b for b, _ in calls) == len(prompts)
    assert max(b for b, _ in calls) == 8 and budgeted == plain  # greedy output does not depend on batching
    import w2s_nb.sample as S                                  # the run config's budget reaches the batches
    sizes, hf = [], S.hf_generate
    monkeypatch.setattr(S, "hf_generate", lambda m, t, ps, *a: sizes.append(len(ps)) or hf(m, t, ps, *a))
    got = generate_texts(ModelRef(model.name_or_path), ModelConfig(path=model.name_or_path, finetune="lora"), prompts,
                         SamplingConfig(batch_size=8, max_batch_tokens=budget, max_new_tokens=6, stop=[]))
    assert sizes == [b for b, _ in calls] and got == plain
    with pytest.raises(ValueError, match="longest first"):
        S.batch_bounds([1, 2], 1, 8, 6)


def test_prompts_outgrowing_the_trained_length_are_logged(mt, monkeypatch, caplog):
    "sample() warns, with the count, when prompt + max_new_tokens can pass the model's max_position_embeddings."
    model, tok = mt
    longest = max(len(ids) for ids in tok([p["prompt"] for p in PROMPTS])["input_ids"])
    monkeypatch.setattr(model.config, "max_position_embeddings", longest + 6)  # the longest prompts + 8 new tokens pass it
    with caplog.at_level("WARNING", logger="w2s_nb.sample"):
        recs = sample(model, tok, PROMPTS, max_new_tokens=4, batch_size=4)
        assert len(recs) == len(PROMPTS) and "max_position_embeddings" not in caplog.text  # 4 new tokens fit
        sample(model, tok, PROMPTS, max_new_tokens=8, batch_size=4)
    over = sum(len(ids) + 8 > longest + 6 for ids in tok([p["prompt"] for p in PROMPTS])["input_ids"])
    assert 0 < over < len(PROMPTS)
    assert f"{over} of {len(PROMPTS)} prompts plus max_new_tokens=8 can run past the model's max_position_embeddings={longest + 6}" in caplog.text


def test_stop_strings_stop_and_trim(mt, monkeypatch):
    model, tok = mt
    lengths = []
    gen = model.generate
    def spy(*a, **k):
        out = gen(*a, **k); lengths.append(out.shape[1] - k["input_ids"].shape[1]); return out
    monkeypatch.setattr(model, "generate", spy)
    free = sample(model, tok, PROMPTS[:1], max_new_tokens=40)[0]["samples"][0]
    # a printable string the model really produces mid-way
    i = next(i for i in range(4, len(free) - 3) if free[i:i + 3].isascii() and free[i:i + 3].isprintable())
    stop = free[i:i + 3]
    cut = free.find(stop)
    rec = sample(model, tok, PROMPTS[:1], max_new_tokens=40, stop=[stop, "NEVER-SEEN"])[0]
    assert rec["samples"] == [free[:cut]] and stop not in rec["samples"][0]
    assert lengths[0] == 40 and lengths[1] < 40              # generation itself stopped early


def test_shards_and_resume(mt, tmp_path):
    full = sample(*mt, PROMPTS, max_new_tokens=6, out_dir=tmp_path, shard_size=4, batch_size=3)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    assert len(read_shards(tmp_path)) == 10
    (tmp_path / "shard-00001.jsonl").unlink()                # lose a shard: only those ids are redone
    again = sample(*mt, PROMPTS, max_new_tokens=6, out_dir=tmp_path, shard_size=4)
    assert again == full and len(read_shards(tmp_path)) == 10
    assert (tmp_path / "shard-00003.jsonl").exists()
    with pytest.raises(ValueError, match="other settings"):
        sample(*mt, PROMPTS, max_new_tokens=7, out_dir=tmp_path)
    with pytest.raises(ValueError, match="another prompt"):
        sample(*mt, [{"id": "q0", "prompt": "changed"}], max_new_tokens=6, out_dir=tmp_path)
    with pytest.raises(ValueError, match="duplicate prompt id"):
        sample(*mt, [{"id": 1, "prompt": "a"}, {"id": 1, "prompt": "b"}])


RANK_CHILD = """
import json, sys
import torch.distributed as dist
from w2s_nb.config import ModelConfig
from w2s_nb.models import ModelRef, load_model, load_tokenizer
from w2s_nb.sample import sample
dist.init_process_group("gloo")  # what the trainers' accelerate state does on CPU
d, out, prompts, limit = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
cfg = ModelConfig(path=d, finetune="lora")
model = load_model(ModelRef(d), cfg, "cpu")
model.config.max_position_embeddings = limit  # some prompts + 6 new tokens pass it: one warning per launch
recs = sample(model, load_tokenizer(ModelRef(d), cfg), prompts, max_new_tokens=6, batch_size=2, shard_size=2, out_dir=out)
assert len(recs) == len(prompts)  # each rank returns every record once all ranks are done
"""


@pytest.mark.slow
def test_two_ranks_sample_their_slices_into_own_shards(mt, tiny_model_dir, tmp_path):
    """2 CPU processes (accelerate launch) write exactly the records of 1 process, each rank into its own shards;
    the prompts that outgrow the model's trained length are counted over both ranks, in one warning."""
    one = sample(*mt, PROMPTS, max_new_tokens=6, batch_size=2, shard_size=2, out_dir=tmp_path / "one")
    lens = [len(ids) for ids in mt[1]([p["prompt"] for p in PROMPTS])["input_ids"]]
    limit = max(lens) + 3
    over = sum(n + 6 > limit for n in lens)
    assert 1 < over < len(PROMPTS)  # on both ranks' slices: each rank alone would count fewer
    script = tmp_path / "child.py"; script.write_text(RANK_CHILD)
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        str(root / "environments/accelerate/cpu_2proc.yaml"), str(script), tiny_model_dir,
                        str(tmp_path / "two"), json.dumps(PROMPTS), str(limit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [l for l in r.stderr.splitlines() if "can run past the model's max_position_embeddings" in l]
    assert len(warnings) == 1 and f"{over} of {len(PROMPTS)} prompts plus max_new_tokens=6" in warnings[0], r.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "two").glob("shard-*.jsonl"))
    assert names == ["shard-00000-r0.jsonl", "shard-00000-r1.jsonl", "shard-00001-r0.jsonl", "shard-00001-r1.jsonl",
                     "shard-00002-r0.jsonl", "shard-00002-r1.jsonl"]  # 5 records per rank, 2 per shard
    two = read_shards(tmp_path / "two")  # refuses an id written twice
    assert [two[r["id"]] for r in PROMPTS] == one


ROOT = Path(__file__).resolve().parent.parent
CPU_2PROC = str(ROOT / "environments/accelerate/cpu_2proc.yaml")


@pytest.mark.slow
def test_generate_texts_on_two_processes_writes_the_records_of_one(tiny_model_dir, tmp_path):
    """num_processes=2: generate_texts launches 2 ranks that sample into their own shards; the records (greedy) equal
    1 process's, every id once, returned in input order; a lost shard is resampled by a second launch."""
    ref, cfg = ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir, finetune="lora")
    sc = SamplingConfig(batch_size=2, max_new_tokens=6, stop=[], shard_size=2)
    one = generate_texts(ref, cfg, PROMPTS, sc, out_dir=tmp_path / "one")
    two = generate_texts(ref, cfg, PROMPTS, sc, out_dir=tmp_path / "two", num_processes=2, accelerate_config=CPU_2PROC)
    assert two == one and [r["id"] for r in two] == [p["id"] for p in PROMPTS]
    assert sorted(p.name for p in (tmp_path / "two").glob("shard-*.jsonl")) == [
        f"shard-0000{i}-r{r}.jsonl" for i in range(3) for r in (0, 1)]  # 5 records per rank, 2 per shard
    lines = [json.loads(l) for p in (tmp_path / "two").glob("shard-*.jsonl") for l in p.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(p["id"] for p in PROMPTS)  # every id exactly once
    job = json.loads((tmp_path / "two" / "job.json").read_text())
    assert (job["kind"], job["num_processes"], len(job["prompts"])) == ("sample", 2, len(PROMPTS))
    assert (tmp_path / "two" / "launch.log").stat().st_size > 0  # the ranks' output
    (tmp_path / "two" / "shard-00001-r1.jsonl").unlink()  # lose a shard: a second launch redoes only its 2 ids
    assert generate_texts(ref, cfg, PROMPTS, sc, out_dir=tmp_path / "two", num_processes=2,
                          accelerate_config=CPU_2PROC) == one
    assert len(read_shards(tmp_path / "two")) == len(PROMPTS)


@pytest.mark.slow
def test_failed_sampling_launch_names_its_log(tiny_model_dir, tmp_path):
    "A launch that does not start 2 ranks (a MULTI_CPU accelerate config starts 1) fails with the log's path and tail."
    acc = tmp_path / "multi_cpu.yaml"
    acc.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\nnum_machines: 1\nnum_processes: 2\n"
                   "mixed_precision: 'no'\nuse_cpu: true\n")
    with pytest.raises(RuntimeError) as e:
        generate_texts(ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir, finetune="lora"), PROMPTS,
                       SamplingConfig(max_new_tokens=4), out_dir=tmp_path / "s", num_processes=2, accelerate_config=str(acc))
    assert f"full output in {tmp_path / 's' / 'launch.log'}" in str(e.value)
    assert "the job asks for num_processes=2 but this launch runs 1 process" in str(e.value)  # the log's tail


def test_finished_out_dir_returns_without_launching(tiny_model_dir, tmp_path, monkeypatch):
    "A finished out_dir is read back, whatever num_processes; other settings or prompts fail before anything is launched."
    import w2s_nb.sample as S
    ref, cfg, sc = ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir, finetune="lora"), SamplingConfig(max_new_tokens=4)
    first = generate_texts(ref, cfg, PROMPTS[:4], sc, out_dir=tmp_path)
    monkeypatch.setattr(S, "launch_job", lambda *a, **k: pytest.fail("launched although every id is done"))
    assert generate_texts(ref, cfg, PROMPTS[:4], sc, out_dir=tmp_path, num_processes=2, accelerate_config=CPU_2PROC) == first
    with pytest.raises(ValueError, match="other settings"):
        generate_texts(ref, cfg, PROMPTS[:5], SamplingConfig(max_new_tokens=5), out_dir=tmp_path, num_processes=2,
                       accelerate_config=CPU_2PROC)
    # every id is done, but for other settings or another prompt: an error, never the old samples as if they were these
    with pytest.raises(ValueError, match="other settings"):
        generate_texts(ref, cfg, PROMPTS[:4], sc, n=3, temperature=0.7, out_dir=tmp_path)
    with pytest.raises(ValueError, match="written for another prompt"):
        generate_texts(ref, cfg, [dict(PROMPTS[0], prompt="Question: something else")] + PROMPTS[1:4], sc, out_dir=tmp_path)


def test_vllm_keeps_one_process(tiny_model_dir, tmp_path, monkeypatch):
    "backend vllm with num_processes=2 samples in this process (vLLM parallelises itself); nothing is launched."
    import w2s_nb.sample as S
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    monkeypatch.setattr(S, "_load_vllm", lambda *a: ("engine", None))
    monkeypatch.setattr(S, "shutdown_vllm", lambda llm: None)
    monkeypatch.setattr(S, "vllm_generate_fn", lambda llm, n, *a: lambda ps, seed: [[p[-3:]] * n for p in ps])
    monkeypatch.setattr(S, "launch_job", lambda *a, **k: pytest.fail("vLLM sampling was launched"))
    recs = generate_texts(ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir), PROMPTS, SamplingConfig(backend="vllm"),
                          out_dir=tmp_path, num_processes=2, accelerate_config=CPU_2PROC)
    assert [r["samples"] for r in recs] == [[p["prompt"][-3:]] for p in PROMPTS]


CHILD = """
import os, signal, sys
from w2s_nb.config import ModelConfig, SamplingConfig
from w2s_nb.models import ModelRef
from w2s_nb.sample import generate_texts
d, out = sys.argv[1], sys.argv[2]
replace, shards = os.replace, []
def replace_then_die(src, dst):  # the third shard is killed half-written: its temp file exists, the shard does not
    if ".shard-" in str(src):
        shards.append(dst)
        if len(shards) == 3: os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst)
os.replace = replace_then_die
prompts = [{"id": i, "prompt": f"Question: What is {i} plus {i % 7}?\\nAnswer:"} for i in range(400)]
generate_texts(ModelRef(d), ModelConfig(path=d, finetune="lora"), prompts,
               SamplingConfig(batch_size=2, max_new_tokens=16, stop=[], shard_size=2), out_dir=out)
"""


def test_kill_then_resume_no_duplicates_no_losses(tiny_model_dir, tmp_path):
    "A run SIGKILLed while writing its third shard resumes: nothing lost, nothing twice, the half-written file gone."
    out = tmp_path / "samples"
    r = subprocess.run([sys.executable, "-c", CHILD, tiny_model_dir, str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert sorted(p.name for p in out.glob("shard-*.jsonl")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert len([p for p in out.iterdir() if p.name.endswith(".tmp")]) == 1  # the third shard, half-written
    before = read_shards(out)
    assert len(before) == 4                                  # 2 shards of 2 survived the kill
    prompts = [{"id": i, "prompt": f"Question: What is {i} plus {i % 7}?\nAnswer:"} for i in range(400)]
    cfg = ModelConfig(path=tiny_model_dir, finetune="lora")
    recs = generate_texts(ModelRef(tiny_model_dir), cfg, prompts,
                          SamplingConfig(batch_size=32, max_new_tokens=16, stop=[], shard_size=64), out_dir=out)
    lines = [json.loads(l) for f in sorted(out.glob("shard-*.jsonl")) for l in f.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == list(range(400))  # every id exactly once
    assert [r["id"] for r in recs] == list(range(400))
    assert all(recs[i] == r for i, r in before.items())       # what was written before the kill is kept
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    # greedy: resumed output equals an uninterrupted run on the same prompts
    assert recs[-5:] == sample(load_model(ModelRef(tiny_model_dir), cfg, "cpu"), load_tokenizer(ModelRef(tiny_model_dir), cfg),
                               prompts[-5:], max_new_tokens=16)


def test_generate_texts_skips_loading_when_done(tiny_model_dir, tmp_path, monkeypatch, caplog):
    cfg, sc = ModelConfig(path=tiny_model_dir, finetune="lora"), SamplingConfig(max_new_tokens=5, stop=["Question"])
    first = generate_texts(ModelRef(tiny_model_dir), cfg, PROMPTS[:4], sc, out_dir=tmp_path)
    import w2s_nb.sample as S
    monkeypatch.setattr(S, "load_model", lambda *a, **k: pytest.fail("model loaded although all ids are done"))
    assert generate_texts(ModelRef(tiny_model_dir), cfg, PROMPTS[:4], sc, out_dir=tmp_path) == first
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="sampling.backend=vllm cannot run here: vLLM needs a CUDA device"):
        generate_texts(ModelRef(tiny_model_dir), cfg, PROMPTS[:2], SamplingConfig(backend="vllm", max_new_tokens=5))
    vl = generate_texts(ModelRef(tiny_model_dir), cfg, PROMPTS[:2], SamplingConfig(backend="auto", max_new_tokens=5,
                        stop=["Question"]))
    assert vl == first[:2] and "sampling.backend=auto: vLLM needs a CUDA device; using transformers" in caplog.text


def test_choose_backend(monkeypatch):
    import w2s_nb.sample as S
    from w2s_nb.sample import choose_backend
    assert [choose_backend(b, "cpu") for b in ("hf", "auto")] == ["hf", "hf"]
    monkeypatch.setattr(S, "vllm_problem", lambda device: "vLLM is not installed (pip install vllm)")
    with pytest.raises(RuntimeError, match="backend=vllm cannot run here: vLLM is not installed"):
        choose_backend("vllm", "cuda")
    monkeypatch.setattr(S, "vllm_problem", lambda device: None)
    assert [choose_backend(b, "cuda") for b in ("hf", "vllm", "auto")] == ["hf", "vllm", "vllm"]
    with pytest.raises(ValueError, match="expected hf, vllm or auto"):
        choose_backend("tgi", "cuda")


def test_vllm_gets_the_dtype_transformers_uses(tmp_path, monkeypatch):
    """dtype auto: vLLM gets what `load_model` uses on CUDA (bf16, fp16 without bf16 support), not vLLM's own `auto`
    (the checkpoint's dtype); an explicit dtype passes through; `vllm.LLM` gets only its own arguments."""
    import torch
    from w2s_nb.models import resolve_dtype
    from w2s_nb.sample import vllm_engine_args
    for bf16, want in ((True, "bfloat16"), (False, "float16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
        plan = vllm_engine_args(ModelRef("org/m"), ModelConfig(path="org/m"), SamplingConfig(), 0, tmp_path)
        assert plan.engine["dtype"] == want and resolve_dtype("auto", "cuda") == getattr(torch, want)
        assert (plan.engine["model"], plan.merge_to, plan.lora) == ("org/m", None, None)
    plan = vllm_engine_args(ModelRef("org/m"), ModelConfig(path="org/m", finetune="lora", dtype="float32"), SamplingConfig(), 0,
                            tmp_path)
    assert plan.engine["dtype"] == "float32"
    assert set(plan.engine) == {"model", "dtype", "seed", "trust_remote_code", "tensor_parallel_size"}


def test_vllm_gets_whole_shards_and_is_shut_down(tiny_model_dir, tmp_path, monkeypatch):
    "With the vLLM backend (faked: no GPU here), each engine call is one whole shard, and the engine is shut down."
    import w2s_nb.sample as S
    calls, events = [], []
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    monkeypatch.setattr(S, "_load_vllm", lambda *a: events.append("load") or ("engine", None))
    monkeypatch.setattr(S, "shutdown_vllm", lambda llm: events.append(("shutdown", llm)))
    monkeypatch.setattr(S, "vllm_generate_fn", lambda llm, n, *a: lambda ps, seed: calls.append(len(ps)) or [[p[-3:]] * n for p in ps])
    prompts = [{"id": i, "prompt": f"Question {i}"} for i in range(10)]
    sc = SamplingConfig(backend="vllm", batch_size=2, max_batch_tokens=8, shard_size=4, max_new_tokens=5)
    recs = generate_texts(ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir), prompts, sc, n=3, temperature=1.0,
                          out_dir=tmp_path)
    assert calls == [4, 4, 2] and events == ["load", ("shutdown", "engine")]
    assert [len(read_jsonl(p)) for p in sorted(tmp_path.glob("shard-*.jsonl"))] == [4, 4, 2]
    assert [r["samples"] for r in recs] == [[p["prompt"][-3:]] * 3 for p in prompts]


def fake_vllm(monkeypatch, calls: list):
    "A stand-in `vllm` module (no GPU here) that records what the engine is built with and asked for."
    import types
    vllm, lora, req = (types.ModuleType(n) for n in ("vllm", "vllm.lora", "vllm.lora.request"))
    class LLM:
        def __init__(self, **kw): calls.append(("LLM", kw))
        def generate(self, prompts, sp, use_tqdm=True, lora_request=None):
            calls.append(("generate", len(prompts), lora_request))
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=p[-3:] + "Question 9")] * sp.n) for p in prompts]
    class SamplingParams:
        def __init__(self, **kw): self.__dict__.update(kw)
    vllm.LLM, vllm.SamplingParams, req.LoRARequest = LLM, SamplingParams, lambda *a: ("LoRARequest", *a)
    for m in (vllm, lora, req): monkeypatch.setitem(sys.modules, m.__name__, m)


def adapter_dir(path, r: int):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": r}))
    return str(path)


def test_vllm_serves_a_qlora_adapter_over_the_base(tiny_model_dir, tmp_path, monkeypatch):
    "One adapter: vLLM loads the 4-bit base once with LoRA slots and applies the adapter per call; no merged copy."
    import w2s_nb.sample as S
    calls = []
    fake_vllm(monkeypatch, calls)
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    monkeypatch.setattr(S, "save_merged", lambda *a: pytest.fail("a merged copy was written"))
    monkeypatch.setattr(S.torch.cuda, "is_bf16_supported", lambda: True)  # dtype auto on an H100: bf16, as transformers
    a = adapter_dir(tmp_path / "m_plus" / "adapter", r=12)
    sc = SamplingConfig(backend="vllm", shard_size=2, tensor_parallel_size=2, stop=["Question"])
    recs = generate_texts(ModelRef(tiny_model_dir, [a]), ModelConfig(path=tiny_model_dir, finetune="qlora"), PROMPTS[:5], sc,
                          out_dir=tmp_path / "out")
    assert calls[0] == ("LLM", dict(model=tiny_model_dir, dtype="bfloat16", seed=0, trust_remote_code=False, tensor_parallel_size=2,
                                    quantization="bitsandbytes", enable_lora=True, max_loras=1, max_lora_rank=16))
    assert calls[1:] == [("generate", k, ("LoRARequest", "adapter", 1, a)) for k in (2, 2, 1)]
    assert [r["samples"] for r in recs] == [[p["prompt"][-3:]] for p in PROMPTS[:5]]  # cut at the stop string


def test_vllm_merges_a_stack_of_adapters_once(tiny_model_dir, tmp_path, monkeypatch, caplog):
    "Two adapters (plain LoRA stacks them): one merged copy, reused on resume; no LoRA slots."
    import w2s_nb.sample as S
    calls, merged = [], []
    fake_vllm(monkeypatch, calls)
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    def save_merged(ref, cfg, target):
        merged.append(target); Path(target).mkdir(parents=True); (Path(target) / "config.json").write_text("{}")
    monkeypatch.setattr(S, "save_merged", save_merged)
    ref = ModelRef(tiny_model_dir, [adapter_dir(tmp_path / "r1", 8), adapter_dir(tmp_path / "r2", 8)])
    cfg, out = ModelConfig(path=tiny_model_dir, finetune="lora"), tmp_path / "out"
    for prompts in (PROMPTS[:2], PROMPTS[:3]):  # the second call adds a prompt: the engine starts again, no new merge
        generate_texts(ref, cfg, prompts, SamplingConfig(backend="vllm"), out_dir=out)
    assert merged == [str(out / "merged-model")]
    engines = [c[1] for c in calls if c[0] == "LLM"]
    assert [e["model"] for e in engines] == [str(out / "merged-model")] * 2
    assert not any("enable_lora" in e or "quantization" in e for e in engines)
    assert [c[2] for c in calls if c[0] == "generate"] == [None, None]
    assert "vLLM serves one LoRA adapter per model; 2 adapters" in caplog.text


def test_vllm_lora_rank(tmp_path):
    from w2s_nb.sample import vllm_lora_rank
    assert [vllm_lora_rank(adapter_dir(tmp_path / str(r), r)) for r in (1, 8, 9, 64, 65, 512)] == [1, 8, 16, 64, 128, 512]
    with pytest.raises(ValueError, match="r=600; vLLM serves ranks up to 512"):
        vllm_lora_rank(adapter_dir(tmp_path / "big", 600))
    with pytest.raises(FileNotFoundError, match="no PEFT adapter config"):
        vllm_lora_rank(tmp_path)


def test_remove_stale_tmp_only_touches_this_ranks_shards(tmp_path):
    from w2s_nb.sample import remove_stale_tmp
    names = [".shard-00003.jsonl.ab_1.tmp", ".shard-00002-r0.jsonl.x.tmp", ".shard-00002-r1.jsonl.y.tmp",
             ".sampling.json.z.tmp", "shard-00001.jsonl"]
    for n in names: (tmp_path / n).write_text("")
    assert remove_stale_tmp(tmp_path, rank=1, world=2) == [".shard-00002-r1.jsonl.y.tmp"]  # rank 0 may be writing its own
    assert remove_stale_tmp(tmp_path) == [".shard-00003.jsonl.ab_1.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sampling.json.z.tmp", ".shard-00002-r0.jsonl.x.tmp", "shard-00001.jsonl"]
