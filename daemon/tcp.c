/* SPDX-License-Identifier: MIT */
/*
 * tcp.c - the TCP transport of replication.  Frames are sent with one
 * gathered write (writev) straight from the ring's mapping: the kernel's
 * copy into the socket is the only one.  TCP_NODELAY, since every frame
 * is a unit somebody may wait for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "repl.h"

/* Small reads go through a buffer: a frame's header and a short body come
 * in one system call instead of two (a synchronous round trip reads two
 * such frames).  bench_repl, taking turns with the build without it:
 * 7.7-7.9 against 8.2 us a synchronous round trip. */
#define RBUF 4096

struct sbd_link {
	int fd;
	char peer[80];
	struct sockaddr_storage from;	/* the peer's address */
	size_t roff, rlen;
	bool drained;		/* the last read left nothing in the socket */
	uint8_t rbuf[RBUF];
	int64_t spin_ns;
	bool (*spin_when)(void *arg);
	bool (*spin_work)(void *arg, bool more);
	void *spin_arg;
	void (*send_wait)(void *arg);	/* see set_send_wait() */
	void *send_wait_arg;
};

/* While a send waits for the peer to take bytes, send_wait() runs this
 * often. */
#define SEND_WAIT_MS 1

/* "host:port" or "[v6]:port" into its parts. */
static int split(const char *addr, char *host, size_t hn, char *port,
		 size_t pn)
{
	const char *c;

	if (addr[0] == '[') {
		const char *e = strchr(addr, ']');

		if (!e || e[1] != ':' || (size_t)(e - addr - 1) >= hn)
			return -EINVAL;
		memcpy(host, addr + 1, (size_t)(e - addr - 1));
		host[e - addr - 1] = 0;
		c = e + 1;
	} else {
		c = strrchr(addr, ':');
		if (!c || (size_t)(c - addr) >= hn)
			return -EINVAL;
		memcpy(host, addr, (size_t)(c - addr));
		host[c - addr] = 0;
	}
	if (!c[1] || strlen(c + 1) >= pn)
		return -EINVAL;
	strcpy(port, c + 1);
	return 0;
}

static int resolve(const char *addr, bool passive, struct addrinfo **res)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = passive ? AI_PASSIVE : 0 };
	char host[256], port[16];

	if (split(addr, host, sizeof(host), port, sizeof(port)))
		return -EINVAL;
	if (getaddrinfo(host[0] ? host : NULL, port, &hints, res))
		return -EADDRNOTAVAIL;
	return 0;
}

