"""The command-line arguments every tokcom command shares to pick its config."""
from __future__ import annotations

import argparse


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML preset (default: the embedded tiny preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. --set channel.snr_db=6 (repeatable)")
