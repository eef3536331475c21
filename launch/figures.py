"""The report's figures: matplotlib (Agg backend) drawings of plain arrays, one PNG each.

Each function takes numbers already reduced (means over seeds, etc.) and a path,
draws, saves and returns the path; none of them reads a run directory.
Shapes: `n` points per modality, `d` feature width.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MODALITY_COLOURS = {"audio": "tab:blue", "video": "tab:orange", "text": "tab:green"}
DPI = 120
BASELINE_COLOURS = ("grey", "tab:brown", "tab:purple", "tab:olive", "tab:cyan", "black", "tab:pink")
EXACT_TSNE_MAX = 1500  # points


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average; the first points average what exists so far."""
    y = np.asarray(y, dtype=np.float64)
    if window <= 1 or y.size == 0:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, y.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def smoothing_window(n: int) -> int:
    """About a tenth of the curve, at most 25 steps."""
    return max(1, min(25, n // 10))


def loss_curves(panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: str | Path,
                ylabel: str = "loss (moving average)") -> Path:
    """One panel per key of `panels`, one line per label: (steps, smoothed loss)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for label, (x, y) in lines.items():
            ax.plot(x, y, label=label, linestyle="--" if "unaligned" in label else "-")
        ax.set_title(textwrap.fill(title, 60), fontsize=9)
        ax.set_xlabel("round (step)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def accuracy_vs_snr(panels: dict[str, dict[str, tuple[list, list, list]]], path: str | Path,
                    baselines: dict[str, float] | None = None, xlabel: str = "SNR (dB)") -> Path:
    """One panel per key (e.g. fading model); per label (snrs, mean accuracy, error) with
    error bars; optional labelled horizontal lines (baselines)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False, sharey=True)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for label, (x, m, s) in lines.items():
            ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=label,
                        linestyle="--" if "unaligned" in label else "-")
        for i, (name, value) in enumerate((baselines or {}).items()):
            colour = BASELINE_COLOURS[i % len(BASELINE_COLOURS)]
            ax.axhline(value, color=colour, linestyle=":", linewidth=1.2, label=name)
        ax.set_title(title)
        ax.set_xlabel(textwrap.fill(xlabel, 50), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("accuracy")
    return _save(fig, path)


def tsne_points(feats: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """2-D t-SNE of every modality's (n, d) features together -> {modality: (n, 2)}."""
    from sklearn.manifold import TSNE

    names = list(feats)
    x = np.concatenate([np.asarray(feats[m], dtype=np.float64) for m in names])  # (sum n, d)
    perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3)))
    # Exact gradients for the few hundred probe points: Barnes-Hut's OpenMP threads measured
    # 30x slower than exact on a loaded 2-core machine.
    method = "exact" if x.shape[0] <= EXACT_TSNE_MAX else "barnes_hut"
    y = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
             method=method).fit_transform(x)  # (sum n, 2)
    out, start = {}, 0
    for m in names:
        n = len(feats[m])
        out[m] = y[start:start + n]
        start += n
    return out


def tsne_grid(columns: dict[str, dict[str, dict[str, np.ndarray]]], path: str | Path) -> Path:
    """Columns (e.g. one per tau) x rows ('before', 'after'): {modality: (n, 2)} scatters."""
    rows = ["before", "after"]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(4 * len(columns), 7.5), squeeze=False)
    for j, (col, by_row) in enumerate(columns.items()):
        for i, row in enumerate(rows):
            ax = axes[i][j]
            for m, pts in by_row[row].items():
                ax.scatter(pts[:, 0], pts[:, 1], s=10, alpha=0.8, label=m, color=MODALITY_COLOURS.get(m))
            ax.set_title(f"{col}: {row} alignment", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    return _save(fig, path)


def accuracy_vs_cost(points: list[tuple[str, float, float, float]], path: str | Path) -> Path:
    """(label, channel uses per sample, mean accuracy, std), one point each."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs = [p[1] for p in points]
    ax.errorbar(xs, [p[2] for p in points], yerr=[p[3] for p in points], marker="o", capsize=3, linestyle="-")
    for label, x, m, _ in points:
        ax.annotate(label, (x, m), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("uplink channel uses per sample (complex symbols)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy against communication cost")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def bars(values: dict[str, float], path: str | Path, title: str, ylabel: str,
         errors: dict[str, float] | None = None) -> Path:
    """One bar per key (e.g. accuracy per question type)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(values) + 2), 4))
    keys = list(values)
    ax.bar(keys, [values[k] for k in keys], yerr=[errors[k] for k in keys] if errors else None, capsize=3)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=45)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def link_bars(entries: list[dict], path: str | Path) -> Path:
    """Per link and direction: payload MB (left) and p50/p95/p99 latency in ms (right)."""
    labels = [f"{e['link']} ({e['direction'][0]})" for e in entries]
    y = np.arange(len(entries))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 0.4 * len(entries) + 2), sharey=True)
    a1.barh(y, [e["payload_bytes"] / 1e6 for e in entries], color="tab:blue")
    a1.set_yticks(y, labels, fontsize=8)
    a1.set_xlabel("payload (MB)")
    a1.set_title("bytes per link")
    h = 0.27
    for k, (q, colour) in enumerate((("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red"))):
        a2.barh(y + (k - 1) * h, [e["latency_ms"].get(q) or 0.0 for e in entries], height=h, label=q, color=colour)
    a2.set_xlabel("latency (ms)")
    a2.set_title("latency per link")
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def scaling_figure(series: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """Round time and samples per second against users, one line per schedule; beside the
    concurrent round time, the line it would follow if it grew as its wire bytes per round.
    series: schedule -> {"users", "round_ms", "samples_per_s", "wire"} (lists, users ascending)."""
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
    for name, s in series.items():
        ax_t.plot(s["users"], s["round_ms"], marker="o", label=f"{name}: round time")
        ax_s.plot(s["users"], s["samples_per_s"], marker="o", label=name)
    if "concurrent" in series:
        c = series["concurrent"]
        bytes_line = [c["round_ms"][0] * w / c["wire"][0] for w in c["wire"]]
        ax_t.plot(c["users"], bytes_line, linestyle="--", color="grey", label="concurrent, grown as wire bytes")
    for ax, label in ((ax_t, "median training round (ms)"), (ax_s, "training samples per second")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("users (3 devices each)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_t.set_yscale("log")
    return _save(fig, path)
