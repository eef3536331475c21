"""`tokcom report`: figures (PNG) and report.md for one run directory or a sweep.

A sweep report draws, from the finished runs under `runs/`:
- the baselines (chance, per-template majority, question-only runs, noise-free runs);
- stage-2 loss against rounds, one line per (s_A, s_V) x aligned/unaligned, mean over
  seeds, smoothed (paper Fig. 2);
- accuracy against SNR, aligned vs unaligned, one panel per fading model, mean and
  std over seeds as error bars, noise-free runs (SNR inf) and the baselines as
  horizontal lines (Fig. 3);
- t-SNE of pooled audio/video/text features before and after alignment, per tau;
- accuracy against uplink channel uses per sample, one point per token-length setting.
Axes a figure does not vary are held at their most common value in the sweep (the
figure's caption names them). A figure whose data is absent is skipped, and report.md
says why. A single run's report has its loss curves, per-question-type accuracy and,
for a cluster run (links with latencies), per-link bytes and latency; every accuracy
has the chance and per-template majority baselines beside it.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np

from configs.schema import ConfigError
from foundation.data import QTYPE_GROUPS, QTYPES
from launch import figures, timeline
from launch.baselines import BASELINE_NOTE, run_baselines
from launch.grid import AXES
from launch.runs import RunRecord, find_runs, load_run, uplink_per_sample
from launch.tables import (LABEL, Section, accuracy, describe, fmt, group, mean_curve, mean_std, reference, select,
                           stage_curve, table, tokens_label)

log = logging.getLogger(__name__)

SWEEP_FIGURES = ("loss_curves.png", "accuracy_vs_snr.png", "tsne.png", "accuracy_vs_cost.png")
RUN_FIGURES = ("run_loss.png", "run_accuracy.png", "run_links.png", timeline.FIGURE)


# ---------------------------------------------------------------- sweep sections


def loss_section(runs: list[RunRecord], figdir: Path) -> Section:
    sec = Section("Training loss against rounds (Fig. 2)")
    fixed = reference(runs, ("snr_db", "snr_links", "fading", "tau", "inputs"))
    groups = group(select(runs, fixed), ("audio_tokens", "video_tokens", "align"))
    lines, rows = {}, []
    for (a, v, align), members in groups.items():
        x, y = mean_curve(members, "stage2")
        if x.size < 2:
            continue
        label = f"{tokens_label(a, v)} {align}"
        lines[label] = (x, figures.smooth(y, figures.smoothing_window(x.size)))
        tail_n = max(1, x.size // 10)
        sec.data[label] = {"seeds": len(members), "first": float(y[0]), "final": float(y[-tail_n:].mean()),
                           "mean": float(y.mean()), "steps": int(x[-1]) + 1}
        rows.append([label, len(members), int(x[-1]) + 1, fmt(y[0]), fmt(y[-tail_n:].mean()), fmt(y.mean())])
    if not lines:
        sec.skipped = "no run logged two or more stage-2 steps"
        return sec
    figures.loss_curves({f"stage-2 loss ({describe(fixed)})": lines}, figdir / "loss_curves.png")
    sec.figure = "loss_curves.png"
    sec.text = (f"Mean over seeds, moving average of about a tenth of the curve; {describe(fixed)}. "
                "'final' is the mean raw loss over the last tenth of the rounds, 'mean' over all rounds "
                "(lower: faster convergence).\n\n"
                + table(["setting", "seeds", "rounds", "first loss", "final loss", "mean loss"], rows))
    return sec


def snr_title(runs: list[RunRecord]) -> str:
    """What the SNR axis varied: the media links (text link held) or every link."""
    if runs and runs[0].values["snr_links"] == "media":
        return f"media SNR (dB); the question's text link at {runs[0].values['text_snr_db']:g} dB"
    return "SNR (dB) of every link, the question's text link included"


def snr_section(runs: list[RunRecord], figdir: Path, baselines: dict[str, float] | None = None) -> Section:
    sec = Section("Accuracy against SNR (Fig. 3)")
    fixed = reference(runs, ("snr_links", "audio_tokens", "video_tokens", "tau", "inputs"))
    sliced = select(runs, fixed)
    if len({r.values["snr_db"] for r in sliced if math.isfinite(r.values["snr_db"])}) < 2:
        sec.skipped = f"fewer than two finite SNR values among the runs with {describe(fixed)}"
        return sec
    aligns = [a for a in ("aligned", "unaligned", "skip") if any(r.values["align"] == a for r in sliced)]
    lines_at = dict(baselines or {})
    panels, rows = {}, []
    for (fading,), by_fading in group(sliced, ("fading",)).items():
        lines = {}
        for (align,), members in group(by_fading, ("align",)).items():
            pts = {snr: mean_std(accuracy(r) for r in rs) for (snr,), rs in group(members, ("snr_db",)).items()}
            finite = {k: v for k, v in pts.items() if math.isfinite(k)}
            if math.inf in pts:
                lines_at[f"noise-free ({align})"] = pts[math.inf][0]
            if finite:
                lines[align] = ([*finite], [p[0] for p in finite.values()], [p[1] for p in finite.values()])
            sec.data.setdefault(fading, {})[align] = pts
        panels[fading] = lines
        for snr in sorted({s for pts in sec.data[fading].values() for s in pts}):
            at = [sec.data[fading].get(a, {}).get(snr) for a in aligns]
            al, un = sec.data[fading].get("aligned", {}).get(snr), sec.data[fading].get("unaligned", {}).get(snr)
            rows.append([fading, f"{snr:g}", *(fmt(*p[:2]) + f" (n={p[2]})" if p else "-" for p in at),
                         fmt(al[0] - un[0]) if al and un else "-"])
    figures.accuracy_vs_snr(panels, figdir / "accuracy_vs_snr.png", lines_at, xlabel=snr_title(sliced))
    sec.figure = "accuracy_vs_snr.png"
    sec.text = (f"Mean ± std over seeds; {describe(fixed)}; x: {snr_title(sliced)}. SNR inf: noise-free "
                "media links.\n\n" + table(["fading", "SNR (dB)", *aligns, "aligned − unaligned"], rows))
    return sec


def alignment_scores(probe: dict) -> dict[str, float]:
    """Paired cosine similarity and top-1 retrieval of each clip's text among all clips'."""
    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    text = unit(probe["text"])
    out = {}
    for m in ("audio", "video"):
        sim = unit(probe[m]) @ text.T  # (n, n)
        out[f"{m}_cos"] = float(np.mean(np.diag(sim)))
        out[f"{m}_top1"] = float(np.mean(np.argmax(sim, axis=1) == np.arange(sim.shape[0])))
    return out


def tsne_section(runs: list[RunRecord], figdir: Path) -> Section:
    import torch

    sec = Section("Pooled features before and after alignment (t-SNE)")
    probed = [r for r in runs if r.has_probes()]
    if not probed:
        sec.skipped = "no run saved probe_before.pt / probe_after.pt (set eval.probe_samples=N > 0)"
        return sec
    ref = reference(probed, ("snr_db", "snr_links", "fading", "audio_tokens", "video_tokens", "inputs"))
    columns, rows = {}, []
    for (tau,), members in group(probed, ("tau",)).items():
        aligned = [r for r in members if r.values["align"] == "aligned"] or members
        run = min(aligned, key=lambda r: (sum(r.values[k] != v for k, v in ref.items()), r.values["seed"], r.name))
        col, scores = f"tau {tau:g}", {}
        columns[col] = {}
        for tag in ("before", "after"):
            probe = torch.load(run.path / f"probe_{tag}.pt", map_location="cpu", weights_only=True)
            feats = {m: probe[m].float().numpy() for m in ("audio", "video", "text")}
            columns[col][tag] = figures.tsne_points(feats)
            scores[tag] = alignment_scores(feats)
            rows.append([f"{tau:g}", run.name, tag, len(feats["text"]),
                         *(fmt(scores[tag][k]) for k in ("audio_cos", "video_cos", "audio_top1", "video_top1"))])
        sec.data[tau] = {"run": run.name, **scores}
    figures.tsne_grid(columns, figdir / "tsne.png")
    sec.figure = "tsne.png"
    sec.text = ("One run per tau (aligned, lowest seed). Scores on the same features: mean cosine similarity "
                "of each clip's audio/video feature with its own caption's text feature, and top-1 "
                "retrieval of the right caption among the probed clips (chance = 1/n).\n\n"
                + table(["tau", "run", "features", "n", "cos(audio, text)", "cos(video, text)",
                         "top-1 audio→text", "top-1 video→text"], rows))
    return sec


def cost_section(runs: list[RunRecord], figdir: Path) -> Section:
    sec = Section("Accuracy against communication cost")
    fixed = reference(runs, ("snr_db", "snr_links", "fading", "tau", "inputs", "align"))
    groups = group(select(runs, fixed), ("audio_tokens", "video_tokens"))
    if len(groups) < 2:
        sec.skipped = f"fewer than two token-length settings among the runs with {describe(fixed)}"
        return sec
    points, rows = [], []
    for (a, v), members in groups.items():
        m, s, n = mean_std(accuracy(r) for r in members)
        cost = uplink_per_sample(members[0].links)
        points.append((f"{a}/{v} tokens", cost["channel_uses_per_sample"], m, s))
        sec.data[(a, v)] = {"accuracy": (m, s, n), **cost}
        rows.append([tokens_label(a, v), n, f"{cost['channel_uses_per_sample']:.0f}",
                     f"{cost['payload_bytes_per_sample']:.0f}", fmt(m, s)])
    figures.accuracy_vs_cost(points, figdir / "accuracy_vs_cost.png")
    sec.figure = "accuracy_vs_cost.png"
    sec.text = (f"Mean ± std over seeds; {describe(fixed)}. Cost: uplink complex symbols (and payload bytes) "
                "to send one clip from the audio, video and text devices.\n\n"
                + table(["tokens", "seeds", "channel uses / sample", "payload bytes / sample", "accuracy"], rows))
    return sec


def cell_section(runs: list[RunRecord]) -> Section:
    keys = tuple(a.key for a in AXES if a.key != "seed")
    rows = []
    for values, members in group(runs, keys).items():
        cells = [fmt(*mean_std(accuracy(r, k) for r in members)[:2]) for k in ("overall", *QTYPE_GROUPS)]
        prior = run_baselines(members[0])
        loss = mean_std(r.summary.get("loss", {}).get("stage2", {}).get("last", float("nan")) for r in members)
        rows.append([" ".join(LABEL[k](v) for k, v in zip(keys, values)),
                     ",".join(str(r.values["seed"]) for r in members), *cells,
                     *(fmt(prior[b]["overall"]) for b in ("chance", "majority")),
                     f"{uplink_per_sample(members[0].links)['channel_uses_per_sample']:.0f}", fmt(loss[0])])
    return Section("Accuracy per cell", text="Mean ± std over seeds; one row per cell of the grid "
                   f"(every run is in results.csv); {BASELINE_NOTE}\n\n" + table(
                       ["cell", "seeds", "accuracy", *QTYPE_GROUPS, "chance", "majority", "channel uses / sample",
                        "last stage-2 loss"], rows))


def baseline_table(prior: dict, systems: dict[str, list[RunRecord]], keys: tuple[str, ...]) -> str:
    """Chance and majority (one number each), then each system's mean ± std over seeds."""
    rows = [[name, "-", *(fmt(prior[name].get(k, math.nan)) for k in keys)] for name in ("chance", "majority")]
    rows += [[name, len(rs), *(fmt(*mean_std(accuracy(r, k) for r in rs)[:2]) for k in keys)]
             for name, rs in systems.items()]
    return table(["system", "seeds", *keys], rows)


