"Engine models: tokenizer, tiny Llama, ModelRef, atomic writes, loading (LoRA / QLoRA / adapters)."
import json
import os

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from w2s_nb.config import ModelConfig, SFTSettings
from w2s_nb.models import (ModelRef, bnb_4bit_problem, load_model, load_tokenizer, lora_config, merge_adapters,
                           model_entry, model_ref, read_models, resolve_device, resolve_dtype, resolve_model_path,
                           save_merged)
from w2s_nb.world import build_tokenizer, new_llama
from w2s_nb.rundir import RunDir
from w2s_nb.files import atomic_write_json


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(["Question: 12 + 30 = 42\nAnswer: #### 42"] * 10, vocab_size=300)


def test_tokenizer_round_trips_and_splits_digits(tok, tmp_path):
    for s in ["Ünïcode 🙂 ∑ x² and 1234 + 5678 = 6912", "tabs\tand\nnewlines  ", "", "中文 日本語"]:
        assert tok.decode(tok(s)["input_ids"]) == s
    assert tok.tokenize("2024") == ["2", "0", "2", "4"]
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    t2 = build_tokenizer(["abc 123"] * 5, vocab_size=270, out_dir=tmp_path)
    assert (tmp_path / "tokenizer.json").exists() and t2.decode(t2("abc 123")["input_ids"]) == "abc 123"
    with pytest.raises(ValueError, match="vocab_size=100"): build_tokenizer(["x"], vocab_size=100)


def test_new_llama_is_seeded_and_sized(tok):
    a, b = new_llama(tok, 32, 2, 4, 64, seed=3), new_llama(tok, 32, 2, 4, 64, seed=3)
    c = new_llama(tok, 32, 2, 4, 64, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert a.config.vocab_size == len(tok) and a.config.num_hidden_layers == 2
    assert a.config.eos_token_id == tok.eos_token_id and a.generation_config.pad_token_id == tok.pad_token_id
    assert new_llama(tok, 32, 1, 4, 64, tie_embeddings=True).lm_head.weight is not None
    with pytest.raises(ValueError, match="not divisible"): new_llama(tok, 30, 1, 4, 64)


def test_model_ref_json(tmp_path):
    r = ModelRef("world:strong", ["/a/adapter", "/b/adapter"])
    assert ModelRef.from_json(r.to_json()) == r
    r.to_json(tmp_path / "ref.json")
    assert ModelRef.from_json(tmp_path / "ref.json") == r
    assert r.with_adapter("/c") == ModelRef("world:strong", ["/a/adapter", "/b/adapter", "/c"]) and len(r.adapters) == 2
    with pytest.raises(ValueError, match="not a ModelRef"): ModelRef.from_dict({"bass": "x"})


def test_resolve_helpers():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"): resolve_device("tpu")
    assert resolve_model_path("/some/dir") == "/some/dir" and resolve_model_path("org/model") == "org/model"
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("bfloat16", "cpu") == torch.bfloat16


def test_load_tokenizer_padding(tiny_model_dir):
    ref, cfg = ModelRef(tiny_model_dir), ModelConfig(path=tiny_model_dir, finetune="lora")
    left, right = load_tokenizer(ref, cfg), load_tokenizer(ref, cfg, padding_side="right")
    assert (left.padding_side, right.padding_side) == ("left", "right") and left.pad_token == "<pad>"
    batch = left(["a", "a b c d e"], padding=True)["input_ids"]
    assert batch[0][0] == left.pad_token_id and batch[1][0] != left.pad_token_id


def test_load_model_lora_and_qlora(tiny_model_dir):
    ref = ModelRef(tiny_model_dir)
    m = load_model(ref, ModelConfig(path=tiny_model_dir, finetune="lora"), "cpu")
    assert m.dtype == torch.float32 and not m.training and type(m.model.layers[0].mlp.up_proj).__name__ == "Linear"
    assert bnb_4bit_problem("cpu") is None
    q = load_model(ref, ModelConfig(path=tiny_model_dir, finetune="qlora"), "cpu", train=SFTSettings())
    lin = q.model.layers[0].mlp.up_proj
    assert type(lin).__name__ == "Linear4bit" and lin.weight.quant_state.quant_type == "nf4"
    assert lin.weight.quant_state.nested                   # double quantisation
    assert lin.support_avx512bf16_for_cpu is False         # the CPU repacking trap is defused for training
    assert q.training
    ids = torch.tensor([[1, 10, 11, 12]])
    with torch.no_grad():                                  # 4-bit logits stay close to the fp32 model's
        assert (torch.softmax(q(input_ids=ids).logits, -1) - torch.softmax(m(input_ids=ids).logits, -1)).abs().max() < 0.05
    assert lora_config(ModelConfig()).target_modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_adapters_are_merged_in_order(tiny_model_dir, tmp_path):
    "load_model(base + [a1, a2]) == the base with a1 merged, then a2 merged (a2 trained on top of a1)."
    cfg = ModelConfig(path=tiny_model_dir, finetune="lora")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    dirs = []
    for i in range(2):
        torch.manual_seed(i)
        p = get_peft_model(merge_adapters(AutoModelForCausalLM.from_pretrained(tiny_model_dir), dirs), lora_config(cfg))
        for n, w in p.named_parameters():
            if "lora_B" in n: torch.nn.init.normal_(w, std=0.05)   # a non-trivial adapter
        p.save_pretrained(tmp_path / f"a{i}"); dirs.append(str(tmp_path / f"a{i}"))
    ids = torch.tensor([[1, 10, 11, 12, 13]])
    with torch.no_grad():
        want = p(input_ids=ids).logits                     # adapter a1 live on top of merged a0
        got = load_model(ModelRef(tiny_model_dir, dirs), cfg, "cpu")(input_ids=ids).logits
        plain = base(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        load_model(ModelRef(tiny_model_dir, [str(tmp_path)]), cfg, "cpu")


def small_adapter(base_dir, cfg, out, std=1e-3, seed=0):
    "A LoRA adapter whose update is as small as a few hundred steps at lr 2e-4 make it (B ~ 1e-3)."
    torch.manual_seed(seed)
    p = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), lora_config(cfg))
    for n, w in p.named_parameters():
        if "lora_B" in n: torch.nn.init.normal_(w, std=std)
    p.save_pretrained(out)
    return str(out)


