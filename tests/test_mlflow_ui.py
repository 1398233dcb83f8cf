"""pgsweep's MLflow server app (`mlflow ui --app-name pgsweep`, pgsweep/mlflow_ui.py): MLflow's
own server whose index page stores the model-training view in a browser that stored none.

No browser here: that the UI then opens experiments in their Runs table was seen in
Chromium (README); tests/test_query.py checks the key and value against the installed
MLflow's bundle. These check the entry point, the page a real server sends, and that
everything else it serves is MLflow's as before."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import mlflow

from pgsweep.mlflow_ui import (
    MODEL_TRAINING_WORKFLOW_TYPE, WORKFLOW_TYPE_STORAGE_KEY, default_view_script, ui_app, with_default_view,
)
from servers import mlflow_server, rest

BUILD = Path(mlflow.__file__).parent / "server" / "js" / "build"


def test_the_app_is_registered_under_mlflow_app_and_resolves_to_a_factory():
    from mlflow.server import _find_app, _is_factory
    from mlflow.utils.plugins import get_entry_points

    (entry,) = [e for e in get_entry_points("mlflow.app") if e.name == "pgsweep"]
    assert entry.value == "pgsweep.mlflow_ui:ui_app" and entry.load() is ui_app
    # what `mlflow server --app-name pgsweep` looks up, and runs with uvicorn --factory
    assert _find_app("pgsweep") == entry.value and _is_factory(entry.value)


def test_the_script_stores_model_training_only_where_no_view_is_stored_and_precedes_the_bundle():
    key, stored = json.dumps(WORKFLOW_TYPE_STORAGE_KEY), json.dumps(json.dumps(MODEL_TRAINING_WORKFLOW_TYPE))
    assert default_view_script() == (f"<script>try{{if(localStorage.getItem({key})===null)"
                                     f"localStorage.setItem({key},{stored})}}catch(e){{}}</script>")
    assert stored == r'"\"machine_learning\""'  # the text JSON.stringify("machine_learning") writes
    index = (BUILD / "index.html").read_text()
    page = with_default_view(index)
    assert page.replace(default_view_script(), "", 1) == index
    assert page.index(default_view_script()) < page.index("<script defer")


def _get(url: str, **headers) -> tuple[int, object, bytes]:  # headers: case-insensitive
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:  # a 304 comes as one
        return error.code, error.headers, error.read()


def test_a_real_mlflow_ui_serves_the_script_and_otherwise_what_mlflow_serves(tmp_path):
    """`mlflow ui --app-name pgsweep` (make ui's app) on a free port: its index page is
    MLflow's with the script before the bundle, the bundle and the REST API are as before."""
    from mlflow.server import app as plain_app  # MLflow's own Flask app, here unchanged

    plain = plain_app.test_client().get("/")
    index = (BUILD / "index.html").read_text()
    with mlflow_server(tmp_path, f"sqlite:///{tmp_path}/m.db", command="ui") as uri:
        status, headers, body = _get(uri + "/")
        page = body.decode()
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.count(default_view_script()) == 1 and f'"{WORKFLOW_TYPE_STORAGE_KEY}"' in page
        assert page.replace(default_view_script(), "", 1) == index  # the bundle references unchanged
        assert page.index(default_view_script()) < page.index("<script defer")
        assert headers["Cache-Control"] == plain.headers["Cache-Control"] == "no-cache"
        # its own ETag: a browser's copy of the plain page is sent again, with the script
        assert _get(uri + "/", **{"If-None-Match": plain.headers["ETag"]})[0] == 200
        assert _get(uri + "/", **{"If-None-Match": headers["ETag"]})[0] == 304

        for path in re.findall(r'(?:src|href)="\.?/?(static-files/[^"]+)"', index):
            status, _, content = _get(f"{uri}/{path}")
            assert status == 200 and content == (BUILD / path.removeprefix("static-files/")).read_bytes(), path

        assert _get(uri + "/health")[2] == b"OK"
        assert _get(uri + "/version")[2].decode() == mlflow.__version__
        created = rest(uri, "experiments/create", {"name": "ui"})["experiment_id"]
        names = {e["name"] for e in rest(uri, "experiments/search", max_results=10)["experiments"]}
        assert names == {"Default", "ui"}
        ajax = f"{uri}/ajax-api/2.0/mlflow/experiments/get?experiment_id={created}"
        assert json.loads(_get(ajax)[2])["experiment"]["name"] == "ui"
