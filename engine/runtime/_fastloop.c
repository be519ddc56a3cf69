/*
 * The relay's compiled data path (issue 15; docs/performance.md, "Compiled fast path").
 *
 * `run(loop)` replaces `Loop.run()` for a worker whose role is the relay: epoll_wait with
 * the GIL released, and for the TUN descriptor and the relay's UDP socket(s) the reads, the
 * hot-path checks of `TeredoTunnel.receive_tun_packet` / `receive_datagram` and the sends are
 * done here, without executing Python bytecode per packet.  The peer table stays the Python
 * one (`role.peers.recent`, Peer objects read and written through the C API): there is no
 * second table to keep in sync.
 *
 * Everything that is not exactly the Python hot path is handed to the unchanged Python role
 * method, and the role's output lists are emptied by the worker's own `flush`, in the order
 * the outputs were produced.  Other descriptors and the timers stay Python callbacks; after
 * any Python code ran, the loop asks Python (`FastLoop._fast_turn`) to fire due timers,
 * flush, and give the next deadline, which C keeps as a double so that a wake-up that only
 * forwarded hot-path packets runs no Python at all.
 *
 * Counters: the hot path's packet/byte increments are kept as C deltas and added to
 * `role.counters` before any Python code runs and when the loop returns, so whatever
 * Python reads (status, the fallback path) sees exactly the totals the Python loop keeps.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64            /* worker.BATCH */
#define PROBE_EVERY 8       /* worker.PROBE_EVERY */
#define RECV_SIZE 65535     /* worker.RECV_SIZE */
#define SLOT 65536
#define MAX_UDP 8
#define MAX_EVENTS 64
#define GSO_MAX_SEGMENTS 64 /* worker.GSO_MAX_SEGMENTS */
#define GSO_MAX_BYTES 65000 /* worker.GSO_MAX_BYTES */
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

/* Interned attribute names. */
static PyObject *s_peers, *s_recent, *s_trusted, *s_local, *s_last_rx, *s_last_tx, *s__mapping,
    *s_queue, *s_bubbles, *s_pings, *s_second, *s_second_start, *s_second_end, *s_tick,
    *s_counters, *s_drops, *s_readers, *s_running, *s_fast_start, *s_fast_turn,
    *s_fast_gso_refused, *s_after_batch, *s_receive_tun_packet, *s_receive_datagram, *s_gso,
    *s_udp_in_packets, *s_udp_in_bytes, *s_udp_out_packets, *s_udp_out_bytes,
    *s_tun_in_packets, *s_tun_in_bytes, *s_tun_out_packets, *s_tun_out_bytes;

typedef struct {
    int fd;
    PyObject *cb;    /* the worker's reader registered for fd (borrowed from spec) */
    PyObject *idx;   /* the socket's index, for receive_datagram */
} UdpSrc;

typedef struct {
    const char *buf;
    size_t len;
    struct sockaddr_in dst;
} TxItem;

typedef struct {
    PyObject *loop, *worker, *role, *readers;
    int epfd;
    int tun_fd;
    PyObject *tun_cb;
    int nudp;
    UdpSrc udp[MAX_UDP];
    int out_fd;           /* worker._udp[0]: where the hot path sends (index 0) */
    int gso;
    long valid_seconds;
    /* deltas not yet added to role.counters */
    long long udp_in_p, udp_in_b, udp_out_p, udp_out_b, tun_in_p, tun_in_b, tun_out_p, tun_out_b;
    /* outputs produced by the hot path, not yet sent/written */
    int ntx;
    TxItem tx[BATCH];
    int ntw;
    struct iovec tw[BATCH];
    int py_pending;       /* the Python path may have left outputs in the role's lists */
    int tun_lone;         /* TUN wake-ups left that read one packet (worker._tun_reader) */
    char *tun_bufs;       /* BATCH slots: TUN reads (sent from here) */
    char *udp_bufs;       /* BATCH slots: UDP reads (written to TUN from here) */
    struct mmsghdr rmsg[BATCH];
    struct iovec riov[BATCH];
    struct sockaddr_in rname[BATCH];
} St;

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* --- counters ---------------------------------------------------------------------------- */

static int add_attr(PyObject *obj, PyObject *name, long long delta)
{
    if (!delta)
        return 0;
    PyObject *v = PyObject_GetAttr(obj, name);
    if (!v)
        return -1;
    PyObject *d = PyLong_FromLongLong(delta);
    if (!d) {
        Py_DECREF(v);
        return -1;
    }
    PyObject *n = PyNumber_Add(v, d);
    Py_DECREF(v);
    Py_DECREF(d);
    if (!n)
        return -1;
    int r = PyObject_SetAttr(obj, name, n);
    Py_DECREF(n);
    return r;
}

