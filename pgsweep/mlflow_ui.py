"""pgsweep's MLflow server app: MLflow's own, with its UI opening experiments in the model-training view.

    mlflow ui --app-name pgsweep ...        (make ui)
    mlflow server --app-name pgsweep ...    (README, docker/docker-compose.yml)

MLflow finds the app by name in the entry point group `mlflow.app` (pyproject.toml). It is
MLflow's own server, unchanged, except for the UI's index page (the Flask endpoint `serve`,
`/` or STATIC_PREFIX/): that page carries one inline script, run before MLflow's bundle,
that stores the model-training view in the browser's localStorage when no view is stored
there yet. MLflow 3.17.2's UI opens an experiment in its GenAI view or its model-training
view by a link's `workflowType`, else by that stored value (its sidebar switch, *GenAI /
Model training*), else GenAI; it does not read the experiment kind tag pgsweep sets
(pgsweep.tracking.EXPERIMENT_KIND_TAG). So a new browser opens experiments in their Runs
table, and a browser whose user picked GenAI in the switch keeps GenAI.

Its own module, not in pgsweep.tracking (otherwise the only package that imports mlflow):
the `mlflow` command and each server worker import this module, and pgsweep.tracking
imports torch (about 225 MiB more in each of the server's two processes) and sets
MLFLOW_LOGGING_LEVEL, which the server workers would inherit. This module imports only
the standard library until the server calls ui_app.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

# The UI's stored view: its bundle keeps `useLocalStorage({key: "mlflow.workflowType",
# version: 1})` under "mlflow.workflowType_v1", written with JSON.stringify (so the stored
# text is "machine_learning" in double quotes), and its WorkflowType.MACHINE_LEARNING.
# tests/test_query.py checks both against the installed MLflow's bundle.
WORKFLOW_TYPE_STORAGE_KEY = "mlflow.workflowType_v1"
MODEL_TRAINING_WORKFLOW_TYPE = "machine_learning"

# first the bundle's <script src=...> tag (CRA's index.html loads it with defer in <head>)
_BEFORE = (re.compile(r"<script\b[^>]*\bsrc="), re.compile(r"</head>", re.I))


def default_view_script() -> str:
    """The inline script: store the model-training view unless the browser stored a view."""
    key = json.dumps(WORKFLOW_TYPE_STORAGE_KEY)
    value = json.dumps(json.dumps(MODEL_TRAINING_WORKFLOW_TYPE))  # the JS string '"machine_learning"'
    # try: a browser that refuses localStorage still gets MLflow's UI, as without this app
    return f"<script>try{{if(localStorage.getItem({key})===null)localStorage.setItem({key},{value})}}catch(e){{}}</script>"


def with_default_view(html: str) -> str:
    """index.html with the script placed before the bundle's script tag (else before </head>)."""
    for pattern in _BEFORE:
        found = pattern.search(html)
        if found:
            return html[: found.start()] + default_view_script() + html[found.start():]
    raise ValueError("MLflow's index.html has neither a <script src=...> tag nor </head>")


def ui_app():
    """The server app (an `mlflow.app` factory, called once in each server worker):
    MLflow's own app, the ASGI one under uvicorn (MLflow's default server) and the Flask
    one under gunicorn or waitress, as `--app-name basic-auth` decides, with `serve`
    replaced by a view that sends index.html with the script."""
    import io

    from flask import request, send_file

    import mlflow.server
    from mlflow.environment_variables import _MLFLOW_SGI_NAME

    flask_app = mlflow.server.app
    serve = flask_app.view_functions["serve"]
    if not getattr(serve, "pgsweep_default_view", False):  # once per process
        def serve_with_default_view():
            index = os.path.join(flask_app.static_folder, "index.html")
            if not os.path.isfile(index):  # a source install of MLflow: its own message
                return serve()
            with open(index, encoding="utf-8") as file:
                html = with_default_view(file.read()).encode()
            # send_from_directory's headers (no-cache, Last-Modified, an ETag, 304s), with an
            # ETag of its own: a browser's copy of the unchanged page never matches it
            return send_file(io.BytesIO(html), mimetype="text/html", download_name="index.html",
                             etag=hashlib.sha256(html).hexdigest()[:32],
                             last_modified=os.path.getmtime(index), conditional=True)

        serve_with_default_view.pgsweep_default_view = True
        flask_app.view_functions["serve"] = serve_with_default_view
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import app  # the app plain `mlflow server` runs under uvicorn

        return app
    return flask_app
