"""The app `vaelab ui` serves: MLflow's own server app, read-only, opening in model-training mode.

Registered as an `mlflow.app` plugin (`vaelab-readonly`, in pyproject.toml), the way MLflow's
basic-auth app is, so `mlflow server --app-name vaelab-readonly` runs it. Reading works as in
MLflow's UI; anything that would change the store (create, update or delete a run, an experiment
or a model, upload or delete an artifact) is answered 403 before it reaches MLflow. MLflow's UI
reads through a few POSTs: searches, and GraphQL, whose only mutations are searches too.

MLflow 3's UI opens every experiment in its GenAI mode (Traces, Judges, "Agent versions") unless
the browser has stored another workflow type (localStorage `mlflow.workflowType_v1`); no tag or
server setting changes that. The page the UI starts from gets one line that stores
"machine_learning" when nothing is stored yet: a fresh browser opens vaelab's runs as model
training, and the toggle in the sidebar still switches (and is remembered) as in MLflow.
"""

from __future__ import annotations

import json
import re

from mlflow.server.fastapi_app import app as mlflow_app

READS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_POSTS = re.compile(
    r"/graphql|/(ajax-)?api/[23]\.0/?mlflow/"
    r"([\w-]+/)*(search|search-datasets|get-latest-versions|batchGetInfos|metrics|calculate-filter-correlation)"
)
WORKFLOW = (b"<script>if(!localStorage.getItem('mlflow.workflowType_v1'))"
            b"localStorage.setItem('mlflow.workflowType_v1','\"machine_learning\"')</script>")
DENIED = json.dumps({
    "error_code": "PERMISSION_DENIED",
    "message": "vaelab ui serves this store read-only: runs are written by vaelab itself",
}).encode()


class ReadOnly:
    """ASGI middleware: requests that read pass on to `app`; the rest get 403."""

    def __init__(self, app) -> None:  # noqa: ANN001 - any ASGI app
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - the ASGI signature
        if scope["type"] == "http" and not reads(scope["method"], scope["path"]):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(DENIED)).encode())]})
            await send({"type": "http.response.body", "body": DENIED})
            return
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in ("/", "/index.html"):
            await self.app(scope, receive, model_training(send))
            return
        await self.app(scope, receive, send)


def model_training(send):  # noqa: ANN001, ANN201 - an ASGI send callable in and out
    """`send` for the UI's start page, with WORKFLOW first in its <head>."""
    start: dict = {}
    body = bytearray()

    async def sending(message: dict) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
            return
        body.extend(message.get("body", b""))
        if message.get("more_body"):
            return
        page = bytes(body).replace(b"<head>", b"<head>" + WORKFLOW, 1)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(page)).encode())]})
        await send({"type": "http.response.body", "body": page})

    return sending


def reads(method: str, path: str) -> bool:
    """Whether a request only reads the store."""
    return method in READS or (method == "POST" and READ_POSTS.fullmatch(path) is not None)


app = ReadOnly(mlflow_app)
