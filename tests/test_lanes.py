"""swinref.fast's lanes: the team of threads that shares a block's items, its spin waits, and the BLAS setting it
borrows. The numbers they compute are checked in tests/test_kernels.py; here, that the machinery cannot lose an
item, hang, swallow an error or leave the caller's threads changed."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Callable

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from swinref import fast, kernels  # noqa: E402
from swinref.api import random_model  # noqa: E402
from swinref.backend import plain  # noqa: E402


def test_spin_while_equal_sees_another_threads_store_and_gives_up_after_its_budget() -> None:
    word = np.zeros(1, dtype=np.int64)
    start = time.monotonic()
    assert kernels.spin_while_equal(word, 0, 20_000_000, 100) == 0  # nothing changed: the last value read
    assert 0.02 <= time.monotonic() - start < 5

    def store() -> None:
        time.sleep(0.01)
        word[0] = 7

    threading.Thread(target=store).start()
    start = time.monotonic()
    assert kernels.spin_while_equal(word, 0, 60 * 10**9, 100) == 7  # would spin for a minute if the load were hoisted
    assert time.monotonic() - start < 30


def test_spin_until_all_set_waits_for_the_last_flag() -> None:
    flags = np.zeros(5, dtype=np.int8)
    flags[:4] = 1
    assert not kernels.spin_until_all_set(flags, 0, 100)  # one round, then the budget is spent

    def store() -> None:
        time.sleep(0.01)
        flags[4] = 1

    threading.Thread(target=store).start()
    assert kernels.spin_until_all_set(flags, 60 * 10**9, 100)


def test_fetch_add_hands_every_number_out_once_between_threads() -> None:
    """The native items' shared counter: two threads taking numbers at once, without the GIL, get every number
    exactly once (a plain load and store would hand some out twice)."""

    @numba.njit(nogil=True)
    def take(counter, taken, n):
        while True:
            i = kernels.fetch_add(counter, 0, 1)
            if i >= n:
                return
            taken[i] += 1

    n = 2_000_000
    counter, taken = np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    take(counter, taken, 0)  # compile first (it takes one number)
    counter[0] = 0
    threads = [threading.Thread(target=take, args=(counter, taken, n)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (taken == 1).all() and counter[0] == n + 2


def test_a_spinning_lane_leaves_the_gil_to_the_lane_doing_python_work() -> None:
    """The whole wait is one call that holds no GIL: a Python loop beside it runs at its own speed (a wait holding
    the GIL would stall it for the whole budget)."""
    word = np.zeros(1, dtype=np.int64)

    def python_work() -> float:
        start = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i % 7
        return time.perf_counter() - start

    alone = min(python_work() for _ in range(3))
    spinner = threading.Thread(target=kernels.spin_while_equal, args=(word, 0, 3 * 10**9, 20_000))
    spinner.start()
    try:
        beside = min(python_work() for _ in range(3))
    finally:
        word[0] = 1
        spinner.join()
    assert beside < 1.3 * alone + 0.01


@pytest.mark.parametrize("lanes", [2, 3, 5])
def test_every_item_runs_once_whoever_takes_it(lanes) -> None:
    seen = np.zeros(1000, dtype=np.int64)
    fast._parallel(lambda i: seen.__setitem__(i, seen[i] + 1), 1000, lanes)
    assert (seen == 1).all()


def test_a_job_uses_no_more_lanes_than_asked_when_a_larger_team_exists() -> None:
    """limit_threads can lower the lanes after a larger team started: the extra threads sit the job out."""
    fast._parallel(lambda i: time.sleep(0.0005), 40, 5)  # a team of 4
    takers: set[int] = set()
    fast._parallel(lambda i: (time.sleep(0.0005), takers.add(threading.get_native_id())), 200, 2)
    assert len(takers) == 2


def test_an_error_in_any_item_reaches_the_caller_after_the_others_finish() -> None:
    done = []

    def item(i: int) -> None:
        if i == 3:
            raise ValueError("item 3")
        time.sleep(0.001)
        done.append(i)

    with pytest.raises(ValueError, match="item 3"):
        fast._parallel(item, 40, 2)
    assert sorted(done) == [i for i in range(40) if i != 3]
    fast._parallel(lambda i: None, 4, 2)  # the team is usable afterwards


def test_two_callers_at_once_both_get_their_answers(monkeypatch) -> None:
    """A second thread of the caller's running a forward pass while the team is busy runs its items itself."""
    monkeypatch.setattr(fast, "LANES", 2)
    model = random_model("T", seed=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)
    want = model(x)
    results: list = [None] * 4

    def run(k: int) -> None:
        results[k] = model(x)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None and np.array_equal(r, want) for r in results)


