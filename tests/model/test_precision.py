"""Dtypes: trainable weights are fp32 under a bf16 decoder; `llm.dtype: auto` resolution."""

from __future__ import annotations

import pytest
import torch
from multi2cap_testkit import CAPTIONS, make_batch

from multi2cap.model import llm
from multi2cap.model.config import Multi2CapConfig
from multi2cap.model.multi2cap import Multi2Cap


def _config(dtype: str) -> Multi2CapConfig:
    config = Multi2CapConfig.tiny(CAPTIONS)
    return config.model_copy(update={"llm": config.llm.model_copy(update={"dtype": dtype})})


def _bf16_and_fp32() -> tuple[Multi2Cap, Multi2Cap]:
    """The same weights twice: fp32, and with the frozen decoder rounded to bf16."""
    fp32 = Multi2Cap(_config("float32"))
    bf16 = Multi2Cap(_config("bfloat16"))
    bf16.load_state_dict(fp32.state_dict())
    return bf16, fp32


def test_bf16_decoder_trains_fp32_weights_only() -> None:
    bf16, _ = _bf16_and_fp32()
    assert bf16.decoder.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert bf16.decoder.lora_state_keys()  # the decoder has LoRA, injected into bf16 layers
    for stage in ("pretrain", "finetune"):
        bf16.set_stage(stage)
        trainable = {n: p.dtype for n, p in bf16.named_parameters() if p.requires_grad}
        assert set(trainable.values()) == {torch.float32}, trainable
    frozen = {p.dtype for n, p in bf16.decoder.named_parameters() if "lora_" not in n}
    assert frozen == {torch.bfloat16}  # the backbone keeps its dtype (memory)
    bf16.set_stage("pretrain")
    optimizer = torch.optim.AdamW(bf16.trainable_parameters(), lr=1e-3)
    bf16(make_batch(2), "pretrain").loss.backward()
    optimizer.step()
    states = [t for s in optimizer.state.values() for t in s.values() if t.numel() > 1]
    assert states and {t.dtype for t in states} == {torch.float32}


def test_bf16_decoder_lora_moves_at_warmup_learning_rates() -> None:
    """One AdamW step at lr 1e-5 moves every LoRA entry that has a gradient (in bf16, 83 % of
    a peft-initialised lora_A did not move: the update is below half a bf16 ulp)."""
    bf16, _ = _bf16_and_fp32()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # lora_B starts at zero, which leaves lora_A without a gradient
        for name, param in bf16.decoder.named_parameters():
            if "lora_B" in name:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    lora_a = [p for n, p in bf16.decoder.named_parameters() if "lora_A" in n]
    before = [p.detach().clone() for p in lora_a]
    optimizer = torch.optim.AdamW(bf16.trainable_parameters(), lr=1e-5, weight_decay=1e-6)
    bf16(make_batch(4), "pretrain").loss.backward()
    has_grad = torch.cat([(p.grad != 0).flatten() for p in lora_a])
    optimizer.step()
    unmoved = torch.cat([(p == b).flatten() for p, b in zip(lora_a, before, strict=True)])
    assert has_grad.float().mean() > 0.99
    assert not (unmoved & has_grad).any()


def test_bf16_decoder_tracks_the_fp32_losses() -> None:
    """Six AdamW steps (lr 1e-3) from the same weights. The bf16 model differs only by its
    frozen decoder weights and activations rounded to bf16 (8 significant bits, relative
    error 2^-9 per value): the initial losses differ by ~0.2 %, and AdamW's normalised steps
    amplify the difference along the way. Over 8 seeds of the initial weights (2026-12-07,
    torch 2.13 CPU) the two trajectories stayed within 6.7 % of each other at every step and
    bf16's total drop was 0.91-1.06x fp32's; a model whose updates were lost, or whose LoRA
    branch broke the forward, falls behind by far more (its loss drops 1.1 in step one).
    The weights are seeded so the test is deterministic on one platform; the bounds (10 % per
    step, drop 0.8-1.25x) leave room for another platform's kernels."""
    torch.manual_seed(0)
    bf16, fp32 = _bf16_and_fp32()
    batch = make_batch(4)
    losses = {}
    for name, model in (("bf16", bf16), ("fp32", fp32)):
        torch.manual_seed(1)
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, weight_decay=1e-6)
        losses[name] = []
        for _ in range(6):
            out = model(batch, "pretrain")
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[name].append(out.loss.item())
    assert losses["fp32"][-1] < 0.7 * losses["fp32"][0]  # it learns
    for got, want in zip(losses["bf16"], losses["fp32"], strict=True):
        assert got == pytest.approx(want, rel=0.10)
    drop = (losses["bf16"][0] - losses["bf16"][-1]) / (losses["fp32"][0] - losses["fp32"][-1])
    assert 0.8 < drop < 1.25, losses


def test_auto_dtype_is_fp32_on_cpu_and_bf16_with_a_bf16_gpu(monkeypatch) -> None:
    assert llm.resolve_llm_dtype("auto", "cuda") == (
        torch.bfloat16 if llm._cuda_has_bf16() else torch.float32
    )
    assert Multi2CapConfig.tiny(CAPTIONS).llm.dtype == "auto"
    assert llm.resolve_llm_dtype("auto") == torch.float32  # built on the CPU
    model = Multi2Cap(Multi2CapConfig.tiny(CAPTIONS))
    assert model.decoder.embed_dtype == torch.float32
    monkeypatch.setattr(llm, "_cuda_has_bf16", lambda: True)  # a machine with a bf16 GPU
    assert llm.resolve_llm_dtype("auto", "cuda:0") == torch.bfloat16
    assert llm.resolve_llm_dtype("auto", torch.device("cpu")) == torch.float32
    assert llm.resolve_llm_dtype("float32", "cuda") == torch.float32  # explicit dtypes win
    assert llm.resolve_llm_dtype("bfloat16", "cpu") == torch.bfloat16
    model = Multi2Cap(Multi2CapConfig.tiny(CAPTIONS), device="cuda")  # resolved, not moved
    assert model.decoder.embed_dtype == torch.bfloat16
    assert {p.dtype for p in model.trainable_parameters()} == {torch.float32}
    monkeypatch.setattr(llm, "_cuda_has_bf16", lambda: False)
    assert llm.resolve_llm_dtype("auto", "cuda") == torch.float32


def test_auto_dtype_follows_the_device_a_checkpoint_is_loaded_on(tmp_path, monkeypatch) -> None:
    """`multi2cap caption --device cpu` on a GPU machine: the decoder loads in fp32 (before,
    `auto` looked only at whether a bf16 GPU was present, and gave bf16 on the CPU, where
    bf16 matmuls are slow)."""
    Multi2Cap(Multi2CapConfig.tiny(CAPTIONS), load_vision=False).save_pretrained(tmp_path / "m")
    monkeypatch.setattr(llm, "_cuda_has_bf16", lambda: True)
    on_cpu = Multi2Cap.from_pretrained(tmp_path / "m", device="cpu")
    assert on_cpu.decoder.embed_dtype == torch.float32
    assert Multi2Cap.from_pretrained(tmp_path / "m").decoder.embed_dtype == torch.float32
    # for a GPU (not moved here, this machine may have none) the same checkpoint is bf16
    for_gpu = Multi2Cap.from_pretrained(tmp_path / "m", device="cuda", move=False)
    assert for_gpu.decoder.embed_dtype == torch.bfloat16
    assert next(for_gpu.parameters()).device.type == "cpu"
