/* lsio's io_uring engine (interface and theory in uring.h and lsio/_ring.py).

   Python never touches an SQE or a CQE: lsio_pump reaps every ready completion, advances
   each file's little state machine (statx -> open -> read... -> close) and refills the
   submission queue up to the queue depth, all in one call. Batches describe their work as
   arrays that Python allocates and keeps alive. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* cpu_set_t (Python's headers define it already) */
#endif
#include <sched.h>
#include <liburing.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "uring.h"

#ifdef STATX_DIOALIGN
static const int LSIO_HAS_STATX_DIOALIGN = 1;
#else
#define STATX_DIOALIGN 0x00002000U
static const int LSIO_HAS_STATX_DIOALIGN = 0;
#endif

#define MAX_SLOTS 4096
enum { K_STATX = 1, K_OPEN = 2, K_READ = 3, K_CLOSE = 4, K_CANCEL = 5 };
/* fstate bits */
enum { F_CHAIN = 1, F_RETRY_BUFFERED = 2, F_RESUME = 4, F_CANCELLED = 8, F_CLOSING = 16,
       F_PLAIN = 32 /* a descriptor the caller opened (fpre): no open, no close here */ };

typedef struct lsio_ring {
    struct io_uring ring;
    int efd;
    unsigned qd;
    long long inflight;
    unsigned rr;               /* round-robin start in order[] */
    int norder;                /* live batches, compact, for filling */
    lsio_batch *order[MAX_SLOTS];
    lsio_batch *slots[MAX_SLOTS];  /* slot -> batch, for completions */
    int nfree;                 /* free entries of the registered file table */
    int *free_files;
    int more;                  /* the last pump stopped at its time budget, work is left */
} lsio_ring;

static inline uint64_t pack(int slot, int kind, long long idx) {
    return ((uint64_t)slot << 40) | ((uint64_t)kind << 36) | (uint64_t)idx;
}

/* Files are opened as io_uring direct descriptors (a sparse registered table): they use no
   process file descriptors, so RLIMIT_NOFILE only bounds the table's size, and an open can
   be linked to the read and close that follow it in one submission. */
lsio_ring *lsio_ring_new(unsigned queue_depth, unsigned nfiles, int *err) {
    lsio_ring *r = calloc(1, sizeof(lsio_ring));
    if (!r) { *err = ENOMEM; return NULL; }
    r->free_files = calloc(nfiles ? nfiles : 1, sizeof(int));
    if (!r->free_files) { *err = ENOMEM; free(r); return NULL; }
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    /* A completion queue twice the submission queue; in-flight work is capped at the
       queue depth, so it cannot overflow. */
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = queue_depth * 2;
    int ret = io_uring_queue_init_params(queue_depth, &r->ring, &p);
    if (ret < 0) { *err = -ret; free(r->free_files); free(r); return NULL; }
    if (nfiles) {
        ret = io_uring_register_files_sparse(&r->ring, nfiles);
        if (ret < 0) {
            *err = -ret; io_uring_queue_exit(&r->ring); free(r->free_files); free(r);
            return NULL;
        }
        for (unsigned i = 0; i < nfiles; i++) r->free_files[i] = (int)(nfiles - 1 - i);
        r->nfree = (int)nfiles;
    }
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->efd < 0) { *err = errno; goto fail; }
    ret = io_uring_register_eventfd(&r->ring, r->efd);
    if (ret < 0) { *err = -ret; close(r->efd); goto fail; }
    r->qd = queue_depth;
    *err = 0;
    return r;
fail:
    io_uring_queue_exit(&r->ring);
    free(r->free_files);
    free(r);
    return NULL;
}

int lsio_ring_eventfd(lsio_ring *r) { return r->efd; }
int lsio_ring_free_files(lsio_ring *r) { return r->nfree; }
int lsio_ring_more(lsio_ring *r) { return r->more; }

/* Where and how many of the kernel's worker threads (io-wq) serve this ring: big reads
   are handed to them (IOSQE_ASYNC), and on a small machine their copies and page faults
   would otherwise take every core from the event loop's thread. ncpus 0: no change;
   bounded 0: no change. */
int lsio_ring_iowq(lsio_ring *r, int ncpus, const int *cpus, unsigned bounded) {
    int ret = 0;
    if (ncpus > 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int i = 0; i < ncpus; i++) CPU_SET(cpus[i], &set);
        ret = io_uring_register_iowq_aff(&r->ring, sizeof(set), &set);
        if (ret < 0) return ret;
    }
    if (bounded > 0) {
        unsigned values[2] = {bounded, 0};
        ret = io_uring_register_iowq_max_workers(&r->ring, values);
    }
    return ret;
}

