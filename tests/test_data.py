"""Loaders (real files), the D_gold,1 / D_gold,2 / test splits, prompts, and bad input."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from w2s_nb.answers import extract_answer, normalize_answer
from w2s_nb.config import DataConfig
from w2s_nb.data import (COLUMNS, DataError, answer_format, chat_messages, data_files, few_shot_prompt, format_prompt, load_gsm8k,
                         load_jsonl, load_math, load_pool_and_test, make_splits, read_records, resolve_data_dir,
                         run_data, save_split_ids, sft_examples, sft_target, split_gsm8k_solution, zero_shot_prompt,
                         data_inputs, data_source, load_hub, DEFAULT_HUB)

FIXTURES = Path(__file__).resolve().parent.parent / "nbs" / "fixtures"   # tiny made-up files in the real formats


@pytest.fixture(scope="module")
def gsm8k(real_data):
    return load_pool_and_test(DataConfig(dataset="gsm8k", data_dir=str(real_data)))


@pytest.fixture(scope="module")
def math_data(real_data):
    return load_pool_and_test(DataConfig(dataset="math", data_dir=str(real_data)))


# ---------------------------------------------------------------- loaders on the real files

def test_gsm8k_loader(gsm8k):
    pool, test = gsm8k
    assert (len(pool), len(test)) == (7473, 1319)
    assert pool.column_names == list(COLUMNS)
    r = pool[0]
    assert r["id"] == "gsm8k-train-00000" and r["source"] == "gsm8k" and r["answer"] == "72"
    assert r["solution"] == ("Natalia sold 48/2 = 24 clips in May.\n"
                             "Natalia sold 48+24 = 72 clips altogether in April and May.")
    assert not any("<<" in s or "####" in s for s in list(pool["solution"]) + list(test["solution"]))
    assert len(set(pool["id"]) | set(test["id"])) == 7473 + 1319
    assert sorted({a for a in pool["answer"] if "," in a})[:2] == ["1,000,000", "1,080"]   # answers kept as written


def test_math_loader(math_data, real_data):
    DATA = real_data
    pool, test = math_data
    assert (len(pool), len(test)) == (4500, 500)                 # the 4500 non-MATH500 problems / MATH500
    assert Counter(test["level"]) == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}
    assert Counter(test["subject"])["Algebra"] == 124
    assert test[0]["orig_id"] == "test/precalculus/807.json"
    assert test[0]["answer"] == r"\left( 3, \frac{\pi}{2} \right)"
    full = load_math(DATA / "math" / "test5000_hendrycks.jsonl")
    assert len(full) == 5000 and full[0]["answer"] == "2" and full[0]["level"] == 3 and full[0]["subject"] == "Algebra"
    assert set(pool["question"]).isdisjoint(test["question"])
    assert set(pool["level"]) <= {1, 2, 3, 4, 5, None}


def test_answer_format_and_data_dir(monkeypatch, tmp_path):
    assert [answer_format(DataConfig(dataset=d)) for d in ("gsm8k", "math", "world", "jsonl")] == ["gsm8k", "math", "gsm8k", "gsm8k"]
    assert answer_format(DataConfig(dataset="jsonl", path="x", answer_format="math")) == "math"
    monkeypatch.delenv("W2S_DATA_DIR", raising=False)
    assert resolve_data_dir() is None                                    # no default folder outside the project
    assert data_source(DataConfig(dataset="gsm8k")) == "hub"             # auto: the Hub unless a folder is named
    with pytest.raises(DataError, match="data.source=local needs data.data_dir or \\$W2S_DATA_DIR"):
        load_pool_and_test(DataConfig(dataset="gsm8k", source="local"))
    monkeypatch.setenv("W2S_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path and data_source(DataConfig(dataset="gsm8k")) == "local"
    assert resolve_data_dir(DataConfig(data_dir=str(FIXTURES))) == FIXTURES       # the config wins over the env
    with pytest.raises(DataError, match=r"gsm8k/train.jsonl: file not found"):
        load_pool_and_test(DataConfig(dataset="gsm8k"))


def test_hub_loader_reads_a_hub_layout_folder_like_the_local_files(tmp_path):
    """`load_hub` goes through `datasets.load_dataset` exactly as for the Hub (a folder in the Hub layout stands in
    for openai/gsm8k); its records equal the local loader's, ids included, so hub and local runs split alike."""
    entries = [dict(path=str(FIXTURES / "hub" / "gsm8k"), name="main", split="train", revision=DEFAULT_HUB["gsm8k"]["pool"][0]["revision"])]
    hub = load_hub(entries, "gsm8k", "gsm8k", "data.hub.pool")
    local = load_gsm8k(FIXTURES / "data" / "gsm8k" / "train.jsonl")
    assert hub.to_list() == local.to_list() and len(hub) == 16
    pool, test = load_pool_and_test(DataConfig(dataset="gsm8k", source="hub", hub={"pool": entries,
                                    "test": [dict(entries[0], split="test")]}))
    assert (len(pool), len(test)) == (16, 6) and test[0]["id"] == "gsm8k-test-00000"
    (tmp_path / "test.jsonl").write_text((FIXTURES / "data" / "math" / "test.jsonl").read_text())
    bad = [dict(entries[0], path=str(tmp_path), name=None, split="test")]  # MATH rows read as GSM8K
    with pytest.raises(DataError, match=r"row 1: missing required field 'question'"):
        load_hub(bad, "gsm8k", "gsm8k", "data.hub.pool")


