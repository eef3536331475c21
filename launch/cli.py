"""The `tokcom` command: one sub-command per job or process role."""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from configs.schema import ConfigError
from foundation.logs import quiet_libraries, setup_logging

# sub-command -> (module with add_arguments/run, help)
COMMANDS = {
    "run": ("launch.cluster", "run the whole cluster locally: edge, relay and every device as processes"),
    "reference": ("launch.reference", "train and evaluate in one process (the in-process reference)"),
    "channel-check": ("channel.check", "measure SNR and QPSK BER of the channel against closed forms"),
    "edge": ("edge_server.server", "run the edge server (receivers + LoRA LM; drives the rounds)"),
    "relay": ("channel.relay", "run the channel relay between the devices and the edge"),
    "device": ("device_node.client", "run one device (one user and modality)"),
    "devices": ("device_node.host", "run several users' devices of one modality in one process (a device host)"),
    "prepare": ("foundation.data.prepare", "turn raw videos into the frames and 16 kHz WAV the loaders read"),
    "sweep": ("launch.sweep", "run a grid of runs (SNR, fading, token lengths, alignment, tau, seeds); resumable"),
    "report": ("launch.report", "figures and report.md for a run or sweep directory"),
    "reproduce": ("launch.reproduce", "the documented reproduction: run the sweep, write docs/results.md"),
    "oracle": ("launch.oracle", "the LM reading the clean caption vs the question alone: the ceiling media can reach"),
    "credentials": ("launch.credentials", "make a CA and a certificate per node, for roles on several machines"),
    "bench": ("launch.bench", "transport benchmarks: cluster vs in-process, one hop vs raw TCP, bytes, round transport "
                              "at the run's and the paper's shapes, each beside raw gRPC's floor"),
}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _parser(chosen: str | None) -> argparse.ArgumentParser:
    """All sub-commands listed; only the chosen one's module is imported (each role
    process loads just what it runs)."""
    parser = argparse.ArgumentParser(prog="tokcom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    quiet_libraries(interactive=sys.stderr.isatty())  # before the command's module imports the libraries
    args = _parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    setup_logging(args.command)
    # SIGTERM takes the same clean path out as Ctrl-C (servers stop, children are reaped).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return importlib.import_module(COMMANDS[args.command][0]).run(args)
    except ConfigError as e:
        logging.getLogger("tokcom").error("%s", e)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("tokcom").error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
