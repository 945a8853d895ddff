"""Device and precision: which device a run uses, and bf16 autocast where it is fast."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_instruction_set() -> str:
    """The widest vector extension of this CPU that changes our numbers: bf16 autocast runs
    natively on AVX-512 BF16 / AMX and its kernels differ from AVX2's."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    for name in ("amx_bf16", "avx512_bf16", "avx512f", "avx2"):
        if name in flags:
            return name
    return "other"


def environment(device: torch.device) -> dict[str, object]:
    """What besides the configuration decides a run's numbers: hardware, threads, torch."""
    return {"device": device_name(device), "cpu_model": cpu_model(),
            "cpu_instruction_set": cpu_instruction_set(),
            # The kernels torch dispatches to on this CPU (e.g. AVX512, AVX2).
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None}


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it ('unknown' elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else "unknown"


def select_device(name: str) -> torch.device:
    """The device for `name` ('auto' picks this process's GPU when one is present)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device: 'cuda' was asked for but no GPU is available; allowed here: auto, cpu"
        )
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 for autocast when asked for, or on 'auto' where the hardware runs it fast."""
    if amp == "off":
        return None
    if amp == "bf16" or device.type == "cuda" or cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast context for `dtype`, or a no-op."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def device_name(device: torch.device) -> str:
    """The hardware a run used, in words."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
