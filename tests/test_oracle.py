"""`tokcom oracle`: the caption arm reads the caption as clean tokens; both arms answer the
same questions and the summary pairs them."""
import json

from configs.loader import replace
from foundation.manifest import build_manifest
from launch.oracle import prefix_ids, run_oracle


def test_prefixes_are_the_caption_then_eos_then_the_question(small_cfg, assets):
    dataset, (_, tok) = assets
    ids = build_manifest(dataset, "test")["eval"][:3]
    for arm in ("caption", "question"):
        got, mask = prefix_ids(tok, dataset, ids, arm)
        for row, m, qid in zip(got, mask, ids):
            q = dataset.question(qid)
            want = tok(q.text)["input_ids"]
            if arm == "caption":
                want = tok(dataset.caption(q.clip_id).text)["input_ids"] + [tok.eos_token_id] + want
            assert row[m].tolist() == want
            assert not m[len(want):].any() and m[:len(want)].all()


def test_oracle_writes_paired_arms(small_cfg, assets, tmp_path):
    cfg = replace(small_cfg, ["train.stage2.steps=3", "eval.max_samples=12"])
    summary = run_oracle(cfg, tmp_path, progress=False)
    rows = {arm: [json.loads(l) for l in (tmp_path / arm / "predictions.jsonl").read_text().splitlines()]
            for arm in ("caption", "question")}
    assert [r["question_id"] for r in rows["caption"]] == [r["question_id"] for r in rows["question"]]
    assert len(rows["caption"]) == 12
    for arm, rs in rows.items():
        acc = sum(r["prediction"].strip() == r["answer"] for r in rs) / len(rs)
        assert abs(summary["arms"][arm]["accuracy"]["overall"] - acc) < 1e-9
    d = summary["caption_minus_question"]
    assert d["low"] <= d["mean"] <= d["high"] and d["questions"] == 12
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