/* Add the C deltas to role.counters: done before any Python code runs. */
static int sync_counters(St *s)
{
    if (!(s->udp_in_p | s->udp_out_p | s->tun_in_p | s->tun_out_p))
        return 0;
    PyObject *c = PyObject_GetAttr(s->role, s_counters);
    if (!c)
        return -1;
    int r = 0;
    r |= add_attr(c, s_udp_in_packets, s->udp_in_p);
    r |= add_attr(c, s_udp_in_bytes, s->udp_in_b);
    r |= add_attr(c, s_udp_out_packets, s->udp_out_p);
    r |= add_attr(c, s_udp_out_bytes, s->udp_out_b);
    r |= add_attr(c, s_tun_in_packets, s->tun_in_p);
    r |= add_attr(c, s_tun_in_bytes, s->tun_in_b);
    r |= add_attr(c, s_tun_out_packets, s->tun_out_p);
    r |= add_attr(c, s_tun_out_bytes, s->tun_out_b);
    Py_DECREF(c);
    s->udp_in_p = s->udp_in_b = s->udp_out_p = s->udp_out_b = 0;
    s->tun_in_p = s->tun_in_b = s->tun_out_p = s->tun_out_b = 0;
    return r ? -1 : 0;
}

/* worker.drops[reason] += n (a Counter: a missing key reads as 0). */
static int bump_drop(St *s, const char *reason, long long n)
{
    PyObject *drops = PyObject_GetAttr(s->worker, s_drops);
    if (!drops)
        return -1;
    PyObject *key = PyUnicode_InternFromString(reason);
    if (!key) {
        Py_DECREF(drops);
        return -1;
    }
    int r = -1;
    PyObject *v = PyObject_GetItem(drops, key);
    if (v) {
        PyObject *d = PyLong_FromLongLong(n);
        if (d) {
            PyObject *sum = PyNumber_Add(v, d);
            Py_DECREF(d);
            if (sum) {
                r = PyObject_SetItem(drops, key, sum);
                Py_DECREF(sum);
            }
        }
        Py_DECREF(v);
    }
    Py_DECREF(key);
    Py_DECREF(drops);
    return r;
}

/* --- output ------------------------------------------------------------------------------ */

static int flush_c(St *s);

/* Before Python code runs: its outputs must follow the hot path's earlier ones. */
static int enter_python(St *s)
{
    if (flush_c(s) < 0)
        return -1;
    return sync_counters(s);
}

