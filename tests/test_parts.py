"""Large tensors in parts (protos.parts): the hand-written Part bytes against protobuf's own,
the fast reader against protobuf's parser, the assembly's checks, and a stream of parts
through a real gRPC server."""
import threading

import grpc
import pytest
import torch

from protos import codec
from protos import tokcom_pb2 as pb
from protos.parts import Assembly, Parts, PartIn, read_part, tensor_paths
from protos.rpc import LinkStub, Outbox, _serialize, add_link_servicer, connect, serve_stream, start_server, whole


def _tokens_with_parts(z: torch.Tensor, part_bytes: int, csi: torch.Tensor | None = None):
    up, parts = pb.Up(), Parts(part_bytes)
    up.tokens.node = "user0/audio"
    codec.encode_symbols(z, into=up.tokens.symbols, parts=parts, path="tokens.symbols")
    if csi is not None:
        codec.encode_symbols(csi, name="csi", into=up.tokens.csi, parts=parts, path="tokens.csi")
    return up, parts


def _receive(up, parts, limit=1 << 30):
    """What a receiver gets: every part through its wire bytes, then the message."""
    assembly = Assembly(limit)
    for wire in parts.wires(type(up)):
        assembly.add(read_part(_serialize(wire), type(up)))
    msg = type(up).FromString(up.SerializeToString())
    return msg, assembly.take(msg)


def test_part_bytes_are_protobufs_own_and_the_reader_agrees_with_protobuf():
    z = torch.randn(2, 5000, dtype=torch.complex64)  # 80,000 bytes
    up, parts = _tokens_with_parts(z, 30_000)
    assert up.tokens.symbols.parts == 3 and up.tokens.symbols.data == b""
    wires = list(parts.wires(pb.Up))
    assert [len(w.chunk) for w in wires] == [30_000, 30_000, 20_000]
    for w in wires:
        raw = _serialize(w)
        assert raw == pb.Up(part=pb.Part(tensor=w.path, data=bytes(w.chunk), total=80_000)).SerializeToString()
        mine, theirs = read_part(raw, pb.Up), pb.Up.FromString(raw).part
        assert (mine.tensor, bytes(mine.data), mine.total, mine.wire_bytes) == \
               (theirs.tensor, theirs.data, theirs.total, len(raw))
    assert read_part(pb.Down(part=pb.Part(tensor="a", data=b"x", total=1)).SerializeToString(), pb.Up) is None


def test_reader_leaves_other_layouts_to_protobuf():
    # fields out of order are still one Part: read right
    inner = pb.Part(data=b"xyz").SerializeToString() + pb.Part(tensor="t", total=3).SerializeToString()
    raw = bytes([6 << 3 | 2, len(inner)]) + inner
    got = read_part(raw, pb.Up)
    assert (got.tensor, bytes(got.data), got.total) == ("t", b"xyz", 3)
    assert pb.Up.FromString(raw).part.data == b"xyz"
    # a field twice, an unknown field, a truncated message: None, and protobuf decides
    twice = bytes([6 << 3 | 2, 2 * len(inner)]) + inner + inner
    assert read_part(twice, pb.Up) is None
    unknown = pb.Part(tensor="t").SerializeToString() + bytes([9 << 3 | 0, 1])
    assert read_part(bytes([6 << 3 | 2, len(unknown)]) + unknown, pb.Up) is None
    assert read_part(raw[:-1], pb.Up) is None
    assert read_part(pb.Up(tokens=pb.Tokens(node="x")).SerializeToString(), pb.Up) is None
    assert read_part(b"", pb.Up) is None


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_tensors_in_parts_decode_to_what_was_sent(precision):
    z = torch.randn(4, 3000, dtype=torch.complex64)
    csi = torch.randn(4, 3, dtype=torch.complex64)  # small: stays in the message
    up, parts = pb.Up(), Parts(4096)
    codec.encode_symbols(z, precision, into=up.tokens.symbols, parts=parts, path="tokens.symbols")
    codec.encode_symbols(csi, precision, name="csi", into=up.tokens.csi, parts=parts, path="tokens.csi")
    assert up.tokens.symbols.parts > 1 and up.tokens.csi.parts == 0 and up.tokens.csi.data
    msg, payloads = _receive(up, parts)
    want = codec.decode_symbols(codec.encode_symbols(z, precision))
    assert torch.equal(codec.decode_symbols(msg.tokens.symbols, payload=payloads.get("tokens.symbols")), want)
    assert torch.equal(codec.decode_symbols(msg.tokens.csi), codec.decode_symbols(codec.encode_symbols(csi, precision)))
    assert payloads.wire_bytes() > codec.payload_bytes(msg.tokens.symbols, payloads.get("tokens.symbols"))
    assert [p for p, _ in tensor_paths(msg)] == ["tokens.symbols", "tokens.csi"]


