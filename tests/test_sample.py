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
from w2s_nb.files import read_jsonl
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


def test_prompts_are_capped_at_the_context(mt, monkeypatch, caplog):
    """prompt + new tokens never pass the model's max_position_embeddings: the long prompts' new tokens are capped
    (their samples finish "length"), prompts that fit keep their samples, a note counts the capped ones; a prompt that
    alone fills the context is an error naming it, before anything is generated."""
    model, tok = mt
    lens = {p["id"]: len(ids) for p, ids in zip(PROMPTS, tok([p["prompt"] for p in PROMPTS])["input_ids"])}
    free = {r["id"]: r for r in sample(model, tok, PROMPTS, max_new_tokens=8, batch_size=4)}  # the full 256 positions
    limit = max(lens.values()) + 3
    over = [i for i, n in lens.items() if n + 8 > limit]
    assert 0 < len(over) < len(PROMPTS)
    monkeypatch.setattr(model.config, "max_position_embeddings", limit)
    calls, gen = [], model.generate
    def spy(*a, **k):
        out = gen(*a, **k); calls.append((k["input_ids"].shape[1], out.shape[1])); return out
    monkeypatch.setattr(model, "generate", spy)
    with caplog.at_level("WARNING", logger="w2s_nb.sample"):
        capped = {r["id"]: r for r in sample(model, tok, PROMPTS, max_new_tokens=8, batch_size=4)}
    assert max(total for _, total in calls) <= limit                  # no call ran past the context
    for i, r in capped.items():
        if i in over:
            assert r["finish"] == ["length"]
        else: assert r == free[i]                                       # prompts that fit: the same samples
    note = f"{len(over)} of {len(PROMPTS)} prompts plus max_new_tokens=8 would run past the model's context of {limit}"
    assert note in caplog.text
    calls.clear()
    big = max(lens, key=lens.get)
    monkeypatch.setattr(model.config, "max_position_embeddings", lens[big])
    n_big = lens[big]
    full = rf"no room for a new token in the model's context of {n_big} positions: id '{big}' \({n_big} tokens\)"
    with pytest.raises(ValueError, match=full):
        sample(model, tok, PROMPTS, max_new_tokens=8, batch_size=4)
    assert calls == []                                                  # nothing generated


def test_the_configs_context_length_sets_the_cap(mt):
    """`ModelConfig.context_length` is the context `generate_texts` caps at (None: the model's own, as
    configs/default.yaml overrides it for the world): below the model's positions it cuts long prompts' samples, which
    is what a capped prompt gets instead of the model's max_position_embeddings."""
    model, tok = mt
    lens = {p["id"]: len(ids) for p, ids in zip(PROMPTS, tok([p["prompt"] for p in PROMPTS])["input_ids"])}
    limit = max(lens.values()) + 3
    over = {i for i, n in lens.items() if n + 8 > limit}
    ref, sc = ModelRef(model.name_or_path), SamplingConfig(batch_size=4, max_new_tokens=8, stop=[])
    def run(**kw): return {r["id"]: r for r in generate_texts(
        ref, ModelConfig(path=model.name_or_path, finetune="lora", **kw), PROMPTS, sc)}
    own, small = run(), run(context_length=limit)
    assert {i for i, r in small.items() if r["finish"] == ["length"]} >= over
    assert all(small[i] == own[i] for i in lens if i not in over)          # prompts that fit: the same samples
    assert any(small[i]["samples"] != own[i]["samples"] for i in over)     # the cap cut the long ones