/* The worker's flush, for outputs the Python path left in the role's lists. */
static int flush_python(St *s)
{
    s->py_pending = 0;
    if (sync_counters(s) < 0)
        return -1;
    PyObject *after = PyObject_GetAttr(s->loop, s_after_batch);
    if (!after)
        return -1;
    if (after == Py_None) {
        Py_DECREF(after);
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(after);
    Py_DECREF(after);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int same_dst(const struct sockaddr_in *a, const struct sockaddr_in *b)
{
    return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
}

/* Consecutive single datagrams, one sendmmsg; drops counted per datagram as sendto's. */
static int send_singles(St *s, int from, int to)
{
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    int n = to - from;
    for (int k = 0; k < n; k++) {
        TxItem *it = &s->tx[from + k];
        iov[k].iov_base = (void *)it->buf;
        iov[k].iov_len = it->len;
        memset(&m[k], 0, sizeof(m[k]));
        m[k].msg_hdr.msg_name = &it->dst;
        m[k].msg_hdr.msg_namelen = sizeof(it->dst);
        m[k].msg_hdr.msg_iov = &iov[k];
        m[k].msg_hdr.msg_iovlen = 1;
    }
    int i = 0;
    while (i < n) {
        int r = sendmmsg(s->out_fd, m + i, (unsigned)(n - i), MSG_DONTWAIT);
        if (r > 0) {
            i += r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (bump_drop(s, "udp_send_would_block", 1) < 0)
                return -1;
        } else if (bump_drop(s, "udp_send_error", 1) < 0) {
            return -1;
        }
        i++;
    }
    return 0;
}

/* One GSO send: 1 sent (or counted as dropped), 0 this path cannot do GSO. */
static int send_train(St *s, int from, int to, size_t size)
{
    struct iovec iov[GSO_MAX_SEGMENTS];
    int n = to - from;
    for (int k = 0; k < n; k++) {
        iov[k].iov_base = (void *)s->tx[from + k].buf;
        iov[k].iov_len = s->tx[from + k].len;
    }
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_name = &s->tx[from].dst;
    mh.msg_namelen = sizeof(struct sockaddr_in);
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)n;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t seg = (uint16_t)size;
    memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
    ssize_t r;
    do {
        r = sendmsg(s->out_fd, &mh, MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r >= 0)
        return 1;
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK)
        return bump_drop(s, "udp_send_would_block", n) < 0 ? -1 : 1;
    if (e == EINVAL || e == EIO || e == ENOPROTOOPT || e == EOPNOTSUPP || e == EMSGSIZE) {
        s->gso = 0;  /* worker.GSO_FATAL: Python turns worker._gso off and logs it */
        PyObject *eo = PyLong_FromLong(e);
        if (!eo)
            return -1;
        PyObject *r2 = PyObject_CallMethodOneArg(s->loop, s_fast_gso_refused, eo);
        Py_DECREF(eo);
        if (!r2)
            return -1;
        Py_DECREF(r2);
        return 0;
    }
    return bump_drop(s, "udp_send_error", n) < 0 ? -1 : 1;
}

/* worker.send_udp's grouping over the hot path's pending datagrams. */
static int send_tx(St *s)
{
    int n = s->ntx, i = 0, singles = 0;
    while (i < n) {
        TxItem *a = &s->tx[i];
        if (s->gso && i + 1 < n) {
            size_t size = a->len, total = size;
            int j = i + 1;
            while (j < n && j - (i + 1) < GSO_MAX_SEGMENTS - 1) {
                TxItem *b = &s->tx[j];
                if (!same_dst(&a->dst, &b->dst))
                    break;
                if (b->len > size || total + b->len > GSO_MAX_BYTES)
                    break;
                total += b->len;
                j++;
                if (b->len < size)
                    break;
            }
            if (j > i + 1) {
                if (i > singles && send_singles(s, singles, i) < 0)
                    return -1;
                int r = send_train(s, i, j, size);
                if (r < 0)
                    return -1;
                if (r == 0 && send_singles(s, i, j) < 0)
                    return -1;
                i = singles = j;
                continue;
            }
        }
        i++;
    }
    if (n > singles && send_singles(s, singles, n) < 0)
        return -1;
    s->ntx = 0;
    return 0;
}

static int write_tw(St *s)
{
    for (int k = 0; k < s->ntw; k++) {
        ssize_t r;
        do {
            r = write(s->tun_fd, s->tw[k].iov_base, s->tw[k].iov_len);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            const char *why = (errno == EAGAIN || errno == EWOULDBLOCK) ? "tun_write_would_block"
                                                                        : "tun_write_error";
            if (bump_drop(s, why, 1) < 0) {
                s->ntw = 0;
                return -1;
            }
        }
    }
    s->ntw = 0;
    return 0;
}

/* Everything pending, in production order: the Python path's outputs came first. */
static int flush_c(St *s)
{
    if (s->py_pending && (s->ntx || s->ntw)) {
        if (flush_python(s) < 0)
            return -1;
    }
    if (s->ntx && send_tx(s) < 0)
        return -1;
    if (s->ntw && write_tw(s) < 0)
        return -1;
    return 0;
}

/* After the first packet of a wake-up: its outputs leave at once (the worker's readers). */
static int flush_first(St *s)
{
    if (flush_c(s) < 0)
        return -1;
    return s->py_pending ? flush_python(s) : 0;
}

/* --- the hot paths ---------------------------------------------------------------------- */

/* peers.tick(now), inlined as the Python hot path does it; a new reference. */
static PyObject *whole_second(PyObject *peers, double now, PyObject **nowobj)
{
    PyObject *a = PyObject_GetAttr(peers, s_second_start);
    if (!a)
        return NULL;
    PyObject *b = PyObject_GetAttr(peers, s_second_end);
    if (!b) {
        Py_DECREF(a);
        return NULL;
    }
    double start = PyFloat_AsDouble(a), end = PyFloat_AsDouble(b);
    Py_DECREF(a);
    Py_DECREF(b);
    if ((start == -1.0 || end == -1.0) && PyErr_Occurred())
        return NULL;
    if (start <= now && now < end)
        return PyObject_GetAttr(peers, s_second);
    if (!*nowobj && !(*nowobj = PyFloat_FromDouble(now)))
        return NULL;
    return PyObject_CallMethodOneArg(peers, s_tick, *nowobj);
}

static int truth_attr(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (!v)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* recent.get(key) as a new reference when that peer is trusted (both hot paths start so);
 * NULL with no error when absent or untrusted, NULL with an error set on failure. */
static PyObject *trusted_peer(St *s, const unsigned char *key16, PyObject **peers_out)
{
    PyObject *peers = PyObject_GetAttr(s->role, s_peers);
    if (!peers)
        return NULL;
    PyObject *recent = PyObject_GetAttr(peers, s_recent);
    if (!recent) {
        Py_DECREF(peers);
        return NULL;
    }
    PyObject *p = NULL;
    if (PyDict_CheckExact(recent)) {
        PyObject *key = PyBytes_FromStringAndSize((const char *)key16, 16);
        if (key) {
            p = PyDict_GetItemWithError(recent, key);
            Py_XINCREF(p);
            Py_DECREF(key);
        }
    }
    Py_DECREF(recent);
    int tr = p ? truth_attr(p, s_trusted) : 0;
    if (tr <= 0) {
        Py_XDECREF(p);
        Py_DECREF(peers);
        return NULL;
    }
    *peers_out = peers;
    return p;
}

/* The tuple (ip, port) as a sockaddr; 0 when it is not an exact (str, int) IPv4 pair. */
static int mapping_addr(PyObject *m, struct sockaddr_in *out)
{
    if (!PyTuple_CheckExact(m) || PyTuple_GET_SIZE(m) != 2)
        return 0;
    PyObject *a = PyTuple_GET_ITEM(m, 0), *b = PyTuple_GET_ITEM(m, 1);
    if (!PyUnicode_CheckExact(a) || !PyLong_CheckExact(b))
        return 0;
    const char *txt = PyUnicode_AsUTF8(a);
    if (!txt) {
        PyErr_Clear();
        return 0;
    }
    int overflow = 0;
    long pt = PyLong_AsLongAndOverflow(b, &overflow);
    if (overflow || pt < 0 || pt > 65535)
        return 0;
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)pt);
    return inet_pton(AF_INET, txt, &out->sin_addr) == 1;
}

