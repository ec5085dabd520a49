"""The example app of ``pserve development.ini``: a page that queues jobs.

``main`` is the ``paste.app_factory`` ``egg:pyramid_zcasync#demo``.  The
app is an ordinary Pyramid app that includes ``pyramid_zcasync``; what it
adds is a session (the CSRF token lives there, signed with the
``demo.secret`` setting), CSRF checks on every POST, an admin login
(:mod:`.auth`: user ``admin``, password ``demo.admin_password``) so that
the admin views can be seen, and the recent-jobs list of :mod:`.recent`.
:func:`configure` returns the Configurator unfinished, so tests (or a
larger app) can add views of their own.
"""
from __future__ import annotations

from typing import Any, Dict

from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.session import SignedCookieSessionFactory

from ..config import queue_database
from . import recent
from .auth import DemoSecurityPolicy, admin_password

#: Setting holding the secret that signs the session cookie.
SECRET_SETTING = 'demo.secret'


def configure(settings: Dict[str, Any]) -> Configurator:
    """The demo's configuration, before ``make_wsgi_app``."""
    secret = str(settings.get(SECRET_SETTING) or '').strip()
    if not secret:
        raise ConfigurationError(
            'pyramid_zcasync demo: %s is not set; it signs the session '
            'cookie holding the CSRF token (any long random string, e.g. '
            'from: python -c "import secrets; print(secrets.token_hex())")'
            % SECRET_SETTING)
    password = admin_password(settings)
    # Its pages escape every value as the admin pages do (control and
    # bidi characters made visible too), unless the ini says otherwise.
    settings = {'jinja2.finalize': 'pyramid_zcasync.views.pages.shown',
                **settings}
    config = Configurator(settings=settings)
    config.include('pyramid_jinja2')
    config.set_session_factory(SignedCookieSessionFactory(
        secret, httponly=True, samesite='Lax'))
    config.set_default_csrf_options(require_csrf=True)
    config.include('pyramid_zcasync')
    policy = DemoSecurityPolicy(
        password, config.registry.zcasync_settings.admin_permission)
    config.set_security_policy(policy)
    config.registry.demo_security_policy = policy
    recent.install(queue_database(config.registry))
    config.include('pyramid_zcasync.demo.views')
    config.include('pyramid_zcasync.demo.login')
    return config


def main(global_config: Dict[str, Any], **settings: Any) -> Any:
    """``paste.app_factory``: the WSGI app for pserve."""
    # pyramid_zcasync resolves relative paths (the default UUID file)
    # against the ini file's directory, which paste gives here only.
    if global_config and 'here' in global_config:
        settings.setdefault('here', global_config['here'])
    return configure(settings).make_wsgi_app()
