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
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': True, 'undoc-members': False}
