"Engine training: SFT (LoRA, QLoRA, full), DPO/ORPO/SimPO, resume, merge, accelerate launch."
import dataclasses
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, TrainerCallback

from w2s_nb.config import LoraSettings, ModelConfig, PrefSettings, SFTSettings
from w2s_nb.models import ModelRef, load_model, load_tokenizer, lora_config
from w2s_nb.train import (completion_logprobs, finished, preference_trainer, read_train_log, train_preference,
                          train_sft)
from w2s_nb.launch import launch_command

SFT = SFTSettings(epochs=2, lr=1e-2, batch_size=8, max_length=64)


def cfg_for(d, finetune="lora", **sft):
    return ModelConfig(path=d, finetune=finetune, lora=LoraSettings(r=8, alpha=16),
                       sft=SFTSettings(**{**SFT.__dict__, **sft}))


def probe_ids(tok):
    return tok(["Question: What is 3 plus 4?\nAnswer: 3 + 4 = 7"], return_tensors="pt")["input_ids"]


class GrabLogits(TrainerCallback):
    "Record the trained model's logits on a probe input at the end of training."
    def __init__(self, ids): self.ids, self.logits = ids, None
    def on_train_end(self, args, state, control, model=None, **kw):
        model.eval()
        with torch.no_grad(): self.logits = model(input_ids=self.ids).logits.clone()


def losses(out_dir):
    return [r["loss"] for r in read_train_log(out_dir) if "loss" in r]


@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, tiny_examples, tmp_path_factory):
    "One LoRA SFT run shared by several tests (Stage-I model for the preference tests)."
    out = tmp_path_factory.mktemp("sft")
    cfg = cfg_for(tiny_model_dir, merge_adapter=True)
    tok = load_tokenizer(ModelRef(tiny_model_dir), cfg)
    grab = GrabLogits(probe_ids(tok))
    new = train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples, out, seed=0, callbacks=[grab])
    return dict(ref=new, cfg=cfg, out=out, grab=grab, tok=tok)


def test_sft_lowers_loss_and_trains_only_lora(sft_run, tiny_model_dir):
    ref, out = sft_run["ref"], sft_run["out"]
    assert ref == ModelRef(tiny_model_dir, [str(Path(out).resolve() / "adapter")])
    ls = losses(out)
    assert len(ls) == 16 and sum(ls[-4:]) / 4 < sum(ls[:4]) / 4 - 0.3, ls
    adapter = Path(ref.adapters[0])
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "tokenizer.json").exists()
    from safetensors.torch import load_file
    sd = load_file(adapter / "adapter_model.safetensors")
    assert sd and all("lora_" in k for k in sd)                       # only LoRA weights are saved
    assert all(v.abs().sum() > 0 for k, v in sd.items() if "lora_B" in k)  # B starts at zero: trained
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))
    for k, v in base.state_dict().items():                            # base weights untouched
        assert torch.equal(peft.get_base_model().state_dict()[k.replace(".weight", ".base_layer.weight")]
                           if k.replace(".weight", ".base_layer.weight") in peft.get_base_model().state_dict()
                           else peft.get_base_model().state_dict()[k], v), k
    assert json.loads((Path(out) / "result.json").read_text())["finetune"] == "lora"


def test_adapter_reloads_with_identical_logits(sft_run, tiny_model_dir):
    ref, ids = sft_run["ref"], probe_ids(sft_run["tok"])
    trained = sft_run["grab"].logits
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ref.adapters[0]).eval()
    with torch.no_grad():
        assert torch.equal(peft(input_ids=ids).logits, trained)       # unmerged: bit-identical
        merged = load_model(ref, sft_run["cfg"], "cpu")(input_ids=ids).logits
        base = load_model(ModelRef(tiny_model_dir), sft_run["cfg"], "cpu")(input_ids=ids).logits
    torch.testing.assert_close(merged, trained, atol=1e-5, rtol=1e-5)  # merged into the weights
    assert not torch.allclose(base, trained, atol=1e-3)