/* Stop a batch: nothing new starts, and every read it has in flight is asked to stop
   (IORING_OP_ASYNC_CANCEL on each open file). Reads the device already holds cannot be
   cancelled; they complete as usual. The batch finishes once every completion is in. */
int lsio_batch_cancel(lsio_ring *r, lsio_batch *b) {
    b->stopping = 1;
    int n = 0;
    if (b->phase != LSIO_PHASE_READ) return 0;
    for (long long f = 0; f < b->nfiles; f++) {
        if (b->fd[f] < 0 || (b->fstate[f] & F_CLOSING)) continue;
        if (b->fpending[f] == 0 && !(b->fstate[f] & F_CHAIN)) continue;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        if (!sqe) { io_uring_submit(&r->ring); sqe = io_uring_get_sqe(&r->ring); }
        if (!sqe) break;
        unsigned flags = IORING_ASYNC_CANCEL_ALL;
        if (!(b->fstate[f] & F_PLAIN)) flags |= IORING_ASYNC_CANCEL_FD_FIXED;
        io_uring_prep_cancel_fd(sqe, b->fd[f], flags);
        /* its completion belongs to no batch (slot MAX_SLOTS - 1 is never handed out) */
        io_uring_sqe_set_data64(sqe, pack(MAX_SLOTS - 1, K_CANCEL, 0));
        r->inflight++;
        n++;
    }
    if (n) io_uring_submit(&r->ring);
    return n;
}

void lsio_ring_free(lsio_ring *r) {
    if (!r) return;
    io_uring_unregister_eventfd(&r->ring);
    io_uring_queue_exit(&r->ring);
    close(r->efd);
    free(r->free_files);
    free(r);
}

/* In a forked child, for a ring inherited from the parent: release only this process's
   view of it (its mappings of the queues and its copies of the two descriptors). The ring
   itself is the parent's, still in use: no completion is reaped, the eventfd stays
   registered, nothing is drained. */
void lsio_ring_forget(lsio_ring *r) {
    if (!r) return;
    io_uring_queue_exit(&r->ring);  /* munmap and close(ring_fd), nothing else here */
    close(r->efd);
    free(r->free_files);
    free(r);
}

int lsio_ring_add(lsio_ring *r, lsio_batch *b) {
    for (int i = 0; i < MAX_SLOTS - 1; i++) {  /* the last slot tags cancel requests */
        if (!r->slots[i]) {
            r->slots[i] = b; b->slot = i; r->order[r->norder++] = b; return i;
        }
    }
    return -1;
}

void lsio_ring_remove(lsio_ring *r, lsio_batch *b) {
    if (b->slot >= 0 && r->slots[b->slot] == b) r->slots[b->slot] = NULL;
    for (int i = 0; i < r->norder; i++) {
        if (r->order[i] == b) { r->order[i] = r->order[--r->norder]; break; }
    }
    b->slot = -1;
}

int lsio_batch_finished(lsio_batch *b) {
    if (b->inflight) return 0;
    if (b->phase == LSIO_PHASE_STAT) return b->stopping || b->nlog == b->nfiles;
    return b->nopen == 0 && (b->stopping || b->nlog == b->nops);
}

static struct io_uring_sqe *get_sqe(lsio_ring *r, lsio_batch *b, int kind, long long idx) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) {  /* the queue is full of unsubmitted entries: hand them over first */
        io_uring_submit(&r->ring);
        sqe = io_uring_get_sqe(&r->ring);
    }
    r->inflight++;
    b->inflight++;
    if (kind == K_READ || kind == K_STATX) b->io++;  /* the queue depth counts I/O only */
    io_uring_sqe_set_data64(sqe, pack(b->slot, kind, idx));
    return sqe;
}

static struct io_uring_sqe *prep_read(lsio_ring *r, lsio_batch *b, long long file,
                                      long long op) {
    struct io_uring_sqe *sqe = get_sqe(r, b, K_READ, op);
    long long done = b->odone[op];
    long long want = b->olen[op] - done;
    io_uring_prep_read(sqe, b->fd[file], (void *)(uintptr_t)(b->oaddr[op] + done),
                       (unsigned)want, (unsigned long long)(b->ooff[op] + done));
    if (!(b->fstate[file] & F_PLAIN)) sqe->flags |= IOSQE_FIXED_FILE;
    /* Big reads go straight to the kernel's workers: issued inline, their page faults
       (fresh memory) and page-cache copies run on the caller's thread, which is the
       event loop's (a 4 MiB read into fresh memory takes ~4 ms here). */
    if (b->async_min > 0 && want >= b->async_min) sqe->flags |= IOSQE_ASYNC;
    return sqe;
}

