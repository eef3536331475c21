"""The device process: `tokcom device`.

A client only: it dials the relay (which works across NAT), registers, then
long-polls for tasks and carries them out with the same `DeviceNode` methods the
in-process reference calls. It meters its own links: the uplink of its symbols
(and, for the text node, the label payload on its own line) and the downlink of
its tasks.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from pathlib import Path

import grpc
import torch

from configs.args import add_config_arguments
from configs.schema import MODALITIES
from configs.loader import config_digest, load_config
from device_node.build import build_device
from device_node.step import DeviceNode
from foundation.assets import cache_dir
from foundation.data import open_dataset
from foundation.lm import embedding_fingerprint
from foundation.logs import setup_logging
from protos import codec
from protos import tokcom_pb2 as pb
from protos import tokcom_pb2_grpc as pb_grpc
from protos.meter import LinkMeter
from protos.rpc import channel_options

log = logging.getLogger(__name__)
PROTOCOL = "tokcom.v1"
POLL_S = 60.0


class DeviceClient:
    def __init__(self, node: DeviceNode, stub: pb_grpc.TokenLinkStub, precision: str, state_dir: Path):
        self.node, self.stub, self.precision, self.state_dir = node, stub, precision, state_dir
        self.meter = LinkMeter()
        self.name = node.node

    def hello(self, info: pb.NodeInfo) -> str:
        return self.stub.Hello(pb.HelloRequest(info=info, protocol=PROTOCOL), timeout=60).run_id

    def _transmit(self, task: pb.Task) -> float:
        tx = self.node.transmit(task.phase, task.step, list(task.sample_ids))
        msg = pb.Tokens(node=self.name, phase=task.phase, step=task.step, s=tx.s, d=tx.d,
                        compute_ms=tx.compute_ms, symbols=codec.encode_symbols(tx.symbols, self.precision))
        if tx.labels:
            msg.labels.CopyFrom(codec.encode_labels(tx.labels))
        t0 = time.perf_counter()
        ack = self.stub.SendTokens(msg, timeout=POLL_S)
        latency = max(0.0, (time.perf_counter() - t0) * 1e3 - ack.server_ms)
        labels_wire = msg.labels.ByteSize() if tx.labels else 0
        self.meter.record(f"{self.name}->relay", "uplink", payload_bytes=codec.payload_bytes(msg.symbols),
                          wire_bytes=msg.ByteSize() - labels_wire, channel_uses=tx.symbols.numel(),
                          samples=tx.symbols.shape[0], latency_ms=latency)
        if tx.labels:
            self.meter.record(f"{self.name}->relay (labels)", "uplink", payload_bytes=codec.labels_bytes(msg.labels),
                              wire_bytes=labels_wire, samples=tx.symbols.shape[0])
        return tx.compute_ms

    def serve(self) -> None:
        """Carry out tasks until STOP."""
        last_ms = 0.0
        while True:
            t0 = time.perf_counter()
            task = self.stub.NextTask(pb.TaskRequest(node=self.name, last_compute_ms=last_ms), timeout=POLL_S)
            if task.kind == pb.Task.IDLE:
                continue
            self.meter.record(f"relay->{self.name}", "downlink", payload_bytes=codec.payload_bytes(task.grad),
                              wire_bytes=task.ByteSize(),
                              latency_ms=max(0.0, (time.perf_counter() - t0) * 1e3 - task.server_ms))
            t1 = time.perf_counter()
            if task.kind == pb.Task.TRANSMIT:
                self._transmit(task)
            elif task.kind == pb.Task.UPDATE:
                grad = codec.decode_symbols(task.grad, name="grad") if task.HasField("grad") else None
                self.node.update(task.phase, task.step, grad)
            elif task.kind in (pb.Task.SAVE, pb.Task.LOAD):
                where = (Path(task.path) if task.path else self.state_dir) / f"{self.name.replace('/', '_')}.pt"
                if task.kind == pb.Task.SAVE:
                    self.node.save(where)
                else:
                    self.node.load(where)
            elif task.kind == pb.Task.STOP:
                self.stub.SendReport(codec.encode_report(self.name, self.meter.export()), timeout=60)
                return
            last_ms = (time.perf_counter() - t1) * 1e3


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--relay", required=True, help="HOST:PORT of the relay")
    p.add_argument("--user", type=int, required=True)
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--state-dir", default="device_state", help="where SAVE writes when the edge names no path")
    p.add_argument("--connect-timeout", type=float, default=300.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for this device")


def run(args: argparse.Namespace) -> int:
    setup_logging("device", f"user{args.user}/{args.modality}")
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(args.threads)  # several devices share a machine with the edge
    if not 0 <= args.user < cfg.users:
        log.error("--user %d is outside this config's users 0..%d", args.user, cfg.users - 1)
        return 2
    cache = cache_dir(cfg)
    dataset = open_dataset(cfg.data, cache)
    node = build_device(cfg, args.user, args.modality, dataset, cache)
    channel = grpc.insecure_channel(args.relay, options=channel_options(cfg.wire.max_message_mb))
    try:
        grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
    except grpc.FutureTimeoutError:
        log.error("relay %s not reachable within %.0f s", args.relay, args.connect_timeout)
        return 1
    model_digest = embedding_fingerprint(node.embed) if args.modality == "text" else ""
    info = pb.NodeInfo(node=node.node, user=args.user, modality=args.modality, role="device", pid=os.getpid(),
                       host=socket.gethostname(), config_digest=config_digest(cfg), data_digest=dataset.digest(),
                       model_digest=model_digest)
    client = DeviceClient(node, pb_grpc.TokenLinkStub(channel), cfg.wire.precision, Path(args.state_dir))
    try:
        client.hello(info)
        log.info("registered with the relay at %s", args.relay)
        client.serve()
    except grpc.RpcError as e:
        log.error("%s: %s", e.code().name, e.details())
        return 1
    log.info("stopped by the edge")
    return 0
