"""FSDP for every training stage under ``torchrun`` (``--fsdp``): parameters, gradients and optimizer state sharded
over the processes with ``torch.distributed.fsdp.fully_shard``, for models that DDP cannot hold on one device.

Decisions:
- Units: every item of an ``nn.ModuleList`` (the transformer blocks of the GPT and of the tokenizer's encoder) is
  one ``fully_shard`` unit, gathered for its forward and backward only; the rest of the model (embeddings, heads,
  the tokenizer's other parts) is the root unit. Frozen parameters are sharded too; buffers (the codebook, the
  feature scaler) stay whole on every rank, as under DDP.
- Checkpoints hold **full** state dicts gathered to rank 0 (``torch.distributed.checkpoint.state_dict`` with
  ``full_state_dict=True, cpu_offload=True``) in exactly the format of a DDP or one-process run: the model's
  ``state_dict()`` keys and the optimizer state keyed by parameter index. A run can be resumed with or without
  ``--fsdp``, and the published model directory loads without ``torch.distributed``. DCP's sharded format would
  avoid the full copy on rank 0, but XL's full training state (1.7B parameters + AdamW, ~27 GB) fits host memory,
  and one format for every run keeps resume and the tools simple.
- Validation and saving run on rank 0 on a *replica*: an unsharded copy of the model in host memory, refreshed from
  the gathered weights before each validation and checkpoint (and moved to the device for validation only). The
  stages' ``evaluate``/``save`` code is the same as without FSDP, and a stage's final model is that plain module.
- Gradients are reduce-scattered after every micro-batch (FSDP has no cheap ``no_sync``: skipping the reduction
  would keep unsharded gradients, the memory FSDP is there to save).
- With one process ``--fsdp`` changes nothing (there is nothing to shard over).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from .distributed import DistContext

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


class ShardedModel:
    """Shards a model in place and gives rank 0 its full weights and optimizer state (see the module notes).

    Build it on the unsharded model **before** it moves to the device (the replica is copied from it), then call
    :meth:`shard` after loading a checkpoint's weights and before building the optimizer."""

    def __init__(self, model: nn.Module, ctx: DistContext) -> None:
        self.ctx = ctx
        self.replica = copy.deepcopy(model).cpu() if ctx.is_main else None

    def shard(self, model: nn.Module) -> None:
        mesh = init_device_mesh(self.ctx.device.type, (self.ctx.world,))
        for module in list(model.modules()):
            if isinstance(module, nn.ModuleList):
                for block in module:
                    if any(True for _ in block.parameters()):
                        fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)

    def load_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load a full, index-keyed optimizer state (as ``optimizer.state_dict()`` of an unsharded run) into the
        sharded optimizer; every rank passes the whole state and keeps its shard."""
        names = _names_in_order(model, optimizer)
        keyed = {"state": {names[i]: v for i, v in state["state"].items()},
                 "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
        set_optimizer_state_dict(model, optimizer, keyed, options=StateDictOptions(full_state_dict=True))
        for group, saved in zip(optimizer.param_groups, state["param_groups"]):  # as saved (DCP makes tuples lists)
            group.update({k: v for k, v in saved.items() if k != "params"})

    def gather(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
               ) -> tuple[nn.Module, dict[str, Any] | None] | None:
        """Collective (every rank calls it): the replica refreshed with the full weights and, with ``optimizer``,
        the full index-keyed optimizer state, on rank 0; None on the other ranks."""
        weights = get_model_state_dict(model, options=_FULL)
        optim = None if optimizer is None else get_optimizer_state_dict(model, optimizer, options=_FULL)
        if self.replica is None:
            return None
        self.replica.load_state_dict(weights)
        if optim is not None:  # the groups (hyperparameters, indices) as the optimizer itself writes them
            index = {name: i for i, name in enumerate(_names_in_order(model, optimizer))}
            optim = {"state": {index[k]: v for k, v in optim["state"].items()},
                     "param_groups": optimizer.state_dict()["param_groups"]}
        return self.replica, optim

    @contextmanager
    def full_model(self, model: nn.Module) -> Iterator[nn.Module | None]:
        """Collective: rank 0's refreshed replica on the training device for the block (None on other ranks)."""
        gathered = self.gather(model)
        if gathered is None:
            yield None
            return
        replica = gathered[0].to(self.ctx.device)
        try:
            yield replica
        finally:
            replica.cpu()


def _names_in_order(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The parameter names in the optimizer's order: index ``i`` of ``optimizer.state_dict()`` is ``names[i]``."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
