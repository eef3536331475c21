"""The round timeline of a run (summary.json `timeline`): where a few rounds' wall time went.

One row per round, drawn left to right in the order the work happens: the slowest device's
compute, the uplink (its modelled airtime hatched inside it), the edge's compute, and the
hand-off of the gradients. `tokcom report` calls `section` for a run directory.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURE = "run_timeline.png"
ROUNDS = 6  # rounds drawn from each end of each stage
PARTS = (("device_ms", "device compute", "#4c72b0"), ("uplink_ms", "uplink", "#dd8452"),
         ("edge_ms", "edge compute", "#55a868"), ("downlink_ms", "downlink hand-off", "#c44e52"))


def pick(timeline: dict, n: int = ROUNDS) -> list[int]:
    """Row indices: the first and last `n` rounds of each stage."""
    rows: list[int] = []
    for stage in dict.fromkeys(timeline["stage"]):
        idx = [i for i, s in enumerate(timeline["stage"]) if s == stage]
        rows += idx[:n] + [i for i in idx[-n:] if i not in idx[:n]]
    return rows


def draw(timeline: dict, path: Path, n: int = ROUNDS) -> None:
    rows = pick(timeline, n)
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    for y, i in enumerate(rows):
        left = 0.0
        for key, label, color in PARTS:
            width = timeline[key][i]
            ax.barh(y, width, left=left, color=color, label=label if y == 0 else None)
            if key == "uplink_ms" and timeline["uplink_airtime_ms"][i] > 0:
                ax.barh(y, min(timeline["uplink_airtime_ms"][i], width), left=left, fill=False, hatch="///",
                        edgecolor="black", linewidth=0, label="of which airtime (modelled)" if y == 0 else None)
            left += width
    ax.set_yticks(range(len(rows)), [f"{timeline['stage'][i]} {timeline['step'][i]}" for i in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.set_title("Round timeline: first and last rounds of each stage")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def section(summary: dict, figdir: Path) -> dict:
    """Keyword arguments of the report's "Round timeline" section: figure, skip reason, table."""
    tl = summary.get("timeline")
    if not tl or not tl.get("step"):
        return {"skipped": "summary.json has no round timeline (a run from before it was recorded)"}
    draw(tl, Path(figdir) / FIGURE)
    n = len(tl["step"])
    means = {label: sum(tl[key]) / n for key, label, _ in PARTS}
    means["uplink airtime (modelled, inside the uplink)"] = sum(tl["uplink_airtime_ms"]) / n
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in means.items())
    return {"figure": FIGURE, "text": f"Mean over {n} training rounds, ms:\n\n| part | ms |\n|---|---|\n{rows}"}
