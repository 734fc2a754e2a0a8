"""Pools are sized from the CPUs the process may use: affinity and the cgroup CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lsio._cpus import quota_cpus, share, usable
from tests.conftest import check_ok, run_python

V2 = "0::/app.slice/job\n"
V1 = "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n"


@pytest.mark.parametrize(("cgroup", "files", "quota"), [
    # no cgroup information at all
    ("", {}, None),
    # cgroup v2: "max" is no quota; a quota is quota/period CPUs
    (V2, {"app.slice/job/cpu.max": "max 100000\n"}, None),
    (V2, {"app.slice/job/cpu.max": "150000 100000\n"}, 1.5),
    (V2, {"app.slice/job/cpu.max": "50000 100000\n"}, 0.5),
    # a parent's quota limits its children; the smallest on the way up counts
    (V2, {"app.slice/job/cpu.max": "400000 100000\n", "app.slice/cpu.max": "200000 100000"},
     2.0),
    # inside a container the process's cgroup is the mount's root
    ("0::/\n", {"cpu.max": "100000 100000\n"}, 1.0),
    # garbage is no quota, never an exception
    (V2, {"app.slice/job/cpu.max": "lots 100000"}, None),
    (V2, {"app.slice/job/cpu.max": "100000 0"}, None),
    (V2, {"app.slice/job/cpu.max": ""}, None),
    # cgroup v1: cfs_quota_us -1 is no quota
    (V1, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n",
          "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, None),
    (V1, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000\n",
          "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, 2.5),
    (V1, {"cpu,cpuacct/cpu.cfs_quota_us": "100000\n",
          "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 1.0),
    # the v1 files of another controller do not count
    (V1, {"memory/x/cpu.cfs_quota_us": "100000", "memory/x/cpu.cfs_period_us": "100000"},
     None),
])
def test_quota_from_cgroup_files(cgroup: str, files: dict[str, str],
                                 quota: float | None) -> None:
    assert quota_cpus(cgroup, files) == quota


@pytest.mark.parametrize(("cpus", "quota", "expected"), [
    (8, None, 8), (8, 1.5, 2), (8, 0.5, 1), (2, 16.0, 2), (0, None, 1), (4, 3.0, 3),
])
def test_usable_is_the_smaller_rounded_up_at_least_one(cpus: int, quota: float | None,
                                                       expected: int) -> None:
    assert usable(cpus, quota) == expected


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity API")
def test_one_allowed_cpu_gives_one_pipeline_worker(tmp_path: Path) -> None:
    """A process limited to one CPU runs one pipeline worker, also in a child forked after
    the parent had counted its CPUs (the count is computed again after a fork)."""
    code = """
        import asyncio, os, sys, threading
        import numpy as np
        import lsio
        from lsio import _cpus
        path = sys.argv[1]
        with open(path, "wb") as f:
            f.write(bytes(range(256)) * 64)
        reqs = [(path, k * 256, 256) for k in range(64)]

        def workers() -> int:
            names = set()
            def step(b):
                names.add(threading.current_thread().name)
                return b
            got = lsio.read_many_sync(reqs, pipeline=[step])
            assert [bytes(g) for g in got] == [bytes(range(256))] * 64
            return len(names)

        _cpus.usable_cpus()  # counted with every CPU, then the mask shrinks
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pid = os.fork()
        if pid == 0:
            code = 0 if _cpus.usable_cpus() == 1 and workers() == 1 else 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """
    out = check_ok(run_python(code, str(tmp_path / "f.bin"), timeout=60))
    assert out.strip() == "child 0"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity API")
def test_restricted_affinity_at_start() -> None:
    code = """
        import os
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        from lsio import _pipeline
        print(_pipeline.worker_count())
    """
    assert check_ok(run_python(code, timeout=60)).strip() == "1"


@pytest.mark.parametrize(("usable_", "setting", "dask", "expected"), [
    (2, None, None, 2),  # a process of its own: one worker per usable CPU
    (8, None, 1, 1),  # a Dask worker process with 1 thread: its share of the host
    (8, None, 4, 4),
    (2, None, 16, 2),  # never more than the usable CPUs
    (8, "3", None, 3),  # $LSIO_WORKERS decides, inside Dask too
    (8, "3", 1, 3),
    (2, "16", None, 2),
    (4, " ", 2, 2),  # blank: not set
])
def test_pipeline_workers_are_the_processs_share(usable_: int, setting: str | None,
                                                 dask: int | None, expected: int) -> None:
    assert share(usable_, setting, dask) == expected


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_a_bad_workers_setting_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\$LSIO_WORKERS must be a positive integer"):
        share(4, bad, None)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs an affinity API and 2 CPUs")
@pytest.mark.parametrize("how", ["env", "dask"])
def test_a_share_of_the_cpus_runs_that_many_unpinned_workers(how: str) -> None:
    """``$LSIO_WORKERS=1``, or a Dask worker process given one thread (found through
    ``distributed``'s own registry of workers in the process), runs one pipeline worker,
    not pinned (another process may be using the CPU it would pick)."""
    code = """
        import os, sys, threading, types
        import lsio
        if sys.argv[1] == "dask":  # what a Dask worker process holds: its Worker, nthreads 1
            fake = types.ModuleType("distributed.worker")
            class Worker:
                state = types.SimpleNamespace(nthreads=1)
            fake.Worker = Worker
            Worker._instances = [Worker()]
            sys.modules["distributed.worker"] = fake
        else:
            os.environ["LSIO_WORKERS"] = "1"
        from lsio._pipeline import worker_count, worker_pool
        mask = os.sched_getaffinity(0)
        seen = worker_pool().submit(lambda: os.sched_getaffinity(0)).result()
        print(worker_count(), seen == mask)
    """
    assert check_ok(run_python(code, how, timeout=60)).split() == ["1", "True"]
