"""`tokcom sweep`: grid expansion, cell names and overrides (media links only, inf,
the equal-rounds alignment control), resumability and parallel cells with an injected
runner, and results.csv against hand-computed numbers. The slow tests run real tiny sweeps."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from configs.schema import ConfigError
from configs.loader import dump_config, load_config, replace
from launch.cli import main
from launch.grid import AXES, cell_name, cell_overrides, expand, full_grid, parse_list, unique_cells
from launch.runs import uplink_per_sample, write_results
from launch.sweep import RunSpec, run_sweep

AXIS = {a.key: a for a in AXES}
QTYPES9 = ["A-Count", "A-Cmp", "V-Count", "V-Loc", "AV-Ext", "AV-Count", "AV-Loc", "AV-Cmp", "AV-Temp"]


# ---------------------------------------------------------------- fake run directories (also used by test_report)


def fake_links(per_link_symbols: dict[str, int], samples: int, latency: bool = False) -> list[dict]:
    """links.json for one user: each modality sends `symbols` complex symbols per sample (float32 pairs)."""
    lat = {"p50": 1.0, "p95": 2.0, "p99": 3.0, "mean": 1.2} if latency else \
        {"p50": None, "p95": None, "p99": None, "mean": None}
    out = []
    for m, c in per_link_symbols.items():
        out.append({"link": f"user0/{m}->relay", "direction": "uplink", "messages": 4, "payload_bytes": 8 * c * samples,
                    "wire_bytes": 8 * c * samples + 100, "channel_uses": c * samples, "samples": samples,
                    "latency_ms": lat})
        out.append({"link": f"relay->user0/{m}", "direction": "downlink", "messages": 4, "payload_bytes": 777,
                    "wire_bytes": 800, "channel_uses": 0, "samples": 0, "latency_ms": lat})
    out.append({"link": "user0/text->relay (labels)", "direction": "uplink", "messages": 4, "payload_bytes": 999,
                "wire_bytes": 999, "channel_uses": 0, "samples": samples, "latency_ms": lat})
    return out


def write_fake_run(path: Path, cfg, acc: float = 0.5, losses: list[float] | None = None,
                   links: list[dict] | None = None, probes: dict | None = None) -> Path:
    """A finished run directory in the DESIGN.md format, written by hand."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, path / "config.yaml")
    losses = losses if losses is not None else [3.0 - 0.01 * i for i in range(cfg.train.stage2.steps)]
    with open(path / "metrics.jsonl", "w") as f:
        rows = [("stage1", i, 4.0) for i in range(cfg.train.stage1.steps)]
        rows += [("stage2", i, loss) for i, loss in enumerate(losses)]
        for stage, i, loss in rows:
            f.write(json.dumps({"stage": stage, "step": i, "user": 0, "loss": loss, "lr": 1e-3, "wall_s": 0.1}) + "\n")
    a, v = cfg.transmitter.audio.tokens, cfg.transmitter.video.tokens
    links = links if links is not None else fake_links({"audio": a * 64, "video": v * 64, "text": 32 * 64}, 40)
    (path / "links.json").write_text(json.dumps(links))
    def per_type(x: float) -> dict:
        return {"overall": x, "n": 40, **{q: x for q in QTYPES9}, "Audio": x, "Visual": x, "Audio-Visual": x}

    summary = {"accuracy": per_type(acc), "baselines": {"chance": per_type(0.2), "majority": per_type(0.3)},
               "steps": {"stage1": cfg.train.stage1.steps, "stage2": cfg.train.stage2.steps},
               "wall_s": 12.5, "samples_per_s": 9.0, "step_time_breakdown_ms": {"total": 5.0},
               "loss": {"stage2": {"first": losses[0], "last": losses[-1]}} if losses else {},
               "processes": [{"role": "reference", "pid": 1, "host": "h"}]}
    if probes:
        for tag, feats in probes.items():
            torch.save(feats, path / f"probe_{tag}.pt")
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture(scope="module")
def base():
    return load_config(None, ["train.stage1.steps=5", "train.stage2.steps=20"])


# ---------------------------------------------------------------- grid


CELL = {"snr_db": 10.0, "snr_links": "media", "fading": "awgn", "audio_tokens": 32, "video_tokens": 32,
        "align": "aligned", "tau": 0.07, "inputs": "audio+video+text", "seed": 0}


