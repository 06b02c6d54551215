"""The gateway's web page, ``/ui``: sign in, list pipelines, follow one, start, cancel, repair, abandon.

Server-rendered (Jinja2), with htmx for the parts that update live; no
build step, readable without JavaScript. See :mod:`.app` for the app, :mod:`.pages` for the pages (one module each),
:mod:`.asking` for who is asking, :mod:`.rendering` for templates,
:mod:`.sessions` for sign-in and CSRF, :mod:`.sign_outs` for the sessions
signed out (kept on the server), :mod:`.views` for what the pages
work out from the gateway's documents.
"""

from .app import create_ui_app
from .asking import PublicPage

__all__ = ["PublicPage", "create_ui_app"]
