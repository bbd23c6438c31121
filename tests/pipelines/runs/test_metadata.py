"""What the project writes to ML Metadata: runs that no TFX orchestrator records as one."""

from __future__ import annotations

from ml_metadata.proto import metadata_store_pb2

from pipelines.runs import metadata


def test_a_created_run_holds_the_executions_added_to_it(tmp_path):
    path = tmp_path / "new" / "metadata.sqlite"
    path.parent.mkdir()
    store = metadata.open_store(path, create=True)
    type_id = store.put_execution_type(metadata_store_pb2.ExecutionType(name="Trainer"))
    ids = store.put_executions([metadata_store_pb2.Execution(type_id=type_id) for _ in range(3)])

    run = metadata.create_run(store, "2026-11-25T10:00:00")
    metadata.add_to_run(store, run, ids[1:])

    reopened = metadata.open_store(path)
    [context] = metadata.run_contexts(reopened)
    assert context.name == "2026-11-25T10:00:00"
    assert sorted(e.id for e in reopened.get_executions_by_context(context.id)) == ids[1:]
