"""`runtime.strategy: fsdp`: Multi2Cap sharded with FSDP2 (`torch.distributed.fsdp.fully_shard`).

Each block that `Multi2Cap.shard_units` names (CED blocks, LLM decoder layers, CLIP encoder
layers) becomes one FSDP unit and the rest of the model one root unit; every parameter, gradient
and optimizer state is split over the processes and a unit's weights are gathered only while it
runs. FSDP2 rather than FSDP1 or DeepSpeed because it shards per parameter: frozen backbone
weights and trainable LoRA / adapter weights of different dtypes share a unit without flattening,
the parameter names (and so the checkpoints' keys) stay those of the unsharded model, and it is in
torch itself (no extra package), running on CPU (gloo) as on GPU (NCCL).

The optimizer must be built after `shard_model`, over the sharded parameters.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

log = logging.getLogger("multi2cap.train")


def shard_model(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """Shard `model` (a `Multi2Cap` after `set_stage`) in place over `world_size` processes of
    the default process group and return it; its weights move to `device`."""
    mesh = init_device_mesh(device.type, (world_size,))
    units = model.shard_units()  # type: ignore[operator]
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    log.info("FSDP: %d sharded blocks + the root unit over %d processes", len(units), world_size)
    return model


def is_sharded(model: nn.Module) -> bool:
    """True for a model that `shard_model` wrapped."""
    return isinstance(model, FSDPModule)


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Reduce-scatter gradients in this backward (`sync`) or keep accumulating them locally
    (the micro-batches before an optimizer step); no-op for an unsharded model."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)
