"""The devices a widget offers: auto, cpu, every visible CUDA GPU, and mps where available."""

from __future__ import annotations


def available_devices() -> list[str]:
    """["auto", "cpu", "cuda:0", ..., "mps"] for this machine (imports torch)."""
    import torch

    devices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices
