"""The wire codec: tensors, complex symbols, labels and link reports <-> protobuf.

Expected bytes and rounding come from independent computations (struct, numpy's float16 cast,
bit-level bfloat16 rounding), never from the codec itself. Shapes: b batch, c complex symbols.
"""
from __future__ import annotations

import ctypes
import math
import struct
import sys
import types

import numpy as np
import pytest
import torch

from protos import codec
from protos import tokcom_pb2 as pb
from protos.codec import CodecError
from protos.meter import LinkMeter

BYTES_PER_ELEMENT = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "bool": 1}
UNIT_ROUNDOFF = {"float32": 0.0, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}  # half an ulp at 1.0
F16_SUBNORMAL_HALF_STEP = 2.0 ** -25


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_symbols(b: int, c: int, seed: int = 0) -> torch.Tensor:
    g = gen(seed)
    return torch.complex(torch.randn(b, c, generator=g), torch.randn(b, c, generator=g))  # (b, c)


def bf16_round_nearest_even(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 -> float32 by bit arithmetic (finite inputs)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)


# ---------------------------------------------------------------------------- tensors

@pytest.mark.parametrize("shape", [(), (0, 3), (5,), (2, 3, 4)])
@pytest.mark.parametrize("dtype", list(BYTES_PER_ELEMENT))
def test_tensor_round_trip_every_dtype(dtype, shape):
    g = gen(1)
    n = math.prod(shape)
    if dtype == "bool":
        t = (torch.rand(n, generator=g) > 0.5).view(shape)
    elif dtype.startswith("int"):
        t = torch.randint(-2 ** 31, 2 ** 31 - 1, (n,), generator=g).to(getattr(torch, dtype)).view(shape)
    else:
        t = torch.randn(n, generator=g).to(getattr(torch, dtype)).view(shape)
    msg = codec.encode_tensor(t)
    assert msg.dtype == dtype and tuple(msg.shape) == shape
    assert codec.payload_bytes(msg) == n * BYTES_PER_ELEMENT[dtype]
    out = codec.decode_tensor(msg, dtype=dtype, shape=shape)
    assert out.dtype == t.dtype and out.shape == t.shape
    assert torch.equal(out, t)


def test_tensor_bytes_are_little_endian_c_order():
    t = torch.tensor([[1.0, -2.0], [0.5, 3.0]]).T  # non-contiguous: C order of the transpose is 1, .5, -2, 3
    assert codec.encode_tensor(t).data == struct.pack("<4f", 1.0, 0.5, -2.0, 3.0)
    assert codec.encode_tensor(torch.tensor([1, -2], dtype=torch.int64)).data == struct.pack("<2q", 1, -2)
    # bfloat16 is the top half of the float32 pattern: 1.0 = 0x3F80, -2.0 = 0xC000, 0.5 = 0x3F00
    bf = torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16)
    assert codec.encode_tensor(bf).data == struct.pack("<3H", 0x3F80, 0xC000, 0x3F00)
    assert codec.encode_tensor(torch.tensor([True, False])).data == b"\x01\x00"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int64", "bool"])
def test_decoded_tensor_views_the_message_bytes(dtype):
    """No copy on decode: the tensor's memory is the bytes object the message handed out."""
    msg = codec.encode_tensor(torch.arange(6).view(2, 3).to(getattr(torch, dtype)))
    data = msg.data
    # protobuf hands out a new bytes object per access of `data`, so give the decoder this very one
    out = codec.decode_tensor(types.SimpleNamespace(data=data, dtype=msg.dtype, shape=list(msg.shape), parts=0))
    assert out.shape == (2, 3) and out.dtype == getattr(torch, dtype)
    assert torch.equal(out, torch.arange(6).view(2, 3).to(out.dtype))
    if sys.byteorder == "little":
        address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value  # where `data`'s bytes live
        assert out.data_ptr() == address


def test_encode_casts_within_a_kind_and_refuses_across():
    msg = codec.encode_tensor(torch.tensor([1, 0, 1]), "bool")
    assert codec.decode_tensor(msg).tolist() == [True, False, True]
    assert codec.decode_tensor(codec.encode_tensor(torch.tensor([0.5]), "float16")).dtype == torch.float16
    with pytest.raises(CodecError, match=r"^grad: refusing to cast torch.float32 to int64"):
        codec.encode_tensor(torch.tensor([0.5]), "int64", name="grad")
    with pytest.raises(CodecError, match=r"^tensor: complex tensors travel as real pairs"):
        codec.encode_tensor(torch.zeros(2, dtype=torch.complex64))


def test_wire_message_survives_serialisation():
    t = torch.randn(3, 7, generator=gen(2))
    wire = codec.encode_tensor(t).SerializeToString()
    assert torch.equal(codec.decode_tensor(pb.Tensor.FromString(wire), shape=(3, 7)), t)


# ---------------------------------------------------------------------------- symbols

@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_symbols_round_trip_within_precision(precision):
    b, c = 4, 1000
    z = random_symbols(b, c)
    z[0, :5] = torch.tensor([1e-7, -3e-6, 7e-5, 1e3, -6e4]).to(torch.complex64)  # f16 subnormals and near max
    msg = codec.encode_symbols(z, precision)
    assert tuple(msg.shape) == (b, c, 2) and msg.dtype == precision
    assert codec.payload_bytes(msg) == b * c * 2 * BYTES_PER_ELEMENT[precision]

    out = codec.decode_symbols(pb.Tensor.FromString(msg.SerializeToString()), b=b, c=c)
    assert out.dtype == torch.complex64 and out.shape == (b, c)
    ref = np.stack([z.real.numpy(), z.imag.numpy()], axis=-1)  # (b, c, 2) float32
    got = np.stack([out.real.numpy(), out.imag.numpy()], axis=-1)
    bound = UNIT_ROUNDOFF[precision] * np.abs(ref) + (F16_SUBNORMAL_HALF_STEP if precision == "float16" else 0.0)
    assert np.all(np.abs(got - ref) <= bound)
    # ... and exactly the nearest value of that precision
    expect = {"float32": ref, "float16": ref.astype(np.float16).astype(np.float32),
              "bfloat16": bf16_round_nearest_even(ref)}[precision]
    np.testing.assert_array_equal(got, expect)


def test_symbols_pairs_are_re_then_im():
    msg = codec.encode_symbols(torch.tensor([[1 + 2j, -3 - 4j]], dtype=torch.complex64))
    assert msg.data == struct.pack("<4f", 1.0, 2.0, -3.0, -4.0)


def test_symbols_byte_count_error_names_field_and_sizes():
    msg = pb.Tensor(data=bytes(1000), dtype="float32", shape=[2, 64, 2])
    with pytest.raises(CodecError) as e:
        codec.decode_symbols(msg)
    assert str(e.value) == "symbols: 1000 bytes for shape (2, 64, 2) float32, expected 1024"
    msg.data = bytes(1028)
    with pytest.raises(CodecError, match=r"^symbols: 1028 bytes for shape \(2, 64, 2\) float32, expected 1024$"):
        codec.decode_symbols(msg)


@pytest.mark.parametrize("dtype", ["float64", "complex64", "", "int64"])
def test_symbols_reject_wrong_dtype(dtype):
    msg = pb.Tensor(data=bytes(2 * 3 * 2 * 8), dtype=dtype, shape=[2, 3, 2])
    with pytest.raises(CodecError, match=r"^symbols: dtype"):
        codec.decode_symbols(msg)


def test_tensor_rejects_unknown_dtype_and_unexpected_dtype():
    with pytest.raises(CodecError, match=r"^grad: unknown dtype 'float64'"):
        codec.decode_tensor(pb.Tensor(data=bytes(8), dtype="float64", shape=[1]), name="grad")
    with pytest.raises(CodecError, match=r"^labels.text_ids: dtype int32, expected int64"):
        codec.decode_tensor(pb.Tensor(data=bytes(4), dtype="int32", shape=[1]), dtype="int64",
                            name="labels.text_ids")


def test_symbols_reject_wrong_shape():
    msg = codec.encode_symbols(random_symbols(2, 8))
    with pytest.raises(CodecError, match=r"^symbols: shape \(2, 8, 2\), expected \(3, 8, 2\)"):
        codec.decode_symbols(msg, b=3, c=8)
    with pytest.raises(CodecError, match=r"^symbols: shape \(2, 8, 2\), expected \(\*, 4, 2\)"):
        codec.decode_symbols(msg, c=4)
    flat = pb.Tensor(data=msg.data, dtype="float32", shape=[2, 16])
    with pytest.raises(CodecError, match=r"^symbols: shape \(2, 16\), expected \(\*, \*, 2\)"):
        codec.decode_symbols(flat)


def test_negative_dims_rejected_before_any_allocation():
    msg = pb.Tensor(data=bytes(16), dtype="float32", shape=[-2, -2])
    with pytest.raises(CodecError, match=r"^tensor: negative dimension in shape \(-2, -2\)"):
        codec.decode_tensor(msg)
    huge = pb.Tensor(data=bytes(16), dtype="float32", shape=[2 ** 40, 2 ** 40])
    with pytest.raises(CodecError, match=r"^tensor: 16 bytes for shape"):
        codec.decode_tensor(huge)


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_symbols_rejected_on_both_sides(precision, bad):
    z = random_symbols(2, 4)
    z[1, 2] = complex(0.0, bad)
    with pytest.raises(CodecError, match=r"^symbols: 1 non-finite values .*source tensor holds them"):
        codec.encode_symbols(z, precision)
    # a sender that skipped the codec: the receiver still refuses
    pairs = torch.view_as_real(z).to(getattr(torch, precision))
    raw = pb.Tensor(data=pairs.view(torch.uint8).numpy().tobytes(), dtype=precision, shape=[2, 4, 2])
    with pytest.raises(CodecError, match=r"^symbols: 1 non-finite values"):
        codec.decode_symbols(raw)
    assert not torch.isfinite(codec.decode_tensor(raw, finite=False)).all()


@pytest.mark.parametrize("precision, big", [("float32", 3.3e38), ("float16", 65504.0), ("bfloat16", 3.3e38)])
def test_extreme_finite_values_accepted(precision, big):
    z = torch.tensor([[complex(big, -big), complex(1e-45, 0.0)]], dtype=torch.complex64)  # near max, subnormal
    out = codec.decode_symbols(codec.encode_symbols(z, precision))
    assert bool(torch.isfinite(torch.view_as_real(out)).all())
    ref = float(np.float32(big))  # the float32 value the symbols held
    assert abs(out[0, 0].real.item() - ref) <= UNIT_ROUNDOFF[precision] * ref


def test_float16_overflow_caught_at_the_sender():
    z = torch.tensor([[1e5 + 0j, 1 + 1j]], dtype=torch.complex64)  # 1e5 > 65504, the float16 max
    with pytest.raises(CodecError, match=r"^symbols: 1 non-finite .*beyond the float16 range overflowed"):
        codec.encode_symbols(z, "float16")
    assert codec.decode_symbols(codec.encode_symbols(z, "bfloat16"))[0, 1] == 1 + 1j


def test_bool_bytes_other_than_0_and_1_rejected():
    with pytest.raises(CodecError, match=r"^labels.text_mask: bool tensor holds bytes other than 0 and 1"):
        codec.decode_tensor(pb.Tensor(data=b"\x00\x02", dtype="bool", shape=[2]), name="labels.text_mask")


def test_encode_symbols_rejects_real_input_and_unknown_precision():
    with pytest.raises(CodecError, match=r"^symbols: expected a \(b, c\) complex tensor"):
        codec.encode_symbols(torch.zeros(2, 4))
    with pytest.raises(CodecError, match=r"^symbols: unknown wire precision 'int8'"):
        codec.encode_symbols(random_symbols(1, 2), "int8")


def test_codec_error_is_a_value_error():
    assert issubclass(CodecError, ValueError)


# ---------------------------------------------------------------------------- labels

def make_labels(b: int = 3, L: int = 5, A: int = 2) -> dict:
    g = gen(3)
    return {"text_ids": torch.randint(0, 8000, (b, L), generator=g), "text_mask": torch.rand(b, L, generator=g) > 0.3,
            "answer_ids": torch.randint(0, 8000, (b, A), generator=g), "answer_mask": torch.ones(b, A, dtype=torch.bool),
            "answers": ["yes", "two", "left"][:b], "qtypes": ["Audio/Counting", "Visual/Location", "AV/Existential"][:b]}


def test_labels_round_trip_and_byte_count():
    labels = make_labels()
    msg = codec.encode_labels(labels)
    out = codec.decode_labels(pb.Labels.FromString(msg.SerializeToString()))
    assert set(out) == set(labels)
    for key in ("text_ids", "text_mask", "answer_ids", "answer_mask"):
        assert out[key].dtype == labels[key].dtype and torch.equal(out[key], labels[key])
    assert out["answers"] == labels["answers"] and out["qtypes"] == labels["qtypes"]
    assert codec.labels_bytes(msg) == 3 * 5 * (8 + 1) + 3 * 2 * (8 + 1)


