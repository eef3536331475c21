"""`tokcom sweep`: a grid of runs over channel, token-length, alignment, tau and seed.

Every grid option is a comma list; an option not given keeps the base config's single
value, and the grid is the cartesian product. Each cell is one run with dotted
overrides, written to `OUT/runs/<cell-name>/` (e.g. `snr10_awgn_a32_v32_aligned_tau0.07_seed0`).
"unaligned" means stage 1 is skipped (`train.stage1.steps=0`); the stage-2 rounds stay equal.

Resumable: a cell whose run directory holds a summary.json is skipped; a cell that
crashed has none and runs again next time. After each finished cell `OUT/results.csv`
is rewritten with one row per finished run under `OUT/runs/` (values read back from
each run's own config.yaml, so the table is right whatever grid produced the runs).

Uplink cost per sample: over the device->relay uplink entries of links.json (the
separate "(labels)" line excluded), sum payload_bytes / samples and channel_uses /
samples over a user's links, averaged over users: the cost of sending one clip from
all of a user's devices (audio + video + text).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from configs.schema import Config, ConfigError
from configs.loader import config_digest, config_from_dict, load_config
from foundation.data import QTYPE_GROUPS, QTYPES
from launch.procs import child_env, tail
from configs.args import add_config_arguments
from launch.reference import run_reference

log = logging.getLogger(__name__)

ALIGN_VALUES = ("aligned", "unaligned")
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- grid axes


def _align_of(cfg: Config) -> str:
    return "aligned" if cfg.train.stage1.steps > 0 else "unaligned"


def _parse_align(text: str) -> str:
    if text not in ALIGN_VALUES:
        raise ValueError(f"'{text}' is neither 'aligned' nor 'unaligned'")
    return text


@dataclass(frozen=True)
class Axis:
    """One grid dimension: its CLI option, how to parse a value, read it from a config,
    turn it into overrides and into a part of the cell name."""

    key: str
    option: str
    parse: Callable[[str], Any]
    of_config: Callable[[Config], Any]
    overrides: Callable[[Any], list[str]]
    label: Callable[[Any], str]
    what: str
    example: str


AXES: tuple[Axis, ...] = (
    Axis("snr_db", "--snr-db", float, lambda c: c.channel.snr_db,
         lambda v: [f"channel.snr_db={float(v)!r}"], lambda v: f"snr{v:g}", "SNRs in dB", "0,3,6,10,15"),
    Axis("fading", "--fading", str, lambda c: c.channel.fading,
         lambda v: [f"channel.fading={v}"], str, "fading models", "awgn,rayleigh,rician"),
    Axis("audio_tokens", "--audio-tokens", int, lambda c: c.transmitter.audio.tokens,
         lambda v: [f"transmitter.audio.tokens={v}"], lambda v: f"a{v}", "audio token lengths s_A", "16,32,64,128"),
    Axis("video_tokens", "--video-tokens", int, lambda c: c.transmitter.video.tokens,
         lambda v: [f"transmitter.video.tokens={v}"], lambda v: f"v{v}", "video token lengths s_V", "16,32,64,128"),
    Axis("align", "--align", _parse_align, _align_of,
         lambda v: ["train.stage1.steps=0"] if v == "unaligned" else [], str,
         "aligned (stage 1 runs) and/or unaligned (stage 1 skipped)", "aligned,unaligned"),
    Axis("tau", "--tau", float, lambda c: c.train.tau,
         lambda v: [f"train.tau={float(v)!r}"], lambda v: f"tau{v:g}", "InfoNCE temperatures", "0.03,0.07,0.13"),
    Axis("seed", "--seeds", int, lambda c: c.seed, lambda v: [f"seed={v}"], lambda v: f"seed{v}",
         "run seeds", "0,1,2"),
)
AXIS_KEYS = tuple(a.key for a in AXES)
_BY_KEY = {a.key: a for a in AXES}


def parse_list(axis: Axis, text: str) -> list:
    """'0,3,6' -> [0.0, 3.0, 6.0] for the axis' type; duplicates dropped, order kept."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{axis.option} needs at least one value; give a comma list such as {axis.example}")
    try:
        values = [axis.parse(t) for t in items]
    except ValueError as e:
        raise ConfigError(f"{axis.option} '{text}': {e}; give a comma list such as {axis.example}") from None
    return list(dict.fromkeys(values))


def full_grid(base: Config, given: dict[str, list]) -> dict[str, list]:
    """Every axis with its values: the given lists, else the base config's single value."""
    unknown = set(given) - set(AXIS_KEYS)
    if unknown:
        raise ConfigError(f"unknown sweep axes {sorted(unknown)}; known: {list(AXIS_KEYS)}")
    return {a.key: list(given[a.key]) if a.key in given else [a.of_config(base)] for a in AXES}


