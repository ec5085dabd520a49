"""A small locatable app tree and jobs that change it, for the tests of
what a job changed, replays and dry runs (importable by subprocesses
too: tests/ is on their path)."""
import persistent
import persistent.mapping


class Folder(persistent.mapping.PersistentMapping):
    """A container following Pyramid's location convention."""

    def __init__(self, name=None, parent=None):
        super().__init__()
        self.__name__ = name
        self.__parent__ = parent

    def add(self, item):
        item.__parent__ = self
        self[item.__name__] = item
        return item


class Item(persistent.Persistent):

    def __init__(self, name, value=0):
        self.__name__ = name
        self.__parent__ = None
        self.value = value


def make_site(db):
    """root['site'] = Folder with items a and b in folder docs; returns
    their oids."""
    with db.transaction() as connection:
        site = connection.root()['site'] = Folder()
        docs = site.add(Folder('docs'))
        a = docs.add(Item('a', 1))
        b = docs.add(Item('b', 2))
        connection.add(a)
        connection.add(b)
        connection.add(docs)
        return {'site': site._p_oid, 'docs': docs._p_oid, 'a': a._p_oid,
                'b': b._p_oid}


def set_value(item, value):
    item.value = value
    return value


def add_item(folder, name, value):
    """A new item, explicitly added to the folder's connection."""
    item = folder.add(Item(name, value))
    folder._p_jar.add(item)
    return name


def set_then_fail(item, value):
    item.value = value
    raise ValueError('failed after setting %r' % value)


def fail_unless_value(item, expected):
    """Fails when the item does not hold ``expected``: which data a
    replay sees decides its outcome."""
    if item.value != expected:
        raise ValueError('value is %r, not %r' % (item.value, expected))
    item.value = expected + 1
    return item.value