def _forward_in_child(queue) -> None:
    model = random_model("T", seed=2)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    queue.put(model(x))


def test_a_forked_worker_runs_forward_passes(monkeypatch) -> None:
    """A process forked after the team started (multiprocessing's fork, a Dask or Spark worker) has none of its
    threads; it starts its own instead of waiting for the parent's."""
    monkeypatch.setattr(fast, "LANES", 2)
    model = random_model("T", seed=2)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    want = model(x)  # the team is running in this process
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_forward_in_child, args=(queue,))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=30)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, want)


def test_linear_weights_are_column_major_with_the_checkpoint_values(tmp_path) -> None:
    """On the CPU the linear layers' weights are stored so that W^T is contiguous (BLAS multiplies x @ W^T fastest
    that way); same shape and values, and a saved model reads back equal."""
    import swinref
    from swinref.layout import is_linear_weight
    from swinref.params import init_params

    model = random_model("T", seed=3, dtype="float64")
    source = init_params(model.config, seed=3, dtype="float64")
    linear = [k for k in model.params if is_linear_weight(k)]
    assert len(linear) == 4 * 12 + 3 + 1  # qkv, proj, fc1, fc2 per block; the three merges; the head
    for name, value in model.params.items():
        assert value.shape == source[name].shape and np.array_equal(value, source[name]), name
        if value.ndim == 2:
            assert value.T.flags.c_contiguous == (name in linear), name
    path = tmp_path / "m.safetensors"
    model.save(path)
    back = swinref.load(path, dtype="float64")
    assert all(np.array_equal(back.params[k], model.params[k]) for k in model.params)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64))
    with plain():
        np.testing.assert_allclose(back(x), model(x), rtol=0, atol=1e-12)


def test_placing_a_loaders_params_reorders_weights_in_their_own_buffers_and_leaves_shared_ones_right() -> None:
    """swinref.load hands its loader's dict over (consume): a weight with a buffer of its own is reordered in
    place; one array reached from two entries (tied weights, or a view of another entry) is copied instead,
    so neither entry sees the other's reordering."""
    from swinref import api
    from swinref.backend import numpy_backend
    from swinref.params import init_params

    model = random_model("T", seed=4)
    params = {k: np.array(v, order="C") for k, v in init_params(model.config, seed=4, dtype="float32").items()}
    want = {k: v.copy() for k, v in params.items()}
    tied = "layers.0.blocks.1.attn.proj.weight"
    params[tied] = params["layers.0.blocks.0.attn.proj.weight"]  # the same array twice
    want[tied] = want["layers.0.blocks.0.attn.proj.weight"]
    own = params["layers.1.blocks.0.mlp.fc1.weight"]
    placed = api._place(params, model.config, "float32", "cpu", numpy_backend(), "timm", consume=True).params
    assert not params  # consumed
    for name, value in placed.items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)
    assert np.shares_memory(placed["layers.1.blocks.0.mlp.fc1.weight"], own)  # reordered where it lay
    assert placed["layers.1.blocks.0.mlp.fc1.weight"].T.flags.c_contiguous


def test_spin_budget_comes_from_swinref_spin_ms_and_a_bad_value_keeps_the_default() -> None:
    assert fast._spin_budget(None) == fast._spin_budget("") == 0.002
    assert fast._spin_budget("300") == 0.3 and fast._spin_budget("0") == 0.0
    for bad in ("fast", "-1", "1e9", "nan"):
        with pytest.warns(RuntimeWarning, match="SWINREF_SPIN_MS"):
            assert fast._spin_budget(bad) == 0.002


