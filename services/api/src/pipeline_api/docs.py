"""The API's interactive documentation, ``/docs`` and ``/redoc``, and the gateway's icon: nothing loaded from elsewhere.

FastAPI's own documentation pages load Swagger UI and ReDoc from a CDN, ReDoc's
fonts from Google and the icon from FastAPI's site: without internet they are
blank. Here the same pages (FastAPI's ``get_swagger_ui_html`` and
``get_redoc_html``) point at assets served by the gateway itself.

Where the assets come from: the PyPI package ``fastapi-offline`` ships Swagger
UI's and ReDoc's browser bundles (Swagger UI under Apache-2.0, ReDoc and the
package under MIT) and is locked in uv.lock like any dependency, so an update is
a reviewed lock change, not files copied by hand. Only its files are used: its
``FastAPIOffline()`` builds the FastAPI app, which :func:`pipeline_api.app.create_app`
builds with its own settings. The files are read once, when the gateway is
built, so a missing one stops it at start rather than blanking a page later.

The routes are plain Starlette routes, as FastAPI's own documentation routes
are: public, outside the OpenAPI document, and only on the gateway's main
listener (the callback listener serves none of them).
"""

from __future__ import annotations

import importlib.resources
from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response

#: Where the documentation's assets are served, below the gateway's root.
ASSETS_PATH: Final = "/docs/assets"
#: The assets, by the name they are served under, with their media types.
ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
}
#: The gateway's icon, shipped with its web page; also answered at /favicon.ico, where browsers look unasked.
ICON_FILE: Final = "ui/static/favicon.svg"
ICON_URL: Final = "/favicon.ico"
#: Swagger UI's default sends the OpenAPI document's URL to swagger.io's validator for a badge; no request leaves.
SWAGGER_UI_PARAMETERS: Final = {"validatorUrl": None}
#: The pages may load only from the gateway: a bundle that reaches out anyway (ReDoc's footer fetches its
#: logo from its CDN) is stopped by the browser. Inline script and styles: FastAPI's pages start the
#: bundles with an inline script, and both bundles style with inline styles; blob: workers are ReDoc's search.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS: Final = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
#: The files change only with the installed package: browsers may keep them a day.
ASSET_HEADERS: Final = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}


def icon() -> bytes:
    """The gateway's icon (SVG), as the web page and /favicon.ico serve it."""
    return importlib.resources.files("pipeline_api").joinpath(ICON_FILE).read_bytes()


def add_documentation(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc``, their assets and ``/favicon.ico`` on ``app`` (made with docs_url=redoc_url=None)."""
    bundled = importlib.resources.files("fastapi_offline").joinpath("static")
    assets = {name: bundled.joinpath(name).read_bytes() for name in ASSETS}
    favicon = icon()
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title}: Swagger UI",
            oauth2_redirect_url=root + oauth2_redirect_url,
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=root + ICON_URL,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
        page.headers.update(PAGE_HEADERS)
        return page

    async def oauth2_redirect(_: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title}: ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=root + ICON_URL,
            with_google_fonts=False,
        )
        page.headers.update(PAGE_HEADERS)
        return page

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            raise HTTPException(404, f"no documentation asset {name!r}")
        return Response(assets[name], media_type=ASSETS[name], headers=ASSET_HEADERS)

    async def favicon_ico(_: Request) -> Response:
        return Response(favicon, media_type="image/svg+xml", headers=ASSET_HEADERS)

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(oauth2_redirect_url, oauth2_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    app.add_route(ASSETS_PATH + "/{name}", asset, include_in_schema=False)
    app.add_route(ICON_URL, favicon_ico, include_in_schema=False)
