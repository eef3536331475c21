"""The codec: the only place where protobuf messages and tensors meet.

Tensors travel as raw little-endian C-order bytes + dtype string + shape (DESIGN.md, "Process
model and wire"). Complex symbols travel as real pairs: (b, c) complex64 -> (b, c, 2) with
[..., 0] = Re and [..., 1] = Im, in the configured wire precision (`protos.precision`: float32,
float16 or bfloat16); numpy has no bfloat16, so bfloat16 bytes are checked through an int16 view.

Every malformed input raises `CodecError` naming the field and what was expected vs. received;
servers map it to grpc INVALID_ARGUMENT. Decoded tensors are views over the message's bytes
(`torch.frombuffer`, no copy on little-endian hosts): read them, never write into them.

Shapes: b batch, c complex symbols, L text tokens, A answer tokens.
"""
from __future__ import annotations

import math
import numbers
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from protos import tokcom_pb2 as pb
from protos.precision import PRECISIONS

# Decoded tensors share the (immutable) bytes of their message; torch warns once that it cannot
# mark them read-only. The codec's contract says so instead.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
_LITTLE_HOST = sys.byteorder == "little"


class CodecError(ValueError):
    """A message or tensor that does not fit the tokcom.v2 wire format."""


@dataclass(frozen=True)
class _Wire:
    torch_dtype: torch.dtype
    store: torch.dtype  # same-size dtype numpy knows, used to reach the bytes
    little: np.dtype    # its little-endian numpy dtype (the byte order on the wire)
    exponent: int = 0   # float exponent bits: all set <=> NaN/Inf

    @property
    def itemsize(self) -> int:
        return self.little.itemsize

    @property
    def is_float(self) -> bool:
        return self.torch_dtype.is_floating_point

    def nonfinite(self, raw: np.ndarray) -> int:
        """NaN/Inf count of wire-order values `raw`, by exponent bits: single-threaded numpy, which
        stays fast on busy machines where torch's threaded isfinite stalls. float32 first takes
        numpy's isfinite, ~3x faster, and counts only when something is wrong."""
        if raw.dtype == np.float32 and bool(np.isfinite(raw).all()):
            return 0
        bits = raw.view(np.dtype(f"<u{self.itemsize}")) & self.exponent
        return int(np.count_nonzero(bits == self.exponent))


_WIRE = {
    "float32": _Wire(torch.float32, torch.float32, np.dtype("<f4"), 0x7F800000),
    "float16": _Wire(torch.float16, torch.float16, np.dtype("<f2"), 0x7C00),
    "bfloat16": _Wire(torch.bfloat16, torch.int16, np.dtype("<i2"), 0x7F80),
    "int64": _Wire(torch.int64, torch.int64, np.dtype("<i8")),
    "int32": _Wire(torch.int32, torch.int32, np.dtype("<i4")),
    "bool": _Wire(torch.bool, torch.uint8, np.dtype("u1")),
}
_NAMES = {w.torch_dtype: name for name, w in _WIRE.items()}
assert set(PRECISIONS) <= set(_WIRE)
_LABEL_TENSORS = {"text_ids": "int64", "text_mask": "bool", "answer_ids": "int64", "answer_mask": "bool"}
_LABEL_KEYS = (*_LABEL_TENSORS, "answers", "qtypes")
_STAT_INTS = ("messages", "payload_bytes", "wire_bytes", "channel_uses", "samples")
_STAT_SUMS = ("airtime_s", "queueing_s", "propagation_s", "transport_s")
_STAT_KEYS = ("link", "direction", *_STAT_INTS, "latency_ms", *_STAT_SUMS)


def _wire(dtype: str, name: str) -> _Wire:
    if dtype not in _WIRE:
        raise CodecError(f"{name}: unknown dtype {dtype!r}; expected one of {', '.join(_WIRE)}")
    return _WIRE[dtype]


