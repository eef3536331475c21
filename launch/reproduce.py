"""`tokcom reproduce`: the documented reproduction; runs its cells and writes docs/results.md.

The cells are `launch.plan.Plan`'s (SNR curve with the noise-free ceiling, Rayleigh,
the equal-rounds alignment control, token lengths, the question-only model), at every
seed, into OUT/runs/ as one resumable sweep (`--jobs` cells at once, one torch thread
each). The document states each claim as a paired difference with a 95 % clip-bootstrap
interval and a verdict (launch.claims). `--quick` runs a few cells at one seed with fewer
steps, for trying it out; `--dry-run` lists the cells and the time they would take.
Nothing is tuned: the runs use the preset's settings and the plan's lists, fixed before
any run, and report on the preset's evaluation split.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from configs.args import add_config_arguments
from configs.loader import load_config
from configs.schema import Config, ConfigError
from launch import claims
from launch.baselines import EvalSet, run_baselines
from launch.evidence import Evidence
from launch.grid import BY_KEY, cell_name, parse_list
from launch.plan import FULL_INPUTS, Plan, quick_plan
from launch.report import cell_section, cost_section, loss_section, tsne_section
from launch.runs import RunRecord, find_runs
from launch.stats import RESAMPLES
from launch.sweep import check_jobs, reference_child_runner, run_inprocess, run_sweep, warm_caches, write_spec

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_OVERRIDES = ["eval.probe_samples=48"]  # pooled features for the t-SNE; cheap
QUICK_OVERRIDES = ["train.stage1.steps=30", "train.stage2.steps=100", "eval.max_samples=96"]
# Minutes per run on one thread until finished runs tell better: measured 55 ms per round
# (s = 32, a loaded 2-core machine) x 3200 rounds + ~5 ms per test question + start-up.
GUESS_RUN_MIN = 3.5


def estimate(out: Path, cells: list[dict], jobs: int) -> str:
    """Cells still to run and the time they would take, from finished runs' wall time."""
    runs = find_runs(out)
    left = len(cells) - sum(r.name in {cell_name(c) for c in cells} for r in runs)
    per = sum(r.summary["wall_s"] for r in runs) / len(runs) / 60 if runs else GUESS_RUN_MIN
    source = f"the mean of {len(runs)} finished runs" if runs else "a guess; no run has finished yet"
    return (f"{left} of {len(cells)} cells to run; at {per:.1f} min per run ({source}) and {jobs} at once: "
            f"about {left * per / jobs / 60:.1f} h")


