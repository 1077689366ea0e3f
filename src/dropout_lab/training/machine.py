"""What a run records of the machine and the stack it trained on (the torch-side half of settings.provenance)."""

from __future__ import annotations

import torch

from dropout_lab.settings import provenance
from dropout_lab.settings.provenance import library_versions


def training_versions() -> dict[str, str]:
    """Versions of the training stack (and the CUDA that torch was built with), recorded in each run."""
    versions = library_versions(("torch", "numpy", "hydra-core", "omegaconf"))
    versions["torch"] = torch.__version__  # with its build tag (+cu130, +cpu)
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    return versions


def device_info(device) -> dict[str, object]:
    """The device a run trained on, by name, and the CPU threads torch used."""
    info: dict[str, object] = {"type": device.type, "threads": torch.get_num_threads()}
    info["name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else provenance.cpu_name()
    return info
