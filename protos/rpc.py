"""The gRPC shell every role shares: the protocol name, named timeouts, channel options
with raised message limits, server start-up with health checks, connecting, the bidirectional
stream plumbing, and signal handling. Roles keep their logic elsewhere; this module is the
only one that starts servers or dials.
"""
from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from protos import tokcom_pb2 as pb
from protos.parts import Assembly, PartIn, Parts, PartWire, Payloads, deserializer
from protos.tls import Credential

log = logging.getLogger(__name__)

PROTOCOL = "tokcom.v2"
DETAILS_MAX = 200  # characters of a status's details: client input echoed without a bound overflowed the trailers


def clip(text: str, limit: int = DETAILS_MAX) -> str:
    """`text` cut to `limit` characters, saying how much was cut (for details and logs that echo input)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


class Timeouts:
    """Every bound on waiting that is not a run's `wire.step_timeout_s`."""

    HELLO_S = 60.0  # a hello answered by the edge (it may still be loading its model)
    CONNECT_S = 120.0  # a peer's port accepting connections
    STOP_GRACE_S = 2.0  # in-flight streams given this long when a server stops
    EDGE_GONE_CHECKS = 3  # the relay stops after this many failed health checks of the edge ...
    HEALTH_EVERY_S = 2.0  # ... made this often
    KEEPALIVE_MS = 10_000  # HTTP/2 pings on idle streams, so a dead peer is noticed


# glibc malloc settings for the roles' processes: large message buffers stay in the heap instead
# of being mmap'ed and unmapped per message (page faults dominated 8 MiB messages: ~65 ms -> ~25).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
              "MALLOC_TOP_PAD_": str(64 << 20), "MALLOC_ARENA_MAX": "2"}


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc's malloc_trim; nothing elsewhere). Under MALLOC_ENV
    a process keeps what it frees: the text device, which loads the whole LM for its embedding
    table, held 6.3 GB of the paper preset's 1.5B LM after dropping it, 1.3 GB after this."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def channel_options(max_message_mb: int) -> list[tuple[str, int]]:
    """gRPC's 4 MiB default receive limit, raised (both ends use these), bigger HTTP/2 windows
    for large tensors, and keepalive pings so a vanished peer ends the stream."""
    n = int(max_message_mb) * 1024 * 1024
    return [("grpc.max_send_message_length", n), ("grpc.max_receive_message_length", n),
            ("grpc.http2.lookahead_bytes", 16 << 20), ("grpc.http2.max_frame_size", (1 << 24) - 1),
            ("grpc.keepalive_time_ms", Timeouts.KEEPALIVE_MS), ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0), ("grpc.http2.min_ping_interval_without_data_ms", 5_000)]


# ---------------------------------------------------------------- servers and channels

@dataclass
class Server:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    port_file: Path | None = None  # removed on stop: a stale one would point a launcher at a dead port

    def serving(self, service: str = "") -> None:
        self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace=Timeouts.STOP_GRACE_S).wait()
        if self.port_file is not None:
            self.port_file.unlink(missing_ok=True)


def start_server(add_servicers: Callable[[grpc.Server], None], listen: str, max_message_mb: int,
                 workers: int, credential: Credential | None, port_file: str | None = None,
                 health_servicer: health.HealthServicer | None = None) -> Server:
    """Start a gRPC server on `listen` (port 0: the OS picks) with `add_servicers` and the
    grpc.health.v1 service; health "" is SERVING and the port is in `port_file` when this returns.
    With a credential the port speaks mutual TLS only; None (--insecure) serves plaintext.
    Each open stream holds one of the `workers` threads."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=channel_options(max_message_mb))
    add_servicers(server)
    health_servicer = health_servicer or health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = (server.add_secure_port(listen, credential.server()) if credential is not None
            else server.add_insecure_port(listen))
    if port == 0:
        raise OSError(f"could not bind {listen}; is the address in use or not this machine's?")
    server.start()
    out = Server(server, port, health_servicer, Path(port_file) if port_file else None)
    out.serving()
    if port_file:
        write_port_file(port_file, port)
    return out


def open_channel(address: str, credential: Credential | None, server_name: str,
                 options: list[tuple[str, int]]) -> grpc.Channel:
    """A channel to `address`: mutual TLS with `credential`, checking that the server's certificate
    names `server_name` ('relay', 'edge'); plaintext when `credential` is None."""
    if credential is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credential.client(),
                               options=options + [("grpc.ssl_target_name_override", server_name)])


def connect(address: str, max_message_mb: int, credential: Credential | None, server_name: str,
            timeout_s: float = Timeouts.CONNECT_S) -> grpc.Channel:
    """A channel to `address` once it accepts connections; TimeoutError naming it otherwise."""
    channel = open_channel(address, credential, server_name, channel_options(max_message_mb))
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        channel.close()
        raise TimeoutError(f"{address} not reachable within {timeout_s:.0f} s; start it first or check the address"
                           + (f", and that it is the {server_name} of this run's credentials" if credential else ""))
    return channel


def peer_alive(channel: grpc.Channel) -> bool:
    """One grpc.health.v1 check of the peer behind `channel`."""
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=Timeouts.HEALTH_EVERY_S)
        return True
    except grpc.RpcError:
        return False


def write_port_file(path: str | Path, port: int) -> None:
    """Atomically write the bound port, so a launcher never reads half a number."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)


