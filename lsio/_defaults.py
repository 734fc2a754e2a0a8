"""Every tuning number of lsio but the presets' (``lsio/_presets.py``), in one place, each
with where it comes from. The modules import them from here; the docs' tables are generated
from this file (``python -m lsio._defaults``; a test fails when they drift).

Figures measured "here" are from the benchmark machine described in docs/benchmarks.md: a
KVM guest with 2 vCPUs (AMD EPYC), 24 GiB, a virtio SSD, Linux 6.18.
"""

from __future__ import annotations

# Annotated, so the docs' table of these constants (lsio/_doctables.py) leaves it out.
__all__: list[str] = [
    "DEFAULT_MAX_OPEN", "DEFAULT_THREADS", "CACHED_FRACTION", "CACHE_SAMPLE", "SMALL_CALL_BYTES",
    "FALLBACK_ALIGN", "ARENA_ALIGN", "PARALLEL_MIN_READS", "PARALLEL_MIN_BYTES", "STAT_DEPTH",
    "OUT_INFLIGHT_BYTES", "READ_ATTEMPTS", "OFF_LOOP_REQUESTS", "RING_ENTRIES", "RING_FILES",
    "PUMP_BUDGET", "PUMP_NS",
    "ASYNC_MIN", "POOL_BYTES", "REUSE_SLACK", "UNMAP_ASIDE", "WINDOW", "WINDOW_BYTES", "JOB",
    "STAT_GROUP",
    "REDIRECTS", "RETRY_STATUS", "MULTI_MAX_RANGES", "MULTI_MAX_PART", "BATCH_WINDOW",
    "BYTEARRAY_BELOW", "PREALLOCATE", "AWS_METADATA_TIMEOUT", "GCS_REFRESH_MARGIN",
    "AZURE_REFRESH_BEFORE", "AWS_REFRESH_BEFORE", "TOKEN_RETRY_AFTER", "GCS_PAGE_SIZE",
    "BATCH_WINDOWS_MIN", "SMALL_REQUESTS", "SMALL_BYTES", "SMALL_COLD_REQUESTS",
    "SMALL_COLD_SPLIT", "SMALL_SPLIT_FILES", "SMALL_SPLIT_MAX", "SMALL_SPLIT_BYTES",
    "SMALL_SPLIT_MISSES", "SMALL_SPLIT_SHARE",
    "SMALL_OFF_LOOP_BYTES", "SMALL_URLS", "SETTLE_SECONDS", "COST_SAMPLES", "MIN_TTFB",
    "RATE_MIN_BYTES", "PROBE_BYTES", "GAP_MAX", "PART_FACTOR", "PART_MAX", "SLICE_JOBS_MIN",
    "WHOLE_SHARDS_MIN", "EACH_READ_AHEAD", "EACH_INLINE_BYTES", "EACH_PART_BYTES",
    "EACH_WORKER_READ_BYTES", "POPULATE_MIN", "WORKERS_PER_DASK_THREAD", "SHARED_OBJECTS",
    "LIST_CHUNK", "LIST_HEADS", "STREAM_CHUNK", "FSSPEC_BLOCK_SIZE",
    "FSSPEC_CACHE", "FSSPEC_GET_PIECE", "READAHEAD_FIRST", "READAHEAD_MAX", "READAHEAD_GAP",
    "READAHEAD_TTL", "READAHEAD_BUDGET",
    "GRIB_SCAN_BYTES", "GRIB_SIDECAR_BYTES", "GRIB_SIDECAR_LINE",
    "METADATA_CACHE", "CHAIN_CACHE", "PLAN_CACHE", "PLAN_CACHE_BYTES", "FILE_CACHE",
    "FILE_CACHE_BYTES", "FILE_SETTLED",
]

# -- The reader: calls, files, memory and the page-cache policy ----------------------------------

DEFAULT_MAX_OPEN = 128
"""Files open at once per call, further capped at a quarter of ``RLIMIT_NOFILE`` so
100 000 files work under ``ulimit -n 256`` (the rest of the fds stay the program's)."""

DEFAULT_THREADS = 32
"""Fallback pool size: the best thread-pool setting measured on the benchmark
machine (docs/benchmarks.md)."""

