/* What the two ceiling clients (uring_http.c, curl_multi.c) share: failing loudly, clocks,
 * the list of paths, and checking a few landed bodies against the files. */
#ifndef CEILING_COMMON_H
#define CEILING_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void die(const char *what) {
    perror(what);
    exit(2);
}

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The non-empty lines of file, *n of them. */
static char **read_lines(const char *file, int *n) {
    FILE *f = fopen(file, "r");
    if (f == NULL) die(file);
    int cap = 1024;
    char **v = malloc((size_t)cap * sizeof *v);
    if (v == NULL) die("malloc");
    char line[1024];
    *n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0] == 0) continue;
        if (*n == cap) {
            char **w = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (w == NULL) die("realloc");
            v = w;
        }
        v[(*n)++] = strdup(line);
    }
    fclose(f);
    return v;
}

/* Compare a few of the n bodies (slot i at out + i * slot, got[i] bytes) with the files
 * root + paths[i]; the number that differ. */
static int verify_slots(int n, char **paths, size_t slot, const char *out, const int64_t *got,
                        const char *root) {
    int bad = 0;
    char *disk = malloc(slot);
    if (disk == NULL) die("malloc");
    for (int i = 0; i < n; i += n / 7 + 1) {
        char path[2048];
        snprintf(path, sizeof path, "%s%s", root, paths[i]);
        FILE *f = fopen(path, "rb");
        if (f == NULL) die(path);
        size_t len = fread(disk, 1, slot, f);
        fclose(f);
        if ((int64_t)len != got[i] || memcmp(disk, out + (size_t)i * slot, len) != 0) {
            fprintf(stderr, "verify: %s differs\n", path);
            bad++;
        }
    }
    free(disk);
    return bad;
}

#endif
