"""Large tensors in parts: the sending and the receiving half (tokcom.v2's `Part`).

A tensor of more than `PART_BYTES` travels as `Part` messages of at most `PART_BYTES`
each, sent just before the message that holds it; that message's `Tensor` has `parts`
set and no `data`. The sender's gRPC thread serialises part k+1 while the core sends
part k and the receiver copies part k-1 into place, so a megabyte tensor crosses a
hop as a pipeline instead of one serialise-send-receive-parse in turn (one 8 MiB
message: ~13 ms; in parts: see docs/performance.md).

- `Parts` (sender): collects the raw bytes of a message's large tensors while the codec
  builds it (`codec.encode_tensor(..., parts=, path=)`), without copying them; the
  stream's `Outbox.put(msg, parts)` sends them, then the message.
- `PartWire`: one part, serialised by hand in gRPC's sending thread to exactly the bytes
  protobuf would write for `Up(part=Part(...))` / `Down(part=...)`, with one copy of the
  slice instead of three.
- `Assembly` (receiver): one per stream; copies each part into a buffer of the tensor's
  full size and, when the next message arrives, checks that the parts match its tensors
  exactly (paths, counts, sizes) and hands their buffers over (`Payloads`).

A tensor's path is its place in the message: field names joined by dots, with the index
of a repeated field's element ("tokens.symbols", "tasks.tasks.0.grad"); `tensor_paths`
walks a message in field-number order. Malformed parts raise `CodecError`, which servers
answer with INVALID_ARGUMENT.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from protos import tokcom_pb2 as pb
from protos.codec import CodecError

PART_BYTES = 1 << 20  # wire.part_kb's default, 1 MiB: measured best of 0.5/1/2 MiB on loopback (docs/performance.md)


def tensor_paths(msg, prefix: str = "") -> Iterator[tuple[str, pb.Tensor]]:
    """(path, Tensor) for every Tensor set in `msg`, depth first in field-number order."""
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        items = (((f"{prefix}{field.name}.{i}", v) for i, v in enumerate(value))
                 if field.is_repeated else ((f"{prefix}{field.name}", value),))
        for path, sub in items:
            if sub.DESCRIPTOR is pb.Tensor.DESCRIPTOR:
                yield path, sub
            else:
                yield from tensor_paths(sub, path + ".")


# ---------------------------------------------------------------- sending

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _head(field: int, length: int) -> bytes:
    """The tag and length of a length-delimited field (wire type 2)."""
    return _varint(field << 3 | 2) + _varint(length)


_PART_FIELD = {pb.Up.DESCRIPTOR: pb.Up.DESCRIPTOR.fields_by_name["part"].number,
               pb.Down.DESCRIPTOR: pb.Down.DESCRIPTOR.fields_by_name["part"].number}


class PartWire:
    """One Part of one tensor, for the stream of `outer` (pb.Up or pb.Down) messages."""

    __slots__ = ("outer", "path", "chunk", "total")

    def __init__(self, outer, path: str, chunk: memoryview, total: int):
        self.outer, self.path, self.chunk, self.total = outer, path, chunk, total

    def serialize(self) -> bytes:
        """Exactly `outer(part=Part(tensor=path, data=chunk, total=total)).SerializeToString()`."""
        name = self.path.encode()
        inner = _head(1, len(name)) + name + _head(2, len(self.chunk))
        tail = _varint(3 << 3) + _varint(self.total)  # field 3, wire type 0
        size = len(inner) + len(self.chunk) + len(tail)
        return b"".join((_head(_PART_FIELD[self.outer.DESCRIPTOR], size), inner, self.chunk, tail))


class Parts:
    """The large tensors of one message being built: (path, raw bytes) in the order encoded."""

    def __init__(self, part_bytes: int = PART_BYTES) -> None:
        self.part_bytes = part_bytes  # a tensor above this travels in parts of this size (the codec asks)
        self.items: list[tuple[str, memoryview]] = []

    def add(self, path: str, raw: np.ndarray) -> int:
        """Keep a view of `raw` (C-contiguous) for sending; returns its number of parts."""
        if not path:
            raise CodecError("a tensor sent in parts needs its path in the message")
        view = memoryview(raw).cast("B")  # keeps `raw` (and the tensor it views) alive
        self.items.append((path, view))
        return math.ceil(len(view) / self.part_bytes)

    def wires(self, outer) -> Iterator[PartWire]:
        for path, view in self.items:
            for i in range(0, len(view), self.part_bytes):
                yield PartWire(outer, path, view[i:i + self.part_bytes], len(view))


# ---------------------------------------------------------------- receiving

class PartIn:
    """A received Part, its data a view of the bytes gRPC handed over (`read_part`)."""

    __slots__ = ("tensor", "data", "total", "wire_bytes")

    def __init__(self, tensor: str, data, total: int, wire_bytes: int):
        self.tensor, self.data, self.total, self.wire_bytes = tensor, data, total, wire_bytes


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise IndexError
        byte = buf[i]
        n |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return n, i


def read_part(raw: bytes, outer) -> PartIn | None:
    """`raw` as a PartIn when it is exactly one Part of an `outer` message, in the layout
    `PartWire` writes or any other order of the three fields; None for anything else, which
    the caller parses with protobuf (the authority on every message)."""
    try:
        key, i = _read_varint(raw, 0)
        if key != (_PART_FIELD[outer.DESCRIPTOR] << 3 | 2):
            return None
        size, i = _read_varint(raw, i)
        if i + size != len(raw):
            return None
        fields: dict[int, object] = {}
        while i < len(raw):
            key, i = _read_varint(raw, i)
            number, kind = key >> 3, key & 7
            if number in fields or (number, kind) not in ((1, 2), (2, 2), (3, 0)):
                return None  # repeated or unknown fields: leave them to protobuf's rules
            value, i = _read_varint(raw, i)
            if kind == 2:
                if i + value > len(raw):
                    return None
                value, i = (i, i + value), i + value
            fields[number] = value
        view = memoryview(raw)
        name = bytes(view[slice(*fields[1])]).decode() if 1 in fields else ""
        data = view[slice(*fields[2])] if 2 in fields else view[:0]
        return PartIn(name, data, int(fields.get(3, 0)), len(raw))
    except (IndexError, UnicodeDecodeError):
        return None


def deserializer(outer):
    """gRPC's deserializer for a stream of `outer` messages: Parts as `PartIn` without copying
    their data, everything else parsed by protobuf."""
    parse = outer.FromString

    def load(raw: bytes):
        return read_part(raw, outer) or parse(raw)

    return load

class Payloads:
    """The tensors that came in parts for one message: path -> its bytes."""

    def __init__(self, buffers: dict[str, bytearray] | None = None, wire: dict[str, int] | None = None):
        self.buffers, self._wire = buffers or {}, wire or {}

    def get(self, path: str) -> bytearray | None:
        return self.buffers.get(path)

    def wire_bytes(self, prefix: str = "") -> int:
        """Bytes the parts of the tensors under `prefix` took on the wire."""
        return sum(n for path, n in self._wire.items() if path.startswith(prefix))


NONE = Payloads()


class Assembly:
    """The receiving half of one stream. `add` each Part as it arrives; `take(msg)` for every
    other message, which returns the parts that belong to it (and raises if they do not fit)."""

    def __init__(self, limit_bytes: int):
        self.limit = int(limit_bytes)
        self._reset()

    def _reset(self) -> None:
        self._buf: dict[str, bytearray] = {}
        self._got: dict[str, int] = {}  # bytes received per tensor
        self._count: dict[str, int] = {}
        self._wire: dict[str, int] = {}
        self._total = 0

    def add(self, part: PartIn) -> None:
        path, data, total, wire_bytes = part.tensor, part.data, int(part.total), part.wire_bytes
        if not path:
            raise CodecError("part: no tensor path; name the tensor, e.g. 'tokens.symbols'")
        buf = self._buf.get(path)
        if buf is None:
            if self._total + total > self.limit:
                raise CodecError(f"part of {path!r}: {total} bytes would make {self._total + total} bytes of "
                                 f"parts for one message, above this stream's limit of {self.limit}")
            if not 0 < total or not data:
                raise CodecError(f"part of {path!r}: total {total} bytes with {len(data)} bytes of data; "
                                 f"a part carries a non-empty slice of a non-empty tensor")
            buf = self._buf[path] = bytearray(total)
            self._got[path] = self._count[path] = self._wire[path] = 0
            self._total += total
        got = self._got[path]
        if total != len(buf) or got + len(data) > total:
            raise CodecError(f"part of {path!r}: {len(data)} bytes at offset {got} of a {len(buf)}-byte tensor "
                             f"(this part says {total})")
        buf[got:got + len(data)] = data  # the one copy on this side
        self._got[path] = got + len(data)
        self._count[path] += 1
        self._wire[path] += wire_bytes

    def take(self, msg) -> Payloads:
        """The parts received since the last message, bound to `msg`'s tensors by path."""
        try:
            want = {path: t for path, t in tensor_paths(msg) if t.parts}
            if not want and not self._buf:
                return NONE
            for path, t in want.items():
                if t.data:
                    raise CodecError(f"{path}: has both data and parts={t.parts}; a tensor travels one way")
                if path not in self._buf:
                    raise CodecError(f"{path}: says it came in {t.parts} parts, but none arrived before it")
                if self._count[path] != t.parts or self._got[path] != len(self._buf[path]):
                    raise CodecError(f"{path}: {self._count[path]} parts with {self._got[path]} of "
                                     f"{len(self._buf[path])} bytes arrived; the tensor says parts={t.parts}")
            extra = sorted(set(self._buf) - set(want))
            if extra:
                raise CodecError(f"parts arrived for {extra}, which the next message does not hold in parts")
            return Payloads(self._buf, self._wire)
        finally:
            self._reset()
