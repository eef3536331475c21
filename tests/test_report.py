"""`tokcom report` on hand-made run and sweep directories, the answer-prior baselines
against a count over the raw annotation files, and (slow) `tokcom reproduce --quick`."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from configs.loader import load_config, replace
from launch.cli import main
from launch.figures import smooth
from launch.report import alignment_scores, write_report
from launch.tables import mean_std
from tests.test_sweep import fake_links, write_fake_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SWEEP_PNGS = ["loss_curves.png", "accuracy_vs_snr.png", "tsne.png", "accuracy_vs_cost.png"]


@pytest.fixture(scope="module")
def base():
    return load_config(None, ["train.stage1.steps=5", "train.stage2.steps=20"])


def _probes(seed: int, n: int = 10, d: int = 16) -> dict:
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(n, d, generator=g)
    before = {"clip_ids": [str(i) for i in range(n)], "audio": torch.randn(n, d, generator=g) + 5,
              "video": torch.randn(n, d, generator=g) - 5, "text": text, "text_received": text}
    after = {**before, "audio": 2 * text, "video": -text}
    return {"before": before, "after": after}


def _run(root: Path, base, name: str, over: list[str], acc: float, probes: dict | None = None,
         decay: float = 0.1) -> None:
    cfg = replace(base, over)
    losses = [1.0 + 3.0 * np.exp(-decay * i) for i in range(cfg.train.stage2.steps)]
    write_fake_run(root / "runs" / name, cfg, acc=acc, losses=losses, probes=probes)


# accuracy per (snr, align) and seed: means/stds worked out by hand in the asserts below
ACC = {(0, "aligned"): (0.4, 0.6), (0, "unaligned"): (0.3, 0.3), (10, "aligned"): (0.7, 0.8),
       (10, "unaligned"): (0.5, 0.6)}


@pytest.fixture()
def sweep_dir(tmp_path, base) -> Path:
    for (snr, align), accs in ACC.items():
        for seed, acc in enumerate(accs):
            over = [f"channel.snr_db={snr}", f"seed={seed}"]
            over += ["train.align_weight=0"] if align == "unaligned" else []
            probes = _probes(seed) if (snr, align, seed) == (10, "aligned", 0) else None
            _run(tmp_path, base, f"s{snr}_{align}_{seed}", over, acc, probes)
    for seed, acc in enumerate((0.45, 0.55)):
        _run(tmp_path, base, f"short_{seed}", ["channel.snr_db=10", f"seed={seed}", "transmitter.audio.tokens=8",
                                               "transmitter.video.tokens=8"], acc, decay=0.05)
    _run(tmp_path, base, "tau13", ["channel.snr_db=10", "train.tau=0.13"], 0.6, _probes(3))
    return tmp_path


def test_sweep_report_writes_every_figure_and_the_numbers(sweep_dir):
    md = write_report(sweep_dir)
    assert md == sweep_dir / "report.md"
    for name in SWEEP_PNGS:
        data = (sweep_dir / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
    text = md.read_text()
    for name in SWEEP_PNGS:
        assert f"]({name})" in text
    assert "skipped" not in text
    # accuracy vs SNR: aligned 0 dB (0.4, 0.6) -> 0.5 ± 0.1414; unaligned (0.3, 0.3); difference 0.2
    assert "| awgn | 0 | 0.500 ± 0.141 (n=2) | 0.300 ± 0.000 (n=2) | 0.200 |" in text
    assert "| awgn | 10 | 0.750 ± 0.071 (n=2) | 0.550 ± 0.071 (n=2) | 0.200 |" in text
    # cost: (8 + 8 + 32) * 64 and (32 + 32 + 32) * 64 complex symbols per clip, 8 bytes each
    assert "| s_A=8, s_V=8 | 2 | 3072 | 24576 | 0.500 ± 0.071 |" in text
    assert "| s_A=32, s_V=32 | 2 | 6144 | 49152 | 0.750 ± 0.071 |" in text
    # loss curves at 10 dB: first loss 1 + 3 = 4 for every setting
    assert "| s_A=32, s_V=32 unaligned | 2 | 20 | 4.000 |" in text
    # t-SNE scores: after, audio = 2 text (cosine 1, top-1 1) and video = -text (cosine -1, top-1 0)
    assert "| 0.07 | s10_aligned_0 | after | 10 | 1.000 | -1.000 | 1.000 | 0.000 |" in text
    assert "| 0.13 | tau13 | after |" in text


def test_sweep_report_skips_what_it_cannot_draw(tmp_path, base):
    figdir = tmp_path / "figs"
    figdir.mkdir()
    (figdir / "accuracy_vs_snr.png").write_bytes(b"stale")
    for seed in (0, 1):
        _run(tmp_path, base, f"r{seed}", [f"seed={seed}"], 0.5)
    assert main(["report", str(tmp_path), "--out", str(figdir)]) == 0
    text = (figdir / "report.md").read_text()
    assert (figdir / "loss_curves.png").is_file()
    for name in ("accuracy_vs_snr.png", "tsne.png", "accuracy_vs_cost.png"):
        assert not (figdir / name).exists(), name
    assert "fewer than two finite SNR values" in text
    assert "set eval.probe_samples=N > 0" in text
    assert "fewer than two token-length settings" in text
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize("cluster", [True, False])
def test_single_run_report(tmp_path, base, cluster):
    links = fake_links({"audio": 2048, "video": 2048, "text": 2048}, 40, latency=cluster)
    write_fake_run(tmp_path, base, acc=0.375, links=links)
    md = write_report(tmp_path)
    text = md.read_text()
    for name in ("run_loss.png", "run_accuracy.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "run_links.png").is_file() == cluster
    assert ("its links carry no measured latency" in text) != cluster
    # the fake summary's baselines: chance 0.2, majority 0.3 for every type
    assert "| overall | 0.375 | 0.200 | 0.300 |" in text and "| AV-Temp | 0.375 | 0.200 | 0.300 |" in text
    assert "| stage2 | 20 | 3.000 | 2.810 |" in text  # fake losses 3.0 - 0.01 i, i = 0..19


def test_report_on_a_folder_without_runs_is_a_clear_error(tmp_path):
    assert main(["report", str(tmp_path)]) == 2


def test_smooth_and_stats_by_hand():
    assert np.allclose(smooth(np.array([1.0, 2.0, 3.0, 4.0]), 2), [1.0, 1.5, 2.5, 3.5])
    assert np.allclose(smooth(np.array([4.0, 2.0]), 1), [4.0, 2.0])
    m, s, n = mean_std([0.4, 0.6, float("nan")])
    assert (m, n) == (pytest.approx(0.5), 2) and s == pytest.approx(0.02 ** 0.5)


def test_alignment_scores_by_hand():
    text = np.eye(4)
    got = alignment_scores({"text": text, "audio": 3 * text, "video": np.roll(text, 1, axis=0)})
    assert got["audio_cos"] == pytest.approx(1.0) and got["audio_top1"] == 1.0
    assert got["video_cos"] == pytest.approx(0.0) and got["video_top1"] == 0.0


def test_baselines_against_the_raw_files(small_cfg, tmp_path):
    from foundation.assets import cache_dir
    from foundation.data.synth import ensure_synthetic
    from foundation.tokenizer import normalize_answer
    from launch.baselines import EvalSet, run_baselines
    from launch.runs import load_run
    from tests.test_sweep import write_fake_run

    cfg = replace(small_cfg, ["eval.max_samples=0"])
    root = ensure_synthetic(cfg.data.synthetic, cache_dir(cfg))
    raw = {s: json.loads((root / "music-avqa" / f"avqa-{s}.json").read_text()) for s in ("train", "test")}
    counts: dict[str, Counter] = {}
    for q in raw["train"]:
        counts.setdefault(q["question_content"].strip(), Counter())[normalize_answer(q["anser"])] += 1
    # the most frequent answer per template; ties go to the alphabetically first (the documented rule)
    guess = {t: min(a for a, k in c.items() if k == max(c.values())) for t, c in counts.items()}
    test = [q for q in raw["test"] if q["question_content"].strip() in counts]
    hits = [float(normalize_answer(q["anser"]) == guess[q["question_content"].strip()]) for q in test]
    chance = [1 / len(counts[q["question_content"].strip()]) for q in test]

    keys = [(0, str(q["question_id"])) for q in test]
    got = EvalSet(cfg).outcomes(keys)
    assert [got["majority"][k] for k in keys] == hits
    assert [got["chance"][k] for k in keys] == pytest.approx(chance)
    # a run whose summary predates the baselines gets them computed from its dataset
    run_dir = write_fake_run(tmp_path / "old", cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["baselines"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    prior = run_baselines(load_run(run_dir))
    assert prior["majority"]["n"] == len(raw["test"])
    if len(test) == len(raw["test"]):  # every test template is asked in train
        assert prior["majority"]["overall"] == pytest.approx(sum(hits) / len(hits))
        assert prior["chance"]["overall"] == pytest.approx(sum(chance) / len(chance))


@pytest.mark.slow
def test_reproduce_quick_writes_the_document(tmp_path, small_overrides):
    doc = tmp_path / "docs" / "results.md"
    out = tmp_path / "out"
    args = ["reproduce", "--quick", "--out", str(out), "--doc", str(doc), "--no-progress", "--jobs", "2",
            *(x for o in small_overrides + ["eval.probe_samples=8"] for x in ("--set", o))]
    assert main(args) == 0
    text = doc.read_text()
    for name in SWEEP_PNGS:
        assert (doc.parent / "figures" / name).read_bytes()[:8] == PNG_MAGIC
        assert f"](figures/{name})" in text
    for heading in ("Alignment helps", "Accuracy rises with the media SNR", "More tokens answer better", "Baselines"):
        assert heading in text
    assert "tokcom reproduce --out" in text and "--quick" in text
    # one seed: every verdict is undecided (the rule needs three)
    verdicts = [v for v in ("holds", "does not hold", "undecided") if f"**{v}** |" in text or f"**{v}** at" in text]
    assert verdicts == ["undecided"]
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == sorted(f"{c}_tau0.07_{i}_seed0" for c, i in [
        ("snr-20_media_awgn_a32_v32_aligned", "avt"), ("snr10_media_awgn_a32_v32_aligned", "avt"),
        ("snrinf_media_awgn_a32_v32_aligned", "avt"), ("snr10_media_rayleigh_a32_v32_aligned", "avt"),
        ("snr10_media_awgn_a32_v32_unaligned", "avt"), ("snr10_media_awgn_a8_v8_aligned", "avt"),
        ("snr10_media_awgn_a32_v32_aligned", "t")])
    run = out / "runs" / runs[0]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["baselines"]) == {"chance", "majority"}
    assert any((run / "tb").glob("events.out.tfevents.*"))
    assert main(args + ["--dry-run"]) == 0  # everything finished: nothing left to run
