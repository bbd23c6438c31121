"""TF Serving's rules for running a SignatureDef: which tensors a request feeds and fetches,
and how the fetched tensors become a response.

Pure functions over SignatureDefs and numpy arrays, after tensorflow_serving's
predict_util.cc, classifier.cc, regressor.cc and multi_inference.cc, with their error
wording. Method names are checked only when `check_method` is set
(--enable_signature_method_name_check, off by default as in tensorflow_model_server), so
the Classify and Regress APIs serve TF2 exports, whose signatures all say `predict`, as
long as their inputs and outputs have the shape of a classification or regression.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Mapping, Tuple

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from serving.model_server.errors import Code, ServingError, invalid_argument
from serving.model_server.servable.tensors import datatype_of, dtype_name

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INIT_OP_SIGNATURE = "__saved_model_init_op"  # TF2's init op: listed, never run by a request


def runnable(signature) -> bool:
    """False for signature defs that name operations, not tensors (TF2's init op): running
    one would run the op again. Composite (sparse, ragged) TensorInfos are not served."""
    infos = list(signature.inputs.values()) + list(signature.outputs.values())
    return all(":" in info.name for info in infos)


@dataclasses.dataclass(frozen=True)
class PredictPlan:
    """What one Predict runs: feeds by tensor name, fetches, and each output's alias."""

    feeds: Dict[str, np.ndarray]
    fetches: Tuple[str, ...]
    aliases: Tuple[Tuple[str, str], ...]  # (output alias, tensor name)

    def response_tensors(self, outputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {alias: outputs[name] for alias, name in self.aliases}


def check_predict_method(signature, check_method: bool) -> None:
    if check_method and signature.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD,
                                                      REGRESS_METHOD):
        raise ServingError(Code.INTERNAL,
                           f"Expected prediction signature method_name to be one of "
                           f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
                           f"Was: {signature.method_name}")


def predict_plan(signature, inputs: Mapping[str, np.ndarray],
                 output_filter: Iterable[str] = ()) -> PredictPlan:
    """PreProcessPrediction: the request's inputs must be exactly the signature's; each is
    fed at its TensorInfo's tensor, with TF's dtype check and no shape check (the graph
    decides what shapes it accepts, as in a TensorFlow Session)."""
    expected = signature.inputs
    if len(inputs) != len(expected) or any(alias not in expected for alias in inputs):
        sent, wanted = set(inputs), set(expected)
        if len(inputs) == len(expected):
            alias = sorted(sent - wanted)[0]
            raise invalid_argument(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be "
                f"in the set {{{','.join(sorted(wanted))}}}.")
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. Missing but required: "
            f"{{{','.join(sorted(wanted - sent))}}}.")
    feeds = {}
    for position, alias in enumerate(sorted(inputs)):
        value = inputs[alias]
        check_dtype(alias, value, expected[alias].dtype, position)
        feeds[expected[alias].name] = value
    aliases = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}.")
        if any(alias == seen for seen, _ in aliases):
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        aliases.append((alias, signature.outputs[alias].name))
    if not aliases:
        aliases = [(alias, info.name) for alias, info in signature.outputs.items()]
    fetches = tuple(dict.fromkeys(name for _, name in aliases))
    return PredictPlan(feeds, fetches, tuple(aliases))


def check_dtype(alias: str, value: np.ndarray, expected: int, position: int) -> None:
    """The value's dtype against the TensorInfo's, with a TensorFlow Session's wording; done
    before a request joins a batch, so one wrong request cannot fail its batch."""
    got = datatype_of(value)
    if got != expected:
        raise invalid_argument(f"Expects arg[{position}] to be {dtype_name(expected)} but "
                               f"{dtype_name(got) if got else str(value.dtype)} is provided "
                               f"(input {alias})")


# ---- Classify / Regress / MultiInference ------------------------------------------------

def find_signature(signature_defs, name: str, missing: str):
    """The SignatureDef called `name` (default serving_default), else INVALID_ARGUMENT with
    `missing` + the name, as the Classify, Regress and MultiInference APIs answer."""
    name = name or DEFAULT_SIGNATURE
    signature = signature_defs.get(name)
    if signature is None or not runnable(signature):
        raise invalid_argument(f"{missing}{name}")
    return name, signature


def classification_tensors(signature, check_method: bool) -> Tuple[str, Tuple[str, ...]]:
    """PreProcessClassification: (input tensor, output tensors: classes and/or scores)."""
    if check_method and signature.method_name != CLASSIFY_METHOD:
        raise invalid_argument(f"Expected classification signature method_name to be "
                               f"{CLASSIFY_METHOD}. Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found "
                               f"{len(signature.outputs)}")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: "
                               f"{_debug(signature)}")
    outputs = tuple(signature.outputs[k].name for k in ("classes", "scores")
                    if k in signature.outputs)
    if not outputs:
        raise invalid_argument(f'Expected classification signature outputs to contain at '
                               f'least one of "classes" or "scores". Signature was: '
                               f'{_debug(signature)}')
    return signature.inputs["inputs"].name, outputs