static void prep_close(lsio_ring *r, lsio_batch *b, long long file) {
    if (b->fstate[file] & F_PLAIN) {  /* the caller's descriptor: the caller closes it */
        b->fd[file] = -1;
        b->nopen--;
        return;
    }
    b->fstate[file] |= F_CLOSING;  /* fd[] keeps the table entry until the close completes */
    struct io_uring_sqe *sqe = get_sqe(r, b, K_CLOSE, file);
    io_uring_prep_close_direct(sqe, (unsigned)b->fd[file]);
}

/* Open a file into a free table entry. A file read by a single read gets the whole chain
   at once: open -> read -> close (the close hard-linked so it runs whatever the read did;
   a short read is resumed by a new chain). Others open alone, then read, then close. */
static void start_file(lsio_ring *r, lsio_batch *b, long long file) {
    if (b->fpre && b->fpre[file] >= 0) {  /* opened by the caller: read it at once */
        b->fd[file] = b->fpre[file];
        b->fstate[file] = F_PLAIN;
        b->nopen++;
        b->active[b->nactive++] = file;
        return;
    }
    int entry = r->free_files[--r->nfree];
    b->fd[file] = entry;
    b->nopen++;
    int flags = O_RDONLY;  /* direct descriptors refuse O_CLOEXEC (they have no fd) */
    if (b->fdirect[file] == LSIO_DIRECT_ON) flags |= O_DIRECT;
    int chain = (b->fop_end[file] - b->fnext[file] == 1) || (b->fstate[file] & F_RESUME);
    struct io_uring_sqe *sqe = get_sqe(r, b, K_OPEN, file);
    io_uring_prep_openat_direct(sqe, AT_FDCWD, b->paths[file], flags, 0, (unsigned)entry);
    if (!chain) { b->fstate[file] = 0; return; }
    b->fstate[file] = F_CHAIN;
    sqe->flags |= IOSQE_IO_LINK;
    long long op = b->fnext[file] == b->fop_end[file] ? b->fnext[file] - 1 : b->fnext[file]++;
    b->fpending[file] = 3;  /* for a chain: completions still to come (open, read, close) */
    sqe = prep_read(r, b, file, op);
    sqe->flags |= IOSQE_IO_HARDLINK;
    prep_close(r, b, file);
}

/* Binary search: which file owns op (ops are grouped by file, files in order). */
static long long file_of_op(lsio_batch *b, long long op) {
    long long lo = 0, hi = b->nfiles - 1;
    while (lo < hi) {
        long long mid = (lo + hi + 1) / 2;
        if (b->fop_start[mid] <= op) lo = mid; else hi = mid - 1;
    }
    return lo;
}

static void fail(lsio_batch *b, int err) {
    /* a file deleted since the stat is a missing file, not a failure, under missing_ok */
    if ((err == ENOENT || err == ENOTDIR) && b->missing_ok) return;
    if (b->fail_fast) {
        b->stopping = 1;
        /* sibling batches of one call, on other threads' rings, stop too */
        if (b->stop_flag) __atomic_store_n(b->stop_flag, 1, __ATOMIC_RELAXED);
    }
}

static void op_finished(lsio_ring *r, lsio_batch *b, long long file, long long op) {
    b->log[b->nlog++] = op;
    b->fpending[file]--;
    if (b->fpending[file] == 0 && (b->fnext[file] == b->fop_end[file] || b->stopping)
        && b->fd[file] >= 0 && !(b->fstate[file] & F_CLOSING)) {
        prep_close(r, b, file);
    }
}

static void fail_ops(lsio_batch *b, long long file, int err, long long from) {
    for (long long op = from; op < b->fop_end[file]; op++) {
        b->oerr[op] = err;
        b->log[b->nlog++] = op;
    }
    b->fnext[file] = b->fop_end[file];
    fail(b, err);
}

/* One completion of an open -> read -> close chain arrived. The kernel may post them in
   any order when the chain is cut short, so decisions wait for all three. */
