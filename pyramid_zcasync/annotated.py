"""Reading a job's annotations without creating them.

``job.annotations`` creates the job's BTree on first use: a write, which
code that only reads a job (a run's trace, its attempt number, a view of
its progress) must not make: it would store one more object per job and
make the reader's transaction write the job."""
from __future__ import annotations

from typing import Any


def annotation(job: Any, name: str, default: Any = None) -> Any:
    """``job.annotations.get(name, default)``, creating nothing; the
    default for a job without annotations (most jobs, and older
    records)."""
    annotations = getattr(job, '_annotations', None)
    if annotations is None:
        return default
    return annotations.get(name, default)
