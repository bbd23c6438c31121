"""`tfx.v1` without its Google Cloud extensions until something uses them.

TFX 1.16's `tfx/v1/__init__.py` imports `tfx.v1.extensions`, which imports the Vertex AI
and BigQuery extensions and with them `google.cloud.aiplatform`, BigQuery and Pub/Sub
clients, whether a pipeline uses them or not. The toolkit never does, and that import was
a third of every `python -m pipelines` process's start: `from tfx import v1` 12.1-13.3 s
before, 8.5-9.4 s after (benchmarks/README.md, issue 17).

`defer_cloud_extensions()` puts a module in `sys.modules["tfx.v1.extensions"]` before TFX
is imported. It has the real package's `__path__`, and its module `__getattr__` imports a
submodule (`google_cloud_ai_platform`, `google_cloud_big_query`) on its first use, so
`tfx.v1.extensions.google_cloud_ai_platform.Trainer` works as before; only when it is
imported changes. Where TFX is already imported (a notebook that imported it first), it
does nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

EXTENSIONS = "tfx.v1.extensions"


def defer_cloud_extensions() -> None:
    if "tfx.v1" in sys.modules or EXTENSIONS in sys.modules:
        return
    tfx = importlib.util.find_spec("tfx")  # finds the package; runs none of its code
    if tfx is None or not tfx.submodule_search_locations:
        return
    path = os.path.join(list(tfx.submodule_search_locations)[0], "v1", "extensions")
    if not os.path.isfile(os.path.join(path, "__init__.py")):
        return
    module = types.ModuleType(EXTENSIONS, "TFX's Google Cloud extensions, imported on first use "
                                          "(pipelines/tfx_import.py)")
    module.__spec__ = importlib.util.spec_from_file_location(
        EXTENSIONS, os.path.join(path, "__init__.py"), submodule_search_locations=[path])
    module.__path__ = [path]
    module.__file__ = module.__spec__.origin
    module.__package__ = EXTENSIONS

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{EXTENSIONS}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{EXTENSIONS}.{name}":
                raise
            raise AttributeError(f"module {EXTENSIONS!r} has no attribute {name!r}") from None

    module.__getattr__ = __getattr__
    sys.modules[EXTENSIONS] = module
