"""Mutual TLS on every link, with gRPC's own credentials: each node presents its certificate
(`protos.pki`) and checks the peer's against the run's CA. A server reads the peer's node
name from the TLS session (`peer_name`), never from what the peer says about itself.

Every role takes `--credentials DIR` (the directory `tokcom credentials` or `tokcom run`
writes) or `--insecure`, the explicit opt-out for debugging; one of the two is required.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import grpc

from configs.schema import ConfigError
from protos.pki import CA_FILE, file_stem


@dataclass(frozen=True)
class Credential:
    """One node's certificate and key, with the CA that signed every node of the run."""

    name: str
    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, directory: str | Path, name: str) -> Credential:
        directory = Path(directory)
        paths = [directory / CA_FILE, directory / f"{file_stem(name)}.pem", directory / f"{file_stem(name)}.key"]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(f"credentials of '{name}': {', '.join(missing)} not found; make them with "
                              f"`tokcom credentials --out {directory} --nodes ...,{name}` and copy them here")
        ca, cert, key = (p.read_bytes() for p in paths)
        return cls(name, ca, cert, key)

    def server(self) -> grpc.ServerCredentials:
        """Serve with this certificate; every client must present one signed by the CA."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def client(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


def peer_name(context: grpc.ServicerContext) -> str | None:
    """The node name in the client's verified certificate; None on an insecure server."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    names = auth.get("x509_common_name") or [b""]
    return names[0].decode("utf-8", errors="replace")


def add_tls_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--credentials", metavar="DIR",
                   help="directory with ca.pem and this node's <name>.pem and <name>.key (tokcom credentials)")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext, unauthenticated links (debugging only: anyone who reaches a port can be any node)")


def credential_from_args(args: argparse.Namespace, name: str) -> Credential | None:
    """This node's credential, or None with --insecure; ConfigError if neither was given."""
    if args.insecure:
        if args.credentials:
            raise ConfigError("--insecure and --credentials: give one of them")
        return None
    if not args.credentials:
        raise ConfigError(f"'{name}' needs --credentials DIR (made by `tokcom credentials`); "
                          f"--insecure runs without authentication, for debugging only")
    return Credential.load(args.credentials, name)