def test_qlora_keeps_its_adapter_unmerged(tiny_model_dir, tmp_path):
    "Over a 4-bit base the adapter stays a live PEFT layer; merging it into NF4 would round a small update away."
    cfg = ModelConfig(path=tiny_model_dir, finetune="qlora")
    a = small_adapter(tiny_model_dir, cfg, tmp_path / "a")
    ids = torch.tensor([[1, 10, 11, 12, 13, 14, 15]])
    with torch.no_grad():
        base = load_model(ModelRef(tiny_model_dir), cfg, "cpu")(input_ids=ids).logits
        m = load_model(ModelRef(tiny_model_dir, [a]), cfg, "cpu")
        ours = m(input_ids=ids).logits
        naive = PeftModel.from_pretrained(load_model(ModelRef(tiny_model_dir), cfg, "cpu"), a).merge_and_unload()
        merged = naive(input_ids=ids).logits
    assert isinstance(m, PeftModel) and type(m.get_base_model().model.layers[0].mlp.up_proj.base_layer).__name__ == "Linear4bit"
    effect = (ours - base).norm()
    assert effect > 0.01                                     # the probe sees the adapter
    assert (merged - ours).norm() > 0.5 * effect             # what merging into NF4 would lose
    with pytest.raises(ValueError, match="rounds it away"):
        merge_adapters(load_model(ModelRef(tiny_model_dir), cfg, "cpu"), [a])
    with pytest.raises(ValueError, match="at most one"):
        load_model(ModelRef(tiny_model_dir, [a, a]), cfg, "cpu")


def test_save_merged_is_full_precision(tiny_model_dir, tmp_path):
    "A QLoRA ref saved as one directory: the adapter merged into the fp32 base, loadable without PEFT."
    cfg = ModelConfig(path=tiny_model_dir, finetune="qlora")
    a = small_adapter(tiny_model_dir, cfg, tmp_path / "a", std=0.05)
    out = save_merged(ModelRef(tiny_model_dir, [a]), cfg, tmp_path / "merged")
    ids = torch.tensor([[1, 10, 11, 12, 13]])
    with torch.no_grad():
        want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), a)(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(out)(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (out / "tokenizer.json").exists() and "quantization_config" not in json.loads((out / "config.json").read_text())


def test_run_registry_round_trip(tiny_model_dir, tmp_path):
    rd = RunDir(tmp_path / "run")
    adapter = rd.path("stage1", "r1", "adapter"); adapter.mkdir(parents=True)
    ref = ModelRef(tiny_model_dir, [str(adapter)])
    e = model_entry(ref, rd, "strong", "stage1", "M_plus", round=1)
    assert e["ref"] == dict(base=tiny_model_dir, adapters=["stage1/r1/adapter"], gguf_file=None) and e["round"] == 1
    assert model_ref(rd, e) == ref
    atomic_write_json(rd.path("stage2", "models.json"), {"m_pro_dpo": {**e, "method": "dpo"}})
    atomic_write_json(rd.path("weak", "models.json"), {"weak": e})
    assert list(read_models(rd)) == ["weak", "m_pro_dpo"]             # stage order, a missing stage is skipped
    assert read_models(rd, ["stage1"]) == {}


def test_importing_models_is_light():
    "The evaluation and the report read the registry from `models`: importing it must not pull in torch."
    import subprocess, sys
    code = "import sys, w2s_nb.models; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}).returncode == 0


def test_bnb_self_check_allocates_on_this_ranks_gpu(monkeypatch):
    "Under a launch, rank LOCAL_RANK's 4-bit check runs on cuda:LOCAL_RANK, not on GPU 0 (no GPU needed: the call is caught)."
    import torch
    import w2s_nb.models as M
    seen = []
    def randn(*a, device=None, **k):
        seen.append(device); raise RuntimeError("no GPU here")
    monkeypatch.setattr(torch, "randn", randn)
    monkeypatch.setattr(M, "_BNB_CHECK", {})
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert "no GPU here" in M.bnb_4bit_problem("cuda")
    assert seen == ["cuda:1"]
