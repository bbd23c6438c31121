"""components/tf_keras_autograph.py: AutoGraph leaves tf_keras's internals alone, as
TensorFlow's later releases do, and still converts a model's own code."""

import tf_keras as keras
from tensorflow.python.autograph.core import config
from tensorflow.python.autograph.impl import conversion

from components.tf_keras_autograph import skip_tf_keras_internals


def _users_function(x):
    return x + 1


def test_tf_keras_internals_are_not_converted_and_user_code_still_is():
    skip_tf_keras_internals()
    skip_tf_keras_internals()
    assert sum(isinstance(rule, config.DoNotConvert) and rule.matches("tf_keras")
               for rule in config.CONVERSION_RULES) == 1
    assert conversion.is_allowlisted(keras.Model.train_step)
    assert conversion.is_allowlisted(keras.layers.Dense.call)
    assert not conversion.is_allowlisted(_users_function)
