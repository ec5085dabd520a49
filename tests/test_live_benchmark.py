"""benchmarks/live.py at tiny counts: producer threads put one job a
transaction while the dispatcher runs, every job is found COMPLETED,
and the row carries what the table shows.  No timing is asserted."""
from benchmarks import live


def test_live_filestorage_row_at_tiny_counts():
    params = dict(live.QUICK, threads=(2,), jobs=20, warmup_jobs=5,
                  phase_timeout_s=60.0)
    rows = live.run_fs(params)
    assert [r['threads'] for r in rows] == [2]
    row = rows[0]
    assert row['jobs'] == 20
    assert row['jobs_per_s'] > 0
    assert row['cpu_ms_per_put'] > 0
    assert row['pickup']['n'] == 20
    assert row['persistence'].startswith('FileStorage')
