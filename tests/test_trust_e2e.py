"""Impostors against a training `tokcom run` (mutual TLS by default): plaintext is refused on
every port; a client without a credential, with a credential from another CA, with the
launcher's, or with user0/text's cannot register as user0/audio, take its tasks, send tokens or
reports for it, or reach the edge; the run finishes unaffected, with its own processes."""
from __future__ import annotations

import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from configs.loader import config_digest, load_config
from protos import codec
from protos import tokcom_pb2 as pb
from protos.pki import write_credentials
from protos.rpc import PROTOCOL
from protos.tls import Credential
from tests.cluster_util import Launcher
from tests.conftest import REPO
from tests.test_cluster_e2e import RawStream, _tokens

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _plaintext_health(address: str) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def _hello(cfg, dataset, node: str) -> pb.Up:
    info = pb.NodeInfo(node=node, user=0, modality=node.split("/")[-1], role="device", pid=1, host="rogue",
                       config_digest=config_digest(cfg), data_digest=dataset.digest())
    return pb.Up(hello=pb.Hello(info=info, protocol=PROTOCOL))


def test_impostors_are_refused_and_the_run_is_unaffected(tmp_path, small_overrides, assets):
    overrides = small_overrides + ["train.stage2.steps=200"]
    cfg = load_config(REPO / "configs" / "tiny.yaml", overrides)
    out = tmp_path / "run"
    run = Launcher(tmp_path, out, overrides)
    try:
        run.wait_for("the rounds", lambda: (out / "metrics.jsonl").is_file()
                     and (out / "metrics.jsonl").stat().st_size > 0)
        ports = {n: (out / "logs" / f"{n}.port").read_text().strip() for n in ("edge", "relay")}
        relay, edge = f"127.0.0.1:{ports['relay']}", f"127.0.0.1:{ports['edge']}"
        for address in (relay, edge):
            assert _plaintext_health(address) == grpc.StatusCode.UNAVAILABLE, address

        creds = out / "credentials"
        text, launcher = Credential.load(creds, "user0/text"), Credential.load(creds, "launcher")
        write_credentials(tmp_path / "other-ca", ["user0/audio", "relay"])
        forged = Credential.load(tmp_path / "other-ca", "user0/audio")
        hello_audio = _hello(cfg, assets[0], "user0/audio")
        report = pb.Up(report=codec.encode_report("user0/audio", []))

        # user0/text's credential speaks for user0/text only
        code, details = RawStream(relay, text, "relay").send(hello_audio).status()
        assert code == grpc.StatusCode.PERMISSION_DENIED and "cannot register as 'user0/audio'" in details
        for msg in (_tokens(8), report):  # tasks, tokens and reports need a Hello under the stream's own name
            code, details = RawStream(relay, text, "relay").send(msg).status()
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "Hello first" in details, details
        code, details = RawStream(edge, text, "edge").send(hello_audio).status()
        assert code == grpc.StatusCode.PERMISSION_DENIED and "only the relay" in details
        # the launcher's credential is no device's
        code, details = RawStream(relay, launcher, "relay").send(hello_audio).status()
        assert code == grpc.StatusCode.PERMISSION_DENIED and "not a device" in details
        # a credential of another CA, and none at all: no TLS session
        assert RawStream(relay, forged, "relay").send(hello_audio).status()[0] == grpc.StatusCode.UNAVAILABLE
        assert RawStream(relay).send(hello_audio).status()[0] == grpc.StatusCode.UNAVAILABLE
        assert RawStream(edge).send(hello_audio).status()[0] == grpc.StatusCode.UNAVAILABLE

        assert run.wait() == 0, run.log()[-3000:]
    finally:
        run.kill()
    summary = json.loads((out / "summary.json").read_text())
    pids = {p.get("node", p["role"]): p["pid"] for p in summary["processes"]}
    assert pids["relay"] == run.pid_of("relay")
    assert pids["user0/audio"] == run.pid_of("device-user0-audio")
    links = {(e["link"], e["direction"]): e for e in json.loads((out / "links.json").read_text())}
    rounds = cfg.train.stage1.steps + cfg.train.stage2.steps + cfg.eval.max_samples // cfg.eval.batch
    assert links[("user0/audio->relay", "uplink")]["messages"] == rounds
    assert not list((out / "logs").glob("*.port"))