def baseline_systems(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """The sweep's question-only runs and its noise-free (SNR inf) runs with every input."""
    full = max((r.values["inputs"] for r in runs), key=len)
    return {name: rs for name, rs in (
        ("question only (inputs: text)", [r for r in runs if r.values["inputs"] == "text"]),
        ("noise-free media links (SNR inf)", [r for r in runs if r.values["snr_db"] == math.inf
                                               and r.values["inputs"] == full])) if rs}


def baselines_section(runs: list[RunRecord]) -> Section:
    prior = run_baselines(runs[0])
    return Section("Baselines", text=f"{BASELINE_NOTE} On {prior['chance']['n']} evaluated questions (of "
                   f"`{runs[0].name}`).\n\n"
                   + baseline_table(prior, baseline_systems(runs), ("overall", *QTYPE_GROUPS)))


def sweep_lines(runs: list[RunRecord]) -> dict[str, float]:
    """Horizontal lines for the SNR figure: chance, majority and the question-only mean."""
    prior = run_baselines(runs[0])
    lines = {b: prior[b]["overall"] for b in ("chance", "majority")}
    qonly = [r for r in runs if r.values["inputs"] == "text"]
    if qonly:
        lines["question only"] = mean_std(accuracy(r) for r in qonly)[0]
    return lines


def sweep_sections(runs: list[RunRecord], figdir: Path) -> list[Section]:
    return [baselines_section(runs), loss_section(runs, figdir), snr_section(runs, figdir, sweep_lines(runs)),
            tsne_section(runs, figdir), cost_section(runs, figdir), cell_section(runs)]


# ---------------------------------------------------------------- single run


def _latency(entry: dict, q: str) -> str:
    v = entry["latency_ms"].get(q)
    return "-" if v is None else fmt(v, digits=2)


def run_sections(run: RunRecord, figdir: Path) -> list[Section]:
    s = run.summary
    loss = Section("Loss curves")
    panels = {}
    for stage in ("stage1", "stage2"):
        x, y = stage_curve(run, stage)
        if x.size:
            smoothed = figures.smooth(y, figures.smoothing_window(x.size))
            panels[f"{stage} loss"] = {"raw": (x, y), "moving average": (x, smoothed)}
    if panels:
        figures.loss_curves(panels, figdir / "run_loss.png", ylabel="loss")
        loss.figure = "run_loss.png"
    else:
        loss.skipped = "metrics.jsonl has no logged steps"
    loss.text = table(["stage", "steps", "first loss", "last loss"],
                      [[st, s["steps"].get(st, 0), fmt(v["first"]), fmt(v["last"])]
                       for st, v in s.get("loss", {}).items()])

    acc = Section("Accuracy per question type")
    per = {k: s["accuracy"][k] for k in (*QTYPES, *QTYPE_GROUPS) if k in s["accuracy"]}
    if per:
        figures.bars(per, figdir / "run_accuracy.png", f"accuracy (overall {s['accuracy']['overall']:.3f})", "accuracy")
        acc.figure = "run_accuracy.png"
    else:
        acc.skipped = "summary.json has no per-question-type accuracy"
    prior = run_baselines(run)
    acc.text = table(["question type", "accuracy", "chance", "majority"],
                     [[k, fmt(s["accuracy"][k]), *(fmt(prior[b].get(k, math.nan)) for b in ("chance", "majority"))]
                      for k in ("overall", *per)]) + f"\n\n{s['accuracy']['n']} questions; {BASELINE_NOTE}"

    links = Section("Links")
    if run.is_cluster():
        figures.link_bars(run.links, figdir / "run_links.png")
        links.figure = "run_links.png"
    else:
        links.skipped = "an in-process run: its links carry no measured latency"
    links.text = table(["link", "direction", "messages", "payload MB", "channel uses", "p50 ms", "p95 ms", "p99 ms"],
                       [[e["link"], e["direction"], e["messages"], f"{e['payload_bytes'] / 1e6:.3f}",
                         e["channel_uses"], *(_latency(e, q) for q in ("p50", "p95", "p99"))] for e in run.links])
    timing = Section("Timing", text=table(["quantity", "value"], [
        ["wall time (s)", f"{s['wall_s']:.1f}"], ["samples / s", f"{s['samples_per_s']:.1f}"],
        *[[f"step time: {k} (ms)", f"{v:.2f}"] for k, v in s.get("step_time_breakdown_ms", {}).items()]]))
    return [loss, acc, links, timing, Section("Round timeline", **timeline.section(s, figdir))]


# ---------------------------------------------------------------- entry


def _write(md_path: Path, title: str, intro: str, sections: list[Section], owned: tuple[str, ...]) -> Path:
    made = {sec.figure for sec in sections if sec.figure}
    for name in owned:  # a figure skipped now must not linger from an earlier report
        if name not in made:
            (md_path.parent / name).unlink(missing_ok=True)
    md_path.write_text("\n".join([f"# {title}", "", intro, "", *(sec.markdown() for sec in sections)]),
                       encoding="utf-8")
    return md_path


def write_report(path: str | Path, figdir: str | Path | None = None) -> Path:
    """Figures and report.md for a run or sweep directory; returns report.md's path."""
    path = Path(path)
    figdir = Path(figdir) if figdir else path
    figdir.mkdir(parents=True, exist_ok=True)
    run = load_run(path)
    if run is not None:
        intro = (f"Run `{path}`: {describe(run.values)}; "
                 f"accuracy {run.summary['accuracy']['overall']:.3f} over {run.summary['accuracy']['n']} questions.")
        return _write(figdir / "report.md", f"Run report: {run.name}", intro, run_sections(run, figdir), RUN_FIGURES)
    if not (path / "runs").is_dir():
        raise ConfigError(f"{path} is neither a finished run directory (no summary.json) nor a sweep directory "
                          f"(no runs/); pass the --out of a finished `tokcom reference`, `run` or `sweep`")
    runs = find_runs(path)
    if not runs:
        raise ConfigError(f"{path}/runs holds no finished run (none has summary.json); run or resume the sweep first")
    varying = {a.key: sorted({r.values[a.key] for r in runs}, key=str) for a in AXES}
    intro = (f"Sweep `{path}`: {len(runs)} finished runs (per-run numbers in results.csv). Values present: "
             + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in varying.items()) + ".")
    return _write(figdir / "report.md", "Sweep report", intro, sweep_sections(runs, figdir), SWEEP_FIGURES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN_OR_SWEEP_DIR", help="a run directory or a sweep directory")
    p.add_argument("--out", help="folder for the figures and report.md (default: the directory itself)")


def run(args: argparse.Namespace) -> int:
    md = write_report(args.path, args.out)
    sys.stdout.write(f"report written to {md}\n")
    return 0
