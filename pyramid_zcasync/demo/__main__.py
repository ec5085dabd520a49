"""``python -m pyramid_zcasync.demo [pserve options]``: ``pserve
development.ini`` for whoever does not know pserve yet.

It serves ``development.ini`` from the current directory, else the one at
the top of the checkout this package was installed from (``pip install
-e .``), so the command works from the checkout's root and elsewhere.
"""
import os
import sys

from pyramid.scripts import pserve

INI = 'development.ini'


def find_ini() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for directory in (os.getcwd(), os.path.dirname(os.path.dirname(here))):
        path = os.path.join(directory, INI)
        if os.path.isfile(path):
            return path
    sys.exit('pyramid_zcasync demo: no %s here (%s) nor in the checkout; '
             'run this from the checkout of pyramid_zcasync, or run: '
             'pserve YOUR.ini' % (INI, os.getcwd()))


def main() -> int:
    return pserve.main(['pserve', find_ini()] + sys.argv[1:]) or 0


if __name__ == '__main__':
    sys.exit(main())
