"""`tokcom reproduce`'s plan and document: the cells a plan runs, and verdicts on hand-made
runs whose predictions were written so that each claim's outcome is known in advance."""
from __future__ import annotations

import json
import math

import pytest

from configs.loader import replace
from configs.schema import ConfigError
from launch.grid import cell_name, cell_overrides
from launch.plan import Plan, quick_plan
from launch.reproduce import write_doc
from launch.runs import load_run
from tests.test_sweep import write_fake_run

SMALL_PLAN = Plan(seeds=(0, 1, 2), snrs=(-20.0, 10.0), rayleigh_snrs=(-20.0, 10.0), align_snrs=(-20.0, 10.0),
                  tokens=(8, 32))


def test_plan_cells_and_checks():
    groups = SMALL_PLAN.groups()
    # curve: -20, 10, inf; Rayleigh: 2; unaligned: 2; tokens: 8 and 32 (32 is the curve's 10 dB); question only: 1
    assert [len(v) // 3 for v in groups.values()] == [3, 2, 2, 2, 1]
    cells = SMALL_PLAN.cells()
    assert len(cells) == 3 * (3 + 2 + 2 + 1 + 1)
    assert all(c["snr_links"] == "media" for c in cells)
    assert {c["snr_db"] for c in cells if c["fading"] == "awgn" and c["inputs"] != "text"} == {-20.0, 10.0, math.inf}
    assert cell_name(groups["question only"][0]) == "snr10_media_awgn_a32_v32_aligned_tau0.07_t_seed0"
    default = Plan()
    assert min(default.snrs) <= -30 and default.ref_snr in default.snrs
    assert len(quick_plan((4, 5, 6)).seeds) == 1
    with pytest.raises(ConfigError, match="align_snrs"):
        Plan(snrs=(0.0, 10.0), align_snrs=(6.0,))
    with pytest.raises(ConfigError, match="ref_tokens"):
        Plan(tokens=(8, 16))


def _correct(cell: dict, seed: int, i: int) -> bool:
    """The designed outcomes: the full model at 10 dB answers everything; the media
    destroyed (-20 dB), the unaligned control, s = 8 and question-only answer nothing;
    Rayleigh at 10 dB answers every other question; the noise-free ceiling equals 10 dB."""
    if cell["inputs"] == "text" or cell["align"] == "unaligned" or cell["audio_tokens"] == 8:
        return False
    if cell["fading"] == "rayleigh":
        return cell["snr_db"] > 0 and i % 2 == 0
    return cell["snr_db"] > 0


@pytest.fixture()
def repro(tmp_path, small_cfg):
    from foundation.assets import cache_dir
    from foundation.data import open_dataset

    cfg = replace(small_cfg, ["eval.max_samples=0"])
    dataset = open_dataset(cfg.data, cache_dir(cfg))
    questions = dataset.questions(cfg.eval.split)
    runs = []
    for cell in SMALL_PLAN.cells():
        run_cfg = replace(cfg, cell_overrides(cell))
        ok = [_correct(cell, cell["seed"], i) for i in range(len(questions))]
        path = write_fake_run(tmp_path / "runs" / cell_name(cell), run_cfg, acc=sum(ok) / len(ok))
        with open(path / "predictions.jsonl", "w") as f:
            for q, good in zip(questions, ok):
                f.write(json.dumps({"user": 0, "question_id": q.question_id, "qtype": q.qtype, "answer": q.answer,
                                    "prediction": q.answer if good else "not an answer"}) + "\n")
        runs.append(load_run(path))
    return cfg, runs, tmp_path


def test_document_states_the_designed_verdicts(repro):
    cfg, runs, root = repro
    doc = write_doc(root / "docs" / "results.md", SMALL_PLAN, cfg, "tokcom reproduce --out X", [], runs, 60.0, False)
    text = doc.read_text()
    # alignment: +100 points at 10 dB (holds, also against the paper's +7.3); 0 at -20 dB (CI [0, 0]: excluded)
    assert "| 10 dB | 1.000 ± 0.000 | 0.000 ± 0.000 | +100.0 | [+100.0, +100.0] | **holds** | **holds** |" in text
    assert "| -20 dB | 0.000 ± 0.000 | 0.000 ± 0.000 | +0.0 | [+0.0, +0.0] | **does not hold** | " \
           "**does not hold** |" in text
    n = runs[0].summary["accuracy"]["n"]
    assert "| AWGN: 10 dB > -20 dB | +100.0 | [+100.0, +100.0] | 3 |" in text
    assert "| AWGN: noise-free > 10 dB | +0.0 | [+0.0, +0.0] | 3 |" in text and "**does not hold** |" in text
    assert "| s = 32 > s = 8 | +100.0 | [+100.0, +100.0] | 3 |" in text
    assert "| full model > question only | +100.0 | [+100.0, +100.0] | 3 |" in text
    # AWGN vs Rayleigh at 10 dB: the odd half of the questions -> about +50 points, CI above 0
    row = next(line for line in text.splitlines() if line.startswith("| AWGN > Rayleigh at 10 dB |"))
    mean, ci = row.split("|")[2:4]
    assert 40 < float(mean) < 60 and float(ci.strip(" []").split(",")[0]) > 0 and "**holds**" in row
    assert "(figures/accuracy_vs_snr.png)" in text and (root / "docs" / "figures" / "accuracy_vs_snr.png").is_file()
    assert f"{n} questions of the test split" in text
    assert "Nothing was tuned on the test split" in text
