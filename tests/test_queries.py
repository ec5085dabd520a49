"""The admin queries (views/queries.py) on their own: the questions are
checked where they are built, and the answers come straight from the
queues, with no Pyramid request (as ``pzcasync`` asks them)."""
import datetime

import pytest
import transaction

from pyramid_zcasync.interfaces import KEY
from pyramid_zcasync.views import queries
from pyramid_zcasync.views.format import ParameterError
from pyramid_zcasync.views.pages import environment
from pyramid_zcasync.views.html import e

import jobs


class Params(dict):
    """Named strings, as a request's params or pzcasync's options."""

    def getall(self, name):
        value = self.get(name)
        return [] if value is None else [value]


def no_dispatcher():
    raise AssertionError('uuid=THIS was not asked')


# -- the questions --------------------------------------------------------

@pytest.mark.parametrize('build, words', [
    (lambda: queries.JobSelection(states=frozenset({'done'})), "'done'"),
    (lambda: queries.JobSelection(time_field='when'), "time='when'"),
    (lambda: queries.JobSelection(since=datetime.datetime(2026, 1, 1)),
     'since=2026-01-01T00:00:00 must be an aware'),
    (lambda: queries.JobListing(count=0), 'count=0 is out of range'),
    (lambda: queries.JobListing(count=queries.MAX_COUNT + 1),
     'count=%d is out of range' % (queries.MAX_COUNT + 1)),
    (lambda: queries.JobListing(display='all'), "display='all'"),
    (lambda: queries.JobRef(-1), '-1 is not a job id'),
])
def test_a_bad_question_is_refused_naming_the_bad_value(build, words):
    with pytest.raises(ParameterError) as caught:
        build()
    assert words in caught.value.message
    assert caught.value.status == 400


def test_a_selection_read_from_named_strings():
    chosen = queries.read_selection(
        Params(queue='', agent=' main ', state='pending,failed',
               since='2026-01-31T12:00Z', callable='multi*'), no_dispatcher)
    assert chosen.queue == '' and chosen.agent == 'main'
    assert chosen.states == frozenset({'pending', 'failed'})
    assert chosen.since == datetime.datetime(2026, 1, 31, 12,
                                             tzinfo=datetime.timezone.utc)
    assert chosen.callable == 'multi*' and chosen.uuid is None
    # a question without a state filter ignores the parameter
    assert queries.read_selection(Params(state='nonsense'), no_dispatcher,
                                  None).states == frozenset(queries.STATES)
    assert queries.read_selection(Params(uuid='this'),
                                  lambda: 'mine').uuid == 'mine'
    with pytest.raises(ParameterError, match="before='soon' is not a date"):
        queries.read_selection(Params(before='soon'), no_dispatcher)


# -- the answers ----------------------------------------------------------

def test_the_queries_answer_from_the_queues(conn, queue):
    first = queue.put(jobs.multiply, 2, 3)
    queue.put(jobs.multiply, 4, 5)
    transaction.commit()
    queues = conn.root()[KEY]
    everything = queries.JobSelection()
    assert queries.count(queues, everything) == 2
    listing = queries.jobs(queues, queries.JobListing(everything, count=1))
    assert listing == [[int.from_bytes(first._p_oid, 'big'),
                        conn.db().database_name]]
    detail = queries.job(queues, queries.JobRef(listing[0][0]))
    assert detail['status'] == 'pending' and detail['args'] == ['2', '3']
    assert queries.next_pending(queues, everything)['id'] == listing[0]
    stats = queries.jobstats(queues, everything)
    assert stats['pending'] == 2 and stats['failed'] == 0
    assert queries.uuids(queues) == []
    with pytest.raises(ParameterError) as caught:
        queries.count(queues, queries.JobSelection(queue='nope'))
    assert caught.value.status == 404
    with pytest.raises(ParameterError, match='did not fail'):
        queries.traceback(queues, queries.JobRef(listing[0][0]))


# -- the templates' escaping ----------------------------------------------

def test_every_value_a_template_prints_is_escaped_as_before():
    hostile = '<b onclick="x">\u202e\x1b[31m'
    printed = environment().from_string('{{ value }}').render(value=hostile)
    assert printed == e(hostile)
    assert '<b' not in printed and '\u202e' not in printed


def test_a_waiting_job_is_counted_listed_and_says_what_it_waits_for(
        conn, queue):
    first = queue.put(jobs.multiply, 2, 3)
    waiting = queue.put(jobs.multiply, 4, 5, after=[first])
    transaction.commit()
    queues = conn.root()[KEY]
    everything = queries.JobSelection()
    pending = queries.JobSelection(states=frozenset({'pending'}))
    assert queries.count(queues, pending) == 2  # len(queue) says 1
    listing = queries.jobs(queues, queries.JobListing(pending))
    ids = [int.from_bytes(job._p_oid, 'big') for job in (first, waiting)]
    assert [job_id[0] for job_id in listing] == ids  # claimable first
    assert queries.job(queues, queries.JobRef(ids[1]))['after'] == [
        [ids[0], conn.db().database_name]]
    assert 'after' not in queries.job(queues, queries.JobRef(ids[0]))
    assert queries.count(queues, everything) == 2
