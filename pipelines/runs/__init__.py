"""Running a pipeline and keeping its record: the local runner (local.py) and the Kubeflow
compiler (kubeflow.py), ML Metadata (metadata.py) and the run history kept in it
(history.py), one run recorded start to outcome (record.py), the run's console and log
(console.py), the model's run lock (lock.py), SIGTERM/SIGINT handling (interrupts.py) and
the lineage fields a push records (provenance.py).
"""
