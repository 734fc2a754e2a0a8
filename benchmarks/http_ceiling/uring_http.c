/* uring_http: the ceiling of an io_uring HTTP/1.1 client (plain HTTP only).
 *
 *   uring_http HOST PORT PATHS_FILE [CONNECTIONS=64] [ROUNDS=5] [--slot BYTES] [--verify ROOT]
 *              [--warmup ROUNDS]
 *
 * Opens CONNECTIONS keep-alive TCP connections (blocking connect, at setup, untimed), then per
 * round issues one GET per line of PATHS_FILE ("GET /path HTTP/1.1", Host, Range: bytes=0-1048575),
 * one in flight per connection, entirely through one io_uring: a SEND linked to a RECV for each
 * request, then RECVs until the body is complete. The first RECV lands in a per-connection
 * buffer; the response parser reads the status line, Content-Length and Content-Range up to the
 * end of the headers, copies the body bytes already there into the request's slot of one big
 * output buffer, and receives the rest straight into that slot.
 *
 * Prints one JSON line per measured round: wall time, process CPU time, requests/s, CPU us per
 * request, bytes. Does not do: TLS, chunked bodies, redirects, retries, reconnects.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
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
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "http1.h"

#define RBUF 16384
#define OP_SEND 0u
#define OP_RECV 1u

typedef struct {
    int fd;
    int req;             /* request in flight, -1: idle */
    char out[1200];      /* the request being sent */
    int out_len, out_off;
    char *in;            /* header buffer */
    int in_len;
    int headers_done;
    int64_t body_len, body_got;
} conn;

typedef struct {
    char **paths;
    int n;
    size_t slot;
    char *out;           /* n * slot */
    int64_t *got;        /* body bytes per request, -1: failed */
    int next, done;
    const char *host;
    struct io_uring ring;
    conn *conns;
    int nconns;
    long submits;
} bench;

static struct io_uring_sqe *sqe_get(bench *b) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
    if (sqe == NULL) {  /* the SQ ring is full: flush it */
        io_uring_submit(&b->ring);
        b->submits++;
        sqe = io_uring_get_sqe(&b->ring);
        if (sqe == NULL) die("io_uring_get_sqe");
    }
    return sqe;
}

static void queue_send(bench *b, int k, int link_recv) {
    conn *c = &b->conns[k];
    struct io_uring_sqe *sqe = sqe_get(b);
    io_uring_prep_send(sqe, c->fd, c->out + c->out_off, (size_t)(c->out_len - c->out_off),
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ((uint64_t)k << 1) | OP_SEND);
    if (link_recv) {
        sqe->flags |= IOSQE_IO_LINK;
        sqe = sqe_get(b);
        io_uring_prep_recv(sqe, c->fd, c->in, RBUF - 1, 0);
        io_uring_sqe_set_data64(sqe, ((uint64_t)k << 1) | OP_RECV);
    }
}

static void queue_recv(bench *b, int k) {
    conn *c = &b->conns[k];
    struct io_uring_sqe *sqe = sqe_get(b);
    if (!c->headers_done) {
        io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, (size_t)(RBUF - 1 - c->in_len), 0);
    } else {  /* the rest of the body, straight into the request's slot */
        char *dest = b->out + (size_t)c->req * b->slot + c->body_got;
        io_uring_prep_recv(sqe, c->fd, dest, (size_t)(c->body_len - c->body_got), 0);
    }
    io_uring_sqe_set_data64(sqe, ((uint64_t)k << 1) | OP_RECV);
}

static void start_next(bench *b, int k) {
    conn *c = &b->conns[k];
    if (b->next >= b->n) {
        c->req = -1;
        return;
    }
    c->req = b->next++;
    c->out_len = snprintf(c->out, sizeof c->out,
                          "GET %s HTTP/1.1\r\nHost: %s\r\nRange: bytes=0-1048575\r\n\r\n",
                          b->paths[c->req], b->host);
    c->out_off = 0;
    c->in_len = 0;
    c->headers_done = 0;
    c->body_len = -1;
    c->body_got = 0;
    queue_send(b, k, 1);
}

static void fail(bench *b, int k, const char *why) {
    conn *c = &b->conns[k];
    fprintf(stderr, "request %d (%s): %s\n", c->req, c->req >= 0 ? b->paths[c->req] : "-", why);
    exit(3);
}

/* Parse the headers in c->in[0, c->in_len) if complete (http1.h), and land the body bytes
 * already there in the request's slot: 1 done, 0 need more, -1 bad. */
static int parse_headers(bench *b, conn *c, const char **why) {
    int body_off;
    int r = parse_head(c->in, c->in_len, RBUF, b->slot, &c->body_len, &body_off, why);
    if (r != 1) return r;
    c->headers_done = 1;
    int64_t have = c->in_len - body_off;
    memcpy(b->out + (size_t)c->req * b->slot, c->in + body_off, (size_t)have);
    c->body_got = have;
    return 1;
}

