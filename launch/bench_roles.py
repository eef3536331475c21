"""The processes `tokcom bench` starts to measure the transport alone.

- `sink-grpc`: a `TokenLink` server that decodes each Tokens message with the codec and
  acknowledges it with a small Down: one stream hop, end to end through the real codec.
- `sink-tcp`: a raw loopback TCP server that reads length-prefixed messages into one buffer
  and acknowledges each with one byte: the floor for the same bytes.
- `client`: sends messages of the given sizes to both sinks, alternating, and writes the timings.
- `edge` / `device`: the real edge hub and servicer and the real device client around
  synthetic compute (random symbols and gradients of the configured shapes): the real relay
  between them carries the paper's shapes without the models, so the round time is the
  transport's.

- `floor-edge` / `floor-relay` / `floor-device`: the same round as raw bytes
  (`launch.bench_floor`), the floor under the transport.

Run as `python -m launch.bench_roles ROLE ...`; `launch.bench` starts and stops them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import socketserver
import struct
import sys
import threading
import time
from pathlib import Path

import grpc
import torch

from configs.loader import config_digest, load_config
from configs.schema import MODALITIES
from device_node.step import Transmission
from edge_server.hub import EdgeHub
from edge_server.server import EdgeServicer
from foundation.logs import setup_logging
from launch import bench_floor
from protos import codec
from protos import tokcom_pb2 as pb
from protos import tokcom_pb2_grpc as pb_grpc
from protos.parts import PART_BYTES, Parts
from protos.rpc import (LinkStub, Outbox, add_link_servicer, connect, fast_thread_switch, serve_stream, start_server,
                        whole, write_port_file)

log = logging.getLogger(__name__)
MAX_MB = 256


# ---------------------------------------------------------------- one hop: gRPC stream vs raw TCP

class _Sink(pb_grpc.TokenLinkServicer):
    def Link(self, request_iterator, context):
        outbox = Outbox()

        def read():
            try:
                for up, payloads in whole(request_iterator, MAX_MB << 20):
                    codec.decode_symbols(up.tokens.symbols, payload=payloads.get("tokens.symbols"))  # as a receiver
                    outbox.put(pb.Down(welcome=pb.Welcome(node="sink")))
            except grpc.RpcError:
                pass  # the stream was cancelled (the server stopping): end the response stream too
            finally:
                outbox.close()

        threading.Thread(target=read, daemon=True).start()
        return serve_stream(outbox, context)


class _RawSink:
    """The floor of the same hop: raw bytes (`launch.bench_floor`'s stream), acknowledged after a
    tensor's last part, with no protobuf and no codec."""

    def Link(self, request_iterator, context):
        outbox = Outbox()

        def read():
            try:
                for msg in request_iterator:
                    if msg[:1] == bench_floor.LAST:
                        outbox.put(b"k")
            except grpc.RpcError:
                pass
            finally:
                outbox.close()

        threading.Thread(target=read, daemon=True).start()
        return serve_stream(outbox, context)


def _add_sinks(server: grpc.Server) -> None:
    add_link_servicer(_Sink(), server)
    bench_floor.add_link(server, _RawSink().Link)


def sink_grpc(port_file: str) -> None:
    server = start_server(_add_sinks, "127.0.0.1:0", MAX_MB, workers=4, credential=None,
                          port_file=port_file)  # plaintext: the hop itself is measured
    server.server.wait_for_termination()


class _TcpSink(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn, buf = self.request, bytearray(64 << 20)
        view = memoryview(buf)
        while True:
            head = conn.recv(8, socket.MSG_WAITALL)
            if len(head) < 8:
                return
            (n,) = struct.unpack("<Q", head)
            got = 0
            while got < n:
                got += conn.recv_into(view[got:n], n - got)
            conn.sendall(b"k")


def sink_tcp(port_file: str) -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TcpSink) as server:
        write_port_file(port_file, server.server_address[1])
        server.serve_forever()


def client(grpc_address: str, tcp_address: str, sizes_mib: list[int], repeats: int, out: str) -> None:
    """Per size, each message sent and acknowledged in turn, after two warm-ups: `repeats` timed
    messages on each path back to back ("sequential": each path with its buffers and threads warm),
    then `repeats` more alternating the paths ("alternating": all see the same moments of a shared
    machine). The paths: tokcom's stream ("grpc": encode, parts, decode), the same bytes in the
    same parts as raw gRPC messages ("raw": grpcio's floor), and raw TCP ("tcp"). Medians and
    bests of each."""
    channel = connect(grpc_address, MAX_MB, None, "")
    outbox, raw_outbox = Outbox(), Outbox()
    acks = LinkStub(channel).Link(iter(outbox))
    raw_acks = bench_floor.open_link(channel, raw_outbox)
    host, port = tcp_address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def hop(z: torch.Tensor) -> None:  # encode, send in parts, the sink decodes, ack
        up, parts = pb.Up(), Parts()
        up.tokens.node = "bench"
        codec.encode_symbols(z, into=up.tokens.symbols, parts=parts, path="tokens.symbols")
        outbox.put(up, parts)
        next(acks)

    def raw(z: torch.Tensor) -> None:  # the same bytes in the same parts as raw gRPC messages, ack
        for msg in bench_floor.tensor_messages(0, z.numel() * 8, PART_BYTES, z.numpy()):
            raw_outbox.put(msg)
        next(raw_acks)

    def tcp(z: torch.Tensor) -> None:
        payload = z.numpy().tobytes()
        sock.sendall(struct.pack("<Q", len(payload)) + payload)
        sock.recv(1)

    results = {mode: {"grpc": {}, "raw": {}, "tcp": {}} for mode in ("sequential", "alternating")}
    paths = (("grpc", hop), ("raw", raw), ("tcp", tcp))
    for mib in sizes_mib:
        n = mib << 20
        z = torch.randn(1, n // 8, dtype=torch.complex64)  # n bytes of float32 pairs
        rounds = {"sequential": [[p] for p in paths for _ in range(repeats + 2)],
                  "alternating": [list(paths)] * (repeats + 2)}
        for mode, schedule in rounds.items():
            times = {kind: [] for kind, _ in paths}
            for batch in schedule:
                for kind, send in batch:
                    t0 = time.perf_counter()
                    send(z)
                    times[kind].append(time.perf_counter() - t0)
            for kind, ts in times.items():
                ts = ts[2:]  # warm-ups
                ms = sorted(ts)[len(ts) // 2] * 1e3
                results[mode][kind][str(mib)] = {"median_ms": ms, "mb_per_s": n / 1e6 / (ms / 1e3),
                                                 "best_ms": min(ts) * 1e3}
    outbox.close()
    raw_outbox.close()
    sock.close()
    channel.close()
    Path(out).write_text(json.dumps(results))


# ---------------------------------------------------------------- the paper's shapes through the real relay

class SyntheticDevice:
    """A `DeviceNode` stand-in with the right shapes and no model: unit-power symbols drawn once
    (two sets, alternated), so that its compute is ~0 and the round time is the transport's."""

    def __init__(self, node: str, s: int, d: int, b: int, text_len: int):
        self.node, self.s, self.d, self.b, self.text_len = node, s, d, b, text_len
        gen = torch.Generator().manual_seed(0)
        self.sets = [torch.randn(b, s * d // 2, dtype=torch.complex64, generator=gen) for _ in range(2)]  # (b, c)

    def transmit(self, phase: str, step: int, ids: list[str]) -> Transmission:
        t0 = time.perf_counter()
        z = self.sets[step % 2][:len(ids)]  # (b, c)
        labels = {}
        if self.node.endswith("/text"):
            labels = {"text_ids": torch.zeros(len(ids), self.text_len, dtype=torch.long),
                      "text_mask": torch.ones(len(ids), self.text_len, dtype=torch.bool)}
        return Transmission(z, self.s, self.d, labels, (time.perf_counter() - t0) * 1e3)

    def update(self, phase: str, step: int, grad) -> None:
        pass

    def save(self, path) -> None:
        pass

    def load(self, path) -> None:
        pass


def _shapes(cfg) -> dict[str, int]:
    return {"audio": cfg.transmitter.audio.tokens, "video": cfg.transmitter.video.tokens, "text": cfg.data.text_len}


def device(cfg, relay: str, modality: str, width: int) -> None:
    from device_node.client import DeviceClient

    node = SyntheticDevice(f"user0/{modality}", _shapes(cfg)[modality], width, cfg.train.stage1.batch,
                           cfg.data.text_len)
    channel = connect(relay, cfg.wire.max_message_mb, None, "")  # the bench's relay runs --insecure
    info = pb.NodeInfo(node=node.node, user=0, modality=modality, role="device", pid=os.getpid(),
                       host=socket.gethostname(), config_digest=config_digest(cfg))
    DeviceClient(node, LinkStub(channel), cfg.wire, Path(".")).serve(info)


def edge(cfg, port_file: str, width: int, rounds: int, out: str) -> None:
    """The real hub and servicer; rounds of TRANSMIT -> tokens -> UPDATE with random gradients."""
    hub = EdgeHub(cfg, {"config_digest": config_digest(cfg)}, {m: width for m in MODALITIES})
    # vocab 1: the synthetic text node's labels are all token 0
    server = start_server(lambda s: add_link_servicer(EdgeServicer(hub, cfg, 1), s),
                          "127.0.0.1:0", cfg.wire.max_message_mb, workers=8, credential=None, port_file=port_file)
    hub.wait_registered(120)
    b, gen = cfg.train.stage1.batch, torch.Generator().manual_seed(1)
    ids = [f"clip{i:05d}" for i in range(b)]  # names only: the synthetic devices read no data
    rows = []
    for k in range(rounds):
        t0 = time.perf_counter()
        ex = hub.exchange("stage1", k, {0: ids})
        t1 = time.perf_counter()
        grads = {m: torch.randn(b, _shapes(cfg)[m] * width // 2, dtype=torch.complex64, generator=gen)
                 for m in ("audio", "video")}
        t2 = time.perf_counter()
        hub.send_grads("stage1", k, {0: grads})
        t3 = time.perf_counter()
        rows.append({"round_ms": (t3 - t0 - (t2 - t1)) * 1e3, "device_ms": ex.device_ms})
    hub.finish()
    Path(out).write_text(json.dumps({"rounds": rows, "links": hub.links()}))
    server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.bench_roles")
    p.add_argument("role", choices=["sink-grpc", "sink-tcp", "client", "edge", "device",
                                    "floor-edge", "floor-relay", "floor-device"])
    p.add_argument("--port-file")
    p.add_argument("--address", help="the peer's HOST:PORT: the gRPC sink (client), the relay (devices)")
    p.add_argument("--edge", help="the edge's HOST:PORT (floor-relay)")
    p.add_argument("--tcp-address")
    p.add_argument("--sizes", default="1,4,8,16")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out")
    p.add_argument("--config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--modality")
    p.add_argument("--width", type=int, default=1536)
    p.add_argument("--rounds", type=int, default=30)
    a = p.parse_args(argv)
    setup_logging(f"bench-{a.role}", a.modality or "")
    torch.set_num_threads(1)
    if a.role in ("sink-grpc", "sink-tcp", "client"):  # one hop, timed as it was first measured
        if a.role == "sink-grpc":
            sink_grpc(a.port_file)
        elif a.role == "sink-tcp":
            sink_tcp(a.port_file)
        else:
            client(a.address, a.tcp_address, [int(x) for x in a.sizes.split(",")], a.repeats, a.out)
        return 0
    fast_thread_switch()  # a round's roles, as the real ones run
    if a.role == "floor-relay":
        bench_floor.relay(a.edge, a.port_file)
        return 0
    cfg = load_config(a.config, a.overrides)
    if a.role == "edge":
        edge(cfg, a.port_file, a.width, a.rounds, a.out)
    elif a.role == "device":
        device(cfg, a.address, a.modality, a.width)
    elif a.role == "floor-edge":
        bench_floor.edge(cfg, a.width, a.rounds, a.port_file, a.out)
    else:
        bench_floor.device(cfg, a.width, a.modality, a.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