def _shape_str(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


# ---------------------------------------------------------------------------- tensors

def encode_tensor(t: torch.Tensor, dtype: str | None = None, *, finite: bool = True,
                  name: str = "tensor", into: pb.Tensor | None = None, parts=None, path: str = "") -> pb.Tensor:
    """Tensor -> `pb.Tensor` (raw little-endian C-order bytes), cast to `dtype` when given.

    Casts stay within a kind: float to float, integer/bool to integer/bool.
    finite: reject NaN/Inf in float tensors (after the cast, so overflow is caught at the sender).
    into: fill this field of a message being built (`up.tokens.symbols`) instead of a new
    `pb.Tensor`: nesting a built message copies its bytes again, which costs at megabytes.
    parts, path: a `protos.parts.Parts` of the message and this field's path in it: a tensor
    above `parts.part_bytes` is left out of the message (`parts` set, no `data`) and its bytes,
    not copied, go to `parts` for the stream to send first.
    """
    if not isinstance(t, torch.Tensor):
        raise CodecError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        raise CodecError(f"{name}: complex tensors travel as real pairs; use encode_symbols instead of encode_tensor")
    if dtype is None:
        if t.dtype not in _NAMES:
            raise CodecError(f"{name}: tensor dtype {t.dtype} has no wire form; cast it to one of {', '.join(_WIRE)}")
        dtype = _NAMES[t.dtype]
    w = _wire(dtype, name)
    if t.dtype.is_floating_point != w.is_float:
        raise CodecError(f"{name}: refusing to cast {t.dtype} to {dtype} across float/integer kinds; "
                         f"cast it explicitly before encoding")
    src, t = t, t.detach().to(device="cpu", dtype=w.torch_dtype).contiguous()
    raw = t.view(w.store).numpy().astype(w.little, copy=False)  # no copy on little-endian hosts
    if finite and w.is_float and (bad := w.nonfinite(raw)):
        raise CodecError(f"{name}: {bad} non-finite values (NaN/Inf) in {dtype} tensor of shape "
                         f"{_shape_str(tuple(t.shape))} ({_nonfinite_cause(src, dtype)}); send finite values")
    msg = pb.Tensor() if into is None else into
    if parts is not None and raw.nbytes > parts.part_bytes:
        msg.data, msg.parts = b"", parts.add(path, raw)
    else:
        msg.data, msg.parts = raw.tobytes(), 0
    msg.dtype = dtype
    msg.ClearField("shape")
    msg.shape.extend(t.shape)
    return msg


def decode_tensor(msg: pb.Tensor, *, dtype: str | None = None, shape: Sequence[int | None] | None = None,
                  finite: bool = True, name: str = "tensor", payload: bytearray | None = None) -> torch.Tensor:
    """`pb.Tensor` -> a tensor viewing the message's bytes (read it; do not write into it).

    dtype: the expected wire dtype, or None for any known one.
    shape: the expected shape; None entries are wildcards.
    finite: reject NaN/Inf in float tensors.
    payload: the tensor's bytes when it came in parts (`protos.parts.Payloads.get(path)`).
    """
    w = _wire(msg.dtype, name)
    if dtype is not None and msg.dtype != dtype:
        raise CodecError(f"{name}: dtype {msg.dtype}, expected {dtype}")
    dims = tuple(int(n) for n in msg.shape)
    if any(n < 0 for n in dims):
        raise CodecError(f"{name}: negative dimension in shape {_shape_str(dims)}")
    if shape is not None and (len(dims) != len(shape) or any(e is not None and e != n for e, n in zip(shape, dims))):
        raise CodecError(f"{name}: shape {_shape_str(dims)}, expected {_shape_str(shape)}")
    if msg.parts and payload is None:
        raise CodecError(f"{name}: came in {msg.parts} parts, which were not received with it")
    data = payload if msg.parts else msg.data  # one read: the message may hand out a new bytes object per access
    want = math.prod(dims) * w.itemsize
    if len(data) != want:
        raise CodecError(f"{name}: {len(data)} bytes for shape {_shape_str(dims)} {msg.dtype}, expected {want}")
    if want == 0:
        return torch.empty(dims, dtype=w.torch_dtype)
    arr = np.frombuffer(data, dtype=w.little)  # a view, for the checks
    if w.torch_dtype == torch.bool and int(arr.max()) > 1:
        raise CodecError(f"{name}: bool tensor holds bytes other than 0 and 1")
    if finite and w.is_float and (bad := w.nonfinite(arr)):
        raise CodecError(f"{name}: {bad} non-finite values (NaN/Inf) in {msg.dtype} tensor of shape "
                         f"{_shape_str(dims)}; the sender must send finite values")
    if _LITTLE_HOST:
        return torch.frombuffer(data, dtype=w.torch_dtype).view(dims)  # shares `data`, keeps it alive
    return torch.from_numpy(arr.astype(w.little.newbyteorder("="), copy=True)).view(w.torch_dtype).view(dims)


def _nonfinite_cause(src: torch.Tensor, dtype: str) -> str:
    """Why an encoded float tensor holds NaN/Inf: already in the source, or overflow in the cast."""
    if not bool(torch.isfinite(src).all()):
        return "the source tensor holds them"
    return f"values beyond the {dtype} range overflowed; use a wider dtype or rescale"


def payload_bytes(msg: pb.Tensor, payload: bytearray | None = None) -> int:
    """Tensor payload bytes of one `pb.Tensor` (its raw data, without dtype/shape framing),
    `payload` when it came in parts."""
    return len(payload) if msg.parts and payload is not None else len(msg.data)


# ---------------------------------------------------------------------------- complex symbols

def encode_symbols(z: torch.Tensor, precision: str = "float32", *, name: str = "symbols",
                   into: pb.Tensor | None = None, parts=None, path: str = "") -> pb.Tensor:
    """(b, c) complex -> `pb.Tensor` of real pairs (b, c, 2) in `precision` (float32|float16|bfloat16);
    `into`, `parts` and `path` as for `encode_tensor`."""
    if precision not in PRECISIONS:
        raise CodecError(f"{name}: unknown wire precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if not isinstance(z, torch.Tensor) or not z.is_complex() or z.dim() != 2:
        got = f"{tuple(z.shape)} {z.dtype}" if isinstance(z, torch.Tensor) else type(z).__name__
        raise CodecError(f"{name}: expected a (b, c) complex tensor, got {got}")
    pairs = torch.view_as_real(z.detach().resolve_conj().to(torch.complex64))  # (b, c, 2)
    return encode_tensor(pairs, precision, name=name, into=into, parts=parts, path=path)


def decode_symbols(msg: pb.Tensor, *, b: int | None = None, c: int | None = None,
                   name: str = "symbols", payload: bytearray | None = None) -> torch.Tensor:
    """`pb.Tensor` of real pairs (b, c, 2) in any wire precision -> (b, c) complex64
    (a view over the message's bytes for float32, a converted copy for the half types)."""
    if msg.dtype not in PRECISIONS:
        raise CodecError(f"{name}: dtype {msg.dtype!r}, expected one of {', '.join(PRECISIONS)}")
    pairs = decode_tensor(msg, shape=(b, c, 2), name=name, payload=payload).to(torch.float32)  # (b, c, 2)
    if pairs.numel() == 0:
        return torch.empty(pairs.shape[:2], dtype=torch.complex64)
    return torch.view_as_complex(pairs)  # (b, c)


# ---------------------------------------------------------------------------- labels

def encode_labels(labels: dict) -> pb.Labels:
    """Supervision dict -> `pb.Labels`.

    Keys: text_ids (b, L) int, text_mask (b, L) bool, optional answer_ids (b, A) int and
    answer_mask (b, A) bool (together), optional answers and qtypes (lists of b strings).
    """
    unknown = sorted(set(labels) - set(_LABEL_KEYS))
    if unknown:
        raise CodecError(f"labels: unknown keys {unknown}; expected a subset of {list(_LABEL_KEYS)}")
    msg = pb.Labels()
    for key, dtype in _LABEL_TENSORS.items():
        if key in labels:
            getattr(msg, key).CopyFrom(encode_tensor(labels[key], dtype, name=f"labels.{key}"))
    for key in ("answers", "qtypes"):
        if key in labels:
            values = labels[key]
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise CodecError(f"labels.{key}: expected a list of str, got {values!r:.80}")
            getattr(msg, key).extend(values)
    _check_labels(msg, {key: len(labels[key]) for key in ("answers", "qtypes") if key in labels})
    return msg


def decode_labels(msg: pb.Labels) -> dict:
    """`pb.Labels` -> dict with text_ids (b, L) int64, text_mask (b, L) bool and, when present,
    answer_ids (b, A) int64, answer_mask (b, A) bool, answers, qtypes (present when non-empty)."""
    _check_labels(msg, {key: len(getattr(msg, key)) for key in ("answers", "qtypes") if getattr(msg, key)})
    out = {key: decode_tensor(getattr(msg, key), dtype=dtype, shape=(None, None), name=f"labels.{key}")
           for key, dtype in _LABEL_TENSORS.items() if msg.HasField(key)}
    for key in ("answers", "qtypes"):
        if getattr(msg, key):
            out[key] = list(getattr(msg, key))
    return out


def _check_labels(msg: pb.Labels, n_strings: dict[str, int]) -> None:
    """Presence and shape agreement of a Labels message (dtype/bytes are checked on decode)."""
    for key in ("text_ids", "text_mask"):
        if not msg.HasField(key):
            raise CodecError(f"labels.{key}: missing; it is required")
    if msg.HasField("answer_ids") != msg.HasField("answer_mask"):
        raise CodecError("labels: answer_ids and answer_mask must be given together")
    ids = tuple(msg.text_ids.shape)
    if len(ids) != 2:
        raise CodecError(f"labels.text_ids: shape {_shape_str(ids)}, expected (b, L)")
    b = ids[0]
    for what in ("text", "answer"):
        if not msg.HasField(f"{what}_ids"):
            continue
        shape, mask = tuple(getattr(msg, f"{what}_ids").shape), tuple(getattr(msg, f"{what}_mask").shape)
        if len(shape) != 2 or shape[0] != b:
            raise CodecError(f"labels.{what}_ids: shape {_shape_str(shape)}, expected ({b}, *)")
        if mask != shape:
            raise CodecError(f"labels.{what}_mask: shape {_shape_str(mask)}, expected {what}_ids' {_shape_str(shape)}")
    for key, n in n_strings.items():
        if n != b:
            raise CodecError(f"labels.{key}: {n} strings, expected one per sample ({b})")


def labels_bytes(msg: pb.Labels) -> int:
    """Tensor payload bytes of a `pb.Labels` (the strings are not counted)."""
    return sum(len(getattr(msg, key).data) for key in _LABEL_TENSORS if msg.HasField(key))


# ---------------------------------------------------------------------------- link reports

def encode_report(node: str, raw: list[dict]) -> pb.Report:
    """`protos.meter.LinkMeter.export()` entries -> `pb.Report`."""
    if not isinstance(node, str) or not node:
        raise CodecError(f"report.node: {node!r}, expected the sender's non-empty node name")
    msg = pb.Report(node=node)
    for i, entry in enumerate(raw):
        where = f"report.links[{i}]"
        keys = set(entry)
        if keys != set(_STAT_KEYS):
            raise CodecError(f"{where}: keys {sorted(keys)}, expected {sorted(_STAT_KEYS)}")
        _check_stat(where, entry["link"], entry["direction"], [entry[k] for k in _STAT_INTS],
                    [*entry["latency_ms"], *(entry[k] for k in _STAT_SUMS)])
        msg.links.add(link=entry["link"], direction=entry["direction"],
                      latency_ms=[float(x) for x in entry["latency_ms"]], **{k: int(entry[k]) for k in _STAT_INTS},
                      **{k: float(entry[k]) for k in _STAT_SUMS})
    return msg


def decode_report(msg: pb.Report) -> tuple[str, list[dict]]:
    """`pb.Report` -> (node, entries in the `LinkMeter.export()` format)."""
    if not msg.node:
        raise CodecError("report.node: empty; the sender must name itself")
    out = []
    for i, s in enumerate(msg.links):
        latency = list(s.latency_ms)
        _check_stat(f"report.links[{i}]", s.link, s.direction, [getattr(s, k) for k in _STAT_INTS],
                    [*latency, *(getattr(s, k) for k in _STAT_SUMS)])
        out.append({"link": s.link, "direction": s.direction, **{k: int(getattr(s, k)) for k in _STAT_INTS},
                    "latency_ms": latency, **{k: float(getattr(s, k)) for k in _STAT_SUMS}})
    return msg.node, out


def _check_stat(where: str, link: str, direction: str, counts: list, times: Sequence[float]) -> None:
    if not isinstance(link, str) or not link:
        raise CodecError(f"{where}.link: {link!r}, expected a non-empty name such as 'user0/audio->relay'")
    if direction not in ("uplink", "downlink"):
        raise CodecError(f"{where}.direction: {direction!r}, expected 'uplink' or 'downlink'")
    if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0 for n in counts):
        raise CodecError(f"{where}: counts {counts}, expected non-negative integers for {', '.join(_STAT_INTS)}")
    if not all(isinstance(x, numbers.Real) and math.isfinite(x) and x >= 0 for x in times):
        raise CodecError(f"{where}: latency_ms and {', '.join(_STAT_SUMS)} must be finite and non-negative")
