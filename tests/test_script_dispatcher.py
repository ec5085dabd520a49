"""Scripts and test suites written the Pyramid way start no dispatcher.

Real processes on a copy of the shipped development.ini
(``zcasync.dispatcher = true``): a script using
``pyramid.paster.bootstrap(ini)`` beside a running ``pserve`` on the same
UUID file runs and says in its log why it has no dispatcher; asked for
one with ``ZCASYNC_DISPATCHER=1`` it fails with a message saying what to
do; a project's pytest run building the app from the ini gets none.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from test_demo import processes, pserved, site  # noqa: F401

SCRIPT = textwrap.dedent('''\
    import sys
    from pyramid.paster import bootstrap, setup_logging
    from pyramid_zcasync import dispatcher

    setup_logging(sys.argv[1])
    with bootstrap(sys.argv[1]) as env:
        print('DISPATCHER', dispatcher.get())
        print('QUEUE', len(env['request'].async_queue))
''')

#: A project's own test, building its app from its ini as the Pyramid
#: cookiecutter's conftest does.
PROJECT_TEST = textwrap.dedent('''\
    import os
    from pyramid.paster import get_appsettings
    from pyramid_zcasync import demo, dispatcher
    from pyramid_zcasync.config import close_databases

    def test_app_from_the_ini_has_no_dispatcher():
        settings = get_appsettings(os.environ['INI'])
        app = demo.main({}, **settings)
        try:
            assert dispatcher.get() is None
            assert app.registry.zcasync_dispatcher is None
        finally:
            close_databases(app.registry)
''')


def clean_env(**extra):
    env = dict(os.environ)
    for name in ('ZCASYNC_DISPATCHER', 'ZC_ASYNC_UUID'):
        env.pop(name, None)
    env.update(extra)
    return env


def script_ini(site_ini):
    """The site's ini on a database of its own (a FileStorage opens in one
    process only) but the same UUID file, as a second process on a ZEO
    server would be."""
    text = site_ini.read_text()
    assert '/var/Data.fs?' in text
    ini = site_ini.parent / 'script.ini'
    ini.write_text(text.replace('/var/Data.fs?', '/var/Script.fs?'))
    return ini


def run_script(ini, **env):
    path = ini.parent / 'myscript.py'
    path.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(path), str(ini)],
                          capture_output=True, text=True, timeout=60,
                          cwd=str(ini.parent), env=clean_env(**env))


@pytest.fixture
def served(pserved):
    """pserve on the copy of development.ini: its dispatcher holds the
    UUID file's lock."""
    return pserved[0]


def test_bootstrap_script_beside_pserve_starts_no_dispatcher(served):
    result = run_script(script_ini(served))
    assert result.returncode == 0, result.stderr
    assert 'DISPATCHER None\nQUEUE 0\n' in result.stdout
    assert ("no dispatcher in this process: zcasync.dispatcher is true, "
            "but 'myscript' is not a program that serves the app"
            in result.stderr), result.stderr
    assert 'ZCASYNC_DISPATCHER=1' in result.stderr


def test_asked_for_one_beside_pserve_the_error_says_what_to_do(served):
    result = run_script(script_ini(served), ZCASYNC_DISPATCHER='1')
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('pyramid_zcasync.instance.DispatcherAlreadyRunning'
                           ': a dispatcher with UUID'), result.stderr
    assert ('This process started one because ZCASYNC_DISPATCHER=1; a script '
            'or a test run that should not run jobs sets ZCASYNC_DISPATCHER=0'
            in last), last
    assert 'needs its own zcasync.uuid_file' in last


def test_bad_environment_value_is_named(site):
    ini, _ = site
    result = run_script(ini, ZCASYNC_DISPATCHER='yes')
    assert result.returncode != 0
    assert ("ZCASYNC_DISPATCHER = 'yes': expected 1 (start a dispatcher), 0 "
            "(never) or setting" in result.stderr), result.stderr


def test_project_test_suite_on_the_ini_starts_no_dispatcher(site, tmp_path):
    ini, _ = site
    project = tmp_path / 'project_tests'
    project.mkdir()
    (project / 'test_app.py').write_text(PROJECT_TEST)
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         str(project)], capture_output=True, text=True, timeout=120,
        cwd=str(project), env=clean_env(INI=str(ini)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert '1 passed' in result.stdout
