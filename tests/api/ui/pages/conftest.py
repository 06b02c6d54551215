"""The tests of each page of ui/pages/, one module a page; their fixtures are the ui folder's (../conftest.py)."""
