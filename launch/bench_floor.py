"""The floor under the transport: a round's bytes through gRPC alone, for `tokcom bench`.

The same processes and streams as a cluster round (three devices -> relay -> edge, and the
gradients back), with the same channel options, thread pools, `Outbox` and part size, but
raw bytes: identity serialisers, no protobuf, no codec, no channel, no metering, and
messages built once before the first round. Its round time is what grpcio alone costs for
those bytes on this machine, so the distance from it to the real transport's round is
tokcom's own overhead, and a target below it cannot be met with grpcio here.

One round, as the real one: the edge sends TRANSMIT; the relay passes it to every device;
each device answers with its symbols (`b * s * d * 4` bytes, in parts of `wire.part_kb`);
the relay forwards every message as it came; the edge waits for every device's last part,
then sends the audio and video gradients (each the size of its symbols), which the relay
forwards to their devices ahead of the next TRANSMIT.

Its roles run as `python -m launch.bench_roles floor-{edge,relay,device} ...`; `launch.bench`
starts them.
"""
from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

import grpc

from protos.rpc import Outbox, connect, serve_stream, start_server

METHOD = "/tokcom.bench.Floor/Link"
MAX_MB = 256
DEVICES = ("audio", "video", "text")
TRAINED = ("audio", "video")
# The first byte of every message: its kind. TRANSMIT carries the round, the others the device's index.
HELLO, TRANSMIT, PART, LAST, STOP = b"H", b"T", b"P", b"L", b"S"


def _ident(b: bytes) -> bytes:
    return b


def add_link(server: grpc.Server, link) -> None:
    """Serve `link(requests, context)` as the raw-bytes stream method."""
    handler = grpc.stream_stream_rpc_method_handler(link, request_deserializer=_ident, response_serializer=_ident)
    service, name = METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {name: handler}),))


def open_link(channel: grpc.Channel, outbox: Outbox):
    """The raw-bytes stream to a server of `add_link`, sending what is put in `outbox`."""
    return channel.stream_stream(METHOD, request_serializer=_ident, response_deserializer=_ident)(iter(outbox))


def tensor_messages(device: int, nbytes: int, part_bytes: int, payload=None) -> list[bytes]:
    """One tensor of `nbytes` (zeros, or the buffer `payload`) as the stream carries it: PART
    messages of `part_bytes`, then LAST with the rest (a tensor no larger than a part is one
    LAST message, as in `protos.parts`). Each message is one copy of its slice."""
    head = bytes([device])
    payload = memoryview(bytes(nbytes) if payload is None else payload).cast("B")
    cuts = list(range(0, nbytes, part_bytes)) if nbytes > part_bytes else [0]
    msgs = [PART + head + payload[a:a + part_bytes] for a in cuts[:-1]]
    return msgs + [LAST + head + payload[cuts[-1]:]]


def bytes_per_round(cfg, width: int) -> dict[str, int]:
    """Bytes of each device's symbols per round at float32: b * s * d * 4 ((b, s*d/2) complex64)."""
    s = {"audio": cfg.transmitter.audio.tokens, "video": cfg.transmitter.video.tokens, "text": cfg.data.text_len}
    return {m: cfg.train.stage1.batch * s[m] * width * 4 for m in DEVICES}


# ---------------------------------------------------------------- edge

