"""benchmarks.report's live rows: every peer's live row against Huey's
and ours, our rows against issue 18's targets, a peer that could not
run shown with its reason; the new peers' drain rows in the peers part.
Figures are made up: nothing is measured and no timing is asserted."""
from benchmarks import livepeers, report


def live_row(name, threads, jobs_per_s, **more):
    row = {'name': '%s, %d producer threads' % (name, threads),
           'threads': threads, 'jobs': 100, 'jobs_per_s': jobs_per_s,
           'cpu_ms_per_put': 0.2, 'worker_cpu_ms_per_job': 0.5,
           'pickup': {'p50_ms': 3.0, 'p95_ms': 9.0},
           'persistence': 'durable enough'}
    row.update(more)
    return row


def drain_row(name):
    return {'name': name, 'persistence': 'Redis defaults',
            'throughput': {'jobs': 100, 'jobs_per_s': 500.0},
            'pickup': {'p50_ms': 2.0, 'p95_ms': 4.0}}


def suite_result():
    ours = {'rows': [live_row('ours, FileStorage, 1 process', 2, 800.0),
                     live_row('Huey SqliteHuey', 2, 400.0)],
            'skipped': {}, 'errors': {}, 'params': {}, 'duration_s': 1.0}
    peers = {'rows': [live_row('Dramatiq Redis', 2, 200.0,
                               server_cpu_ms_per_job=0.25)],
             'skipped': {'celery': 'celery is not installed'},
             'errors': {}, 'params': {}, 'duration_s': 1.0}
    return {'results': {'live': livepeers.merged(ours, peers),
                        'dramatiq': drain_row('Dramatiq Redis')},
            'skipped': {'procrastinate': 'no PostgreSQL here'}}


def rows_named():
    return {r['benchmark']: r for r in report.table(suite_result())}


def test_a_live_peer_row_is_shown_against_huey_and_ours():
    row = rows_named()['live: Dramatiq Redis, 2 producer threads']
    assert row['x_huey'] == 0.5
    assert row['other'].startswith('ours FileStorage 4.0 x this')
    assert 'server 0.25 ms/job' in row['other']
    assert row['met'] is None       # a peer has no target


def test_our_live_row_is_judged_against_hueys_live_rate():
    row = rows_named()['live: ours, FileStorage, 1 process, 2 producer '
                       'threads']
    assert row['x_huey'] == 2.0
    assert row['met'] == 'yes'


def test_a_peer_that_could_not_run_says_why():
    rows = rows_named()
    assert rows['live: celery']['other'] == 'skipped: celery is not installed'
    assert rows['procrastinate']['other'] == 'skipped: no PostgreSQL here'


def test_a_new_peers_drain_row_is_in_the_peers_part():
    row = rows_named()['Dramatiq Redis']
    assert row['rate'] == 500.0
    assert 'Redis defaults' in row['other']