static void chain_step(lsio_ring *r, lsio_batch *b, long long file) {
    if (--b->fpending[file] > 0) return;
    r->free_files[r->nfree++] = b->fd[file];
    b->fd[file] = -1;
    b->nopen--;
    long long op = b->fop_end[file] - 1;
    int st = b->fstate[file];
    if ((st & (F_RETRY_BUFFERED | F_RESUME)) && !b->ferr[file] && !b->oerr[op]
        && !b->stopping) {
        b->fstate[file] = st | F_RESUME;
        start_file(r, b, file);
        return;
    }
    if (!b->oerr[op] && b->ferr[file]) b->oerr[op] = b->ferr[file];
    if (!b->oerr[op] && (st & F_CANCELLED) && !b->stopping) b->oerr[op] = ECANCELED;
    if (b->oerr[op]) fail(b, b->oerr[op]);
    b->log[b->nlog++] = op;
}

static void handle(lsio_ring *r, struct io_uring_cqe *cqe) {
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    int slot = (int)(ud >> 40);
    int kind = (int)((ud >> 36) & 0xf);
    long long idx = (long long)(ud & ((1ULL << 36) - 1));
    int res = cqe->res;
    lsio_batch *b = r->slots[slot];
    r->inflight--;
    if (!b) return;
    b->inflight--;
    if (kind == K_READ || kind == K_STATX) b->io--;
    switch (kind) {
    case K_STATX: {
        unsigned char *sx = b->statbuf + 256 * idx;
        if (res < 0) { b->ferr[idx] = -res; fail(b, -res); }
        else {
            uint32_t mask; uint16_t mode; uint64_t size; uint32_t dio_off;
            memcpy(&mask, sx + 0x00, 4);
            memcpy(&mode, sx + 0x1c, 2);
            memcpy(&size, sx + 0x28, 8);
            memcpy(&dio_off, sx + 0x9c, 4);
            b->fsize[idx] = (long long)size;
            if (S_ISDIR(mode)) { b->ferr[idx] = EISDIR; fail(b, EISDIR); }
            /* FIFOs, sockets and devices have no size to plan with (a FIFO would block a
               read forever): refused, the caller names the file's type */
            else if (!S_ISREG(mode)) { b->ferr[idx] = EINVAL; fail(b, EINVAL); }
            /* -1: alignment unknown (old kernel); 0: filesystem refuses O_DIRECT */
            b->falign[idx] = (mask & STATX_DIOALIGN) ? (int)dio_off : -1;
        }
        b->log[b->nlog++] = idx;
        break;
    }
    case K_OPEN: {
        int chained = b->fstate[idx] & F_CHAIN;
        if (res < 0 && res == -EINVAL && b->fdirect[idx] == LSIO_DIRECT_ON) {
            /* the filesystem refuses O_DIRECT: read this file through the page cache */
            b->fdirect[idx] = LSIO_DIRECT_OFF;
            if (chained) { b->fstate[idx] |= F_RETRY_BUFFERED; chain_step(r, b, idx); break; }
            r->free_files[r->nfree++] = b->fd[idx];
            b->nopen--;
            start_file(r, b, idx);
            break;
        }
        if (res < 0) b->ferr[idx] = -res;
        if (chained) { chain_step(r, b, idx); break; }
        if (res < 0) {
            r->free_files[r->nfree++] = b->fd[idx];
            b->fd[idx] = -1;
            b->nopen--;
            fail_ops(b, idx, -res, b->fnext[idx]);
            break;
        }
        if (b->stopping) { prep_close(r, b, idx); break; }
        b->active[b->nactive++] = idx;
        break;
    }
    case K_READ: {
        long long op = idx;
        long long file = file_of_op(b, op);
        int chained = b->fstate[file] & F_CHAIN;
        int again = 0;
        if (res == -ECANCELED && chained) {
            b->fstate[file] |= F_CANCELLED;
        } else if (res == -EAGAIN || res == -EINTR) {
            if (b->stopping) b->oerr[op] = -res; else again = 1;
        } else if (res < 0) {
            b->oerr[op] = -res;
        } else if (res > 0) {
            b->odone[op] += res;
            /* short read: resume where it stopped */
            again = b->odone[op] < b->olen[op] && b->ooff[op] + b->odone[op] < b->fsize[file]
                    && !b->stopping;
        }
        if (chained) {
            /* Its file is closing. A short read is not resumed by reopening the path: the
               path may name another version of the file by now. It stays short, and the
               caller, seeing fewer bytes than the size it planned with, plans again. */
            chain_step(r, b, file);
            break;
        }
        if (again) { prep_read(r, b, file, op); break; }
        if (b->oerr[op]) fail(b, b->oerr[op]);
        op_finished(r, b, file, op);
        break;
    }
    case K_CLOSE: {
        if (b->fstate[idx] & F_CHAIN) { chain_step(r, b, idx); break; }
        r->free_files[r->nfree++] = b->fd[idx];
        b->fd[idx] = -1;
        b->nopen--;
        break;
    }
    }
}