def test_labels_without_optional_parts():
    labels = {k: v for k, v in make_labels().items() if k.startswith("text_")}
    msg = codec.encode_labels(labels)
    out = codec.decode_labels(msg)
    assert set(out) == {"text_ids", "text_mask"}
    assert codec.labels_bytes(msg) == 3 * 5 * (8 + 1)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("text_mask"), r"^labels.text_mask: missing"),
    (lambda d: d.pop("answer_mask"), r"^labels: answer_ids and answer_mask must be given together"),
    (lambda d: d.update(text_mask=torch.ones(3, 4, dtype=torch.bool)), r"^labels.text_mask: shape \(3, 4\)"),
    (lambda d: d.update(answer_ids=torch.zeros(2, 2, dtype=torch.int64)), r"^labels.answer_ids: shape \(2, 2\)"),
    (lambda d: d.update(answers=["yes"]), r"^labels.answers: 1 strings, expected one per sample \(3\)"),
    (lambda d: d.update(qtypes="Audio"), r"^labels.qtypes: expected a list of str"),
    (lambda d: d.update(extra=1), r"^labels: unknown keys \['extra'\]"),
])
def test_bad_labels_rejected(change, match):
    labels = make_labels()
    change(labels)
    with pytest.raises(CodecError, match=match):
        codec.encode_labels(labels)


def test_bad_labels_message_rejected_on_decode():
    msg = codec.encode_labels(make_labels())
    msg.text_mask.shape[:] = [3, 4]
    with pytest.raises(CodecError, match=r"^labels.text_mask: shape \(3, 4\)"):
        codec.decode_labels(msg)
    msg = codec.encode_labels(make_labels())
    msg.text_ids.dtype = "int32"
    with pytest.raises(CodecError, match=r"^labels.text_ids: dtype int32, expected int64"):
        codec.decode_labels(msg)


# ---------------------------------------------------------------------------- link reports

def test_report_round_trip_from_a_real_meter():
    meter = LinkMeter()
    meter.record("user0/audio->relay", "uplink", payload_bytes=1024, wire_bytes=1100, channel_uses=256,
                 samples=8, latency_ms=1.5)
    meter.record("user0/audio->relay", "uplink", payload_bytes=1024, wire_bytes=1100, channel_uses=256,
                 samples=8, latency_ms=2.5)
    meter.record("relay->user0/audio", "downlink", payload_bytes=512, wire_bytes=560, airtime_s=0.004,
                 queueing_s=0.001, propagation_s=0.002, latency_ms=9.0)
    raw = meter.export()
    msg = codec.encode_report("relay", raw)
    node, back = codec.decode_report(pb.Report.FromString(msg.SerializeToString()))
    assert node == "relay" and back == raw
    merged = LinkMeter()
    merged.merge(back)
    assert merged.report() == meter.report()


@pytest.mark.parametrize("change, match", [
    (lambda e: e.update(direction="sideways"), r"^report.links\[0\].direction: 'sideways'"),
    (lambda e: e.update(messages=-1), r"^report.links\[0\]: counts"),
    (lambda e: e.update(latency_ms=[1.0, float("nan")]), r"^report.links\[0\]: latency_ms .* must be finite"),
    (lambda e: e.update(airtime_s=-1.0), r"^report.links\[0\]: latency_ms and airtime_s"),
    (lambda e: e.pop("samples"), r"^report.links\[0\]: keys"),
    (lambda e: e.update(link=""), r"^report.links\[0\].link"),
])
def test_bad_report_rejected(change, match):
    entry = {"link": "relay->edge", "direction": "uplink", "messages": 1, "payload_bytes": 2, "wire_bytes": 3,
             "channel_uses": 4, "samples": 5, "latency_ms": [1.0], "airtime_s": 0.5, "queueing_s": 0.0,
             "propagation_s": 0.001, "transport_s": 0.0}
    change(entry)
    with pytest.raises(CodecError, match=match):
        codec.encode_report("relay", [entry])


def test_bad_report_message_rejected_on_decode():
    msg = pb.Report(node="relay", links=[pb.LinkStats(link="relay->edge", direction="up")])
    with pytest.raises(CodecError, match=r"^report.links\[0\].direction: 'up'"):
        codec.decode_report(msg)
    with pytest.raises(CodecError, match=r"^report.node: empty"):
        codec.decode_report(pb.Report())
