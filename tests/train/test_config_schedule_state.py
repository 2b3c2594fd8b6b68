"""Recipe loading, the lr schedule, the resumable sampler and pickle-free state files."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from multi2cap.recipes import RECIPES_DIR
from multi2cap.train.config import ConfigError, EvalConfig, load_train_config
from multi2cap.train.sampler import StepBatchSampler, StepPlan
from multi2cap.train.schedule import lr_factor, warmup_cosine
from multi2cap.train.state import (
    begin_checkpoint,
    commit_checkpoint,
    gather_optimizer_state,
    list_checkpoints,
    load_optimizer,
    load_rng,
    prune_checkpoints,
    read_state,
    save_optimizer,
    save_rng,
    write_state,
)

CONFIGS = RECIPES_DIR


def test_overrides_types_and_relative_paths(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "stage: finetune\noptim:\n  lr: 5e-5\n  batch_size: 8\n  micro_batch_size: 4\n"
        "data:\n  train_manifest: data/train.jsonl\nmodel:\n  k: 4\nruntime:\n  output_dir: out\n"
    )
    cfg = load_train_config(
        recipe, ["optim.lr=1e-4", "model.k=8", "optim.betas=[0.8, 0.95]"], output_dir="x"
    )
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.model == {"k": 8}
    assert cfg.optim.betas == (0.8, 0.95)
    assert cfg.data.train_manifest == str(tmp_path / "data/train.jsonl")
    assert cfg.runtime.output_dir == "x"  # the command line's, relative to the cwd
    assert load_train_config(recipe).runtime.output_dir == str(tmp_path / "out")
    assert cfg.accumulation_steps(1) == 2
    assert cfg.accumulation_steps(2) == 1
    with pytest.raises(ConfigError, match="micro_batch_size x devices"):
        cfg.accumulation_steps(3)


def test_a_boolean_grounding_takes_a_pool_override(tmp_path: Path) -> None:
    """`grounding: true` (every recipe written before `grounding.pool`) is the section's
    `enabled` flag, so `model.grounding.pool=time` applies to it; `false` still wins."""
    from multi2cap.model.config import Multi2CapConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  grounding: true\n  k: 4\n")
    cfg = load_train_config(recipe, ["model.grounding.pool=time", "optim.vfr_reduction=mean"])
    assert cfg.model["grounding"] == {"enabled": True, "pool": "time"}
    assert cfg.optim.vfr_reduction == "mean"
    assert Multi2CapConfig.model_validate(cfg.model).grounding.pool == "time"
    off = load_train_config(recipe, ["model.grounding.pool=time", "model.grounding=false"])
    assert not Multi2CapConfig.model_validate(off.model).grounding
    assert load_train_config(recipe).optim.vfr_reduction == "sum"  # the default: Eq. 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.vfr_reduction=median"], "optim.vfr_reduction"),
        (["optim.lrr=1"], "optim.lrr"),
        (["stage=distill"], "stage"),
        (["optim.batch_size=10", "optim.micro_batch_size=4"], "multiple of"),
        (["optim"], "key=value"),
    ],
)
def test_bad_overrides_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, overrides)


@pytest.mark.parametrize(
    "name",
    [
        "pretrain_vggcaps.yaml",
        "finetune_clotho.yaml",
        "finetune_audiocaps.yaml",
        "tiny_pretrain.yaml",
        "tiny_finetune.yaml",
    ],
)
def test_recipes_validate(name: str) -> None:
    from multi2cap.model.config import Multi2CapConfig

    cfg = load_train_config(CONFIGS / name)
    if not name.startswith("tiny"):
        Multi2CapConfig.model_validate(cfg.model)


def test_paper_recipes_carry_appendix_a1_values() -> None:
    pre = load_train_config(CONFIGS / "pretrain_vggcaps.yaml")
    assert (pre.stage, pre.optim.lr, pre.optim.batch_size, pre.optim.epochs) == (
        "pretrain",
        5e-5,
        320,
        15,
    )
    assert (pre.model["alpha"], pre.model["beta"], pre.model["k"]) == (0.02, 0.05, 4)
    # The paper's readings (docs/model.md): spatial grounding, Eq. 3 as a squared norm.
    assert pre.model["grounding"] == {"enabled": True, "pool": "space"}
    assert pre.optim.vfr_reduction == "sum"
    for name in ("finetune_clotho.yaml", "finetune_audiocaps.yaml"):
        fine = load_train_config(CONFIGS / name)
        assert (fine.stage, fine.optim.lr, fine.optim.batch_size, fine.optim.epochs) == (
            "finetune",
            1e-4,
            384,
            30,
        )
    for cfg in (pre, fine):
        assert cfg.optim.warmup_epochs == 2
        assert cfg.optim.weight_decay == 1e-6
        assert cfg.optim.betas == (0.9, 0.999)
        assert cfg.augment.enabled


def test_best_mode_follows_the_metric_direction() -> None:
    assert EvalConfig(best_metric="cider_d").maximise
    assert not EvalConfig(best_metric="val_loss").maximise
    assert not EvalConfig(best_metric="fer", best_mode="min").maximise


def test_lr_schedule_warmup_then_cosine() -> None:
    factors = [lr_factor(s, warmup_steps=4, total_steps=12) for s in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0  # cosine starts at the peak
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
    assert lr_factor(12, 4, 12, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(8, 4, 12) == pytest.approx(0.5)  # half way through the cosine
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=2.0)
    scheduler = warmup_cosine(optimizer, 4, 12)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.0 * f for f in factors[:6]])


def test_sampler_partitions_steps_and_resumes() -> None:
    args = dict(micro_batch_size=2, accumulation_steps=2, num_replicas=2, seed=3, epoch=1)
    shards = [list(StepBatchSampler(19, rank=r, **args)) for r in range(2)]
    # 3 steps of 8 items: the 19 items, and 5 of them again to complete the last step
    assert len(shards[0]) == len(shards[1]) == 6
    for step in range(3):
        items = [i for shard in shards for batch in shard[2 * step : 2 * step + 2] for i in batch]
        assert len(items) == len(set(items)) == 8  # no item twice within a step
    seen = [i for shard in shards for batch in shard for i in batch]
    assert sorted(set(seen)) == list(range(19)) and len(seen) == 24
    resumed = list(StepBatchSampler(19, rank=0, start_step=1, **args))
    assert resumed == shards[0][2:]
    other_epoch = list(StepBatchSampler(19, rank=0, **{**args, "epoch": 2}))
    assert other_epoch != shards[0]


def test_every_item_is_trained_in_every_epoch() -> None:
    # Before, the incomplete last step was dropped: each epoch left up to a batch of items out
    # (at random), so an item could miss several epochs running.
    args = dict(micro_batch_size=4, accumulation_steps=3, num_replicas=2, seed=0)
    for n in (24, 25, 47):
        for epoch in range(4):
            seen = {
                i
                for rank in range(2)
                for batch in StepBatchSampler(n, rank=rank, epoch=epoch, **args)
                for i in batch
            }
            assert seen == set(range(n)), (n, epoch)
    assert StepBatchSampler(23, **args).steps_per_epoch == 0  # less than one effective batch


def test_step_plan_of_the_paper_recipes_on_eight_gpus() -> None:
    # Clotho development: 3,839 clips with 5 captions = 19,195 (clip, caption) rows; batch 384
    # = 8 clips x 8 GPUs x 6 accumulation steps; 30 epochs, 2 of warm-up.
    rows = StepPlan(19_195, 384, 30, 2)
    assert (rows.steps_per_epoch, rows.total_steps, rows.warmup_steps) == (50, 1500, 100)
    assert rows.padding == 5
    clips = StepPlan(3_839, 384, 30, 2)
    assert (clips.steps_per_epoch, clips.total_steps, clips.warmup_steps) == (10, 300, 20)
    sampler = StepBatchSampler(19_195, micro_batch_size=8, accumulation_steps=6, num_replicas=8)
    assert sampler.steps_per_epoch == rows.steps_per_epoch
    assert "50 steps per epoch x 30 epochs = 1500 steps, 100 of warm-up" in rows.describe("row")


def test_optimizer_and_rng_roundtrip_without_pickles(tmp_path: Path) -> None:
    def build(lr: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
        model[0].requires_grad_(False)  # frozen, like a backbone: no optimizer state
        params = [p for p in model.parameters() if p.requires_grad]
        return model, torch.optim.AdamW(params, lr=lr)

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
        model(torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))).pow(
            2
        ).sum().backward()
        optimizer.step()
        optimizer.zero_grad()

    model, optimizer = build(0.1)
    for seed in range(2):
        step(model, optimizer, seed)
    meta = save_optimizer(gather_optimizer_state(model, optimizer), tmp_path)
    with safe_open(str(tmp_path / "optimizer.safetensors"), "pt") as handle:
        assert sorted(handle.keys()) == [
            f"1.{p}.{k}" for p in ("bias", "weight") for k in ("exp_avg", "exp_avg_sq", "step")
        ]
    fresh_model, fresh = build(0.5)
    fresh_model.load_state_dict(model.state_dict())
    load_optimizer(fresh_model, fresh, tmp_path, meta)
    assert fresh.param_groups[0]["lr"] == 0.1
    a, b = optimizer.state_dict(), fresh.state_dict()
    for index in a["state"]:
        for key, value in a["state"][index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][key]))
    step(model, optimizer, 5)
    step(fresh_model, fresh, 5)
    for p, q in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(p, q)

    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    save_rng(tmp_path, rank=0)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    load_rng(tmp_path, rank=0)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


def test_checkpoint_folders_are_atomic_and_pruned(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        tmp = begin_checkpoint(tmp_path, f"step-{step:08d}")
        write_state(tmp, {"step": step})
        commit_checkpoint(tmp, tmp_path / f"step-{step:08d}")
    (tmp_path / ".tmp-step-00000004").mkdir()  # a save cut short by a crash
    (tmp_path / "step-00000005").mkdir()  # a folder without its state file is not complete
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2, 3]
    prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    tmp = begin_checkpoint(tmp_path, "step-00000003")
    write_state(tmp, {"step": "again"})
    commit_checkpoint(tmp, tmp_path / "step-00000003")
    assert read_state(tmp_path / "step-00000003") == {"step": "again"}


@pytest.mark.parametrize("name", ["best", "final", "step-00000001"])
def test_a_crash_while_replacing_a_checkpoint_leaves_old_or_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A process killed right after the first filesystem operation of the replacement (where
    the old and the new folder used to be renamed one after the other) leaves `name` whole."""
    import multi2cap.train.state as state

    tmp = begin_checkpoint(tmp_path, name)
    write_state(tmp, {"version": "old"})
    commit_checkpoint(tmp, tmp_path / name)
    tmp = begin_checkpoint(tmp_path, name)
    write_state(tmp, {"version": "new"})

    class Crash(Exception):
        pass

    def crash_after(operation):
        def run(*args, **kwargs):
            operation(*args, **kwargs)
            raise Crash

        return run

    monkeypatch.setattr(state.os, "replace", crash_after(state.os.replace))
    monkeypatch.setattr(state.shutil, "rmtree", crash_after(state.shutil.rmtree))
    with pytest.raises(Crash):
        commit_checkpoint(tmp, tmp_path / name)
    monkeypatch.undo()
    assert read_state(tmp_path / name) in ({"version": "old"}, {"version": "new"})
    # the next save of that name cleans up and replaces it
    tmp = begin_checkpoint(tmp_path, name)
    write_state(tmp, {"version": "newer"})
    commit_checkpoint(tmp, tmp_path / name)
    assert read_state(tmp_path / name) == {"version": "newer"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_checkpoint_replacement_without_an_atomic_exchange_is_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multi2cap.train.state as state

    tmp = begin_checkpoint(tmp_path, "best")
    write_state(tmp, {"version": "old"})
    commit_checkpoint(tmp, tmp_path / "best")
    monkeypatch.setattr(state, "_exchange", lambda a, b: False)
    tmp = begin_checkpoint(tmp_path, "best")
    write_state(tmp, {"version": "new"})
    calls, rename = [], os.replace

    def second_fails(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError("killed")
        rename(a, b)

    monkeypatch.setattr(state.os, "replace", second_fails)
    with pytest.raises(OSError, match="killed"):
        commit_checkpoint(tmp, tmp_path / "best")
    monkeypatch.undo()
    assert not (tmp_path / "best").exists()  # the window this fallback has
    begin_checkpoint(tmp_path, "best")
    assert read_state(tmp_path / "best") == {"version": "old"}