/*
 * p.mapping as a sockaddr.  `_mapping` None (nearly every relay peer: a relay trusts a Teredo
 * peer only at the mapping its address carries, R9a in docs/protocol.md) is that mapping,
 * built from the key's bytes 10-15 (~port, ~IPv4; engine/proto/peers.py); a stored tuple is
 * converted.  inet_pton takes only the dotted-quad text inet_ntop (and so recvfrom) writes,
 * so comparing sockaddrs is comparing the texts Python's `p.mapping == src` compares.
 * 1: *out set, 0: a mapping this path does not handle (Python decides), -1: error.
 */
static int peer_dst(PyObject *p, const unsigned char *key16, struct sockaddr_in *out)
{
    PyObject *m = PyObject_GetAttr(p, s__mapping);
    if (!m)
        return -1;
    int r = 1;
    if (m == Py_None) {
        memset(out, 0, sizeof(*out));
        out->sin_family = AF_INET;
        out->sin_port = htons((uint16_t)(((unsigned)key16[10] << 8 | key16[11]) ^ 0xFFFFu));
        unsigned char ip[4];
        for (int i = 0; i < 4; i++)
            ip[i] = (unsigned char)(key16[12 + i] ^ 0xFFu);
        memcpy(&out->sin_addr.s_addr, ip, sizeof(ip));
    } else {
        r = mapping_addr(m, out);
    }
    Py_DECREF(m);
    return r;
}

/* exact ints a, b: *out = a - b; 0 when not exact ints in range. */
static int int_diff(PyObject *a, PyObject *b, long long *out)
{
    if (!PyLong_CheckExact(a) || !PyLong_CheckExact(b))
        return 0;
    int o1 = 0, o2 = 0;
    long long x = PyLong_AsLongLongAndOverflow(a, &o1), y = PyLong_AsLongLongAndOverflow(b, &o2);
    if (o1 || o2)
        return 0;
    if ((x > 0 && y < LLONG_MIN + x) || (x < 0 && y > LLONG_MAX + x + 1))
        return 0;
    *out = x - y;
    return 1;
}

/*
 * TeredoTunnel.receive_tun_packet's hot path (relay: _tx_open and _tx_src_ok are True).
 * 1: taken (peer updated, *dst set), 0: not the hot path (Python decides), -1: error.
 */