def test_merge_adapter_and_resume(sft_run, tiny_examples, monkeypatch):
    out, ids = Path(sft_run["out"]), probe_ids(sft_run["tok"])
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, sft_run["grab"].logits, atol=1e-5, rtol=1e-5)
    import w2s_nb.train as train_mod  # a finished out_dir is returned as is: no training step may run
    monkeypatch.setattr(train_mod, "_run_sft", lambda *a, **k: pytest.fail("train_sft trained again on a finished out_dir"))
    monkeypatch.setattr(train_mod, "_launch", lambda *a, **k: pytest.fail("train_sft launched again on a finished out_dir"))
    assert train_sft(ModelRef(sft_run["ref"].base), sft_run["cfg"], tiny_examples, out, seed=0) == sft_run["ref"]


def test_qlora_sft_on_cpu_changes_lora_weights(tiny_model_dir, tiny_examples, tmp_path):
    cfg = cfg_for(tiny_model_dir, "qlora")
    new = train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples, tmp_path, seed=0)
    from safetensors.torch import load_file
    sd = load_file(Path(new.adapters[0]) / "adapter_model.safetensors")
    assert all(v.abs().sum() > 0 for k, v in sd.items() if "lora_B" in k)
    ls = losses(tmp_path)
    assert sum(ls[-4:]) / 4 < sum(ls[:4]) / 4 - 0.3, ls
    assert json.loads((tmp_path / "result.json").read_text())["finetune"] == "qlora"


def probe_batch(tok, pairs):
    "Token ids of a few full chosen/rejected texts, one row each (no padding)."
    return [tok([p["prompt"] + p[k]], return_tensors="pt")["input_ids"] for p in pairs[:4] for k in ("chosen", "rejected")]


def effect_kept(ref: ModelRef, cfg, ids: list) -> tuple[float, float]:
    """(share of the adapter's logit effect that the package's inference loading keeps, size of that effect), against
    PEFT's unmerged adapter on the same 4-bit base."""
    with torch.no_grad():
        base = load_model(ModelRef(ref.base), cfg, "cpu")
        plain = torch.cat([base(input_ids=i).logits[0] for i in ids])
        peft = PeftModel.from_pretrained(load_model(ModelRef(ref.base), cfg, "cpu"), ref.adapters[0]).eval()
        want = torch.cat([peft(input_ids=i).logits[0] for i in ids])
        ours = load_model(ref, cfg, "cpu")
        got = torch.cat([ours(input_ids=i).logits[0] for i in ids])
    effect = (want - plain).norm().item()
    return 1 - (got - want).norm().item() / effect, effect


@pytest.fixture(scope="module")
def qlora_runs(tiny_model_dir, tiny_examples, tiny_pairs, tmp_path_factory):
    "QLoRA SFT at the paper's rate 2e-4 (M_plus), then QLoRA DPO from it (M_pro)."
    out = tmp_path_factory.mktemp("qlora")
    cfg = cfg_for(tiny_model_dir, "qlora", lr=2e-4)
    m_plus = train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples, out / "sft", seed=0)
    pref = PrefSettings(epochs=2, lr=2e-4, batch_size=8, max_length=64, beta=0.5)
    m_pro = train_preference(m_plus, cfg, pref, "dpo", tiny_pairs, out / "dpo", seed=0)
    return dict(cfg=cfg, m_plus=m_plus, m_pro=m_pro, out=out, pref=pref)


def test_qlora_models_keep_their_adapter_effect(qlora_runs, tiny_pairs):
    "Loaded for inference, QLoRA's M_plus and M_pro keep >= 95% of their adapter's effect on the logits (merged: ~0%)."
    cfg, m_plus, m_pro = qlora_runs["cfg"], qlora_runs["m_plus"], qlora_runs["m_pro"]
    ids = probe_batch(load_tokenizer(m_plus, cfg), tiny_pairs)
    for ref in (m_plus, m_pro):
        kept, effect = effect_kept(ref, cfg, ids)
        assert effect > 1.0 and kept >= 0.95, (ref, kept, effect)
    assert m_pro == ModelRef(m_plus.base, [str(qlora_runs["out"].resolve() / "dpo" / "adapter")])  # one adapter
    assert not (Path(m_pro.adapters[0]) / "ref").exists()             # DPO's frozen reference copy is not saved
    assert margin(m_pro, cfg, tiny_pairs) > margin(m_plus, cfg, tiny_pairs) + 0.05


