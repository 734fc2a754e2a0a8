/* curl_multi: the same harness as uring_http, over libcurl's multi interface the way lsio drives
 * it (lsio/_c/curl.c): curl_multi_socket_action + epoll, CURLOPT_RANGE, a header callback that
 * checks the status and Content-Length, a write callback memcpy'ing into the request's slot,
 * CURLMOPT_MAX_HOST_CONNECTIONS = CONNECTIONS, keep-alive, one easy handle per connection reused
 * from request to request.
 *
 *   curl_multi HOST PORT PATHS_FILE [CONNECTIONS=64] [ROUNDS=5] [--slot BYTES] [--verify ROOT]
 *              [--warmup ROUNDS] [--https CAFILE]
 *
 * Prints one JSON line per measured round (the same fields as uring_http).
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define MAX_EVENTS 128

typedef struct bench bench;

typedef struct {
    bench *b;
    CURL *easy;
    int req;
    int status_ok, headers_done;
    int64_t clen, got;
    char *dest;
} slot;

struct bench {
    char **paths;
    int n;
    size_t slotsize;
    char *out;
    int64_t *got;
    int next, done;
    char **urls;
    CURLM *multi;
    CURLSH *share;
    int epfd;
    long timer_ms;
    slot *slots;
    int nslots;
    const char *cafile;
};

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata) {
    slot *s = userdata;
    size_t len = size * nmemb;
    if (len >= 12 && memcmp(data, "HTTP/", 5) == 0) {  /* a status line: a new response */
        int status = atoi(data + 9);
        s->status_ok = status == 206 || status == 200;
        s->headers_done = 0;
        s->clen = -1;
        return len;
    }
    if (len <= 2) {  /* the blank line */
        s->headers_done = 1;
        return s->status_ok && s->clen >= 0 && (size_t)s->clen <= s->b->slotsize ? len : 0;
    }
    if (len > 15 && strncasecmp(data, "content-length:", 15) == 0)
        s->clen = strtoll(data + 15, NULL, 10);
    return len;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata) {
    slot *s = userdata;
    size_t len = size * nmemb;
    if (!s->headers_done || (int64_t)len > s->clen - s->got) return 0;
    memcpy(s->dest + s->got, data, len);
    s->got += (int64_t)len;
    return len;
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)e;
    (void)socketp;
    bench *b = userp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(b->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data.fd = fd;
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
    if (epoll_ctl(b->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
        epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *userp) {
    (void)m;
    bench *b = userp;
    b->timer_ms = timeout_ms;
    return 0;
}

static void launch(bench *b, slot *s) {
    if (b->next >= b->n) {
        s->req = -1;
        return;
    }
    s->req = b->next++;
    s->got = 0;
    s->clen = -1;
    s->headers_done = s->status_ok = 0;
    s->dest = b->out + (size_t)s->req * b->slotsize;
    curl_easy_setopt(s->easy, CURLOPT_URL, b->urls[s->req]);
    curl_easy_setopt(s->easy, CURLOPT_RANGE, "0-1048575");
    curl_multi_add_handle(b->multi, s->easy);
}

static void reap(bench *b) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(b->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) continue;
        slot *s = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
        if (msg->data.result != CURLE_OK || s->got != s->clen) {
            fprintf(stderr, "request %d (%s): %s, %ld of %ld bytes\n", s->req, b->urls[s->req],
                    curl_easy_strerror(msg->data.result), (long)s->got, (long)s->clen);
            exit(3);
        }
        b->got[s->req] = s->got;
        b->done++;
        curl_multi_remove_handle(b->multi, s->easy);
        launch(b, s);
    }
}

