"""launch.stats against independent computations: the clip bootstrap against an exact
enumeration of every resample and the closed-form variance of a resampled mean; the
pairing and the verdict rule by hand; foundation.baselines on hand-made questions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from foundation.baselines import AnswerPrior, answer_prior_baselines
from foundation.data import Question
from launch.stats import (FAILS, HOLDS, UNDECIDED, clip_bootstrap, compare, constant_arm, per_question_difference,
                          read_outcomes, verdict)


def _exact_bootstrap(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The resampled mean for every one of the c^c equally likely ordered draws of c clips."""
    c = len(sums)
    idx = np.indices((c,) * c).reshape(c, -1).T  # (c^c, c): every tuple of clip indices
    return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)


def test_clip_bootstrap_matches_exact_enumeration():
    # 6 clips with 1..4 questions each (values as seed-averaged differences can be)
    per_clip = [[1.0], [0.0, 2 / 3], [1.0, 1 / 3, -1.0], [0.0, 0.0, 1 / 3, 1.0], [-1.0, 0.0], [1.0, 0.5, -1 / 3]]
    values = np.array([v for qs in per_clip for v in qs])
    clips = [f"c{i}" for i, qs in enumerate(per_clip) for _ in qs]
    sums = np.array([sum(qs) for qs in per_clip])
    counts = np.array([len(qs) for qs in per_clip], dtype=float)
    exact = _exact_bootstrap(sums, counts)  # 46656 values, each with probability 6^-6

    mean, low, high, draws = clip_bootstrap(values, clips, resamples=200_000, seed=1)
    assert mean == pytest.approx(values.mean())
    se = exact.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - exact.mean()) < 4 * se
    assert draws.var() == pytest.approx(exact.var(), rel=0.02)
    # the interval's ends are the exact distribution's 2.5 % and 97.5 % quantiles:
    # P(X < q) <= p <= P(X <= q), up to the Monte Carlo error
    for q, p in ((low, 0.025), (high, 0.975)):
        assert np.mean(exact < q) - 0.003 <= p <= np.mean(exact <= q) + 0.003


def test_clip_bootstrap_variance_of_the_resampled_mean():
    # equal clip sizes: the resampled mean is the mean of c clip means drawn with replacement,
    # whose variance is the population variance of the clip means over c
    rng = np.random.default_rng(0)
    c, m = 40, 3
    values = rng.normal(size=c * m) + np.repeat(rng.normal(size=c), m)
    clips = [str(i) for i in np.repeat(np.arange(c), m)]
    clip_means = values.reshape(c, m).mean(axis=1)
    _, low, high, draws = clip_bootstrap(values, clips, resamples=40_000, seed=2)
    assert draws.var() == pytest.approx(clip_means.var() / c, rel=0.03)
    half = 1.959964 * np.sqrt(clip_means.var() / c)  # nearly normal at c = 40
    assert low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.1 * half)


