/* lsio's small-call path (interface and purpose in small.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* preadv2, RWF_NOWAIT */
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <linux/openat2.h>

#include "small.h"
#include "os.h"  /* lsio_populate */

#define PROBE_PAGE 4096  /* divides every page size Linux uses */

#ifndef RESOLVE_CACHED
#define RESOLVE_CACHED 0x20
#endif

/* The path lookup must not wait for the disk either: openat2's RESOLVE_CACHED fails with
   EAGAIN when a directory entry on the way is not in memory (Linux 5.12+; a name never
   looked up, present or absent, is such an entry). On older kernels this falls back to a
   plain open (a cold lookup then blocks for its few reads). O_NONBLOCK: opening a FIFO
   never waits for a writer (it is refused after the fstat). */
static int open_cached(const char *path, int wait) {
    static int plain = 0;
    int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    if (!plain && !wait) {
        struct open_how how;
        memset(&how, 0, sizeof(how));
        how.flags = (uint64_t)flags;
        how.resolve = RESOLVE_CACHED;
        long fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
        if (fd >= 0 || (errno != ENOSYS && errno != E2BIG)) return (int)fd;
        plain = 1;
    }
    return open(path, flags);
}

/* Read length bytes at offset into addr, never waiting for the disk (with wait, waiting:
   the cold path on a worker thread; a blocking read stops short only at the end of the
   file, so the reasoning below holds for it too). With probe, the range
   ends at the size the descriptor reported: one byte more is asked for, and getting it (the
   file grew) or not reaching the end (it shrank) is a miss. 1: served exactly; 0: a miss
   (not in the page cache, an error, or the file changed). */
static int read_nowait(int fd, long long offset, long long length, char *addr, int probe,
                       int wait) {
    char extra;
    long long got = 0;
    for (;;) {
        struct iovec iov[2] = {{addr + got, (size_t)(length - got)}, {&extra, 1}};
        int nv = probe ? 2 : 1;
        if (got == length) {  /* all asked-for bytes are in: is this the end of the file? */
            if (!probe) return 1;
            /* A read that never waits stops early only at a page boundary (the next page
               is not in memory); short of one, it stopped at the end of the file. */
            if (length > 0 && ((offset + length) & (PROBE_PAGE - 1))) return 1;
            iov[0] = iov[1];
            nv = 1;
        }
        ssize_t r = preadv2(fd, iov, nv, (off_t)(offset + got), wait ? 0 : RWF_NOWAIT);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return errno == EAGAIN && !wait ? -1 : 0;  /* not cached; an error */
        if (r == 0) return got == length;  /* end of file */
        got += r;
        if (got > length) return 0;  /* the file grew since its fstat */
    }
}

/* Open every file: files[2f] its descriptor (-1: missing, with missing_ok), files[2f+1]
   its size. 1: all opened; 0: a miss (what was opened is closed). */
int lsio_small_open(int nfiles, const char *blob, int missing_ok, int wait, long long *files) {
    for (int f = 0; f < nfiles; f++) files[2 * f] = -1;
    for (int f = 0; f < nfiles; f++, blob += strlen(blob) + 1) {
        int fd = open_cached(blob, wait);
        files[2 * f + 1] = 0;
        if (fd < 0) {
            if ((errno == ENOENT || errno == ENOTDIR) && missing_ok) continue;
            lsio_small_close(nfiles, files);
            return 0;
        }
        files[2 * f] = fd;
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            lsio_small_close(nfiles, files);
            return 0;
        }
        files[2 * f + 1] = (long long)st.st_size;
    }
    return 1;
}

void lsio_small_close(int nfiles, long long *files) {
    for (int f = 0; f < nfiles; f++) {
        if (files[2 * f] >= 0) close((int)files[2 * f]);
        files[2 * f] = -1;
    }
}

/* Parts of the arena from this size on are faulted in before the copies (below, a
   madvise costs more than the few faults it saves) */
#define SPLIT_POPULATE_MIN (256 * 1024)

/* One thread's share of a call: requests [lo, hi), landing from arena offset at on. */
struct share {
    int lo, hi;
    long long at, end;  /* its part of the arena: [at, end) */
    const long long *req, *files, *cap;
    const unsigned long long *dest;
    char *mem;
    long long *res;
    int n, wait;
    int *misses;  /* shared: reads missing the page cache still to redo waiting */
    int *failed;  /* shared: set by the first share that misses, seen by the others */
    int ok;
};

