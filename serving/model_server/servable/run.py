"""Running one API on a version already loaded and held (TF Serving's servables/tensorflow
predict_util, classifier, regressor and multi_inference): the request objects both front
ends decode into (`PredictCall`), the result (`PredictResult`), and the `run_*` functions.

`core.apis` calls these for live requests, with the version held for the request;
`warmup` replays a version's recorded requests through them before it serves.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Protocol, Sequence, Tuple

import numpy as np
from tensorflow_serving.apis import inference_pb2, model_pb2, predict_pb2

from serving.model_server.errors import ServingError
from serving.model_server.servable import signatures
from serving.model_server.servable.loader import Servable
from serving.model_server.servable.tensors import ProtoInputs, to_tensor_proto


class Inputs(Protocol):
    """A Predict request's inputs as its front end received them."""

    size: int  # bytes on the wire

    def signature_not_found(self, name: str) -> ServingError:
        """The error for a signature the model does not have (worded per front end)."""

    def decode(self, signature, max_elements: int) -> Dict[str, np.ndarray]:
        """The inputs by alias, as arrays of the signature's dtypes."""


@dataclasses.dataclass
class PredictCall:
    """A Predict request: the model spec (name, version or label, signature name), the
    inputs, and the outputs wanted (all when empty)."""

    model_spec: model_pb2.ModelSpec
    inputs: Inputs
    output_filter: Sequence[str] = ()
    spec_given: bool = True  # False: a PredictRequest with no model_spec at all

    @classmethod
    def from_request(cls, request: predict_pb2.PredictRequest, size: int = 0) -> "PredictCall":
        """A PredictRequest proto (gRPC, a front-end worker, warmup); `size`: its bytes on
        the wire."""
        return cls(request.model_spec, ProtoInputs(request.inputs, size), request.output_filter,
                   request.HasField("model_spec"))


@dataclasses.dataclass
class PredictResult:
    """The version and signature that answered, and the outputs by alias."""

    model_spec: model_pb2.ModelSpec
    outputs: Dict[str, np.ndarray]

    def to_proto(self) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse(model_spec=self.model_spec)
        for alias, value in self.outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(value))
        return response


def answered_by(servable: Servable, signature_name: str) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=servable.name,
                               signature_name=signature_name or signatures.DEFAULT_SIGNATURE)
    spec.version.value = servable.version
    return spec


def predict_signature(call: PredictCall, signature_defs: Dict[str, object]) -> Tuple[str, object]:
    """(name, SignatureDef) of the signature a Predict names, from the ones a Predict may
    run; the front end's "not found" error when there is none."""
    name = call.model_spec.signature_name or signatures.DEFAULT_SIGNATURE
    sig = signature_defs.get(name)
    if sig is None:
        raise call.inputs.signature_not_found(name)
    return name, sig


def predict_plan(servable: Servable, call: PredictCall, check_method: bool,
                 max_elements: int) -> Tuple[str, signatures.PredictPlan]:
    """(signature name, what to run) for a Predict on `servable`."""
    name, sig = predict_signature(call, servable.runnable_signatures)
    signatures.check_predict_method(sig, check_method)
    inputs = call.inputs.decode(sig, max_elements)
    return name, signatures.predict_plan(sig, inputs, call.output_filter)


def run_predict(servable: Servable, call: PredictCall, check_method: bool,
                max_elements: int) -> Dict[str, np.ndarray]:
    """Predict on a held version, blocking (warmup): outputs by alias."""
    _, plan = predict_plan(servable, call, check_method, max_elements)
    return plan.response_tensors(servable.run(plan.feeds, plan.fetches))


def run_classify(servable: Servable, signature_name: str, input_proto, check_method: bool,
                 timeout: Optional[float] = None):
    return _run_examples(servable, signature_name, input_proto, check_method, timeout,
                         signatures.classification_tensors, signatures.classification_result)


def run_regress(servable: Servable, signature_name: str, input_proto, check_method: bool,
                timeout: Optional[float] = None):
    return _run_examples(servable, signature_name, input_proto, check_method, timeout,
                         signatures.regression_tensors, signatures.regression_result)


def _run_examples(servable: Servable, signature_name: str, input_proto, check_method, timeout,
                  tensors_of, result_of):
    """Classify or Regress: the signature's tensors, one run on the serialized examples,
    the result made from its outputs. (signature name, result)."""
    name, sig = signatures.find_signature(servable.signature_defs, signature_name,
                                          "No signature was found with the name: ")
    input_name, fetches = tensors_of(sig, check_method)
    examples = signatures.serialize_examples(input_proto)
    outputs = servable.run({input_name: examples}, fetches, timeout)
    return name, result_of(sig, len(examples), outputs)


def run_multi_inference(servable: Servable, request, check_method: bool,
                        timeout: Optional[float] = None) -> inference_pb2.MultiInferenceResponse:
    """All tasks in one Session run (TensorFlowMultiInferenceRunner)."""
    input_names, fetches, resolved = signatures.multi_inference_tensors(
        servable.signature_defs, request.tasks, check_method)
    examples = signatures.serialize_examples(request.input)
    outputs = servable.run(dict.fromkeys(input_names, examples), fetches, timeout)
    response = inference_pb2.MultiInferenceResponse()
    for task, (name, sig) in zip(request.tasks, resolved):
        result = response.results.add()
        if task.method_name == signatures.CLASSIFY_METHOD:
            result.classification_result.CopyFrom(
                signatures.classification_result(sig, len(examples), outputs))
        else:
            result.regression_result.CopyFrom(
                signatures.regression_result(sig, len(examples), outputs))
        result.model_spec.CopyFrom(answered_by(servable, name))
    return response
