"""Generate the Python modules for every .proto under protos/ (the one command: `make protos`).

Generated modules are committed next to their sources so an installed skiff needs no code
generation; `tests/unit/test_protos_fresh.py` regenerates into a temporary directory and fails
when what is committed is stale.
"""
from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc
import grpc_tools

ROOT = Path(__file__).resolve().parent.parent


def proto_sources(root: Path = ROOT) -> list[Path]:
    """Every .proto file under protos/, relative to the repository root, sorted."""
    return sorted(p.relative_to(root) for p in (root / "protos").rglob("*.proto"))


def generate(out_dir: Path, root: Path = ROOT) -> None:
    """Run protoc for every source, writing *_pb2.py / *_pb2_grpc.py / *.pyi under out_dir."""
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{root}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in proto_sources(root)],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
