"""The web page's pages, one module per page (as datasette keeps its views): signing in, the list,
one pipeline, starting. Each adds its routes to the app :func:`pipeline_api.ui.app.create_ui_app` builds.
"""
