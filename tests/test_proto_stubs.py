"""The committed protobuf/gRPC stubs: they import, expose `TokenLink`, and match `tokcom.proto`."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROTOS = Path(__file__).resolve().parents[1] / "protos"
STUBS = ("tokcom_pb2.py", "tokcom_pb2.pyi", "tokcom_pb2_grpc.py")
RPCS = {"Link": ("Up", "Down")}


def test_stubs_import_as_a_package_and_expose_tokenlink():
    from protos import tokcom_pb2, tokcom_pb2_grpc

    service = tokcom_pb2.DESCRIPTOR.services_by_name["TokenLink"]
    assert service.full_name == "tokcom.v2.TokenLink"
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == RPCS
    link = service.methods_by_name["Link"]
    assert link.client_streaming and link.server_streaming  # one long-lived bidirectional stream
    for rpc in RPCS:
        assert callable(getattr(tokcom_pb2_grpc.TokenLinkServicer, rpc))
    assert callable(tokcom_pb2_grpc.add_TokenLinkServicer_to_server)
    assert callable(tokcom_pb2_grpc.TokenLinkStub)
    # the grpc module must reach the messages through the package, not a top-level `tokcom_pb2`
    assert tokcom_pb2_grpc.tokcom__pb2 is tokcom_pb2
    assert "\nimport tokcom_pb2" not in (PROTOS / "tokcom_pb2_grpc.py").read_text()


def test_committed_stubs_match_the_proto():
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) is needed to regenerate the stubs")
    from protos import gen

    assert gen.drifted() == [], "stubs drifted from protos/tokcom.proto: run `python -m protos.gen`"
    cli = subprocess.run([sys.executable, "-m", "protos.gen", "--check"], cwd=PROTOS.parent,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr


def test_check_names_a_drifted_stub(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) is needed to regenerate the stubs")
    from protos import gen

    for name in STUBS:
        shutil.copyfile(PROTOS / name, tmp_path / name)
    with open(tmp_path / "tokcom_pb2.pyi", "a") as f:
        f.write("# hand edit\n")
    (tmp_path / "tokcom_pb2_grpc.py").unlink()
    assert sorted(gen.drifted(tmp_path)) == ["tokcom_pb2.pyi", "tokcom_pb2_grpc.py"]
