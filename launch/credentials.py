"""`tokcom credentials`: a CA and one certificate per node, for roles on several machines.

Copy `ca.pem` with each node's `<name>.pem` and `<name>.key` to the machine that runs it and
pass the directory as `--credentials`. The CA's key is not kept: to add a node, make a new
set for every node. Without `--nodes`, the names come from the config: the relay, the edge,
the launcher (for health checks) and one device per user and modality.
"""
from __future__ import annotations

import argparse
import logging

from configs.args import add_config_arguments
from configs.loader import load_config
from protos.pki import VALID_DAYS, file_stem, write_credentials

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="directory to write ca.pem and <name>.pem, <name>.key into")
    p.add_argument("--nodes", help="comma-separated node names, e.g. relay,edge,user0/audio "
                                   "(default: every node of the config)")
    p.add_argument("--days", type=int, default=VALID_DAYS, help=f"validity in days (default {VALID_DAYS})")


def run(args: argparse.Namespace) -> int:
    if args.nodes:
        names = [n.strip() for n in args.nodes.split(",") if n.strip()]
    else:
        names = ["relay", "edge", "launcher", *load_config(args.config, args.overrides).link_names()]
    if len(set(names)) != len(names):
        log.error("--nodes names a node twice: %s", args.nodes)
        return 2
    where = write_credentials(args.out, names, args.days)
    log.info("wrote ca.pem and the certificates of %s to %s (keys readable by their owner only); give each "
             "machine ca.pem and its nodes' files, e.g. %s.pem and %s.key", ", ".join(names), where,
             file_stem(names[-1]), file_stem(names[-1]))
    return 0