def test_every_record_says_why_its_samples_ended(mt, tmp_path):
    """finish per sample: a short cap gives "length", a stop string "stop"; greedy repeats the one reason n times like
    the samples; an old shard without finish resumes unchanged (unknown: None, kept by complete_samples)."""
    from w2s_nb.sample import complete_samples, finish_reasons
    model, tok = mt
    cut = sample(model, tok, PROMPTS[:3], n=3, max_new_tokens=3)
    assert [r["finish"] for r in cut] == [["length"] * 3] * 3 and all(complete_samples(r) == [] for r in cut)
    free = sample(model, tok, PROMPTS[:1], max_new_tokens=40)[0]["samples"][0]
    stop = next(w for w in (free[i:i + 3] for i in range(4, len(free) - 3)) if w.isascii() and w.isprintable())
    stopped = sample(model, tok, PROMPTS[:1], n=2, temperature=0.0, max_new_tokens=40, stop=[stop])[0]
    assert stopped["finish"] == ["stop", "stop"] and complete_samples(stopped) == stopped["samples"]
    sampled = sample(model, tok, PROMPTS[:2], n=3, temperature=1.0, max_new_tokens=3, seed=1)
    assert all(r["finish"] == ["length"] * 3 for r in sampled)
    out = tmp_path / "old"
    sample(model, tok, PROMPTS[:4], max_new_tokens=3, out_dir=out, shard_size=2)
    shard = out / "shard-00000.jsonl"                                   # as an older version wrote it
    old = [{k: v for k, v in json.loads(l).items() if k != "finish"} for l in shard.read_text().splitlines()]
    shard.write_text("".join(json.dumps(r) + "\n" for r in old))
    again = sample(model, tok, PROMPTS[:4], max_new_tokens=3, out_dir=out, shard_size=2)
    by_id = {r["id"]: r for r in again}
    assert [by_id[r["id"]] for r in old] == old and len(by_id) == 4
    assert sorted(str(finish_reasons(r)) for r in again) == ["['length']", "['length']", "[None]", "[None]"]
    assert all(complete_samples(r) == r["samples"] for r in old)


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
model.config.max_position_embeddings = limit  # some prompts + 6 new tokens pass it: capped, one note per launch
recs = sample(model, load_tokenizer(ModelRef(d), cfg), prompts, max_new_tokens=6, batch_size=2, shard_size=2, out_dir=out)
assert len(recs) == len(prompts)  # each rank returns every record once all ranks are done
"""


@pytest.mark.slow
def test_two_ranks_sample_their_slices_into_own_shards(mt, tiny_model_dir, tmp_path):
    """2 CPU processes (accelerate launch) write exactly the records of 1 process, each rank into its own shards;
    the prompts that outgrow the model's trained length are counted over both ranks, in one warning."""
    lens = [len(ids) for ids in mt[1]([p["prompt"] for p in PROMPTS])["input_ids"]]
    limit = max(lens) + 3
    one = sample(*mt, PROMPTS, max_new_tokens=6, batch_size=2, shard_size=2, out_dir=tmp_path / "one",
                 context_limit=limit)
    over = sum(n + 6 > limit for n in lens)
    assert 1 < over < len(PROMPTS)  # on both ranks' slices: each rank alone would count fewer
    script = tmp_path / "child.py"; script.write_text(RANK_CHILD)
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        str(root / "environments/accelerate/cpu_2proc.yaml"), str(script), tiny_model_dir,
                        str(tmp_path / "two"), json.dumps(PROMPTS), str(limit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [l for l in r.stderr.splitlines() if "would run past the model's context" in l]
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


def test_vllm_keeps_one_process_when_one_engine_takes_every_gpu(tiny_model_dir, tmp_path, monkeypatch):
    "backend vllm, num_processes=2, tensor_parallel_size=2: one engine spans both GPUs, in this process, no launch."
    import w2s_nb.sample as S
    calls = []
    fake_vllm(monkeypatch, calls)
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    monkeypatch.setattr(S, "launch_job", lambda *a, **k: pytest.fail("vLLM sampling was launched"))
    recs = generate_texts(ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir),
                          PROMPTS, SamplingConfig(backend="vllm", tensor_parallel_size=2), out_dir=tmp_path,
                          num_processes=2, accelerate_config=CPU_2PROC)
    assert [r["samples"] for r in recs] == [[p["prompt"][-3:] + " = 9"] for p in PROMPTS]  # cut at "Question"
    assert calls[0][1]["tensor_parallel_size"] == 2


