"""Shared fixtures: a small tiny-preset config and its cached assets, built once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from configs.loader import load_config

REPO = Path(__file__).resolve().parents[1]

# Small enough that the whole suite builds the dataset and pretrains the LM once in seconds.
SMALL = [
    "data.synthetic.num_clips=96",
    "models.pretrain.steps=60",
    "train.stage1.steps=6",
    "train.stage2.steps=6",
    "eval.max_samples=16",
    "eval.batch=8",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = Path(os.environ.get("TOKCOM_TEST_CACHE") or tmp_path_factory.mktemp("tokcom-cache"))
    os.environ["TOKCOM_CACHE"] = str(path)  # child processes started by tests share it
    return path


@pytest.fixture(scope="session")
def small_overrides(cache_dir) -> list[str]:
    return SMALL + [f"data.cache_dir={cache_dir}"]


@pytest.fixture(scope="session")
def small_cfg(small_overrides):
    return load_config(REPO / "configs" / "tiny.yaml", small_overrides)


@pytest.fixture(scope="session")
def assets(small_cfg):
    from foundation.assets import prepare_assets

    return prepare_assets(small_cfg)  # (dataset, (lm, tokenizer))