CACHED_FRACTION = 0.5
"""``direct=None``: a call reads with O_DIRECT when the median sampled file has less than
this share of its pages in the page cache (``cachestat``), else through the page cache."""

CACHE_SAMPLE = 8
"""Files sampled (spread over the list) to tell whether a call reads page-cache data."""

SMALL_CALL_BYTES = 2 << 20
"""``direct=None``: a call returning less than this reads through the page cache without
sampling it. The sample costs ~0.1-0.2 ms (it opens files); for 2 MiB, buffered and O_DIRECT
reads of cold data differ by less than that here, and buffered wins big on cached data
(zarr-python asks for chunks a few at a time, each call paid the sample)."""

FALLBACK_ALIGN = 4096
"""Direct-I/O alignment when the kernel does not report one (statx STATX_DIOALIGN)."""

ARENA_ALIGN = 64
"""Region alignment in the result arena for buffered reads: one cache line."""

PARALLEL_MIN_READS = 2048
"""Page-cache reads are CPU copies; from this many reads on, they are spread over one
ring per core (handing work to threads costs ~50 us, ~25 cached 4 KiB reads)."""

PARALLEL_MIN_BYTES = 64 << 20
"""...or from this many bytes: copying 64 MiB takes ~10 ms of one core."""

STAT_DEPTH = 256
"""statx calls in flight. Metadata lookups are not the data queue depth: cold statx of
10 000 files ran at 98 k/s with 64 in flight and 153 k/s with 256 here."""

OUT_INFLIGHT_BYTES = 16 << 20
"""With ``out=`` (the caller's memory) a cancelled call returns only once every read in
flight has landed, and reads the device already holds cannot be cancelled: such calls keep
at most this many bytes in flight (never fewer than 4 reads), so a cancellation returns in
~15 ms here. Measured on 1024 cold 1 MiB reads: 64 in flight took 25-100 ms to drain, 16 in
flight 13-18 ms; fio reaches the disk's 2.1 GB/s with 16 MiB in flight (64 x 256 KiB)."""

READ_ATTEMPTS = 3
"""Times the requests of a file that changed while it was read (replaced by another version,
grown or shrunk) are planned and read again, before lsio reads that file to its end through
one descriptor in a thread. Files that report no size (``/proc``) take that path too."""

OFF_LOOP_REQUESTS = 4096
"""Calls with this many requests or more are checked and planned on a worker thread, not on
the event loop: both cost ~0.35 us per request here (50 000 requests: 17 ms to check, 18 ms
to plan), and the loop must not stall over 10 ms; a thread hop costs ~0.1 ms."""

SMALL_REQUESTS = 64
"""Calls of up to this many requests try the small path first (``backends/_local_small.py``):
page-cache data copied on the caller's thread in two C calls, no planner, no event-loop
round trip. It costs ~2-4 us per request here; the bulk path's fixed cost is ~0.5-1 ms, so
it wins for any such call whose data is cached, and 64 requests hold the loop < 0.3 ms."""

SMALL_BYTES = 2 << 20
"""...and that return at most this many bytes: copying them on the caller's thread (the
event loop's) takes ~0.3 ms per MiB cached, up to ~1 ms per MiB into fresh memory here, so
2 MiB holds the loop < 3 ms (the stall target is 10 ms); larger calls go to the bulk path,
which spreads big copies over the kernel's workers."""

SMALL_OFF_LOOP_BYTES = 4 << 20
"""...and calls up to this many bytes are copied the same way on a worker thread, so the
loop is not held: a thread hop costs ~0.1 ms against the bulk path's ~1-3 ms fixed cost.
Measured on the benchmark machine with results kept: one 4 MiB file 3.5 ms on the small
path against 4.0 ms bulk, 50 files x 64 KiB 3.9 against 4.5; from 8 MiB on the bulk path,
which spreads the copies over the kernel's workers, wins (8.0 against 9.3 ms)."""

SMALL_COLD_REQUESTS = 1
"""A call of up to this many requests that misses the page cache is read by plain blocking
calls on a worker thread (within ``SMALL_OFF_LOOP_BYTES``): one cold 256 KiB chunk file
costs 0.7-1.3 ms that way here against 3-6 ms through io_uring, whose open, statx and read
each wait for the kernel's workers in turn. Calls of more requests go to io_uring, which
reads them in parallel; one thread reading several cold files in turn was slower than
either (LsioStore splits its few-get batches instead: ``SMALL_COLD_SPLIT``)."""

