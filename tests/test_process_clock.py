"""The process's age, which a command's report uses for the time spent before its ``main``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jax_vdit.process_clock import seconds_since_process_start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux-only")
def test_a_fresh_process_is_as_old_as_the_time_it_has_waited():
    code = ("import time; time.sleep(0.6); "
            "from jax_vdit.process_clock import seconds_since_process_start as age; print(age())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    age = float(out.strip())
    assert 0.6 <= age < 30.0, age  # the sleep, the interpreter's start and the import of jax_vdit (jax)


def test_the_age_grows_with_time_and_is_none_without_proc(monkeypatch):
    first = seconds_since_process_start()
    if first is None:
        pytest.skip("no /proc here")
    import time

    time.sleep(0.05)
    assert seconds_since_process_start() >= first

    def unreadable(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr("builtins.open", unreadable)
    assert seconds_since_process_start() is None
