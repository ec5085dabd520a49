"""An app with pyramid_zcasync and a minimal security policy, for the admin
view tests: the admin permission is granted to requests carrying the
header ``X-Admin: yes`` or the cookie ``admin=yes`` (what a browser test
sets)."""
from pyramid.config import Configurator
from pyramid.security import Allowed, Denied


class HeaderPolicy:
    """Grants everything to an admin; nothing to anyone else."""

    def identity(self, request):
        if request.headers.get('X-Admin') == 'yes' or \
                request.cookies.get('admin') == 'yes':
            return 'admin'
        return None

    def authenticated_userid(self, request):
        return self.identity(request)

    def permits(self, request, context, permission):
        if self.identity(request) == 'admin':
            return Allowed('admin')
        return Denied('not an admin')

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


ADMIN = {'X-Admin': 'yes'}


def make_admin_app(tmp_path, policy=True, **extra):
    settings = {
        'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
        'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
        'zcasync.poll_interval': '0.5',
    }
    settings.update(extra)
    with Configurator(settings=settings) as config:
        if policy:
            config.set_security_policy(HeaderPolicy())
        config.include('pyramid_zcasync')
        return config.make_wsgi_app()