def test_with_no_spinning_the_lanes_still_finish_every_job(monkeypatch) -> None:
    """SWINREF_SPIN_MS=0: lanes block between jobs at once; nothing is lost or left waiting."""
    monkeypatch.setattr(fast, "SPIN_SECONDS", 0.0)
    for _ in range(50):
        seen = np.zeros(64, dtype=np.int64)
        fast._parallel(lambda i: seen.__setitem__(i, 1), 64, 2)
        assert seen.all()


needs_two_cpus = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                    reason="CPU affinity needs Linux and at least two CPUs this process may use")


def _where(record: list, lock: threading.Lock) -> Callable[[int], None]:
    def item(i: int) -> None:
        time.sleep(0.0005)  # long enough that both lanes take items
        with lock:
            record.append((threading.get_native_id(), fast._current_cpu(), frozenset(os.sched_getaffinity(0))))
    return item


@needs_two_cpus
def test_during_a_job_the_caller_and_the_team_keep_off_each_others_cpus() -> None:
    """After an idle gap the kernel may wake the caller and a team thread onto one core; while a job runs the
    caller keeps off the CPU its team thread last worked on, and the team thread off the caller's. Each gets its
    own CPU set back."""
    mine = os.sched_getaffinity(0)
    fast._parallel(lambda i: time.sleep(0.0005), 20, 2)  # the team thread has worked somewhere
    team = fast._team(1)
    where_the_team_was = set(team.team_cpus[:1])
    record: list = []
    fast._parallel(_where(record, threading.Lock()), 200, 2)
    caller = threading.get_native_id()
    cpus = {tid: affinity for tid, _, affinity in record}
    assert caller in cpus and len(cpus) == 2, "both lanes took items"
    (team_thread,) = set(cpus) - {caller}
    assert team.caller_cpu not in cpus[team_thread]
    assert cpus[caller] == mine - where_the_team_was
    if len(mine) == 2:  # then each lane has exactly one CPU left
        assert not {c for t, c, _ in record if t == caller} & {c for t, c, _ in record if t == team_thread}
    assert os.sched_getaffinity(0) == mine  # the caller's own set, back after the job


@needs_two_cpus
def test_a_team_thread_gets_its_cpus_back_before_it_blocks(monkeypatch) -> None:
    monkeypatch.setattr(fast, "SPIN_SECONDS", 0.0)  # block right after the job
    record: list = []
    fast._parallel(_where(record, threading.Lock()), 200, 2)
    team = {tid for tid, _, _ in record} - {threading.get_native_id()}
    assert team
    deadline = time.monotonic() + 5
    while any(os.sched_getaffinity(tid) != os.sched_getaffinity(0) for tid in team):
        assert time.monotonic() < deadline, "a blocked team thread kept a narrowed CPU set"
        time.sleep(0.01)


@needs_two_cpus
def test_a_caller_with_its_own_cpu_set_gets_exactly_that_back_also_after_an_error() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    mine = set(cpus[:2])
    result: dict = {}

    def caller() -> None:
        os.sched_setaffinity(0, mine)

        def item(i: int) -> None:
            time.sleep(0.0002)
            if i == 17:
                raise ValueError("item 17")

        try:
            fast._parallel(item, 40, 2)
        except ValueError as exc:
            result["error"] = str(exc)
        result["after"] = os.sched_getaffinity(0)

    t = threading.Thread(target=caller)
    t.start()
    t.join(timeout=60)
    assert result == {"error": "item 17", "after": mine}


def test_a_single_cpu_caller_is_left_as_it_is(monkeypatch) -> None:
    """Nothing to narrow (one CPU, or no affinity calls on this system): the job runs as before."""
    monkeypatch.setattr(fast, "_current_cpu", lambda: -1)
    seen = np.zeros(100, dtype=np.int64)
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    fast._parallel(lambda i: seen.__setitem__(i, seen[i] + 1), 100, 2)
    assert (seen == 1).all()
    if before is not None:
        assert os.sched_getaffinity(0) == before
