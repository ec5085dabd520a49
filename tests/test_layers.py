"""No import circle among the package's modules.

Every import of one of the package's own modules counts, read from the
source: at module level, inside functions (a lazy import dodges a circle
at run time but keeps the two modules tangled) and under
``if TYPE_CHECKING:`` (for annotations).  Importing a module runs its
package's ``__init__`` too; that implicit step is not an edge, only what
the source names is.
"""
import ast
import pathlib
import re

import pyramid_zcasync

PACKAGE = pathlib.Path(pyramid_zcasync.__file__).parent
NAME = pyramid_zcasync.__name__


def module_names():
    """Dotted name -> source path, of every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        modules['.'.join(parts)] = path
    return modules


def _base_of(node, module, is_package):
    """The absolute module a ``from ... import`` statement imports from."""
    if node.level == 0:
        return node.module
    package = module.split('.') if is_package else module.split('.')[:-1]
    package = package[:len(package) - (node.level - 1)]
    return '.'.join(package + ([node.module] if node.module else []))


def imports_of(module, path, modules):
    """The package's modules that ``module``'s source imports, each with
    the line of its first import."""
    found = {}
    is_package = path.name == '__init__.py'
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base_of(node, module, is_package)
            # ``from package import module`` imports the module; any other
            # name comes from the package's (or module's) own source.
            targets = [base + '.' + alias.name
                       if base + '.' + alias.name in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target in modules and target != module:
                found.setdefault(target, node.lineno)
    return found


def import_graph():
    modules = module_names()
    return {module: imports_of(module, path, modules)
            for module, path in modules.items()}


def find_cycle(graph):
    """One import circle as a list of modules (first repeated last), or
    None; depth-first, visiting modules and their imports in name order so
    that a failure names the same circle every run."""
    done, on_path, path = set(), set(), []

    def visit(module):
        on_path.add(module)
        path.append(module)
        for imported in sorted(graph[module]):
            if imported in on_path:
                return path[path.index(imported):] + [imported]
            if imported not in done:
                cycle = visit(imported)
                if cycle:
                    return cycle
        on_path.discard(module)
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def describe(cycle, graph):
    return '\n'.join('%s -> %s (line %d)' % (a, b, graph[a][b])
                     for a, b in zip(cycle, cycle[1:]))


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    job = NAME + '.job'
    # module level, ``from . import module``
    assert NAME + '.lifecycle' in graph[job]
    # the package's own __init__ names job.py
    assert job in graph[NAME]
    assert set(graph) >= {NAME + '.lifecycle', NAME + '.queue',
                          NAME + '.agent', NAME + '.registry'}


def test_find_cycle_names_a_circle():
    graph = {'a': {'b': 1}, 'b': {'c': 2}, 'c': {'a': 3}, 'd': {'a': 4}}
    assert find_cycle(graph) == ['a', 'b', 'c', 'a']
    assert describe(['a', 'b', 'a'], {'a': {'b': 1}, 'b': {'a': 7}}) == (
        'a -> b (line 1)\nb -> a (line 7)')
    assert find_cycle({'a': {'b': 1}, 'b': {}}) is None


def test_lazy_and_type_checking_imports_count(tmp_path):
    source = tmp_path / 'mod.py'
    source.write_text(
        'from typing import TYPE_CHECKING\n'
        'if TYPE_CHECKING:\n'
        '    from .queue import Queue\n'
        'def f():\n'
        '    from . import agent\n'
        '    import %s.registry\n' % NAME)
    modules = module_names()
    assert imports_of(NAME + '.mod', source, modules) == {
        NAME + '.queue': 3, NAME + '.agent': 5, NAME + '.registry': 6}


def test_no_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, 'import circle:\n' + describe(cycle, graph)


# -- the layers of docs/architecture.rst ---------------------------------

#: Lowest first; a module may import its own layer and those below.  The
#: same table is drawn in docs/architecture.rst: change both together.
LAYERS = (
    ('leaves', 'extensions transact clock safetext keys interfaces errors '
               'checks shapes failure local process instance watch '
               'zeoclient pgnotify pool lease aio annotated'),
    ('model', 'job lifecycle lifelog unique deps puthooks queue layout '
              'agent quota registry retry composite periodic cancels '
              'changes undo'),
    ('engine', 'runner group timelimit executor poller dispatcher monitor '
               'history options install eager cancelwatch wakeup replay'),
    ('Pyramid glue', '__init__ config settings context tracing '
                     'periodic_config programs testing'),
    ('admin', 'views scripts demo'),
)


def layer_of(module):
    """The index in LAYERS of ``module`` (a dotted name of the package);
    subpackages are placed whole by their first name."""
    short = module[len(NAME) + 1:] if module != NAME else '__init__'
    first = short.split('.')[0]
    for index, (_, names) in enumerate(LAYERS):
        if first in names.split():
            return index
    raise AssertionError('%s is in no layer: add it to LAYERS here and to '
                         'docs/architecture.rst' % module)


def test_every_module_has_a_layer_and_imports_point_down():
    graph = import_graph()
    upward = ['%s (%s) imports %s (%s), line %d' % (
                  module, LAYERS[layer_of(module)][0], imported,
                  LAYERS[layer_of(imported)][0], line)
              for module, imports in sorted(graph.items())
              for imported, line in sorted(imports.items())
              if layer_of(imported) > layer_of(module)]
    assert upward == []


def layers_on_the_page():
    """Layer name -> the module names the architecture page lists in it
    (``views/`` for a subpackage), read from its table of layers."""
    page = (PACKAGE.parent / 'docs' / 'architecture.rst').read_text()
    block = page.split('.. code-block:: text', 1)[1].split('\n\n', 2)[1]
    names = {name for name, _ in LAYERS}
    found, current = {}, None
    for line in block.splitlines():
        label = line[3:18].strip()
        if label in names:
            current = found.setdefault(label, set())
        for token in re.findall(r'([a-z_]+)(?:\.py|/ )', line + ' '):
            current.add(token)
    return found


def test_the_architecture_page_shows_the_same_layers():
    on_page = layers_on_the_page()
    for name, modules in LAYERS:
        listed = on_page.get(name, set())
        # a subpackage's own modules may be named inside its entry
        expected = set(modules.split())
        assert expected <= listed, '%s: the page lacks %s' % (
            name, sorted(expected - listed))
        stray = {m for m in listed - expected
                 if m not in ('queries', 'results', 'pages', 'cli', 'tables',
                              'worker', 'zeoserver')}
        assert not stray, '%s: the page also lists %s' % (name, sorted(stray))