def seq_logps(model, batch) -> tuple:
    "Summed completion log-probs of a DPO batch (chosen rows, rejected rows), from a plain forward pass."
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    lp = logits.log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (lp * batch["completion_mask"][:, 1:]).sum(1).chunk(2)


@pytest.mark.parametrize("finetune", ["lora", "qlora", "full"])
def test_dpo_reference_is_m_plus(finetune, sft_run, qlora_runs, tiny_pairs, tmp_path):
    """DPOTrainer's reference log-probs are M_plus's as the package loads it, before and after training; not the base's.
    `full`: full fine-tuning from the LoRA-trained M_plus (a frozen merged copy is the reference)."""
    run = dict(ref=qlora_runs["m_plus"], cfg=qlora_runs["cfg"]) if finetune == "qlora" else sft_run
    m_plus, cfg = run["ref"], dataclasses.replace(run["cfg"], finetune=finetune)
    trainer, *_ = preference_trainer(m_plus, cfg, PrefSettings(epochs=1, lr=1e-2, batch_size=8, max_length=64, beta=0.5),
                                     "dpo", tiny_pairs, tmp_path, seed=0, device="cpu")
    batch = next(iter(trainer.get_train_dataloader()))
    want = torch.cat(seq_logps(load_model(m_plus, cfg, "cpu"), batch))
    base = torch.cat(seq_logps(load_model(ModelRef(m_plus.base), cfg, "cpu"), batch))
    scorer = lambda: trainer.ref_model if trainer.ref_model is not None else trainer.model  # as TRL's own call picks it
    before = torch.cat(trainer.compute_ref_log_probs(scorer(), batch))
    trainer.train()
    after = torch.cat(trainer.compute_ref_log_probs(scorer(), batch))
    policy = torch.cat(seq_logps(trainer.model.eval(), batch))
    tol = dict(rtol=0, atol=0.05 if finetune == "qlora" else 1e-3)   # 4-bit: training vs inference kernels
    torch.testing.assert_close(before, want, **tol)
    torch.testing.assert_close(after, want, **tol)
    assert (base - want).abs().max() > 0.5 and (policy - want).abs().max() > 0.5


def test_qlora_trap_defused_after_inference(tiny_model_dir):
    "An inference forward before training must not kill LoRA gradients on a 4-bit model (AVX512-BF16 CPUs)."
    cfg = cfg_for(tiny_model_dir, "qlora")
    model = get_peft_model(load_model(ModelRef(tiny_model_dir), cfg, "cpu", train=SFTSettings()), lora_config(cfg))
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    model.eval()
    with torch.no_grad(): model(input_ids=ids)                        # the forward that repacks weights
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_" in n}
    assert grads and all(g is not None for g in grads.values())          # the trap leaves them None
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # (A's grad is 0 while B == 0)


def test_full_finetune(tiny_model_dir, tiny_examples, tmp_path):
    cfg = cfg_for(tiny_model_dir, "full", epochs=1, lr=1e-3)
    new = train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples, tmp_path, seed=0)
    assert new == ModelRef(str(tmp_path.resolve() / "model"))
    a, b = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoModelForCausalLM.from_pretrained(new.base)
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)


def test_full_finetune_from_a_lora_trained_model(sft_run, tiny_examples, tmp_path):
    "Full fine-tuning starts from base + adapter merged (PEFT froze that base to merge it) and changes every layer."
    start = sft_run["ref"]
    cfg = cfg_for(start.base, "full", epochs=1, lr=1e-3)
    new = train_sft(start, cfg, tiny_examples, tmp_path, seed=0)
    a = load_model(start, cfg, "cpu")  # the LoRA-trained model, merged
    b = AutoModelForCausalLM.from_pretrained(new.base)
    for n, w in a.named_parameters():
        assert not torch.equal(w, b.get_parameter(n)), f"{n} was not trained"


