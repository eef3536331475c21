"""`tokcom bench`: the transport's figures, measured side by side in one run.

1. round time: the cluster (`tokcom run`) against the in-process reference, same config, in
   back-to-back pairs (`--pairs`, the median pair is the figure);
2. one stream hop (encode, gRPC, decode, acknowledge) against raw loopback TCP for the same
   bytes, 1/4/8/16 MiB;
3. wire bytes against payload bytes per link (from the cluster run of 1);
4. transport ms per round at this run's shapes and at the paper's (s_A 64, s_V 32, text 64,
   d 1536, b 8): the real relay, the real edge hub and device clients, synthetic symbols and
   gradients; each beside its floor, the same round's bytes through the same processes and
   streams as raw gRPC (`launch.bench_floor`), so what tokcom adds to grpcio is measured.

Prints a table and writes `OUT/bench.json` with the machine described. Every process it
starts is its own child, stopped by pid. Run it alone on the machine (timings).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import grpc
import torch

from configs.args import add_config_arguments
from configs.loader import load_config
from foundation.lm import PAPER_LM, lm_width
from launch.procs import Children, HealthProbe, child_env, read_port, wait_until

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
SIZES_MIB = (1, 4, 8, 16)
FIGURES = ("rounds", "hop", "transport", "paper")
PAPER = ["transmitter.audio.tokens=64", "transmitter.video.tokens=32", "data.text_len=64"]
TARGETS = {"cluster_over_reference": 1.15, "hop_over_tcp": 0.5, "relay_edge_over_uplinks": 1.02,
           "wire_over_payload": 1.01, "paper_transport_ms": 30.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", default="runs/bench", help="folder for bench.json and the runs it makes")
    p.add_argument("--steps", default="50,150", help="stage-1,stage-2 rounds of the round-time comparison")
    p.add_argument("--pairs", type=int, default=3, help="back-to-back pairs (reference, cluster) of the round-time "
                                                        "comparison; the median pair is the figure")
    p.add_argument("--rounds", type=int, default=40, help="rounds of the transport and paper figures")
    p.add_argument("--repeats", type=int, default=20, help="timed messages per size for the hop figure")
    p.add_argument("--only", default="", help=f"comma list of figures to measure: {','.join(FIGURES)} (default all)")
    p.add_argument("--scaling", action="store_true",
                   help="instead: the many-users benchmark (launch/bench_scaling.py): OUT/scaling.json, scaling.png")
    p.add_argument("--scaling-users", default="1,2,4,8,16,32", help="user counts of --scaling")
    p.add_argument("--scaling-steps", default="2,8", help="stage-1,stage-2 rounds of each --scaling run")
    p.add_argument("--per-host", type=int, default=16, help="users per device host in --scaling")
    p.add_argument("--lock", default="", help="hold flock(2) on this file during each --scaling run, e.g. "
                                                "/tmp/tokcom-bench.lock, so timings never overlap")


def machine() -> dict:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "torch": torch.__version__, "grpc": grpc.__version__, "platform": platform.platform()}


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


# ---------------------------------------------------------------- 1 and 3: a real run both ways

def _one_pair(config: str | None, over: list[str], out: Path) -> tuple[dict, dict, list[dict]]:
    """The reference, then the cluster, same config: their summaries and the cluster's links."""
    from launch.reference import run_reference

    ref = run_reference(load_config(config, over), str(out / "reference"), progress=False)
    children = Children()
    argv = _python("-m", "launch.cli", "run", "--out", str(out / "cluster"), "--no-progress", *_sets(over))
    if config:
        argv += ["--config", config]
    child = children.start("cluster", argv, out / "cluster.log", child_env(REPO))
    left = children.wait([child], 3600)
    children.stop(10.0)
    if left or child.returncode != 0:
        raise RuntimeError(f"the cluster run failed; see {out / 'cluster.log'}")
    run = json.loads((out / "cluster" / "summary.json").read_text())
    return ref, run, json.loads((out / "cluster" / "links.json").read_text())


