/* What the two io_uring clients (uring_http.c, uring_https.c) share: the ring's set-up, the
 * blocking connect at setup and the parser of an HTTP/1.1 response head. Include it after defining _GNU_SOURCE
 * (memmem). */
#ifndef CEILING_HTTP1_H
#define CEILING_HTTP1_H

#include <errno.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common.h"

/* A ring of `entries` for one issuing thread, its completions reaped when it waits (what an
 * older kernel refuses: a plain ring). */
static void ring_init(struct io_uring *ring, unsigned entries) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int r = io_uring_queue_init_params(entries, ring, &p);
    if (r < 0) {
        memset(&p, 0, sizeof p);
        r = io_uring_queue_init_params(entries, ring, &p);
    }
    if (r < 0) {
        errno = -r;
        die("io_uring_queue_init");
    }
}

static int connect_to(const char *host, const char *port) {
    struct addrinfo hints, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0) die("getaddrinfo");
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    freeaddrinfo(ai);
    return fd;
}

/* The header value of `name` in the line [p, end), or NULL. */
static const char *header_value(const char *p, const char *end, const char *name) {
    size_t n = strlen(name);
    if ((size_t)(end - p) <= n || p[n] != ':' || strncasecmp(p, name, n) != 0) return NULL;
    p += n + 1;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    return p;
}

/* Parse the response head in in[0, len) of a buffer of cap bytes (in[len] must be writable),
 * for a body that must fit in `slot` bytes. 1: complete, *clen is the Content-Length and the
 * body starts at in + *body_off; 0: need more bytes; -1: bad, *why says why. */
static int parse_head(char *in, int len, int cap, size_t slot, int64_t *clen, int *body_off,
                      const char **why) {
    in[len] = 0;
    char *eoh = memmem(in, (size_t)len, "\r\n\r\n", 4);
    if (eoh == NULL) {
        if (len >= cap - 1) { *why = "headers too long"; return -1; }
        return 0;
    }
    const char *p = in, *end = eoh + 2;
    if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0) { *why = "no status line"; return -1; }
    int status = atoi(p + 9);
    if (status != 206 && status != 200) { *why = "status not 200/206"; return -1; }
    int64_t cl = -1, cr_first = -1, cr_last = -1;
    p = memchr(p, '\n', (size_t)(end - p)) + 1;
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *v;
        if ((v = header_value(p, eol, "content-length")) != NULL) {
            cl = strtoll(v, NULL, 10);
        } else if ((v = header_value(p, eol, "content-range")) != NULL) {
            if (sscanf(v, "bytes %ld-%ld/", &cr_first, &cr_last) != 2) {
                *why = "bad Content-Range"; return -1;
            }
        } else if (header_value(p, eol, "transfer-encoding") != NULL) {
            *why = "chunked bodies are not supported"; return -1;
        }
        p = eol + 2;
    }
    if (cl < 0) { *why = "no Content-Length"; return -1; }
    if (status == 206 && (cr_first != 0 || cr_last - cr_first + 1 != cl)) {
        *why = "Content-Range does not match"; return -1;
    }
    if ((size_t)cl > slot) { *why = "body larger than its slot"; return -1; }
    *body_off = (int)(eoh + 4 - in);
    if (len - *body_off > cl) { *why = "bytes past the body (not asked for)"; return -1; }
    *clen = cl;
    return 1;
}

#endif
