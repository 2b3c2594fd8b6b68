"""An FSDP save gathers only what it saves: with the decoder given by path (as a 3-8B hub
decoder would be), its frozen weights are not all-gathered, only the LoRA, adapter and grounding
weights and the inline-config backbones that the checkpoint holds. Two gloo CPU processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.distributed.tensor import DTensor

from multi2cap.model.config import BACKBONES_FILE, TRAINABLE_FILE, Multi2CapConfig
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.train.sharding import shard_model

CAPTIONS = ["a dog barks", "rain falls on a roof", "a bell rings"]


def _config(llm_dir: Path) -> Multi2CapConfig:
    config = Multi2CapConfig.tiny(CAPTIONS)
    llm = config.llm.model_copy(
        update={"source": str(llm_dir), "family": None, "config": None, "tokenizer": None}
    )
    return config.model_copy(update={"llm": llm})


def _worker(rank: int, init_file: str, llm_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = Multi2Cap(_config(Path(llm_dir)))
        model.set_stage("pretrain")
        model = shard_model(model, torch.device("cpu"), 2)
        gathered: list[int] = []
        full_tensor = DTensor.full_tensor

        def counting(self: DTensor, *args: object, **kwargs: object) -> torch.Tensor:
            whole = full_tensor(self, *args, **kwargs)
            gathered.append(whole.numel() * whole.element_size())
            return whole

        DTensor.full_tensor = counting  # type: ignore[method-assign]
        try:
            model.save_pretrained(Path(out_dir) / "ckpt", is_main_process=rank == 0)
        finally:
            DTensor.full_tensor = full_tensor  # type: ignore[method-assign]
        Path(out_dir, f"gathered{rank}.txt").write_text(str(sum(gathered)))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_save_gathers_only_the_saved_tensors(tmp_path: Path) -> None:
    from multi2cap.model.llm import build_causal_lm, word_level_tokenizer

    tiny = Multi2CapConfig.tiny(CAPTIONS)
    decoder = build_causal_lm(tiny.llm)
    decoder.save_pretrained(tmp_path / "llm")
    word_level_tokenizer(tiny.llm.tokenizer).save_pretrained(tmp_path / "llm")

    args = (str(tmp_path / "init"), str(tmp_path / "llm"), str(tmp_path))
    context = mp.start_processes(_worker, args=args, nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 180
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError("the two ranks did not finish within 180 s")

    saved = {
        **load_file(tmp_path / "ckpt" / TRAINABLE_FILE),
        **load_file(tmp_path / "ckpt" / BACKBONES_FILE),
    }
    assert not any(k.startswith("decoder.") and "lora_" not in k for k in saved)
    saved_bytes = sum(v.numel() * v.element_size() for v in saved.values())
    for rank in range(2):
        gathered = int((tmp_path / f"gathered{rank}.txt").read_text())
        # everything gathered is saved (the non-sharded parameters are not gathered at all);
        # before the fix the frozen decoder was gathered too
        assert 0 < gathered <= saved_bytes
    # the sharded save loads as an ordinary checkpoint
    Multi2Cap.from_pretrained(tmp_path / "ckpt")