def regression_tensors(signature, check_method: bool) -> Tuple[str, Tuple[str, ...]]:
    """PreProcessRegression: (input tensor, (the `outputs` tensor,))."""
    if check_method and signature.method_name != REGRESS_METHOD:
        raise invalid_argument(f"Expected regression signature method_name to be "
                               f"{REGRESS_METHOD}. Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: "
                               f"{_debug(signature)}")
    if "outputs" not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: "
                               f"{_debug(signature)}")
    return signature.inputs["inputs"].name, (signature.outputs["outputs"].name,)


def _debug(signature) -> str:
    return " ".join(str(signature).split())


def classification_result(signature, num_examples: int, outputs: Mapping[str, np.ndarray]
                          ) -> classification_pb2.ClassificationResult:
    """PostProcessClassificationResult."""
    classes = outputs.get(signature.outputs["classes"].name) \
        if "classes" in signature.outputs else None
    scores = outputs.get(signature.outputs["scores"].name) \
        if "scores" in signature.outputs else None
    for what, t, want in (("classes", classes, types_pb2.DT_STRING),
                          ("scores", scores, types_pb2.DT_FLOAT)):
        if t is None:
            continue
        if t.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got "
                                   f"{list(t.shape)}")
        got = datatype_of(t)
        if got != want:
            raise invalid_argument(f"Expected {what} Tensor of {types_pb2.DataType.Name(want)}."
                                   f" Got: {types_pb2.DataType.Name(got or 0)}")
        if t.shape[0] != num_examples:
            raise invalid_argument(f"Expected {what} output batch size of {num_examples}. "
                                   f"Got: {t.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(f"Tensors class and score should match in dim_size(1). Got "
                               f"{classes.shape[1]} vs. {scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    label_rows = classes.tolist() if classes is not None else None
    score_rows = scores.tolist() if scores is not None else None
    for i in range(num_examples):
        c = result.classifications.add()
        for j in range(width):
            cls = c.classes.add()
            if label_rows is not None:
                label = label_rows[i][j]
                cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) \
                    else str(label)
            if score_rows is not None:
                cls.score = score_rows[i][j]
    return result


def regression_result(signature, num_examples: int, outputs: Mapping[str, np.ndarray]
                      ) -> regression_pb2.RegressionResult:
    """PostProcessRegressionResult."""
    values = outputs[signature.outputs["outputs"].name]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or "
                               f"[batch_size, 1] but got {list(values.shape)}")
    if values.shape[0] != num_examples:
        raise invalid_argument(f"Input batch size did not match output batch size: "
                               f"{num_examples} vs. {values.shape[0]}")
    if values.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: "
                               f"{types_pb2.DataType.Name(datatype_of(values) or 0)}")
    result = regression_pb2.RegressionResult()
    for v in values.reshape(-1).tolist():
        result.regressions.add().value = v
    return result


def serialize_examples(input_proto) -> np.ndarray:
    """tensorflow.serving.Input -> a [n] string array of serialized tf.Examples, the
    context merged into each (InputToSerializedExampleTensor)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = input_proto.example_list_with_context.context
        examples = []
        for e in input_proto.example_list_with_context.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(ctx)
            merged.MergeFrom(e)
            examples.append(merged.SerializeToString())
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    return np.array(examples, dtype=object)


def multi_inference_tensors(signature_defs, tasks, check_method: bool
                            ) -> Tuple[Tuple[str, ...], Tuple[str, ...], List[Tuple[str, object]]]:
    """TensorFlowMultiInferenceRunner's checks: one model, no signature twice. Returns
    (input tensors, output tensors, [(signature name, SignatureDef)]); the same examples
    are fed to every input tensor, so signatures with inputs of their own (as
    tf.saved_model.save writes them) run in the one Session run too."""
    model_name = ""
    inputs: Dict[str, None] = {}
    outputs: Dict[str, None] = {}
    resolved = []
    for task in tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if model_name and task.model_spec.name != model_name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the "
                                   "same model name.")
        model_name = task.model_spec.name
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if any(name == seen for seen, _ in resolved):
            raise invalid_argument(f"Duplicate evaluation of signature: {name}")
        name, signature = find_signature(signature_defs, name,
                                         "Requested signature not found in model graph: ")
        if task.method_name == CLASSIFY_METHOD:
            task_input, task_outputs = classification_tensors(signature, check_method)
        elif task.method_name == REGRESS_METHOD:
            task_input, task_outputs = regression_tensors(signature, check_method)
        else:
            raise ServingError(Code.UNIMPLEMENTED,
                               f"Unsupported signature method_name: {task.method_name}")
        inputs[task_input] = None
        outputs.update(dict.fromkeys(task_outputs))
        resolved.append((name, signature))
    return tuple(sorted(inputs)), tuple(sorted(outputs)), resolved