def test_qlora_without_4bit_fails_or_falls_back(tiny_model_dir, monkeypatch, caplog):
    import w2s_nb.models as M
    monkeypatch.setitem(M._BNB_CHECK, "cpu", "bitsandbytes cannot run 4-bit on cpu: (simulated)")
    with pytest.raises(RuntimeError, match="finetune='qlora' needs 4-bit bitsandbytes.*allow_fallback"):
        load_model(ModelRef(tiny_model_dir), cfg_for(tiny_model_dir, "qlora"), "cpu")
    cfg = cfg_for(tiny_model_dir, "qlora"); cfg.allow_fallback = True
    m = load_model(ModelRef(tiny_model_dir), cfg, "cpu")
    assert type(m.model.layers[0].self_attn.q_proj).__name__ == "Linear"
    assert "falling back to LoRA" in caplog.text


class KeepWeakref(TrainerCallback):
    "A weak reference to the model being trained (no strong one)."
    def on_train_begin(self, args, state, control, model=None, **kw): self.model = weakref.ref(model)


def test_trained_models_are_freed(sft_run, tiny_model_dir, tiny_examples, tiny_pairs, tmp_path):
    "When train_sft / train_preference return, nothing keeps the trained model (or its trainer) alive."
    cfg = cfg_for(tiny_model_dir, epochs=1)
    k1, k2 = KeepWeakref(), KeepWeakref()
    train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples[:16], tmp_path / "sft", seed=0, callbacks=[k1])
    train_preference(sft_run["ref"], sft_run["cfg"], PrefSettings(epochs=1, batch_size=8, max_length=64), "dpo",
                     tiny_pairs[:8], tmp_path / "dpo", seed=0, callbacks=[k2])
    assert k1.model() is None and k2.model() is None


def test_finish_refuses_to_mark_done_without_adapter_files(tiny_model_dir, tmp_path):
    "A save that leaves no adapter weights (e.g. FSDP shards) raises; result.json is not written."
    from types import SimpleNamespace
    from w2s_nb.trainable import Trainable, saved_model_problem
    from w2s_nb.train import _finish
    acc = SimpleNamespace(unwrap_model=lambda m: m, is_main_process=True, wait_for_everyone=lambda: None, num_processes=1)
    def save_model(d):  # writes the config but not the weights
        Path(d).mkdir(parents=True); (Path(d) / "adapter_config.json").write_text("{}")
    trainer = SimpleNamespace(accelerator=acc, model=torch.nn.Linear(1, 1), save_model=save_model,
                              state=SimpleNamespace(log_history=[]))
    cfg = cfg_for(tiny_model_dir)
    with pytest.raises(RuntimeError, match="has none of adapter_model.safetensors.*not marked done"):
        _finish(trainer, Trainable(None, None, None, "lora", ModelRef(tiny_model_dir)), cfg, tmp_path, "cpu", False, {})
    assert finished(tmp_path) is None and not (tmp_path / "adapter").exists()
    assert saved_model_problem(tmp_path, "full") == f"{tmp_path} has no config.json"


def margin(ref, cfg, pairs):
    m, tok = load_model(ref, cfg, "cpu"), load_tokenizer(ref, cfg)
    P = [p["prompt"] for p in pairs]
    return (completion_logprobs(m, tok, P, [p["chosen"] for p in pairs])
            - completion_logprobs(m, tok, P, [p["rejected"] for p in pairs])).mean().item()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "orpo", "simpo"])
def test_preference_raises_margin(method, sft_run, tiny_pairs, tmp_path):
    "LoRA: start from the Stage-I model (SFT adapter merged) and add a new LoRA adapter."
    start, cfg = sft_run["ref"], sft_run["cfg"]
    pref = PrefSettings(epochs=2, lr=1e-2, batch_size=8, max_length=64, beta=0.5 if method != "simpo" else 2.0)
    new = train_preference(start, cfg, pref, method, tiny_pairs, tmp_path, seed=0)
    assert new.adapters == [*start.adapters, str(tmp_path.resolve() / "adapter")]
    before, after = margin(start, cfg, tiny_pairs), margin(new, cfg, tiny_pairs)
    assert after > before + 0.5, (before, after)
    assert json.loads((tmp_path / "result.json").read_text())["method"] == method


