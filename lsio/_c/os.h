/* OS helpers lsio uses beside the ring: page-cache probes, faulting memory in, the
   filesystem's type. Nothing here touches io_uring (that is uring.h).

   This header is also part of the cffi cdef of lsio._uring (see uring.h for the rules:
   declarations cffi can parse, numeric #defines only). */

#ifndef LSIO_OS_H
#define LSIO_OS_H

/* Tuning numbers chosen by measurement, compile-time because the C loops use them as
   constants (lsio/_defaults.py points here):
   LSIO_POPULATE_STEP: lsio_populate faults memory in steps of 8 MiB, short enough that the
   address-space lock is never held long (an munmap waiting behind it blocks every other
   thread's page faults), long enough that the madvise calls cost nothing next to the
   faults they save.
   LSIO_CACHE_WINDOWS x LSIO_CACHE_WINDOW: lsio_cached_share looks at four 1 MiB windows
   spread over a file (looking at every page of a 2 GiB file costs milliseconds). */
#define LSIO_POPULATE_STEP 8388608
#define LSIO_CACHE_WINDOWS 4
#define LSIO_CACHE_WINDOW 1048576

/* Share of a regular file's pages in the page cache, sampled; -1 if unknown. */
double lsio_cached_share(const char *path);
/* Fault [addr, addr+len) in for writing; 0, or -errno. A nonzero *stop ends it early. */
int lsio_populate(unsigned long long addr, unsigned long long len, const int *stop);
/* statfs f_type of the filesystem holding path (-errno on failure). */
long long lsio_fs_type(const char *path);

#endif