static void complete(bench *b, int k) {
    conn *c = &b->conns[k];
    b->got[c->req] = c->body_got;
    b->done++;
    start_next(b, k);
}

static void on_cqe(bench *b, struct io_uring_cqe *cqe) {
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    int k = (int)(ud >> 1);
    conn *c = &b->conns[k];
    int res = cqe->res;
    if ((ud & 1) == OP_SEND) {
        if (res < 0) fail(b, k, strerror(-res));
        c->out_off += res;
        if (c->out_off < c->out_len) queue_send(b, k, 1);  /* short: its linked recv is cancelled */
        return;
    }
    if (res == -ECANCELED) return;  /* a recv linked to a short send: re-armed with the rest */
    if (res < 0) fail(b, k, strerror(-res));
    if (res == 0) fail(b, k, "connection closed");
    if (c->out_off < c->out_len) fail(b, k, "answer before the request was sent");
    if (!c->headers_done) {
        c->in_len += res;
        const char *why = NULL;
        int r = parse_headers(b, c, &why);
        if (r < 0) fail(b, k, why);
        if (r == 0) { queue_recv(b, k); return; }
    } else {
        c->body_got += res;
    }
    if (c->body_got == c->body_len) complete(b, k);
    else queue_recv(b, k);
}

static void run_round(bench *b) {
    b->next = b->done = 0;
    for (int k = 0; k < b->nconns; k++) start_next(b, k);
    struct io_uring_cqe *cqes[256];
    while (b->done < b->n) {
        int r = io_uring_submit_and_wait(&b->ring, 1);
        b->submits++;
        if (r < 0 && r != -EINTR) { errno = -r; die("io_uring_submit_and_wait"); }
        unsigned got;
        while ((got = io_uring_peek_batch_cqe(&b->ring, cqes, 256)) > 0) {
            for (unsigned j = 0; j < got; j++) on_cqe(b, cqes[j]);
            io_uring_cq_advance(&b->ring, got);
        }
    }
}

int main(int argc, char **argv) {
    const char *pos[5] = {0};
    int npos = 0, warmup = 1;
    size_t slot = 4096;
    const char *verify_root = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--slot") == 0 && i + 1 < argc) slot = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--verify") == 0 && i + 1 < argc) verify_root = argv[++i];
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (npos < 5) pos[npos++] = argv[i];
    }
    if (npos < 3) {
        fprintf(stderr, "usage: %s HOST PORT PATHS [CONNECTIONS] [ROUNDS] [--slot B] "
                        "[--verify ROOT] [--warmup R]\n", argv[0]);
        return 1;
    }
    bench b;
    memset(&b, 0, sizeof b);
    b.host = pos[0];
    b.paths = read_lines(pos[2], &b.n);
    b.nconns = npos > 3 ? atoi(pos[3]) : 64;
    int rounds = npos > 4 ? atoi(pos[4]) : 5;
    if (b.nconns > b.n) b.nconns = b.n;
    b.slot = slot;
    b.out = malloc((size_t)b.n * slot);
    b.got = malloc((size_t)b.n * sizeof *b.got);
    b.conns = calloc((size_t)b.nconns, sizeof *b.conns);
    if (b.out == NULL || b.got == NULL || b.conns == NULL) die("malloc");
    memset(b.out, 0, (size_t)b.n * slot);  /* fault the pages in before timing */

    ring_init(&b.ring, 2 * (unsigned)b.nconns + 8);
    for (int k = 0; k < b.nconns; k++) {
        b.conns[k].fd = connect_to(pos[0], pos[1]);
        b.conns[k].in = malloc(RBUF);
    }
    for (int w = 0; w < warmup; w++) run_round(&b);
    for (int round = 0; round < rounds; round++) {
        memset(b.got, 0xff, (size_t)b.n * sizeof *b.got);
        long submits0 = b.submits;
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        run_round(&b);
        double w1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
        int64_t bytes = 0;
        for (int i = 0; i < b.n; i++) bytes += b.got[i];
        int bad = verify_root
            ? verify_slots(b.n, b.paths, b.slot, b.out, b.got, verify_root) : 0;
        printf("{\"impl\": \"io_uring\", \"round\": %d, \"n\": %d, \"connections\": %d, "
               "\"wall_s\": %.6f, \"cpu_s\": %.6f, \"rps\": %.1f, \"cpu_us_per_req\": %.3f, "
               "\"bytes\": %ld, \"submits\": %ld, \"verify_bad\": %d}\n",
               round, b.n, b.nconns, w1 - w0, c1 - c0, b.n / (w1 - w0), (c1 - c0) * 1e6 / b.n,
               (long)bytes, b.submits - submits0, bad);
        fflush(stdout);
        if (bad) return 4;
    }
    io_uring_queue_exit(&b.ring);
    return 0;
}
