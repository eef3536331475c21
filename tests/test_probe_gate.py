"""The probe gate: what each template asks is recoverable from the devices' cached features.

Every answer of the generated benchmark is a function of a few per-clip facts (which
instruments sound, which are seen and where, when each starts, how loud it is). A
linear probe (logistic regression, fitted on the train clips, scored on the test clips)
recovers each fact from the selected encoder tokens that the audio or video device
transmits, well above the best constant guess. If a fact were not recoverable, no
amount of training could make the model answer the templates that need it. Facts come
from the generator's ground truth (synthetic.json), not from the features' code.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from configs.loader import load_config
from tests.conftest import REPO

pytestmark = pytest.mark.slow
SLOTS = ("left", "middle", "right")


def _facts(scene: dict, names: list[str]) -> dict[str, tuple[str, int]]:
    """fact name -> (modality that carries it, class label) for one clip."""
    src = {s["instrument"]: s for s in scene["sources"]}
    sounding = [s for s in scene["sources"] if s["sounding"]]
    out = {"heard count": ("audio", len(sounding))}
    first = min(s["onset_s"] for s in sounding)
    out["first onset"] = ("audio", int(round(first / 0.32)))
    for n in names:
        s = src.get(n)
        out[f"{n} sounds"] = ("audio", int(bool(s and s["sounding"])))
    for slot in SLOTS:  # which instrument each slot shows decides every visual answer
        at = [s["instrument"] for s in scene["sources"] if s["slot"] == slot]
        out[f"instrument at {slot}"] = ("video", names.index(at[0]) + 1 if at else 0)
    for s in sounding:  # onset and loudness of an instrument, where it sounds
        out[f"{s['instrument']} onset"] = ("audio", int(round(s["onset_s"] / 0.32)))
        out[f"{s['instrument']} level"] = ("audio", ("soft", "moderate", "loud").index(s["level"]))
    return out


@pytest.fixture(scope="module")
def probe_data(cache_dir):
    from device_node.build import build_device
    from foundation.data import ensure_synthetic, open_dataset

    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"data.cache_dir={cache_dir}"])  # the embedded default
    dataset = open_dataset(cfg.data, cache_dir=cache_dir)
    truth = json.loads((ensure_synthetic(cfg.data.synthetic, cache_dir) / "synthetic.json").read_text())
    names = [i["name"] for i in truth["instruments"]]
    feats = {m: build_device(cfg, 0, m, dataset, cache_dir).features for m in ("audio", "video")}
    return truth, names, feats


def test_every_fact_is_recoverable_from_the_transmitted_tokens(probe_data):
    from sklearn.linear_model import LogisticRegression

    truth, names, feats = probe_data
    by_split = {sp: [s for s in truth["scenes"] if s["split"] == sp] for sp in ("train", "test")}
    rows = {sp: [(s["clip_id"], _facts(s, names)) for s in scenes] for sp, scenes in by_split.items()}
    fact_names = sorted({f for _, facts in rows["train"] for f in facts})
    weak = []
    for fact in fact_names:
        data = {}
        for sp in ("train", "test"):
            pairs = [(c, f[fact]) for c, f in rows[sp] if fact in f]
            modality = pairs[0][1][0]
            x = feats[modality]([c for c, _ in pairs]).reshape(len(pairs), -1).numpy()  # (n, s*e)
            data[sp] = (x, np.array([lab for _, (_, lab) in pairs]))
        (xtr, ytr), (xte, yte) = data["train"], data["test"]
        if len(set(ytr)) < 2 or len(yte) < 20:
            continue
        probe = LogisticRegression(C=0.05, max_iter=2000).fit(xtr, ytr)
        acc = float((probe.predict(xte) == yte).mean())
        constant = float(np.bincount(yte).max() / len(yte))
        if acc < max(0.8, constant + 0.1):
            weak.append(f"{fact}: probe {acc:.2f}, constant guess {constant:.2f}, n={len(yte)}")
    assert not weak, "facts the transmitted tokens do not carry:\n" + "\n".join(weak)