def test_hub_offline_error_names_both_ways(tmp_path):
    "Offline, with no local folder: one clear error naming the Hub and data.data_dir / $W2S_DATA_DIR."
    code = "from w2s_nb.data import *; from w2s_nb.config import DataConfig; load_pool_and_test(DataConfig(dataset='gsm8k'))"
    env = {k: v for k, v in os.environ.items() if k != "W2S_DATA_DIR"} | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "DataError: could not load openai/gsm8k (main, train @ 740312a) from the Hugging Face Hub" in r.stderr
    assert "data.source=local with data.data_dir (or $W2S_DATA_DIR)" in r.stderr


def test_data_inputs_pin_hub_revisions_and_hash_local_files():
    inputs = data_inputs(DataConfig(dataset="math", source="hub"))
    assert len(inputs) == 15 and inputs["hub:HuggingFaceH4/MATH-500:None:test"] == "6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be"
    assert inputs["hub:EleutherAI/hendrycks_math:geometry:train"] == "21a5633873b6a120296cce3e2df9d5550074f4a3"
    local = data_inputs(DataConfig(dataset="gsm8k", data_dir=str(FIXTURES / "data")))
    assert list(local) == [str(FIXTURES / "data" / "gsm8k" / f) for f in ("train.jsonl", "test.jsonl")]
    assert all(len(v) == 64 for v in local.values())


