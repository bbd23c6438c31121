"""The lineage record a version carries: written atomically, read back, described."""

from __future__ import annotations

from serving import lineage


def test_a_record_round_trips_and_ignores_fields_it_does_not_know(tmp_path):
    record = lineage.Lineage(pipeline="mnist_retrain", run_id="r1", spans=[1, 2, 3, 5],
                             metrics={"accuracy": 0.99}, warm_start={"version": 4},
                             git_commit="abc", git_dirty=False)
    path = lineage.write(tmp_path, record)
    assert path == tmp_path / lineage.LINEAGE_FILE
    assert lineage.read(tmp_path) == record
    path.write_text(path.read_text().replace('"pipeline"', '"future_field": 1, "pipeline"'))
    assert lineage.read(tmp_path) == record
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_missing_or_unreadable_records_read_as_none(tmp_path):
    assert lineage.read(tmp_path) is None
    (tmp_path / lineage.LINEAGE_FILE).write_text("{not json")
    assert lineage.read(tmp_path) is None


def test_the_one_line_description_names_run_spans_warm_start_and_metrics():
    record = lineage.Lineage(run_id="r1", spans=[1, 2, 3, 5], metrics={"accuracy": 0.98765},
                             warm_start={"version": 4, "model_uri": "/m"})
    assert record.describe() == ("run r1, spans 1-3, 5, warm-started from version 4, "
                                 "accuracy 0.9877")
    assert lineage.span_ranges([4]) == "4"


def test_a_version_trained_with_another_profile_says_so_and_warns():
    record = lineage.Lineage(run_id="r1", profile="fast",
                             hyperparameters={"epochs": 2, "train_limit": 8000},
                             trainer_module="components/mnist_trainer.py")
    assert record.non_default_profile
    assert record.profile_warning("mnist", 3) == (
        "mnist version 3 was trained with the fast profile, not the default one "
        "(epochs=2, train_limit=8000), trainer components/mnist_trainer.py")
    assert record.describe() == "run r1, fast profile"
    for quiet in (lineage.Lineage(profile=lineage.DEFAULT_PROFILE),
                  lineage.Lineage()):  # a record from before profiles were recorded
        assert not quiet.non_default_profile and quiet.profile_warning("mnist", 1) is None
        assert "profile" not in quiet.describe()
