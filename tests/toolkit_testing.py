"""The one test-support module: CLIs run as a user runs them, Docker tests' requirements,
free ports, polling, model versions copied or published into a repository, and a real
model server process.

(conftest.py files only hold fixtures: with several conftest files in the tree,
`from conftest import ...` would pick whichever was imported first.) SavedModels to serve
are built by `saved_models`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import pytest

from components.infra_validation import preferred_image, serving_image_status

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"  # shared with `make pipeline`: MNIST is fetched once
SERVER_ENV = {
    # Bound the server's CPU use: the machine is shared with TFX training.
    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
}
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK_KERNEL = "tfx-serving-toolkit"  # the venv's kernel, as `make kernel` registers it
PARAMETERS_TAG = "parameters"  # papermill's convention, which Jupyter users know


def write_fake_saved_model(path: Path, payload: bytes = b"graph", variables_size: int = 16) -> Path:
    """The files a server looks for, with no TensorFlow: enough for repository tests."""
    (path / "variables").mkdir(parents=True, exist_ok=True)
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * variables_size)
    (path / "variables" / "variables.index").write_bytes(b"index")
    (path / "saved_model.pb").write_bytes(payload)
    return path


def publish_fake(repository, model: str, payload: bytes = b"graph",
                 variables_size: int = 16) -> int:
    """Publish a fake SavedModel (`write_fake_saved_model`) through `repository`; its version."""
    with repository.publish(model) as publication:
        write_fake_saved_model(publication.staging, payload, variables_size)
    return publication.version


def start_script(script: str, *args: str) -> subprocess.Popen:
    """`python -c script args...` from the repository root, with the project and the test
    support importable, its stdout a text pipe (for the lines it prints when ready)."""
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})


def run_script(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -c script` in a fresh interpreter from the repository root, its output
    captured: for what one process does once (imports, process-wide state)."""
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m <args>` the way a user or cron would, capturing its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def run_main(module: str, *args: str) -> subprocess.CompletedProcess:
    """`run_cli(module, *args)` in this process: `module.__main__.main(args)` with fds 1 and 2
    (and sys.stdout, sys.stderr) sent to files, as a child's would be. For the tests where
    a new process is not what is tested: TensorFlow and TFX are imported once, not per run.
    The signal handlers, environment and working directory main may change are restored."""
    import importlib
    import tempfile

    main = importlib.import_module(f"{module}.__main__").main
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    environ, cwd = dict(os.environ), os.getcwd()
    streams = sys.stdout, sys.stderr
    for stream in streams:
        stream.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = (io.TextIOWrapper(open(fd, "wb", closefd=False),
                                                   line_buffering=True) for fd in (1, 2))
        try:
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's usage errors and --help
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for s, handler in handlers.items():
                signal.signal(s, handler)
            os.environ.clear()
            os.environ.update(environ)
            os.chdir(cwd)
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
    return subprocess.CompletedProcess([module, *args], code, *texts)


def require_docker(config, need_image: bool = True) -> None:
    """Skip a docker test where no daemon (or image) is available, saying why; with
    `--require-docker` (as .ci/run passes) fail instead, so CI cannot pass by skipping."""
    reason = serving_image_status(test_image())
    if reason and (need_image or reason.startswith("no Docker daemon")):
        if config.getoption("require_docker"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_image() -> str:
    """The official image when present, else the stand-in from `make serving-image`."""
    return preferred_image()[0]


test_image.__test__ = False  # not a test


def free_port() -> int:
    """A loopback port nothing listens on now (the OS's next ephemeral one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = ""):
    """Poll `predicate` until truthy; return its value or fail the test with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


# ---- model versions -------------------------------------------------------------------

def copy_version(template: Path, base: Path, version) -> Path:
    """Copy a SavedModel into base/<version> in place (version may be "00000123"), as a
    user's `cp -r` does: not atomic, so only for a server that is not polling yet."""
    target = Path(base) / str(version)
    shutil.copytree(template, target)
    return target


def publish_copy(repo_root: Path, model: str, template: Path) -> Tuple[int, float]:
    """Publish a copy of `template` as the model's next version the Pusher's way (staging
    directory, then rename). Returns (version, monotonic time just after the rename)."""
    from serving.repository import ModelRepository

    with ModelRepository(repo_root).publish(model) as pub:
        shutil.copytree(template, pub.staging, dirs_exist_ok=True)
    return pub.version, time.monotonic()


def version_dirs(model_dir: Path) -> List[str]:
    """The version directories under a model's directory, sorted by name: published `N`,
    `.candidates/N`, `.rejected-N`, and any `.staging-*` left half-written; not the rollout
    record and the locks kept beside them. What a test asserts a push left behind."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    names = [p.name for p in model_dir.iterdir() if p.is_dir() and p.name != ".candidates"]
    candidates = model_dir / ".candidates"
    if candidates.is_dir():
        names += [f".candidates/{p.name}" for p in candidates.iterdir()]
    return sorted(names)


def served_labels(rest_url: str, model: str) -> Dict[str, Optional[int]]:
    """What a running server answers for `model`: the version its `stable` and `previous`
    labels name (GET /v1/models/M/labels/L/metadata; None where the label is not there),
    and `default`, the version a request naming no version gets."""
    from serving.lifecycle.sample import get_metadata

    answered: Dict[str, Optional[int]] = {}
    for key, label in (("stable", "stable"), ("previous", "previous"), ("default", None)):
        try:
            meta = get_metadata(rest_url, model, label=label)
        except Exception:  # noqa: BLE001 - a label the server does not have
            answered[key] = None
        else:
            answered[key] = int(meta["model_spec"]["version"])
    return answered


def write_models_config(root: Path, names) -> Path:
    """root/models.config: a model config file serving each of `names` from root/<name>."""
    path = Path(root) / "models.config"
    path.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{Path(root) / n}" model_platform: "tensorflow" }}\n'
        for n in names) + "}\n")
    return path


# ---- a real model server ----------------------------------------------------------------

class ServerProcess:
    """A `python -m serving.model_server` child process on free loopback ports.

    It waits until its ports accept connections (the server opens them only once its models
    are AVAILABLE, as tensorflow_model_server does: a readiness poll, not a sleep) and is
    stopped with SIGTERM.
    """

    def __init__(self, *flags: str, rest: bool = True, env: Optional[dict] = None):
        self.grpc_port = free_port()
        self.rest_port = free_port() if rest else 0
        self.flags = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                      "--host=127.0.0.1", "--tensorflow_intra_op_parallelism=1",
                      "--tensorflow_inter_op_parallelism=1", *flags]
        self.env = dict(os.environ, **SERVER_ENV, **(env or {}))
        self.proc: Optional[subprocess.Popen] = None
        self._lines: List[str] = []
        self._lock = threading.Lock()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> "ServerProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.model_server", *self.flags], cwd=ROOT, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        wait_until(lambda: text in self.output or self.exited(), timeout, what=f"log {text!r}")
        assert text in self.output, f"server exited before logging {text!r}:\n{self.output}"

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def wait_ready(self, timeout: float = 60.0) -> "ServerProcess":
        """Ready = the gRPC port accepts connections (opened only once models are loaded)."""
        def ready():
            if self.exited():
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output}")
            ports = [self.grpc_port] + ([self.rest_port] if self.rest_port else [])
            try:
                for port in ports:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        pass
            except OSError:
                return False
            return True
        wait_until(ready, timeout, interval=0.1, what="server ready")
        return self

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server did not exit on SIGTERM:\n{self.output}")


@contextlib.contextmanager
def running_servers() -> Iterator:
    """Yields start(*flags, wait=True, rest=True, env=None) -> ServerProcess; stops every
    server it started on exit. For fixtures of any scope."""
    servers: List[ServerProcess] = []

    def start(*flags: str, wait: bool = True, rest: bool = True, env=None) -> ServerProcess:
        server = ServerProcess(*flags, rest=rest, env=env).start()
        servers.append(server)
        return server.wait_ready() if wait else server

    try:
        yield start
    finally:
        for s in servers:
            s.stop()


def execute_notebook(path: Path, parameters: Dict[str, Any], timeout: float = 900):
    """Run a notebook headlessly with nbclient in a real kernel (the one its metadata names),
    as papermill does: `parameters` are set in a cell inserted after the cell tagged
    `parameters`. Returns the executed notebook; raises CellExecutionError at the first
    cell that fails."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(str(path), as_version=4)
    [index] = [i for i, cell in enumerate(notebook.cells)
               if PARAMETERS_TAG in cell.metadata.get("tags", [])]
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
        "\n".join(f"{name} = {value!r}" for name, value in parameters.items()),
        metadata={"tags": ["injected-parameters"]}))
    NotebookClient(notebook, timeout=timeout,
                   resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    return notebook


class MnistSeed(NamedTuple):
    """A weak MNIST model pushed as version 1 by the MNIST pipeline and recorded as `run`
    records its runs (see `seed_mnist`)."""
    root: Path
    config: Any  # pipelines.config.RunConfig

    def trained_model(self) -> Path:
        """The Trainer's output: the directory holding Format-Serving/, as an Importer or
        InfraValidator reads a Model artifact."""
        [trained] = (self.config.pipeline_dir("mnist") / "Trainer" / "model").glob(
            "*/Format-Serving")
        return trained.parent


def seed_config(root: Path):
    """The RunConfig of the MNIST seed built in `root`."""
    from pipelines.config import RunConfig

    return RunConfig(pipeline_root=root / "runs", repository=root / "repo", cache_dir=CACHE)


def seed_mnist(root: Path) -> MnistSeed:
    """Run the MNIST pipeline once, in this process, on a sliver of real MNIST (1,000 training
    images, one epoch: deliberately weak, so any fast-profile variant beats it) into
    `root`/runs and `root`/repo, deploy the pushed candidate as `run` does with no server up
    (promoted: `root`/repo/mnist/1, stable in its rollout record, not verified), and record
    the run in its history as `run` does."""
    from pipelines import outcomes
    from pipelines.models import mnist
    from pipelines.runs import history, local as local_runner
    from pipelines.operations import post_push
    from serving.repository import ModelRepository

    config = seed_config(root)
    weak = mnist.Profile(train_limit=1000, eval_limit=200, epochs=1, accuracy_gate=0.5)
    metadata_path = config.metadata_path(mnist.MODEL_NAME)
    result = local_runner.run_pipeline(
        mnist.build(config, profile=weak, lineage={"pipeline": mnist.MODEL_NAME}),
        model_name=mnist.MODEL_NAME, repository=ModelRepository(config.repository),
        metadata_path=metadata_path, out=io.StringIO())
    assert result.pushed and result.version == 1
    deployment = post_push.deploy(mnist.MODEL_NAME, result.version,
                                  ModelRepository(config.repository), root / "no-server",
                                  timeout=60, log=lambda line: None)
    assert deployment.status == post_push.NO_SERVER, deployment
    history.record_run(metadata_path, result.run_id, outcomes.PUSHED, "", result)
    return MnistSeed(root, config)


def record_finished_run(pipeline_root: Path, pipeline: str, run_id: str, outcome, result=None,
                        **facts) -> None:
    """A run of `pipeline` with its outcome recorded in its ML Metadata store under
    `pipeline_root`, as the runners record theirs (`facts`: record_run's keywords)."""
    from pipelines.runs import history, metadata
    from pipelines.config import RunConfig

    path = RunConfig(pipeline_root=pipeline_root).metadata_path(pipeline)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata.create_run(metadata.open_store(path, create=True), run_id)
    history.record_run(path, run_id, outcome, "", result, **facts)


# ---- usage errors -----------------------------------------------------------------------

HEAVY = ("tensorflow", "tfx", "apache_beam", "ml_metadata")


def usage_error(argv, capsys) -> str:
    """`python -m pipelines` main(argv) must exit 2 having imported nothing heavy; its
    stderr."""
    from pipelines import outcomes
    from pipelines.__main__ import main

    before = set(sys.modules)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == outcomes.USAGE.exit_code
    imported = {m.split(".")[0] for m in set(sys.modules) - before}
    assert not imported & set(HEAVY), imported & set(HEAVY)
    return capsys.readouterr().err