def test_sampling_launches_carry_a_long_process_group_timeout(tiny_model_dir, tmp_path, monkeypatch):
    """A launched sampling job carries timeout_s (default 6 hours, not torch's 10 minutes), and each rank's process
    group is started with it; vLLM with num_processes=4, tensor_parallel_size=2 launches 2 engine ranks."""
    import datetime
    import w2s_nb.sample as S
    jobs = []
    monkeypatch.setattr(S, "launch_job", lambda job, out_dir, n, acc, **k: jobs.append((job, n)) or [])
    ref, cfg = ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir, finetune="lora")
    generate_texts(ref, cfg, PROMPTS, SamplingConfig(), out_dir=tmp_path / "a", num_processes=2)
    generate_texts(ref, cfg, PROMPTS, SamplingConfig(), out_dir=tmp_path / "b", num_processes=2, timeout_s=120)
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    generate_texts(ref, cfg, PROMPTS, SamplingConfig(backend="vllm", tensor_parallel_size=2), out_dir=tmp_path / "c",
                   num_processes=4)
    got = [(j["timeout_s"], j["backend"], n) for j, n in jobs]
    assert got == [(6 * 3600, "hf", 2), (120, "hf", 2), (6 * 3600, "vllm", 2)]
    assert jobs[2][0]["sampling"]["tensor_parallel_size"] == 2
    seen = []
    monkeypatch.setattr(S.torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(S.torch.distributed, "init_process_group", lambda b, timeout=None: seen.append((b, timeout)))
    S._start_process_group("cpu", 120)
    assert seen == [("gloo", datetime.timedelta(seconds=120))]


FAKE_VLLM_PACKAGE = """
import atexit, json, os, sys
sys.path.insert(0, {tests!r})
import test_sample
calls = []
mods = test_sample.fake_vllm_modules(calls)
def dump():
    with open(os.path.join({log!r}, f"{{os.getpid()}}.json"), "w") as f:
        json.dump(dict(visible=mods[0].visible, calls=[c[0] for c in calls], rank_env=os.environ.get("RANK")), f)
atexit.register(dump)
for m in mods: sys.modules[m.__name__] = m
"""


@pytest.mark.slow
def test_data_parallel_vllm_one_engine_per_rank_on_its_own_gpus(tiny_model_dir, tmp_path, monkeypatch):
    """backend vllm, num_processes=2, tensor_parallel_size=1: two launched ranks (2 CPU processes; the stand-in vLLM in
    each), each an engine pinned to its own GPU (CUDA_VISIBLE_DEVICES 0 and 1, torchrun's variables hidden from vLLM),
    each its slice into its own shards, each engine shut down; the records equal one engine's."""
    import w2s_nb.sample as S
    pkg, log = tmp_path / "fake" / "vllm", tmp_path / "log"
    pkg.mkdir(parents=True); log.mkdir()
    (pkg / "__init__.py").write_text(FAKE_VLLM_PACKAGE.format(tests=str(ROOT / "tests"), log=str(log)))
    paths = [str(tmp_path / "fake"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    calls = []
    fake_vllm(monkeypatch, calls)
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    ref, cfg = ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir)
    sc = SamplingConfig(backend="vllm", shard_size=2, stop=["Question"])
    one = generate_texts(ref, cfg, PROMPTS, sc, out_dir=tmp_path / "one")
    two = generate_texts(ref, cfg, PROMPTS, sc, out_dir=tmp_path / "two", num_processes=2, accelerate_config=CPU_2PROC)
    assert two == one
    assert sorted(p.name for p in (tmp_path / "two").glob("shard-*.jsonl")) == [
        f"shard-0000{i}-r{r}.jsonl" for i in range(3) for r in (0, 1)]  # 5 records per rank, 2 per shard
    ranks = [json.loads(p.read_text()) for p in log.glob("*.json")]
    ranks = [r for r in ranks if r["visible"]]                          # the ranks that started an engine
    assert sorted(v for r in ranks for v in r["visible"]) == ["0", "1"] and all(r["rank_env"] is None for r in ranks)
    assert all(r["calls"][0] == "LLM" and r["calls"][-1] == "engine_core.shutdown" for r in ranks)


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
        assert (plan.engine["model"], plan.merge_to, plan.loras) == ("org/m", None, ())
    plan = vllm_engine_args(ModelRef("org/m"), ModelConfig(path="org/m", finetune="lora", dtype="float32"), SamplingConfig(), 0,
                            tmp_path)
    assert plan.engine["dtype"] == "float32"
    assert set(plan.engine) == {"model", "dtype", "seed", "trust_remote_code", "tensor_parallel_size"}


def test_vllm_gets_whole_shards_and_is_shut_down(tiny_model_dir, tmp_path, monkeypatch):
    """With the vLLM backend (the stand-in: no GPU here), each engine call is one whole shard with one SamplingParams
    per prompt, each record carries vLLM's finish_reason, and the engine core is shut down (vLLM 0.27's LLMEngine has no
    shutdown of its own: the old code, which called llm_engine.shutdown only if it existed, never stopped it)."""
    import w2s_nb.sample as S
    calls = []
    fake_vllm(monkeypatch, calls)
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    prompts = [{"id": i, "prompt": f"Question {i}"} for i in range(10)]
    sc = SamplingConfig(backend="vllm", batch_size=2, max_batch_tokens=8, shard_size=4, max_new_tokens=5, stop=[])
    recs = generate_texts(ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir), prompts, sc, n=3, temperature=1.0,
                          out_dir=tmp_path)
    gens = [c for c in calls if c[0] == "generate"]
    assert [g[1] for g in gens] == [4, 4, 2] and all(g[3] == [5] * g[1] for g in gens)  # max_tokens per prompt
    assert [c[0] for c in calls if c[0] != "generate"] == ["LLM", "engine_core.shutdown"]
    assert [len(read_jsonl(p)) for p in sorted(tmp_path.glob("shard-*.jsonl"))] == [4, 4, 2]
    assert [r["samples"] for r in recs] == [[p["prompt"][-3:] + FAKE_TAIL] * 3 for p in prompts]
    assert [r["finish"] for r in recs] == [["length"] * 3] * 10  # the stand-in stops by itself only given 8+ tokens


FAKE_TAIL = " = 9Question 9"  # what the stand-in engine appends to a prompt's last 3 characters
# vllm.LLM's keyword arguments in 0.27.1 (vllm/entrypoints/llm.py), plus the EngineArgs fields sample passes (**kwargs)
LLM_KWARGS = {"runner", "convert", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code",
              "allowed_local_media_path", "allowed_media_domains", "tensor_parallel_size", "dtype", "quantization",
              "revision", "tokenizer_revision", "chat_template", "seed", "gpu_memory_utilization", "cpu_offload_gb",
              "enforce_eager", "hf_token", "hf_overrides", "kv_cache_memory_bytes", "compilation_config",
              "quantization_config"}
ENGINE_ARGS = {"max_model_len", "enable_lora", "max_loras", "max_lora_rank", "data_parallel_size"}
SAMPLING_FIELDS = {"n", "temperature", "top_p", "top_k", "seed", "stop", "max_tokens", "min_tokens", "logprobs"}


def fake_vllm(monkeypatch, calls: list, version: str = "0.27.1"):
    "Install the stand-in `vllm` modules (`fake_vllm_modules`) for this test."
    mods = fake_vllm_modules(calls, version)
    for m in mods: monkeypatch.setitem(sys.modules, m.__name__, m)
    return mods[0]


def fake_vllm_modules(calls: list, version: str = "0.27.1"):
    """Stand-in `vllm`, `vllm.lora`, `vllm.lora.request` modules (no GPU here) following vLLM 0.27.1's API, recording
    what the engine is built with and asked for: `LLM(model, **kwargs)` (its own keywords only; `vllm.visible` notes the
    CUDA_VISIBLE_DEVICES each engine saw), `llm.llm_engine.engine_core.shutdown()` (and no `llm_engine.shutdown`),
    `generate(prompts, sampling_params, *, use_tqdm, lora_request)` with one SamplingParams or a list of one per prompt,
    `RequestOutput` / `CompletionOutput` (text, token_ids, finish_reason), `LoRARequest(lora_name, lora_int_id,
    lora_path)`."""
    import types
    from dataclasses import dataclass
    vllm, lora, req = (types.ModuleType(n) for n in ("vllm", "vllm.lora", "vllm.lora.request"))
    vllm.__version__, vllm.visible = version, []

    @dataclass
    class CompletionOutput:
        index: int
        text: str
        token_ids: list
        cumulative_logprob: object
        logprobs: object
        finish_reason: object = None
        stop_reason: object = None

    @dataclass
    class RequestOutput:
        request_id: str
        prompt: str
        prompt_token_ids: list
        prompt_logprobs: object
        outputs: list
        finished: bool

    class SamplingParams:
        def __init__(self, **kw):
            if unknown := set(kw) - SAMPLING_FIELDS: raise TypeError(f"SamplingParams: unexpected {unknown}")
            self.n, self.max_tokens = 1, 16
            self.__dict__.update(kw)

    @dataclass(eq=False)
    class LoRARequest:
        lora_name: str
        lora_int_id: int
        lora_path: str = ""
        def __post_init__(self):
            if self.lora_int_id < 1: raise ValueError(f"id must be > 0, got {self.lora_int_id}")
            assert self.lora_path, "lora_path cannot be empty"
        def __eq__(self, other):  # by name, as vLLM's
            return isinstance(other, LoRARequest) and self.lora_name == other.lora_name
        def __hash__(self): return hash(self.lora_name)

    class EngineCoreClient:
        def shutdown(self, timeout=None): calls.append(("engine_core.shutdown",))

    class LLMEngine:  # 0.27.1: engine_core and __del__, no shutdown
        def __init__(self): self.engine_core = EngineCoreClient()

    class LLM:
        def __init__(self, model, **kw):
            if unknown := set(kw) - LLM_KWARGS - ENGINE_ARGS:
                raise TypeError(f"LLM: unexpected keyword arguments {unknown}")
            calls.append(("LLM", dict(model=model, **kw)))
            vllm.visible.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
            self.kw, self.llm_engine = kw, LLMEngine()

        def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None):
            sps = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
            assert len(sps) == len(prompts), "a list of SamplingParams must pair one with each prompt"
            calls.append(("generate", len(prompts), lora_request, [sp.max_tokens for sp in sps]))
            def completion(p, i, sp):
                finish = "stop" if sp.max_tokens >= 8 else "length"
                return CompletionOutput(i, p[-3:] + FAKE_TAIL, list(range(min(sp.max_tokens, 8))), None, None, finish)
            return [RequestOutput(str(k), p, [], None, [completion(p, i, sp) for i in range(sp.n)], True)
                    for k, (p, sp) in enumerate(zip(prompts, sps))]

    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    vllm.RequestOutput, vllm.CompletionOutput = RequestOutput, CompletionOutput
    req.LoRARequest = LoRARequest
    return vllm, lora, req


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
                                    max_model_len=256, quantization="bitsandbytes", enable_lora=True, max_loras=1,
                                    max_lora_rank=16))  # the tiny model's 256 positions, set explicitly
    lora = sys.modules["vllm.lora.request"].LoRARequest("adapter-1", 1, a)
    assert [c[:3] for c in calls[1:-1]] == [("generate", k, lora) for k in (2, 2, 1)]
    assert all(c[2].lora_int_id == 1 and c[2].lora_path == a for c in calls[1:-1])
    assert calls[-1] == ("engine_core.shutdown",)
    assert [r["samples"] for r in recs] == [[p["prompt"][-3:] + " = 9"] for p in PROMPTS[:5]]  # cut at the stop string
    assert [r["finish"] for r in recs] == [["stop"]] * 5  # max_new_tokens 512: the stand-in stopped by itself


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