static void tune(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static struct sbd_link *wrap(int fd, const struct sockaddr *sa,
			     socklen_t salen)
{
	struct sbd_link *l = calloc(1, sizeof(*l));
	char host[64] = "?", port[16] = "?";

	if (!l) {
		close(fd);
		return NULL;
	}
	l->fd = fd;
	if (salen <= sizeof(l->from))
		memcpy(&l->from, sa, salen);
	getnameinfo(sa, salen, host, sizeof(host), port, sizeof(port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(l->peer, sizeof(l->peer), "%s:%s", host, port);
	return l;
}

static int tcp_listen(const char *addr, int *lfd, char *why, size_t n)
{
	struct addrinfo *res;
	int fd, one = 1, rc = resolve(addr, true, &res);

	if (rc) {
		snprintf(why, n, "listen address '%s': not host:port, or "
			 "unknown", addr);
		return rc;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		freeaddrinfo(res);
		snprintf(why, n, "socket: %s", strerror(-rc));
		return rc;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* The kernel's most: the listener takes connections at once and
	 * closes those past its limits (repl.c), so a backlog fills only in
	 * a flood, where a short one would drop the peer's SYN too. */
	if (bind(fd, res->ai_addr, res->ai_addrlen) ||
	    listen(fd, SOMAXCONN)) {
		rc = -errno;
		snprintf(why, n, "%s: %s", addr, strerror(-rc));
		close(fd);
		freeaddrinfo(res);
		return rc;
	}
	freeaddrinfo(res);
	*lfd = fd;
	return 0;
}

static int tcp_accept(int lfd, struct sbd_link **out)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = accept4(lfd, (struct sockaddr *)&ss, &sl,
			 SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return -errno;
	tune(fd);
	*out = wrap(fd, (struct sockaddr *)&ss, sl);
	return *out ? 0 : -ENOMEM;
}

static int tcp_connect(const char *addr, int timeout_ms,
		       struct sbd_link **out)
{
	struct addrinfo *res;
	struct pollfd p;
	int fd, err = 0, rc = resolve(addr, false, &res);
	socklen_t el = sizeof(err);

	if (rc)
		return rc;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    0);
	if (fd < 0) {
		rc = -errno;
		freeaddrinfo(res);
		return rc;
	}
	if (connect(fd, res->ai_addr, res->ai_addrlen) && errno != EINPROGRESS)
		goto fail;
	p = (struct pollfd){ .fd = fd, .events = POLLOUT };
	rc = poll(&p, 1, timeout_ms);
	if (rc <= 0) {
		errno = rc == 0 ? ETIMEDOUT : errno;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) || err) {
		errno = err ? err : errno;
		goto fail;
	}
	/* Non-blocking: sends and receives wait in poll(), with a time
	 * limit. */
	tune(fd);
	*out = wrap(fd, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return *out ? 0 : -ENOMEM;
fail:
	rc = -errno;
	close(fd);
	freeaddrinfo(res);
	return rc;
}

/* Waits until fd is ready for `ev`, at most timeout_ms (< 0: no limit). */
static int ready(int fd, short ev, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int rc;

	do
		rc = poll(&p, 1, timeout_ms);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return -errno;
	if (rc == 0)
		return -ETIMEDOUT;
	if (p.revents & POLLNVAL)
		return -EBADF;
	return 0;
}

static int64_t mono_ms(void);

/* Until the socket takes bytes again, at most timeout_ms (-ETIMEDOUT),
 * running send_wait() every SEND_WAIT_MS meanwhile. */
static int wait_writable(struct sbd_link *l, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;

	for (;;) {
		int64_t left = deadline < 0 ? INT32_MAX : deadline - mono_ms();
		int rc;

		if (left <= 0)
			return -ETIMEDOUT;
		if (l->send_wait && left > SEND_WAIT_MS)
			left = SEND_WAIT_MS;
		rc = ready(l->fd, POLLOUT, (int)left);
		if (rc != -ETIMEDOUT)
			return rc;
		if (l->send_wait)
			l->send_wait(l->send_wait_arg);
	}
}

static int tcp_send(struct sbd_link *l, const struct rw_hdr *h,
		    const struct iovec *body, int n, int timeout_ms)
{
	struct iovec iov[4];
	int cnt = 0;

	if (n > 3)
		return -EINVAL;
	iov[cnt++] = (struct iovec){ (void *)h, sizeof(*h) };
	for (int i = 0; i < n; i++)
		if (body[i].iov_len)
			iov[cnt++] = body[i];
	for (struct iovec *v = iov; cnt;) {
		struct msghdr m = { .msg_iov = v, .msg_iovlen = (size_t)cnt };
		/* sendmsg(): writev() with MSG_NOSIGNAL. */
		ssize_t w = sendmsg(l->fd, &m, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int rc = wait_writable(l, timeout_ms);

				if (rc)
					return rc;
				continue;
			}
			return -errno;
		}
		while (cnt && (size_t)w >= v->iov_len) {
			w -= (ssize_t)v->iov_len;
			v++;
			cnt--;
		}
		if (cnt) {
			v->iov_base = (char *)v->iov_base + w;
			v->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One non-blocking read towards dst: what the buffer holds, else a read
 * straight into dst (n of at least a buffer's worth), else a refill. */
static ssize_t take(struct sbd_link *l, char *dst, size_t n)
{
	ssize_t r;

	if (l->roff == l->rlen) {
		if (n >= RBUF) {
			r = recv(l->fd, dst, n, MSG_DONTWAIT);
			l->drained = r < (ssize_t)n;
			return r;
		}
		r = recv(l->fd, l->rbuf, RBUF, MSG_DONTWAIT);
		l->drained = r < RBUF;
		if (r <= 0)
			return r;
		l->roff = 0;
		l->rlen = (size_t)r;
	}
	r = (ssize_t)(l->rlen - l->roff < n ? l->rlen - l->roff : n);
	memcpy(dst, l->rbuf + l->roff, (size_t)r);
	l->roff += (size_t)r;
	return r;
}

/* take() again for up to spin_ns (while spin_when() says so), yielding
 * the CPU between tries and running spin_work() before each, when the
 * first found nothing: a reply a few microseconds away is taken without
 * a sleep and a wake-up.  Returns as take() does. */
static ssize_t take_soon(struct sbd_link *l, char *dst, size_t n)
{
	struct timespec t0, t;
	ssize_t r = -1;

	errno = EAGAIN;
	if (l->spin_ns && (!l->spin_when || l->spin_when(l->spin_arg))) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			sched_yield();
			if (!l->spin_work || l->spin_work(l->spin_arg, true)) {
				r = take(l, dst, n);
				if (r >= 0 || errno != EAGAIN)
					return r;
			}
			clock_gettime(CLOCK_MONOTONIC, &t);
		} while ((t.tv_sec - t0.tv_sec) * 1000000000 +
				 (t.tv_nsec - t0.tv_nsec) < l->spin_ns);
		/* The last look (work() may have said none was worth
		 * making). */
		r = take(l, dst, n);
	}
	/* Nothing: the caller sleeps on the socket next. */
	if (r < 0 && errno == EAGAIN && l->spin_work) {
		l->spin_work(l->spin_arg, false);
		errno = EAGAIN;
	}
	return r;
}

/* The whole of n bytes within timeout_ms, however the peer trickles them
 * (a peer that sends a byte a second does not hold a handshake open). */
static int tcp_recv(struct sbd_link *l, void *buf, size_t n, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
	char *p = buf;

	while (n) {
		ssize_t r = take(l, p, n);
		int rc;

		if (r < 0 && errno == EAGAIN)
			r = take_soon(l, p, n);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
			continue;
		}
		if (r == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		if (deadline >= 0 && mono_ms() >= deadline)
			return -ETIMEDOUT;
		rc = ready(l->fd, POLLIN, deadline < 0 ? -1 :
			   (int)(deadline - mono_ms() > 0 ? deadline - mono_ms()
							  : 0));
		if (rc)
			return rc;
	}
	return 0;
}

static bool tcp_pending(struct sbd_link *l)
{
	char c;

	return l->roff < l->rlen ||
	       recv(l->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static void tcp_set_send_wait(struct sbd_link *l, void (*fn)(void *arg),
			      void *arg)
{
	l->send_wait = fn;
	l->send_wait_arg = arg;
}

static bool tcp_drained(const struct sbd_link *l)
{
	return l->roff == l->rlen && l->drained;
}

static void tcp_set_spin(struct sbd_link *l, int64_t spin_ns,
			 bool (*when)(void *arg),
			 bool (*work)(void *arg, bool more), void *arg)
{
	l->spin_ns = spin_ns;
	l->spin_when = when;
	l->spin_work = work;
	l->spin_arg = arg;
}

static void tcp_shutdown(struct sbd_link *l)
{
	shutdown(l->fd, SHUT_RDWR);
}

static void tcp_close(struct sbd_link *l)
{
	if (!l)
		return;
	close(l->fd);
	free(l);
}

static const char *tcp_peer(const struct sbd_link *l)
{
	return l->peer;
}

/* An address's host part, IPv4 as such even when mapped into IPv6 (a
 * dual-stack listener's view of an IPv4 peer): family, and 4 or 16
 * bytes into a.  0 if neither family. */
static int host_of(const struct sockaddr *sa, uint8_t a[16])
{
	if (sa->sa_family == AF_INET) {
		memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return AF_INET;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *x =
			&((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(x)) {
			memcpy(a, x->s6_addr + 12, 4);
			return AF_INET;
		}
		memcpy(a, x->s6_addr, 16);
		return AF_INET6;
	}
	return 0;
}

/* The addresses the peer's host resolved to when replication started
 * (tcp_peer_host()): set before the listener thread starts, read by it
 * alone. */
#define PEER_ADDRS	8
static struct {
	int n, fam[PEER_ADDRS];
	uint8_t a[PEER_ADDRS][16];
} peer_host;

static int tcp_peer_host(const char *addr)
{
	struct addrinfo *res;
	int rc = resolve(addr, false, &res);

	peer_host.n = 0;
	if (rc)
		return rc;
	for (struct addrinfo *r = res; r && peer_host.n < PEER_ADDRS;
	     r = r->ai_next) {
		int f = host_of(r->ai_addr, peer_host.a[peer_host.n]);

		if (f)
			peer_host.fam[peer_host.n++] = f;
	}
	freeaddrinfo(res);
	return 0;
}

static bool tcp_from_peer(const struct sbd_link *l)
{
	uint8_t mine[16];
	int fam = host_of((const struct sockaddr *)&l->from, mine);

	for (int i = 0; fam && i < peer_host.n; i++)
		if (peer_host.fam[i] == fam &&
		    !memcmp(peer_host.a[i], mine, fam == AF_INET ? 4 : 16))
			return true;
	return false;
}

const struct sbd_transport sbd_tcp = {
	.name = "tcp",
	.listen = tcp_listen,
	.accept = tcp_accept,
	.connect = tcp_connect,
	.peer_host = tcp_peer_host,
	.from_peer = tcp_from_peer,
	.send = tcp_send,
	.recv = tcp_recv,
	.pending = tcp_pending,
	.drained = tcp_drained,
	.set_send_wait = tcp_set_send_wait,
	.set_spin = tcp_set_spin,
	.shutdown = tcp_shutdown,
	.close = tcp_close,
	.peer = tcp_peer,
};