static void fill(lsio_ring *r, lsio_batch *b) {
    if (b->stop_flag && __atomic_load_n(b->stop_flag, __ATOMIC_RELAXED)) b->stopping = 1;
    if (b->stopping) {
        /* Nothing new starts; files that are open with no read in flight are closed
           now (the others close when their last read completes). */
        while (b->nactive > 0 && r->inflight < (long long)r->qd) {
            long long f = b->active[--b->nactive];
            if (b->fpending[f] == 0 && b->fd[f] >= 0 && !(b->fstate[f] & F_CLOSING))
                prep_close(r, b, f);
        }
        return;
    }
    /* +3: room for a whole open -> read -> close chain */
    while (r->inflight + 3 <= (long long)r->qd && b->io < b->max_inflight) {
        if (b->phase == LSIO_PHASE_STAT) {
            if (b->next_file >= b->nfiles) return;
            long long f = b->next_file++;
            struct io_uring_sqe *sqe = get_sqe(r, b, K_STATX, f);
            io_uring_prep_statx(sqe, AT_FDCWD, b->paths[f], 0,
                                STATX_TYPE | STATX_SIZE | STATX_DIOALIGN,
                                (struct statx *)(b->statbuf + 256 * f));
        } else if (b->nactive > 0) {
            long long f = b->active[b->nactive - 1];
            long long op = b->fnext[f]++;
            b->fpending[f]++;
            if (b->fnext[f] == b->fop_end[f]) b->nactive--;
            prep_read(r, b, f, op);
        } else if (b->next_file < b->nfiles && b->nopen < b->max_open && r->nfree > 0) {
            long long f = b->next_file++;
            if (b->fop_start[f] == b->fop_end[f]) continue;
            start_file(r, b, f);
        } else {
            return;
        }
    }
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* max_ns > 0: return once that much time has passed (the event loop's thread calls this,
   and completions arriving as fast as submit makes them would otherwise keep it here). */
int lsio_pump(lsio_ring *r, int max_cqes, long long max_ns) {
    int total = 0;
    r->more = 0;
    long long deadline = max_ns > 0 ? now_ns() + max_ns : 0;
    for (;;) {
        struct io_uring_cqe *cqes[256];
        unsigned n = io_uring_peek_batch_cqe(&r->ring, cqes, 256);
        for (unsigned i = 0; i < n; i++) handle(r, cqes[i]);
        io_uring_cq_advance(&r->ring, n);
        total += (int)n;
        for (int k = 0; k < r->norder; k++) {
            if (r->inflight >= (long long)r->qd) break;
            fill(r, r->order[(r->rr + k) % r->norder]);
        }
        r->rr = r->norder ? (r->rr + 1) % r->norder : 0;
        int ret = io_uring_submit(&r->ring);
        if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR) return ret;
        /* Cached reads complete inside submit: keep going while that happens, but hand
           control back to the event loop now and then. */
        if (n == 0 && io_uring_cq_ready(&r->ring) == 0) break;
        if (total >= max_cqes) break;
        if (deadline && now_ns() >= deadline) { r->more = 1; break; }
    }
    return total;
}

/* Drive one batch to completion on a ring private to the calling thread, blocking in the
   kernel between completions. Called with the GIL released, so several threads (each with
   its own ring) spread page-cache copies over all cores. */
int lsio_run_blocking(lsio_ring *r, lsio_batch *b) {
    if (lsio_ring_add(r, b) < 0) return -EBUSY;
    int ret = 0;
    for (;;) {
        ret = lsio_pump(r, 1 << 30, 0);
        if (ret < 0 || lsio_batch_finished(b)) break;
        struct io_uring_cqe *cqe;
        ret = io_uring_wait_cqe(&r->ring, &cqe);
        if (ret < 0 && ret != -EINTR) { b->stopping = 1; lsio_ring_drain(r); break; }
    }
    lsio_ring_remove(r, b);
    return ret < 0 ? ret : 0;
}

/* Stop every batch and block until the kernel has finished with all of their memory and
   every file they opened is closed. Used when a ring is torn down. */
int lsio_ring_drain(lsio_ring *r) {
    for (int i = 0; i < r->norder; i++) r->order[i]->stopping = 1;
    for (;;) {
        int ret = lsio_pump(r, 1 << 30, 0);
        if (ret < 0) return ret;
        if (r->inflight == 0) return 0;  /* pump submitted every close it needed */
        struct io_uring_cqe *cqe;
        ret = io_uring_wait_cqe(&r->ring, &cqe);
        if (ret < 0 && ret != -EINTR) return ret;
    }
}
