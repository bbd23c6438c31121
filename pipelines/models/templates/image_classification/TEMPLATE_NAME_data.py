"""The data of model TEMPLATE_NAME: small grayscale images and their class, as TFRecords
of tf.Example (`image`: SIZE*SIZE int64 pixels 0-255, row by row; `label`: int64).

The sample source is a generator of 8x8 images, each a noisy background with one bright
line: horizontal, vertical or diagonal (CLASSES). Replace `generate` with your own source
(or pass `--data-dir` with train/ and eval/ directories of such TFRecords); keep the
schema (schema.pbtxt) in step with the features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np

SIZE = 8
PIXELS = SIZE * SIZE
CLASSES = ("horizontal", "vertical", "diagonal")
IMAGE, LABEL = "image", "label"
FILE_NAME = "data.tfrecord.gz"


class DataError(ValueError):
    """Input data that cannot be used; the message names the directory and the problem."""


def generate(num_images: int, seed: int, classes=None) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, PIXELS], labels int64 [n]); `classes`: the class indexes drawn."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(classes if classes is not None else len(CLASSES), size=num_images)
    images = rng.integers(0, 60, size=(num_images, SIZE, SIZE))
    for image, label, at in zip(images, labels, rng.integers(0, SIZE, size=num_images)):
        if label == 0:
            image[at, :] = 255
        elif label == 1:
            image[:, at] = 255
        else:
            np.fill_diagonal(image if at % 2 else np.fliplr(image), 255)
    return images.reshape(num_images, PIXELS).astype(np.uint8), labels.astype(np.int64)


def write_tfrecords(directory: Path, images: np.ndarray, labels: np.ndarray,
                    corrupted: bool = False) -> Path:
    """`directory/data.tfrecord.gz`; corrupted: every 20th example has no label."""
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for i, (image, label) in enumerate(zip(images, labels)):
            feature = {IMAGE: tf.train.Feature(int64_list=tf.train.Int64List(
                value=image.tolist()))}
            if not (corrupted and i % 20 == 0):
                feature[LABEL] = tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(label)]))
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())
    return path


def write_split(directory: Path, split: str, num_images: int, seed: int,
                kind: str = "clean") -> Path:
    """One split: clean, corrupted (the schema gate stops it) or label-shift (only the
    first class: the drift gate stops it)."""
    images, labels = generate(num_images, seed * 2 + (split == "eval"),
                              classes=[0] if kind == "label-shift" else None)
    return write_tfrecords(directory, images, labels, corrupted=kind == "corrupted")


def check_dir(data_dir: Path) -> None:
    """A --data-dir: train/ and eval/, each with TFRecord files (ExampleValidator checks
    what is in them)."""
    for split in ("train", "eval"):
        if not [p for p in (Path(data_dir) / split).glob("*") if p.is_file()]:
            raise DataError(f"{data_dir}/{split}: no files (expected train/ and eval/ "
                            f"directories of TFRecords of tf.Example)")


def read_examples(directory: Path, limit: int) -> Tuple[np.ndarray, np.ndarray]:
    """(images [n, PIXELS], labels [n]) of the first `limit` examples under `directory`."""
    import tensorflow as tf

    files = sorted(str(p) for p in Path(directory).glob("*.gz"))
    spec = {IMAGE: tf.io.FixedLenFeature([PIXELS], tf.int64),
            LABEL: tf.io.FixedLenFeature([1], tf.int64)}
    images, labels = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit):
        example = tf.io.parse_single_example(record, spec)
        images.append(example[IMAGE].numpy())
        labels.append(int(example[LABEL].numpy()[0]))
    return np.asarray(images).reshape(-1, PIXELS), np.asarray(labels)
