"""InfoNCE under torch.distributed: two real CPU processes (gloo) with uneven batch shards."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from multi2cap.model.grounding import InfoNCE

ROWS = (3, 2)  # rows of the global batch held by rank 0 and rank 1


def _global_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.randn(sum(ROWS), 6, generator=gen), torch.randn(sum(ROWS), 6, generator=gen)


def _rank_slice(rank: int) -> slice:
    return slice(sum(ROWS[:rank]), sum(ROWS[: rank + 1]))


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        q_all, k_all = _global_pairs()
        q = q_all[_rank_slice(rank)].clone().requires_grad_(True)
        k = k_all[_rank_slice(rank)].clone().requires_grad_(True)
        loss = InfoNCE(temperature=0.1)(q, k)
        loss.backward()
        save_file(
            {"loss": loss.detach().reshape(1), "q_grad": q.grad, "k_grad": k.grad},
            f"{out_dir}/rank{rank}.safetensors",
        )
    finally:
        dist.destroy_process_group()


def _expected(rank: int) -> dict[str, torch.Tensor]:
    """Local rows as queries against every rank's rows; only the local rows carry gradients."""
    q_all, k_all = _global_pairs()
    local = _rank_slice(rank)
    q = q_all[local].clone().requires_grad_(True)
    k = k_all[local].clone().requires_grad_(True)
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    q_glob = F.normalize(q_all, dim=-1).clone()
    k_glob = F.normalize(k_all, dim=-1).clone()
    q_glob = torch.cat([q_glob[: local.start], qn, q_glob[local.stop :]])
    k_glob = torch.cat([k_glob[: local.start], kn, k_glob[local.stop :]])
    targets = torch.arange(local.start, local.stop)
    loss = (
        F.cross_entropy(10.0 * qn @ k_glob.T, targets)
        + F.cross_entropy(10.0 * kn @ q_glob.T, targets)
    ) / 2
    loss.backward()
    return {"loss": loss.detach().reshape(1), "q_grad": q.grad, "k_grad": k.grad}


def test_info_nce_gathers_negatives_across_ranks(tmp_path: Path) -> None:
    # fork: the children reuse the imported modules instead of importing torch again
    args = (str(tmp_path / "init"), str(tmp_path))
    context = mp.start_processes(_worker, args=args, nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError("the two ranks did not finish within 120 s")
    for rank in range(2):
        got = load_file(tmp_path / f"rank{rank}.safetensors")
        want = _expected(rank)
        for key in ("loss", "q_grad", "k_grad"):
            torch.testing.assert_close(got[key], want[key], msg=f"rank {rank} {key}")
    # with other ranks' negatives the loss differs from the single-process one
    q_all, k_all = _global_pairs()
    alone = InfoNCE(temperature=0.1)(q_all[_rank_slice(0)], k_all[_rank_slice(0)])
    assert not torch.allclose(alone, load_file(tmp_path / "rank0.safetensors")["loss"][0])
