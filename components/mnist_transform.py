"""Transform module file for MNIST: pixels 0-255 -> [0, 1].

The same graph runs in training (the Trainer applies it to raw examples) and in
serving (the classification signature parses raw tf.Examples and applies it), so a
served model can never see differently scaled pixels than it was trained on.
"""

from __future__ import annotations

import tensorflow as tf

IMAGE = "image"
LABEL = "label"


def preprocessing_fn(inputs):
    """tf.Transform entry point; the label is read raw by the Trainer."""
    return {IMAGE: tf.cast(inputs[IMAGE], tf.float32) / 255.0}
