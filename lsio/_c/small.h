/* lsio's small-call path: the interface Python sees (also the cffi cdef; see uring.h).

   A call of a few requests whose data is in the page cache is served here, in one C call
   on the caller's thread, with no event-loop round trip: open every file and take its size
   from the descriptor, resolve each request against it, then copy the bytes with reads
   that never wait for the disk (RWF_NOWAIT). Whatever cannot be served that way (a path
   lookup or a page not in memory, an error, a file that changed, more than the limit) is
   reported as a miss before any result exists, and the caller hands the whole call to the
   bulk path, which reads through io_uring and the event loop and raises the errors. */

#ifndef LSIO_SMALL_H
#define LSIO_SMALL_H

/* lsio_small_serve's return values when it does not serve the call */
#define LSIO_SMALL_MISS -1
#define LSIO_SMALL_BIG -2
/* most threads one call copies on (the caller's included) */
#define LSIO_SMALL_THREADS 16

/* files[2f], files[2f+1]: file f's descriptor (-1: missing, with missing_ok) and size,
   for the nfiles NUL-terminated paths packed one after another in blob. Returns 1, or 0
   on a miss (then nothing is left open). lsio_small_close closes them. With wait, the
   lookups (and lsio_small_serve's reads with wait) may wait for the disk: the cold path,
   run on a worker thread. */
int lsio_small_open(int nfiles, const char *blob, int missing_ok, int wait, long long *files);
void lsio_small_close(int nfiles, long long *files);

/* Per request k (req[3k], req[3k+1], req[3k+2]): file index, offset (negative: from the
   end) and length (-1: to the end). dest: NULL, or per request the caller's buffer address
   with cap[k] bytes. On success res holds n starts (in *arena), n lengths, n missing flags
   (1: the file does not exist, missing_ok), the number of missing requests, and the bytes
   the call returns; *arena is the malloc'd memory of every result (dest NULL; free it with
   lsio_small_free) and the return value is the bytes returned. LSIO_SMALL_MISS on a miss;
   LSIO_SMALL_BIG, nothing read, when they would exceed limit (res[3n+1] says how many).
   The copies run on up to `threads` threads (the calling one and threads - 1 started
   for the call, each a run of requests of about equal bytes; at most LSIO_SMALL_THREADS),
   no more than one per `share` bytes of work (a request counts a 4 KiB page more).
   Up to `misses` reads (in all, whichever thread meets them) that miss the page cache are read
   again waiting for the disk (for callers that may block); one more is a miss of the call.
   The nfiles files are closed on return, but for LSIO_SMALL_BIG with keep_open. */
long long lsio_small_serve(int n, const long long *req, const unsigned long long *dest,
                           const long long *cap, long long limit, int nfiles, long long *files,
                           int keep_open, int wait, int threads, long long share,
                           int misses, long long *res, void **arena);
void lsio_small_free(void *arena);

#endif