def test_jsonl_loader_with_field_mapping(tmp_path):
    p = tmp_path / "mine.jsonl"
    rows = [{"uid": 7, "problem": "What is 2+3?", "final": "5", "work": "2+3=5", "difficulty": "Level 2"},
            {"uid": 8, "problem": "What is 2*3?", "final": "6"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_jsonl(p, {"id": "uid", "question": "problem", "answer": "final", "solution": "work", "level": "difficulty"}, "mine")
    assert ds["id"] == ["mine-7", "mine-8"] and ds["solution"] == ["2+3=5", ""] and ds["level"] == [2, None]
    q = tmp_path / "mine.json"                                    # a JSON array works the same way
    q.write_text(json.dumps(rows, indent=2))
    assert load_jsonl(q, {"question": "problem", "answer": "final"})["id"] == ["jsonl-mine-00000", "jsonl-mine-00001"]
    cfg = DataConfig(dataset="jsonl", path=str(p), test_path=str(q), fields={"question": "problem", "answer": "final"})
    pool, test = load_pool_and_test(cfg)
    assert len(test) == 2 and len(pool) == 0                     # pool questions that are in the test set are dropped
    with pytest.raises(DataError, match="needs data.path and data.test_path"):
        load_pool_and_test(DataConfig(dataset="jsonl", path=str(p)))
    with pytest.raises(DataError, match="unknown schema field"):
        load_jsonl(p, {"questoin": "problem"})


# ---------------------------------------------------------------- splits

SPLIT_CODE = """
import json
from w2s_nb.config import DataConfig
from w2s_nb.data import load_pool_and_test, make_splits, split_sha256
pool, test = load_pool_and_test(DataConfig(dataset="gsm8k"))
s = make_splits(pool, test, 3000, 2500, 500, seed=1)
print(json.dumps({k: [v["id"][:5], split_sha256(v)] for k, v in s.items()}))
"""


def test_splits_sizes_disjoint_deterministic_across_processes(gsm8k):
    pool, test = gsm8k
    s = make_splits(pool, test, 3000, 2500, 500, seed=1)
    assert {k: len(v) for k, v in s.items()} == {"gold1": 3000, "gold2": 2500, "test": 500}
    ids = [set(v["id"]) for v in s.values()]
    qs = [set(v["question"]) for v in s.values()]
    for i in range(3):
        for j in range(i + 1, 3):
            assert ids[i].isdisjoint(ids[j]) and qs[i].isdisjoint(qs[j])
    assert all(i.startswith("gsm8k-train-") for i in list(s["gold1"]["id"]) + list(s["gold2"]["id"]))
    assert all(i.startswith("gsm8k-test-") for i in s["test"]["id"])
    # another Python process (another hash seed) gives the same splits
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", SPLIT_CODE], capture_output=True, text=True, env=env, check=True).stdout
    from w2s_nb.data import split_sha256
    assert json.loads(out.strip().splitlines()[-1]) == {k: [v["id"][:5], split_sha256(v)] for k, v in s.items()}
    # a different seed gives different splits; the full test set is kept whole and in order
    assert make_splits(pool, test, 3000, 2500, 500, seed=2)["gold1"]["id"] != s["gold1"]["id"]
    assert make_splits(pool, test, 10, 10, 1319, seed=1)["test"]["id"] == test["id"]


def test_split_size_errors(math_data):
    pool, test = math_data
    with pytest.raises(DataError, match=r"pool too small: n_gold1 \+ n_gold2 = 3000 \+ 2000 = 5000 > 4500"):
        make_splits(pool, test, 3000, 2000, 500, seed=0)
    with pytest.raises(DataError, match="test set too small: n_test = 501 > 500"):
        make_splits(pool, test, 10, 10, 501, seed=0)
    with pytest.raises(DataError, match="n_gold2=0"):
        make_splits(pool, test, 10, 0, 10, seed=0)


def test_splits_reject_overlap(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"question": f"q{i % 3}", "answer": "1"}) + "\n" for i in range(6)))
    ds = load_jsonl(p)
    with pytest.raises(DataError, match="share"):
        make_splits(ds, ds, 2, 2, 2, seed=0)


def test_save_split_ids(math_data, tmp_path):
    pool, test = math_data
    s = make_splits(pool, test, 100, 200, 50, seed=0)
    info = save_split_ids(s, tmp_path / "run" / "data")
    f = tmp_path / "run" / "data" / "splits.json"
    assert json.loads(f.read_text()) == info
    assert {k: v["n"] for k, v in info.items()} == {"gold1": 100, "gold2": 200, "test": 50}
    assert info["gold1"]["ids"] == s["gold1"]["id"] and len(info["gold1"]["sha256"]) == 64
    assert [p.name for p in f.parent.iterdir()] == ["splits.json"]             # no temp files left behind
    assert save_split_ids(make_splits(pool, test, 100, 200, 50, seed=0), tmp_path / "again") == info


# ---------------------------------------------------------------- prompts and targets

def test_prompts_match_the_paper():
    assert zero_shot_prompt("What is 2+3?") == "Question: What is 2+3?\nAnswer:"
    assert zero_shot_prompt(r"Find $\{x\}$.", "Problem: {question}\nSolution:") == "Problem: Find $\\{x\\}$.\nSolution:"
    demos = [("Q1?", " A1\n#### 1"), ("Q2?", "A2\n#### 2\n")]
    assert few_shot_prompt(demos, "Q3?") == "Question: Q1?\nAnswer: A1\n#### 1\n\nQuestion: Q2?\nAnswer: A2\n#### 2\n\nQuestion: Q3?\nAnswer:"
    with pytest.raises(ValueError, match="containing {question}"):
        zero_shot_prompt("x", "Q: {q}")