def expand(grid: dict[str, list]) -> list[dict[str, Any]]:
    """The cartesian product, axes in AXES order, last axis fastest."""
    return [dict(zip(AXIS_KEYS, combo)) for combo in itertools.product(*(grid[k] for k in AXIS_KEYS))]


def cell_name(cell: dict[str, Any]) -> str:
    """A readable directory name, e.g. 'snr10_awgn_a32_v32_aligned_tau0.07_seed0'."""
    return "_".join(_BY_KEY[k].label(cell[k]) for k in AXIS_KEYS)


def cell_overrides(cell: dict[str, Any]) -> list[str]:
    return [o for k in AXIS_KEYS for o in _BY_KEY[k].overrides(cell[k])]


def unique_cells(cells: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells in order with repeats (same name) dropped: grids may overlap."""
    return list({cell_name(c): c for c in cells}.values())


# ---------------------------------------------------------------- reading runs


def uplink_per_sample(links: list[dict]) -> dict[str, float]:
    """Payload bytes and channel uses to send one clip from all of a user's devices."""
    per_user: dict[str, dict[str, float]] = {}
    for e in links:
        if e["direction"] != "uplink" or not e["link"].endswith("->relay") or "(labels)" in e["link"]:
            continue
        if not e["samples"]:
            continue
        user = e["link"].split("/", 1)[0]
        acc = per_user.setdefault(user, {"payload_bytes_per_sample": 0.0, "channel_uses_per_sample": 0.0})
        acc["payload_bytes_per_sample"] += e["payload_bytes"] / e["samples"]
        acc["channel_uses_per_sample"] += e["channel_uses"] / e["samples"]
    if not per_user:
        return {"payload_bytes_per_sample": float("nan"), "channel_uses_per_sample": float("nan")}
    return {k: sum(u[k] for u in per_user.values()) / len(per_user)
            for k in ("payload_bytes_per_sample", "channel_uses_per_sample")}


def run_values(cfg: Config) -> dict[str, Any]:
    """The grid values a run's config has, plus its LM inputs ('audio+video+text')."""
    return {**{a.key: a.of_config(cfg) for a in AXES}, "inputs": "+".join(cfg.transmitter.order)}


@dataclass
class RunRecord:
    """A finished run directory, read back."""

    name: str
    path: Path
    cfg: Config
    summary: dict
    links: list[dict]
    values: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.values = run_values(self.cfg)

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def has_probes(self) -> bool:
        return (self.path / "probe_before.pt").is_file() and (self.path / "probe_after.pt").is_file()

    def is_cluster(self) -> bool:
        """A multi-process run: its links carry measured latencies."""
        return any(e.get("latency_ms", {}).get("p50") is not None for e in self.links)


def read_config(path: Path) -> Config:
    try:
        return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}; this run was written by another version of tokcom, "
                          f"rerun it or remove it") from None


def load_run(path: str | Path) -> RunRecord | None:
    """The run in `path`, or None when it has not finished (no summary.json)."""
    path = Path(path)
    if not (path / "summary.json").is_file():
        return None
    links_path = path / "links.json"
    links = json.loads(links_path.read_text()) if links_path.is_file() else []
    return RunRecord(path.name, path, read_config(path / "config.yaml"),
                     json.loads((path / "summary.json").read_text()), links)


