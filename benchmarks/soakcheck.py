"""What the end of a soak (benchmarks/soak.py) says: each job's fate and
each kill's recovery, summed up.

A job is lost when it finished (or was packed away) and its key was never
counted in the database, run twice when it was counted more than once;
one still in the queue when the drain's time ran out is unfinished, not
lost (a machine too busy for the soak's pace): ZODB's own record of what committed,
not the workers' word.  The runs log counts every start, committed or
not, so its surplus over the jobs is the work redone (conflict retries,
and jobs a kill interrupted).
"""
import collections
import os
from typing import Any, Counter, Dict, List, Sequence, Tuple

from benchmarks import common

Kill = Dict[str, Any]
PutJob = Tuple[str, bytes]      # (key, oid)


def job_outcomes(reader: Any, put_oids: Sequence[PutJob]
                 ) -> Tuple[Counter[str], Counter[str], List[str]]:
    """Each put job's status ('packed' when the database no longer has
    it), the failures by type and message, and the keys of the jobs
    not finished."""
    from ZODB.POSException import POSKeyError
    from pyramid_zcasync.failure import Failure
    from pyramid_zcasync.interfaces import COMPLETED
    statuses: Counter[str] = collections.Counter()
    failures: Counter[str] = collections.Counter()
    unfinished: List[str] = []
    for key, oid in put_oids:
        try:
            job = reader.connection.get(oid)
        except POSKeyError:
            # Packed away: out of every queue and agent, and trimmed
            # from its agent's history of completed jobs.
            statuses['packed'] += 1
            continue
        statuses[job.status] += 1
        if job.status != COMPLETED:
            unfinished.append(key)
        elif isinstance(job.result, Failure):
            failures['%s: %s' % (job.result.type_name,
                                 job.result.message[:80])] += 1
    return statuses, failures, unfinished


def runs_per_key(runs_log: str) -> Counter[str]:
    runs: Counter[str] = collections.Counter()
    if os.path.exists(runs_log):
        with open(runs_log) as stream:
            for line in stream:
                runs[line.split()[0]] += 1
    return runs


def settle_kills(kills: List[Kill]) -> Tuple[List[float], List[float]]:
    """Finish each kill's record (who recovered its jobs, when a sibling
    found it dead) and drop the run's private fields; returns the
    recovery times of the kills that held jobs and the detection times."""
    for record in kills:
        record['recovered_by'] = (
            None if not record['held'] else
            'sibling' if record['_detected'] is not None else 'restart')
        record['found_dead_after_s'] = (
            round(record['_detected'] - record['_killed'], 3)
            if record['_detected'] is not None else None)
        record.setdefault('recovery_s', None)
    recoveries = [k['recovery_s'] for k in kills
                  if k['held'] and k['recovery_s'] is not None]
    for record in kills:
        if not record['held']:
            record['recovery_s'] = None  # nothing to recover
        for name in [n for n in record if n.startswith('_')]:
            del record[name]
    detections = [k['found_dead_after_s'] for k in kills
                  if k['found_dead_after_s'] is not None]
    return recoveries, detections


def summarise(reader: Any, put_oids: Sequence[PutJob], runs_log: str,
              kills: List[Kill], elapsed: float, put_retries: int
              ) -> Tuple[Dict[str, Any], List[str], List[str]]:
    """The summary, and the keys lost and the keys run twice."""
    from pyramid_zcasync.interfaces import COMPLETED
    done = dict(reader.root()['soak_done'])
    statuses, failures, unfinished = job_outcomes(reader, put_oids)
    runs = runs_per_key(runs_log)
    keys = [key for key, _ in put_oids]
    waiting = set(unfinished)
    lost = [key for key in keys
            if done.get(key, 0) == 0 and key not in waiting]
    duplicated = [key for key in keys if done.get(key, 0) > 1]
    recoveries, detections = settle_kills(kills)
    summary = {
        'jobs_put': len(put_oids),
        'jobs_completed': statuses.get(COMPLETED, 0)
        + statuses.get('packed', 0),
        'jobs_packed_away': statuses.get('packed', 0),
        'jobs_failed': sum(failures.values()),
        'jobs_lost': len(lost),
        'jobs_unfinished': len(unfinished),
        'jobs_duplicated': len(duplicated),
        'unfinished_statuses': {s: n for s, n in statuses.items()
                                if s not in (COMPLETED, 'packed')},
        'failures': dict(failures),
        'runs': sum(runs.values()),
        # Conflict retries, and jobs interrupted by a kill run again.
        'extra_runs': sum(n - 1 for n in runs.values() if n > 1),
        'kills': len(kills),
        'kills_holding_jobs': sum(1 for k in kills if k['held']),
        'unrecovered_kills': sum(1 for k in kills
                                 if k['held'] and k['recovery_s'] is None),
        'max_recovery_s': max(recoveries) if recoveries else None,
        'median_recovery_s': (common.percentile(recoveries, 50)
                              if recoveries else None),
        'max_found_dead_after_s': max(detections) if detections else None,
        'elapsed_s': round(elapsed, 1),
        'put_retries': put_retries,
    }
    return summary, lost, duplicated