def test_parse_list_types_and_errors():
    assert parse_list(AXIS["snr_db"], "0, 3,6,3") == [0.0, 3.0, 6.0]
    assert parse_list(AXIS["snr_db"], "-40,inf") == [-40.0, math.inf]
    assert parse_list(AXIS["audio_tokens"], "16,32") == [16, 32]
    assert parse_list(AXIS["align"], "aligned,unaligned,skip") == ["aligned", "unaligned", "skip"]
    assert parse_list(AXIS["inputs"], "audio+video+text,text") == ["audio+video+text", "text"]
    with pytest.raises(ConfigError, match="--snr-db"):
        parse_list(AXIS["snr_db"], "0,ten")
    with pytest.raises(ConfigError, match="--snr-db"):
        parse_list(AXIS["snr_db"], "-inf")
    with pytest.raises(ConfigError, match="--align"):
        parse_list(AXIS["align"], "aligned,sideways")
    with pytest.raises(ConfigError, match="--snr-links"):
        parse_list(AXIS["snr_links"], "audio")
    with pytest.raises(ConfigError, match="--inputs"):
        parse_list(AXIS["inputs"], "audio+video")
    with pytest.raises(ConfigError, match="--seeds"):
        parse_list(AXIS["seed"], " , ")


def test_grid_is_the_product_with_base_values_filled_in(base):
    grid = full_grid(base, {"snr_db": [0.0, 10.0], "align": ["aligned", "unaligned"], "seed": [0, 1, 2]})
    assert grid["fading"] == ["awgn"] and grid["audio_tokens"] == [32] and grid["tau"] == [0.07]
    assert grid["snr_links"] == ["media"]  # the default, whatever the base config says
    cells = expand(grid)
    assert len(cells) == 2 * 2 * 3
    assert len({cell_name(c) for c in cells}) == 12
    assert cells[0] == {**CELL, "snr_db": 0.0}
    assert cells[1]["seed"] == 1 and cells[3]["align"] == "unaligned" and cells[6]["snr_db"] == 10.0
    with pytest.raises(ConfigError, match="unknown sweep axes"):
        full_grid(base, {"snr": [1.0]})


def test_cell_names_are_readable():
    assert cell_name(CELL) == "snr10_media_awgn_a32_v32_aligned_tau0.07_avt_seed0"
    assert cell_name({**CELL, "snr_db": -2.5, "snr_links": "all", "fading": "rician", "audio_tokens": 64,
                      "align": "unaligned", "tau": 0.13, "inputs": "text", "seed": 2}) \
        == "snr-2.5_all_rician_a64_v32_unaligned_tau0.13_t_seed2"
    assert cell_name({**CELL, "snr_db": math.inf}).startswith("snrinf_media_")


def test_media_overrides_hold_the_text_link(base):
    two = replace(base, ["users=2"])
    cell = {**CELL, "snr_db": -30.0, "fading": "rayleigh", "audio_tokens": 16, "video_tokens": 64,
            "align": "unaligned", "tau": 0.03, "inputs": "text", "seed": 7}
    cfg = replace(two, cell_overrides(cell, users=2))
    for u in (0, 1):
        for m in ("audio", "video"):
            assert (cfg.channel.link(f"user{u}/{m}").snr_db, cfg.channel.link(f"user{u}/{m}").fading) \
                == (-30.0, "rayleigh")
        assert (cfg.channel.link(f"user{u}/text").snr_db, cfg.channel.link(f"user{u}/text").fading) == (10.0, "awgn")
    assert (cfg.transmitter.audio.tokens, cfg.transmitter.video.tokens, cfg.train.tau, cfg.seed) == (16, 64, 0.03, 7)
    assert cfg.transmitter.order == ("text",)
    # the equal-rounds control: InfoNCE off, stage 1 keeps its rounds
    assert cfg.train.align_weight == 0.0 and cfg.train.stage1.steps == base.train.stage1.steps
    noise_free = replace(base, cell_overrides({**CELL, "snr_db": math.inf}))
    assert noise_free.channel.link("user0/audio").snr_db == math.inf
    assert noise_free.channel.link("user0/text").snr_db == 10.0


def test_all_links_and_skip_overrides(base):
    cfg = replace(base, cell_overrides({**CELL, "snr_db": 3.0, "snr_links": "all", "fading": "rician",
                                        "align": "skip"}))
    assert (cfg.channel.snr_db, cfg.channel.fading, cfg.channel.links) == (3.0, "rician", {})
    assert cfg.channel.link("user0/text").snr_db == 3.0
    assert cfg.train.stage1.steps == 0 and cfg.train.stage2.steps == base.train.stage2.steps
    assert replace(base, cell_overrides(CELL)).train.stage1.steps == 5


def test_unique_cells_drops_repeats_in_order():
    a = {**CELL, "audio_tokens": 8}
    b = {**a, "audio_tokens": 16}
    assert unique_cells([a, b, dict(a)]) == [a, b]


# ---------------------------------------------------------------- per-sample cost


