"""The edge-server process: `tokcom edge`.

The servicer is thin: it reads the relay's `Link` stream, decodes with `protos.codec`,
calls the hub, and writes the hub's tasks down the same stream. Errors map to status
codes: a malformed message -> INVALID_ARGUMENT, a message for a round nobody waits for
-> FAILED_PRECONDITION. An error about one device's message goes down as an `Error` for
that device (the relay ends that device's stream with its code); an error about the
stream itself (no Hello, a stranger) ends the stream. With TLS only the relay's
certificate may open a stream here (PERMISSION_DENIED otherwise). The round driver runs on the main
thread with the hub as its transport.
"""
from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2

from channel.fading import num_blocks
from channel.link import expand_csi
from configs.args import add_config_arguments
from configs.schema import Config
from configs.loader import config_digest, load_config
from edge_server.checkpoint import Checkpoints
from edge_server.driver import Driver, ResumeError
from edge_server.guard import GuardError, NonFiniteStep, check_channel, check_labels
from edge_server.hub import DeviceTimeout, EdgeHub, HubError, TaskSpec
from edge_server import ranks
from edge_server.rundir import RunDir
from edge_server.step import EdgeNode, Received, pick_device
from foundation.assets import prepare_assets
from foundation.lm import embedding_fingerprint
from foundation.manifest import build_manifest
from protos import codec
from protos import tokcom_pb2 as pb
from protos import tokcom_pb2_grpc as pb_grpc
from protos.parts import Parts, Payloads
from protos.tls import add_tls_arguments, credential_from_args, peer_name
from protos.rpc import (PROTOCOL, Outbox, add_link_servicer, clip, fast_thread_switch, info_to_dict, serve_stream,
                        start_server, stop_on_signals, whole)

log = logging.getLogger(__name__)


class _StreamError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class EdgeServicer(pb_grpc.TokenLinkServicer):
    def __init__(self, hub: EdgeHub, cfg: Config, vocab: int):
        self.hub, self.cfg, self.precision, self.vocab = hub, cfg, cfg.wire.precision, vocab

    def Link(self, request_iterator, context):
        outbox = Outbox()
        threading.Thread(target=self._read, args=(request_iterator, outbox, peer_name(context)), daemon=True,
                         name="edge-link-reader").start()
        return serve_stream(outbox, context)

    # ------------------------------------------------------------ upstream
    def _read(self, requests, outbox: Outbox, peer: str | None) -> None:
        """`peer`: the node name in the client's certificate (None without TLS)."""
        send = None  # set once the relay has said Hello on this stream
        try:
            if peer is not None and peer != "relay":
                raise _StreamError(grpc.StatusCode.PERMISSION_DENIED,
                                   f"the credential of '{clip(peer)}' is not the relay's; only the relay reaches the "
                                   f"edge, devices speak through it")
            for up, payloads in whole(requests, self.cfg.wire.limit_bytes):
                kind = up.WhichOneof("msg")
                node = getattr(up, kind).node if kind in ("tokens", "done", "report", "gone") else up.hello.info.node
                try:
                    if kind == "tokens":
                        self._tokens(up, payloads, relay=send is not None)
                    elif kind == "hello":
                        send = self._hello(up.hello, outbox, send)
                    elif send is None:
                        raise _StreamError(grpc.StatusCode.FAILED_PRECONDITION,
                                           f"{kind} before Hello: the relay says Hello first on its stream")
                    elif kind == "done":
                        self.hub.done(node, up.done.seq)
                    elif kind == "report":
                        self.hub.submit_report(*codec.decode_report(up.report))
                    elif kind == "gone":
                        self.hub.gone(node, up.gone.why)
                    else:
                        raise _StreamError(grpc.StatusCode.INVALID_ARGUMENT, "empty message: set one of Up's fields")
                except (codec.CodecError, GuardError, HubError) as e:
                    code = e.code if isinstance(e, HubError) else "INVALID_ARGUMENT"
                    if send is None or not node or node == "relay":
                        raise _StreamError(getattr(grpc.StatusCode, code), f"{clip(node) or '?'}: {e}") from None
                    log.warning("refused a message of %s: %s", clip(node), clip(str(e)))
                    outbox.put(pb.Down(error=pb.Error(node=node, code=code, message=clip(f"{node}: {e}"))))
        except _StreamError as e:
            outbox.abort(e.code, str(e))
            return
        except codec.CodecError as e:  # parts that do not fit their message: the stream is out of step
            outbox.abort(grpc.StatusCode.INVALID_ARGUMENT, f"relay stream: {e}")
            return
        except grpc.RpcError:
            pass  # the relay went away; the driver's deadline notices
        except Exception as e:  # a bug here must end the stream with a status, not hang it
            log.exception("the relay's stream failed")
            outbox.abort(grpc.StatusCode.INTERNAL, f"edge: {type(e).__name__}: {e}")
            return
        finally:
            if send is not None:
                self.hub.detach(send)
        outbox.close()

    def _hello(self, hello: pb.Hello, outbox: Outbox, send):
        if hello.protocol != PROTOCOL:
            raise HubError("FAILED_PRECONDITION", f"protocol '{hello.protocol}', this edge speaks {PROTOCOL}")
        info = info_to_dict(hello.info)
        if send is None and info["role"] != "relay":
            raise _StreamError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"'{info['node']}' said Hello straight to the edge; devices reach it through the relay")
        welcome = pb.Down(welcome=pb.Welcome(node=info["node"]))

        def answer(run_id: str) -> None:
            welcome.welcome.run_id = run_id
            outbox.put(welcome)

        self.hub.hello(info, answer)
        if info["role"] == "relay":
            if send is not None:
                raise HubError("FAILED_PRECONDITION", "the relay said Hello twice on one stream")

            def send(batch: list[tuple[str, TaskSpec]]) -> None:
                outbox.put(*self._encode_tasks(batch))

            self.hub.attach(send)
        return send

    def _tokens(self, up: pb.Up, payloads: Payloads, relay: bool) -> None:
        """Decode first (bytes, dtype, finiteness), then check that it fits the round."""
        t_rx = time.time_ns()
        msg = up.tokens
        y_bytes, csi_bytes = payloads.get("tokens.symbols"), payloads.get("tokens.csi")
        y = codec.decode_symbols(msg.symbols, payload=y_bytes)  # (b, c)
        csi = (codec.decode_symbols(msg.csi, name="csi", payload=csi_bytes)
               if msg.HasField("csi") else None)  # (b, n)
        labels = codec.decode_labels(msg.labels) if msg.HasField("labels") else {}
        check_channel(msg.node, float(msg.noise_var), csi)  # what the message says, whatever the round
        check_labels(msg.node, labels, self.vocab)
        if not relay:
            raise _StreamError(grpc.StatusCode.FAILED_PRECONDITION,
                               "tokens before Hello: the relay says Hello first on its stream")
        phase, step, b, c = self.hub.expect(msg.node)
        if msg.s * msg.d != 2 * c or tuple(y.shape) != (b, c):
            raise codec.CodecError(f"symbols {tuple(y.shape)} with s={msg.s}, d={msg.d}; this round expects ({b}, {c})")
        link = self.cfg.channel.link(msg.node)
        if csi is not None and (csi.shape[0] != b or csi.shape[1] != num_blocks(c, link.coherence)):
            raise codec.CodecError(f"csi {tuple(csi.shape)}, expected ({b}, {num_blocks(c, link.coherence)}): "
                                   f"one gain per fading block per sample")
        self.hub.submit_tokens(msg.node, msg.phase, msg.step,
                               Received(y, int(msg.s), expand_csi(csi, c, link), float(msg.noise_var)), labels,
                               float(msg.compute_ms), float(msg.uplink_airtime_s))
        payload = (codec.payload_bytes(msg.symbols, y_bytes) + codec.payload_bytes(msg.csi, csi_bytes)
                   + codec.labels_bytes(msg.labels))
        self.hub.meter.record("relay->edge", "uplink", payload_bytes=payload,
                              wire_bytes=up.ByteSize() + payloads.wire_bytes(), samples=b,
                              latency_ms=max(0.0, (t_rx - msg.hop.sent_ns) / 1e6))

    def _encode_tasks(self, batch: list[tuple[str, TaskSpec]]) -> tuple[pb.Down, Parts]:
        down, parts = pb.Down(), Parts(self.cfg.wire.part_bytes)
        for i, (name, task) in enumerate(batch):
            msg = down.tasks.tasks.add()  # built in place (see codec.encode_tensor's `into`)
            msg.node, msg.kind, msg.phase, msg.step = name, pb.Task.Kind.Value(task.kind), task.phase, task.step
            msg.path, msg.seq = task.path, task.seq
            msg.sample_ids.extend(task.sample_ids)
            if task.grad is not None:
                codec.encode_symbols(task.grad, self.precision, name="grad", into=msg.grad, parts=parts,
                                     path=f"tasks.tasks.{i}.grad")
            msg.hop.sent_ns = time.time_ns()
        return down, parts


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_tls_arguments(p)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to serve on (port 0: the OS picks)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--register-timeout", type=float, default=600.0,
                   help="seconds to wait for the relay and every device to register")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    p.add_argument("--no-progress", action="store_true")


