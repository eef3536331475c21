"""The edge-server process: `tokcom edge`.

The servicer is thin: decode with `protos.codec`, call the hub, encode, and map
errors to status codes (CodecError and unknown nodes -> INVALID_ARGUMENT, a
message for a round nobody waits for -> FAILED_PRECONDITION). The round driver
runs on the main thread with the hub as its transport.
"""
from __future__ import annotations

import argparse
import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from configs.args import add_config_arguments
from configs.schema import Config
from configs.loader import config_digest, load_config
from edge_server.driver import Driver
from edge_server.hub import DeviceTimeout, EdgeHub, HubError
from edge_server.rundir import RunDir
from edge_server.step import EdgeNode, Received, pick_device
from foundation.assets import prepare_assets
from foundation.lm import embedding_fingerprint
from foundation.manifest import build_manifest
from protos import codec
from protos import tokcom_pb2 as pb
from protos import tokcom_pb2_grpc as pb_grpc
from protos.rpc import channel_options, info_to_dict, timed, write_port_file

log = logging.getLogger(__name__)
PROTOCOL = "tokcom.v1"


def _abort(context, code: str, message: str):
    context.abort(getattr(grpc.StatusCode, code), message)


class EdgeServicer(pb_grpc.TokenLinkServicer):
    def __init__(self, hub: EdgeHub, precision: str):
        self.hub, self.precision = hub, precision

    def Hello(self, request, context):
        with timed() as t:
            if request.protocol != PROTOCOL:
                _abort(context, "FAILED_PRECONDITION", f"protocol '{request.protocol}', this edge speaks {PROTOCOL}")
            try:
                run_id = self.hub.hello(info_to_dict(request.info))
            except HubError as e:
                _abort(context, e.code, str(e))
        return pb.HelloReply(run_id=run_id, server_ms=t.ms)

    def NextTask(self, request, context):
        with timed() as t:
            try:
                task = self.hub.next_task(request.node)
            except HubError as e:
                _abort(context, e.code, str(e))
            msg = pb.Task(kind=pb.Task.Kind.Value(task.kind), phase=task.phase, step=task.step,
                          sample_ids=task.sample_ids, path=task.path)
            if task.grad is not None:
                msg.grad.CopyFrom(codec.encode_symbols(task.grad, self.precision, name="grad"))
        msg.server_ms = t.ms
        return msg

    def SendTokens(self, request, context):
        with timed() as t:
            try:
                # the message itself first (bytes, dtype, finiteness), then whether it fits the round
                y = codec.decode_symbols(request.symbols)
                h_hat = codec.decode_symbols(request.csi, name="csi") if request.HasField("csi") else None
                labels = codec.decode_labels(request.labels) if request.HasField("labels") else {}
                phase, step, b, c = self.hub.expect(request.node)
                if request.s * request.d != 2 * c or tuple(y.shape) != (b, c):
                    raise codec.CodecError(f"symbols {tuple(y.shape)} with s={request.s}, d={request.d}; this "
                                           f"round expects ({b}, {c})")
                if h_hat is not None and h_hat.shape != y.shape:
                    raise codec.CodecError(f"csi {tuple(h_hat.shape)} does not match symbols {tuple(y.shape)}")
                self.hub.submit_tokens(request.node, request.phase, request.step,
                                       Received(y, int(request.s), h_hat, float(request.noise_var)), labels,
                                       float(request.compute_ms))
            except codec.CodecError as e:
                _abort(context, "INVALID_ARGUMENT", f"{request.node or '?'}: {e}")
            except HubError as e:
                _abort(context, e.code, str(e))
        return pb.Ack(server_ms=t.ms)

    def SendReport(self, request, context):
        with timed() as t:
            try:
                node, raw = codec.decode_report(request)
                self.hub.submit_report(node, raw)
            except codec.CodecError as e:
                _abort(context, "INVALID_ARGUMENT", str(e))
            except HubError as e:
                _abort(context, e.code, str(e))
        return pb.Ack(server_ms=t.ms)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to serve on (port 0: the OS picks)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--register-timeout", type=float, default=600.0,
                   help="seconds to wait for the relay and every device to register")
    p.add_argument("--no-progress", action="store_true")


def serve(cfg: Config, args: argparse.Namespace) -> int:
    dataset, (lm, tok) = prepare_assets(cfg)
    edge = EdgeNode(cfg, lm, tok, pick_device(cfg.models.device))
    width = lm.config.hidden_size
    health_servicer = health.HealthServicer()
    digests = {"config_digest": config_digest(cfg), "data_digest": dataset.digest(),
               "model_digest": embedding_fingerprint(lm.get_input_embeddings().weight)}
    hub = EdgeHub(cfg, digests, {"audio": width, "video": width, "text": width},
                  on_register=lambda n: health_servicer.set(f"node:{n}", health_pb2.HealthCheckResponse.SERVING))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8 + 4 * len(hub.expected)),
                         options=channel_options(cfg.wire.max_message_mb))
    pb_grpc.add_TokenLinkServicer_to_server(EdgeServicer(hub, cfg.wire.precision), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        log.error("could not bind %s", args.listen)
        return 1
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if args.port_file:
        write_port_file(args.port_file, port)
    log.info("edge listening on port %d (device %s); waiting for %s", port, edge.device, hub.expected)
    run_dir = RunDir(args.out, cfg)
    code = 0
    try:
        hub.wait_registered(args.register_timeout)
        driver = Driver(cfg, edge, hub, build_manifest(dataset, cfg.eval.split), run_dir, not args.no_progress)
        driver.run()
    except DeviceTimeout as e:
        log.error("stopping the run: %s; saving the edge state to %s", e, run_dir.path / "checkpoints")
        hub.stop_quietly(str(run_dir.checkpoint_dir() / "devices"))
        Driver(cfg, edge, hub, {}, run_dir, False).save_edge()
        code = 3
    except KeyboardInterrupt:
        log.error("interrupted; saving the edge state to %s", run_dir.path / "checkpoints")
        Driver(cfg, edge, hub, {}, run_dir, False).save_edge()
        code = 130
    finally:
        run_dir.close()
        hub.close()
        server.stop(grace=1.0).wait()
    return code


def run(args: argparse.Namespace) -> int:
    return serve(load_config(args.config, args.overrides), args)