def test_uplink_per_sample_by_hand():
    def e(link, direction, payload, uses, samples):
        return {"link": link, "direction": direction, "payload_bytes": payload, "channel_uses": uses,
                "samples": samples}

    links = [
        e("user0/audio->relay", "uplink", 8000, 1000, 10),
        e("user0/video->relay", "uplink", 4000, 500, 10),
        e("user0/text->relay", "uplink", 2000, 250, 10),
        e("user0/text->relay (labels)", "uplink", 99999, 0, 10),
        e("relay->user0/audio", "downlink", 77777, 0, 0),
        e("user1/audio->relay", "uplink", 12000, 1500, 20),
        e("user1/video->relay", "uplink", 6000, 750, 20),
        e("user1/text->relay", "uplink", 2000, 250, 20),
    ]
    got = uplink_per_sample(links)
    # user0: (8000 + 4000 + 2000) / 10 = 1400 B, 175 uses; user1: 20000 / 20 = 1000 B, 125 uses; mean over users
    assert got["payload_bytes_per_sample"] == pytest.approx(1200.0)
    assert got["channel_uses_per_sample"] == pytest.approx(150.0)
    assert math.isnan(uplink_per_sample([])["channel_uses_per_sample"])


# ---------------------------------------------------------------- resumability and results.csv


class Recorder:
    """An injected runner: records each call, writes a finished run, or fails on request."""

    def __init__(self, fail: set[str] = frozenset()):
        self.calls: list[str] = []
        self.fail = set(fail)

    def __call__(self, spec: RunSpec) -> None:
        self.calls.append(spec.out.name)
        if spec.out.name in self.fail:
            spec.out.mkdir(parents=True, exist_ok=True)
            (spec.out / "metrics.jsonl").write_text("")  # a crash leaves no summary.json
            raise RuntimeError("boom")
        write_fake_run(spec.out, load_config(spec.config, list(spec.overrides)), acc=0.25)


def _cells(base, snrs):
    return expand(full_grid(base, {"snr_db": snrs}))


BASE_OVR = ["train.stage1.steps=5", "train.stage2.steps=20"]


def test_finished_cells_are_skipped_and_crashed_cells_rerun(tmp_path, base):
    cells = _cells(base, [0.0, 5.0, 10.0])
    names = [cell_name(c) for c in cells]
    # cell 0 finished in an earlier invocation
    write_fake_run(tmp_path / "runs" / names[0], replace(base, cell_overrides(cells[0])), acc=0.75)
    rec = Recorder(fail={names[2]})
    outcome = run_sweep(None, BASE_OVR, cells, tmp_path, runner=rec, progress=False)
    assert rec.calls == names[1:]
    assert outcome.skipped == [names[0]] and outcome.ran == [names[1]] and outcome.failed == [names[2]]
    assert not (tmp_path / "runs" / names[2] / "summary.json").exists()

    rec2 = Recorder()
    outcome2 = run_sweep(None, BASE_OVR, cells, tmp_path, runner=rec2, progress=False)
    assert rec2.calls == [names[2]] and outcome2.failed == []
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["run"] for r in rows] == names
    assert [float(r["accuracy"]) for r in rows] == [0.75, 0.25, 0.25]


def test_a_finished_cell_with_another_config_is_an_error(tmp_path, base):
    cells = _cells(base, [0.0])
    other = replace(base, cell_overrides(cells[0]) + ["train.stage2.steps=99"])
    write_fake_run(tmp_path / "runs" / cell_name(cells[0]), other)
    rec = Recorder()
    with pytest.raises(ConfigError, match="different config"):
        run_sweep(None, BASE_OVR, cells, tmp_path, runner=rec, progress=False)
    assert rec.calls == []


def test_a_cell_the_base_overrides_undo_is_an_error(tmp_path, base):
    cells = _cells(base, [0.0])
    with pytest.raises(ConfigError, match="train.stage1.steps"):
        run_sweep(None, ["train.stage1.steps=0"], cells, tmp_path, runner=Recorder(), progress=False)
    with pytest.raises(ConfigError, match="align=aligned but its config reads back as unaligned"):
        run_sweep(None, BASE_OVR + ["train.align_weight=0"], cells, tmp_path, runner=Recorder(), progress=False)


def test_parallel_cells_warm_the_caches_first_and_all_run(tmp_path, base):
    cells = _cells(base, [-10.0, 0.0, 10.0, math.inf])
    warmed = []
    rec = Recorder(fail={cell_name(cells[1])})
    outcome = run_sweep(None, BASE_OVR, cells, tmp_path, runner=rec, progress=False, jobs=2,
                        warm=lambda cfgs: warmed.extend(c.channel.link("user0/audio").snr_db for c in cfgs))
    assert warmed == [-10.0, 0.0, 10.0, math.inf] and sorted(rec.calls) == sorted(cell_name(c) for c in cells)
    assert sorted(outcome.ran) == sorted(cell_name(c) for c in cells if c is not cells[1])
    assert outcome.failed == [cell_name(cells[1])]
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert sorted(float(r["snr_db"]) for r in rows) == [-10.0, 10.0, math.inf]


