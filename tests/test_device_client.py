"""The device process's task loop against a scripted stub (no sockets): transmit, update,
save, restore, stop — and what it meters."""
import torch

from device_node.build import build_device
from device_node.client import DeviceClient
from foundation.manifest import build_manifest
from protos import codec
from protos import tokcom_pb2 as pb


class ScriptedStub:
    """Hands out the given tasks in order and records what the device sends."""

    def __init__(self, tasks):
        self.tasks, self.sent, self.reports = list(tasks), [], []

    def NextTask(self, request, timeout=None):
        task = self.tasks.pop(0)
        task.server_ms = 0.5
        return task

    def SendTokens(self, msg, timeout=None):
        self.sent.append(msg)
        return pb.Ack(server_ms=0.25)

    def SendReport(self, msg, timeout=None):
        self.reports.append(codec.decode_report(msg))
        return pb.Ack()


def test_device_task_loop_transmits_updates_saves_restores_and_meters(small_cfg, assets, cache_dir, tmp_path):
    dataset, foundation = assets
    node = build_device(small_cfg, 0, "audio", dataset, cache_dir, foundation=foundation)
    ids = build_manifest(dataset, "test")["stage1"][:8]
    c = small_cfg.transmitter.audio.tokens * 128 // 2
    grad = torch.randn(8, c, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    w0 = node.tx.proj.weight.detach().clone()
    stub = ScriptedStub([
        pb.Task(kind=pb.Task.IDLE),
        pb.Task(kind=pb.Task.SAVE, path=str(tmp_path)),
        pb.Task(kind=pb.Task.TRANSMIT, phase="stage1", step=0, sample_ids=ids),
        pb.Task(kind=pb.Task.UPDATE, phase="stage1", step=0, grad=codec.encode_symbols(grad)),
        pb.Task(kind=pb.Task.LOAD, path=str(tmp_path)),
        pb.Task(kind=pb.Task.STOP),
    ])
    client = DeviceClient(node, stub, "float32", tmp_path)
    stepped = {}
    orig_update = node.update

    def spy(phase, step, g):
        orig_update(phase, step, g)
        stepped["w"] = node.tx.proj.weight.detach().clone()

    node.update = spy
    client.serve()
    assert not torch.equal(stepped["w"], w0)  # the gradient moved F_audio
    assert torch.equal(node.tx.proj.weight, w0)  # ... and LOAD restored the saved state
    (msg,) = stub.sent
    assert tuple(msg.symbols.shape) == (8, c, 2) and msg.s == small_cfg.transmitter.audio.tokens and msg.d == 128
    (name, report), = stub.reports
    links = {(e["link"], e["direction"]): e for e in report}
    up = links[("user0/audio->relay", "uplink")]
    assert up["messages"] == 1 and up["payload_bytes"] == 8 * c * 2 * 4 and up["channel_uses"] == 8 * c
    down = links[("relay->user0/audio", "downlink")]
    assert down["messages"] == 5  # IDLE polls are not messages; SAVE, TRANSMIT, UPDATE, LOAD, STOP are
    assert down["payload_bytes"] == 8 * c * 2 * 4