def test_bad_inputs(tiny_model_dir, tmp_path):
    cfg = cfg_for(tiny_model_dir)
    with pytest.raises(ValueError, match="no training examples"):
        train_sft(ModelRef(tiny_model_dir), cfg, [], tmp_path, seed=0)
    with pytest.raises(ValueError, match="string fields"):
        train_sft(ModelRef(tiny_model_dir), cfg, [{"prompt": "x"}], tmp_path, seed=0)
    with pytest.raises(ValueError, match="expected one of dpo, orpo, simpo"):
        train_preference(ModelRef(tiny_model_dir), cfg, PrefSettings(), "kto", [], tmp_path, seed=0)


@pytest.mark.slow
def test_accelerate_two_processes(tiny_model_dir, tiny_examples, tmp_path):
    "num_processes=2: train_sft launches itself under `accelerate launch` (2 ranks, gloo on CPU)."
    cfg = cfg_for(tiny_model_dir, epochs=1, batch_size=4, grad_accum=2)  # global batch 8 = 4 per rank x 2 ranks
    new = train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples, tmp_path, seed=0, num_processes=2)
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["num_processes"] == 2 and new == ModelRef.from_dict(res["ref"])
    assert new.adapters == [str(tmp_path.resolve() / "adapter")]
    assert len(losses(tmp_path)) == 8          # 64 examples / global batch 8
    assert (tmp_path / "job.json").exists()


def test_job_refuses_a_launch_with_another_number_of_processes(tiny_model_dir, tmp_path):
    "A job for 2 processes run by 1 (e.g. an accelerate config that starts one CPU process) fails before training."
    from w2s_nb.config import to_dict
    from w2s_nb.train import run_job
    job = dict(kind="sft", ref=ModelRef(tiny_model_dir).to_dict(), cfg=to_dict(cfg_for(tiny_model_dir)), examples=[],
               out_dir=str(tmp_path), seed=0, device="cpu", num_processes=2)
    with pytest.raises(RuntimeError, match="num_processes=2 but this launch runs 1 process"):
        run_job(job)
    assert list(tmp_path.iterdir()) == []


def test_global_batch_must_split_over_processes(tiny_model_dir, tiny_examples, tmp_path):
    "Only a global batch the processes cannot share is refused, before anything is written."
    from w2s_nb.config import ConfigError
    with pytest.raises(ConfigError, match="grad_accum=1: the global batch batch_size × grad_accum = 3 × 1 = 3 does not "
                                          "split over num_processes=2; .* set grad_accum=2"):
        train_sft(ModelRef(tiny_model_dir), cfg_for(tiny_model_dir, batch_size=3, grad_accum=1), tiny_examples, tmp_path,
                  seed=0, num_processes=2)
    assert list(tmp_path.iterdir()) == []


GPU_CONFIGS = [Path(__file__).resolve().parent.parent / "configs" / "gpu-smoke.yaml",
               *sorted(q for q in (Path(__file__).resolve().parent.parent / "configs" / "paper").glob("*.yaml")
                       if not q.name.startswith("_"))]


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_trainers_get_the_configured_global_batch_on_any_gpu_count(path):
    "The TRL configs every trainer of a paper / smoke config gets keep `batch_size × grad_accum` on 1, 2, 4, 8 processes."
    from trl import SFTConfig
    from w2s_nb.config import load_config
    from w2s_nb.train import _common_args, _pref_args
    for n in (1, 2, 4, 8):
        cfg = load_config(path, [f"num_processes={n}"])
        jobs = [(cfg.strong, cfg.strong.sft, SFTConfig), (cfg.strong, cfg.stage2.pref, None)]
        if cfg.weak.finetune != "none": jobs.append((cfg.weak, cfg.weak.sft, SFTConfig))
        for model, s, cls in jobs:
            common = _common_args("o", s, model, 0, "cpu", n)
            for args in ([cls(**common)] if cls else [_pref_args(m, s, common) for m in ("dpo", "orpo")]):
                got = args.per_device_train_batch_size * args.gradient_accumulation_steps * n
                assert got == s.batch_size * s.grad_accum, (path.name, n, s)
                assert args.per_device_train_batch_size <= s.batch_size, (path.name, n, s)


