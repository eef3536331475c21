"""Logging set-up, called once by each process's `main()`."""
from __future__ import annotations

import logging
import os


def setup_logging(role: str, node: str = "", level: str | None = None) -> None:
    """Configure the root logger with the role and node id in every line."""
    level = level or os.environ.get("TOKCOM_LOG", "INFO")
    tag = f"{role}:{node}" if node else role
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [{tag}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
