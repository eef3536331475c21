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
from edge_server.checkpoint import Checkpoints
from edge_server.driver import Driver, ResumeError
from edge_server.guard import NonFiniteStep
from edge_server.rundir import RunDir
from edge_server.step import EdgeNode, pick_device
from foundation.manifest import build_manifest
from foundation.assets import cache_dir, prepare_assets
from launch.inprocess import InProcessTransport

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_reference(cfg: Config, out: str, progress: bool = True, resume: bool = False) -> dict:
    """Both stages and the evaluation; with `resume`, from the run directory's latest checkpoint."""
    latest = Checkpoints(Path(out) / "checkpoints").latest() if resume else None
    if resume and latest is None:
        raise ResumeError(f"--resume: no checkpoint in {Path(out) / 'checkpoints'}; run without --resume, "
                          f"with train.checkpoint_every > 0")
    dataset, (lm, tok) = prepare_assets(cfg)
    cache = cache_dir(cfg)
    users = list(range(cfg.users))
    devices = {(dev.user, m): dev for m in MODALITIES
               for dev in build_devices(cfg, users, m, dataset, cache, foundation=(lm, tok))}
    edge = EdgeNode(cfg, lm, tok, pick_device(cfg.models.device))
    run_dir = RunDir(out, cfg, resume_from=latest[1] if latest else None)
    try:
        driver = Driver(cfg, edge, InProcessTransport(cfg, devices), build_manifest(dataset, cfg.eval.split),
                        run_dir, progress)
        if latest:
            driver.resume(*latest)
        return driver.run()
    finally:
        run_dir.close()


def run(args: argparse.Namespace) -> int:
    from launch.cluster import report  # the same per-link table and summary line as `tokcom run`

    try:
        run_reference(load_config(args.config, args.overrides), args.out, progress=not args.no_progress,
                      resume=args.resume)
    except ResumeError as e:
        log.error("%s", e)
        return 2
    except NonFiniteStep as e:
        log.error("stopping the run: %s", e)
        return 4
    return report(Path(args.out))
