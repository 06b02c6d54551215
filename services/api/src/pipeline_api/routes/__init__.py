"""The JSON API's routes, one router per resource: pipelines (start and decide), the index (list and
timeline, with their streams), jobs, the public listener's callbacks and notifications, and health.

Routes do HTTP only: they take what :mod:`pipeline_api.deps` hands them and call the domain.
"""