@pytest.mark.slow
def test_accelerate_launch_cli(tiny_model_dir, tiny_examples, tmp_path):
    "The documented command: `accelerate launch --cpu --num_processes 2 -m w2s_nb.train job.json`."
    cfg = cfg_for(tiny_model_dir, epochs=1)
    from w2s_nb.config import to_dict
    job = dict(kind="sft", ref=ModelRef(tiny_model_dir).to_dict(), cfg=to_dict(cfg), examples=tiny_examples[:16],
               out_dir=str(tmp_path / "out"), seed=0, device="cpu")
    (tmp_path / "job.json").write_text(json.dumps(job))
    p = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "-m", "w2s_nb.train", str(tmp_path / "job.json")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert finished(tmp_path / "out") == ModelRef(tiny_model_dir, [str((tmp_path / "out").resolve() / "adapter")])
    assert launch_command("j.json", 2)[-4:] == ["2", "-m", "w2s_nb.train", "j.json"]


class Killed(Exception):
    "Stands for a crash (OOM, a preempted node) in the middle of training."


class KillAt(TrainerCallback):
    "Raise right after optimizer step `step`, before that step's checkpoint is saved."
    def __init__(self, step): self.step = step
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step: raise Killed(f"killed after step {self.step}")


def adapter_weights(out_dir) -> dict:
    from safetensors.torch import load_file
    return load_file(str(Path(out_dir) / "adapter" / "adapter_model.safetensors"))


def check_resume_equals_uninterrupted(train, out, kill_at: int, resumed_at: int):
    "`train(out_dir, callbacks)` once whole; once killed after `kill_at` steps then re-run: same weights and losses."
    from w2s_nb.train import last_checkpoint
    train(out / "whole", [])
    with pytest.raises(Killed):
        train(out / "killed", [KillAt(kill_at)])
    assert finished(out / "killed") is None
    assert last_checkpoint(out / "killed").name == f"checkpoint-{resumed_at}"
    train(out / "killed", [])                                           # the re-run after the kill
    log, whole = read_train_log(out / "killed"), read_train_log(out / "whole")
    assert [r for r in log if "resumed_from_step" in r] == [dict(resumed_from_step=resumed_at, step=resumed_at)]
    steps = lambda lg: [r["step"] for r in lg if "loss" in r]
    assert steps(log) == steps(whole) == list(range(1, steps(whole)[-1] + 1))   # no step lost or repeated
    torch.testing.assert_close([r["loss"] for r in log if "loss" in r], [r["loss"] for r in whole if "loss" in r])
    got, want = adapter_weights(out / "killed"), adapter_weights(out / "whole")
    assert sorted(got) == sorted(want) and got
    for k in want: torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    moved = adapter_weights(out / "whole")
    assert not list((out / "killed" / "trainer").glob("checkpoint-*"))   # a finished run drops its checkpoints
    return moved


def test_sft_killed_mid_training_resumes_to_the_same_adapter(tiny_model_dir, tiny_examples, tmp_path):
    "LoRA SFT, 16 steps, a checkpoint every 2: killed after step 5, the re-run resumes at 4 and ends where a whole run does."
    cfg = cfg_for(tiny_model_dir, save_steps=2, save_total_limit=2)
    train = lambda d, cbs: train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples, d, seed=0, callbacks=cbs)
    check_resume_equals_uninterrupted(train, tmp_path, kill_at=5, resumed_at=4)


