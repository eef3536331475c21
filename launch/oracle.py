"""`tokcom oracle`: how far the edge's LM gets when it reads the clip's caption as clean text.

No devices, no channel. Two arms train the same LoRA (same init, same samples, stage 2's
steps, batch and learning rate) and are evaluated by greedy generation on the configured
split, like a run:
- `caption`: the prefix is [caption, EOS, question], the caption as clean LM tokens;
- `question`: the prefix is the question alone.

The caption names every instrument, how loud it plays (or that it is silent) and where
(not when it starts), so the caption arm bounds what a media path can bring this LM on
most templates. When it barely beats the question arm, the LM and its training budget,
not the channel, limit the benchmark. Nothing is tuned here; the eval split is read once.

Writes DIR/{caption,question}/predictions.jsonl (the run format, so `launch.stats` reads
them) and DIR/summary.json: accuracy per arm (overall, per type, per template) and the
paired difference caption - question with its clip-level bootstrap interval.

Legend: b batch, L prefix tokens, d LM width, A answer tokens.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from configs.args import add_config_arguments
from configs.loader import load_config
from configs.schema import Config
from device_node.step import text_batch
from edge_server.lm import left_align
from edge_server.step import EdgeNode
from foundation.assets import prepare_assets
from foundation.baselines import summarise, template_of
from foundation.manifest import build_manifest
from foundation.seeding import derive_seed
from launch.stats import compare, read_outcomes

log = logging.getLogger(__name__)
ARMS = ("caption", "question")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="directory to write")


def prefix_ids(tok, dataset, question_ids: list[str], arm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, L) token ids and (b, L) bool mask, right-padded: [caption, EOS, question] or [question]."""
    rows = []
    for qid in question_ids:
        q = dataset.question(qid)
        row = tok(q.text)["input_ids"]
        if arm == "caption":
            row = tok(dataset.caption(q.clip_id).text)["input_ids"] + [tok.eos_token_id] + row
        rows.append(row)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    return ids, mask


def train_and_answer(cfg: Config, dataset, lm, tok, arm: str, progress: bool = True) -> list[dict]:
    """Train one arm's LoRA for stage 2's rounds; return its predictions on the eval split."""
    edge = EdgeNode(cfg, lm, tok)  # the run's LoRA init; the receivers stay unused
    manifest = build_manifest(dataset, cfg.eval.split)
    st = cfg.train.stage2

    def prefix(ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok_ids, mask = prefix_ids(tok, dataset, ids, arm)
        return left_align(edge.lm.embed(tok_ids), mask)  # (b, L, d), (b, L)

    edge._set_phase("stage2")
    edge.lm.train()
    for step in tqdm(range(st.steps), desc=f"oracle {arm}", unit="step", disable=not progress, leave=False):
        ids = edge.sample_ids(manifest, "stage2", step)
        answers, answer_mask = text_batch(tok, [dataset.question(i).answer for i in ids], cfg.data.answer_len,
                                          eos=True)  # (b, A)
        with torch.random.fork_rng(devices=[]):  # LoRA dropout, replayable per step
            torch.manual_seed(derive_seed(cfg.seed, "oracle", arm, step))
            loss = edge.lm.answer_loss(*prefix(ids), answers, answer_mask)
        edge.opt.zero_grad()
        loss.backward()
        edge.opt.step()
    edge.lm.eval()
    rows, ids = [], manifest["eval"]
    if cfg.eval.max_samples:
        ids = ids[: cfg.eval.max_samples]
    with torch.no_grad():
        for k in range(0, len(ids), cfg.eval.batch):
            chunk = ids[k: k + cfg.eval.batch]
            out = edge.lm.generate(*prefix(chunk), cfg.eval.max_new_tokens, tok.eos_token_id)
            for qid, t in zip(chunk, out):
                q = dataset.question(qid)
                rows.append({"user": 0, "question_id": qid, "qtype": q.qtype, "answer": q.answer,
                             "prediction": tok.decode(t, skip_special_tokens=True)})
    return rows


def run_oracle(cfg: Config, out: str | Path, progress: bool = True) -> dict:
    dataset, (lm, tok) = prepare_assets(cfg)
    out = Path(out)
    summary: dict = {"split": cfg.eval.split, "steps": cfg.train.stage2.steps, "arms": {}}
    for arm in ARMS:
        rows = train_and_answer(cfg, dataset, lm, tok, arm, progress)
        (out / arm).mkdir(parents=True, exist_ok=True)
        (out / arm / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        scores = read_outcomes(out / arm)
        by_template: dict[str, list[float]] = {}
        for (_, qid), s in scores.items():
            by_template.setdefault(template_of(dataset.question(qid)), []).append(s)
        summary["arms"][arm] = {
            "accuracy": summarise((dataset.question(qid).qtype, s) for (_, qid), s in scores.items()),
            "templates": {t: sum(v) / len(v) for t, v in sorted(by_template.items())}}
    paired = compare({cfg.seed: read_outcomes(out / "caption")}, {cfg.seed: read_outcomes(out / "question")},
                     lambda qid: dataset.question(qid).clip_id)
    summary["caption_minus_question"] = {"mean": paired.mean, "low": paired.low, "high": paired.high,
                                         "questions": paired.questions, "clips": paired.clips}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run(args: argparse.Namespace) -> int:
    s = run_oracle(load_config(args.config, args.overrides), args.out)
    d = s["caption_minus_question"]
    for arm in ARMS:
        log.info("%-8s %.3f", arm, s["arms"][arm]["accuracy"]["overall"])
    log.info("caption - question: %+.1f points, 95%% CI [%+.1f, %+.1f] over %d questions from %d clips",
             100 * d["mean"], 100 * d["low"], 100 * d["high"], d["questions"], d["clips"])
    return 0