def round_time(config: str | None, overrides: list[str], out: Path, steps: tuple[int, int], pairs: int = 1) -> dict:
    """`pairs` back-to-back pairs (reference, then cluster), so that each ratio is taken at one
    moment of the machine; the figure is the median pair's, with every pair's ratio beside it."""
    over = overrides + [f"train.stage1.steps={steps[0]}", f"train.stage2.steps={steps[1]}", "eval.max_samples=16"]
    runs = []
    for k in range(pairs):
        log.info("rounds: pair %d of %d", k + 1, pairs)
        runs.append(_one_pair(config, over, out / f"pair{k}" if pairs > 1 else out))
    ratios = [run["wall_s"] / ref["wall_s"] for ref, run, _ in runs]
    ref, run, links = runs[sorted(range(pairs), key=ratios.__getitem__)[pairs // 2]]  # the median pair
    uplinks = sum(e["payload_bytes"] for e in links if e["link"].startswith("user") and e["direction"] == "uplink")
    relay_edge = next(e for e in links if e["link"] == "relay->edge")["payload_bytes"]
    per_link = {f"{e['link']} ({e['direction']})": {"payload_bytes": e["payload_bytes"], "wire_bytes": e["wire_bytes"],
                                                   "wire_over_payload": e["wire_bytes"] / e["payload_bytes"]
                                                   if e["payload_bytes"] else None} for e in links}
    return {"steps": list(steps),
            "reference": {"wall_s": ref["wall_s"], "round_ms": ref["step_time_breakdown_ms"]["total"],
                          "breakdown_ms": ref["step_time_breakdown_ms"]},
            "cluster": {"wall_s": run["wall_s"], "round_ms": run["step_time_breakdown_ms"]["total"],
                        "breakdown_ms": run["step_time_breakdown_ms"]},
            "cluster_over_reference": run["wall_s"] / ref["wall_s"], "rounds": sum(steps),
            "pairs": [{"reference_wall_s": r["wall_s"], "cluster_wall_s": c["wall_s"], "ratio": x}
                      for (r, c, _), x in zip(runs, ratios)],
            "relay_edge_over_uplinks": relay_edge / uplinks, "links": per_link}


# ---------------------------------------------------------------- 2: one hop against raw TCP

def _serve(children: Children, name: str, argv: list[str], out: Path, deadline: float, health: bool) -> str:
    port_file = out / f"{name}.port"
    port_file.unlink(missing_ok=True)
    children.start(name, argv + ["--port-file", str(port_file)], out / f"{name}.log", child_env(REPO))
    port = wait_until(f"{name}'s port file", lambda: read_port(port_file), children, deadline)
    address = f"127.0.0.1:{port}"
    if health:
        with HealthProbe(address) as probe:
            wait_until(f"{name}'s health check", probe.serving, children, deadline)
    return address


def hop_throughput(out: Path, repeats: int) -> dict:
    children = Children()
    deadline = time.monotonic() + 300
    result = out / "hop.json"
    try:
        addrs = {kind: _serve(children, f"sink-{kind}", _python("-m", "launch.bench_roles", f"sink-{kind}"), out,
                              deadline, health=kind == "grpc") for kind in ("tcp", "grpc")}
        client = children.start("client", _python(
            "-m", "launch.bench_roles", "client", "--address", addrs["grpc"], "--tcp-address", addrs["tcp"],
            "--out", str(result), "--sizes", ",".join(map(str, SIZES_MIB)), "--repeats", str(repeats)),
            out / "client.log", child_env(REPO))
        if children.wait([client], 600) or client.returncode != 0:
            raise RuntimeError(f"the hop client failed; see {out / 'client.log'}")
        results = json.loads(result.read_text())
    finally:
        children.stop(5.0)
    return hop_rows(results, SIZES_MIB)


def hop_rows(results: dict, sizes_mib) -> dict:
    """The client's timings -> per size: each way's medians and ratio, and the worse ratio."""
    rows = {}
    for m in map(str, sizes_mib):
        row = {}
        for mode, res in results.items():
            g, r, t = res["grpc"][m], res["raw"][m], res["tcp"][m]
            row[mode] = {"hop_ms": g["median_ms"], "raw_ms": r["median_ms"], "tcp_ms": t["median_ms"],
                         "hop_mb_s": g["mb_per_s"], "raw_mb_s": r["mb_per_s"], "tcp_mb_s": t["mb_per_s"],
                         "hop_over_tcp": g["mb_per_s"] / t["mb_per_s"], "raw_over_tcp": r["mb_per_s"] / t["mb_per_s"],
                         "best_hop_ms": g["best_ms"], "best_raw_ms": r["best_ms"], "best_tcp_ms": t["best_ms"]}
        row["hop_over_tcp"] = min(r["hop_over_tcp"] for r in row.values())  # the worse of the two ways
        rows[m] = row
    return rows


# ---------------------------------------------------------------- 4: a round's transport alone, and its floor

def _round(name: str, edge: list[str], relay: list[str], device: list[str], out: Path) -> dict:
    """Start an edge, a relay and the three devices (each role's argv without its addresses),
    wait for the edge to finish its rounds, stop them all; the edge's JSON."""
    children = Children()
    deadline = time.monotonic() + 600
    result = out / f"{name}.json"
    try:
        edge_at = _serve(children, f"{name}-edge", edge + ["--out", str(result)], out, deadline, health=True)
        relay_at = _serve(children, f"{name}-relay", relay + ["--edge", edge_at], out, deadline, health=True)
        for m in ("audio", "video", "text"):
            children.start(f"{name}-{m}", device + ["--modality", m, "--address", relay_at], out / f"{name}-{m}.log",
                           child_env(REPO))
        edge_child = next(c for c in children if c.name == f"{name}-edge")
        if children.wait([edge_child], max(0.0, deadline - time.monotonic())) or edge_child.returncode != 0:
            raise RuntimeError(f"the {name} edge failed; see {out / f'{name}-edge.log'}")
    finally:
        children.stop(5.0)
    return json.loads(result.read_text())


def transport(cfg_args: list[str], out: Path, rounds: int, width: int, name: str) -> dict:
    """Rounds through the real relay, hub and device clients around synthetic compute, at these
    shapes (`launch.bench_roles`): the round time is the transport's."""
    role, shape = _python("-m", "launch.bench_roles"), cfg_args + ["--width", str(width)]
    data = _round(name, role + ["edge", "--rounds", str(rounds), *shape],
                  _python("-m", "launch.cli", "relay", "--insecure", *cfg_args), role + ["device", *shape], out)
    rows = data["rounds"][3:]  # the first rounds warm up the streams and allocators
    ms = sorted(r["round_ms"] - r["device_ms"] for r in rows)
    links = {f"{e['link']} ({e['direction']})": e for e in data["links"]}
    payload = sum(e["payload_bytes"] for k, e in links.items() if k.startswith("user") and "uplink" in k)
    return {"width": width, "rounds": len(rows), "transport_ms_median": ms[len(ms) // 2],
            "transport_ms_mean": sum(ms) / len(ms), "uplink_bytes_per_round": payload / len(data["rounds"]),
            "links": {k: {"messages": e["messages"], "payload_bytes": e["payload_bytes"], "wire_bytes": e["wire_bytes"],
                          "latency_p50_ms": e["latency_ms"]["p50"]} for k, e in links.items()}}


def floor(cfg_args: list[str], out: Path, rounds: int, width: int, name: str) -> dict:
    """The same round's bytes through the same processes and streams as raw bytes
    (`launch.bench_floor`): what grpcio alone costs for them on this machine."""
    role, shape = _python("-m", "launch.bench_roles"), cfg_args + ["--width", str(width)]
    data = _round(f"floor-{name}", role + ["floor-edge", "--rounds", str(rounds), *shape], role + ["floor-relay"],
                  role + ["floor-device", *shape], out)
    ms = sorted(r["round_ms"] for r in data["rounds"][3:])  # the first rounds warm up the streams
    return {"width": width, "rounds": len(ms), "round_ms_median": ms[len(ms) // 2], "round_ms_mean": sum(ms) / len(ms),
            "bytes_per_round": data["bytes_per_round"], "part_bytes": data["part_bytes"]}


def shapes(config: str | None, overrides: list[str], out: Path, rounds: int, width: int, name: str) -> dict:
    """One round's transport at these shapes, then the floor under it."""
    cfg_args = (["--config", config] if config else []) + _sets(overrides)
    res = transport(cfg_args, out, rounds, width, name)
    res["floor"] = floor(cfg_args, out, rounds, width, name)
    res["over_floor_ms"] = res["transport_ms_median"] - res["floor"]["round_ms_median"]
    return res


# ---------------------------------------------------------------- report

def _pairs(r: dict) -> str:
    """Every pair's ratio, when there was more than one (older bench.json files have none)."""
    xs = [p["ratio"] for p in r.get("pairs", [])]
    return f", the median of {len(xs)} pairs: {', '.join(f'{x:.2f}x' for x in xs)}" if len(xs) > 1 else ""


def table(res: dict) -> str:
    lines = ["figure | measured | target", "---|---|---"]
    if "rounds" in res:
        r = res["rounds"]
        lines.append(f"cluster / in-process driver wall time ({sum(r['steps'])} rounds) | "
                     f"{r['cluster']['wall_s']:.1f} s / {r['reference']['wall_s']:.1f} s = "
                     f"{r['cluster_over_reference']:.2f}x (per round {r['cluster']['round_ms']:.1f} / "
                     f"{r['reference']['round_ms']:.1f} ms)" + _pairs(r) + f" | <= {TARGETS['cluster_over_reference']}x")
        lines.append(f"relay->edge payload / device uplinks + labels | {r['relay_edge_over_uplinks']:.4f}x | "
                     f"<= {TARGETS['relay_edge_over_uplinks']}x")
        worst = max((v["wire_over_payload"], k) for k, v in r["links"].items() if v["wire_over_payload"]
                    and v["payload_bytes"] > 1e6)
        lines.append(f"wire / payload bytes, worst link carrying tensors ({worst[1]}) | {worst[0]:.4f}x | "
                     f"<= {TARGETS['wire_over_payload']}x")
    for mib, h in res.get("hop", {}).items():
        seq, alt = h["sequential"], h["alternating"]
        lines.append(f"one hop {mib} MiB, medians: tokcom stream / raw gRPC (floor) / raw TCP {seq['hop_ms']:.1f} / "
                     f"{seq['raw_ms']:.1f} / {seq['tcp_ms']:.1f} ms back to back ({100 * seq['hop_over_tcp']:.0f} % "
                     f"of TCP; floor {100 * seq['raw_over_tcp']:.0f} %), {alt['hop_ms']:.1f} / {alt['raw_ms']:.1f} / "
                     f"{alt['tcp_ms']:.1f} ms alternating ({100 * alt['hop_over_tcp']:.0f} %; floor "
                     f"{100 * alt['raw_over_tcp']:.0f} %) | {100 * h['hop_over_tcp']:.0f} % of TCP "
                     f"(the worse) | >= {100 * TARGETS['hop_over_tcp']:.0f} % (4-16 MiB)")
    for key, what, target in (("transport", "this run's shapes", "-"),
                              ("paper", "the paper's shapes", f"<= {TARGETS['paper_transport_ms']:.0f} ms")):
        if key in res:
            p, f = res[key], res[key]["floor"]
            lines.append(f"transport per round at {what} ({p['uplink_bytes_per_round'] / 1e6:.2f} MB up), medians | "
                         f"{p['transport_ms_median']:.1f} ms; the same bytes as raw gRPC (the floor) "
                         f"{f['round_ms_median']:.1f} ms: tokcom adds {p['over_floor_ms']:.1f} ms | {target}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.scaling:
        return scaling(args, out)
    only = set(filter(None, args.only.split(","))) or set(FIGURES)
    if only - set(FIGURES):
        raise SystemExit(f"--only: unknown figure(s) {sorted(only - set(FIGURES))}; choose from {', '.join(FIGURES)}")
    res: dict = {"machine": machine(), "targets": TARGETS}
    if "rounds" in only:
        a, b = (int(x) for x in args.steps.split(","))
        if args.pairs < 1:
            raise SystemExit(f"--pairs {args.pairs}: at least one pair")
        log.info("rounds: %d in-process, then as a cluster, %d time(s)", a + b, args.pairs)
        res["rounds"] = round_time(args.config, args.overrides, out, (a, b), args.pairs)
    if "hop" in only:
        log.info("hop: one stream hop against raw loopback TCP")
        res["hop"] = hop_throughput(out, args.repeats)
    if "transport" in only:
        log.info("transport: %d rounds at this run's shapes through the real relay, then as raw gRPC", args.rounds)
        res["transport"] = shapes(args.config, args.overrides, out, args.rounds,
                                  lm_width(load_config(args.config, args.overrides).models), "run")
    if "paper" in only:
        log.info("paper: %d rounds at the paper's shapes through the real relay, then as raw gRPC", args.rounds)
        res["paper"] = shapes(args.config, args.overrides + PAPER, out, args.rounds, PAPER_LM["hidden_size"], "paper")
    (out / "bench.json").write_text(json.dumps(res, indent=2))
    m = res["machine"]
    sys.stdout.write(f"{m['cpus']} x {m['cpu_model']}; python {m['python']}, torch {m['torch']}, grpc {m['grpc']}\n"
                     + table(res) + f"\nwritten to {out / 'bench.json'}\n")
    return 0


def scaling(args: argparse.Namespace, out: Path) -> int:
    from launch import bench_scaling

    a, b = (int(x) for x in args.scaling_steps.split(","))
    res = bench_scaling.run_scaling(args.config, args.overrides, out, [int(u) for u in args.scaling_users.split(",")],
                                    (a, b), args.per_host, args.lock, 3600.0)
    res["machine"] = machine()
    (out / "scaling.json").write_text(json.dumps(res, indent=2))
    bench_scaling.figure(res, out / "scaling.png")
    sys.stdout.write(bench_scaling.table(res) + f"\nwritten to {out / 'scaling.json'} and {out / 'scaling.png'}\n")
    return 0