def find_runs(sweep_dir: str | Path) -> list[RunRecord]:
    """Every finished run under `sweep_dir/runs/`, ordered by grid values (numbers numerically)."""
    root = Path(sweep_dir) / "runs"
    runs = [load_run(p) for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []
    return sorted((r for r in runs if r is not None),
                  key=lambda r: (*(r.values[k] for k in AXIS_KEYS), r.values["inputs"], r.name))


RESULT_COLUMNS = ["run", *AXIS_KEYS, "inputs", "accuracy", "n", *(f"acc_{q}" for q in QTYPES),
                  *(f"acc_{g}" for g in QTYPE_GROUPS), "payload_bytes_per_sample", "channel_uses_per_sample",
                  "stage1_steps", "stage2_steps", "stage2_loss_last", "wall_s"]


def result_row(run: RunRecord) -> dict[str, Any]:
    """One results.csv row; a question type absent from the evaluation is left empty."""
    acc, s = run.summary["accuracy"], run.summary
    row: dict[str, Any] = {"run": run.name, **run.values, "accuracy": acc["overall"], "n": acc["n"]}
    for k in (*QTYPES, *QTYPE_GROUPS):
        row[f"acc_{k}"] = acc.get(k, "")
    row.update(uplink_per_sample(run.links))
    row["stage1_steps"] = s["steps"]["stage1"]
    row["stage2_steps"] = s["steps"]["stage2"]
    row["stage2_loss_last"] = s.get("loss", {}).get("stage2", {}).get("last", "")
    row["wall_s"] = s["wall_s"]
    return row


def write_results(sweep_dir: str | Path) -> Path:
    """(Re)write `sweep_dir/results.csv` from every finished run; returns its path."""
    path = Path(sweep_dir) / "results.csv"
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        for run in find_runs(sweep_dir):
            w.writerow(result_row(run))
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- running


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


def run_as_cluster(spec: RunSpec) -> None:
    """The cell as a multi-process cluster: `tokcom run` in a child process (its
    output goes to OUT/run.log; the cluster's own per-process logs to OUT/logs/)."""
    argv = [sys.executable, "-m", "launch.cli", "run", "--out", str(spec.out), "--no-progress"]
    if spec.config:
        argv += ["--config", spec.config]
    for o in spec.overrides:
        argv += ["--set", o]
    spec.out.mkdir(parents=True, exist_ok=True)
    log_path = spec.out / "run.log"
    with open(log_path, "w", encoding="utf-8") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=child_env(REPO_ROOT))
        try:
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: let the launcher stop its own children
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if rc != 0:
        raise RuntimeError(f"`tokcom run` exited {rc}; last lines of {log_path}:\n" + "\n".join(tail(log_path)))


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
               grid: dict[str, list] | None = None) -> None:
    """OUT/sweep.json: the base config, its overrides, the grid (if a product) and every cell."""
    spec = {"config": config, "overrides": list(base_overrides), **({"grid": grid} if grid else {}),
            "cells": {cell_name(c): cell_overrides(c) for c in cells}}
    (out / "sweep.json").write_text(json.dumps(spec, indent=2))


def run_sweep(config: str | None, base_overrides: list[str], cells: list[dict[str, Any]], out: str | Path,
              runner: Runner = run_inprocess, progress: bool = True) -> SweepOutcome:
    """Run every unfinished cell into `out/runs/<cell>/`, rewriting results.csv after each."""
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    overrides = {cell_name(c): tuple(base_overrides) + tuple(cell_overrides(c)) for c in cells}
    resolved = {name: load_config(config, list(o)) for name, o in overrides.items()}  # bad values fail first
    for c in cells:
        if c["align"] == "aligned" and resolved[cell_name(c)].train.stage1.steps == 0:
            raise ConfigError(f"cell {cell_name(c)} is 'aligned' but the base config has train.stage1.steps=0; "
                              f"set --set train.stage1.steps=N (N > 0) or sweep --align unaligned")
    finished = {name for name in overrides if (out / "runs" / name / "summary.json").is_file()}
    for name in finished:  # before running anything: a mismatch means the wrong --out
        _check_finished(out / "runs" / name, resolved[name])
    outcome = SweepOutcome()
    with logging_redirect_tqdm(), tqdm(total=len(cells), desc="sweep", unit="run", disable=not progress) as bar:
        for name in overrides:
            path = out / "runs" / name
            if name in finished:
                log.info("%s: finished earlier, skipped", name)
                outcome.skipped.append(name)
                bar.update(1)
                continue
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            try:
                runner(RunSpec(config, overrides[name], path))
            except Exception as e:  # noqa: BLE001 - one crashed cell must not stop the sweep
                log.error("%s failed (it will run again next time): %s", name, e)
                outcome.failed.append(name)
            else:
                log.info("%s finished in %.0f s", name, time.perf_counter() - t0)
                outcome.ran.append(name)
                write_results(out)
            bar.update(1)
    write_results(out)
    return outcome


# ---------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="sweep directory (runs/, results.csv, sweep.json)")
    for a in AXES:
        p.add_argument(a.option, dest=a.key, metavar="LIST",
                       help=f"{a.what}, e.g. {a.example} (default: the base config's value)")
    p.add_argument("--cluster", action="store_true", help="run each cell as a multi-process cluster (`tokcom run`)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    base = load_config(args.config, args.overrides)
    given = {a.key: parse_list(a, getattr(args, a.key)) for a in AXES if getattr(args, a.key) is not None}
    grid = full_grid(base, given)
    cells = expand(grid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_spec(out, args.config, args.overrides, cells, grid)
    log.info("sweep of %d cells into %s", len(cells), out / "runs")
    outcome = run_sweep(args.config, args.overrides, cells, out, run_as_cluster if args.cluster else run_inprocess,
                        progress=not args.no_progress)
    sys.stdout.write(f"{len(outcome.ran)} ran, {len(outcome.skipped)} already finished, "
                     f"{len(outcome.failed)} failed; results in {out / 'results.csv'}\n")
    if outcome.failed:
        log.error("failed cells (rerun the same command to retry them): %s", ", ".join(outcome.failed))
        return 1
    return 0