static int tx_hot(St *s, const unsigned char *pkt, size_t n, double now, PyObject **nowobj,
                  struct sockaddr_in *dst)
{
    if (n < 40)
        return 0;
    PyObject *peers = NULL;
    PyObject *p = trusted_peer(s, pkt + 24, &peers);
    if (!p)
        return PyErr_Occurred() ? -1 : 0;
    int res = -1;
    PyObject *t = NULL, *last_rx = NULL;
    if (!(t = whole_second(peers, now, nowobj)))
        goto out;
    if (!(last_rx = PyObject_GetAttr(p, s_last_rx)))
        goto out;
    long long age;
    if (!int_diff(t, last_rx, &age) || age > s->valid_seconds) {
        res = 0;
        goto out;
    }
    int loc = truth_attr(p, s_local);
    if (loc != 0) {
        res = loc < 0 ? -1 : 0;
        goto out;
    }
    int known = peer_dst(p, pkt + 24, dst);
    if (known <= 0) {
        res = known;
        goto out;
    }
    if (PyObject_SetAttr(p, s_last_tx, t) < 0)
        goto out;
    res = 1;
out:
    Py_XDECREF(last_rx);
    Py_XDECREF(t);
    Py_DECREF(p);
    Py_DECREF(peers);
    return res;
}

static int zero_if_set(PyObject *p, PyObject *name)
{
    int v = truth_attr(p, name);
    if (v <= 0)
        return v;
    PyObject *zero = PyLong_FromLong(0);
    if (!zero)
        return -1;
    int r = PyObject_SetAttr(p, name, zero);
    Py_DECREF(zero);
    return r;
}

/*
 * TeredoTunnel.receive_datagram's hot path.  1: taken (*total = bytes to deliver), 0: not
 * the hot path, -1: error.
 */
static int rx_hot(St *s, const unsigned char *d, size_t n, const struct sockaddr_in *src,
                  double now, PyObject **nowobj, size_t *total_out)
{
    if (n < 40 || d[0] >> 4 != 6 || d[24] == 0xFF)
        return 0;
    size_t total = 40 + ((size_t)d[4] << 8 | d[5]);
    if (!(total <= n && (total > 40 || d[6] != 59)))
        return 0;
    if (src->sin_family != AF_INET)
        return 0;
    PyObject *peers = NULL;
    PyObject *p = trusted_peer(s, d + 8, &peers);
    if (!p)
        return PyErr_Occurred() ? -1 : 0;
    int res = -1;
    PyObject *q = NULL, *t = NULL;
    /* p.mapping == src */
    struct sockaddr_in own;
    int known = peer_dst(p, d + 8, &own);
    if (known <= 0 || !same_dst(&own, src)) {
        res = known < 0 ? -1 : 0;
        goto out;
    }
    if (!(q = PyObject_GetAttr(p, s_queue)))
        goto out;
    if (q != Py_None) {
        res = 0;
        goto out;
    }
    if (!(t = whole_second(peers, now, nowobj)))
        goto out;
    if (PyObject_SetAttr(p, s_last_rx, t) < 0)
        goto out;
    if (zero_if_set(p, s_bubbles) < 0 || zero_if_set(p, s_pings) < 0)
        goto out;
    *total_out = total;
    res = 1;
out:
    Py_XDECREF(t);
    Py_XDECREF(q);
    Py_DECREF(p);
    Py_DECREF(peers);
    return res;
}

/* --- readers ---------------------------------------------------------------------------- */

static int fallback_tun(St *s, const char *buf, size_t n, double now, PyObject **nowobj)
{
    if (enter_python(s) < 0)
        return -1;
    if (!*nowobj && !(*nowobj = PyFloat_FromDouble(now)))
        return -1;
    PyObject *pkt = PyBytes_FromStringAndSize(buf, (Py_ssize_t)n);
    if (!pkt)
        return -1;
    PyObject *r = PyObject_CallMethodObjArgs(s->role, s_receive_tun_packet, pkt, *nowobj, NULL);
    Py_DECREF(pkt);
    if (!r)
        return -1;
    Py_DECREF(r);
    s->py_pending = 1;
    return 0;
}

/*
 * The worker's _tun_reader: a bounded batch; the first packet leaves at once.  After a batch
 * that held one packet, the next PROBE_EVERY - 1 wake-ups read one packet and skip the read
 * that would find the device empty (level-triggered epoll calls again if more is queued).
 */
