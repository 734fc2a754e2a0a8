/* lsio's io_uring engine: the interface Python sees.

   This header is also the cffi cdef (lsio/_uring_build.py reads it and drops the
   preprocessor lines other than numeric #defines), so every struct and constant is
   written once. Keep it to declarations cffi can parse: no #include, no #if. */

#ifndef LSIO_URING_H
#define LSIO_URING_H

/* lsio_batch.phase */
#define LSIO_PHASE_STAT 0
#define LSIO_PHASE_READ 1

/* lsio_batch.fdirect[f] */
#define LSIO_DIRECT_OFF 0
#define LSIO_DIRECT_ON 1

/* Feature flags, filled in by the compiler in uring.c (never guessed from versions). */
static const int LSIO_HAS_STATX_DIOALIGN;

/* One unit of work on a ring, described by arrays Python allocates and keeps alive until
   the batch is finished. Per file f: paths[f], fsize, falign, fdirect, ferr, fd, fop_start
   and fop_end (its reads are fop_start[f]..fop_end[f]), fnext, fpending, fstate, fpre.
   Per read op: ooff, olen, oaddr (destination address), odone, oerr. */
typedef struct lsio_batch {
    int phase;                 /* LSIO_PHASE_STAT or LSIO_PHASE_READ */
    int slot;                  /* this batch's slot on its ring (-1: not on one) */
    int stopping;              /* nothing new starts; set on failure or cancellation */
    int fail_fast;             /* a failed read stops the batch */
    long long inflight;        /* submissions not completed yet */
    long long max_inflight;    /* I/O (reads, statx) in flight at most: the queue depth */
    long long io;              /* I/O in flight now */
    long long nfiles;
    const char **paths;        /* NUL-terminated, one per file */
    long long *fsize;          /* stat: size; read: the size the plan was made with */
    int *falign;               /* stat: direct-I/O alignment (0 refused, -1 unknown) */
    int *fdirect;              /* read: LSIO_DIRECT_ON / LSIO_DIRECT_OFF */
    int *ferr;                 /* errno of the file's stat or open, 0 if it worked */
    int *fd;                   /* registered-table entry (or fpre's descriptor), -1 none */
    long long *fop_start;
    long long *fop_end;
    long long *fnext;          /* the file's next read to issue */
    long long *fpending;       /* the file's reads (or chain completions) in flight */
    long long nops;
    long long *ooff;
    long long *olen;
    unsigned long long *oaddr;
    long long *odone;          /* bytes read by each op */
    int *oerr;                 /* errno of each op, 0 if it worked */
    long long next_file;       /* the next file to start */
    long long nopen;           /* files open now */
    long long max_open;
    long long *active;         /* open files with reads left to issue (a stack) */
    long long nactive;
    long long *log;            /* completion order: files (stat) or ops (read) */
    long long nlog;
    unsigned char *statbuf;    /* stat: 256 bytes of struct statx per file */
    int *fstate;               /* per-file state bits (uring.c) */
    int *stop_flag;            /* shared by the pieces of one call on several rings */
    int *fpre;                 /* NULL, or per file a descriptor the caller opened (-1) */
    long long async_min;       /* reads from this many bytes on get IOSQE_ASYNC (0 never) */
    int missing_ok;            /* ENOENT at open does not stop the batch */
} lsio_batch;

typedef struct lsio_ring lsio_ring;

lsio_ring *lsio_ring_new(unsigned queue_depth, unsigned nfiles, int *err);
int lsio_ring_eventfd(lsio_ring *r);
void lsio_ring_free(lsio_ring *r);
void lsio_ring_forget(lsio_ring *r);
int lsio_ring_add(lsio_ring *r, lsio_batch *b);
void lsio_ring_remove(lsio_ring *r, lsio_batch *b);
int lsio_pump(lsio_ring *r, int max_cqes, long long max_ns);
int lsio_ring_more(lsio_ring *r);
int lsio_batch_finished(lsio_batch *b);
int lsio_batch_cancel(lsio_ring *r, lsio_batch *b);
int lsio_ring_drain(lsio_ring *r);
int lsio_run_blocking(lsio_ring *r, lsio_batch *b);
int lsio_ring_free_files(lsio_ring *r);
int lsio_ring_iowq(lsio_ring *r, int ncpus, const int *cpus, unsigned bounded);

#endif
