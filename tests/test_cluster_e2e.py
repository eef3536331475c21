"""The roles as real processes on loopback, started by hand (the two-machine recipe):
equivalence with the in-process reference at every wire precision, byte metering, hostile
stream messages, a dead device."""
from __future__ import annotations

import json
import math

import grpc
import pytest
import torch

from configs.loader import config_digest, load_config
from launch.reference import run_reference
from protos import codec
from protos import tokcom_pb2 as pb
from protos import tokcom_pb2_grpc as pb_grpc
from protos.rpc import DETAILS_MAX, PROTOCOL, Outbox, channel_options, open_channel
from protos.tls import Credential
from tests.cluster_util import REPO, ManualCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MODALITIES = ("audio", "video", "text")


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["stage"], r["step"]): r["loss"] for r in rows}


def _start_all(cluster: ManualCluster):
    cluster.start_edge()
    cluster.start_relay()
    for m in MODALITIES:
        cluster.start_device(0, m)


PRECISION_CASES = {  # each wire precision, with a channel whose CSI takes another path; the half precisions
    # send their symbols and gradients in 16 KiB parts (protos.parts), float32 in one message each
    "float32": [],
    "float16": ["channel.fading=rayleigh", "channel.coherence=1024", "channel.csi=estimated", "wire.part_kb=16"],
    "bfloat16": ["channel.fading=rician", "channel.equalizer=zf", "wire.part_kb=16"],
}


