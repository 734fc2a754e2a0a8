/* OS helpers beside the ring (interface in os.h): page-cache probes, faulting memory in,
   the filesystem's type. Compiled into lsio._uring with uring.c and small.c. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* mincore, MADV_* */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>

#include "os.h"

#ifndef __NR_cachestat
#define __NR_cachestat 451  /* same number on every architecture (unified table) */
#endif

/* Pages of [off, off+len) in the page cache: cachestat (Linux 6.5+), or mincore on a
   read-only mapping where cachestat is refused (it wants write access or ownership). */
static long long cached_pages(int fd, uint64_t off, uint64_t len) {
    struct { uint64_t off, len; } range = {off, len};
    struct { uint64_t cache, dirty, writeback, evicted, recently_evicted; } cs;
    if (syscall(__NR_cachestat, fd, &range, &cs, 0) == 0) return (long long)cs.cache;
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
    if (map == MAP_FAILED) return -1;
    size_t pages = (len + 4095) / 4096;
    unsigned char vec[256];
    long long cached = -1;
    if (pages <= sizeof(vec) && mincore(map, len, vec) == 0) {
        cached = 0;
        for (size_t i = 0; i < pages; i++) cached += vec[i] & 1;
    }
    munmap(map, len);
    return cached;
}

/* Share of a regular file's pages in the page cache, from LSIO_CACHE_WINDOWS windows of
   LSIO_CACHE_WINDOW bytes spread over it (os.h); -1 if unknown. Opens with
   O_NONBLOCK so a FIFO never blocks the caller. */
double lsio_cached_share(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return -1.0;
    struct stat st;
    double share = -1.0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        uint64_t size = (uint64_t)st.st_size, cached = 0, pages = 0;
        const uint64_t window = LSIO_CACHE_WINDOW;
        share = size == 0 ? 1.0 : -1.0;
        for (int k = 0; k < LSIO_CACHE_WINDOWS && size > 0; k++) {
            uint64_t o = (size / LSIO_CACHE_WINDOWS * (uint64_t)k) & ~(uint64_t)4095;
            uint64_t n = size - o < window ? size - o : window;
            long long c = cached_pages(fd, o, n);
            if (c < 0) { pages = 0; break; }
            cached += (uint64_t)c;
            pages += (n + 4095) / 4096;
            if (size <= window) break;
        }
        if (pages) share = (double)cached / (double)pages;
    }
    close(fd);
    return share;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  /* Linux 5.14 */
#endif

/* Fault in [addr, addr+len) for writing (MADV_POPULATE_WRITE): fresh memory then costs no
   page fault per 4 KiB page during the reads into it; pages already present cost a
   page-table walk. Done in steps of LSIO_POPULATE_STEP (os.h), so the address-space lock is
   never held long (an munmap waiting behind it would block every other thread's page
   faults) and a nonzero *stop (the call was stopped: cancelled or failed) ends it early. 0, or -errno (EINVAL
   before Linux 5.14: the reads fault as usual). */
#define POPULATE_STEP ((uintptr_t)LSIO_POPULATE_STEP)
int lsio_populate(unsigned long long addr, unsigned long long len, const int *stop) {
    uintptr_t page = 4096, lo = (uintptr_t)addr & ~(page - 1);
    uintptr_t hi = ((uintptr_t)(addr + len) + page - 1) & ~(page - 1);
    for (uintptr_t at = lo; at < hi; at += POPULATE_STEP) {
        if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)) return 0;
        size_t n = hi - at < POPULATE_STEP ? hi - at : POPULATE_STEP;
        if (madvise((void *)at, n, MADV_POPULATE_WRITE) != 0) return -errno;
    }
    return 0;
}

/* statfs f_type of the filesystem holding path (-errno on failure). */
long long lsio_fs_type(const char *path) {
    struct statfs sf;
    if (statfs(path, &sf) != 0) return -(long long)errno;
    return (long long)(unsigned long)sf.f_type & 0xffffffffLL;
}
