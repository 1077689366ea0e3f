"""`scale: auto`, the scale chosen for the machine the training jobs will run on: paper where they find a GPU,
quick on a CPU (the paper scale would take weeks there). An explicit scale is always obeyed."""

from __future__ import annotations

from typing import Any

from dropout_lab.planning.packs import gpu_visible

AUTO = "auto"


def resolve_scale(config: dict[str, Any]) -> str:
    """Replace scale `auto` in `config` (in place) by the scale for this machine; return the sentence that says
    which and why, empty for a scale that was asked for by name."""
    if config.get("scale") != AUTO:
        return ""
    if gpu_visible(str(config.get("device", "auto"))):
        config["scale"] = "paper"
        return "scale=auto chose paper: the training jobs will find a GPU"
    config["scale"] = "quick"
    return ("scale=auto chose quick: no GPU was found (the paper scale needs one; run it on a GPU host, through "
            "the SLURM GPU profile, or ask for it with scale=paper)")
