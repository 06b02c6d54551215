"""Who is calling: API keys (:mod:`.keys`), OIDC tokens (:mod:`.oidc`), the principal they name
(:mod:`.principals`) and the :class:`~.authenticator.Authenticator` that turns a credential into one.

Deciding what a principal may do is the domain's (:mod:`pipeline_api.domain.access`); asking for
credentials on each request is the dependencies' (:mod:`pipeline_api.deps`). Imports nothing here,
so that the domain can use :mod:`.principals` without pulling in HTTP.
"""
