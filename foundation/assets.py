"""What every role needs on disk before a run: the dataset (generated on first use),
the tokenizer and the foundation LM (the tiny one pretrained and cached)."""
from __future__ import annotations

import logging
from pathlib import Path

from configs.schema import Config
from foundation.data import default_cache_dir, open_dataset
from foundation.lm import load_foundation

log = logging.getLogger(__name__)


def cache_dir(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()


def prepare_assets(cfg: Config):
    """Dataset plus (LM, tokenizer), built once and cached. Returns (dataset, (lm, tok))."""
    cache = cache_dir(cfg)
    dataset = open_dataset(cfg.data, cache)
    return dataset, load_foundation(cfg.models, dataset, cache, cfg.seed)