def test_vllm_caps_each_prompt_at_the_context(tiny_model_dir, tmp_path, monkeypatch):
    """vLLM gets the model's context as max_model_len and, per prompt, max_tokens = what fits after it (one
    SamplingParams each): a prompt near the context is capped (finish "length"), the others keep max_new_tokens; a
    prompt that fills the context is an error before the engine is even asked."""
    import w2s_nb.sample as S
    calls = []
    fake_vllm(monkeypatch, calls)
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    cfg = ModelConfig(path=tiny_model_dir)
    tok = load_tokenizer(ModelRef(tiny_model_dir), cfg)
    long = {"id": "long", "prompt": "Question: " + " plus ".join(["7"] * 40) + "?\nAnswer:"}
    n_long = len(tok(long["prompt"])["input_ids"])
    assert max(len(ids) for ids in tok([p["prompt"] for p in PROMPTS[:3]])["input_ids"]) + 20 <= n_long + 5
    monkeypatch.setattr(S, "context_length", lambda ref, cfg: n_long + 5)
    recs = generate_texts(ModelRef(tiny_model_dir), cfg, [long] + PROMPTS[:3],
                          SamplingConfig(backend="vllm", max_new_tokens=20), out_dir=tmp_path)
    assert calls[0][1]["max_model_len"] == n_long + 5
    caps = [c[3] for c in calls if c[0] == "generate"]
    assert caps == [[5], [20, 20, 20]]                                  # longest first: the capped one, batched apart
    assert [r["finish"] for r in recs] == [["length"], ["stop"], ["stop"], ["stop"]]
    calls.clear()
    monkeypatch.setattr(S, "context_length", lambda ref, cfg: n_long)
    with pytest.raises(ValueError, match=rf"context of {n_long} positions: id 'long' \({n_long} tokens\)"):
        generate_texts(ModelRef(tiny_model_dir), cfg, [long], SamplingConfig(backend="vllm"), out_dir=tmp_path / "x")
    assert not [c for c in calls if c[0] == "generate"]