def serve(cfg: Config, args: argparse.Namespace) -> int:
    stop_on_signals()
    fast_thread_switch()
    credential = credential_from_args(args, "edge")
    resume = Checkpoints(Path(args.out) / "checkpoints").latest() if args.resume else None
    if args.resume and resume is None:
        log.error("--resume: no checkpoint in %s; run without --resume, with train.checkpoint_every > 0",
                  Path(args.out) / "checkpoints")
        return 2
    dataset, (lm, tok) = prepare_assets(cfg)
    edge = EdgeNode(cfg, lm, tok, pick_device(cfg.models.device, int(os.environ.get("LOCAL_RANK", 0))))
    try:
        shards = ranks.join(cfg, edge)  # before serving: the port file means every rank has joined
    except RuntimeError as e:
        log.error("%s", e)
        return 2
    if shards is not None and shards.rank > 0:
        log.info("edge rank %d of %d: training the users it is given by rank 0", shards.rank, shards.world)
        shards.follow(edge)
        return 0
    width, vocab = lm.config.hidden_size, lm.get_input_embeddings().weight.shape[0]
    digests = {"config_digest": config_digest(cfg), "data_digest": dataset.digest(),
               "model_digest": embedding_fingerprint(lm.get_input_embeddings().weight)}
    health_servicer = health.HealthServicer()
    hub = EdgeHub(cfg, digests, {"audio": width, "video": width, "text": width},
                  on_register=lambda n: health_servicer.set(f"node:{n}", health_pb2.HealthCheckResponse.SERVING),
                  edges=shards.processes if shards is not None else None)
    server = start_server(lambda s: add_link_servicer(EdgeServicer(hub, cfg, vocab), s),
                          args.listen, cfg.wire.max_message_mb, workers=16, credential=credential,
                          port_file=args.port_file,
                          health_servicer=health_servicer)
    log.info("edge listening on port %d (%s, device %s); waiting for %s", server.port,
             "mutual TLS, the relay's credential only" if credential else "INSECURE", edge.device, hub.expected)
    run_dir = RunDir(args.out, cfg, resume_from=resume[1] if resume else None)
    driver = Driver(cfg, edge, hub, build_manifest(dataset, cfg.eval.split), run_dir, not args.no_progress)
    code = 0
    try:
        hub.wait_registered(args.register_timeout)
        if resume:
            driver.resume(*resume)
        driver.run()
    except DeviceTimeout as e:
        where = run_dir.checkpoints.interrupted()
        log.error("stopping the run: %s; saving the state reached to %s", e, where)
        hub.stop_quietly(str(where / "devices"))
        driver.save_interrupted()
        code = 3
    except ResumeError as e:
        log.error("%s", e)
        hub.stop_quietly(None)
        code = 2
    except NonFiniteStep as e:
        log.error("stopping the run: %s", e)
        hub.stop_quietly(None)
        code = 4
    except KeyboardInterrupt:
        log.error("interrupted; saving the edge state reached to %s", driver.save_interrupted())
        code = 130
    finally:
        if shards is not None:
            shards.close()
        run_dir.close()
        server.stop()
    return code


def run(args: argparse.Namespace) -> int:
    return serve(load_config(args.config, args.overrides), args)
