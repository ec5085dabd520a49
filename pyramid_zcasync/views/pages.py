"""The admin pages' templates: Jinja2, through pyramid_jinja2.

The environment is built with pyramid_jinja2's own helpers (its asset-
spec loader and its settings parser) but from fixed settings of ours, not
from the app's ``jinja2.*`` settings, and it is not registered as a
renderer: the host app's Jinja2 configuration (its filters, its
``autoescape = false``, its ``.jinja2`` renderer) must neither change nor
be changed by the admin pages.

Every value a template prints goes through :func:`.html.e`: HTML-escaped
*and* its control and bidi characters made visible, because a job's name,
arguments, result and failure are anyone's input (an U+202E must not
reorder the page).  This is the environment's ``finalize``, so it holds
for every ``{{ value }}`` without the template asking; only the markup of
our own macros passes through as is.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Optional

from markupsafe import Markup
from pyramid.path import DottedNameResolver
from pyramid.response import Response
from pyramid_jinja2 import (
    create_environment_from_options)
from pyramid_jinja2.settings import (
    parse_env_options_from_settings, parse_loader_options_from_settings)

from .html import e, secure

#: The prefix of our (fixed) pyramid_jinja2 settings.
PREFIX = 'zcasync.jinja2.'
#: Where the admin templates are.
TEMPLATES = 'pyramid_zcasync.views:templates'

_environment: Optional[Any] = None


def shown(value: Any) -> Markup:
    """What ``{{ value }}`` prints: our macros' markup as is, anything
    else escaped by :func:`.html.e`."""
    if isinstance(value, Markup):
        return value
    return Markup(e(value))


def settings() -> Dict[str, Any]:
    return {
        PREFIX + 'directories': TEMPLATES,
        PREFIX + 'autoescape': 'true',
        PREFIX + 'finalize': shown,
        PREFIX + 'undefined': 'strict',  # a misspelt name is an error
        PREFIX + 'trim_blocks': 'true',
        PREFIX + 'lstrip_blocks': 'true',
    }


def environment() -> Any:
    """The Jinja2 environment of the admin pages, built once."""
    global _environment
    if _environment is None:
        package = importlib.import_module(__package__ or 'pyramid_zcasync')
        resolve = DottedNameResolver(package).maybe_resolve
        fixed = settings()
        _environment = create_environment_from_options(
            parse_env_options_from_settings(fixed, PREFIX, resolve, package),
            parse_loader_options_from_settings(fixed, PREFIX, resolve,
                                               package))
    return _environment


def render(name: str, **values: Any) -> str:
    """The template ``name`` (under ``templates/``) filled with ``values``."""
    return str(environment().get_template(name).render(**values))


def page(name: str, status: int = 200, nonce: Optional[str] = None,
         **values: Any) -> Response:
    """A whole admin page, with the headers every admin page carries."""
    response = Response(render(name, nonce=nonce, **values), status=status,
                        content_type='text/html', charset='utf-8')
    secure(response, nonce)
    return response


#: The reason phrases of the admin pages' errors.
REASONS = {400: '400 Bad Request', 403: '403 Forbidden',
           404: '404 Not Found', 409: '409 Conflict'}


def error_page(status: int, message: str, back: str) -> Response:
    """An error for a person: what went wrong (``message``, escaped like
    every value) and a link back to ``back``."""
    return page('error.jinja2', status=status,
                reason=REASONS.get(status, str(status)), message=message,
                back=back)
