"""The seed scenario (../shared/seed/z3.txt), single and two databases."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize('kind', ['single', 'two', 'two-from-main',
                                  'two-job-in-main'])
def test_seed_scenario(kind, tmp_path):
    output = subprocess.run(
        [sys.executable, os.path.join(HERE, 'seed_scenario.py'), kind,
         str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True).stdout
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen['poll0'] == {'': {'main': {
        'active jobs': [], 'error': None, 'len': 0, 'new jobs': [],
        'size': 3}}}
    assert seen['activated'] is True
    assert seen['result'] == 42
    if kind == 'two-job-in-main':
        assert seen['result_from_main'] == 42
    assert seen['queue_database'] == ('unnamed' if kind == 'single'
                                      else 'async')
    assert seen['status_keys'] == ['poll interval', 'status',
                                   'time since last poll', 'uptime', 'uuid']
    assert seen['status'] == 'RUNNING'
    assert seen['uuid_matches_file'] is True
    assert seen['keyboard_interrupt'] is True
    assert seen['dispatcher_activated_after_sigint'] is False
    assert seen['db_activated_after_sigint'] is False
    uuid_text = (tmp_path / 'uuid.txt').read_text()
    assert uuid_text.startswith('#'), 'the UUID file explains itself'
