"""TFX pipeline definitions and their runners.

Layout. The base modules: `__main__.py` (the CLI, `python -m pipelines`; flags are parsed
there and only there), `config.py` (RunConfig, RetrainConfig: what a command line becomes)
and `outcomes.py` (how a run ends: outcomes and exit codes), `tfx_import.py` (TFX imported
without its unused cloud extensions, from this file). Then, from the lowest layer up:
- `models/`: model definitions: the contract every model meets (contract.py), the built-in
  models (half_plus_two.py, mnist.py), their wiring into TFX pipelines (standard.py,
  retraining_pipeline.py, resolvers.py), the registry that finds them, what a model's smoke
  check returns (smoke.py), and the model-project scaffold (scaffold.py, templates/);
- `runs/`: running a pipeline and keeping its record: the local runner (local.py), the
  Kubeflow compiler (kubeflow.py), ML Metadata (metadata.py) and the run history kept in it
  (history.py), one run recorded from its start to its outcome (record.py, for `run`,
  `retrain` and the notebook alike), the run's console and log (console.py), the model's
  run lock (lock.py), SIGTERM/SIGINT (interrupts.py), lineage fields (provenance.py);
- `operations/`: what the commands do around a run: one retraining (retrain.py), the
  retraining loop (schedule.py), the deployment of a push (post_push.py), the pipeline
  root's retention (retention.py);
- `notebook/`: notebook experiments (experiment.py) and their plots (plots.py).

LAYERS declares that order as data, lowest first: each entry names modules or subpackages
(space-separated dotted prefixes); a module imports only from its own layer or lower ones
(function-level imports included), and no modules import each other in a circle.
`__main__` is the top. components/ and serving/ are other packages, below all of these.
"""

LAYERS = (
    "pipelines.config pipelines.outcomes pipelines.tfx_import",
    "pipelines.models",
    "pipelines.runs",
    "pipelines.operations",
    "pipelines.notebook",
    "pipelines.__main__",
)

# Before any module here imports TFX: tfx.v1 without its unused Google Cloud extensions
# (about 3.5 s of every command's start; pipelines/tfx_import.py).
from pipelines.tfx_import import defer_cloud_extensions  # noqa: E402

defer_cloud_extensions()
