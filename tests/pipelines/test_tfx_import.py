"""pipelines/tfx_import.py: `tfx.v1` imported by the toolkit leaves its Google Cloud
extensions (and the Vertex AI client) out until something uses them, and then they are
TFX's own."""

from toolkit_testing import run_script

CHECK = """
import sys
import pipelines  # what every command, test and notebook imports first
from tfx import v1 as tfx
assert "google.cloud.aiplatform" not in sys.modules, "imported at once"
from tfx.v1.extensions import google_cloud_big_query
import tfx.extensions.google_cloud_big_query.pusher.component as real
assert google_cloud_big_query.Pusher is real.Pusher
assert tfx.extensions.google_cloud_big_query is google_cloud_big_query
assert not hasattr(tfx.extensions, "no_such_extension")
print("ok")
"""


def test_cloud_extensions_are_imported_on_first_use_and_are_tfx_s_own():
    result = run_script(CHECK)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
