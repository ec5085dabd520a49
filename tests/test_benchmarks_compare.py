"""benchmarks.compare's summary: the verdict the architecture work is
judged by (throughput and pick-up within 5 % of before) must say 'NO'
only when the difference is beyond both the tolerance and the noise."""
from benchmarks import compare


def measurement(side, round_, jobs_per_s, p50_ms):
    return {'side': side, 'round': round_,
            'drain': {'jobs_per_s': jobs_per_s, 'cpu_ms_per_job': 0.5},
            'pickup': {'p50_ms': p50_ms, 'p95_ms': 2 * p50_ms}}


def rows_by_field(measured):
    return {row['field']: row for row in compare.summarise(measured)}


def test_the_same_figures_on_both_sides_are_within_tolerance():
    measured = [measurement(side, r, 1000.0, 3.0)
                for r in (1, 2, 3) for side in ('before', 'after')]
    rows = rows_by_field(measured)
    assert rows['jobs_per_s']['after_over_before'] == 1.0
    assert rows['jobs_per_s']['within_tolerance'] == 'yes'
    assert rows['p50_ms']['within_tolerance'] == 'yes'
    assert rows['p95_ms']['within_tolerance'] == '-'   # shown, not judged


def test_slower_beyond_tolerance_and_noise_is_no():
    measured = ([measurement('before', r, 1000.0, 3.0) for r in (1, 2, 3)]
                + [measurement('after', r, 800.0, 3.6) for r in (1, 2, 3)])
    rows = rows_by_field(measured)
    assert rows['jobs_per_s']['after_over_before'] == 0.8
    assert rows['jobs_per_s']['within_tolerance'] == 'NO'
    assert rows['p50_ms']['within_tolerance'] == 'NO'


def test_faster_is_never_a_miss():
    measured = ([measurement('before', r, 1000.0, 3.0) for r in (1, 2, 3)]
                + [measurement('after', r, 1500.0, 2.0) for r in (1, 2, 3)])
    rows = rows_by_field(measured)
    assert rows['jobs_per_s']['within_tolerance'] == 'yes'
    assert rows['p50_ms']['within_tolerance'] == 'yes'


def test_a_miss_smaller_than_the_rounds_spread_is_noise():
    before = [900.0, 1000.0, 1100.0]       # +-10 % around the median
    measured = ([measurement('before', r, v, 3.0)
                 for r, v in enumerate(before)]
                + [measurement('after', r, 920.0, 3.0) for r in (1, 2, 3)])
    row = rows_by_field(measured)['jobs_per_s']
    assert row['noise'] == 0.1
    assert row['within_tolerance'] == 'noise'