static void run_round(bench *b) {
    int running;
    struct epoll_event ev[MAX_EVENTS];
    b->next = b->done = 0;
    for (int k = 0; k < b->nslots; k++) launch(b, &b->slots[k]);
    while (b->done < b->n) {
        if (b->timer_ms == 0) {
            b->timer_ms = -1;
            curl_multi_socket_action(b->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            reap(b);
            continue;
        }
        int k = epoll_wait(b->epfd, ev, MAX_EVENTS, b->timer_ms < 0 ? 1000 : (int)b->timer_ms);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        if (k == 0) {
            b->timer_ms = -1;
            curl_multi_socket_action(b->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        for (int j = 0; j < k; j++) {
            int mask = 0;
            if (ev[j].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) mask |= CURL_CSELECT_IN;
            if (ev[j].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
            if (ev[j].events & EPOLLERR) mask |= CURL_CSELECT_ERR;
            curl_multi_socket_action(b->multi, ev[j].data.fd, mask, &running);
        }
        reap(b);
    }
}

int main(int argc, char **argv) {
    const char *pos[5] = {0};
    int npos = 0, warmup = 1;
    size_t slotsize = 4096;
    const char *verify_root = NULL, *cafile = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--slot") == 0 && i + 1 < argc) slotsize = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--verify") == 0 && i + 1 < argc) verify_root = argv[++i];
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (strcmp(argv[i], "--https") == 0 && i + 1 < argc) cafile = argv[++i];
        else if (npos < 5) pos[npos++] = argv[i];
    }
    if (npos < 3) {
        fprintf(stderr, "usage: %s HOST PORT PATHS [CONNECTIONS] [ROUNDS] [--slot B] "
                        "[--verify ROOT] [--warmup R] [--https CAFILE]\n", argv[0]);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    bench b;
    memset(&b, 0, sizeof b);
    b.paths = read_lines(pos[2], &b.n);
    b.nslots = npos > 3 ? atoi(pos[3]) : 64;
    int rounds = npos > 4 ? atoi(pos[4]) : 5;
    if (b.nslots > b.n) b.nslots = b.n;
    b.slotsize = slotsize;
    b.cafile = cafile;
    b.out = malloc((size_t)b.n * slotsize);
    b.got = malloc((size_t)b.n * sizeof *b.got);
    b.urls = malloc((size_t)b.n * sizeof *b.urls);
    b.slots = calloc((size_t)b.nslots, sizeof *b.slots);
    if (b.out == NULL || b.got == NULL || b.urls == NULL || b.slots == NULL) die("malloc");
    memset(b.out, 0, (size_t)b.n * slotsize);
    for (int i = 0; i < b.n; i++) {
        size_t len = strlen(pos[0]) + strlen(pos[1]) + strlen(b.paths[i]) + 16;
        b.urls[i] = malloc(len);
        snprintf(b.urls[i], len, "%s://%s:%s%s", cafile ? "https" : "http", pos[0], pos[1],
                 b.paths[i]);
    }
    b.timer_ms = -1;
    b.epfd = epoll_create1(EPOLL_CLOEXEC);
    b.multi = curl_multi_init();
    b.share = curl_share_init();
    if (b.epfd < 0 || b.multi == NULL || b.share == NULL) die("init");
    curl_share_setopt(b.share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(b.share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_multi_setopt(b.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(b.multi, CURLMOPT_SOCKETDATA, &b);
    curl_multi_setopt(b.multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(b.multi, CURLMOPT_TIMERDATA, &b);
    curl_multi_setopt(b.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)b.nslots);
    curl_multi_setopt(b.multi, CURLMOPT_MAXCONNECTS, (long)b.nslots * 4);
    curl_multi_setopt(b.multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
    for (int k = 0; k < b.nslots; k++) {
        slot *s = &b.slots[k];
        CURL *e = curl_easy_init();
        if (e == NULL) die("curl_easy_init");
        s->b = &b;
        s->easy = e;
        s->req = -1;
        curl_easy_setopt(e, CURLOPT_SHARE, b.share);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(e, CURLOPT_PRIVATE, s);
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_USERAGENT, "lsio");
        if (cafile != NULL) {
            curl_easy_setopt(e, CURLOPT_CAINFO, cafile);
            curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
            curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
        }
    }
    for (int w = 0; w < warmup; w++) run_round(&b);
    for (int round = 0; round < rounds; round++) {
        memset(b.got, 0xff, (size_t)b.n * sizeof *b.got);
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        run_round(&b);
        double w1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
        int64_t bytes = 0;
        for (int i = 0; i < b.n; i++) bytes += b.got[i];
        int bad = verify_root
            ? verify_slots(b.n, b.paths, b.slotsize, b.out, b.got, verify_root) : 0;
        printf("{\"impl\": \"%s\", \"round\": %d, \"n\": %d, \"connections\": %d, "
               "\"wall_s\": %.6f, \"cpu_s\": %.6f, \"rps\": %.1f, \"cpu_us_per_req\": %.3f, "
               "\"bytes\": %ld, \"verify_bad\": %d}\n",
               cafile ? "curl_https" : "curl", round, b.n, b.nslots, w1 - w0, c1 - c0,
               b.n / (w1 - w0), (c1 - c0) * 1e6 / b.n, (long)bytes, bad);
        fflush(stdout);
        if (bad) return 4;
    }
    for (int k = 0; k < b.nslots; k++) curl_easy_cleanup(b.slots[k].easy);
    curl_multi_cleanup(b.multi);
    curl_share_cleanup(b.share);
    close(b.epfd);
    curl_global_cleanup();
    return 0;
}
