"""TensorFlow's protos without TensorFlow's runtime, for a front-end worker process.

`tensorflow_serving.apis` imports TensorFlow's generated modules (`tensorflow.core.framework.
tensor_pb2`, ...), and importing any of them first runs `tensorflow/__init__.py`, which loads
the whole runtime: 9.6 s and 570 MB on this machine for a process that only encodes and
decodes protos (a worker: `worker.py`). `without_runtime()` makes `tensorflow` a bare package
whose only subpackages are `core` and `tsl` from the installed wheel: the *_pb2 modules
import from the same files and register the same descriptors (0.6 s, 58 MB), and any other
use of TensorFlow in that process fails at once, naming this module.

`python -m serving.model_server.tf_protos MODULE [ARG...]` runs MODULE as `__main__` so
(`workers.Workers` starts each worker that way). A process that already imported TensorFlow
keeps it.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
import types
from pathlib import Path

PROTO_PACKAGES = ("core", "tsl")  # where TensorFlow's *_pb2 modules live


class _ProtosOnly(types.ModuleType):
    def __getattr__(self, name: str):
        raise AttributeError(
            f"tensorflow.{name}: this process imports TensorFlow's protos only, not its "
            "runtime (serving.model_server.tf_protos)")


def without_runtime() -> None:
    """Make `tensorflow.core` and `tensorflow.tsl` importable without `import tensorflow`."""
    if "tensorflow" in sys.modules:
        return
    spec = importlib.util.find_spec("tensorflow")  # finds the package; runs none of it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("TensorFlow is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    package = _ProtosOnly("tensorflow", __doc__)
    package.__path__ = []  # nothing else of TensorFlow can be found
    sys.modules["tensorflow"] = package
    for name in PROTO_PACKAGES:
        sub = importlib.util.spec_from_file_location(
            f"tensorflow.{name}", root / name / "__init__.py",
            submodule_search_locations=[str(root / name)])
        module = importlib.util.module_from_spec(sub)
        sys.modules[sub.name] = module
        sub.loader.exec_module(module)
        setattr(package, name, module)


if __name__ == "__main__":
    without_runtime()
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