SMALL_COLD_SPLIT = 16
"""``LsioStore``: a batch of up to this many concurrent gets that missed the page cache is
read as that many one-request calls at once (each on its own worker thread, like
zarr's ``LocalStore``); bigger batches are one ``read_many`` through io_uring. zarr-python's
default pipeline keeps 10 gets in flight and, after its first batch, asks one or two per
event-loop turn."""

SMALL_SPLIT_FILES = 32
"""Lists of more than ``SMALL_REQUESTS`` local requests whose data is in the page cache take
the small path too if they name at most this many files (all open at once for the copy;
10 000 chunk files are the bulk road's, which opens ``DEFAULT_MAX_OPEN`` at a time):
parsed into arrays (~0.25 us a request: 2048 take ~0.5 ms on the loop), their files
opened, then copied by ``preadv2(RWF_NOWAIT)`` within ``SMALL_BYTES`` on the calling
thread, else on a worker, and there on up to one thread per usable core (each a run of
requests of equal bytes into its own part of the result memory, faulted in first), so the
copies and the page faults run on both cores. No stat, plan or ring: medians of 21 here,
warm 4 KiB ranges, 65 / 128 / 1024 requests: 0.40 / 0.59 / 4.7 ms against the bulk road's
1.1 / 1.3 / 5.9 ms."""

SMALL_SPLIT_MAX = 2048
"""...and of at most this many requests: past it the bulk road's fixed cost is paid off,
and its rings (one per core for page-cache reads) copy for less CPU than a ``preadv2``
call per request. Medians of 7 here (CPU / wall, ms), split path against bulk road:
2048 requests 11.4 / 14.4 against 11.0 / 15.6; 4096: 27 / 41 against 24 / 32; 16 384: 85
/ 131 against 63 / 81."""

SMALL_SPLIT_MISSES = 16
"""Reads of such a call that miss the page cache and are read by waiting for the disk on
its threads, off the event loop (a few pages evicted from a warm file must not send the
call to the bulk road); one more and the call is cold, for the bulk road. A cold call pays
them: ~0.1-0.2 ms each for 4 KiB here, ~0.5 ms for 256 KiB, shared by the threads."""

SMALL_SPLIT_SHARE = 1 << 20
"""...whose copy is split over one more thread per this much work (its bytes, plus 4 KiB a
request for the call itself): so two threads from 2 MiB of work, 256 requests of 4 KiB.
Measured on the benchmark machine (medians of 21, busy), one thread against two: 128 requests 0.59
against 0.66 ms, 256 requests 1.03 against 1.03, 1024 requests 5.0 against 4.7, 4096
requests 20 against 16 ms; starting and joining a thread costs ~0.1 ms."""

SMALL_SPLIT_BYTES = 256 << 20
"""...and return at most this many bytes: a cancelled call waits for the copy it started
(~0.1 s for 256 MiB on two cores here); bigger calls go to the bulk road, whose rings stop
between reads."""

SMALL_URLS = 32
"""Most requests a call may have to take the small-call path for URLs
(``backends/http/_small.py``: each request of its own object, one GET each, no planner):
the ``http`` and ``cloud`` presets' queue depth, so all are in flight at once, as the bulk
path would have them. A one-range call cost 3.5 ms on the bulk path here, 1.2-1.3x a bare
aiohttp GET (~0.3 ms) on this one."""

# -- The io_uring engine -------------------------------------------------------------------------

RING_ENTRIES = 512
"""Submission queue size of every ring; readers cap their own depth below it. 512 leaves
room for several readers at the default depth of 64 (completion queue: twice this)."""

RING_FILES = 1024
"""Registered-file table per ring (files open at once across all calls on the ring), capped
at ``RLIMIT_NOFILE``, which the kernel applies to the table size. Direct descriptors use no
process file descriptors."""

PUMP_BUDGET = 8192
"""Completions handled per wake-up before yielding to the loop (~2 ms of cached reads)."""

PUMP_NS = 2_000_000
"""Time one wake-up may spend reaping and submitting before it yields to the loop (2 ms):
an asyncio library must not hold the loop, and the stall target is 10 ms. On the benchmark
machine, a whole cold 1 GiB read held the loop 131-718 ms in one pump before this bound existed."""