class _Edge:
    def __init__(self, grads: dict[int, list[bytes]]):
        self.grads = grads
        self.outbox = Outbox()
        self.lock = threading.Condition()
        self.last: set[int] = set()
        self.hellos: set[int] = set()
        self.received = 0

    def Link(self, requests, context):
        threading.Thread(target=self._read, args=(requests,), daemon=True).start()
        return serve_stream(self.outbox, context)

    def _read(self, requests) -> None:
        try:
            for msg in requests:
                kind, dev = msg[:1], msg[1]
                with self.lock:
                    self.received += len(msg)
                    if kind == LAST:
                        self.last.add(dev)
                    elif kind == HELLO:
                        self.hellos.add(dev)
                    else:
                        continue
                    self.lock.notify_all()
        except grpc.RpcError:
            pass
        finally:
            self.outbox.close()

    def wait(self, what: set[int], timeout: float) -> None:
        with self.lock:
            if not self.lock.wait_for(lambda: what >= set(range(len(DEVICES))), timeout):
                raise TimeoutError("the floor's devices did not all answer")

    def rounds(self, n: int) -> list[dict]:
        self.wait(self.hellos, 120)
        rows = []
        for k in range(n):
            t0 = time.perf_counter()
            with self.lock:
                self.last.clear()
            self.outbox.put(TRANSMIT + struct.pack("<I", k))
            self.wait(self.last, 60)
            for msgs in self.grads.values():
                for m in msgs:
                    self.outbox.put(m)
            rows.append({"round_ms": (time.perf_counter() - t0) * 1e3})
        self.outbox.put(STOP)
        return rows


def edge(cfg, width: int, rounds: int, port_file: str, out: str) -> None:
    sizes, part = bytes_per_round(cfg, width), cfg.wire.part_bytes
    node = _Edge({i: tensor_messages(i, sizes[m], part) for i, m in enumerate(DEVICES) if m in TRAINED})
    server = start_server(lambda s: add_link(s, node.Link), "127.0.0.1:0", MAX_MB, workers=4, credential=None,
                          port_file=port_file)
    try:
        rows = node.rounds(rounds)
        Path(out).write_text(json.dumps({"rounds": rows, "bytes_per_round": sizes,
                                         "part_bytes": part, "edge_received_bytes": node.received}))
    finally:
        server.stop()


# ---------------------------------------------------------------- relay

class _Relay:
    def __init__(self, channel: grpc.Channel):
        self.to_edge = Outbox()
        self.devices: dict[int, Outbox] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.responses = open_link(channel, self.to_edge)
        threading.Thread(target=self._read_edge, daemon=True).start()

    def _read_edge(self) -> None:
        try:
            for msg in self.responses:
                kind = msg[:1]
                with self.lock:
                    targets = list(self.devices.values()) if kind in (TRANSMIT, STOP) else [self.devices[msg[1]]]
                for outbox in targets:
                    outbox.put(msg)  # forwarded as it came
                if kind == STOP:
                    break
        except grpc.RpcError:
            pass
        finally:
            self.done.set()

    def Link(self, requests, context):
        outbox = Outbox()
        threading.Thread(target=self._read_device, args=(requests, outbox), daemon=True).start()
        return serve_stream(outbox, context)

    def _read_device(self, requests, outbox: Outbox) -> None:
        try:
            for msg in requests:
                if msg[:1] == HELLO:
                    with self.lock:
                        self.devices[msg[1]] = outbox
                self.to_edge.put(msg)  # forwarded as it came
        except grpc.RpcError:
            pass
        finally:
            outbox.close()


def relay(edge_address: str, port_file: str) -> None:
    channel = connect(edge_address, MAX_MB, None, "edge")
    node = _Relay(channel)
    server = start_server(lambda s: add_link(s, node.Link), "127.0.0.1:0", MAX_MB, workers=16, credential=None,
                          port_file=port_file)
    node.done.wait()
    node.to_edge.close()
    server.stop()
    channel.close()


# ---------------------------------------------------------------- device

def device(cfg, width: int, modality: str, relay_address: str) -> None:
    index = DEVICES.index(modality)
    tokens = tensor_messages(index, bytes_per_round(cfg, width)[modality], cfg.wire.part_bytes)
    channel = connect(relay_address, MAX_MB, None, "relay")
    outbox = Outbox()
    outbox.put(HELLO + bytes([index]))
    try:
        for msg in open_link(channel, outbox):
            kind = msg[:1]
            if kind == TRANSMIT:
                for m in tokens:
                    outbox.put(m)
            elif kind == STOP:
                break
    except grpc.RpcError:
        pass
    outbox.close()
    channel.close()
