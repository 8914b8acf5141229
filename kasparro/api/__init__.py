"""Register the HTTP API: OpenAPI document and docs, blueprints, JSON errors and request-id hooks.

Reads (/data, /assets, /raw, /news, /sources, /runs, /rejects, /anomalies, /drift, /stats) are open unless READS_REQUIRE_KEY is set; writes
(POST /run-etl, /runs, /backfill, /reprocess, /replay-rejects) always need X-API-Key; /health, /health/live, /metrics, /docs and
/openapi.json are always open.
"""
from __future__ import annotations

from typing import Any

import flask_smorest
from flask import Flask, Response, send_from_directory

from kasparro import catalog
from kasparro.api import envelope, errors
from kasparro.api.auth import API_KEY_HEADER, SECURITY_SCHEME
from kasparro.api.schemas import ErrorSchema
from kasparro.errors import SourceConfigError

CDN_SWAGGER_UI = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/"
LOCAL_SWAGGER_UI = "/docs/assets/"
DESCRIPTION = (
    "Crypto market data from several sources, unified per asset, with the ETL runs that produced it.\n\n"
    "Every response is `{\"data\": ..., \"meta\": {request_id, api_latency_ms, ...}}`; errors are "
    "`{\"error\": {code, message, fields}, \"meta\": ...}`. Lists page with opaque keyset cursors: pass "
    "`meta.next_cursor` as `?cursor=` with the same filters. Writes need the `X-API-Key` header; reads "
    "need it only when the deployment sets READS_REQUIRE_KEY."
)
DEFAULTS: dict[str, Any] = {
    "API_TITLE": "Kasparro ETL API",
    "API_VERSION": "1.0.0",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
}


class Api(flask_smorest.Api):
    """flask-smorest's Api with the project's error shape in the document and in responses."""

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        errors.init_app(self._app)


def _swagger_ui_assets() -> str | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return str(swagger_ui_path)


def _serve_docs_offline(app: Flask, assets: str) -> None:
    def docs_asset(filename: str) -> Response:
        return send_from_directory(assets, filename, max_age=86400)

    app.add_url_rule(LOCAL_SWAGGER_UI + "<path:filename>", "docs_asset", docs_asset)


def _spec_options(app: Flask) -> dict[str, Any]:
    options: dict[str, Any] = {"info": {"description": DESCRIPTION}}
    if app.config.get("READS_REQUIRE_KEY"):
        # Every operation needs the key unless it says otherwise (health, live, metrics).
        options["security"] = [{SECURITY_SCHEME: []}]
    return options


def _document_metrics(app: Flask, api: Api) -> None:
    rule = next((r for r in app.url_map.iter_rules() if r.rule == "/metrics"), None)
    if rule is None:
        return
    api.spec.path(rule=rule, operations={"get": {
        "tags": ["health"], "summary": "Prometheus metrics (text exposition format).", "security": [],
        "responses": {"200": {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }})


def _document_declared_sources(app: Flask, api: Api) -> None:
    # The names POST /run-etl and /runs accept come from SOURCES_FILE, so the schema learns them here;
    # a client generated from the document then cannot send a name the server refuses.
    try:
        names = sorted(catalog.declared_sources(app.config))
    except SourceConfigError:
        return  # a broken sources file fails every run anyway, and says why
    request_schema = api.spec.components.schemas.get("RunRequest")
    if names and isinstance(request_schema, dict):
        request_schema["properties"]["sources"]["items"]["enum"] = names
    able = catalog.backfill_sources(app.config)
    for schema, allowed in (("BackfillRequest", able), ("ReprocessRequest", names), ("ReplayRequest", names)):
        properties = (api.spec.components.schemas.get(schema) or {}).get("properties", {})
        if allowed and "source" in properties:
            properties["source"]["enum"] = allowed


def init_app(app: Flask) -> None:
    """Register the API, its OpenAPI document and docs, error handlers and request hooks."""
    from kasparro.api import (anomalies, bodies, data, drift, health, news, raw, reads, rejects, repair, runs, sources,
                              stats)

    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    assets = _swagger_ui_assets()
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", LOCAL_SWAGGER_UI if assets else CDN_SWAGGER_UI)
    if assets and app.config["OPENAPI_SWAGGER_UI_URL"] == LOCAL_SWAGGER_UI:
        _serve_docs_offline(app, assets)
    envelope.init_app(app)
    bodies.init_app(app)
    reads.init_app(app)
    api = Api(spec_kwargs=_spec_options(app))
    api.init_app(app)
    api.spec.components.security_scheme(SECURITY_SCHEME, {"type": "apiKey", "in": "header", "name": API_KEY_HEADER})
    for module in (data, raw, news, sources, runs, repair, rejects, anomalies, drift, stats, health):
        api.register_blueprint(module.blp)
    _document_metrics(app, api)
    _document_declared_sources(app, api)
    app.extensions["kasparro_api"] = api