def test_tasks_in_parts_are_bound_by_their_path():
    grads = [torch.randn(2, 900, dtype=torch.complex64) for _ in range(2)]
    down, parts = pb.Down(), Parts(1000)
    for i, g in enumerate([None, *grads]):
        task = down.tasks.tasks.add(node=f"n{i}", kind=pb.Task.UPDATE if g is not None else pb.Task.TRANSMIT)
        if g is not None:
            codec.encode_symbols(g, into=task.grad, parts=parts, path=f"tasks.tasks.{i}.grad")
    msg, payloads = _receive(down, parts)
    for i, g in enumerate(grads, start=1):
        got = codec.decode_symbols(msg.tasks.tasks[i].grad, payload=payloads.get(f"tasks.tasks.{i}.grad"))
        assert torch.equal(got, g)
    assert payloads.wire_bytes("tasks.tasks.1.") + payloads.wire_bytes("tasks.tasks.2.") == payloads.wire_bytes()


def _part(path, data, total):
    return PartIn(path, memoryview(data), total, len(data) + 10)


def test_parts_that_do_not_fit_their_message_are_refused():
    up, parts = _tokens_with_parts(torch.randn(1, 1000, dtype=torch.complex64), 3000)  # 8,000 bytes, 3 parts
    wires = [read_part(_serialize(w), pb.Up) for w in parts.wires(pb.Up)]

    def take(items, msg=up, limit=1 << 20):
        a = Assembly(limit)
        for p in items:
            a.add(p)
        return a.take(msg)

    assert take(wires).get("tokens.symbols") is not None
    with pytest.raises(codec.CodecError, match="1 parts"):
        take(wires[:1])  # parts missing
    with pytest.raises(codec.CodecError, match="none arrived"):
        take([])  # the tensor says parts, none came
    with pytest.raises(codec.CodecError, match="does not hold"):
        take(wires, pb.Up(tokens=pb.Tokens(node="x")))  # parts for a message without them
    with pytest.raises(codec.CodecError, match="offset"):
        take(wires + wires[:1])  # more bytes than the tensor's total
    with pytest.raises(codec.CodecError, match="above this stream's limit"):
        take([_part("tokens.symbols", b"x", 10 ** 12)])  # a total beyond the limit allocates nothing
    with pytest.raises(codec.CodecError, match="non-empty"):
        take([_part("tokens.symbols", b"", 8)])
    with pytest.raises(codec.CodecError, match="path"):
        take([_part("", b"x", 1)])
    with pytest.raises(codec.CodecError, match="this part says"):
        take([_part("tokens.symbols", b"xx", 4), _part("tokens.symbols", b"xx", 5)])
    both = pb.Up()
    both.CopyFrom(up)
    both.tokens.symbols.data = b"\0" * 8000
    with pytest.raises(codec.CodecError, match="both data and parts"):
        take(wires, both)
    with pytest.raises(codec.CodecError, match="were not received"):
        codec.decode_symbols(up.tokens.symbols)  # decoding without its parts names what is missing
    wrong = Parts(3000)
    short = pb.Up()
    short.tokens.node = "x"
    codec.encode_symbols(torch.randn(1, 999, dtype=torch.complex64), into=short.tokens.symbols, parts=wrong,
                         path="tokens.symbols")
    short.tokens.symbols.ClearField("shape")
    short.tokens.symbols.shape.extend([1, 1000, 2])  # claims more than its parts carried
    msg, payloads = _receive(short, wrong)
    with pytest.raises(codec.CodecError, match="bytes for shape"):
        codec.decode_symbols(msg.tokens.symbols, payload=payloads.get("tokens.symbols"))


class _Echo:
    """Decodes each message with its parts and answers with the sum of its symbols' real parts."""

    def Link(self, request_iterator, context):
        outbox = Outbox()

        def read():
            try:
                for up, payloads in whole(request_iterator, 1 << 24):
                    z = codec.decode_symbols(up.tokens.symbols, payload=payloads.get("tokens.symbols"))
                    outbox.put(pb.Down(welcome=pb.Welcome(node=f"{z.real.sum().item():.6e}")))
            except codec.CodecError as e:
                outbox.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            except grpc.RpcError:
                pass  # cancelled: the server is stopping
            finally:
                outbox.close()  # or the server's thread waits on this stream for ever

        threading.Thread(target=read, daemon=True).start()
        return serve_stream(outbox, context)


def test_parts_cross_a_real_stream_interleaved_with_other_senders():
    server = start_server(lambda s: add_link_servicer(_Echo(), s), "127.0.0.1:0", 64, workers=4, credential=None)
    try:
        channel = connect(f"127.0.0.1:{server.port}", 64, None, "")
        outbox = Outbox()
        answers = LinkStub(channel).Link(iter(outbox))
        tensors = [torch.randn(3, 20_000 + 1000 * i, dtype=torch.complex64) for i in range(6)]

        def send(zs):
            for z in zs:
                up, parts = _tokens_with_parts(z, 50_000)
                outbox.put(up, parts)

        threads = [threading.Thread(target=send, args=(tensors[k::2],)) for k in range(2)]  # two senders at once
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = sorted(float(next(answers).welcome.node) for _ in tensors)
        assert got == pytest.approx(sorted(z.real.sum().item() for z in tensors), rel=1e-5)
        outbox.put(pb.Up(part=pb.Part(tensor="tokens.symbols", data=b"x", total=10 ** 9)))  # beyond the limit
        with pytest.raises(grpc.RpcError) as e:
            next(answers)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in e.value.details()
        outbox.close()
        channel.close()
    finally:
        server.stop()