@pytest.mark.parametrize("precision", list(PRECISION_CASES))
def test_manual_cluster_equals_reference_and_meters_every_link(precision, tmp_path, small_overrides, assets):
    overrides = small_overrides + [f"wire.precision={precision}", *PRECISION_CASES[precision]]
    cfg = load_config(REPO / "configs" / "tiny.yaml", overrides)
    ref = run_reference(cfg, str(tmp_path / "ref"), progress=False)
    cluster = ManualCluster(tmp_path / "c", overrides)
    try:
        _start_all(cluster)
        assert cluster.wait_edge_exit() == 0, cluster.log("edge")
        devices = [c for c in cluster.children if c.name.startswith("user")]
        assert not cluster.children.wait(devices, 60), "devices did not exit after STOP"
        assert all(c.returncode == 0 for c in devices)
        started = {c.name: c.pid for c in cluster.children}
    finally:
        cluster.stop()
    run = cluster.run_dir
    summary = json.loads((run / "summary.json").read_text())

    # the same losses as the reference, step by step
    ours, theirs = _losses(run), _losses(tmp_path / "ref")
    assert ours.keys() == theirs.keys() and len(ours) == 12
    for k in ours:
        assert abs(ours[k] - theirs[k]) <= 1e-4 * abs(theirs[k]), (k, ours[k], theirs[k])
    assert summary["accuracy"]["overall"] == pytest.approx(ref["accuracy"]["overall"])

    # processes: the edge, the relay and three devices, five distinct pids, the ones we started
    procs = summary["processes"]
    assert sorted(p["role"] for p in procs) == ["device"] * 3 + ["edge", "relay"]
    assert {p["pid"] for p in procs} == set(started.values()) and len(started) == 5

    # bytes: rounds x b x s_m x d x bytes per real, computed here from the config alone
    real = {"float32": 4, "float16": 2, "bfloat16": 2}[precision]
    d = 128  # the tiny LM's width
    rounds = cfg.train.stage1.steps + cfg.train.stage2.steps + math.ceil(cfg.eval.max_samples / cfg.eval.batch)
    grads = cfg.train.stage1.steps + cfg.train.stage2.steps
    links = {(e["link"], e["direction"]): e for e in json.loads((run / "links.json").read_text())}
    ref_links = {(e["link"], e["direction"]): e for e in json.loads((tmp_path / "ref" / "links.json").read_text())}
    up_total = 0
    for m in MODALITIES:
        s = cfg.data.text_len if m == "text" else getattr(cfg.transmitter, m).tokens
        up = links[(f"user0/{m}->relay", "uplink")]
        assert up["messages"] == rounds
        assert up["payload_bytes"] == rounds * 8 * s * d * real
        pilots = 8 * math.ceil(s * d // 2 / 1024) if "channel.csi=estimated" in overrides else 0
        assert up["channel_uses"] == rounds * 8 * (s * d // 2 + pilots)
        assert up["payload_bytes"] < up["wire_bytes"] <= 1.01 * up["payload_bytes"]  # framing only
        assert up["latency_ms"]["p50"] is not None
        down = links[(f"relay->user0/{m}", "downlink")]
        # TRANSMIT every round, UPDATE for the nodes that train, one SAVE and the STOP
        assert down["messages"] == rounds + (0 if m == "text" else grads) + 2
        assert down["payload_bytes"] == (0 if m == "text" else grads * 8 * s * d * real)
        for key in ("payload_bytes", "channel_uses", "messages"):  # the reference meters the same
            assert ref_links[(f"user0/{m}->relay", "uplink")][key] == up[key]
            assert ref_links[(f"relay->user0/{m}", "downlink")][key] == down[key]
        up_total += up["payload_bytes"]
    labels = links[("user0/text->relay (labels)", "uplink")]
    up_total += labels["payload_bytes"]
    # relay -> edge carries the symbols, the labels and the CSI at its real size: one gain per block
    blocks = {m: math.ceil((cfg.data.text_len if m == "text" else 32) * d // 2 / 1024)
              if "channel.coherence=1024" in overrides else 1 for m in MODALITIES}
    csi = 0 if "channel.csi=none" in overrides else sum(rounds * 8 * blocks[m] * 2 * real for m in MODALITIES)
    assert links[("relay->edge", "uplink")]["payload_bytes"] == up_total + csi
    assert links[("relay->edge", "uplink")]["payload_bytes"] <= 1.02 * up_total
    assert ("edge->relay", "downlink") in links
    assert (run / "checkpoints" / "latest" / "adapter" / "adapter_config.json").is_file()
    for m in ("audio", "video", "text"):
        assert (run / "checkpoints" / "latest" / "devices" / f"user0_{m}.pt").is_file()
    tl = summary["timeline"]
    assert len(tl["step"]) == grads and set(tl) >= {"device_ms", "uplink_ms", "uplink_airtime_ms", "edge_ms"}


class RawStream:
    """A hostile client: one `Link` stream, messages written by hand."""

    def __init__(self, address: str, credential: Credential | None = None, server_name: str = ""):
        self.channel = open_channel(address, credential, server_name, channel_options(256))
        self.outbox = Outbox()
        self.responses = pb_grpc.TokenLinkStub(self.channel).Link(iter(self.outbox))

    def send(self, *msgs: pb.Up) -> RawStream:
        for m in msgs:
            self.outbox.put(m)
        return self

    def status(self) -> tuple[grpc.StatusCode, str]:
        """Read until the server ends the stream; its status code and details."""
        try:
            for _ in self.responses:
                pass
        except grpc.RpcError as e:
            return e.code(), e.details()
        finally:
            self.outbox.close()
            self.channel.close()
        return grpc.StatusCode.OK, ""

    def error(self) -> tuple[str, str]:
        """The first `Error` the server sends down (the stream stays open); its code and message."""
        try:
            for down in self.responses:
                if down.WhichOneof("msg") == "error":
                    return down.error.code, down.error.message
        finally:
            self.outbox.close()
            self.channel.close()
        raise AssertionError("the stream ended without an Error")


def _hello(cfg, assets, node="user0/audio"):
    info = pb.NodeInfo(node=node, user=0, modality=node.split("/")[1], role="device", pid=1, host="rogue",
                       config_digest=config_digest(cfg), data_digest=assets[0].digest())
    return pb.Up(hello=pb.Hello(info=info, protocol=PROTOCOL))


def _tokens(b, s=32, d=128, node="user0/audio"):
    z = torch.randn(b, s * d // 2, dtype=torch.complex64)
    return pb.Up(tokens=pb.Tokens(node=node, phase="stage1", step=0, s=s, d=d, symbols=codec.encode_symbols(z)))


def _labels(b=8, L=32, top=0):
    ids = torch.full((b, L), top, dtype=torch.long)
    return codec.encode_labels({"text_ids": ids, "text_mask": torch.ones(b, L, dtype=torch.bool)})


def _poisoned_for_the_edge(cluster, small_cfg, assets):
    """What only a relay could send (the relay sets noise_var and CSI): straight to the edge as an
    unauthenticated "relay", before the real one connects. Each is refused for its node alone."""
    hello = pb.Up(hello=pb.Hello(info=pb.NodeInfo(node="relay", role="relay", pid=1, host="rogue",
                                                  config_digest=config_digest(small_cfg)), protocol=PROTOCOL))
    nan_noise = _tokens(8)
    nan_noise.tokens.noise_var = float("nan")
    huge_csi = _tokens(8)
    huge_csi.tokens.csi.CopyFrom(codec.encode_symbols(torch.full((8, 1), 1e6, dtype=torch.complex64), name="csi"))
    huge_ids = _tokens(8, node="user0/text")
    huge_ids.tokens.labels.CopyFrom(_labels(top=10**9))
    for poison, words in ((nan_noise, "noise_var"), (huge_csi, "csi"), (huge_ids, "vocabulary")):
        code, message = RawStream(cluster.edge_addr).send(hello, poison).error()
        assert code == "INVALID_ARGUMENT" and words in message, message


def test_bad_messages_get_a_status_and_the_run_continues(tmp_path, small_cfg, small_overrides, assets):
    cluster = ManualCluster(tmp_path, small_overrides, tls=False)  # the message checks, behind no credential
    try:
        cluster.start_edge()
        _poisoned_for_the_edge(cluster, small_cfg, assets)
        cluster.start_relay()

        def relay(*msgs):
            return RawStream(cluster.relay_addr).send(_hello(small_cfg, assets), *msgs).status()

        short = _tokens(8)
        short.tokens.symbols.data = short.tokens.symbols.data[:-4]  # one float missing
        code, details = relay(short)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in details, details
        wrong_dtype = _tokens(8)
        wrong_dtype.tokens.symbols.dtype = "float64"
        assert relay(wrong_dtype)[0] == grpc.StatusCode.INVALID_ARGUMENT
        nan = _tokens(8)
        nan.tokens.symbols.CopyFrom(codec.encode_tensor(torch.full((8, 2048, 2), float("nan")), "float32",
                                                        finite=False))
        assert relay(nan)[0] == grpc.StatusCode.INVALID_ARGUMENT
        code, details = relay(_tokens(8, node="user0/video"))  # a node speaks only for its own name
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot speak" in details
        assert relay(_tokens(8, s=5))[0] == grpc.StatusCode.INVALID_ARGUMENT  # not this modality's s_m
        assert relay(pb.Up())[0] == grpc.StatusCode.INVALID_ARGUMENT  # an empty message
        stray = pb.Up(part=pb.Part(tensor="tokens.symbols", data=b"x" * 8, total=8))  # parts nobody claims
        code, details = relay(stray, _tokens(8))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not hold" in details, details
        missing = _tokens(8)  # says its symbols came in parts; none did
        missing.tokens.symbols.data, missing.tokens.symbols.parts = b"", 3
        code, details = relay(missing)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "none arrived" in details, details
        code, details = relay(pb.Up(part=pb.Part(tensor="tokens.symbols", data=b"x", total=1 << 40)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit" in details, details
        poisoned = _tokens(8)  # labels through the relay: token ids past the vocabulary, a mask that is not bool
        poisoned.tokens.labels.CopyFrom(_labels(top=10**9))
        code, details = relay(poisoned)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "vocabulary" in details, details
        poisoned.tokens.labels.CopyFrom(_labels())
        poisoned.tokens.labels.text_mask.data = bytes([2]) * (8 * 32)
        code, details = relay(poisoned)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "0 and 1" in details, details
        code, details = RawStream(cluster.relay_addr).send(_hello(small_cfg, assets, "u" * 1_000_000 + "/audio")).status()
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown node" in details
        assert len(details) < DETAILS_MAX + 40  # the echo of a 1 MB name is clipped, the reason kept
        code, details = RawStream(cluster.relay_addr).send(_hello(small_cfg, assets, "user7/audio")).status()
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown node" in details
        assert RawStream(cluster.relay_addr).send(_tokens(8)).status()[0] == grpc.StatusCode.FAILED_PRECONDITION
        stale = _hello(small_cfg, assets)
        stale.hello.info.config_digest = "0" * 16  # another config: the edge refuses, through the relay
        code, details = RawStream(cluster.relay_addr).send(stale).status()
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "config_digest" in details
        # above gRPC's 4 MiB default: 400 x 2048 complex64 = 6.5 MB goes device -> relay -> edge, where it is
        # refused only because no round is waiting for it
        code, details = relay(_tokens(400))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "no round" in details, details
        # straight to the edge, too: malformed first, then the protocol's order
        assert RawStream(cluster.edge_addr).send(short).status()[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert RawStream(cluster.edge_addr).send(_tokens(8)).status()[0] == grpc.StatusCode.FAILED_PRECONDITION
        code, details = RawStream(cluster.edge_addr).send(_hello(small_cfg, assets)).status()
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "through the relay" in details

        for m in MODALITIES:  # the real devices: the run goes on
            cluster.start_device(0, m)
        assert cluster.wait_edge_exit() == 0, cluster.log("edge")
        assert (cluster.run_dir / "summary.json").is_file()
    finally:
        cluster.stop()


def test_a_device_that_stops_answering_stops_the_run_cleanly(tmp_path, small_overrides):
    overrides = small_overrides + ["wire.step_timeout_s=8", "train.stage1.steps=400"]
    cluster = ManualCluster(tmp_path, overrides)
    try:
        _start_all(cluster)
        metrics = cluster.run_dir / "metrics.jsonl"
        from launch.procs import wait_until

        wait_until("two logged steps", lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2,
                   cluster.children, cluster.deadline)
        video = next(c for c in cluster.children if c.name == "user0_video")
        video.popen.kill()
        video.popen.wait()
        code = cluster.wait_edge_exit()
        log = cluster.log("edge")
        assert code == 3, log
        assert "user0/video" in log
        assert (cluster.run_dir / "checkpoints" / "interrupted" / "edge.pt").is_file()
    finally:
        cluster.stop()
