"""Several processes training one run (torchrun): who is who, and the few collectives
the recipe needs.

Under `torchrun --nproc-per-node N -m lastedocation.training RUN_DIR` every process
runs the same recipe. Each takes its share of every step's micro-batches; gradients
are summed across processes before the optimizer step (the loss is already divided
by the whole step's target-token count, so the sum is the exact full-batch gradient);
only the main process writes events, the heartbeat, checkpoints and the model, and
it alone decides on pause/stop/checkpoint requests, which it broadcasts.

One process (no torchrun) is the same code with every collective a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def launcher_pid(self) -> int:
        """The pid the studio started: torchrun's, when running under it."""
        return os.getppid() if self.size > 1 else os.getpid()

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process does the block first (it writes shared files: the prepared
        data, the scratch tokenizer); the others then find them and read them."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes (counts, losses)."""
        if self.size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `params` across processes, in one flat buffer.
        (DDP would overlap this with the backward pass; one all-reduce keeps the loop
        readable and works for LoRA adapters as well as full models.)"""
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Every process starts from the main process's weights."""
        if self.size == 1:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def decide(self, request: dict[str, str] | None) -> dict[str, str] | None:
        """The main process's control request, the same on every process."""
        if self.size == 1:
            return request
        box: list[Any] = [request if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def _comm_device(self) -> torch.device:
        return self.device() if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def join_world() -> World:
    """This process's place in the run: from torchrun's environment, or alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    world = World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ["LOCAL_RANK"]))
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world
