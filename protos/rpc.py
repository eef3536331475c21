"""Small gRPC helpers every process shares: channel options with raised message
limits, server-side timing for latency metering, node info conversion, port files."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from protos import tokcom_pb2 as pb


def channel_options(max_message_mb: int) -> list[tuple[str, int]]:
    """gRPC's 4 MiB default receive limit, raised (both ends must use these)."""
    n = int(max_message_mb) * 1024 * 1024
    return [("grpc.max_send_message_length", n), ("grpc.max_receive_message_length", n)]


class _Timer:
    ms = 0.0


@contextmanager
def timed():
    """`with timed() as t: ...` then `t.ms`: how long the server held a call."""
    t = _Timer()
    t0 = time.perf_counter()
    try:
        yield t
    finally:
        t.ms = (time.perf_counter() - t0) * 1e3


def info_to_dict(info: pb.NodeInfo) -> dict:
    return {"node": info.node, "user": int(info.user), "modality": info.modality, "role": info.role,
            "pid": int(info.pid), "host": info.host, "config_digest": info.config_digest,
            "data_digest": info.data_digest, "model_digest": info.model_digest}


def write_port_file(path: str | Path, port: int) -> None:
    """Atomically write the bound port, so a launcher never reads half a number."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)
