"""The demo's admin login, so that ``pserve development.ini`` shows the
admin views (``/_async/...``) and not only a 403.

One user, ``admin``, whose password is the ``demo.admin_password``
setting.  A browser logs in through the small form at ``/login`` (the
session remembers it; the session cookie is already signed for the CSRF
token); a script or ``curl -u admin:PASSWORD`` sends HTTP basic auth.
The policy grants ``zcasync.admin_permission`` to that user and nothing
to anyone else, so an anonymous visitor still gets 401 (a basic-auth
challenge, with a link to the form) and the add-on's deny-by-default
stands.  This is a demonstration of wiring a policy, not an identity
system: a real app brings its own users.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Mapping, Optional, Union

from pyramid.exceptions import ConfigurationError
from pyramid.security import Allowed, Denied

#: The one user of the demo.
ADMIN_USER = 'admin'
#: Setting holding that user's password.
PASSWORD_SETTING = 'demo.admin_password'
#: The value production.ini ships with: refused, like an empty one.
PLACEHOLDER = 'change-me'
#: Session key marking a browser logged in through the form.
SESSION_KEY = 'pyramid_zcasync.demo.user'
#: Realm of the basic-auth challenge.
REALM = 'pyramid_zcasync demo'


def admin_password(settings: Mapping[str, Any]) -> str:
    """The configured password; start-up stops on a missing one or on the
    placeholder production.ini ships, rather than serving a known one."""
    password = str(settings.get(PASSWORD_SETTING) or '').strip()
    if not password or password == PLACEHOLDER:
        raise ConfigurationError(
            'pyramid_zcasync demo: %s = %r: set the password of the demo '
            'user %r (who may browse /_async/*) to a value of your own; '
            'the demo refuses to start without one or with the shipped '
            'placeholder %r' % (PASSWORD_SETTING, password, ADMIN_USER,
                                PLACEHOLDER))
    return password


def basic_credentials(request: Any) -> Optional[tuple]:
    """(user, password) from an ``Authorization: Basic`` header, or None
    for a missing or malformed one (treated as anonymous)."""
    header = request.headers.get('Authorization', '')
    scheme, _, encoded = header.partition(' ')
    if scheme.lower() != 'basic':
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.decode('utf-8').partition(':')
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class DemoSecurityPolicy:
    """``admin`` by session (the login form) or by basic auth; grants the
    admin permission to ``admin`` only."""

    def __init__(self, password: str, permission: str) -> None:
        self._password = password.encode('utf-8')
        self.permission = permission

    def check(self, user: str, password: str) -> bool:
        """Constant-time comparison: a wrong guess takes as long as any."""
        good_password = hmac.compare_digest(password.encode('utf-8'),
                                            self._password)
        return user == ADMIN_USER and good_password

    def identity(self, request: Any) -> Optional[str]:
        if request.session.get(SESSION_KEY) == ADMIN_USER:
            return ADMIN_USER
        credentials = basic_credentials(request)
        if credentials is not None and self.check(*credentials):
            return ADMIN_USER
        return None

    def authenticated_userid(self, request: Any) -> Optional[str]:
        return self.identity(request)

    def permits(self, request: Any, context: Any, permission: Any
                ) -> Union[Allowed, Denied]:
        if permission != self.permission:
            return Denied('the demo grants %r only' % self.permission)
        if self.identity(request) == ADMIN_USER:
            return Allowed('logged in as %s' % ADMIN_USER)
        return Denied('not logged in as %s' % ADMIN_USER)

    def remember(self, request: Any, userid: str, **kw: Any) -> list:
        request.session[SESSION_KEY] = userid
        return []

    def forget(self, request: Any, **kw: Any) -> list:
        request.session.pop(SESSION_KEY, None)
        return []
