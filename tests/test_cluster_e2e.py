"""The roles as real processes on loopback, started by hand (the two-machine recipe):
equivalence with the in-process reference, byte metering, bad messages, a dead device."""
from __future__ import annotations

import json
import math

import grpc
import pytest
import torch

from configs.loader import config_digest
from launch.reference import run_reference
from protos import codec
from protos import tokcom_pb2 as pb
from protos import tokcom_pb2_grpc as pb_grpc
from protos.rpc import channel_options
from tests.cluster_util import ManualCluster

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


def test_manual_cluster_equals_reference_and_meters_every_link(tmp_path, small_cfg, small_overrides, assets):
    ref = run_reference(small_cfg, str(tmp_path / "ref"), progress=False)
    cluster = ManualCluster(tmp_path / "c", small_overrides)
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

    # processes: the edge, the relay and three devices, five distinct pids, the ones we started
    procs = summary["processes"]
    assert sorted(p["role"] for p in procs) == ["device"] * 3 + ["edge", "relay"]
    assert {p["pid"] for p in procs} == set(started.values()) and len(started) == 5

    # the same losses as the reference, step by step
    ours, theirs = _losses(run), _losses(tmp_path / "ref")
    assert ours.keys() == theirs.keys() and len(ours) == 12
    for k in ours:
        assert abs(ours[k] - theirs[k]) <= 1e-4 * abs(theirs[k]), (k, ours[k], theirs[k])
    assert summary["accuracy"]["overall"] == pytest.approx(ref["accuracy"]["overall"])

    # bytes: rounds x b x s_m x d x 4 (float32 pairs), computed here from the config alone
    cfg = small_cfg
    d = 128  # the tiny LM's width
    rounds = cfg.train.stage1.steps + cfg.train.stage2.steps + math.ceil(cfg.eval.max_samples / cfg.eval.batch)
    links = {(e["link"], e["direction"]): e for e in json.loads((run / "links.json").read_text())}
    for m in MODALITIES:
        s = cfg.data.text_len if m == "text" else getattr(cfg.transmitter, m).tokens
        up = links[(f"user0/{m}->relay", "uplink")]
        assert up["messages"] == rounds
        assert up["payload_bytes"] == rounds * 8 * s * d * 4
        assert up["channel_uses"] * 2 * 4 == up["payload_bytes"]
        assert up["wire_bytes"] > up["payload_bytes"]  # framing on top of the tensor bytes
        assert up["latency_ms"]["p50"] is not None
        down = links[(f"relay->user0/{m}", "downlink")]
        grads = cfg.train.stage1.steps + cfg.train.stage2.steps
        assert down["payload_bytes"] == (0 if m == "text" else grads * 8 * s * d * 4)
    assert (("user0/text->relay (labels)", "uplink")) in links
    assert ("relay->edge", "uplink") in links and ("edge->relay", "downlink") in links
    assert (run / "checkpoints" / "adapter" / "adapter_config.json").is_file()
    for m in ("audio", "video", "text"):
        assert (run / "checkpoints" / "devices" / f"user0_{m}.pt").is_file()


def _rogue(cluster, small_cfg, assets, node="user0/audio"):
    channel = grpc.insecure_channel(cluster.relay_addr, options=channel_options(256))
    stub = pb_grpc.TokenLinkStub(channel)
    dataset = assets[0]
    info = pb.NodeInfo(node=node, user=0, modality=node.split("/")[1], role="device", pid=1, host="rogue",
                       config_digest=config_digest(small_cfg), data_digest=dataset.digest())
    stub.Hello(pb.HelloRequest(info=info, protocol="tokcom.v1"), timeout=30)
    return channel, stub


def _tokens(b, s=32, d=128, **kw):
    z = torch.randn(b, s * d // 2, dtype=torch.complex64)
    return pb.Tokens(node=kw.pop("node", "user0/audio"), phase="stage1", step=0, s=s, d=d,
                     symbols=codec.encode_symbols(z), **kw)


def test_bad_messages_get_invalid_argument_and_the_run_continues(tmp_path, small_cfg, small_overrides, assets):
    cluster = ManualCluster(tmp_path, small_overrides)
    try:
        cluster.start_edge()
        cluster.start_relay()
        channel, stub = _rogue(cluster, small_cfg, assets)

        def code_of(msg, target=stub):
            with pytest.raises(grpc.RpcError) as err:
                target.SendTokens(msg, timeout=30)
            return err.value.code(), err.value.details()

        short = _tokens(8)
        short.symbols.data = short.symbols.data[:-4]  # one float missing
        code, details = code_of(short)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in details
        wrong_dtype = _tokens(8)
        wrong_dtype.symbols.dtype = "float64"
        assert code_of(wrong_dtype)[0] == grpc.StatusCode.INVALID_ARGUMENT
        nan = _tokens(8)
        nan.symbols.CopyFrom(codec.encode_tensor(torch.full((8, 2048, 2), float("nan")), "float32", finite=False))
        assert code_of(nan)[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(_tokens(8, node="user7/audio"))[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(_tokens(8, s=5))[0] == grpc.StatusCode.INVALID_ARGUMENT  # not this modality's s_m
        # straight to the edge, too
        edge_stub = pb_grpc.TokenLinkStub(grpc.insecure_channel(cluster.edge_addr, options=channel_options(256)))
        assert code_of(short, edge_stub)[0] == grpc.StatusCode.INVALID_ARGUMENT
        # above gRPC's 4 MiB default: 400 x 2048 complex64 = 6.5 MB goes device -> relay -> edge, where it is
        # refused only because no round is waiting for it
        code, details = code_of(_tokens(400))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, details

        for m in MODALITIES:  # the real devices: the run goes on
            cluster.start_device(0, m)
        assert cluster.wait_edge_exit() == 0, cluster.log("edge")
        assert (cluster.run_dir / "summary.json").is_file()
        channel.close()
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
        assert (cluster.run_dir / "checkpoints" / "edge.pt").is_file()
    finally:
        cluster.stop()
