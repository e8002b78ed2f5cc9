"""``start --metrics-port P``: Prometheus ``/metrics`` and ``/healthz`` for the accounts.

Both read the database at each request through :mod:`ops_pipeline.services.operations`, so a scrape
shows what the database holds at that moment, and ``/healthz`` gives the verdict of
``ops-pipeline health`` (200 when no account that should run is stale, else 503).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ops_pipeline.services.operations import AccountsCollector, AccountStatus


def create_metrics_app(statuses: Callable[[], list[AccountStatus]]) -> FastAPI:
    """The app; ``statuses()`` reads every account's status now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AccountsCollector(statuses))
    app = FastAPI(title="ops-pipeline metrics", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        rows = statuses()
        body: dict[str, Any] = {
            "status": "stale" if any(r.health == "stale" for r in rows) else "ok",
            "accounts": {r.name: {"health": r.health, "state": r.state, "minutes_since_run": r.minutes_since_run}
                         for r in rows},
        }
        return JSONResponse(body, status_code=503 if body["status"] == "stale" else 200)

    return app
