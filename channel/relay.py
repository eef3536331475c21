"""The relay process: `tokcom relay`.

Devices dial the relay; the relay dials the edge. Both serve `TokenLink`, so the
relay is a transparent hop: on the way up it applies each link's channel (and
passes the receiver its CSI when used), on the way down it applies the channel's
vector-Jacobian conj(h) to the gradients, and it meters the relay<->edge link.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from concurrent import futures

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from channel.fading import LinkChannel
from channel.link import apply_link, receiver_csi
from configs.args import add_config_arguments
from configs.schema import Config
from configs.loader import config_digest, load_config
from foundation.manifest import TRAIN_PHASES
from protos import codec
from protos import tokcom_pb2 as pb
from protos import tokcom_pb2_grpc as pb_grpc
from protos.meter import LinkMeter
from protos.rpc import channel_options, timed, write_port_file

log = logging.getLogger(__name__)
PROTOCOL = "tokcom.v1"
EDGE_CALL_S = 600.0  # upper bound on one forwarded call (the edge answers long polls in seconds)


def _forward_error(context, err: grpc.RpcError):
    """Pass the edge's status to the device unchanged."""
    context.abort(err.code(), f"edge: {err.details()}")


class RelayServicer(pb_grpc.TokenLinkServicer):
    def __init__(self, cfg: Config, edge: pb_grpc.TokenLinkStub):
        self.cfg, self.edge = cfg, edge
        self.meter = LinkMeter()
        self.h: dict[tuple[str, str, int], object] = {}  # (node, phase, step) -> (b, c) true gains
        self.lock = threading.Lock()
        self.registered: set[str] = set()
        self.stopped: set[str] = set()
        self.devices = set(cfg.link_names())

    # -------------------------------------------------------------- hello
    def Hello(self, request, context):
        if request.protocol != PROTOCOL:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"protocol '{request.protocol}', this relay speaks {PROTOCOL}")
        try:
            reply = self.edge.Hello(request, timeout=30)
        except grpc.RpcError as e:
            _forward_error(context, e)
        with self.lock:
            self.registered.add(request.info.node)
        return reply

    def _check_node(self, node: str, context) -> str:
        if node not in self.devices:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown node '{node}'; this run has {sorted(self.devices)}")
        if node not in self.registered:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"node '{node}' has not registered with Hello")
        return node.split("/")[-1]

    @staticmethod
    def _call_edge(method, request, context):
        """Forward one call; returns (reply, transport ms = round trip - the edge's holding time)."""
        t0 = time.perf_counter()
        try:
            reply = method(request, timeout=EDGE_CALL_S)
        except grpc.RpcError as e:
            _forward_error(context, e)
        return reply, max(0.0, (time.perf_counter() - t0) * 1e3 - reply.server_ms)

    # -------------------------------------------------------------- downlink
    def NextTask(self, request, context):
        with timed() as t:
            self._check_node(request.node, context)
            task, transport_ms = self._call_edge(self.edge.NextTask, request, context)
            if task.kind != pb.Task.IDLE:
                self.meter.record("edge->relay", "downlink", payload_bytes=codec.payload_bytes(task.grad),
                                  wire_bytes=task.ByteSize(), latency_ms=transport_ms)
            if task.kind == pb.Task.UPDATE:
                h = self.h.pop((request.node, task.phase, task.step), None)
                if task.HasField("grad"):
                    if h is None:
                        context.abort(grpc.StatusCode.INTERNAL, f"no channel state for {request.node} "
                                                                f"{task.phase} step {task.step}")
                    g = codec.decode_symbols(task.grad, name="grad")
                    task.grad.CopyFrom(codec.encode_symbols(LinkChannel.vjp(g, h), self.cfg.wire.precision,
                                                            name="grad"))
            elif task.kind == pb.Task.STOP:
                self._stopped(request.node)
        task.server_ms = t.ms
        return task

    def _stopped(self, node: str) -> None:
        with self.lock:
            self.stopped.add(node)
            last = self.stopped >= self.devices
        if last:  # every device is done: the relay's own meters go to the edge
            threading.Thread(target=self._report, daemon=True).start()

    def _report(self) -> None:
        try:
            self.edge.SendReport(codec.encode_report("relay", self.meter.export()), timeout=30)
        except grpc.RpcError as e:
            log.warning("could not send the relay's link report: %s", e.details())

    # -------------------------------------------------------------- uplink
    def SendTokens(self, request, context):
        with timed() as t:
            modality = self._check_node(request.node, context)
            s_cfg = self.cfg.data.text_len if modality == "text" else getattr(self.cfg.transmitter, modality).tokens
            if request.s != s_cfg or request.d % 2:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{request.node}: s={request.s}, d={request.d}; this run sends s={s_cfg} tokens "
                              f"of even width")
            try:
                z = codec.decode_symbols(request.symbols, c=request.s * request.d // 2)  # (b, c)
            except codec.CodecError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{request.node}: {e}")
            link = self.cfg.channel.link(request.node)
            out = apply_link(link, self.cfg.seed, request.node, request.phase, request.step, z)
            if request.phase in TRAIN_PHASES:
                self.h[(request.node, request.phase, request.step)] = out.h
            fwd = pb.Tokens(node=request.node, phase=request.phase, step=request.step, s=request.s, d=request.d,
                            compute_ms=request.compute_ms, noise_var=out.noise_var,
                            symbols=codec.encode_symbols(out.y, self.cfg.wire.precision))
            csi = receiver_csi(link, out)
            if csi is not None:
                fwd.csi.CopyFrom(codec.encode_symbols(csi, self.cfg.wire.precision, name="csi"))
            if request.HasField("labels"):
                fwd.labels.CopyFrom(request.labels)
            _, transport_ms = self._call_edge(self.edge.SendTokens, fwd, context)
            payload = codec.payload_bytes(fwd.symbols) + codec.payload_bytes(fwd.csi) + codec.labels_bytes(fwd.labels)
            self.meter.record("relay->edge", "uplink", payload_bytes=payload, wire_bytes=fwd.ByteSize(),
                              samples=z.shape[0], latency_ms=transport_ms)
        return pb.Ack(server_ms=t.ms)

    def SendReport(self, request, context):
        try:
            return self.edge.SendReport(request, timeout=30)
        except grpc.RpcError as e:
            _forward_error(context, e)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for devices (port 0: the OS picks)")
    p.add_argument("--edge", required=True, help="HOST:PORT of the edge server")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--connect-timeout", type=float, default=120.0)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(1)  # element-wise channel math; leave the cores to the edge
    opts = channel_options(cfg.wire.max_message_mb)
    channel = grpc.insecure_channel(args.edge, options=opts)
    try:
        grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
    except grpc.FutureTimeoutError:
        log.error("edge %s not reachable within %.0f s", args.edge, args.connect_timeout)
        return 1
    edge = pb_grpc.TokenLinkStub(channel)
    info = pb.NodeInfo(node="relay", role="relay", pid=os.getpid(), host=socket.gethostname(),
                       config_digest=config_digest(cfg))
    try:
        edge.Hello(pb.HelloRequest(info=info, protocol=PROTOCOL), timeout=30)
    except grpc.RpcError as e:
        log.error("the edge refused the relay: %s", e.details())
        return 1
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8 + 4 * len(cfg.link_names())), options=opts)
    pb_grpc.add_TokenLinkServicer_to_server(RelayServicer(cfg, edge), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(args.listen)
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if args.port_file:
        write_port_file(args.port_file, port)
    log.info("relay listening on port %d, edge at %s", port, args.edge)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    health_stub = health_pb2_grpc.HealthStub(channel)
    misses = 0
    while not stop.wait(2.0):  # serve until signalled or until the edge has gone away
        try:
            health_stub.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
            misses = 0
        except grpc.RpcError:
            misses += 1
            if misses >= 3:
                log.info("the edge is gone; relay stopping")
                break
    server.stop(grace=2.0).wait()
    return 0
