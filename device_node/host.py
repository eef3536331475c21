"""A device host: `tokcom devices --users 0-15 --modality audio`.

One OS process runs one modality's devices for several users. They share what is
frozen and heavy, loaded once: torch and the libraries, the dataset, the encoder's
cached features (or, for text, one copy of the LM's embedding table). Each node keeps
what makes it a device: its name and credential (a TLS connection carries one
certificate, and a node speaks only for the name in its own, so each node dials the
relay on a connection of its own; with --insecure they share one), its stream, its
transmitter and optimiser, its link meter and report, and its own checkpoint file.
The default stays one process per device (`tokcom device`); `tokcom run` starts hosts
when `launch.devices_per_process` > 1.
"""
from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

import grpc
import torch

from configs.args import add_config_arguments
from configs.loader import load_config
from configs.schema import MODALITIES, WireConfig
from device_node.build import build_devices
from device_node.client import DeviceClient, node_info
from device_node.step import DeviceNode
from foundation.assets import cache_dir
from foundation.data import open_dataset
from foundation.logs import setup_logging
from protos.rpc import LinkStub, connect, fast_thread_switch, stop_on_signals, trim_heap
from protos.tls import add_tls_arguments, credential_from_args

log = logging.getLogger(__name__)


def parse_users(text: str, users: int) -> list[int]:
    """'0-15', '3' or '0,2,5-7' -> the sorted user numbers; each must lie in 0..users-1."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"--users '{text}': write user numbers and ranges such as 0-15 or 0,2,5-7")
        a, b = int(lo), int(hi) if sep else int(lo)
        if a > b or b >= users:
            raise ValueError(f"--users '{text}': {part} is not a range within this config's users 0..{users - 1}")
        out.update(range(a, b + 1))
    if not out:
        raise ValueError("--users is empty; name at least one user, e.g. --users 0-15")
    return sorted(out)


def format_users(users: list[int]) -> str:
    """The inverse of `parse_users` for a contiguous range: [0, 1, 2] -> '0-2'."""
    return str(users[0]) if len(users) == 1 else f"{users[0]}-{users[-1]}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_tls_arguments(p)
    p.add_argument("--relay", required=True, help="HOST:PORT of the relay")
    p.add_argument("--users", required=True, help="the users whose devices this process runs, e.g. 0-15 or 0,2,5-7")
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--state-dir", default="device_state", help="where SAVE writes when the edge names no path")
    p.add_argument("--connect-timeout", type=float, default=300.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for this process")


def serve_all(nodes: list[DeviceNode], infos: list, stubs: list[LinkStub], wire: WireConfig,
              state_dir: Path) -> list[str]:
    """Each node on its own stream and thread until STOP; returns the nodes that failed, with why."""
    failed: list[str] = []

    def serve(node: DeviceNode, info, stub: LinkStub) -> None:
        try:
            DeviceClient(node, stub, wire, state_dir).serve(info)
        except grpc.RpcError as e:
            failed.append(f"{node.node}: {e.code().name}: {e.details()}")
        except ConnectionError as e:
            failed.append(f"{node.node}: {e}")

    threads = [threading.Thread(target=serve, args=(n, i, s), name=n.node, daemon=True)
               for n, i, s in zip(nodes, infos, stubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def run(args: argparse.Namespace) -> int:
    setup_logging("devices", f"{args.modality}:{args.users}")
    stop_on_signals()
    fast_thread_switch()
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(args.threads)
    try:
        users = parse_users(args.users, cfg.users)
    except ValueError as e:
        log.error("%s", e)
        return 2
    cache = cache_dir(cfg)
    dataset = open_dataset(cfg.data, cache)
    credentials = [credential_from_args(args, f"user{u}/{args.modality}") for u in users]
    nodes = build_devices(cfg, users, args.modality, dataset, cache)
    trim_heap()  # the text nodes keep only the LM's embedding table
    channels: dict[str | None, grpc.Channel] = {}  # per credential; every node shares one when insecure
    try:
        for cred in credentials:
            key = cred.name if cred else None
            if key not in channels:
                channels[key] = connect(args.relay, cfg.wire.max_message_mb, cred, "relay", args.connect_timeout)
    except TimeoutError as e:
        log.error("relay: %s", e)
        return 1
    stubs = [LinkStub(channels[cred.name if cred else None]) for cred in credentials]
    log.info("hosting %d %s devices on %d connection(s) to %s", len(nodes), args.modality, len(channels), args.relay)
    try:
        failed = serve_all(nodes, [node_info(cfg, n, dataset) for n in nodes], stubs, cfg.wire, Path(args.state_dir))
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130
    finally:
        for c in channels.values():
            c.close()
    for f in failed:
        log.error("%s", f)
    if failed:
        return 1
    log.info("every device stopped by the edge")
    return 0