static int on_tun(St *s, int *py_ran)
{
    double now = mono_now();
    PyObject *nowobj = NULL;
    int got = 0, rc = 0, limit = BATCH;
    if (s->tun_lone) {
        s->tun_lone--;
        limit = 1;
    }
    for (int k = 0; k < limit; k++) {
        char *buf = s->tun_bufs + (size_t)k * SLOT;
        ssize_t r;
        do {
            r = read(s->tun_fd, buf, RECV_SIZE);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (bump_drop(s, "tun_read_error", 1) < 0)
                rc = -1;
            break;
        }
        size_t n = (size_t)r;
        if (n < 40) {  /* like miredo: too short to be IPv6 */
            if (bump_drop(s, "tun_short", 1) < 0) {
                rc = -1;
                break;
            }
            continue;
        }
        struct sockaddr_in dst;
        int h = tx_hot(s, (const unsigned char *)buf, n, now, &nowobj, &dst);
        if (h < 0) {
            rc = -1;
            break;
        }
        if (h) {
            s->tun_in_p++;
            s->tun_in_b += (long long)n;
            s->udp_out_p++;
            s->udp_out_b += (long long)n;
            TxItem *it = &s->tx[s->ntx++];
            it->buf = buf;
            it->len = n;
            it->dst = dst;
        } else {
            *py_ran = 1;
            if (fallback_tun(s, buf, n, now, &nowobj) < 0) {
                rc = -1;
                break;
            }
        }
        got++;
        if (got == 1 && flush_first(s) < 0) {
            rc = -1;
            break;
        }
    }
    Py_XDECREF(nowobj);
    if (rc < 0) {
        s->ntx = 0;
        return -1;
    }
    if (got == 1 && limit > 1)
        s->tun_lone = PROBE_EVERY - 1;
    if (flush_c(s) < 0)
        return -1;
    return 0;
}

static PyObject *src_tuple(const struct sockaddr_in *a)
{
    char txt[INET_ADDRSTRLEN];
    if (!inet_ntop(AF_INET, &a->sin_addr, txt, sizeof(txt))) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    return Py_BuildValue("(si)", txt, (int)ntohs(a->sin_port));
}

static int fallback_udp(St *s, UdpSrc *u, const char *buf, size_t n,
                        const struct sockaddr_in *src, double now, PyObject **nowobj)
{
    if (enter_python(s) < 0)
        return -1;
    if (!*nowobj && !(*nowobj = PyFloat_FromDouble(now)))
        return -1;
    PyObject *data = PyBytes_FromStringAndSize(buf, (Py_ssize_t)n);
    if (!data)
        return -1;
    PyObject *st = src_tuple(src);
    if (!st) {
        Py_DECREF(data);
        return -1;
    }
    PyObject *r = PyObject_CallMethodObjArgs(s->role, s_receive_datagram, data, st, u->idx,
                                             *nowobj, NULL);
    Py_DECREF(data);
    Py_DECREF(st);
    if (!r)
        return -1;
    Py_DECREF(r);
    s->py_pending = 1;
    return 0;
}

/* The worker's _udp_reader: up to BATCH datagrams (recvmmsg), hot ones straight to TUN. */
static int on_udp(St *s, UdpSrc *u, int *py_ran)
{
    double now = mono_now();
    PyObject *nowobj = NULL;
    int done = 0, rc = 0, tries = 0;
    while (done < BATCH && tries < BATCH) {
        int want = BATCH - done;
        for (int k = 0; k < want; k++) {
            s->riov[k].iov_base = s->udp_bufs + (size_t)(done + k) * SLOT;
            s->riov[k].iov_len = RECV_SIZE;
            memset(&s->rmsg[k], 0, sizeof(s->rmsg[k]));
            s->rmsg[k].msg_hdr.msg_name = &s->rname[k];
            s->rmsg[k].msg_hdr.msg_namelen = sizeof(s->rname[k]);
            s->rmsg[k].msg_hdr.msg_iov = &s->riov[k];
            s->rmsg[k].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(u->fd, s->rmsg, (unsigned)want, MSG_DONTWAIT, NULL);
        tries++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            /* e.g. a queued ICMP error; the next read gets the data */
            if (bump_drop(s, "udp_recv_error", 1) < 0) {
                rc = -1;
                break;
            }
            continue;
        }
        if (r == 0)
            break;
        for (int k = 0; k < r && rc == 0; k++) {
            if (done + k == 1 && flush_first(s) < 0) {  /* the first one's outputs */
                rc = -1;
                break;
            }
            const char *buf = s->riov[k].iov_base;
            size_t n = s->rmsg[k].msg_len;
            const struct sockaddr_in *src = &s->rname[k];
            size_t total = 0;
            int h = rx_hot(s, (const unsigned char *)buf, n, src, now, &nowobj, &total);
            if (h < 0) {
                rc = -1;
            } else if (h) {
                s->udp_in_p++;
                s->udp_in_b += (long long)n;
                s->tun_out_p++;
                s->tun_out_b += (long long)total;
                s->tw[s->ntw].iov_base = (void *)buf;
                s->tw[s->ntw].iov_len = total;
                s->ntw++;
            } else {
                *py_ran = 1;
                if (fallback_udp(s, u, buf, n, src, now, &nowobj) < 0)
                    rc = -1;
            }
        }
        done += r;
        if (rc < 0 || r < want)
            break;
    }
    Py_XDECREF(nowobj);
    if (rc < 0) {
        s->ntw = 0;
        return -1;
    }
    return flush_c(s);
}