def test_results_csv_columns_and_values(tmp_path, base):
    cfg = replace(base, ["channel.snr_db=6.0", "transmitter.audio.tokens=16", "train.stage1.steps=0", "seed=3"])
    links = fake_links({"audio": 512, "video": 1024, "text": 1024}, samples=24)
    write_fake_run(tmp_path / "runs" / "one", cfg, acc=0.4, losses=[2.0, 1.5, 1.25], links=links)
    (tmp_path / "runs" / "unfinished").mkdir()
    write_results(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 1
    row = rows[0]
    needed = ["snr_db", "snr_links", "text_snr_db", "fading", "audio_tokens", "video_tokens", "align", "tau",
              "inputs", "seed", "accuracy", "chance", "majority",
              *(f"acc_{q}" for q in QTYPES9), "acc_Audio", "acc_Visual", "acc_Audio-Visual",
              "payload_bytes_per_sample", "channel_uses_per_sample", "stage1_steps", "stage2_steps",
              "stage2_loss_last", "wall_s"]
    assert set(needed) <= set(row)
    assert (float(row["snr_db"]), row["snr_links"], float(row["text_snr_db"]), row["fading"], int(row["audio_tokens"]),
            int(row["video_tokens"]), row["align"], float(row["tau"]), row["inputs"], int(row["seed"])) \
        == (6.0, "all", 6.0, "awgn", 16, 32, "skip", 0.07, "audio+video+text", 3)
    assert (float(row["chance"]), float(row["majority"])) == (0.2, 0.3)
    assert float(row["accuracy"]) == 0.4 and float(row["acc_AV-Temp"]) == 0.4
    # 512 + 1024 + 1024 complex symbols per sample, 8 bytes each (two float32)
    assert float(row["channel_uses_per_sample"]) == 2560
    assert float(row["payload_bytes_per_sample"]) == 2560 * 8
    assert (int(row["stage1_steps"]), int(row["stage2_steps"]), float(row["stage2_loss_last"])) == (0, 20, 1.25)
    assert float(row["wall_s"]) == 12.5


def test_cli_sweep_with_injected_runner(tmp_path, monkeypatch, capsys):
    from launch import sweep

    rec = Recorder()
    monkeypatch.setattr(sweep, "run_inprocess", rec)
    args = ["sweep", "--out", str(tmp_path), "--snr-db", "0,10", "--align", "aligned,unaligned", "--no-progress",
            *(x for o in BASE_OVR for x in ("--set", o))]
    assert main(args) == 0
    assert len(rec.calls) == 4
    spec = json.loads((tmp_path / "sweep.json").read_text())
    assert spec["grid"]["snr_db"] == [0.0, 10.0] and len(spec["cells"]) == 4
    assert main(args) == 0 and len(rec.calls) == 4  # all finished: nothing reruns
    assert "0 ran, 4 already finished" in capsys.readouterr().out
    assert main(["sweep", "--out", str(tmp_path), "--fading", "fog", "--no-progress"]) == 2
    assert main(["sweep", "--out", str(tmp_path), "--jobs", "0", "--no-progress"]) == 2


# ---------------------------------------------------------------- real runs


@pytest.mark.slow
def test_real_sweep_inprocess_then_resume(tmp_path, small_overrides, capsys):
    args = ["sweep", "--out", str(tmp_path), "--snr-db", "0,10", "--no-progress",
            *(x for o in small_overrides for x in ("--set", o))]
    assert main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert sorted(float(r["snr_db"]) for r in rows) == [0.0, 10.0]
    assert all(int(r["n"]) == 16 and 0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    # the tiny LM is 128 wide: 32 audio + 32 video + 32 text tokens -> 96 * 128 / 2 complex symbols per clip
    assert all(float(r["channel_uses_per_sample"]) == 96 * 128 / 2 for r in rows)
    capsys.readouterr()
    assert main(args) == 0
    assert "0 ran, 2 already finished" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_sweep_cluster_one_cell(tmp_path, small_overrides):
    args = ["sweep", "--out", str(tmp_path), "--cluster", "--no-progress",
            *(x for o in small_overrides for x in ("--set", o))]
    assert main(args) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    links = json.loads((run_dir / "links.json").read_text())
    assert any(e["latency_ms"]["p50"] is not None for e in links)
    assert (run_dir / "logs").is_dir()
