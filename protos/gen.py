"""Regenerate the committed protobuf/gRPC stubs from `protos/tokcom.proto`.

    python -m protos.gen            # rewrite tokcom_pb2.py, tokcom_pb2.pyi, tokcom_pb2_grpc.py
    python -m protos.gen --check    # exit 1, naming the file, when the committed stubs drift

Needs grpcio-tools (the `dev` extra, pinned to the grpcio version). protoc writes the grpc
module with a top-level `import tokcom_pb2`; it is rewritten into a package import so that
it imports as `protos.tokcom_pb2_grpc`.
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

from foundation.logs import setup_logging

log = logging.getLogger(__name__)

PROTO_DIR = Path(__file__).resolve().parent
PROTO = PROTO_DIR / "tokcom.proto"
STUBS = ("tokcom_pb2.py", "tokcom_pb2.pyi", "tokcom_pb2_grpc.py")
_BARE_IMPORT = re.compile(r"^import tokcom_pb2 as tokcom__pb2$", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on `tokcom.proto`, writing the three stubs into `out_dir`; returns their paths."""
    try:
        from grpc_tools import protoc
    except ImportError as e:
        raise RuntimeError("grpc_tools is not installed: run `pip install -e .[dev]` "
                           "(grpcio-tools pinned to the grpcio version) to regenerate the stubs") from e
    import importlib.resources

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", str(PROTO)]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed on {PROTO} (exit {rc}); fix the .proto and run `python -m protos.gen` again")
    grpc_module = out_dir / "tokcom_pb2_grpc.py"
    text, n = _BARE_IMPORT.subn("from protos import tokcom_pb2 as tokcom__pb2", grpc_module.read_text())
    if n != 1:
        raise RuntimeError(f"expected one `import tokcom_pb2 as tokcom__pb2` line in the generated {grpc_module.name}, "
                           f"found {n}; update protos/gen.py for this grpcio-tools version")
    grpc_module.write_text(text)
    return [out_dir / name for name in STUBS]


def drifted(committed_dir: Path = PROTO_DIR) -> list[str]:
    """Names of the committed stubs that differ from (or are missing against) a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [p.name for p in fresh
                if not (committed_dir / p.name).is_file() or (committed_dir / p.name).read_bytes() != p.read_bytes()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protos.gen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temp dir and exit 1 when the committed stubs differ")
    args = parser.parse_args(argv)
    setup_logging("protos.gen")
    try:
        return _check() if args.check else _write()
    except RuntimeError as e:
        log.error("%s", e)
        return 2


def _check() -> int:
    bad = drifted()
    for name in bad:
        log.error("protos/%s differs from what protos/tokcom.proto gives: run `python -m protos.gen` "
                  "and commit the result", name)
    if not bad:
        log.info("stubs match protos/tokcom.proto")
    return 1 if bad else 0


def _write() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, PROTO_DIR / path.name)
            log.info("wrote protos/%s", path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
