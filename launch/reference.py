"""`tokcom reference`: both stages and the evaluation in one process.

Calls the same device-side and edge-side step functions, and the same round loop,
as the multi-process cluster; only the transport differs (`launch.inprocess`).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from configs.args import add_config_arguments
from configs.schema import MODALITIES, Config
from configs.loader import load_config
from device_node.build import build_devices
from edge_server.driver import Driver
from edge_server.rundir import RunDir
from edge_server.step import EdgeNode, pick_device
from foundation.manifest import build_manifest
from foundation.assets import cache_dir, prepare_assets
from launch.inprocess import InProcessTransport

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_reference(cfg: Config, out: str, progress: bool = True) -> dict:
    dataset, (lm, tok) = prepare_assets(cfg)
    cache = cache_dir(cfg)
    users = list(range(cfg.users))
    devices = {(dev.user, m): dev for m in MODALITIES
               for dev in build_devices(cfg, users, m, dataset, cache, foundation=(lm, tok))}
    edge = EdgeNode(cfg, lm, tok, pick_device(cfg.models.device))
    run_dir = RunDir(out, cfg)
    try:
        driver = Driver(cfg, edge, InProcessTransport(cfg, devices), build_manifest(dataset, cfg.eval.split),
                        run_dir, progress)
        return driver.run()
    finally:
        run_dir.close()


def run(args: argparse.Namespace) -> int:
    from launch.cluster import report  # the same per-link table and summary line as `tokcom run`

    run_reference(load_config(args.config, args.overrides), args.out, progress=not args.no_progress)
    return report(Path(args.out))