/* --- the loop --------------------------------------------------------------------------- */

/* FastLoop._fast_start() / _fast_turn(): the next deadline (float or None) into *when. */
static int call_when(St *s, PyObject *meth, double *when, int *has_when)
{
    if (sync_counters(s) < 0)
        return -1;
    PyObject *r = PyObject_CallMethodNoArgs(s->loop, meth);
    if (!r)
        return -1;
    if (r == Py_None) {
        *has_when = 0;
    } else {
        double w = PyFloat_AsDouble(r);
        if (w == -1.0 && PyErr_Occurred()) {
            Py_DECREF(r);
            return -1;
        }
        *when = w;
        *has_when = 1;
    }
    Py_DECREF(r);
    PyObject *g = PyObject_GetAttr(s->worker, s_gso);
    if (!g)
        return -1;
    s->gso = PyObject_IsTrue(g);
    Py_DECREF(g);
    return s->gso < 0 ? -1 : 0;
}

static int read_spec(St *s, PyObject *loop, PyObject *spec)
{
    /* spec: (worker, role, tun_fd, tun_cb, [(fd, idx, cb), ...], out_fd, valid_seconds, epfd) */
    PyObject *udps;
    if (!PyArg_ParseTuple(spec, "OOiOO!iliO", &s->worker, &s->role, &s->tun_fd, &s->tun_cb,
                          &PyList_Type, &udps, &s->out_fd, &s->valid_seconds, &s->epfd,
                          &s->readers))
        return -1;
    s->loop = loop;
    Py_ssize_t nu = PyList_GET_SIZE(udps);
    if (nu > MAX_UDP) {
        PyErr_SetString(PyExc_ValueError, "_fastloop: too many UDP sockets");
        return -1;
    }
    s->nudp = (int)nu;
    for (Py_ssize_t i = 0; i < nu; i++) {
        UdpSrc *u = &s->udp[i];
        if (!PyArg_ParseTuple(PyList_GET_ITEM(udps, i), "iOO", &u->fd, &u->idx, &u->cb))
            return -1;
    }
    if (!PyDict_Check(s->readers)) {
        PyErr_SetString(PyExc_TypeError, "_fastloop: readers must be a dict");
        return -1;
    }
    return 0;
}

static PyObject *fl_run(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *loop, *spec;
    if (!PyArg_ParseTuple(args, "OO!", &loop, &PyTuple_Type, &spec))
        return NULL;
    St *s = PyMem_Calloc(1, sizeof(St));
    if (!s)
        return PyErr_NoMemory();
    /* keep the spec (and so what it holds) alive while running */
    Py_INCREF(spec);
    PyObject *result = NULL;
    if (read_spec(s, loop, spec) < 0)
        goto done;
    s->tun_bufs = malloc((size_t)BATCH * SLOT);
    s->udp_bufs = malloc((size_t)BATCH * SLOT);
    if (!s->tun_bufs || !s->udp_bufs) {
        PyErr_NoMemory();
        goto done;
    }
    double when = 0.0;
    int has_when = 0;
    if (call_when(s, s_fast_start, &when, &has_when) < 0)
        goto done;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int running = 0;
        {
            PyObject *rv = PyObject_GetAttr(loop, s_running);
            if (!rv)
                goto done;
            running = PyObject_IsTrue(rv);
            Py_DECREF(rv);
            if (running < 0)
                goto done;
        }
        if (!running)
            break;
        int py_ran = 0;
        while (!py_ran) {
            int timeout_ms = -1;
            if (has_when) {
                double dt = when - mono_now();
                if (dt < 0.0)
                    dt = 0.0;
                /* select.epoll.poll rounds up to the millisecond */
                double ms = ceil(dt * 1e3);
                timeout_ms = ms > 2147483647.0 ? 2147483647 : (int)ms;
            }
            int n;
            Py_BEGIN_ALLOW_THREADS
            n = epoll_wait(s->epfd, evs, MAX_EVENTS, timeout_ms);
            Py_END_ALLOW_THREADS
            if (n < 0) {
                if (errno == EINTR) {
                    if (PyErr_CheckSignals() < 0)
                        goto done;
                    continue;
                }
                PyErr_SetFromErrno(PyExc_OSError);
                goto done;
            }
            for (int i = 0; i < n; i++) {
                int fd = evs[i].data.fd;
                PyObject *key = PyLong_FromLong(fd);
                if (!key)
                    goto done;
                PyObject *cb = PyDict_GetItemWithError(s->readers, key);
                Py_DECREF(key);
                if (!cb) {
                    if (PyErr_Occurred())
                        goto done;
                    continue;
                }
                if (fd == s->tun_fd && cb == s->tun_cb) {
                    if (on_tun(s, &py_ran) < 0)
                        goto done;
                    continue;
                }
                UdpSrc *u = NULL;
                for (int k = 0; k < s->nudp; k++)
                    if (s->udp[k].fd == fd && s->udp[k].cb == cb)
                        u = &s->udp[k];
                if (u) {
                    if (on_udp(s, u, &py_ran) < 0)
                        goto done;
                    continue;
                }
                Py_INCREF(cb);
                if (enter_python(s) < 0) {
                    Py_DECREF(cb);
                    goto done;
                }
                PyObject *r = PyObject_CallNoArgs(cb);
                Py_DECREF(cb);
                if (!r)
                    goto done;
                Py_DECREF(r);
                py_ran = 1;
            }
            if (has_when && mono_now() >= when)
                py_ran = 1;
        }
        /* Python ran, or a deadline passed: timers, the worker's flush, the next deadline */
        s->py_pending = 0;
        if (call_when(s, s_fast_turn, &when, &has_when) < 0)
            goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    if (!result) {
        /* keep the Python error; still hand the counted packets to Python */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        sync_counters(s);
        PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    } else if (sync_counters(s) < 0) {
        Py_CLEAR(result);
    }
    free(s->tun_bufs);
    free(s->udp_bufs);
    PyMem_Free(s);
    Py_DECREF(spec);
    return result;
}

