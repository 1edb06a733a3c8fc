"""Device, precision and CPU-thread choices."""

from __future__ import annotations

import os

import pytest
import torch

from cifarfw.errors import UsageError
from cifarfw_torch import runtime


@pytest.fixture
def no_thread_settings(monkeypatch):
    for var in ("OMP_NUM_THREADS", runtime.THREADS_ENV):
        monkeypatch.delenv(var, raising=False)


def test_threads_follow_the_free_cores(monkeypatch, no_thread_settings):
    default = torch.get_num_threads()
    monkeypatch.setattr(runtime, "busy_cores", lambda window_s=0.5: 0.0)
    assert runtime.choose_threads() == (default, "default")
    monkeypatch.setattr(runtime, "busy_cores", lambda window_s=0.5: float(os.cpu_count()))
    threads, why = runtime.choose_threads()
    assert threads == 1 and "busy" in why  # every core taken: one thread, never zero


def test_thread_count_can_be_set(monkeypatch, no_thread_settings):
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert runtime.choose_threads() == (3, runtime.THREADS_ENV)
    monkeypatch.setenv(runtime.THREADS_ENV, "many")
    with pytest.raises(UsageError, match=runtime.THREADS_ENV):
        runtime.choose_threads()


def test_busy_cores_is_a_share_of_the_machine():
    busy = runtime.busy_cores(window_s=0.05)
    if busy is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= busy <= os.cpu_count()


def test_cpu_threads_are_restored_after_the_run(monkeypatch, no_thread_settings):
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "choose_threads", lambda: (1, "test"))
    with runtime.cpu_threads(torch.device("cpu")) as (threads, why):
        assert torch.get_num_threads() == threads == 1 and why == "test"
    assert torch.get_num_threads() == before
