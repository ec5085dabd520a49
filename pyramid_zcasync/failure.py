"""A failure record of our own for a job's exception.

zc.async stored pickled Twisted Failures, which break when Twisted (or the
exception's module) changes or is absent in the reading process.  This
record keeps only strings: the exception's type names along its MRO (so
``check`` and ``trap`` still work by class), its message and the formatted
traceback.  It unpickles anywhere this module is importable.
"""
from __future__ import annotations

import traceback as _traceback
from typing import Optional, Tuple, Union

import zope.interface

from .interfaces import IFailure


def _qualified(cls: type) -> str:
    module = cls.__module__
    if module == 'builtins':
        return cls.__qualname__
    return '%s.%s' % (module, cls.__qualname__)


class JobFailure(Exception):
    """Raised by :meth:`Failure.trap` and :meth:`Failure.raise_` to carry a
    record whose original exception class cannot be rebuilt."""

    def __init__(self, failure: 'Failure'):
        super().__init__('%s: %s' % (failure.type_name, failure.message))
        self.failure = failure


@zope.interface.implementer(IFailure)
class Failure:
    """What a job's result is when its call raised."""

    __slots__ = ('type_names', 'message', 'traceback')

    def __init__(self, type_names: tuple, message: str, traceback: str):
        self.type_names = tuple(type_names)
        self.message = message
        self.traceback = traceback

    @classmethod
    def from_exception(cls, exc: BaseException) -> 'Failure':
        names = tuple(_qualified(c) for c in type(exc).__mro__
                      if c is not object)
        text = ''.join(_traceback.format_exception(type(exc), exc,
                                                   exc.__traceback__))
        return cls(names, _message_of(exc), text)

    @property
    def type_name(self) -> str:
        """The dotted name of the exception's class (builtins unqualified)."""
        return self.type_names[0]

    def check(self, *exc_types: Union[type, str]
              ) -> Optional[Union[type, str]]:
        """The first of ``exc_types`` the exception was an instance of."""
        for exc_type in exc_types:
            if isinstance(exc_type, str):
                if exc_type in self.type_names:
                    return exc_type
            elif _qualified(exc_type) in self.type_names:
                return exc_type
        return None

    def trap(self, *exc_types: Union[type, str]) -> Union[type, str]:
        """Like :meth:`check`, but re-raises when nothing matches, so an
        errback can handle the errors it knows and pass on the others."""
        matched = self.check(*exc_types)
        if matched is None:
            raise JobFailure(self)
        return matched

    def getTraceback(self) -> str:
        return self.traceback

    def getErrorMessage(self) -> str:
        return self.message

    def __getstate__(self) -> Tuple[Tuple[str, ...], str, str]:
        return (self.type_names, self.message, self.traceback)

    def __setstate__(self, state: Tuple[Tuple[str, ...], str, str]) -> None:
        self.type_names, self.message, self.traceback = state

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Failure)
                and self.__getstate__() == other.__getstate__())

    def __hash__(self) -> int:
        return hash(self.__getstate__())

    def __repr__(self) -> str:
        return '<Failure %s: %s>' % (self.type_name, self.message)

    __str__ = __repr__


def _message_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ itself raises
        return repr(exc.args)