def test_one_vllm_engine_serves_every_model_of_a_base(tiny_model_dir, tmp_path, monkeypatch):
    """A VllmEngine over one base serves the base and two adapters: one LLM (max_loras=2, rank for the larger adapter),
    a LoRARequest with its own id per adapter, left running between models and shut down once, at the end;
    generate_texts refuses a model the engine does not serve."""
    import w2s_nb.sample as S
    calls = []
    fake_vllm(monkeypatch, calls)
    monkeypatch.setattr(S, "choose_backend", lambda backend, device: "vllm")
    cfg, sc = ModelConfig(path=tiny_model_dir, finetune="lora"), SamplingConfig(backend="vllm", stop=[])
    base = ModelRef(tiny_model_dir)
    a1, a2 = adapter_dir(tmp_path / "a1", 8), adapter_dir(tmp_path / "a2", 32)
    refs = [base, ModelRef(tiny_model_dir, [a1]), ModelRef(tiny_model_dir, [a2])]
    with S.VllmEngine(refs + [refs[1]], cfg, sc) as engine:
        assert calls == []                                              # started on first use only
        for i, ref in enumerate(refs):
            generate_texts(ref, cfg, PROMPTS[:2], sc, engine=engine, out_dir=tmp_path / f"out{i}")
        assert [c[0] for c in calls].count("engine_core.shutdown") == 0  # still running for the next model
        with pytest.raises(ValueError, match="serves"):
            generate_texts(ModelRef(tiny_model_dir, [str(tmp_path / "other")]), cfg, PROMPTS[:2], sc, engine=engine)
    assert [c[0] for c in calls] == ["LLM", "generate", "generate", "generate", "engine_core.shutdown"]
    engine_kw = calls[0][1]
    assert (engine_kw["enable_lora"], engine_kw["max_loras"], engine_kw["max_lora_rank"]) == (True, 2, 32)
    loras = [c[2] for c in calls if c[0] == "generate"]
    assert loras[0] is None and [(r.lora_int_id, r.lora_path) for r in loras[1:]] == [(1, a1), (2, a2)]
    assert loras[1] != loras[2]                                         # vLLM tells adapters apart by name


