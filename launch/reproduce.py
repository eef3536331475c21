"""`tokcom reproduce`: the documented reproduction; runs its sweep and writes docs/results.md.

The plan (tiny preset, AWGN, tau 0.07, every seed given):
- (a)/(b) SNR in {0, 5, 10, 15} dB x {aligned, unaligned}, s_A = s_V = 32;
- (c) s_A = s_V in {8, 16, 32, 64} at 10 dB, aligned (32 is shared with (a));
- the question-only baseline: 10 dB, aligned, s = 32, with `transmitter.order=[text]`;
- the majority baseline: the most frequent train answer per question type, scored on
  the evaluation split straight from the dataset (no run).
With 3 seeds that is 33 runs in OUT/sweep and 3 in OUT/question_only, both resumable.
`--quick` keeps 1 seed, SNR {0, 10}, s in {8, 32} and fewer steps, for trying it out.
Nothing is tuned: the runs use the preset's settings and report on its evaluation split.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs.schema import Config, ConfigError
from configs.loader import load_config
from launch.report import (Section, cell_section, cost_section, fmt, loss_section, mean_std, snr_section, table,
                           tsne_section)
from launch.sweep import (AXES, RunRecord, cell_name, find_runs, parse_list, run_inprocess, run_sweep,
                          unique_cells, write_spec)
from configs.args import add_config_arguments

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_OVERRIDES = ["eval.probe_samples=48"]  # t-SNE probes; cheap
QUICK_OVERRIDES = ["train.stage1.steps=30", "train.stage2.steps=100", "eval.max_samples=96"]
QUESTION_ONLY = "transmitter.order=[text]"


@dataclass(frozen=True)
class Plan:
    seeds: tuple[int, ...]
    snrs: tuple[float, ...]
    tokens: tuple[int, ...]
    ref_snr: float = 10.0
    ref_tokens: int = 32
    fading: str = "awgn"
    tau: float = 0.07
    taus: tuple[float, ...] = (0.03, 0.07, 0.13)  # t-SNE per tau: one extra aligned run each, first seed

    def _cell(self, snr: float, s: int, align: str, seed: int) -> dict:
        return {"snr_db": snr, "fading": self.fading, "audio_tokens": s, "video_tokens": s, "align": align,
                "tau": self.tau, "seed": seed}

    def main_cells(self) -> list[dict]:
        snr_cells = [self._cell(snr, self.ref_tokens, al, seed) for snr in self.snrs
                     for al in ("aligned", "unaligned") for seed in self.seeds]
        token_cells = [self._cell(self.ref_snr, s, "aligned", seed) for s in self.tokens for seed in self.seeds]
        tau_cells = [{**self._cell(self.ref_snr, self.ref_tokens, "aligned", self.seeds[0]), "tau": t}
                     for t in self.taus]
        return unique_cells(snr_cells + token_cells + tau_cells)

    def question_only_cells(self) -> list[dict]:
        return [self._cell(self.ref_snr, self.ref_tokens, "aligned", seed) for seed in self.seeds]


def make_plan(seeds: list[int], quick: bool) -> Plan:
    if quick:
        return Plan(tuple(seeds[:1]), (0.0, 10.0), (8, 32), taus=(0.07,))
    return Plan(tuple(seeds), (0.0, 5.0, 10.0, 15.0), (8, 16, 32, 64))


def majority_baseline(cfg: Config) -> dict:
    """Most frequent train answer per question type, scored on the evaluation split."""
    from edge_server.evaluate import Scorer
    from foundation.data import open_dataset
    from foundation.tokenizer import normalize_answer
    from foundation.assets import cache_dir

    dataset = open_dataset(cfg.data, cache_dir(cfg))
    train = dataset.questions("train")
    overall = Counter(normalize_answer(q.answer) for q in train)
    by_type: dict[str, Counter] = {}
    for q in train:
        by_type.setdefault(q.qtype, Counter())[normalize_answer(q.answer)] += 1
    top = lambda c: sorted(c, key=lambda a: (-c[a], a))[0]  # noqa: E731 - ties: alphabetical
    guess = {t: top(c) for t, c in by_type.items()}
    questions = dataset.questions(cfg.eval.split)[: cfg.eval.max_samples or None]
    scorer = Scorer()
    scorer.add(0, [q.qtype for q in questions], [guess.get(q.qtype, top(overall)) for q in questions],
               [q.answer for q in questions])
    return {**scorer.summary(), "answers": guess}


# ---------------------------------------------------------------- claims


def _verdict(hits: int, total: int, unit: str) -> str:
    """'**holds** (3 of 3 SNRs)', '**does not hold** (0 of 3 SNRs)' or '**partly holds** (1 of 3 SNRs)'."""
    if total == 0:
        return "**cannot be judged** (no data)"
    word = "holds" if hits == total else "does not hold" if hits == 0 else "partly holds"
    return f"**{word}** ({hits} of {total} {unit})"


def _by_seed(runs: list[RunRecord], **fixed) -> dict[int, float]:
    return {r.values["seed"]: r.summary["accuracy"]["overall"] for r in runs
            if all(r.values[k] == v for k, v in fixed.items())}


def claim_alignment(runs: list[RunRecord], plan: Plan) -> str:
    rows, hits, within = [], 0, []
    for snr in plan.snrs:
        al, un = _by_seed(runs, snr_db=snr, align="aligned"), _by_seed(runs, snr_db=snr, align="unaligned")
        ma, sa, _ = mean_std(al.values())
        mu, su, _ = mean_std(un.values())
        paired = [al[s] - un[s] for s in al if s in un]
        md, sd, n = mean_std(paired)
        hits += ma > mu
        if n > 1 and abs(md) <= sd:
            within.append(f"{snr:g}")
        rows.append([f"{snr:g}", fmt(ma, sa), fmt(mu, su), fmt(ma - mu), fmt(md, sd) + f" (n={n})",
                     f"{sum(d > 0 for d in paired)}/{n}"])
    note = (f" At SNR {', '.join(within)} dB the mean paired difference is within one standard deviation of "
            "its seed-to-seed spread, so the sign there is not established by these seeds." if within else "")
    return ("### (a) Alignment helps at equal token lengths and rounds\n\n"
            f"Paper: the aligned model beats the unaligned one by 7.3 (0 dB) to 13.7 points (6 dB). Here, "
            f"s_A = s_V = {plan.ref_tokens}, the same stage-2 rounds, AWGN; 'unaligned' skips stage 1. "
            f"Aligned has the higher mean accuracy: {_verdict(hits, len(plan.snrs), 'SNRs')}.{note}\n\n"
            + table(["SNR (dB)", "aligned", "unaligned", "difference of means", "paired difference (per seed)",
                     "seeds where aligned wins"], rows))


def claim_snr(runs: list[RunRecord], plan: Plan) -> str:
    rows, hits = [], 0
    for align in ("aligned", "unaligned"):
        pts = [(r.values["snr_db"], r.summary["accuracy"]["overall"]) for r in runs if r.values["align"] == align]
        if len({p[0] for p in pts}) < 2:
            continue
        x, y = np.array(pts).T
        slope = float(np.polyfit(x, y, 1)[0])
        means = [mean_std(y[x == s])[0] for s in plan.snrs]
        monotone = all(b >= a for a, b in zip(means, means[1:]))
        ok = slope > 0 and means[-1] > means[0]
        hits += ok
        rows.append([align, " → ".join(fmt(m) for m in means), f"{100 * slope:+.2f}", "yes" if monotone else "no"])
    return ("### (b) Accuracy rises with SNR\n\n"
            f"Accuracy at SNR {', '.join(f'{s:g}' for s in plan.snrs)} dB (mean over seeds), and the least-squares "
            f"slope over every run. The claim (positive slope, higher accuracy at the highest SNR than at the "
            f"lowest): {_verdict(hits, len(rows), 'models')}.\n\n"
            + table(["model", "mean accuracy by SNR", "slope (points / dB)", "monotone"], rows))


def claim_tokens(loss: Section, cost: Section, plan: Plan) -> str:
    rows, mean_loss, acc = [], [], []
    for s in plan.tokens:
        lrec = loss.data.get(f"s_A={s}, s_V={s} aligned")
        crec = cost.data.get((s, s))
        if lrec is None or crec is None:
            continue
        mean_loss.append(lrec["mean"])
        acc.append(crec["accuracy"][0])
        rows.append([s, f"{crec['channel_uses_per_sample']:.0f}", fmt(lrec["mean"]), fmt(lrec["final"]),
                     fmt(*crec["accuracy"][:2])])
    pairs = len(rows) - 1
    faster = sum(b < a for a, b in zip(mean_loss, mean_loss[1:]))
    better = sum(b > a for a, b in zip(acc, acc[1:]))
    best = plan.tokens[int(np.argmax(acc))] if acc else None
    return ("### (c) Longer token sequences converge faster and answer better, at a higher cost\n\n"
            f"Paper: longer token sequences lower the training loss faster, and accuracy grows with length "
            f"(s_A = 64, s_V = 32 best). Here s_A = s_V at {plan.ref_snr:g} dB, aligned. Each longer setting has a "
            "lower mean stage-2 loss over the rounds (faster convergence): "
            f"{_verdict(faster, pairs, 'steps up in length')}; "
            f"a higher accuracy: {_verdict(better, pairs, 'steps up')}. Best accuracy at s = {best}.\n\n"
            + table(["s_A = s_V", "channel uses / sample", "mean stage-2 loss", "final stage-2 loss", "accuracy"],
                    rows))


def claim_baselines(runs: list[RunRecord], qonly: list[RunRecord], majority: dict, plan: Plan) -> str:
    full = [r for r in runs if r.values["snr_db"] == plan.ref_snr and r.values["align"] == "aligned"
            and r.values["audio_tokens"] == plan.ref_tokens and r.values["video_tokens"] == plan.ref_tokens]
    groups = ("overall", "Audio", "Visual", "Audio-Visual")
    stat = lambda rs, k: mean_std(r.summary["accuracy"].get(k, float("nan")) for r in rs)  # noqa: E731
    rows = [[f"audio + video + question (aligned, s = {plan.ref_tokens}, {plan.ref_snr:g} dB)", len(full),
             *(fmt(*stat(full, k)[:2]) for k in groups)],
            ["question only (same, `transmitter.order=[text]`)", len(qonly),
             *(fmt(*stat(qonly, k)[:2]) for k in groups)],
            ["majority answer per question type (train split)", "-",
             *(fmt(majority.get(k, float("nan"))) for k in groups)]]
    m_full, m_q = stat(full, "overall")[0], stat(qonly, "overall")[0]
    hits = int(m_full > m_q) + int(m_full > majority["overall"])
    return ("### Baselines\n\n"
            "The full model should beat both a model that never sees the audio or video and the best "
            f"answer-prior guess. It beats them: {_verdict(hits, 2, 'baselines')}; accuracy: full "
            f"{fmt(m_full)}, question-only {fmt(m_q)}, majority {fmt(majority['overall'])}.\n\n"
            + table(["system", "seeds", *groups], rows)
            + "\n\nMajority answers: " + ", ".join(f"{t}: {a}" for t, a in sorted(majority["answers"].items())))


# ---------------------------------------------------------------- the document


def _embed(sec: Section, rel: str) -> Section:
    if sec.figure:
        sec.figure = f"{rel}/{sec.figure}"
    return sec


def write_doc(doc: Path, plan: Plan, cfg: Config, command: str, config: str | None, overrides: list[str],
              runs: list[RunRecord], qonly: list[RunRecord], majority: dict, elapsed_s: float, quick: bool) -> Path:
    figdir = doc.parent / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(figdir, doc.parent)
    every_tau, runs = runs, [r for r in runs if r.values["tau"] == plan.tau]  # other taus: t-SNE only
    at_ref_snr = [r for r in runs if r.values["snr_db"] == plan.ref_snr]
    at_ref_tokens = [r for r in runs if r.values["audio_tokens"] == plan.ref_tokens]
    loss, cost = loss_section(at_ref_snr, figdir), cost_section(at_ref_snr, figdir)
    baselines = {"majority": majority["overall"]}
    if qonly:
        baselines["question only"] = mean_std(r.summary["accuracy"]["overall"] for r in qonly)[0]
    snr = snr_section(at_ref_tokens, figdir, baselines)
    sections = [snr, loss, cost, tsne_section(every_tau, figdir), cell_section(runs + qonly)]
    run_wall = sum(r.summary["wall_s"] for r in every_tau + qonly)
    tr, ev = cfg.train, cfg.eval
    head = [
        "# Results: token communication on the tiny preset" + (" (QUICK MODE: not the reproduction)" if quick else ""),
        "",
        "Made by one command (resumable; rerun it after an interruption):",
        "", f"    {command}", "",
        f"- Config: {config or 'the embedded tiny preset (configs/tiny.yaml)'} with overrides "
        f"`{' '.join(overrides) or '(none)'}`; every run's resolved config is in its run directory.",
        f"- Seeds: {', '.join(map(str, plan.seeds))}. Channel: {plan.fading}, tau {plan.tau:g}. "
        f"Stage 1: {tr.stage1.steps} rounds, stage 2: {tr.stage2.steps} rounds, batch {tr.stage2.batch}, "
        f"lr {tr.stage2.lr:g}. Evaluation: the {ev.split} split"
        + (f" (first {ev.max_samples} questions)" if ev.max_samples else "") + ", greedy generation, exact match.",
        f"- Runs: {len(every_tau)} (of which {len(every_tau) - len(runs)} at other taus, for the t-SNE) + "
        f"{len(qonly)} question-only. Wall time: {run_wall / 60:.1f} min summed over the "
        f"runs' training and evaluation; this invocation took {elapsed_s / 60:.1f} min (runs finished by an "
        "earlier invocation were skipped).",
        "- Nothing was tuned; the evaluation split is used only for the numbers below. Data are the generated "
        "MUSIC-AVQA / VALOR-like set, models the tiny random-init ones: the claims are checked on this "
        "data, not on the paper's.",
        "", "## Claims", "",
        claim_alignment(at_ref_tokens, plan), "", claim_snr(at_ref_tokens, plan), "",
        claim_tokens(loss, cost, plan), "", claim_baselines(runs, qonly, majority, plan), "",
        "## Figures and tables", "",
    ]
    doc.write_text("\n".join(head + [_embed(s, rel).markdown(level=3) for s in sections]), encoding="utf-8")
    return doc


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="folder for the sweeps (OUT/sweep, OUT/question_only)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of run seeds (default 0,1,2)")
    p.add_argument("--doc", help="markdown file to write (default docs/results.md; with --quick OUT/results.md); "
                                 "figures go to figures/ beside it")
    p.add_argument("--quick", action="store_true", help="1 seed, SNR 0 and 10 dB, s in {8, 32}, fewer steps")
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
    seeds_axis = next(a for a in AXES if a.key == "seed")
    plan = make_plan(parse_list(seeds_axis, args.seeds), args.quick)
    overrides = BASE_OVERRIDES + (QUICK_OVERRIDES if args.quick else []) + list(args.overrides)
    cfg = load_config(args.config, overrides)
    if cfg.train.stage1.steps == 0:
        raise ConfigError("the reproduction compares aligned and unaligned runs; keep train.stage1.steps > 0")
    out = Path(args.out)
    doc = Path(args.doc) if args.doc else (out / "results.md" if args.quick else REPO_ROOT / "docs" / "results.md")
    jobs = [(out / "sweep", overrides, plan.main_cells()), (out / "question_only", overrides + [QUESTION_ONLY],
                                                            plan.question_only_cells())]
    failed, finished = [], []
    for folder, over, cells in jobs:
        folder.mkdir(parents=True, exist_ok=True)
        write_spec(folder, args.config, over, cells)
        log.info("%s: %d runs", folder, len(cells))
        failed += run_sweep(args.config, over, cells, folder, run_inprocess, progress=not args.no_progress).failed
        names = {cell_name(c) for c in cells}  # a folder may hold other runs; report the planned ones only
        finished.append([r for r in find_runs(folder) if r.name in names])
    if failed:
        log.error("%d runs failed (%s); rerun the same command to retry them", len(failed), ", ".join(failed))
        return 1
    runs, qonly = finished
    write_doc(doc, plan, cfg, command_line(args), args.config, overrides, runs, qonly, majority_baseline(cfg),
              time.perf_counter() - t0, args.quick)
    sys.stdout.write(f"results written to {doc} (figures in {doc.parent / 'figures'})\n")
    return 0
