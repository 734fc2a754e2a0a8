"""A process that unpickles a reader (a Dask worker, once per graph or task) keeps one per
identity: the same reader's pickles share one there, and readers whose settings or
credentials differ never do."""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle
import zarr
import zarr.codecs as zc

import lsio
from lsio import HttpOptions
from lsio.zarr import LsioCodecPipeline, LsioStore
from tests.conftest import check_ok, run_python


class Keys:
    """An ``aws_credentials`` provider (a module-level class: it pickles)."""

    def __init__(self, secret: str = "s") -> None:
        self.secret = secret

    def __call__(self) -> dict[str, Any]:
        return {"aws_access_key_id": "AKIA", "aws_secret_access_key": self.secret}


def again(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj))


def keyed(secret: str) -> lsio.Reader:
    return lsio.Reader(http=HttpOptions(aws_access_key_id="AKIA",
                                        aws_secret_access_key=secret))


def test_a_readers_pickles_share_one_reader() -> None:
    reader = lsio.Reader(max_gap=12_345, backend="threads")
    first, second = again(reader), again(reader)
    assert first is second and first is not reader
    assert first.max_gap == 12_345 and first.backend == "threads"
    assert again(first) is first  # passed on from here, it stays the same reader
    twin = lsio.Reader(max_gap=12_345, backend="threads")  # equal settings, no secrets
    assert again(twin) is first
    assert again(lsio.Reader(max_gap=54_321, backend="threads")) is not first
    first.close()  # closed: the next one is built again
    third = again(reader)
    assert third is not first and not third._closed


def test_different_keys_or_providers_never_share_a_reader() -> None:
    one, two = again(keyed("secret-1")), again(keyed("secret-2"))
    assert one is not two
    assert (one.http.aws_secret_access_key, two.http.aws_secret_access_key) == (
        "secret-1", "secret-2")
    assert again(keyed("secret-1")) is one  # the same keys: the same reader

    # two providers that pickle alike are still two identities: nothing in a worker could
    # tell which client's they were
    a = lsio.Reader(http=HttpOptions(aws_credentials=Keys()))
    b = lsio.Reader(http=HttpOptions(aws_credentials=Keys()))
    assert again(a) is not again(b)
    assert again(a) is again(a)
    # also per URL prefix
    p = lsio.Reader(http={"s3://x/": HttpOptions(aws_credentials=Keys())})
    q = lsio.Reader(http={"s3://x/": HttpOptions(aws_credentials=Keys())})
    assert again(p) is not again(q)


def test_stores_with_different_keys_read_with_their_own_readers() -> None:
    """Two stores of one bucket, two clients' keys, shipped together (a Dask graph)."""
    s1 = LsioStore("s3://bucket/data.zarr", reader=keyed("client-1"))
    s2 = LsioStore("s3://bucket/data.zarr", reader=keyed("client-2"))
    got1, got2, got1_again = pickle.loads(cloudpickle.dumps((s1, s2, s1)))
    assert got1.reader is not got2.reader
    assert got1.reader.http.aws_secret_access_key == "client-1"
    assert got2.reader.http.aws_secret_access_key == "client-2"
    assert got1_again.reader is got1.reader


def test_settings_that_plain_pickle_refuses_build_a_reader_each_time() -> None:
    """A lambda provider (cloudpickle ships it by value) has no identity: never shared."""
    secret = "lambda-secret"
    reader = lsio.Reader(http=HttpOptions(aws_credentials=lambda: {
        "aws_access_key_id": "AKIA", "aws_secret_access_key": secret}))
    one, two = (pickle.loads(cloudpickle.dumps(reader)) for _ in range(2))
    assert one is not two
    assert one.http.aws_credentials()["aws_secret_access_key"] == secret


def test_a_pipelines_pickles_share_one_pipeline(tmp_path: Any) -> None:
    with zarr.config.set({"codec_pipeline.path": "lsio.zarr.LsioCodecPipeline"}):
        arr = zarr.create_array(str(tmp_path / "a"), shape=(8,), chunks=(4,), dtype="i4",
                                compressors=[zc.ZstdCodec()])
        same = zarr.create_array(str(tmp_path / "b"), shape=(8,), chunks=(2,), dtype="i4",
                                 compressors=[zc.ZstdCodec()])
        other = zarr.create_array(str(tmp_path / "c"), shape=(8,), chunks=(4,), dtype="i4",
                                  compressors=[zc.ZstdCodec(level=5)])
    pipe = arr._async_array.codec_pipeline
    assert isinstance(pipe, LsioCodecPipeline)
    first = again(pipe)
    assert again(pipe) is first and first == pipe
    assert again(same._async_array.codec_pipeline) is first  # the same codecs: no other
    assert again(other._async_array.codec_pipeline) is not first
    x, y = (pickle.loads(pickle.dumps(arr)) for _ in range(2))  # as a task unpickles it
    assert x._async_array.codec_pipeline is y._async_array.codec_pipeline


def test_a_forked_child_builds_its_own(tmp_path: Any) -> None:
    code = """
        import os, pickle
        import lsio
        blob = pickle.dumps(lsio.Reader(max_gap=777))
        mine = pickle.loads(blob)
        pid = os.fork()
        if pid == 0:
            child = pickle.loads(blob)
            os._exit(0 if child is not mine and pickle.loads(blob) is child else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), pickle.loads(blob) is mine)
    """
    assert check_ok(run_python(code, timeout=60)).split() == ["0", "True"]
