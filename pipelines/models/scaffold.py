"""`python -m pipelines new NAME --template T --out DIR`: a model project of one's own.

Like `tfx template copy`, it copies a template (pipelines/models/templates/<template>/) to a
directory outside the toolkit, with the model's name in place of TEMPLATE_NAME in file
names and contents: the model module (`model.py`, its `PIPELINE` meeting
pipelines/models/contract.py), the Trainer module, the data module (a sample generator),
the schema, the drift thresholds and a README. As written, it passes every gate.
Imports nothing heavy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
# --template NAME -> the template's directory
TEMPLATES: Dict[str, str] = {"regression": "regression",
                             "image-classification": "image_classification"}
PLACEHOLDER = "TEMPLATE_NAME"
COPIED_SUFFIXES = (".py", ".pbtxt", ".md")


class ProjectError(ValueError):
    """A project that cannot be written where asked; the message says why."""


def check_out_dir(out: Path) -> None:
    """DIR must not exist, or be an empty directory (nothing is overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProjectError(f"{out} exists and is not an empty directory; a new project goes "
                           f"to a new (or empty) directory")


def create(name: str, template: str, out: Path) -> List[Path]:
    """Write the project; returns the files written. Built beside `out` and renamed into
    place, so a failure leaves nothing half-written."""
    if template not in TEMPLATES:
        raise ProjectError(f"unknown template {template!r}; choose from {', '.join(TEMPLATES)}")
    out = Path(out)
    check_out_dir(out)
    source = TEMPLATES_DIR / TEMPLATES[template]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for path in sorted(source.iterdir()):
            if path.suffix not in COPIED_SUFFIXES or not path.is_file():
                continue
            target = staging / path.name.replace(PLACEHOLDER, name)
            target.write_text(path.read_text().replace(PLACEHOLDER, name))
        os.chmod(staging, 0o755)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(out.iterdir())
