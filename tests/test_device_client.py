"""The device process's task loop against a scripted stream (no sockets): transmit, update,
save, restore, stop — what it answers and what it meters."""
import threading

import pytest
import torch

from device_node.build import build_device
from device_node.client import DeviceClient
from foundation.manifest import build_manifest
from protos import codec
from protos import tokcom_pb2 as pb
from protos.rpc import PROTOCOL


class ScriptedStub:
    """Answers the Hello with a Welcome, then hands out the given tasks in order; records
    every message the device sends up the stream."""

    def __init__(self, tasks):
        self.tasks, self.sent = list(tasks), []
        self.drained = threading.Event()

    def Link(self, requests):
        def drain():
            self.sent.extend(requests)  # until the device closes its side
            self.drained.set()

        threading.Thread(target=drain, daemon=True).start()
        yield pb.Down(welcome=pb.Welcome(node="user0/audio", run_id="r1"))
        for task in self.tasks:
            task.hop.sent_ns, task.hop.airtime_s, task.hop.propagation_s = 1, 0.002, 0.001
        for i, task in enumerate(self.tasks):
            if i == 1:  # TRANSMIT and UPDATE in one batch, as the edge sends a round's tasks
                yield pb.Down(tasks=pb.Tasks(tasks=self.tasks[1:3]))
            elif i != 2:
                yield pb.Down(tasks=pb.Tasks(tasks=[task]))
        assert self.drained.wait(30), "the device did not close its stream after STOP"


def test_device_task_loop_transmits_updates_saves_restores_and_meters(small_cfg, assets, cache_dir, tmp_path):
    dataset, foundation = assets
    node = build_device(small_cfg, 0, "audio", dataset, cache_dir, foundation=foundation)
    ids = build_manifest(dataset, "test")["stage1"][:8]
    c = small_cfg.transmitter.audio.tokens * 128 // 2
    grad = torch.randn(8, c, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    w0 = node.tx.proj.weight.detach().clone()
    stub = ScriptedStub([
        pb.Task(kind=pb.Task.SAVE, path=str(tmp_path), seq=1),
        pb.Task(kind=pb.Task.TRANSMIT, phase="stage1", step=0, sample_ids=ids, seq=2),
        pb.Task(kind=pb.Task.UPDATE, phase="stage1", step=0, grad=codec.encode_symbols(grad), seq=3),
        pb.Task(kind=pb.Task.LOAD, path=str(tmp_path), seq=4),
        pb.Task(kind=pb.Task.STOP, seq=5),
    ])
    client = DeviceClient(node, stub, small_cfg.wire, tmp_path)
    stepped = {}
    orig_update = node.update

    def spy(phase, step, g):
        orig_update(phase, step, g)
        stepped["w"] = node.tx.proj.weight.detach().clone()

    node.update = spy
    client.serve(pb.NodeInfo(node="user0/audio", role="device", modality="audio"))
    assert client.run_id == "r1"
    assert not torch.equal(stepped["w"], w0)  # the gradient moved F_audio
    assert torch.equal(node.tx.proj.weight, w0)  # ... and LOAD restored the saved state
    kinds = [m.WhichOneof("msg") for m in stub.sent]
    assert kinds == ["hello", "done", "tokens", "done", "report"]  # UPDATE is not acknowledged
    assert stub.sent[0].hello.protocol == PROTOCOL
    assert [m.done.seq for m in stub.sent if m.HasField("done")] == [1, 4]
    msg = stub.sent[2].tokens
    assert tuple(msg.symbols.shape) == (8, c, 2) and msg.s == small_cfg.transmitter.audio.tokens and msg.d == 128
    assert msg.hop.sent_ns > 0  # stamped for the relay's latency metering
    name, report = codec.decode_report(stub.sent[-1].report)
    assert name == "user0/audio"
    links = {(e["link"], e["direction"]): e for e in report}
    assert set(links) == {("relay->user0/audio", "downlink")}  # the relay meters the uplink it receives
    down = links[("relay->user0/audio", "downlink")]
    assert down["messages"] == 5
    assert down["payload_bytes"] == 8 * c * 2 * 4
    assert down["airtime_s"] == pytest.approx(5 * 0.002) and down["propagation_s"] == pytest.approx(5 * 0.001)