def test_clip_bootstrap_is_seeded():
    values, clips = np.arange(10.0), [str(i // 2) for i in range(10)]
    assert clip_bootstrap(values, clips, 500, seed=3)[1:3] == clip_bootstrap(values, clips, 500, seed=3)[1:3]


def test_pairing_averages_over_shared_seeds_and_questions():
    a = {0: {(0, "q1"): 1.0, (0, "q2"): 1.0, (0, "q3"): 0.0},
         1: {(0, "q1"): 0.0, (0, "q2"): 1.0, (0, "q3"): 1.0},
         2: {(0, "q1"): 1.0}}  # seed 2 only in a: left out
    b = {0: {(0, "q1"): 0.0, (0, "q2"): 1.0}, 1: {(0, "q1"): 0.0, (0, "q2"): 0.0}}
    keys, diff, seeds = per_question_difference(a, b)
    assert seeds == (0, 1) and keys == [(0, "q1"), (0, "q2")]  # q3 is not in b
    assert diff.tolist() == [(1 - 0 + 0 - 0) / 2, (0 + 1) / 2]
    with pytest.raises(ValueError, match="share no seed"):
        per_question_difference({5: {}}, b)


def test_compare_groups_questions_by_clip_and_needs_three_seeds():
    clip = {"q1": "A", "q2": "A", "q3": "B"}
    ones = {(0, q): 1.0 for q in clip}
    zeros = {(0, q): 0.0 for q in clip}
    p = compare({0: ones, 1: ones, 2: ones}, constant_arm(zeros, (0, 1, 2)), clip.__getitem__, resamples=200)
    assert (p.mean, p.low, p.high, p.questions, p.clips, p.seeds) == (1.0, 1.0, 1.0, 3, 2, (0, 1, 2))
    assert p.verdict() == HOLDS
    two = compare({0: ones, 1: ones}, constant_arm(zeros, (0, 1)), clip.__getitem__, resamples=200)
    assert two.verdict() == UNDECIDED


@pytest.mark.parametrize("low, high, effect, want", [
    (0.01, 0.05, None, HOLDS),
    (-0.02, 0.05, None, UNDECIDED),
    (-0.05, 0.0, None, FAILS),  # at or below 0: the direction is excluded
    (-0.05, -0.01, None, FAILS),
    (0.08, 0.20, 0.073, HOLDS),
    (-0.01, 0.10, 0.073, UNDECIDED),
    (0.01, 0.05, 0.073, FAILS),  # a real gain, but the stated 7.3 points are excluded
    (-0.05, 0.05, 0.073, FAILS),
])
def test_verdict_rule_on_hand_made_intervals(low, high, effect, want):
    assert verdict(low, high, effect) == want


def test_read_outcomes_normalises_like_the_scorer(tmp_path):
    rows = [{"user": 0, "question_id": "7", "qtype": "A-Count", "answer": "acoustic_guitar",
             "prediction": " Acoustic guitar."},
            {"user": 1, "question_id": "7", "qtype": "A-Count", "answer": "two", "prediction": "three"}]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_outcomes(tmp_path) == {(0, "7"): 1.0, (1, "7"): 0.0}
    with pytest.raises(FileNotFoundError, match="rerun it"):
        read_outcomes(tmp_path / "nothing")


def _q(qid: str, template: str, answer: str, qtype: str = "A-Count") -> Question:
    return Question(qid, f"clip{qid}", qtype, template, answer, template)


def test_answer_prior_baselines_by_hand():
    train = [_q("1", "How many?", "two"), _q("2", "How many?", "two"), _q("3", "How many?", "three"),
             _q("4", "Is it <Object>?", "yes", "V-Loc"), _q("5", "Is it <Object>?", "no", "V-Loc"),
             _q("6", "Where?", "left", "V-Loc")]
    test = [_q("t1", "How many?", "three"), _q("t2", "How many?", "two"), _q("t3", "Is it <Object>?", "no", "V-Loc"),
            _q("t4", "Unseen?", "right", "V-Loc")]
    prior = AnswerPrior(train)
    # 'How many?': {two: 2, three: 1} -> majority 'two', chance 1/2; 'Is it': {yes, no} tie -> 'no'
    assert prior.majority_answer(test[0]) == "two" and prior.majority_answer(test[2]) == "no"
    # an unseen template falls back to its type's answers: V-Loc {yes, no, left} -> 1/3, tie -> 'left'
    assert prior.chance(test[3]) == pytest.approx(1 / 3) and prior.majority_answer(test[3]) == "left"
    got = answer_prior_baselines(train, test)
    assert got["chance"]["overall"] == pytest.approx((0.5 + 0.5 + 0.5 + 1 / 3) / 4)
    assert got["majority"]["overall"] == pytest.approx((0 + 1 + 1 + 0) / 4)
    assert got["majority"]["A-Count"] == 0.5 and got["majority"]["V-Loc"] == 0.5
    assert got["chance"]["Visual"] == pytest.approx((0.5 + 1 / 3) / 2) and got["chance"]["n"] == 4
