"""Reading the demo's form: every bad value is refused with a message that
quotes it, before anything is put in a queue.

The numbers are bounded because the page prints the result: Python refuses
to print an int of more than 4300 digits, and a view that fails while
rendering a job that already ran would be a poor demonstration.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Union

from .jobs import KINDS

#: Largest magnitude accepted for either number.
MAX_NUMBER = 10 ** 12
#: Longest delay accepted, in seconds.
MAX_DELAY = 3600
#: Values longer than this are cut short when quoted in a message.
QUOTE_LENGTH = 40

#: Field name -> what the page calls it.
LABELS = {'kind': 'job', 'a': 'first number', 'b': 'second number',
          'delay': 'run in (seconds)'}
#: What an empty form shows.
DEFAULTS = {'kind': 'multiply', 'a': '6', 'b': '7', 'delay': '0'}

Number = Union[int, float]


class BadInput(ValueError):
    """A form value that cannot be used; the message names it."""

    def __init__(self, field: str, value: str, problem: str) -> None:
        self.field = field
        self.value = value
        super().__init__('%s = %s %s' % (LABELS[field], _quote(value),
                                         problem))


@dataclasses.dataclass(frozen=True)
class Order:
    """A checked form: what to put in the queue."""
    kind: str
    a: Number
    b: Number
    delay: float


def _quote(value: str) -> str:
    if len(value) > QUOTE_LENGTH:
        value = value[:QUOTE_LENGTH] + '...'
    return repr(value)


def _number(field: str, text: str) -> Number:
    text = text.strip()
    if not text:
        raise BadInput(field, text, 'is empty; a number is needed')
    try:
        value: Number = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise BadInput(field, text, 'is not a number') from None
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(field, text, 'is not a finite number')
    return value


def _bounded(field: str, text: str, low: Number, high: Number) -> Number:
    value = _number(field, text)
    if not low <= value <= high:
        raise BadInput(field, text, 'is out of range (%g to %g)'
                       % (low, high))
    return value


def parse(values: Mapping[str, str]) -> Order:
    """Check the submitted form; raise :class:`BadInput` on the first bad
    field."""
    kind = values.get('kind', '')
    if kind not in KINDS:
        raise BadInput('kind', kind, 'is not a job kind; expected one of %s'
                       % ', '.join(KINDS))
    a = _bounded('a', values.get('a', ''), -MAX_NUMBER, MAX_NUMBER)
    b = _bounded('b', values.get('b', ''), -MAX_NUMBER, MAX_NUMBER)
    delay = values.get('delay', '').strip() or '0'
    return Order(kind, a, b, float(_bounded('delay', delay, 0, MAX_DELAY)))


def echo(values: Mapping[str, str]) -> dict:
    """The submitted values to show again, so a mistake loses no typing."""
    return {name: str(values.get(name, default))
            for name, default in DEFAULTS.items()}
