"""``/docs``: the API's endpoints as a plain page made from its own OpenAPI document, with nothing from a CDN.

FastAPI's Swagger page loads its script from a public CDN, which a firm's locked-down server cannot reach and
which would run third-party code beside the tokens; this page is rendered here and needs no script at all.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

STYLE = ("body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1d2430}"
         "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;"
         "border-bottom:1px solid #d8dde6;vertical-align:top}code{font-size:14px}")
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"}


def _rows(spec: dict[str, Any]) -> str:
    rows = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            summary = op.get("summary", "")
            description = (op.get("description") or "").split("\n\n")[0]
            rows.append(f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}"
                        f"</code></td><td>{html.escape(summary)}<br><small>{html.escape(description)}</small></td>"
                        "</tr>")
    return "".join(rows)


def mount_docs(app: FastAPI) -> None:
    """Serve the page at /docs; the machine-readable document stays at /openapi.json."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        spec = app.openapi()
        title = html.escape(f"{spec['info']['title']} {spec['info']['version']}")
        page = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{title}</title><style>{STYLE}</style>"
                f"<h1>{title}</h1><p>Every endpoint but <code>/health</code> needs "
                "<code>Authorization: Bearer &lt;token&gt;</code> (<code>ledgerlink api token</code>). The full "
                "schema: <a href=/openapi.json>/openapi.json</a>.</p><table><thead><tr><th>Method<th>Path"
                f"<th>What it does</thead><tbody>{_rows(spec)}</tbody></table></html>")
        return HTMLResponse(page, headers=HEADERS)
