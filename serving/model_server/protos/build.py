"""Regenerate the *_pb2.py modules beside this file from their .proto files.

`python -m serving.model_server.protos.build [--out DIR]` (what `make protos` runs), with
the protoc that the locked grpcio-tools bundles, so every regeneration writes the same
bytes. grpcio-tools 1.48's own `python -m grpc_tools.protoc` needs pkg_resources, which
current setuptools no longer ships, so this calls its compiler directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # protos are named by their path from the repository root


def proto_files() -> List[Path]:
    return sorted(HERE.glob("*.proto"))


def generate(out_dir: Path = ROOT) -> int:
    """protoc --python_out=out_dir for every .proto here; protoc's exit status."""
    import grpc_tools
    from grpc_tools import _protoc_compiler

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={out_dir}",
            *(str(p.relative_to(ROOT)) for p in proto_files())]
    return _protoc_compiler.run_main([a.encode() for a in args])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT,
                   help="root to write serving/model_server/protos/*_pb2.py under "
                        "(default: the repository, in place)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return generate(args.out)


if __name__ == "__main__":
    sys.exit(main())
