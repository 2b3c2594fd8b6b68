"""L_align under torch.distributed: two real CPU processes (gloo) with uneven batch shards give
the gradient of the global-batch loss, as one process holding the whole batch does."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from multi2cap.model.grounding import AlignmentLoss, InfoNCE

ROWS = (3, 2)  # rows of the global batch held by rank 0 and rank 1
WORLD = len(ROWS)


def _global_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    n = sum(ROWS)
    return {
        "g": torch.randn(n, 2, 6, generator=gen),
        "a": torch.randn(n, 4, generator=gen),
        "v": torch.randn(n, 5, generator=gen),
    }


def _modules() -> tuple[AlignmentLoss, InfoNCE]:
    torch.manual_seed(0)
    return AlignmentLoss(d_g=6, d_audio=4, d_visual=5, align_dim=3, temperature=0.1), InfoNCE(0.1)


def _run(
    align: AlignmentLoss, nce: InfoNCE, part: slice, rows: int | None
) -> dict[str, torch.Tensor]:
    """L_align and InfoNCE of rows `part` of the global batch; losses and input gradients."""
    inputs = {k: v[part].clone().requires_grad_(True) for k, v in _global_batch().items()}
    for module in (align, nce):
        module.zero_grad(set_to_none=True)
    loss = align(inputs["g"], inputs["a"], inputs["v"], rows=rows)
    nce_loss = nce(inputs["a"][:, :3], inputs["v"][:, :3], rows=rows)
    (loss + nce_loss).backward()
    out = {"loss": loss.detach().reshape(1), "nce_loss": nce_loss.detach().reshape(1)}
    out.update({f"{k}_grad": x.grad for k, x in inputs.items()})
    return out


def _param_grads(align: AlignmentLoss, nce: InfoNCE) -> dict[str, torch.Tensor]:
    named = [*align.named_parameters(), *(("nce2." + k, p) for k, p in nce.named_parameters())]
    return {f"param.{name}": p.grad.clone() for name, p in named}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        part = slice(sum(ROWS[:rank]), sum(ROWS[: rank + 1]))
        for tag, rows in (("synced", None), ("padded", 4)):  # sizes read, or padded to 4
            align, nce = _modules()
            result = _run(align, nce, part, rows)
            for name, grad in _param_grads(align, nce).items():  # what DDP does: the mean
                dist.all_reduce(grad)
                result[name] = grad / WORLD
            save_file(result, f"{out_dir}/{tag}_rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_alignment_gradient_under_ddp_is_the_global_batch_gradient(tmp_path: Path) -> None:
    # fork: the children reuse the imported modules instead of importing torch again
    args = (str(tmp_path / "init"), str(tmp_path))
    context = mp.start_processes(_worker, args=args, nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError("the two ranks did not finish within 120 s")
    align, nce = _modules()
    whole = _run(align, nce, slice(None), None)
    whole.update(_param_grads(align, nce))
    for tag in ("synced", "padded"):
        for rank in range(WORLD):
            got = load_file(tmp_path / f"{tag}_rank{rank}.safetensors")
            part = slice(sum(ROWS[:rank]), sum(ROWS[: rank + 1]))
            for key, want in whole.items():
                if key.endswith("_grad"):
                    # a process's own rows carry W times their gradient; DDP's mean divides by W
                    want, value = want[part], got[key] / WORLD
                else:
                    value = got[key]
                torch.testing.assert_close(
                    value, want, rtol=1e-5, atol=1e-7, msg=f"{tag} rank {rank} {key}"
                )
