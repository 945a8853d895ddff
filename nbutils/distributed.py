"""torchrun/DDP: the world a process belongs to, checked before any work starts."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nbutils.config import RunConfig
from nbutils.device import select_device


@dataclass
class Dist:
    """This process's place in a (possibly single-process) distributed run."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes artifacts."""
        return self.rank == 0


def _env_int(name: str, default: int, least: int) -> int:
    """An integer environment variable (torchrun's WORLD_SIZE, RANK, ...) of at least `least`."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise ValueError(f"{name}: must be an integer of at least {least}, got {text!r}")
    return value


def usable_ranks(device: torch.device) -> int:
    """Ranks one node can hold: its GPUs under cuda, its usable CPU cores under gloo on the CPU."""
    if device.type == "cuda":
        return torch.cuda.device_count()
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_world(device: torch.device) -> int:
    """The world size torchrun set, refused when this node cannot hold its ranks."""
    world = _env_int("WORLD_SIZE", 1, least=1)
    if world == 1:
        return 1
    local = _env_int("LOCAL_WORLD_SIZE", world, least=1)
    rank = _env_int("RANK", 0, least=0)
    if rank >= world:
        raise ValueError(f"RANK: must be in 0..{world - 1} (WORLD_SIZE={world}), got {rank}")
    if not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise ValueError(
            f"WORLD_SIZE: {world} ranks need MASTER_ADDR and MASTER_PORT; launch them with "
            "torchrun --nproc_per_node=N -m nbutils train ..."
        )
    have = usable_ranks(device)
    if local > have:
        kind = "GPU(s)" if device.type == "cuda" else "usable CPU core(s)"
        raise ValueError(
            f"WORLD_SIZE: {local} ranks on this node but only {have} {kind} exist; "
            f"use torchrun --nproc_per_node={have} or fewer"
        )
    return world


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when launched by torchrun, else a single process."""
    if check_world(device) == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def preflight(cfg: RunConfig) -> tuple[torch.device, Dist]:
    """The device and process group of a run, checked before any work starts."""
    device = select_device(cfg.device)
    world = check_world(device)
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size: must be divisible by the {world} ranks (WORLD_SIZE), "
            f"got {cfg.batch_size}"
        )
    return device, init_distributed(device)