ASYNC_MIN = 256 * 1024
"""Reads from this size on are handed to the kernel's workers (``IOSQE_ASYNC``) instead of
being issued inline by ``io_uring_submit`` on the event loop's thread, where their page
faults (~1 ms per MiB of fresh memory here) and page-cache copies (~0.25 ms per MiB) would
stall the loop. Below it, inline completion is what makes cached small reads fast."""

# Compile-time numbers of the C helpers (the C loops use them as constants) stay in
# lsio/_c/os.h, each with where it comes from: LSIO_POPULATE_STEP (memory faulted in per
# madvise, 8 MiB), LSIO_CACHE_WINDOWS x LSIO_CACHE_WINDOW (page-cache sample, 4 x 1 MiB).

# -- Result memory -------------------------------------------------------------------------------

POOL_BYTES = 1 << 30
"""Most memory kept for reuse (1 GiB): one arena of the largest benchmark workload (10 000
files x 64 KiB = 655 MB) plus a smaller one. Kept memory is resident; see docs."""

REUSE_SLACK = 1.25
"""An arena is reused for a request of at least 1/1.25 of its size, so a pooled arena
never wastes more than 20% of what a call returns (the memory target allows 1.2x)."""

UNMAP_ASIDE = 16 << 20
"""Arenas from this size on are unmapped on a helper thread: returning 256 MiB of touched
pages to the kernel takes 30-50 ms here, and the last reference to a result often dies on
the event loop's thread (``res = await lsio.read_many(...)`` in a loop)."""

# -- Pipelines -----------------------------------------------------------------------------------

WINDOW = 2048
"""Requests read per window. Two windows are in memory at once (one decoding, one reading):
2048 chunks of zarr's common 1 MiB encoded size is 2 GiB at worst, 64 MiB for 32 KiB
chunks; large enough that planning and submission cost per window stays under 1%."""

WINDOW_BYTES = 32 << 20
"""Bytes read per window (past its first request; reads to the end of a file count as 0).
With big chunks the request count alone let every chunk of a call sit in memory beside the
decoded output: 48 HRRR-size GRIB2 files, 96 messages of ~3 MiB into 697 MiB, peaked at
1141 MiB RSS in one window; windows of 64 / 32 / 16 MiB peaked at 1076 / 954 / 892 MiB,
while behind a 30 ms proxy the same read took ~1.6 / 1.7 / 1.85 s (each window is a round
trip). 32 MiB is still ~10 such fields or 512 chunks of 64 KiB a window."""

JOB = 4
"""Chunks handed to a worker at once (a queue entry costs ~1 us; small jobs keep every
worker busy)."""

# -- The thread backend --------------------------------------------------------------------------

STAT_GROUP = 256
"""Paths stat'ed per job: big enough that the thread hop is amortised."""

# -- Blocking calls ------------------------------------------------------------------------------

SETTLE_SECONDS = 2.0
"""How long an interrupted blocking call waits for its cancelled reads to end (a cold
read in flight on a disk takes milliseconds; a stalled network filesystem may never end,
and Ctrl-C must still work)."""

# -- HTTP ----------------------------------------------------------------------------------------

