"""The relay process: `tokcom relay`.

Devices dial the relay; the relay dials the edge. Each device keeps one `Link` stream to
the relay, and the relay keeps one to the edge, carrying every device's traffic. On the way
up the relay applies the link's channel (`channel.hop`, which also keeps h and builds the
receiver's CSI at its real size); on the way down it applies the channel's vector-Jacobian
conj(h) g. With `network` settings it holds each message for its modelled airtime,
queueing and propagation before passing it on (`channel.network`, `channel.delay`). The
links' randomness is drawn ahead of the symbols where that pays (`channel.ahead`).

It meters the links it receives on: every device uplink (with the labels on their own
line) and edge->relay. A device meters its downlink, the edge relay->edge; each reports
at the end. A device may speak only for the name it said Hello with, and with TLS it may say
Hello only with the name its certificate carries.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import grpc

from channel.ahead import DrawAhead
from channel.delay import Release
from channel.hop import ChannelHop, HopError
from configs.args import add_config_arguments
from configs.loader import config_digest, load_config
from configs.schema import Config
from protos import codec
from protos import tokcom_pb2 as pb
from protos import tokcom_pb2_grpc as pb_grpc
from protos.meter import LinkMeter
from protos.parts import Parts, Payloads
from protos.tls import add_tls_arguments, credential_from_args, peer_name
from protos.rpc import (PROTOCOL, LinkStub, Outbox, Timeouts, add_link_servicer, connect, fast_thread_switch,
                        peer_alive, serve_stream, start_server, status_code, stop_on_signals, whole)

log = logging.getLogger(__name__)


@dataclass
class _Route:
    """Where a device's downstream messages go: its current stream, once the edge welcomed it.

    The edge sends a node's Welcome before any task for it (`EdgeHub.hello`), so a task that
    finds no welcomed stream was meant for a stream that has since closed: it is dropped, and
    the edge sends a rejoining device what it owes after the new Welcome.
    """

    outbox: Outbox | None = None
    welcomed: bool = False


class Relay(pb_grpc.TokenLinkServicer):
    def __init__(self, cfg: Config, edge: LinkStub):
        self.cfg, self.precision = cfg, cfg.wire.precision
        self.limit, self.part_bytes = cfg.wire.limit_bytes, cfg.wire.part_bytes
        self.hop = ChannelHop(cfg)
        self.meter = LinkMeter()
        self.devices = set(cfg.link_names())
        self.routes = {n: _Route() for n in self.devices}
        self.reported: set[str] = set()
        self.lock = threading.Lock()
        self.release = Release() if self.hop.network.enabled else None
        self.ahead = DrawAhead(self.hop)  # the channel's randomness, drawn before the symbols arrive
        self.to_edge = Outbox()
        self.welcome = threading.Event()
        self.refused: tuple[str, str] | None = None
        self._responses = edge.Link(iter(self.to_edge))
        threading.Thread(target=self._read_edge, name="relay-edge-reader", daemon=True).start()

    # -------------------------------------------------------------- the edge's stream
    def hello(self, info: pb.NodeInfo) -> None:
        """Say Hello to the edge; raises RuntimeError with the edge's reason if refused."""
        self.to_edge.put(pb.Up(hello=pb.Hello(info=info, protocol=PROTOCOL)))
        if not self.welcome.wait(Timeouts.HELLO_S):
            raise RuntimeError(f"the edge did not answer the relay's Hello within {Timeouts.HELLO_S:.0f} s")
        if self.refused:
            raise RuntimeError(f"the edge refused the relay: {self.refused[0]}: {self.refused[1]}")

    def _read_edge(self) -> None:
        try:
            for down, payloads in whole(self._responses, self.limit):
                kind = down.WhichOneof("msg")
                if kind == "tasks":
                    self._downlink(down.tasks, payloads)
                elif kind == "welcome":
                    if down.welcome.node == "relay":
                        self.welcome.set()
                    else:
                        self._route(down.welcome.node, down, welcome=True)
                elif kind == "error":
                    with self.lock:
                        route = self.routes.get(down.error.node)
                        outbox = route.outbox if route else None
                    if outbox is not None:
                        outbox.abort(status_code(down.error.code), f"edge: {down.error.message}")
        except codec.CodecError as e:
            log.error("the edge sent a malformed message (%s); the relay stops relaying", e)
            self.to_edge.close()
        except grpc.RpcError as e:
            if not self.welcome.is_set():
                self.refused = (e.code().name, e.details())
                self.welcome.set()
            else:
                log.info("the edge closed the stream: %s", e.code().name)
        except Exception:
            log.exception("handling the edge's stream failed; the relay stops relaying")
            self.to_edge.close()

    def _route(self, node: str, down: pb.Down, welcome: bool = False, parts: Parts | None = None) -> None:
        with self.lock:
            route = self.routes[node]
            if welcome and route.outbox is not None:
                route.welcomed = True
            if route.outbox is not None and route.welcomed:
                route.outbox.put(down, parts)
            else:
                log.info("dropped a message for %s: its stream closed before it arrived", node)

    # -------------------------------------------------------------- downlink
    def _downlink(self, batch: pb.Tasks, payloads: Payloads) -> None:
        """The edge's batch of tasks: the gradients through the VJP, each task's modelled cost, and
        each device its share: one message when the links are free, each task at its time if not."""
        t_rx = time.time_ns()
        shares: dict[str, tuple[pb.Down, Parts]] = {}
        for i, task in enumerate(batch.tasks):
            node = task.node
            if node not in self.routes:
                log.error("the edge sent a task for unknown node %s", node)
                continue
            grad_bytes = payloads.get(f"tasks.tasks.{i}.grad")
            self.meter.record("edge->relay", "downlink", payload_bytes=codec.payload_bytes(task.grad, grad_bytes),
                              wire_bytes=task.ByteSize() + payloads.wire_bytes(f"tasks.tasks.{i}."),
                              latency_ms=max(0.0, (t_rx - task.hop.sent_ns) / 1e6))
            fresh = (pb.Down(), Parts(self.part_bytes))  # with a network, each task leaves at its own time
            down, parts = fresh if self.release is not None else shares.setdefault(node, fresh)
            j = len(down.tasks.tasks)
            out = down.tasks.tasks.add()
            out.node, out.kind, out.phase, out.step, out.path, out.seq = \
                node, task.kind, task.phase, task.step, task.path, task.seq
            out.sample_ids.extend(task.sample_ids)
            if out.kind == pb.Task.TRANSMIT:
                self.ahead.start(node, out.phase, out.step, len(out.sample_ids))
            if task.HasField("grad"):
                try:
                    g = self.hop.downlink(node, task.phase, task.step,
                                          codec.decode_symbols(task.grad, name="grad", payload=grad_bytes))
                except (HopError, codec.CodecError) as e:
                    log.error("%s", e)
                    with self.lock:
                        outbox = self.routes[node].outbox
                    if outbox is not None:
                        outbox.abort(grpc.StatusCode.INTERNAL, f"relay: {e}")
                    continue
                codec.encode_symbols(g, self.precision, name="grad", into=out.grad, parts=parts,
                                     path=f"tasks.tasks.{j}.grad")  # (b, c, 2)
            nbytes = codec.payload_bytes(task.grad, grad_bytes)  # the VJP keeps the gradient's size
            nbytes += sum(len(s) for s in out.sample_ids)  # see channel.hop
            cost = self.hop.downlink_cost(node, pb.Task.Kind.Name(out.kind), out.phase, out.step, nbytes,
                                          time.monotonic())
            out.hop.sent_ns, out.hop.airtime_s = t_rx, cost.airtime_s
            out.hop.queueing_s, out.hop.propagation_s = cost.queueing_s, cost.propagation_s
            if self.release is not None:
                self.release.at(cost.arrive, lambda node=node, down=down, parts=parts: self._route(node, down,
                                                                                                    parts=parts))
        for node, (down, parts) in shares.items():
            self._route(node, down, parts=parts)

    def _later(self, t: float, fn) -> None:
        if self.release is None:
            fn()
        else:
            self.release.at(t, fn)

    # -------------------------------------------------------------- device streams
    def Link(self, request_iterator, context):
        outbox = Outbox()
        threading.Thread(target=self._read_device, args=(request_iterator, outbox, peer_name(context)), daemon=True,
                         name="relay-device-reader").start()
        return serve_stream(outbox, context)

    def _read_device(self, requests, outbox: Outbox, peer: str | None) -> None:
        """`peer`: the device name in the client's certificate (None without TLS)."""
        node = ""
        try:
            if peer is not None and peer not in self.devices:
                raise _Refuse(grpc.StatusCode.PERMISSION_DENIED, f"the credential of '{peer}' is not a device's "
                                                                 f"of this run; only devices open streams here")
            for up, payloads in whole(requests, self.limit):
                kind = up.WhichOneof("msg")
                if not node:
                    node = self._device_hello(up, outbox, peer)
                    continue
                if kind == "tokens":
                    self._uplink(node, up, payloads)
                elif kind in ("done", "report"):
                    sender = getattr(up, kind).node
                    if sender != node:
                        raise _Refuse(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"this stream belongs to {node}; it cannot speak for '{sender}'")
                    if kind == "done":
                        up.done.hop.sent_ns = time.time_ns()
                    self.to_edge.put(up)
                    if kind == "report":
                        self._reported(node, outbox)
                        return
                else:
                    raise _Refuse(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected {kind or 'empty'} message")
        except _Refuse as e:
            outbox.abort(e.code, f"{node or '?'}: {e}")
        except codec.CodecError as e:
            outbox.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{node or '?'}: {e}")
        except grpc.RpcError:
            pass
        except Exception as e:  # a bug here must end the stream with a status, not hang it
            log.exception("the stream of %s failed", node or "a device")
            outbox.abort(grpc.StatusCode.INTERNAL, f"relay: {type(e).__name__}: {e}")
        if node:
            self._disconnected(node, outbox)
        outbox.close()  # a cancelled stream's response thread would otherwise wait on it for ever

    def _device_hello(self, up: pb.Up, outbox: Outbox, peer: str | None) -> str:
        if up.WhichOneof("msg") != "hello":
            raise _Refuse(grpc.StatusCode.FAILED_PRECONDITION, "say Hello first")
        if up.hello.protocol != PROTOCOL:
            raise _Refuse(grpc.StatusCode.FAILED_PRECONDITION,
                          f"protocol '{up.hello.protocol}', this relay speaks {PROTOCOL}")
        node = up.hello.info.node
        if peer is not None and node != peer:
            raise _Refuse(grpc.StatusCode.PERMISSION_DENIED, f"this credential names '{peer}'; it cannot register "
                                                             f"as '{node}'")
        if node not in self.devices:
            raise _Refuse(grpc.StatusCode.INVALID_ARGUMENT, f"unknown node '{node}'; this run has "
                                                            f"{sorted(self.devices)}")
        with self.lock:
            old = self.routes[node].outbox
            self.routes[node].outbox, self.routes[node].welcomed = outbox, False
        if old is not None:
            old.abort(grpc.StatusCode.ABORTED, f"{node} connected again; this stream is replaced")
        self.to_edge.put(up)
        return node

    def _uplink(self, node: str, up: pb.Up, payloads: Payloads) -> None:
        msg = up.tokens
        if msg.node != node:
            raise _Refuse(grpc.StatusCode.INVALID_ARGUMENT, f"this stream belongs to {node}; it cannot speak "
                                                            f"for '{msg.node}'")
        modality = node.split("/")[-1]
        s_cfg = self.cfg.data.text_len if modality == "text" else getattr(self.cfg.transmitter, modality).tokens
        if msg.s != s_cfg or msg.d % 2 or msg.d == 0:
            raise _Refuse(grpc.StatusCode.INVALID_ARGUMENT, f"s={msg.s}, d={msg.d}; this run sends s={s_cfg} "
                                                            f"tokens of even width")
        x = codec.decode_symbols(msg.symbols, c=msg.s * msg.d // 2, payload=payloads.get("tokens.symbols"))  # (b, c)
        out = self.hop.uplink(node, msg.phase, msg.step, x, self.ahead.take(node, msg.phase, msg.step, x.shape[1]))
        up_fwd, parts = pb.Up(), Parts(self.part_bytes)
        fwd = up_fwd.tokens  # built in place (see codec.encode_tensor's `into`)
        fwd.node, fwd.phase, fwd.step, fwd.s, fwd.d = node, msg.phase, msg.step, msg.s, msg.d
        fwd.compute_ms, fwd.noise_var = msg.compute_ms, out.noise_var
        codec.encode_symbols(out.y, self.precision, into=fwd.symbols, parts=parts, path="tokens.symbols")
        if out.csi is not None:
            codec.encode_symbols(out.csi, self.precision, name="csi", into=fwd.csi, parts=parts, path="tokens.csi")
        labels_wire = labels_payload = 0
        if msg.HasField("labels"):
            fwd.labels.CopyFrom(msg.labels)
            labels_wire, labels_payload = msg.labels.ByteSize(), codec.labels_bytes(msg.labels)
        cost, label_air = self.hop.uplink_cost(node, msg.phase, msg.step, out.channel_uses, labels_payload,
                                               time.monotonic())
        fwd.uplink_airtime_s = cost.airtime_s
        wire = up.ByteSize() + payloads.wire_bytes()
        b = x.shape[0]

        def deliver():
            now = time.time_ns()
            self.meter.record(f"{node}->relay", "uplink", payload_bytes=out.payload_bytes,
                              wire_bytes=wire - labels_wire, channel_uses=out.channel_uses, samples=b,
                              latency_ms=max(0.0, (now - msg.hop.sent_ns) / 1e6), airtime_s=cost.airtime_s - label_air,
                              queueing_s=cost.queueing_s, propagation_s=cost.propagation_s)
            if labels_wire:
                self.meter.record(f"{node}->relay (labels)", "uplink", payload_bytes=labels_payload,
                                  wire_bytes=labels_wire, samples=b, airtime_s=label_air)
            fwd.hop.sent_ns = now
            self.to_edge.put(up_fwd, parts)

        self._later(cost.arrive, deliver)
        self.ahead.after(node, msg.phase, msg.step, b)  # the next round's draw, once this one is on its way

    def _reported(self, node: str, outbox: Outbox) -> None:
        """A device's last message: close its stream; after the last device, send the relay's own report."""
        with self.lock:
            self.reported.add(node)
            last = self.reported >= self.devices
            if self.routes[node].outbox is outbox:
                self.routes[node].outbox = None
        outbox.close()
        if last:
            self.to_edge.put(pb.Up(report=codec.encode_report("relay", self.meter.export())))

    def _disconnected(self, node: str, outbox: Outbox) -> None:
        with self.lock:
            current = self.routes[node].outbox is outbox
            if current:
                self.routes[node].outbox, self.routes[node].welcomed = None, False
        if current:
            log.warning("lost the stream of %s", node)
            self.to_edge.put(pb.Up(gone=pb.Gone(node=node, why="its stream to the relay closed before STOP")))

    def close(self) -> None:
        """End every stream: the edge's, and each device's (a server thread waits on each until it ends,
        and the process cannot exit before they do)."""
        self.to_edge.close()
        with self.lock:
            outboxes = [r.outbox for r in self.routes.values() if r.outbox is not None]
        for outbox in outboxes:
            outbox.abort(grpc.StatusCode.UNAVAILABLE, "the relay is stopping")
        if self.release is not None:
            self.release.close()
        self.ahead.close()


class _Refuse(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_tls_arguments(p)
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for devices (port 0: the OS picks)")
    p.add_argument("--edge", required=True, help="HOST:PORT of the edge server")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--connect-timeout", type=float, default=Timeouts.CONNECT_S)


def run(args: argparse.Namespace) -> int:
    stop_on_signals()
    fast_thread_switch()
    cfg = load_config(args.config, args.overrides)
    credential = credential_from_args(args, "relay")
    import torch

    torch.set_num_threads(1)  # element-wise channel math; leave the cores to the edge
    try:
        channel = connect(args.edge, cfg.wire.max_message_mb, credential, "edge", args.connect_timeout)
    except TimeoutError as e:
        log.error("edge: %s", e)
        return 1
    relay = Relay(cfg, LinkStub(channel))
    info = pb.NodeInfo(node="relay", role="relay", pid=os.getpid(), host=socket.gethostname(),
                       config_digest=config_digest(cfg))
    try:
        relay.hello(info)
    except RuntimeError as e:
        log.error("%s", e)
        relay.close()
        return 1
    server = start_server(lambda s: add_link_servicer(relay, s), args.listen,
                          cfg.wire.max_message_mb, workers=8 + 2 * len(relay.devices), credential=credential,
                          port_file=args.port_file)
    log.info("relay listening on port %d (%s), edge at %s%s", server.port, "mutual TLS" if credential else "INSECURE",
             args.edge, "; emulating the network" if relay.release else "")
    misses = 0
    try:
        while misses < Timeouts.EDGE_GONE_CHECKS:  # serve until signalled or until the edge has gone away
            time.sleep(Timeouts.HEALTH_EVERY_S)
            misses = 0 if peer_alive(channel) else misses + 1
        log.info("the edge is gone; relay stopping")
    except KeyboardInterrupt:
        log.info("relay stopping")
    finally:
        relay.close()
        server.stop()
    return 0
