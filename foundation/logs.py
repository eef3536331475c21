"""Logging set-up, called once by each process's `main()`."""
from __future__ import annotations

import logging
import os
import sys
import warnings


def setup_logging(role: str, node: str = "", level: str | None = None) -> None:
    """Configure the root logger with the role and node id in every line, and keep the
    libraries quiet (see `quiet_libraries`)."""
    level = level or os.environ.get("TOKCOM_LOG", "INFO")
    tag = f"{role}:{node}" if node else role
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [{tag}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    quiet_libraries(interactive=sys.stderr.isatty())


def quiet_libraries(interactive: bool) -> None:
    """No weight-loading bars or deprecation chatter from transformers/peft/torch in our logs, and
    progress bars only on a terminal (a child's log file is not one). Set before the libraries are
    imported: tqdm and huggingface read these variables at import."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not interactive:
        os.environ.setdefault("TQDM_DISABLE", "1")
    for module in ("transformers", "peft", "torch", "huggingface_hub"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