def test_sft_targets_round_trip(gsm8k, math_data):
    assert sft_target("Natalia sold 48/2 = 24 clips.", "72", "gsm8k") == " Natalia sold 48/2 = 24 clips.\n#### 72"
    assert sft_target(r"So $\boxed{\frac12}$.", r"\frac12", "math") == r" So $\boxed{\frac12}$. The answer is: \frac12"
    assert split_gsm8k_solution("a = <<1+1=2>>2\n#### 2") == ("a = 2", "2")
    for ds, fmt in ((gsm8k[1], "gsm8k"), (math_data[1], "math")):
        for r in ds.select(range(100)):
            assert extract_answer(sft_target(r["solution"], r["answer"], fmt), fmt) == normalize_answer(r["answer"], fmt)


def _chat_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")), unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


def test_chat_template_option(gsm8k):
    tok = _chat_tokenizer()
    cfg = DataConfig(dataset="gsm8k", chat_template=True)
    assert format_prompt("What is 2+3?", cfg, tok) == "<|user|>Question: What is 2+3?\nAnswer:<|end|><|assistant|>"
    assert format_prompt("Q2?", cfg, tok, demos=[("Q1?", " A1")]) == \
        "<|user|>Question: Q1?\nAnswer:<|end|><|assistant|>A1<|end|><|user|>Question: Q2?\nAnswer:<|end|><|assistant|>"
    assert format_prompt("Q2?", DataConfig(), demos=[("Q1?", "A1")]) == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer:"
    with pytest.raises(ValueError, match="needs a tokenizer"):
        format_prompt("Q", cfg)
    assert chat_messages("Q")[-1] == {"role": "user", "content": "Question: Q\nAnswer:"}
    ex = sft_examples(gsm8k[0].select(range(2)), cfg)
    assert ex[0]["prompt"] == [{"role": "user", "content": zero_shot_prompt(gsm8k[0][0]["question"])}]
    assert ex[0]["completion"][0]["content"].endswith("#### 72")
    plain = sft_examples(gsm8k[0].select(range(2)), DataConfig(dataset="gsm8k"))
    assert plain[0]["prompt"].endswith("\nAnswer:") and plain[0]["completion"].startswith(" Natalia") and plain[0]["id"] == "gsm8k-train-00000"


# ---------------------------------------------------------------- bad input: file + line + problem

GOOD = '{"question": "What is 2+3?", "answer": "2+3=5\\n#### 5"}'


@pytest.mark.parametrize("content,loader,message", [
    (GOOD + '\n{"question": "oops", "answer": \n', load_gsm8k, "line 2: malformed JSON"),
    (GOOD + "\n\n" + '{"answer": "#### 1"}\n', load_gsm8k, "line 3: missing required field 'question'"),
    (GOOD + '\n{"question": "  ", "answer": "#### 1"}\n', load_gsm8k, "line 2: empty required field 'question'"),
    (GOOD + '\n{"question": "Q?", "answer": "no final line"}\n', load_gsm8k, "line 2: field 'answer' has no final '#### N' line"),
    (GOOD + "\n[1, 2]\n", load_gsm8k, "line 2: expected a JSON object, got list"),
    ('{"problem": "P", "solution": "so $\\\\boxed{1}$"}\n{"problem": "P2", "solution": "no box"}\n', load_math,
     "line 2: no 'answer' field and no \\boxed{} answer in 'solution'"),
    ('{"problem": "P", "solution": "S", "answer": "1", "unique_id": "a"}\n{"problem": "P2", "solution": "S", "answer": "2", "unique_id": "a"}\n',
     load_math, "line 2: duplicate id 'a' (first on line 1)"),
    ('{"problem": "P", "answer": "1"}\n', load_math, "line 1: missing required field 'solution'"),
])
def test_bad_input_names_file_and_line(tmp_path, content, loader, message):
    p = tmp_path / "bad_input.jsonl"
    p.write_text(content)
    with pytest.raises(DataError) as e:
        loader(p)
    assert str(p) in str(e.value) and message in str(e.value)


