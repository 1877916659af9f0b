"""A loopback stand-in for W&B's API: the GraphQL endpoint the SDK calls to create a sweep.

It answers the two operations ``wandb.sweep`` makes — ``Viewer`` (login check) and ``UpsertSweep``
— checks HTTP basic auth (``api:<key>``, W&B's scheme) against the one key it was given, validates
the sweep config with W&B's own schema (``sweeps.schema_violations_from_proposed_config``) and
returns the violations as ``configValidationWarnings``, as W&B's server does.

It also answers what ``wandb.init`` / ``run.finish`` of an online run send: ``UpsertBucket`` (the
run, recorded in :attr:`WandbStandIn.runs` with the ``sweep`` it names — how W&B's server files a
run under a sweep), ``CreateRunFiles`` (upload URLs back to this server, whose PUTs it accepts) and
the run's ``file_stream``. Every request is recorded for the test to inspect. Anything else (the
SDK's telemetry, feature queries) gets an empty answer.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    operation: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)


class WandbStandIn:
    def __init__(self, *, api_key: str, entity: str = "team-a", default_project: str = "uncategorized",
                 refuse: bool = False) -> None:
        self.api_key = api_key
        self.entity = entity
        self.default_project = default_project
        self.refuse = refuse
        self.requests: list[Request] = []
        self.sweeps: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []  # one per UpsertBucket: the run's variables as sent
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                standin._handle(self, body)

            def do_PUT(self) -> None:  # noqa: N802 - a run file uploaded to the URL CreateRunFiles gave
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                standin._handle(self, body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WandbStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- requests --------------------------------------------------------------------------------
    def _authorized(self, headers: dict[str, str]) -> bool:
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        return headers.get("Authorization") == expected and not self.refuse

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = dict(handler.headers.items())
        request = Request(path=handler.path, headers=headers, body=body)
        with self._lock:
            self.requests.append(request)
        if handler.path.startswith("/files/") and handler.path.endswith("/file_stream"):
            return self._reply(handler, 200, b'{"exitcode": null, "limits": {}}')
        if handler.path != "/graphql":
            return self._reply(handler, 200, b"")
        if not self._authorized(headers):
            return self._reply(handler, 401, json.dumps({"errors": [{"message": "user is not logged in"}]}).encode())
        doc = json.loads(body)
        request.operation = doc.get("operationName") or ("UpsertSweep" if "upsertSweep" in doc["query"] else None)
        request.variables = doc.get("variables") or {}
        if "viewer" in doc["query"] and "upsertSweep" not in doc["query"]:
            data: dict[str, Any] = {"viewer": {"id": "VXNlcjox", "entity": self.entity, "username": "researcher",
                                               "email": None, "flags": "{}", "teams": {"edges": []}}}
        elif "upsertSweep" in doc["query"]:
            data = {"upsertSweep": self._upsert(request.variables)}
        elif "upsertBucket" in doc["query"]:
            data = {"upsertBucket": self._upsert_run(request.variables)}
        elif "createRunFiles" in doc["query"]:
            v = request.variables
            data = {"createRunFiles": {"runID": "UnVuOjE=", "uploadHeaders": [], "files": [
                {"name": name, "uploadUrl": f"{self.url}/upload/{v['entity']}/{v['project']}/{v['run']}/{name}"}
                for name in v.get("files") or []]}}
        else:
            data = {}
        self._reply(handler, 200, json.dumps({"data": data}).encode())

    def _upsert(self, variables: dict[str, Any]) -> dict[str, Any]:
        from sweeps.config import schema_violations_from_proposed_config

        config = yaml.safe_load(variables["config"])
        with self._lock:
            name = f"sw{len(self.sweeps):06d}"
            project = variables.get("projectName") or self.default_project
            entity = variables.get("entityName") or self.entity
            self.sweeps.append({"name": name, "config": config, "entity": entity, "project": project,
                                "variables": variables})
        return {
            "sweep": {"name": name, "project": {"id": "UHJvamVjdDox", "name": project,
                                                "entity": {"id": "RW50aXR5OjE=", "name": entity}}},
            "configValidationWarnings": schema_violations_from_proposed_config(config),
        }

    def _upsert_run(self, variables: dict[str, Any]) -> dict[str, Any]:
        entity = variables.get("entity") or self.entity
        project = variables.get("project") or self.default_project
        with self._lock:
            self.runs.append(dict(variables))
        return {"inserted": True, "bucket": {
            "id": "UnVuOjE=", "name": variables.get("name"), "displayName": variables.get("displayName"),
            "description": None, "config": variables.get("config") or "{}", "sweepName": variables.get("sweep"),
            "historyLineCount": 0,
            "project": {"id": "UHJvamVjdDox", "name": project, "entity": {"id": "RW50aXR5OjE=", "name": entity}}}}

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