def test_dpo_from_a_qlora_model_killed_mid_training_resumes_to_the_same_adapter(qlora_runs, tiny_pairs, tmp_path):
    "QLoRA DPO from M_plus (trained adapter + frozen 'ref' copy in every checkpoint), 8 steps: killed after 3, resumed at 2."
    pref = dataclasses.replace(qlora_runs["pref"], lr=1e-2, save_steps=2)
    train = lambda d, cbs: train_preference(qlora_runs["m_plus"], qlora_runs["cfg"], pref, "dpo", tiny_pairs, d, seed=0,
                                            callbacks=cbs)
    check_resume_equals_uninterrupted(train, tmp_path, kill_at=3, resumed_at=2)


def test_checkpoints_of_another_job_are_not_resumed(tiny_model_dir, tiny_examples, tmp_path):
    "Killed with one set of examples, re-run with others: the old checkpoints are deleted, training starts at step 0."
    cfg = cfg_for(tiny_model_dir, epochs=1, save_steps=2)
    with pytest.raises(Killed):
        train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples, tmp_path, seed=0, callbacks=[KillAt(3)])
    assert (tmp_path / "trainer" / "checkpoint-2").is_dir()
    train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples[:32], tmp_path, seed=0)
    assert not [r for r in read_train_log(tmp_path) if "resumed_from_step" in r]


def test_dpo_save_keeps_the_ref_adapter_until_saved_and_writes_only_the_trained_one(qlora_runs, tiny_pairs, tmp_path,
                                                                                      monkeypatch):
    """FSDP gathers the whole wrapped model to save it, so the frozen 'ref' adapter must still be on the model then;
    the saved folder holds the trained adapter only (PEFT would write 'ref' into a subfolder)."""
    from transformers import Trainer
    seen, save = [], Trainer.save_model
    def spy(self, output_dir=None, _internal_call=False):
        seen.append((Path(output_dir).name, sorted(self.accelerator.unwrap_model(self.model).peft_config)))
        return save(self, output_dir, _internal_call)
    monkeypatch.setattr(Trainer, "save_model", spy)
    pref = dataclasses.replace(qlora_runs["pref"], epochs=1)
    new = train_preference(qlora_runs["m_plus"], qlora_runs["cfg"], pref, "dpo", tiny_pairs[:16], tmp_path, seed=0)
    assert seen == [(".adapter.partial", ["default", "ref"])]      # the final save only: no checkpoint after the last step
    adapter = tmp_path / "adapter"
    assert not [p for p in adapter.iterdir() if p.is_dir()], list(adapter.iterdir())
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    assert new.adapters == [str(adapter.resolve())] and load_model(new, qlora_runs["cfg"], "cpu") is not None


def test_training_jobs_carry_the_process_group_timeout(tiny_model_dir, tiny_examples, tmp_path, monkeypatch):
    "`timeout_s` reaches TrainingArguments.ddp_timeout in process and through a launched job."
    import w2s_nb.train as train_mod
    from transformers import TrainerCallback

    class GrabArgs(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw): self.timeout = args.ddp_timeout
    grab = GrabArgs()
    cfg = cfg_for(tiny_model_dir, epochs=1)
    train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples[:8], tmp_path / "one", seed=0, callbacks=[grab], timeout_s=4321)
    assert grab.timeout == 4321
    jobs = []
    monkeypatch.setattr(train_mod, "_launch", lambda job, *a: jobs.append(job))
    train_sft(ModelRef(tiny_model_dir), cfg, tiny_examples[:8], tmp_path / "two", seed=0, num_processes=2, timeout_s=99)
    train_preference(ModelRef(tiny_model_dir), cfg, PrefSettings(), "dpo", [dict(prompt="a", chosen="b", rejected="c")],
                     tmp_path / "three", seed=0, num_processes=2, timeout_s=98)
    assert [j["timeout_s"] for j in jobs] == [99, 98]
    ran = []
    monkeypatch.setattr(train_mod, "_run_sft", lambda *a, **kw: ran.append(kw["timeout_s"]))
    train_mod.run_job({**jobs[0], "num_processes": 1})
    assert ran == [99]
