"""Pools are sized from the CPUs the process may use: affinity and the cgroup CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lsio._cpus import quota_cpus, usable
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