# ---------------------------------------------------------------- streams

LINK_METHOD = "/tokcom.v2.TokenLink/Link"


def _serialize(msg) -> bytes:
    """Messages and parts alike (a `PartWire` writes its own protobuf bytes, copying its slice once)."""
    return msg.serialize() if isinstance(msg, PartWire) else msg.SerializeToString()


class LinkStub:
    """The client of `TokenLink`, like the generated stub but able to send parts."""

    def __init__(self, channel: grpc.Channel):
        self.Link = channel.stream_stream(LINK_METHOD, request_serializer=_serialize,
                                          response_deserializer=deserializer(pb.Down))


def add_link_servicer(servicer, server: grpc.Server) -> None:
    """Serve `servicer.Link` (a TokenLinkServicer), able to send parts in its responses."""
    handler = grpc.stream_stream_rpc_method_handler(servicer.Link, request_deserializer=deserializer(pb.Up),
                                                    response_serializer=_serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tokcom.v2.TokenLink",
                                                                          {"Link": handler}),))


def whole(messages, limit_bytes: int) -> Iterator[tuple]:
    """A stream's messages with their parts gathered: (message, its `Payloads`), never a Part.
    Parts that do not fit the message after them raise `CodecError`."""
    assembly = Assembly(limit_bytes)
    for msg in messages:
        if isinstance(msg, PartIn):
            assembly.add(msg)
        elif msg.WhichOneof("msg") == "part":  # a Part in a layout of its own, parsed by protobuf
            p = msg.part
            assembly.add(PartIn(p.tensor, p.data, p.total, msg.ByteSize()))
        else:
            yield msg, assembly.take(msg)


_CLOSE = object()


class Outbox:
    """The sending half of a stream: a queue that gRPC drains as the request (client) or
    response (server) iterator. `put` from any thread; `close` ends the stream."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # a message's parts and the message go out together

    def put(self, msg, parts: Parts | None = None) -> None:
        """Send `msg`, after the parts of its large tensors (see `protos.parts`)."""
        with self._lock:  # another thread's message must not fall between these parts and theirs
            if parts is not None:
                for wire in parts.wires(type(msg)):
                    self._q.put(wire)
            self._q.put(msg)

    def close(self) -> None:
        self._q.put(_CLOSE)

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        """Server side: end the stream with this status (raised by `serve`); details are clipped."""
        self._q.put(_Abort(code, clip(details)))

    def __iter__(self) -> Iterator:
        while True:
            msg = self._q.get()
            if msg is _CLOSE:
                return
            if isinstance(msg, _Abort):
                raise msg
            yield msg


@dataclass
class _Abort(Exception):
    code: grpc.StatusCode
    details: str


def serve_stream(outbox: Outbox, context: grpc.ServicerContext) -> Iterator:
    """A servicer's response iterator: the outbox's messages, ending with an abort's status."""
    try:
        yield from outbox
    except _Abort as a:
        context.abort(a.code, a.details)


def status_code(name: str) -> grpc.StatusCode:
    """A grpc.StatusCode from its name (INTERNAL for an unknown one)."""
    return getattr(grpc.StatusCode, name, grpc.StatusCode.INTERNAL)


# ---------------------------------------------------------------- messages and signals

def info_to_dict(info: pb.NodeInfo) -> dict:
    return {"node": info.node, "user": int(info.user), "modality": info.modality, "role": info.role,
            "pid": int(info.pid), "host": info.host, "config_digest": info.config_digest,
            "data_digest": info.data_digest, "model_digest": info.model_digest}


GIL_SWITCH_S = 0.0002  # CPython's default is 5 ms


def fast_thread_switch() -> None:
    """A role's threads hand each other messages (a stream's reader, its sender, the main loop);
    with CPython's default switch interval a thread that wakes with a message can wait up to 5 ms
    for the GIL while another runs Python code. 0.2 ms keeps that off the round's latency."""
    sys.setswitchinterval(GIL_SWITCH_S)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt in the main thread, so every role leaves by
    one path: its `finally` stops its server and streams, the edge saves its state first."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _interrupt)