def write_doc(doc: Path, plan: Plan, cfg: Config, command: str, overrides: list[str], runs: list[RunRecord],
              elapsed_s: float, quick: bool) -> Path:
    figdir = doc.parent / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    ev = Evidence(runs, EvalSet(cfg), RESAMPLES)
    prior = run_baselines(runs[0])
    at_ref = [r for r in runs if r.values["snr_db"] == plan.ref_snr and r.values["fading"] == "awgn"
              and r.values["inputs"] == FULL_INPUTS]
    sections = [claims.snr_figure(plan, ev, prior, figdir), loss_section(at_ref, figdir),
                cost_section([r for r in at_ref if r.values["align"] == "aligned"], figdir),
                tsne_section(runs, figdir), cell_section(runs)]
    rel = os.path.relpath(figdir, doc.parent)
    for sec in sections:
        sec.figure = f"{rel}/{sec.figure}" if sec.figure else None
    tr, ev_cfg = cfg.train, cfg.eval
    n_questions = runs[0].summary["accuracy"]["n"]
    head = [
        "# Results: token communication on the tiny preset" + (" (QUICK MODE: not the reproduction)" if quick else ""),
        "",
        "Made by one command (resumable; rerun it after an interruption):", "", f"    {command}", "",
        f"- Config: the base config with overrides `{' '.join(overrides) or '(none)'}`; every run's resolved config "
        "is in its run directory, its TensorBoard events under `tb/`.",
        f"- Seeds: {', '.join(map(str, plan.seeds))}. tau {plan.tau:g}. Stage 1: {tr.stage1.steps} rounds, stage 2: "
        f"{tr.stage2.steps} rounds, batch {tr.stage2.batch}, lr {tr.stage2.lr:g}. Evaluation: {n_questions} "
        f"questions of the {ev_cfg.split} split, greedy generation, exact match.",
        f"- Channel: the SNR and fading of every user's audio and video links vary; the question's text link stays "
        f"at {runs[0].values['text_snr_db']:g} dB AWGN.",
        f"- Runs: {len(runs)}. Wall time: {sum(r.summary['wall_s'] for r in runs) / 60:.1f} min summed over the "
        f"runs' training and evaluation; this invocation took {elapsed_s / 60:.1f} min (runs finished by an earlier "
        "invocation were skipped).",
        "- Nothing was tuned on the test split: every setting is the preset's or the plan's, fixed before any run; "
        "the test split is used only for the numbers below. Data are the generated MUSIC-AVQA / VALOR-like set and "
        "the models the tiny random-init ones: the claims are checked on this data, not on the paper's.",
        "", "## Claims", "", claims.verdict_rule(), "",
        claims.alignment(plan, ev), "", claims.snr(plan, ev), "", claims.tokens(plan, ev), "",
        claims.baselines(plan, ev, prior), "", "## Figures and tables", "",
    ]
    doc.write_text("\n".join(head + [s.markdown(level=3) for s in sections]), encoding="utf-8")
    return doc


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="folder for the runs (OUT/runs/, OUT/results.csv)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of run seeds (default 0,1,2; at least 3 for verdicts)")
    p.add_argument("--doc", help="markdown file to write (default docs/results.md; with --quick OUT/results.md); "
                                 "figures go to figures/ beside it")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="cells at once, one torch thread each (default: 2, or 1 on one core; at most the core count)")
    p.add_argument("--quick", action="store_true", help="1 seed, a few cells, fewer steps: for trying it out")
    p.add_argument("--dry-run", action="store_true", help="list the cells and the time they would take; run nothing")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def command_line(args: argparse.Namespace) -> str:
    """The command as a user would type it, for the document."""
    parts = ["tokcom reproduce", "--out", str(args.out), "--seeds", args.seeds]
    if args.quick:
        parts.append("--quick")
    if args.config:
        parts += ["--config", args.config]
    for o in args.overrides:
        parts += ["--set", o]
    if args.doc:
        parts += ["--doc", args.doc]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    check_jobs(args.jobs)
    seeds = tuple(parse_list(BY_KEY["seed"], args.seeds))
    plan = quick_plan(seeds) if args.quick else Plan(seeds=seeds)
    overrides = BASE_OVERRIDES + (QUICK_OVERRIDES if args.quick else []) + list(args.overrides)
    cfg = load_config(args.config, overrides)
    if cfg.train.stage1.steps == 0:
        raise ConfigError("the reproduction compares aligned and unaligned stage 1; keep train.stage1.steps > 0")
    out = Path(args.out)
    cells = plan.cells()
    if args.dry_run:
        for group, members in plan.groups().items():
            sys.stdout.write(f"{group}: {len(members)} runs\n")
        sys.stdout.write(estimate(out, cells, args.jobs) + "\n")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    write_spec(out, args.config, overrides, cells, cfg.users)
    log.info("%s", estimate(out, cells, args.jobs))
    runner = reference_child_runner() if args.jobs > 1 else run_inprocess
    outcome = run_sweep(args.config, overrides, cells, out, runner, progress=not args.no_progress, jobs=args.jobs,
                        warm=warm_caches if args.jobs > 1 else None)
    if outcome.failed:
        log.error("%d runs failed (%s); rerun the same command to retry them", len(outcome.failed),
                  ", ".join(outcome.failed))
        return 1
    names = {cell_name(c) for c in cells}  # the folder may hold other runs; report the planned ones only
    runs = [r for r in find_runs(out) if r.name in names]
    doc = Path(args.doc) if args.doc else (out / "results.md" if args.quick else REPO_ROOT / "docs" / "results.md")
    write_doc(doc, plan, cfg, command_line(args), overrides, runs, time.perf_counter() - t0, args.quick)
    sys.stdout.write(f"results written to {doc} (figures in {doc.parent / 'figures'})\n")
    return 0