static void *read_share(void *arg) {
    struct share *s = arg;
    long long *start = s->res;
    long long at = s->at;
    s->ok = 0;
    /* Fresh result memory faults page by page inside the copies, which here costs about
       twice what faulting it in first does (20 000 x 4 KiB: ~50 ms of faults against
       ~25 ms populated, one core): each thread populates its own part. Best effort (Linux
       5.14+); malloc's memory reused from the heap is present already and costs a walk. */
    if (s->mem && s->end - s->at >= SPLIT_POPULATE_MIN)
        lsio_populate((unsigned long long)(uintptr_t)(s->mem + s->at),
                      (unsigned long long)(s->end - s->at), s->failed);
    for (int k = s->lo; k < s->hi; k++) {
        if (__atomic_load_n(s->failed, __ATOMIC_RELAXED)) return NULL;
        long long f = s->req[3 * k], offset = s->req[3 * k + 1], length = s->req[3 * k + 2];
        int fd = (int)s->files[2 * f];
        long long size = s->files[2 * f + 1], len = s->res[s->n + k];
        if (fd < 0) { start[k] = at; continue; }
        char *to = s->dest ? (char *)(uintptr_t)s->dest[k] : s->mem + at;
        int at_end = length < 0 || length > size - start[k];
        int ok = read_nowait(fd, start[k], len, to, at_end, s->wait);
        if (ok < 0 && __atomic_sub_fetch(s->misses, 1, __ATOMIC_RELAXED) >= 0)
            ok = read_nowait(fd, start[k], len, to, at_end, 1);  /* a page evicted */
        /* a suffix's start depends on the size: the file must still end there */
        if (ok > 0 && offset < 0 && !at_end) ok = read_nowait(fd, size, 0, NULL, 1, s->wait);
        if (ok <= 0) { __atomic_store_n(s->failed, 1, __ATOMIC_RELAXED); return NULL; }
        start[k] = s->dest ? 0 : at;
        at += s->dest ? 0 : len;
    }
    s->ok = 1;
    return NULL;
}

/* Resolve the requests (as lsio/_plan.py's resolve_ranges: clamped before adding, so no
   overflow) and read them: on up to `threads` threads (the caller's one of them), each
   copying a run of requests of about equal bytes into its own part of the arena, so the
   page-cache copies and the page faults of fresh memory spread over the cores. */
static long long serve(int n, const long long *req, const unsigned long long *dest,
                       const long long *cap, long long limit, const long long *files,
                       int wait, int threads, long long share, int misses, long long *res,
                       void **arena) {
    long long *start = res, *len = res + n, *missing = res + 2 * n;
    long long total = 0;
    res[3 * n] = 0;
    *arena = NULL;
    for (int k = 0; k < n; k++) {
        long long f = req[3 * k], offset = req[3 * k + 1], length = req[3 * k + 2];
        long long s = files[2 * f + 1];
        long long first = offset < 0 ? (s + offset > 0 ? s + offset : 0)
                                     : (offset < s ? offset : s);
        long long room = s - first;
        missing[k] = files[2 * f] < 0;
        res[3 * n] += missing[k];
        start[k] = first;
        len[k] = (length < 0 || length > room) ? room : length;
        if (dest && cap[k] < len[k]) return LSIO_SMALL_MISS;  /* the bulk path names it */
        /* saturating: lengths near 2^63 (huge sparse files) must not wrap the total */
        total = len[k] > LLONG_MAX - total ? LLONG_MAX : total + len[k];
    }
    res[3 * n + 1] = total;
    if (total > limit) return LSIO_SMALL_BIG;
    char *mem = NULL;
    if (!dest && !(mem = malloc(total ? (size_t)total : 1))) return LSIO_SMALL_MISS;
    /* a thread is worth starting for `share` bytes of work, a request counting a page */
    long long work = total > LLONG_MAX / 2 ? LLONG_MAX / 2 : total + (long long)n * 4096;
    if (share > 0 && threads > work / share) threads = (int)(work / share);
    if (threads > LSIO_SMALL_THREADS) threads = LSIO_SMALL_THREADS;
    if (threads > n) threads = n;
    if (threads < 1) threads = 1;
    struct share shares[LSIO_SMALL_THREADS];
    pthread_t tids[LSIO_SMALL_THREADS];
    int started[LSIO_SMALL_THREADS] = {0};
    int failed = 0;
    /* cut where the bytes so far pass t/threads of the total (request counts for
       caller buffers, whose sizes need not match the requests') */
    long long at = 0, seen = 0;
    int k = 0;
    for (int t = 0; t < threads; t++) {
        struct share *s = &shares[t];
        s->lo = k; s->at = at; s->req = req; s->files = files; s->cap = cap; s->dest = dest;
        s->mem = mem; s->res = res; s->n = n; s->wait = wait; s->failed = &failed; s->ok = 0;
        s->misses = &misses;
        long long goal = total / threads * (t + 1);
        if (t == threads - 1) k = n;
        else while (k < n && (dest ? k < (long long)n * (t + 1) / threads : seen < goal)) {
            seen += len[k];
            at += dest ? 0 : len[k];
            k++;
        }
        s->hi = k;
        s->end = t == threads - 1 ? total : at;
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, read_share, &shares[t]) == 0;
    read_share(&shares[0]);
    int ok = shares[0].ok;
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else if (ok) read_share(&shares[t]);  /* no thread to be had: read it here */
        ok = ok && shares[t].ok;
    }
    if (!ok) { free(mem); return LSIO_SMALL_MISS; }
    *arena = mem;
    return total;
}

long long lsio_small_serve(int n, const long long *req, const unsigned long long *dest,
                           const long long *cap, long long limit, int nfiles, long long *files,
                           int keep_open, int wait, int threads, long long share,
                           int misses, long long *res, void **arena) {
    long long ret = serve(n, req, dest, cap, limit, files, wait, threads, share, misses, res,
                          arena);
    if (!(keep_open && ret == LSIO_SMALL_BIG)) lsio_small_close(nfiles, files);
    return ret;
}

void lsio_small_free(void *arena) { free(arena); }
