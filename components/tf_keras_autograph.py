"""Keep AutoGraph out of tf_keras's own training loop, as TensorFlow itself now does.

TensorFlow's AutoGraph rewrites the Python source of every function a `tf.function` calls,
except in the packages its `CONVERSION_RULES` exclude. TF 2.16 excludes `keras` but not
`tf_keras`, the package Keras 2 moved to (`TF_USE_LEGACY_KERAS`, what TFX 1.16 trains
with). So the first `model.fit` of each process transpiles about 355 of tf_keras's internal
functions: 13 s of a 14.5 s `fit` of half_plus_two's one-weight model, measured here (3.2 s
after this rule; later fits in the same process 1.4 s either way). TensorFlow's master adds
`DoNotConvert("tf_keras")` to the same list (tensorflow/tensorflow,
tensorflow/python/autograph/core/config.py); this applies that rule to 2.16. Nothing
changes for a model's own code: tf_keras's layers still convert their `call` themselves,
as Keras 2 did when it was the `keras` package.

Every Trainer module file calls `skip_tf_keras_internals()` first in its `run_fn`.
"""

from __future__ import annotations

from tensorflow.python.autograph.core import config

TF_KERAS = "tf_keras"


def skip_tf_keras_internals() -> None:
    """Add TensorFlow's own `DoNotConvert("tf_keras")` rule where it is missing (idempotent)."""
    rules = config.CONVERSION_RULES
    if any(isinstance(rule, config.DoNotConvert) and rule.matches(TF_KERAS) for rule in rules):
        return
    config.CONVERSION_RULES = rules + (config.DoNotConvert(TF_KERAS),)
