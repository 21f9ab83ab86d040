"""Shared pytest setup: every test's sessions are frozen as printed-metric sessions.

The stand-in train.py scripts (tests/fixtures/standins/) print a val_bpb without calling an
evaluator, which an attested session (the default) judges ``unattested``. Tests of the
attested metric, the CPU target and the demo remove the variable themselves.
"""

import pytest

from scratchrepo import PRINTED


@pytest.fixture(autouse=True)
def printed_metric_source(monkeypatch):
    for name, value in PRINTED.items():
        monkeypatch.setenv(name, value)
