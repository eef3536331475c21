"""The device process: `tokcom device`.

A client only: it dials the relay (which works across NAT), opens one `Link` stream, says
Hello, and carries out the tasks that come down the stream, in order, with the same
`DeviceNode` methods the in-process reference calls. TRANSMIT is answered with Tokens,
SAVE and LOAD with Done, UPDATE with nothing (the next TRANSMIT comes after it by the
stream's order), STOP with the device's link report. The device meters the link it
receives on: its downlink.
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
from configs.loader import config_digest, load_config
from configs.schema import MODALITIES, WireConfig
from device_node.build import build_device
from device_node.step import DeviceNode
from foundation.assets import cache_dir
from foundation.data import open_dataset
from foundation.lm import embedding_fingerprint
from foundation.logs import setup_logging
from protos import codec
from protos import tokcom_pb2 as pb
from protos.meter import LinkMeter
from protos.parts import Parts, Payloads
from protos.tls import add_tls_arguments, credential_from_args
from protos.rpc import PROTOCOL, LinkStub, Outbox, connect, fast_thread_switch, stop_on_signals, trim_heap, whole

log = logging.getLogger(__name__)


class DeviceClient:
    def __init__(self, node: DeviceNode, stub: LinkStub, wire: WireConfig, state_dir: Path):
        self.node, self.stub, self.wire, self.state_dir = node, stub, wire, state_dir
        self.meter = LinkMeter()
        self.name = node.node
        self.run_id = ""

    def serve(self, info: pb.NodeInfo) -> None:
        """Say Hello, then carry out tasks until STOP (and the relay has closed the stream, so the
        report is through)."""
        outbox = Outbox()
        outbox.put(pb.Up(hello=pb.Hello(info=info, protocol=PROTOCOL)))
        stopped = False
        try:
            for down, payloads in whole(self.stub.Link(iter(outbox)), self.wire.limit_bytes):
                kind = down.WhichOneof("msg")
                if kind == "welcome":
                    self.run_id = down.welcome.run_id
                    log.info("%s registered with run %s", self.name, self.run_id)
                elif kind == "tasks" and not stopped:
                    for i, task in enumerate(down.tasks.tasks):
                        if self._task(task, outbox, payloads, f"tasks.tasks.{i}."):
                            stopped = True
                            outbox.close()
                            break
        finally:
            outbox.close()
        if not stopped:
            raise ConnectionError("the relay ended the stream before STOP")

    def _task(self, task: pb.Task, outbox: Outbox, payloads: Payloads, path: str) -> bool:
        """Carry out one task (at `path` in its message); True after STOP."""
        t_rx, hop = time.time_ns(), task.hop
        grad_bytes = payloads.get(path + "grad")
        self.meter.record(f"relay->{self.name}", "downlink", payload_bytes=codec.payload_bytes(task.grad, grad_bytes),
                          wire_bytes=task.ByteSize() + payloads.wire_bytes(path),
                          latency_ms=max(0.0, (t_rx - hop.sent_ns) / 1e6),
                          airtime_s=hop.airtime_s, queueing_s=hop.queueing_s, propagation_s=hop.propagation_s)
        if task.kind == pb.Task.TRANSMIT:
            outbox.put(*self._transmit(task))
        elif task.kind == pb.Task.UPDATE:
            self.node.update(task.phase, task.step, codec.decode_symbols(task.grad, name="grad", payload=grad_bytes))
        elif task.kind in (pb.Task.SAVE, pb.Task.LOAD):
            where = (Path(task.path) if task.path else self.state_dir) / f"{self.name.replace('/', '_')}.pt"
            if task.kind == pb.Task.SAVE:
                self.node.save(where)
            else:
                self.node.load(where)
            outbox.put(pb.Up(done=pb.Done(node=self.name, seq=task.seq)))
        elif task.kind == pb.Task.STOP:
            outbox.put(pb.Up(report=codec.encode_report(self.name, self.meter.export())))
            return True
        else:
            log.warning("ignoring a task of unknown kind %d", task.kind)
        return False

    def _transmit(self, task: pb.Task) -> tuple[pb.Up, Parts]:
        tx = self.node.transmit(task.phase, task.step, list(task.sample_ids))
        up, parts = pb.Up(), Parts(self.wire.part_bytes)
        msg = up.tokens  # built in place: nesting a finished message would copy the symbols again
        msg.node, msg.phase, msg.step, msg.s, msg.d, msg.compute_ms = \
            self.name, task.phase, task.step, tx.s, tx.d, tx.compute_ms
        codec.encode_symbols(tx.symbols, self.wire.precision, into=msg.symbols, parts=parts, path="tokens.symbols")
        if tx.labels:
            msg.labels.CopyFrom(codec.encode_labels(tx.labels))
        msg.hop.sent_ns = time.time_ns()
        return up, parts


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_tls_arguments(p)
    p.add_argument("--relay", help="HOST:PORT of the relay (required unless --prepare-only)")
    p.add_argument("--user", type=int, required=True)
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--state-dir", default="device_state", help="where SAVE writes when the edge names no path")
    p.add_argument("--connect-timeout", type=float, default=300.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for this device")
    p.add_argument("--prepare-only", action="store_true",
                   help="build this device's inputs (the encoder feature cache) and exit, before the edge waits")


def node_info(cfg, node: DeviceNode, dataset) -> pb.NodeInfo:
    """The Hello of `node`: its name and the digests the edge compares."""
    model_digest = embedding_fingerprint(node.embed) if node.modality == "text" else ""
    return pb.NodeInfo(node=node.node, user=node.user, modality=node.modality, role="device", pid=os.getpid(),
                       host=socket.gethostname(), config_digest=config_digest(cfg), data_digest=dataset.digest(),
                       model_digest=model_digest)


def run(args: argparse.Namespace) -> int:
    setup_logging("device", f"user{args.user}/{args.modality}")
    stop_on_signals()
    fast_thread_switch()
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(args.threads)  # several devices share a machine with the edge
    if not 0 <= args.user < cfg.users:
        log.error("--user %d is outside this config's users 0..%d", args.user, cfg.users - 1)
        return 2
    if not args.prepare_only and not args.relay:
        log.error("--relay HOST:PORT is required to join a run (or --prepare-only to build the inputs and exit)")
        return 2
    credential = None if args.prepare_only else credential_from_args(args, f"user{args.user}/{args.modality}")
    cache = cache_dir(cfg)
    dataset = open_dataset(cfg.data, cache)
    node = build_device(cfg, args.user, args.modality, dataset, cache)
    trim_heap()  # the text node keeps only the LM's embedding table
    if args.prepare_only:
        log.info("inputs ready in %s", cache)
        return 0
    try:
        channel = connect(args.relay, cfg.wire.max_message_mb, credential, "relay", args.connect_timeout)
    except TimeoutError as e:
        log.error("relay: %s", e)
        return 1
    client = DeviceClient(node, LinkStub(channel), cfg.wire, Path(args.state_dir))
    try:
        client.serve(node_info(cfg, node, dataset))
    except grpc.RpcError as e:
        log.error("%s: %s", e.code().name, e.details())
        return 1
    except ConnectionError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130
    finally:
        channel.close()
    log.info("stopped by the edge")
    return 0
