"""`tokcom sweep`: a grid of runs over channel, token length, alignment, tau, inputs and seed.

The grid and the cell names are in `launch.grid`; reading finished runs and results.csv
in `launch.runs`. Each cell is one run with dotted overrides, written to
`OUT/runs/<cell-name>/`.

Resumable: a cell whose run directory holds a summary.json is skipped; a cell that
crashed has none and runs again next time. After each finished cell `OUT/results.csv`
is rewritten with one row per finished run under `OUT/runs/`.

`--jobs N` runs N cells at once, each a `tokcom reference` child with one torch thread
(never more jobs than cores); the caches every cell needs (dataset, tiny LM per seed,
encoder features per token length) are built first, one at a time, so that no two
children build the same cache.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from configs.args import add_config_arguments
from configs.loader import config_digest, load_config
from configs.schema import Config, ConfigError
from launch.grid import AXES, cell_name, cell_overrides, check_cell, expand, full_grid, parse_list
from launch.procs import child_env, tail
from launch.reference import run_reference
from launch.runs import read_config, write_results

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------- runners


@dataclass(frozen=True)
class RunSpec:
    """What a runner needs: the base config file, every override, the run directory."""

    config: str | None
    overrides: tuple[str, ...]
    out: Path


Runner = Callable[[RunSpec], None]


def run_inprocess(spec: RunSpec) -> None:
    """The cell as an in-process reference run."""
    run_reference(load_config(spec.config, spec.overrides), str(spec.out), progress=False)


class ChildRunner:
    """Each cell as `tokcom <command>` in a child process, output in OUT/run.log. Safe to
    call from several threads; `stop()` ends the children still running (SIGTERM, then
    SIGKILL after a grace), through their own handles."""

    GRACE_S = 30

    def __init__(self, command: str, env: dict[str, str]):
        self.command, self.env = command, env
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def __call__(self, spec: RunSpec) -> None:
        argv = [sys.executable, "-m", "launch.cli", self.command, "--out", str(spec.out), "--no-progress"]
        if spec.config:
            argv += ["--config", spec.config]
        for o in spec.overrides:
            argv += ["--set", o]
        spec.out.mkdir(parents=True, exist_ok=True)
        log_path = spec.out / "run.log"
        with open(log_path, "w", encoding="utf-8") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=self.env)
            with self._lock:
                self._live.add(proc)
            try:
                rc = proc.wait()
            finally:
                self._end(proc)
        if rc != 0:
            raise RuntimeError(f"`tokcom {self.command}` exited {rc}; last lines of {log_path}:\n"
                               + "\n".join(tail(log_path)))

    def _end(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:  # interrupted: let the child stop its own children
            proc.terminate()
            try:
                proc.wait(self.GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with self._lock:
            self._live.discard(proc)

    def stop(self) -> None:
        with self._lock:
            live = list(self._live)
        for proc in live:
            self._end(proc)


def cluster_runner() -> ChildRunner:
    """Cells as multi-process clusters (`tokcom run`; per-process logs in OUT/logs/)."""
    return ChildRunner("run", child_env(REPO_ROOT))


def reference_child_runner() -> ChildRunner:
    """Cells as `tokcom reference` children with one torch thread each (for --jobs > 1)."""
    return ChildRunner("reference", {**child_env(REPO_ROOT), **ONE_THREAD})


def warm_caches(configs: list[Config]) -> None:
    """Build, one at a time, every cache the configs' runs read: dataset, LM (per seed)
    and encoder features (per token length and selection)."""
    from device_node.build import build_device
    from foundation.assets import cache_dir, prepare_assets

    done: set[str] = set()
    for cfg in configs:
        lm_key = json.dumps([repr(cfg.data), repr(cfg.models), cfg.seed])
        mods = [(m, getattr(cfg.transmitter, m)) for m in ("audio", "video")]
        feat_keys = [json.dumps([repr(cfg.data), repr(cfg.models), cfg.eval.split, m, repr(tx)]) for m, tx in mods]
        if lm_key in done and all(k in done for k in feat_keys):
            continue
        dataset, foundation = prepare_assets(cfg)
        for (m, _), key in zip(mods, feat_keys):
            if key not in done:
                build_device(cfg, 0, m, dataset, cache_dir(cfg), foundation=foundation)
        done.update([lm_key, *feat_keys])


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepOutcome:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _check_finished(path: Path, want: Config) -> None:
    have = read_config(path / "config.yaml")
    if config_digest(have) != config_digest(want):
        raise ConfigError(f"the finished run {path} was made with a different config than this sweep "
                          f"would use for it; sweep into a new --out, or remove {path} to rerun it")


def write_spec(out: Path, config: str | None, base_overrides: list[str], cells: list[dict[str, Any]],
               users: int, grid: dict[str, list] | None = None) -> None:
    """OUT/sweep.json: the base config, its overrides, the grid (if a product) and every cell."""
    spec = {"config": config, "overrides": list(base_overrides), **({"grid": grid} if grid else {}),
            "cells": {cell_name(c): cell_overrides(c, users) for c in cells}}
    (out / "sweep.json").write_text(json.dumps(spec, indent=2, default=str))


def check_jobs(jobs: int) -> None:
    cores = os.cpu_count() or 1
    if not 1 <= jobs <= cores:
        raise ConfigError(f"--jobs {jobs}: give 1 to {cores} (the number of cores); each job runs one cell "
                          "with one torch thread")


def _completed(names: list[str], one: Callable[[str], None], jobs: int,
               stop: Callable[[], None] | None) -> Iterator[tuple[str, Exception | None]]:
    """Run `one(name)` for each name, `jobs` at a time, yielding (name, error or None) as
    each ends. One job runs in this thread (Ctrl-C reaches the run itself); more run in
    worker threads, and an interruption cancels the waiting cells and calls `stop`."""
    if jobs == 1:
        for name in names:
            try:
                one(name)
            except Exception as e:  # noqa: BLE001 - one crashed cell must not stop the sweep
                yield name, e
            else:
                yield name, None
        return
    pool = ThreadPoolExecutor(jobs)
    futures = {pool.submit(one, name): name for name in names}
    try:
        for fut in as_completed(futures):
            yield futures[fut], fut.exception()
    except BaseException:  # interrupted, or the caller stopped early: end the running cells
        pool.shutdown(wait=False, cancel_futures=True)
        if stop is not None:
            stop()
        raise
    finally:
        pool.shutdown(wait=True)


def run_sweep(config: str | None, base_overrides: list[str], cells: list[dict[str, Any]], out: str | Path,
              runner: Runner = run_inprocess, progress: bool = True, jobs: int = 1,
              warm: Callable[[list[Config]], None] | None = None) -> SweepOutcome:
    """Run every unfinished cell into `out/runs/<cell>/` (`jobs` at a time, `warm` first),
    rewriting results.csv after each."""
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    users = load_config(config, base_overrides).users
    overrides = {cell_name(c): tuple(base_overrides) + tuple(cell_overrides(c, users)) for c in cells}
    resolved = {name: load_config(config, list(o)) for name, o in overrides.items()}  # bad values fail first
    for c in cells:
        check_cell(cell_name(c), c, resolved[cell_name(c)])
    finished = {name for name in overrides if (out / "runs" / name / "summary.json").is_file()}
    for name in finished:  # before running anything: a mismatch means the wrong --out
        _check_finished(out / "runs" / name, resolved[name])
    outcome = SweepOutcome(skipped=[n for n in overrides if n in finished])
    todo = [n for n in overrides if n not in finished]
    if todo and warm is not None:
        log.info("building the caches of %d cells before running them", len(todo))
        warm([resolved[n] for n in todo])
    starts: dict[str, float] = {}

    def one(name: str) -> None:
        starts[name] = time.perf_counter()
        runner(RunSpec(config, overrides[name], out / "runs" / name))

    if finished:
        log.info("%d cells finished earlier, skipped", len(finished))
    with logging_redirect_tqdm(), tqdm(total=len(cells), initial=len(finished), desc="sweep", unit="run",
                                       disable=not progress) as bar, \
            contextlib.closing(_completed(todo, one, jobs, getattr(runner, "stop", None))) as done:
        for name, error in done:
            if error is not None:
                log.error("%s failed (it will run again next time): %s", name, error)
                outcome.failed.append(name)
            else:
                log.info("%s finished in %.0f s", name, time.perf_counter() - starts[name])
                outcome.ran.append(name)
                write_results(out)
            bar.set_postfix_str(name)
            bar.update(1)
    write_results(out)
    return outcome


# ---------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="sweep directory (runs/, results.csv, sweep.json)")
    for a in AXES:
        default = ", ".join(map(str, a.default)) if a.default else "the base config's value"
        p.add_argument(a.option, dest=a.key, metavar="LIST", help=f"{a.what}, e.g. {a.example} (default: {default})")
    p.add_argument("--jobs", type=int, default=1,
                   help="cells run at once, each a child process with one torch thread (at most the core count)")
    p.add_argument("--cluster", action="store_true", help="run each cell as a multi-process cluster (`tokcom run`)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    check_jobs(args.jobs)
    if args.cluster and args.jobs > 1:
        raise ConfigError("--cluster runs several processes per cell already; use it with --jobs 1")
    base = load_config(args.config, args.overrides)
    given = {a.key: parse_list(a, getattr(args, a.key)) for a in AXES if getattr(args, a.key) is not None}
    grid = full_grid(base, given)
    cells = expand(grid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_spec(out, args.config, args.overrides, cells, base.users, grid)
    log.info("sweep of %d cells into %s", len(cells), out / "runs")
    runner = cluster_runner() if args.cluster else reference_child_runner() if args.jobs > 1 else run_inprocess
    outcome = run_sweep(args.config, args.overrides, cells, out, runner, progress=not args.no_progress,
                        jobs=args.jobs, warm=warm_caches if args.jobs > 1 else None)
    sys.stdout.write(f"{len(outcome.ran)} ran, {len(outcome.skipped)} already finished, "
                     f"{len(outcome.failed)} failed; results in {out / 'results.csv'}\n")
    if outcome.failed:
        log.error("failed cells (rerun the same command to retry them): %s", ", ".join(outcome.failed))
        return 1
    return 0
