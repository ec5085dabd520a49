"""Sphinx configuration: narrative chapters include README.rst's sections
(README stays the one source and the short entry point), the API
reference comes from the docstrings.  .ci/run builds it with -W."""
import os
import sys

sys.path.insert(0, os.path.abspath('..'))

project = 'pyramid_zcasync'
author = 'the pyramid_zcasync authors'
copyright = '2026, ' + author
release = '0.1.0.dev0'

extensions = ['sphinx.ext.autodoc', 'sphinx.ext.viewcode']
exclude_patterns = ['_build']
html_theme = 'alabaster'
html_static_path = []

# Autodoc reads the modules' docstrings as they are; references between
# them are plain text, not checked links.
nitpicky = False
# Names re-exported by the package (pyramid_zcasync.Job is job.Job) make
# type hints ambiguous to Sphinx; either target is right.
suppress_warnings = ['ref.python']
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': True, 'undoc-members': False}
