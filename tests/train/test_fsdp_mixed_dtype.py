"""FSDP2 shards a bf16 decoder whose LoRA weights are fp32 (`Multi2Cap._trainable_to_fp32`): each
decoder layer is one FSDP unit holding frozen bf16 and trainable fp32 parameters. torch's FSDP2
accepts that from 2.8 on (2.7.1's `FSDPParamGroup._init_mp_dtypes` asserts one original dtype
for all parameters of a unit, frozen ones included; 2.8.0 asks it of the trainable ones only:
read in both releases' source), hence pyproject's lower bound. Two gloo CPU processes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from multi2cap_testkit import CAPTIONS, make_batch
from torch.distributed.tensor import DTensor

from multi2cap.model.config import Multi2CapConfig
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.train.sharding import shard_model

ROOT = Path(__file__).resolve().parents[2]
FIRST_ACCEPTING = (2, 8)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        config = Multi2CapConfig.tiny(CAPTIONS)
        config = config.model_copy(
            update={"llm": config.llm.model_copy(update={"dtype": "bfloat16"})}
        )
        model = Multi2Cap(config, load_vision=False)
        model.set_stage("finetune")
        layer = next(u for u in model.shard_units() if u in set(model.decoder.model.modules()))
        mixed = sorted({str(p.dtype) for p in layer.parameters()})
        model = shard_model(model, torch.device("cpu"), 2)
        lora = {n: p for n, p in model.named_parameters() if "lora_B" in n and "decoder" in n}
        before = {n: p.full_tensor().clone() for n, p in lora.items()}
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
        losses = []
        for _ in range(2):
            loss = model(make_batch(4), "finetune").loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        moved = all(not torch.equal(p.full_tensor(), before[n]) for n, p in lora.items())
        summary = {
            "unit_dtypes": mixed,
            "lora_dtypes": sorted({str(p.dtype) for p in lora.values()}),
            "sharded": all(isinstance(p, DTensor) for p in lora.values()),
            "losses": losses,
            "lora_moved": moved,
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(summary))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_fsdp_shards_a_bf16_decoder_with_fp32_lora_on_two_processes(tmp_path: Path) -> None:
    args = (str(tmp_path / "init"), str(tmp_path))
    context = mp.start_processes(_worker, args=args, nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 180
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError("the two ranks did not finish within 180 s")
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for run in runs:
        assert run["unit_dtypes"] == ["torch.bfloat16", "torch.float32"]  # one unit, both
        assert run["lora_dtypes"] == ["torch.float32"] and run["sharded"]
        assert run["lora_moved"] and all(torch.isfinite(torch.tensor(run["losses"])))
        assert run["losses"][1] < run["losses"][0]
    assert runs[0]["losses"] == pytest.approx(runs[1]["losses"])  # one model, one loss


def test_the_torch_bound_admits_no_release_whose_fsdp2_refuses_mixed_units() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'"torch>=(\d+)\.(\d+)', pyproject)
    assert found is not None, "no torch lower bound in pyproject.toml"
    assert (int(found.group(1)), int(found.group(2))) >= FIRST_ACCEPTING
    installed = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    assert installed >= FIRST_ACCEPTING
