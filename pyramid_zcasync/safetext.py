"""Text from jobs made safe to show: escaped, clipped, quoted.

A job's arguments, its exception message and its traceback come from
whoever could put a job (often a public web form), so they are untrusted
wherever they are shown.  In a terminal an escape sequence can retitle or
clear the operator's window, and in any text a right-to-left override
(U+202E) reorders what follows; a 2 MB message repeated on a page makes
the page 2 MB.  Every place that shows such text (the pages, the CLI, the
events log) goes through this module, so that the rule lives in one place:

- control characters (except the line breaks and tabs of a traceback where
  they are kept) and bidirectional formatting characters are shown as
  Python escapes (``\\x1b``, ``\\u202e``), visible and inert;
- lists clip a value (:func:`clip`), a view of one value bounds it
  (:func:`bound`, which says how much it left out);
- an error message quotes a bad input with :func:`quote`: never more than
  a line of it.
"""
from __future__ import annotations

import logging
import re
from typing import Optional

#: Bidirectional formatting characters: marks, embeddings, overrides and
#: isolates (Unicode's "Trojan Source" set), and the Arabic letter mark.
BIDI = '\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e' \
       '\u2066\u2067\u2068\u2069'
#: C0 and C1 controls, DEL, line and paragraph separators, and BIDI.
_UNSAFE = re.compile('[\x00-\x1f\x7f-\x9f\u2028\u2029%s]' % BIDI)
#: What :func:`escape` keeps by default: the line structure of a traceback.
KEEP_LINES = '\n\t'
#: Longest bad input an error message repeats.
QUOTE_LIMIT = 60
#: Longest record the events and trace logs write (a job's traceback is
#: in its failure record and on its traceback view, whole up to there).
LOG_LIMIT = 20000
#: The loggers whose records carry job text.
LOGGERS = ('pyramid_zcasync.events', 'pyramid_zcasync.trace')


def _escaped(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return '\\x%02x' % code if code < 0x100 else '\\u%04x' % code


def escape(text: str, keep: str = '') -> str:
    """``text`` with every control and bidi character but those in
    ``keep`` written as a visible escape (``\\x1b``, ``\\u202e``)."""
    text = str(text)
    if not keep:
        return _UNSAFE.sub(_escaped, text)
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep
                       else _escaped(m), text)


def clip(text: str, size: int) -> str:
    """At most ``size`` characters, an ellipsis saying some are gone: for
    a value in a list."""
    text = str(text)
    return text if len(text) <= size else text[:size - 1] + '\u2026'


def bound(text: str, limit: int) -> tuple[str, int]:
    """(``text`` with its middle cut out if longer than ``limit``, how many
    characters were cut): for a view of one long value, such as a
    traceback, whose beginning and end (the exception) both matter."""
    text = str(text)
    if len(text) <= limit:
        return text, 0
    head = limit // 2
    tail = limit - head
    omitted = len(text) - limit
    return ('%s\n[... %d characters omitted ...]\n%s'
            % (text[:head], omitted, text[-tail:]), omitted)


def quote(value: Optional[str], size: int = QUOTE_LIMIT) -> str:
    """A bad input in an error message: its repr (which escapes control
    and bidi characters), clipped to ``size`` characters."""
    text = repr(value)
    if len(text) <= size:
        return text
    return '%s...%s (%d characters)' % (text[:size - 4], text[0],
                                        len(value or ''))


class SafeLogText(logging.Filter):
    """Rewrites a record of the events or trace log to escaped, bounded
    text: a job's message or traceback must not drive the terminal that
    tails the log, nor fill the disk at 2 MB a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: leave it to logging's own report
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(
                record.exc_info)
        if record.exc_text:
            record.exc_text = escape(bound(record.exc_text, LOG_LIMIT)[0],
                                     KEEP_LINES)
        record.msg = escape(bound(message, LOG_LIMIT)[0], KEEP_LINES)
        record.args = None
        return True


def install_log_filter() -> None:
    """Put :class:`SafeLogText` on the loggers of job text, once."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SafeLogText) for f in logger.filters):
            logger.addFilter(SafeLogText())