REDIRECTS = 10
"""Most redirects followed for one request (aiohttp's and requests' default)."""

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses retried: timeouts, throttling and server errors (kvikio: 429/500/502/503/504)."""

MULTI_MAX_RANGES = 128
"""Ranges per multipart request: nginx's header buffer (8 KiB large_client_header) holds
~400 ranges of 2 GiB offsets; S3-style gateways cap headers at 8 KiB as well."""

MULTI_MAX_PART = 256 * 1024
"""Reads up to this size are batched into multipart requests; bigger ones cost their
transfer time more than a request, so they go alone (and in parallel)."""

BYTEARRAY_BELOW = 64 << 10
"""Below this many bytes a response body or a small call's result goes in a ``bytearray``
(zeroed, but ~4x cheaper to make than a numpy buffer or a pooled arena at this size, ~0.2 us
against ~5 us); above, in uninitialised or pooled memory, which pays off where fresh memory
would fault page by page."""

PREALLOCATE = 8 << 20
"""At most this many bytes of a body are allocated from its ``Content-Length`` before they
arrive; a longer body grows as its bytes come (a server may claim any length)."""

AWS_METADATA_TIMEOUT = 1
"""Seconds to wait for the EC2 instance-metadata service (botocore's default, 1 attempt):
off EC2 a closed port answers at once, an unrouted address costs this once per process;
botocore keeps whole seconds."""

GCS_REFRESH_MARGIN = 300.0
"""Refresh a GCS token that expires within this many seconds (5 minutes; google-auth's own
threshold is 3 min 45 s): long reads and clock skew never send an expired token. A token
shorter-lived than twice this is refreshed after half its life."""

AZURE_REFRESH_BEFORE = 300.0
"""Seconds before its expiry an Entra ID token is replaced (Azure's SDKs refresh 5 minutes
early)."""

AWS_REFRESH_BEFORE = 600.0
"""Seconds before their ``expiry`` keys from ``HttpOptions(aws_credentials=...)`` are asked
for again (botocore's mandatory refresh window, 10 minutes)."""

TOKEN_RETRY_AFTER = 30.0
"""After a failed token refresh while the old token still holds (GCS, Azure): seconds until
the next try (the reads go on with the old token meanwhile)."""

GCS_PAGE_SIZE = 1000
"""Objects per GCS listing page: the JSON API's default and maximum."""

LIST_CHUNK = 1000
"""Objects per chunk of ``lsio.obspec.Store.list`` (S3's and GCS's page size, so a chunk of
a remote listing is one page)."""

LIST_HEADS = 32
"""Objects of one listing chunk whose metadata ``lsio.obspec.Store.list`` asks for at once
(the listing pages carry names only): the ``cloud`` preset's queue depth, the requests in
flight a read call makes on an object store."""

STREAM_CHUNK = 10 << 20
"""Largest piece an ``lsio.obspec`` ``GetResult`` yields when iterated: obstore's default
``min_chunk_size`` of a stream (the bytes are in memory already; this only bounds what one
step hands over)."""

# -- HTTP: measuring a host (``backends/http/_cost.py``) -------------------------------------

COST_SAMPLES = 64
"""Answers remembered per host (the newest)."""

MIN_TTFB = 1
"""TTFB samples needed before the host's gap is trusted (one long answer, such as the size
probe of an object read whole, already tells both)."""

RATE_MIN_BYTES = 256 << 10
"""Bodies shorter than this say little about throughput (their time is mostly latency)."""

PROBE_BYTES = 1 << 20
"""The calibration read: long enough that its body time shows the stream rate."""

GAP_MAX = 8 << 20
"""Largest gap a calibration can give: the cloud preset's read size (a merged read is
split there anyway)."""

PART_FACTOR = 8
"""A part of a split read is worth its request when moving it takes this many times the
request's own cost: ``PART_FACTOR x TTFB x rate`` bytes (a request's fixed cost stays near
a tenth of its time). Real S3 (~20-30 ms, ~90 MB/s a stream) gives 15-22 MB (AWS advises
8-16 MB parts); Azurite on loopback (3.8 ms, 0.7 GB/s) ~21 MB, where a 512 MiB blob read
in 8 / 32 / 128 / 512 MiB parts took 1.09 / 0.91 / 0.85 / 1.24 s (obstore, one GET: 0.92 s);
an emulator that copies the whole object for every GET (moto: ~0.4 s for 512 MiB) gets
parts as large as the object."""

PART_MAX = 1 << 30
"""Largest part: a GiB in one request."""

# -- Zarr ----------------------------------------------------------------------------------------

BATCH_WINDOW = 1024
"""Most chunks read per window on the batched path; the next window reads while this one
decodes (two windows of 1024 x 64 KiB stored chunks is 128 MiB at most in flight)."""

BATCH_WINDOWS_MIN = 8
"""A read is cut into at least this many windows (of at least 64 chunks), so reading and
decoding overlap also for 1024 chunks (cold (a): one window ran at 0.92x tensorstore)."""

SLICE_JOBS_MIN = 8
"""From this many chunks on, their C jobs are worked out with numpy arrays at once
(:func:`._batched.slice_jobs`, ~1 us a chunk plus ~100 us); fewer, one by one (~8 us)."""

WHOLE_SHARDS_MIN = 8
"""From this many shards a selection covers whole on, each is read in one request (index and
inner chunks together) and decoded by the worker it lands on; fewer, the index first and
then the inner chunks, so that a few big shards still spread their decode over the workers
(a shard is one worker's job: 8 keeps the last one's tail short on 2-4 cores)."""

METADATA_CACHE = 256
"""Parsed ``zarr.json`` documents kept (by their bytes, ``lsio/_cache.py``): parsing one
costs ~2-5 ms here, as much as a sub-selection's decode; a few KiB each, so 256 arrays
cost ~1-2 MiB at most."""

CHAIN_CACHE = 64
"""Decode chains kept (by codecs, chunk shape and dtype): building one costs ~0.1 ms here;
each holds a per-thread scratch of one decoded chunk, hence fewer than the metadata."""

PLAN_CACHE = 64
"""A basic selection's chunk-grid jobs kept per layout and selection (``_grid``): ~0.1-0.2
ms here for one chunk, ~3 ms for 16 384 chunks; reused with the output's address added."""

PLAN_CACHE_BYTES = 16 << 20
"""Bytes of those jobs kept in all: ~240 bytes a chunk, so four whole-array plans of
16 384 chunks; a bigger plan is not kept (its decode costs far more than its planning)."""

FILE_CACHE = 4096
"""Entries kept per file-content cache (shard indexes: one per shard, keyed on the file's
identity): a 32768^2 array in 1024^2 shards has 1 024."""

FILE_CACHE_BYTES = 64 << 20
"""Bytes kept in all per file-content cache: a shard index is 16 bytes per inner chunk (1 KiB
for 64 inner chunks, 1 MiB for 65 536)."""

FILE_SETTLED = 1.0
"""Seconds a local file must be unchanged (its mtime and ctime that old) before what it
holds is cached: file times tick with the kernel's coarse clock (one 1-10 ms jiffy,
coarser on some network filesystems), so a rewrite of the same size within one tick keeps
the identity; git's "racy" index entries are the same problem."""

EACH_READ_AHEAD = 3
"""Windows read at once by ``read_each``'s ring windows (``lsio/_landing.py``; at most
``BATCH_WINDOW`` chunks each): cold 64x64 zarr chunks (1 824 files) took 0.27 s one window
at a time here, against 0.09-0.13 s for the ring reading them all in one call."""

EACH_INLINE_BYTES = 512 << 10
"""``read_each(threads=True)``: cached chunks whose callbacks write at most this many bytes
in all are read and handed over on the caller's thread (the event loop's, under ~1 ms
here: blosc-zstd decodes 256 KiB in ~0.4 ms) instead of the workers': a thread hop and
wake-up cost 0.3-0.5 ms on this VM, as much as the decode of one 256x256 float32 chunk. One
such chunk through zarr: 0.90 ms against 1.53 ms on the workers (zarrs 1.00, zarr's own
pipeline 1.96); four (1 MiB) were faster on the two workers (zarr arrays read one chunk at
a time, Dask tasks of one chunk)."""

EACH_PART_BYTES = 4 << 20
"""``read_each``: bytes the callbacks of one worker part write (at most ``SMALL_REQUESTS``
chunks read by one small-path call): 16 decoded chunks of 256x256 float32, so their stored
bytes are still in the CPU's cache when decoded; the parts are then evened out over the
workers."""

EACH_WORKER_READ_BYTES = 64 << 20
"""Most bytes one worker part reads at once (up to ``SMALL_REQUESTS`` chunks); bigger
parts go through the ring windows."""

POPULATE_MIN = 16 << 20
"""``prefault``: outputs from this size on are faulted in ahead of the decode calls; below
it the page faults cost little."""

WORKERS_PER_DASK_THREAD = 1
"""Pipeline workers per thread of a Dask ``distributed`` worker process (``nthreads``, Dask's
share of the host's CPUs for that process; ``$LSIO_WORKERS`` overrides): 2 worker processes
on 2 CPUs, each with one worker per host CPU, ran 4 threads on 2 CPUs."""

SHARED_OBJECTS = 32
"""Unpickled readers (and codec pipelines) a process keeps, one per identity
(``lsio/_shared.py``), so a Dask worker builds each once, not once per graph or task: a
reader costs 0.3-2 ms to build here, and a remote one its HTTP sessions and credentials
again. 32 covers the datasets and clients a worker serves at once; beyond, the least
recently used is forgotten (and built again if it comes back)."""

# -- The fsspec filesystem (lsio.fsspec) ------------------------------------------------------

FSSPEC_BLOCK_SIZE = 1 << 20
"""Default ``block_size`` of ``LsioFileSystem.open``. h5py (and netCDF4, cfgrib) read a file's
metadata in small scattered pieces (superblock, object headers, B-tree nodes: a few hundred
bytes to a few KiB each) between chunk reads; each block missed costs one request, ~0.3 ms
on loopback but 20-50 ms against a cloud store, so blocks are larger than those pieces but
not so large that a scattered read drags much unused data. Measured on the benchmark machine
(h5py reading a 26 MB NetCDF4 variable of 1 024 zlib+shuffle chunks through nginx, best of
2, 2 busy cores), ``blockcache``: 64 KiB 1.7 s, 256 KiB 0.57 s, 1 MiB 0.60 s, 4 MiB 0.83 s,
16 MiB 0.85 s; ``background``: 256 KiB 0.58 s, 1 MiB 0.39 s, 4 MiB 0.56 s. fsspec's own
default is 5 MiB."""

FSSPEC_CACHE = "background"
"""Default ``cache_type`` of ``LsioFileSystem.open``: fsspec's LRU of blocks (32) that
also fetches the next block on a worker thread while the caller works on this one. The LRU
keeps the metadata h5py returns to between chunks (``"readahead"`` keeps one window, which
each such jump throws away: readahead 64 KiB took 17.5 s above, 1 MiB 1.6 s); the
prefetch overlaps a sequential scan's reads with h5py's decoding. Same file, 1 MiB blocks,
median of 7 alternated rounds: background 0.52 s, blockcache 0.62 s, h5py on the local
file 0.52 s (decoding is most of it)."""

FSSPEC_GET_PIECE = 64 << 20
"""Piece size of ``LsioFileSystem.get``: a file is copied in reads of this many bytes, so
copying a large file holds at most one piece in memory."""

# -- Read-ahead for one-range-at-a-time callers (lsio/_readahead.py) -------------------------

READAHEAD_FIRST = 256 << 10
"""First read-ahead window of a path read sequentially through ``lsio.fsspec`` or
``lsio.obspec``; doubled with each window (the kernel's page cache grows its read-ahead the
same way, from a small first window). 256 KiB covers ~15 of the 17 KiB stored chunks
zarr's 10 reads in flight ask for at once (a 64 KiB zlib-4 chunk of the interop
benchmark)."""

READAHEAD_MAX = 4 << 20
"""Largest read-ahead window: the ``nvme`` preset's ``max_read`` and kvikio's task size;
a window bigger than this gains little on a store (a 4 MiB GET streams at full rate) and
holds more memory."""

READAHEAD_GAP = 1 << 20
"""A read starting at most this far past the end of the last read of its path continues
its stream (the ``cloud`` preset's ``max_gap``: reading through a 1 MiB gap costs about
what a new request costs)."""

READAHEAD_TTL = 2.0
"""Seconds a read-ahead window may serve reads: bytes served from read-ahead are never
older than this."""

READAHEAD_BUDGET = 64 << 20
"""Bytes of read-ahead windows one filesystem or store holds at most (the oldest windows
go first): 16 windows of the largest size."""

# -- lsio.grib -----------------------------------------------------------------------------------

GRIB_SCAN_BYTES = 64 << 10
"""A GRIB2 scan (no sidecar) reads this much a hop from each file: sections 0-4 of NCEP and
ECMWF messages take a few hundred bytes, so one hop covers a message's headers (and the next
messages' when messages are small); data sections are skipped unread. Every hop is one round
trip for each file still walking, which is why remote data should come with sidecars."""

GRIB_SIDECAR_BYTES = 64 << 20
"""A ``.idx`` / ``.index`` sidecar larger than this is refused (a GFS 0.25 degree ``.idx``
is ~60 KB, an ECMWF open-data ``.index`` ~1 MB): untrusted text never drives a bigger parse."""

GRIB_SIDECAR_LINE = 4096
"""Longest sidecar line accepted (real lines are under 200 bytes)."""