/* untrack(obj): take obj out of the cyclic collector's sight.  Only for objects that can
 * never be part of a reference cycle (engine.proto.peers.Peer: see its docstring); the
 * object is still freed by its reference count.  CPython offers this to C code only. */
static PyObject *fl_untrack(PyObject *self, PyObject *obj)
{
    (void)self;
    if (PyObject_IS_GC(obj) && PyObject_GC_IsTracked(obj))
        PyObject_GC_UnTrack(obj);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run", fl_run, METH_VARARGS,
     "run(loop, spec): the worker's loop with the relay's hot paths in C (see fastpath.py)."},
    {"untrack", fl_untrack, METH_O,
     "untrack(obj): out of the cyclic collector's sight (objects that never form cycles)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_fastloop",
    "The relay's compiled data path (docs/performance.md, \"Compiled fast path\").", -1,
    methods, NULL, NULL, NULL, NULL,
};

#define INTERN(var, text)                                  \
    do {                                                   \
        if (!((var) = PyUnicode_InternFromString(text)))   \
            return NULL;                                   \
    } while (0)

PyMODINIT_FUNC PyInit__fastloop(void)
{
    INTERN(s_peers, "peers");
    INTERN(s_recent, "recent");
    INTERN(s_trusted, "trusted");
    INTERN(s_local, "local");
    INTERN(s_last_rx, "last_rx");
    INTERN(s_last_tx, "last_tx");
    INTERN(s__mapping, "_mapping");
    INTERN(s_queue, "queue");
    INTERN(s_bubbles, "bubbles");
    INTERN(s_pings, "pings");
    INTERN(s_second, "second");
    INTERN(s_second_start, "second_start");
    INTERN(s_second_end, "second_end");
    INTERN(s_tick, "tick");
    INTERN(s_counters, "counters");
    INTERN(s_drops, "drops");
    INTERN(s_readers, "_readers");
    INTERN(s_running, "_running");
    INTERN(s_fast_start, "_fast_start");
    INTERN(s_fast_turn, "_fast_turn");
    INTERN(s_fast_gso_refused, "_fast_gso_refused");
    INTERN(s_after_batch, "after_batch");
    INTERN(s_receive_tun_packet, "receive_tun_packet");
    INTERN(s_receive_datagram, "receive_datagram");
    INTERN(s_gso, "_gso");
    INTERN(s_udp_in_packets, "udp_in_packets");
    INTERN(s_udp_in_bytes, "udp_in_bytes");
    INTERN(s_udp_out_packets, "udp_out_packets");
    INTERN(s_udp_out_bytes, "udp_out_bytes");
    INTERN(s_tun_in_packets, "tun_in_packets");
    INTERN(s_tun_in_bytes, "tun_in_bytes");
    INTERN(s_tun_out_packets, "tun_out_packets");
    INTERN(s_tun_out_bytes, "tun_out_bytes");
    return PyModule_Create(&moddef);
}