def test_shutdown_stops_the_engine_core_and_checks_memory(tiny_model_dir, tmp_path, monkeypatch):
    """Leaving a VllmEngine shuts the engine core down (the old shutdown_vllm called llm_engine.shutdown only if it
    existed: never, in 0.27.1) and compares the free GPU memory with what was free before the engine loaded: an error
    when it did not come back, naming how much."""
    import w2s_nb.sample as S
    calls, free = [], iter([100 * 2**30, 99 * 2**30, 100 * 2**30, 10 * 2**30])  # before/after, twice
    fake_vllm(monkeypatch, calls)
    monkeypatch.setattr(S.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(S.torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(S.torch.cuda, "mem_get_info", lambda *a: (next(free), 140 * 2**30))
    monkeypatch.setattr(S.torch.cuda, "empty_cache", lambda: calls.append(("empty_cache",)))
    cfg, sc = ModelConfig(path=tiny_model_dir), SamplingConfig(backend="vllm")
    with S.VllmEngine(ModelRef(tiny_model_dir), cfg, sc) as engine: engine.llm()
    assert [c[0] for c in calls] == ["LLM", "engine_core.shutdown", "empty_cache"]  # 1 GiB short: within the slack
    engine = S.VllmEngine(ModelRef(tiny_model_dir), cfg, sc)
    engine.llm()
    lost = r"90.0 GiB of GPU memory did not come back \(10.0 GiB free, 100.0 GiB before it loaded\)"
    with pytest.raises(RuntimeError, match=lost):
        engine.close()
    assert engine._llm is None                                          # the engine's own reference is gone either way


def test_vllm_version_is_checked_at_the_start(monkeypatch, caplog):
    """An installed vLLM outside the tested range stops the run at its start (vllm_preflight) with the range and the
    override; the override lets it run (logged); backend hf never looks at vLLM."""
    import w2s_nb.sample as S
    monkeypatch.setattr(S, "vllm_problem", lambda device: None)
    monkeypatch.delenv("W2S_ALLOW_UNTESTED_VLLM", raising=False)
    monkeypatch.setattr(S, "installed_vllm_version", lambda: "0.34.0")
    for backend in ("vllm", "auto"):
        with pytest.raises(RuntimeError, match=r"vLLM 0.34.0 is installed, but w2s_nb is tested with "
                                               r"vllm>=0.27.1,<0.28.*W2S_ALLOW_UNTESTED_VLLM=1"):
            S.vllm_preflight(backend, "cpu")
    assert S.vllm_preflight("hf", "cpu") == "hf"
    monkeypatch.setenv("W2S_ALLOW_UNTESTED_VLLM", "1")
    assert S.vllm_preflight("vllm", "cpu") == "vllm" and "running anyway (W2S_ALLOW_UNTESTED_VLLM=1)" in caplog.text
    monkeypatch.delenv("W2S_ALLOW_UNTESTED_VLLM")
    assert [S.vllm_version_problem(v) for v in ("0.27.1", "0.27.5")] == [None, None]
    assert all(S.vllm_version_problem(v) for v in ("0.26.0", "0.28.0", "0.34.0"))
    monkeypatch.setattr(S, "installed_vllm_version", lambda: None)
    assert S.vllm_version_problem() is None                            # not installed: vllm_problem says so


def test_cuda_extra_pins_the_tested_vllm():
    "settings.ini's cuda extra asks for exactly the vLLM range the package checks at run start."
    import configparser
    from w2s_nb.sample import VLLM_TESTED
    ini = configparser.ConfigParser()
    ini.read(ROOT / "settings.ini")
    reqs = ini["DEFAULT"]["cuda_requirements"].split()
    assert f"vllm{VLLM_TESTED}" in reqs and "vllm" not in reqs


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


def test_qlora_sampling_on_cpu_runs_dequantized_and_gives_the_4bit_models_answers(tiny_model_dir, tmp_path, monkeypatch):
    """On a CPU, transformers sampling of a QLoRA model swaps the 4-bit layers for their dequantized weights (the same
    values; bitsandbytes re-dequantizes them every step otherwise) under the unmerged adapter: the greedy samples are
    those of the 4-bit model with its adapter, and no Linear4bit is left in the model that samples."""
    import bitsandbytes as bnb
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    import w2s_nb.sample as S
    from w2s_nb.models import lora_config
    cfg = ModelConfig(path=tiny_model_dir, finetune="qlora")
    torch.manual_seed(0)
    p = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_config(cfg))
    for name, w in p.named_parameters():
        if "lora_B" in name: torch.nn.init.normal_(w, std=0.05)
    p.save_pretrained(tmp_path / "a")
    ref, sc = ModelRef(tiny_model_dir, [str(tmp_path / "a")]), SamplingConfig(batch_size=4, max_new_tokens=12, stop=[])
    q4, tok = load_model(ref, cfg, "cpu"), load_tokenizer(ref, cfg)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in q4.modules())
    four_bit = sample(q4, tok, PROMPTS, max_new_tokens=12, batch_size=4)
    seen, real = [], S.sample
    monkeypatch.setattr(S, "sample", lambda model, *a, **k: seen.append(model) or real(model, *a, **k))
    got = generate_texts(ref, cfg, PROMPTS, sc)
    assert got == four_bit
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in seen[0].modules())