def test_bad_input_generic_and_json(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty.jsonl: empty file \(no records\)"):
        load_gsm8k(p)
    p = tmp_path / "dup.jsonl"
    p.write_text('{"id": 1, "q": "a", "a": "1"}\n{"id": 2, "q": "b", "a": "2"}\n{"id": 1, "q": "c", "a": "3"}\n')
    with pytest.raises(DataError, match=r"dup.jsonl, line 3: duplicate id 'jsonl-1' \(first on line 1\)"):
        load_jsonl(p, {"id": "id", "question": "q", "answer": "a"})
    p = tmp_path / "missing.jsonl"
    p.write_text('{"problem": "a", "final": "1"}\n{"problem": "b"}\n')
    with pytest.raises(DataError, match=r"missing.jsonl, line 2: missing required field 'final' \(answer\)"):
        load_jsonl(p, {"question": "problem", "answer": "final"})
    p = tmp_path / "arr.json"
    p.write_text('[\n  {"question": "a", "answer": "1"},\n  {"question": "b", "answer": ""}\n]')
    with pytest.raises(DataError, match=r"arr.json, line 3: empty required field 'answer'"):
        load_jsonl(p)
    p.write_text('[\n  {"question": "a", "answer": "1"},\n  {"question": "b" "answer": "2"}\n]')
    with pytest.raises(DataError, match=r"arr.json, line 3: malformed JSON"):
        load_jsonl(p)
    p.write_text('{"question": "a"}')
    with pytest.raises(DataError, match=r"arr.json, line 1: expected a JSON array"):
        read_records(p)
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        load_math(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- the data stage

def test_data_files():
    DATA = FIXTURES / "data"
    assert data_files(DataConfig(dataset="math", data_dir=str(DATA))) == [DATA / "math" / "test5000_hendrycks.jsonl", DATA / "math" / "test.jsonl"]
    assert data_files(DataConfig(dataset="gsm8k", data_dir=str(DATA), test_path="/x/t.jsonl")) == [DATA / "gsm8k" / "train.jsonl", Path("/x/t.jsonl")]
    assert data_files(DataConfig(dataset="gsm8k", source="hub")) == []
    assert data_files(DataConfig(dataset="jsonl", path="a.jsonl", test_path="b.jsonl")) == [Path("a.jsonl"), Path("b.jsonl")]


def test_run_data_writes_the_splits(tmp_path, real_data):
    from w2s_nb.config import RunConfig
    from w2s_nb.rundir import RunDir
    from w2s_nb.files import read_json, read_jsonl
    cfg = RunConfig(seed=3, data=DataConfig(dataset="math", data_dir=str(real_data), n_gold1=40, n_gold2=30, n_test=20))
    rd = RunDir(tmp_path / "run")
    summary = run_data(cfg, rd)
    assert (summary["gold1"], summary["gold2"], summary["test"], summary["pool"]) == (40, 30, 20, 4500)
    g1, q2 = read_jsonl(rd.path("data", "gold1.jsonl")), read_jsonl(rd.path("data", "gold2_questions.jsonl"))
    g2, te = read_jsonl(rd.path("data", "gold2_gold.jsonl")), read_jsonl(rd.path("data", "test.jsonl"))
    assert (len(g1), len(q2), len(g2), len(te)) == (40, 30, 30, 20)
    assert set(q2[0]) == {"id", "question", "source", "level", "subject"}          # no gold for the strong side
    assert [r["id"] for r in q2] == [r["id"] for r in g2] and set(g1[0]) == set(COLUMNS)
    splits = read_json(rd.path("data", "splits.json"))
    assert splits["gold1"]["ids"] == [r["id"] for r in g1] and summary["sha256"]["test"] == splits["test"]["sha256"]
    assert read_json(rd.path("data", "data_summary.json")) == json.loads(json.dumps(summary))
