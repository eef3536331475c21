"""The answer-prior baselines of a run: chance and per-template majority (foundation.baselines).

`EvalSet` opens a run's dataset once and answers what the reproduction's paired
comparisons need: a question's clip, and chance / majority scored per evaluated
(user, question_id), so that the baselines pair with runs question by question.
"""
from __future__ import annotations

from configs.schema import Config
from foundation.baselines import AnswerPrior, answer_prior_baselines
from launch.runs import RunRecord
from launch.stats import Outcomes


class EvalSet:
    """The dataset of a config, its train answer prior and question -> clip."""

    def __init__(self, cfg: Config):
        from foundation.assets import cache_dir
        from foundation.data import open_dataset

        self.dataset = open_dataset(cfg.data, cache_dir(cfg))
        self.prior = AnswerPrior(self.dataset.questions("train"))

    def clip_of(self, question_id: str) -> str:
        return self.dataset.question(question_id).clip_id

    def outcomes(self, keys) -> dict[str, Outcomes]:
        """Chance (expected accuracy of a uniform guess) and majority, per (user, question_id)."""
        qs = {k: self.dataset.question(k[1]) for k in keys}
        return {"chance": {k: self.prior.chance(q) for k, q in qs.items()},
                "majority": {k: self.prior.majority(q) for k, q in qs.items()}}


def run_baselines(run: RunRecord) -> dict:
    """The run's chance and majority accuracy dicts: from its summary, or (a run made
    before summaries carried them) computed from its dataset for its evaluated questions."""
    if "baselines" in run.summary:
        return run.summary["baselines"]
    ev = EvalSet(run.cfg)
    ids = [q.question_id for q in ev.dataset.questions(run.cfg.eval.split)][: run.cfg.eval.max_samples or None]
    return answer_prior_baselines(ev.dataset.questions("train"), [ev.dataset.question(i) for i in ids])


BASELINE_NOTE = ("chance: per question 1/|answers its template takes in the train split|, averaged; majority: "
                 "the template's most frequent train answer. Both know the train answers only.")
