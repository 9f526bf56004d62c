/* SPDX-License-Identifier: MIT */
/*
 * client.c - the client side of the control protocol (shmbus/protocol.h).
 *
 * A bus handle is one SOCK_SEQPACKET connection to shmbusd.  Requests are
 * made under the handle's lock, one at a time.  A watcher thread sleeps in
 * poll() on the socket (asking for no event: it wakes only on hang-up);
 * when the daemon goes away it closes the socket, reconnects every 20 ms,
 * and re-registers (ATTACH) every channel opened through the handle, so
 * that the new daemon knows this process again.  Only the watcher closes
 * or replaces the socket.  None of this touches the data path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "busfile.h"
#include "contract.h"
#include "channel.h"
#include "shmbus/protocol.h"

#define RECONNECT_NS	(20 * 1000000LL)	/* between reconnect attempts */
#define REPLY_TIMEOUT_S	5			/* a stuck daemon */
/* How long a handle waits for a daemon that is not there (shmbus_connect()
 * for the first one, a request for a lost one's successor), unless
 * SHMBUS_CONNECT_TIMEOUT_MS or shmbus_connect_timeout() says otherwise. */
#define ABSENT_WAIT_NS	(2000 * 1000000LL)
#define ABSENT_WAIT_MAX_MS (3600 * 1000ULL)	/* the largest the variable sets */
#define DIAL_NAP_MIN_NS	(1000000LL)		/* shmbus_connect() dials again */
#define DIAL_NAP_MAX_NS	(10 * 1000000LL)	/* after 1 ms, doubling to 10 */
#define CALL_SENDS	4			/* a request, across restarts */

struct bus_ref {			/* a channel opened through the bus */
	struct bus_ref *next, *prev;
	struct shmbus_channel *ch;
	uint32_t role;
	char name[SHMBUS_CTL_NAME];
};

struct shmbus_bus {
	pthread_mutex_t lock;		/* the socket and the refs */
	pthread_cond_t reconnected;
	int fd;				/* -1 while the daemon is away */
	uint16_t ver;			/* the protocol version fd speaks */
	int stop[2];			/* pipe: wakes the watcher to exit */
	uint32_t next_id;
	uint64_t generation;		/* connections made so far */
	int64_t absent_wait_ns;		/* how long to wait for a daemon */
	bool closing;
	bool started;			/* the watcher is running */
	pid_t owner;			/* the process that connected */
	pthread_t watcher;
	struct bus_ref refs;		/* list head */
	struct shmbus_bus *next_bus;	/* all handles, for fork */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

/* The reason the daemon gave for this thread's last refused request
 * (shmbus_bus_strerror()). */
static _Thread_local struct {
	const struct shmbus_bus *bus;
	int err;
	char text[SHMBUS_CTL_REASON];
} last_refusal;

/*
 * A socket being dialed (dial()), from its socket() until it is a
 * handle's fd or closed: a child forked meanwhile closes its copy too.
 * The node lives on the dialing thread's stack, which a child's memory
 * copies.  Every change of the list, and of a handle's fd, is made under
 * all_lock, which a fork waits for: a child never closes a number that
 * another thread had closed and the kernel had given out again.
 */
struct dialing {
	int fd;
	struct dialing *next;
};

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shmbus_bus *all_buses;
static struct dialing *all_dialing;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* fork(): the child's copy of every connection is closed, so the daemon
 * sees the parent's death when the parent dies, and the child holds no
 * handle it could use (its watcher thread does not exist there). */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&all_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&all_lock);
}

static void atfork_child(void)
{
	for (struct shmbus_bus *b = all_buses; b; b = b->next_bus) {
		if (b->fd >= 0)
			close(b->fd);
		b->fd = -1;
		b->closing = true;
		/* The channels keep working without the connection, as after
		 * shmbus_disconnect(), and never reach for the handle again:
		 * its lock may be held for ever (inherited()).  The list is
		 * whole through its next links whatever a thread of the
		 * parent was doing (bus_open() links a node's next first,
		 * sb_bus_forget() frees a node only once unlinked); its nodes
		 * stay allocated. */
		for (struct bus_ref *r = b->refs.next; r != &b->refs;
		     r = r->next) {
			r->ch->bus = NULL;
			r->ch->bus_ref = NULL;
		}
		b->refs.next = b->refs.prev = &b->refs;
	}
	all_buses = NULL;
	for (struct dialing *n = all_dialing; n; n = n->next)
		close(n->fd);
	all_dialing = NULL;
	pthread_mutex_unlock(&all_lock);
}

static void register_atfork(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int copy_name(char dst[SHMBUS_CTL_NAME], const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (n == 0 || n >= SHMBUS_CTL_NAME)
		return -EINVAL;
	memset(dst, 0, SHMBUS_CTL_NAME);
	memcpy(dst, name, n);
	return 0;
}

/* A refusal's reason, `len` bytes gathered from the two buffers it was
 * received in, checked like any input: it must end with its NUL, and
 * what a terminal would act on is replaced.  Returns 0 or -EPROTO. */
static int take_reason(char *why, const uint8_t *a, uint32_t alen,
		       const uint8_t *b, uint32_t len)
{
	char text[SHMBUS_CTL_REASON];
	uint32_t k = len < alen ? len : alen;

	if (len < 2 || len > SHMBUS_CTL_REASON)
		return -EPROTO;
	/* Either part may be empty, and its pointer NULL. */
	if (k)
		memcpy(text, a, k);
	if (len > k)
		memcpy(text + k, b, len - k);
	if (text[len - 1] != 0)
		return -EPROTO;
	for (uint32_t i = 0; text[i]; i++)
		if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
			text[i] = '?';
	if (why)
		memcpy(why, text, len);
	return 0;
}

/* Sends one request of protocol version `ver` on fd and waits for its
 * reply.  The reply body (up to rcap bytes) goes to rbody; a refusal's
 * reason (version 2) to why (SHMBUS_CTL_REASON bytes, "" if none; may be
 * NULL); up to two passed descriptors to fdp[0] and fdp[1] (-1 if absent;
 * any others, or all if fdp is NULL, are closed).  Returns the reply's
 * status (0 or -1 to -4095; any other is -EPROTO), or a negative errno
 * for a transport failure: -ENOTCONN means the connection is gone,
 * -ETIMEDOUT that no reply came within REPLY_TIMEOUT_S of the request,
 * whatever else came or interrupted the wait meanwhile.  A daemon of
 * another version answers -EPROTONOSUPPORT in its own version, which is
 * taken as such. */
static int exchange(int fd, uint16_t ver, uint32_t id, uint16_t type,
		    const void *body, uint32_t blen, void *rbody, uint32_t rcap,
		    uint32_t *rlen, int *fdp, char *why)
{
	struct shmbus_ctl_hdr h = {
		.magic = SHMBUS_CTL_MAGIC, .version = ver,
		.type = type, .id = id, .len = blen,
	};
	uint8_t extra[SHMBUS_CTL_REASON];
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)body, .iov_len = blen },
	};
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = blen ? 2 : 1 };
	union {
		struct cmsghdr c;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} ctl;
	/* One bound for the whole wait: frames of other ids, or signals,
	 * do not make it longer. */
	int64_t deadline = mono_ns() + REPLY_TIMEOUT_S * 1000000000LL;
	ssize_t n;

	if (why)
		why[0] = 0;
	if (sendmsg(fd, &m, MSG_NOSIGNAL) < 0)
		return errno == EPIPE || errno == ECONNRESET ||
			       errno == ENOTCONN ? -ENOTCONN : -errno;
	for (;;) {
		struct shmbus_ctl_hdr rh;
		/* A reason lands after the body's room, or in it. */
		struct iovec riov[3] = {
			{ .iov_base = &rh, .iov_len = sizeof(rh) },
			{ .iov_base = rbody, .iov_len = rcap },
			{ .iov_base = extra, .iov_len = sizeof(extra) },
		};
		struct msghdr rm = {
			.msg_iov = riov, .msg_iovlen = 3,
			.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
		};
		int passed[2] = { -1, -1 };
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - mono_ns();

		if (left <= 0)
			return -ETIMEDOUT;
		/* Rounded up: never a busy loop on the last millisecond. */
		if (poll(&p, 1, (int)((left + 999999) / 1000000)) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		n = recvmsg(fd, &rm, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n == 0)
			return -ENOTCONN;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;	/* the deadline decides */
			return errno == ECONNRESET ? -ENOTCONN : -errno;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&rm); c;
		     c = CMSG_NXTHDR(&rm, c)) {
			size_t k;

			if (c->cmsg_level != SOL_SOCKET ||
			    c->cmsg_type != SCM_RIGHTS)
				continue;
			k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int f;

				memcpy(&f, CMSG_DATA(c) + i * sizeof(int),
				       sizeof(int));
				if (passed[0] < 0)
					passed[0] = f;
				else if (passed[1] < 0)
					passed[1] = f;
				else
					close(f);
			}
		}
		/* A reply is checked like any input: the daemon is another
		 * process.  Its version is ours, but for an older or newer
		 * daemon's "not my version", and a connection's refusal
		 * (refusal()), which has no body and is sent before the
		 * daemon knows our version. */
		bool bad = (size_t)n < sizeof(rh) ||
			   rh.magic != SHMBUS_CTL_MAGIC ||
			   (rh.version != ver &&
			    rh.status != -EPROTONOSUPPORT &&
			    !(rh.status < 0 && rh.len == 0 && rh.id == 0 &&
			      rh.version >= SHMBUS_CTL_VERSION_MIN)) ||
			   rh.len != (size_t)n - sizeof(rh) ||
			   rm.msg_flags & MSG_TRUNC;

		if (bad || rh.id != id || rh.type != (type | SHMBUS_CTL_REPLY) ||
		    rh.status || !fdp) {
			for (int i = 0; i < 2; i++)
				if (passed[i] >= 0)
					close(passed[i]);
			passed[0] = passed[1] = -1;
		}
		if (bad)
			return -EPROTO;
		if (rh.id != id || rh.type != (type | SHMBUS_CTL_REPLY))
			continue;	/* a late reply to a timed-out call */
		/* Descriptors passed to a process that has no room for them
		 * (RLIMIT_NOFILE) are dropped by the kernel, which says so:
		 * not damage, nor the daemon's fault. */
		if (rh.status == 0 && fdp && rm.msg_flags & MSG_CTRUNC) {
			for (int i = 0; i < 2; i++)
				if (passed[i] >= 0)
					close(passed[i]);
			return -EMFILE;
		}
		/* A status is 0 or -errno: anything else (INT_MIN would
		 * overflow a caller's errno = -rc) is not believed. */
		if (rh.status > 0 || rh.status < -4095)
			return -EPROTO;
		if (rh.status == 0 && rh.len > rcap)
			return -EPROTO;
		/* A refusal's body is its reason (version 2), or nothing. */
		if (rh.status < 0 && rh.len &&
		    (rh.version < 2 ||
		     take_reason(why, rbody, rcap, extra, rh.len)))
			return -EPROTO;
		if (fdp) {
			fdp[0] = passed[0];
			fdp[1] = passed[1];
		}
		if (rlen)
			*rlen = rh.status ? 0 : rh.len;
		return rh.status;
	}
}

/*
 * After a HELLO that found the connection closed: the daemon's refusal,
 * if it sent one (a HELLO reply with -errno, daemon/control.c refuse()),
 * or 0 if it closed without a word: a daemon that died under us, or is
 * being replaced.  The frame is checked like any input.
 */
static int refusal(int fd)
{
	struct shmbus_ctl_hdr rh;
	ssize_t n = recv(fd, &rh, sizeof(rh), MSG_DONTWAIT);

	/* Sent before our HELLO was read: in the daemon's version, which
	 * may be older or newer than ours. */
	if (n != (ssize_t)sizeof(rh) || rh.magic != SHMBUS_CTL_MAGIC ||
	    rh.version < SHMBUS_CTL_VERSION_MIN || rh.id != 0 || rh.len != 0 ||
	    rh.type != (SHMBUS_CTL_HELLO | SHMBUS_CTL_REPLY) ||
	    rh.status >= 0 || rh.status < -4095)
		return 0;
	return rh.status;
}

/* A new socket for dial(), listed in all_dialing (as n) until settled. */
static int dial_socket(struct dialing *n)
{
	int rc = 0;

	pthread_mutex_lock(&all_lock);
	n->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (n->fd >= 0) {
		n->next = all_dialing;
		all_dialing = n;
	} else {
		rc = -errno;
	}
	pthread_mutex_unlock(&all_lock);
	return rc;
}

/* Takes b off all_buses (all_lock held). */
static void unlist_bus(struct shmbus_bus *b)
{
	for (struct shmbus_bus **pp = &all_buses; *pp; pp = &(*pp)->next_bus)
		if (*pp == b) {
			*pp = b->next_bus;
			return;
		}
}

/* Takes the socket of n off the list (all_lock held): dial_unlist();
 * dial_settle() takes the lock, and puts the socket into *store (a
 * listed handle's fd), or closes it if store is NULL. */
static void dial_unlist(struct dialing *n)
{
	for (struct dialing **pp = &all_dialing; *pp; pp = &(*pp)->next)
		if (*pp == n) {
			*pp = n->next;
			return;
		}
}

static void dial_settle(struct dialing *n, int *store)
{
	pthread_mutex_lock(&all_lock);
	dial_unlist(n);
	if (store)
		*store = n->fd;
	else
		close(n->fd);
	pthread_mutex_unlock(&all_lock);
}

/* Connects and says HELLO.  *absent (if not NULL) tells whether a
 * failure means that no daemon serves the socket now (none started yet,
 * one restarting, or one that died after accepting us), rather than a
 * daemon that refused us (e.g. -EUSERS: its connection limits) or another
 * error.  On success the connection is n->fd, still in all_dialing: the
 * caller settles it into the handle (dial_settle()). */
static int dial(const char *path, struct dialing *n, uint16_t *verp,
		bool *absent)
{
	uint16_t ver = SHMBUS_CTL_VERSION;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = REPLY_TIMEOUT_S };
	struct shmbus_ctl_hello hello;
	uint32_t len = 0;
	int fd, rc;

	if (absent)
		*absent = false;
	rc = dial_socket(n);
	if (rc)
		return rc;
	fd = n->fd;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		dial_settle(n, NULL);
		if (absent)
			*absent = rc == -ECONNREFUSED || rc == -ENOENT ||
				  rc == -EAGAIN;
		return rc;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	rc = exchange(fd, ver, 0, SHMBUS_CTL_HELLO, NULL, 0, &hello,
		      sizeof(hello), &len, NULL, NULL);
	/* A daemon older than this library: the next older version, until
	 * one it speaks (docs/protocol.md, "Versioning"). */
	while (rc == -EPROTONOSUPPORT && ver > SHMBUS_CTL_VERSION_MIN) {
		ver--;
		rc = exchange(fd, ver, SHMBUS_CTL_VERSION - ver,
			      SHMBUS_CTL_HELLO, NULL, 0, &hello, sizeof(hello),
			      &len, NULL, NULL);
	}
	if (rc == 0 && len != sizeof(hello))
		rc = -EPROTO;
	if (rc == -ENOTCONN) {
		int r = refusal(fd);

		if (absent)
			*absent = r == 0;
		rc = r ? r : -ECONNREFUSED;
	}
	if (rc) {
		dial_settle(n, NULL);
		return rc;
	}
	*verp = ver;
	return 0;
}

/* dial() until a daemon answers, while none is there, for at most
 * wait_ns; the pauses between tries grow from 1 ms to 10 ms, so a daemon
 * that comes up is found within 10 ms. */
static int dial_wait(const char *path, int64_t wait_ns, struct dialing *n,
		     uint16_t *verp)
{
	struct timespec nap = { .tv_nsec = DIAL_NAP_MIN_NS };
	int64_t until = sb_after(mono_ns(), wait_ns), left;
	bool absent;
	int rc;

	while ((rc = dial(path, n, verp, &absent)) && absent &&
	       (left = until - mono_ns()) > 0) {
		struct timespec t = nap;

		if (left < t.tv_nsec)
			t.tv_nsec = left;
		nanosleep(&t, NULL);
		if (nap.tv_nsec < DIAL_NAP_MAX_NS)
			nap.tv_nsec *= 2;
	}
	return rc;
}

/* SHMBUS_CONNECT_TIMEOUT_MS, in ns; the default if unset or malformed. */
static int64_t absent_wait_default(void)
{
	const char *s = getenv("SHMBUS_CONNECT_TIMEOUT_MS");
	unsigned long long ms;
	char *end;

	if (!s || !*s)
		return ABSENT_WAIT_NS;
	errno = 0;
	ms = strtoull(s, &end, 10);
	if (errno || *end || s[0] == '-' || ms > ABSENT_WAIT_MAX_MS)
		return ABSENT_WAIT_NS;
	return (int64_t)ms * 1000000;
}

/* Tells a new daemon about every channel this handle has open.  Called
 * with the lock held. */
static void reattach(struct shmbus_bus *b)
{
	for (struct bus_ref *r = b->refs.next; r != &b->refs; r = r->next) {
		struct shmbus_ctl_open req = { .role = r->role };

		memcpy(req.name, r->name, SHMBUS_CTL_NAME);
		exchange(b->fd, b->ver, ++b->next_id, SHMBUS_CTL_ATTACH, &req,
			 sizeof(req), NULL, 0, NULL, NULL, NULL);
	}
}

static void *watch(void *arg)
{
	struct shmbus_bus *b = arg;

	/* Tell shmbus_connect() that this thread is past its start-up (which
	 * allocates): a fork() right after connecting then never copies an
	 * allocator lock held by it. */
	pthread_mutex_lock(&b->lock);
	b->started = true;
	pthread_cond_broadcast(&b->reconnected);
	pthread_mutex_unlock(&b->lock);
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = b->fd, .events = 0 },	/* hang-up only */
			{ .fd = b->stop[0], .events = POLLIN },
		};
		uint16_t ver = SHMBUS_CTL_VERSION;
		struct dialing n;

		if (poll(p, 2, -1) < 0)
			continue;
		if (p[1].revents)
			return NULL;
		if (!(p[0].revents & (POLLHUP | POLLERR | POLLNVAL)))
			continue;
		pthread_mutex_lock(&b->lock);
		pthread_mutex_lock(&all_lock);	/* a fork's view of b->fd */
		close(b->fd);
		b->fd = -1;
		pthread_mutex_unlock(&all_lock);
		pthread_mutex_unlock(&b->lock);
		/* The daemon is gone: try again until it is back. */
		for (;;) {
			struct pollfd s = { .fd = b->stop[0],
					    .events = POLLIN };

			if (poll(&s, 1, (int)(RECONNECT_NS / 1000000)) > 0)
				return NULL;
			if (dial(b->path, &n, &ver, NULL) == 0)
				break;
		}
		pthread_mutex_lock(&b->lock);
		dial_settle(&n, &b->fd);
		b->ver = ver;
		b->generation++;
		reattach(b);
		pthread_cond_broadcast(&b->reconnected);
		pthread_mutex_unlock(&b->lock);
	}
}

/* Waits, with the lock held, until the watcher has replaced the
 * connection of generation `gen` with a new one, for at most the handle's
 * absent_wait_ns.  Returns whether there is a new connection. */
static bool await_reconnect(struct shmbus_bus *b, uint64_t gen)
{
	struct timespec ts;
	int64_t ns;

	/* The condition variable runs on CLOCK_MONOTONIC (connect). */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ns = ts.tv_nsec + b->absent_wait_ns % 1000000000;
	ts.tv_sec += (time_t)(b->absent_wait_ns / 1000000000 +
			      ns / 1000000000);
	ts.tv_nsec = ns % 1000000000;
	while (b->generation == gen && !b->closing &&
	       pthread_cond_timedwait(&b->reconnected, &b->lock, &ts) == 0)
		;
	return b->generation != gen && b->fd >= 0 && !b->closing;
}

/* A fork's copy of a handle (closed by atfork_child()): its lock may have
 * been held by a thread of the parent, which the child does not have, so
 * nothing of the child's takes it. */
static bool inherited(const struct shmbus_bus *b)
{
	return b->owner != getpid();
}

/* A request's body in the connection's version: GROUP's is shorter before
 * version 3, without its data_id (the daemon then acts on whichever
 * channel the name leads to). */
static uint32_t body_len(uint16_t ver, uint16_t type, uint32_t blen)
{
	return type == SHMBUS_CTL_GROUP && ver < 3 ? SHMBUS_CTL_GROUP_V2_LEN
						   : blen;
}

/* One request.  The daemon may restart under it (or several times): the
 * request is sent again on each new connection, at most CALL_SENDS times,
 * and each wait for a new daemon lasts at most absent_wait_ns. */
static int call_once_on(struct shmbus_bus *b, uint16_t type,
			const void *body, uint32_t blen, void *rbody,
			uint32_t rcap, uint32_t *rlen, int *fdp)
{
	char why[SHMBUS_CTL_REASON] = "";
	int rc = -ENOTCONN;

	if (inherited(b))
		return -ENOTCONN;
	pthread_mutex_lock(&b->lock);
	for (int sends = 0; sends < CALL_SENDS; sends++) {
		uint64_t gen = b->generation;

		if (b->closing ||
		    (b->fd < 0 && !await_reconnect(b, gen))) {
			rc = -ENOTCONN;
			break;
		}
		gen = b->generation;
		rc = exchange(b->fd, b->ver, ++b->next_id, type, body,
			      body_len(b->ver, type, blen), rbody, rcap, rlen,
			      fdp, why);
		/* Lost: wait for the watcher to connect to a new daemon. */
		if (rc != -ENOTCONN || !await_reconnect(b, gen))
			break;
	}
	pthread_mutex_unlock(&b->lock);
	last_refusal.bus = rc < 0 && why[0] ? b : NULL;
	last_refusal.err = rc;
	memcpy(last_refusal.text, why, sizeof(why));
	return rc;
}

/* call_once_on() with cancellation off: it holds b->lock while it waits
 * for replies (sb_cancel_off()). */
static int call(struct shmbus_bus *b, uint16_t type, const void *body,
		uint32_t blen, void *rbody, uint32_t rcap, uint32_t *rlen,
		int *fdp)
{
	int old = sb_cancel_off(),
	    rc = call_once_on(b, type, body, blen, rbody, rcap, rlen, fdp);

	sb_cancel_restore(old);
	return rc;
}

/* A request starts: the reason for an earlier one is no longer its
 * answer, whatever this one fails with (its own checks included). */
void sb_bus_reason_forget(void)
{
	last_refusal.bus = NULL;
	last_refusal.err = 0;
	last_refusal.text[0] = 0;
}

SHMBUS_EXPORT const char *shmbus_bus_strerror(shmbus_bus *b, int err)
{
	if (err > 0)
		err = -err;
	if (b && last_refusal.bus == b && last_refusal.err == err &&
	    last_refusal.text[0])
		return last_refusal.text;
	return shmbus_strerror(err);
}

/* The socket of bus `bus` (see shmbus_connect()).  0 or -ENAMETOOLONG. */
static int socket_path(const char *bus, char *out, size_t len)
{
	struct sb_busfile bf;
	char file[PATH_MAX];
	int n;

	if (strchr(bus, '/'))
		n = snprintf(out, len, "%s", bus);
	else if (snprintf(file, sizeof(file), "%s/%s.bus", sb_run_dir(),
			  bus) < (int)sizeof(file) &&
		 sb_busfile_read(file, bus, &bf) == 0)
		n = snprintf(out, len, "%s", bf.socket);
	else
		n = snprintf(out, len, "%s/%s.sock", sb_run_dir(), bus);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

SHMBUS_EXPORT shmbus_bus *shmbus_connect(const char *bus)
{
	return shmbus_connect_timeout(bus, -1);
}

static shmbus_bus *connect_timeout(const char *bus, int64_t timeout_ns)
{
	pthread_condattr_t ca;
	struct shmbus_bus *b;
	struct dialing n;
	int rc;

	/* A name (no '/') is a bus's: the rule shmbusd gives it, or it
	 * would be looked for under a name no daemon can serve. */
	if (!bus || !*bus || (!strchr(bus, '/') && !sb_bus_name_ok(bus))) {
		errno = EINVAL;
		return NULL;
	}
	pthread_once(&atfork_once, register_atfork);
	b = calloc(1, sizeof(*b));
	if (!b) {
		errno = ENOMEM;
		return NULL;
	}
	if (socket_path(bus, b->path, sizeof(b->path))) {
		free(b);
		errno = ENAMETOOLONG;
		return NULL;
	}
	b->refs.next = b->refs.prev = &b->refs;
	b->owner = getpid();
	b->stop[0] = b->stop[1] = -1;
	b->fd = -1;
	b->absent_wait_ns = timeout_ns < 0 ? absent_wait_default() : timeout_ns;
	rc = dial_wait(b->path, b->absent_wait_ns, &n, &b->ver);
	if (rc) {
		free(b);
		errno = -rc;
		return NULL;
	}
	b->fd = n.fd;	/* still in all_dialing, for a fork meanwhile */
	if (pipe2(b->stop, O_CLOEXEC) < 0) {
		rc = -errno;
		dial_settle(&n, NULL);
		free(b);
		errno = -rc;
		return NULL;
	}
	pthread_mutex_init(&b->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->reconnected, &ca);
	pthread_condattr_destroy(&ca);
	/* Listed before the watcher starts, which may close or replace
	 * b->fd at once (a daemon that hangs up): a child forked from here
	 * on closes b->fd as it is then, and nothing else. */
	pthread_mutex_lock(&all_lock);
	b->next_bus = all_buses;
	all_buses = b;
	dial_unlist(&n);
	pthread_mutex_unlock(&all_lock);
	rc = -pthread_create(&b->watcher, NULL, watch, b);
	if (rc) {
		pthread_mutex_lock(&all_lock);
		unlist_bus(b);
		close(b->fd);
		pthread_mutex_unlock(&all_lock);
		close(b->stop[0]);
		close(b->stop[1]);
		pthread_mutex_destroy(&b->lock);
		pthread_cond_destroy(&b->reconnected);
		free(b);
		errno = -rc;
		return NULL;
	}
	pthread_mutex_lock(&b->lock);
	while (!b->started)
		pthread_cond_wait(&b->reconnected, &b->lock);
	pthread_mutex_unlock(&b->lock);
	return b;
}

/* With cancellation off (sb_cancel_off()): a dial in progress is listed
 * for fork() (all_dialing), and the handle's lock is taken. */
SHMBUS_EXPORT shmbus_bus *shmbus_connect_timeout(const char *bus,
						 int64_t timeout_ns)
{
	int old = sb_cancel_off(), err;
	shmbus_bus *b = connect_timeout(bus, timeout_ns);

	err = errno;
	sb_cancel_restore(old);
	errno = err;
	return b;
}

static void disconnect(shmbus_bus *b)
{
	if (!b)
		return;
	/* Its address may be another handle's soon. */
	if (last_refusal.bus == b)
		sb_bus_reason_forget();
	/* A fork's copy has no watcher, and its lock may be held for ever
	 * (inherited()): only its memory and descriptors go. */
	if (!inherited(b)) {
		pthread_mutex_lock(&b->lock);
		b->closing = true;
		pthread_cond_broadcast(&b->reconnected);
		pthread_mutex_unlock(&b->lock);
		if (write(b->stop[1], "x", 1) != 1)
			abort();	/* a pipe nobody else writes */
		pthread_join(b->watcher, NULL);
	}
	/* Under all_lock, which a fork waits for (atfork_prepare()): a child
	 * forked before sees the handle whole, and closes its copy of the
	 * socket and detaches its channels (atfork_child()); one forked
	 * after sees none of it. */
	pthread_mutex_lock(&all_lock);
	unlist_bus(b);
	if (b->fd >= 0)
		close(b->fd);
	close(b->stop[0]);
	close(b->stop[1]);
	/* Channels still open keep working (they need nothing from the
	 * connection); they just no longer belong to it. */
	while (b->refs.next != &b->refs) {
		struct bus_ref *r = b->refs.next;

		b->refs.next = r->next;
		r->ch->bus = NULL;
		r->ch->bus_ref = NULL;
		free(r);
	}
	pthread_mutex_unlock(&all_lock);
	/* A fork's copy: its cond may count the parent's waiters, which a
	 * destroy would wait for. */
	if (!inherited(b)) {
		pthread_mutex_destroy(&b->lock);
		pthread_cond_destroy(&b->reconnected);
	}
	free(b);
}

/* With cancellation off: it takes the handle's locks and joins the
 * watcher. */
SHMBUS_EXPORT void shmbus_disconnect(shmbus_bus *b)
{
	int old = sb_cancel_off();

	disconnect(b);
	sb_cancel_restore(old);
}

void sb_bus_forget(struct shmbus_bus *b, void *ref)
{
	struct bus_ref *r = ref;

	if (!r)
		return;
	/* A fork's copy (inherited()): its channels were detached by
	 * atfork_child(), so none comes here; the node is left alone. */
	if (inherited(b))
		return;
	pthread_mutex_lock(&b->lock);
	r->prev->next = r->next;
	r->next->prev = r->prev;
	pthread_mutex_unlock(&b->lock);
	free(r);
}

static shmbus_channel *bus_open(shmbus_bus *b, const char *name,
				enum shmbus_role role)
{
	struct shmbus_ctl_open req = { 0 };
	struct shmbus_channel *ch;
	struct bus_ref *r;
	int fd[2] = { -1, -1 }, rc;

	sb_bus_reason_forget();
	if (!b) {
		/* shmbus_bus_open(shmbus_connect(...)) with no daemon. */
		errno = ENOTCONN;
		return NULL;
	}
	if ((role != SHMBUS_ROLE_PUBLISH && role != SHMBUS_ROLE_SUBSCRIBE) ||
	    copy_name(req.name, name)) {
		errno = EINVAL;
		return NULL;
	}
	req.role = role == SHMBUS_ROLE_PUBLISH ? SHMBUS_CTL_ROLE_PUB
					       : SHMBUS_CTL_ROLE_SUB;
	r = calloc(1, sizeof(*r));
	if (!r) {
		errno = ENOMEM;
		return NULL;
	}
	rc = call(b, SHMBUS_CTL_OPEN, &req, sizeof(req), NULL, 0, NULL, fd);
	if (rc == 0 && (fd[0] < 0 || fd[1] < 0))
		rc = -EPROTO;
	if (rc) {
		for (int i = 0; i < 2; i++)
			if (fd[i] >= 0)
				close(fd[i]);
		free(r);
		errno = -rc;
		return NULL;
	}
	/* The control file and the data file (read-only for a subscriber),
	 * validated like any files: the layout checks apply. */
	ch = sb_channel_map_fds(fd[0], fd[1],
				role == SHMBUS_ROLE_PUBLISH ? SB_MAP_PUB
							    : SB_MAP_SUB,
				&rc);
	close(fd[0]);
	close(fd[1]);
	if (!ch) {
		free(r);
		errno = -rc;
		return NULL;
	}
	r->role = req.role;
	r->ch = ch;
	memcpy(r->name, req.name, sizeof(r->name));
	pthread_mutex_lock(&b->lock);
	r->next = b->refs.next;
	r->prev = &b->refs;
	/* No edge: the compiler keeps r's next link stored before r is
	 * linked, so that a fork's child walking the list by its next links
	 * (atfork_child()) finds it whole; no other thread reads it
	 * unlocked. */
	fence_compiler();
	b->refs.next->prev = r;
	b->refs.next = r;
	pthread_mutex_unlock(&b->lock);
	ch->bus = b;
	ch->bus_ref = r;
	snprintf(ch->name, sizeof(ch->name), "%s", req.name);
	return ch;
}

/* With cancellation off: the two descriptors the daemon passed are closed
 * (close() is a cancellation point) and the handle listed whatever
 * happens. */
SHMBUS_EXPORT shmbus_channel *shmbus_bus_open(shmbus_bus *b, const char *name,
					      enum shmbus_role role)
{
	int old = sb_cancel_off(), err;
	shmbus_channel *ch = bus_open(b, name, role);

	err = errno;
	sb_cancel_restore(old);
	errno = err;
	return ch;
}

SHMBUS_EXPORT int shmbus_bus_create(shmbus_bus *b, const char *name,
				    const struct shmbus_channel_attr *a)
{
	struct shmbus_ctl_create req = { 0 };

	sb_bus_reason_forget();
	if (!b)
		return -ENOTCONN;
	if (!a || copy_name(req.name, name))
		return -EINVAL;
	req.capacity = a->capacity;
	req.max_msg = a->max_msg;
	req.policy = (uint32_t)a->policy;
	req.producers = (uint32_t)a->producers;
	req.numa_node = a->numa_node;
	req.mode = (uint32_t)a->mode;
	return call(b, SHMBUS_CTL_CREATE, &req, sizeof(req), NULL, 0, NULL,
		    NULL);
}

SHMBUS_EXPORT int shmbus_bus_delete(shmbus_bus *b, const char *name)
{
	struct shmbus_ctl_name req;

	sb_bus_reason_forget();
	if (!b)
		return -ENOTCONN;
	if (copy_name(req.name, name))
		return -EINVAL;
	return call(b, SHMBUS_CTL_DELETE, &req, sizeof(req), NULL, 0, NULL,
		    NULL);
}

/* A name field from the daemon, NUL-terminated whatever it holds. */
static void take_name(char dst[256], const char src[SHMBUS_CTL_NAME])
{
	memcpy(dst, src, 256);
	dst[255] = 0;
}

static void from_entry(struct shmbus_bus_channel *o,
		       const struct shmbus_ctl_entry *e)
{
	memset(o, 0, sizeof(*o));
	take_name(o->name, e->name);
	o->capacity = e->capacity;
	o->max_msg = e->max_msg;
	o->policy = e->flags & SHMBUS_F_OVERWRITE ? SHMBUS_OVERWRITE
						  : SHMBUS_BLOCK;
	o->producers = e->flags & SHMBUS_F_MULTI_PRODUCER ?
			       SHMBUS_MULTI_PRODUCER : SHMBUS_SINGLE_PRODUCER;
	o->numa_node = -1;
	o->subscribers = e->subscribers;
	o->producers_active = e->producers;
	o->published = e->published;
}

int sb_bus_list(shmbus_bus *b,
		int (*fn)(const struct shmbus_bus_channel *c, uint32_t flags,
			  void *arg),
		void *arg)
{
	struct shmbus_ctl_list req = { 0 }, *rep;
	uint8_t *buf;
	uint32_t len, total = 0;
	int rc = 0;

	sb_bus_reason_forget();
	if (!b)
		return -ENOTCONN;
	if (!fn)
		return -EINVAL;
	buf = malloc(SHMBUS_CTL_MAX);
	if (!buf)
		return -ENOMEM;
	rep = (struct shmbus_ctl_list *)buf;
	for (;;) {
		const struct shmbus_ctl_entry *e;

		len = 0;
		rc = call(b, SHMBUS_CTL_LIST, &req, sizeof(req), buf,
			  SHMBUS_CTL_MAX - sizeof(struct shmbus_ctl_hdr), &len,
			  NULL);
		if (rc)
			break;
		if (len < sizeof(*rep) || rep->count > SHMBUS_CTL_LIST_PAGE ||
		    len != sizeof(*rep) + rep->count * sizeof(*e)) {
			rc = -EPROTO;
			break;
		}
		total = rep->total;
		e = (const struct shmbus_ctl_entry *)(rep + 1);
		for (uint32_t i = 0; i < rep->count; i++) {
			struct shmbus_bus_channel c;

			from_entry(&c, &e[i]);
			if (fn(&c, e[i].flags, arg))
				goto out;
		}
		req.offset += rep->count;
		if (rep->count == 0 || req.offset >= total)
			break;
	}
out:
	free(buf);
	return rc ? rc : (int)total;
}

struct list_call {
	int (*fn)(const struct shmbus_bus_channel *c, void *arg);
	void *arg;
};

static int list_one(const struct shmbus_bus_channel *c, uint32_t flags,
		    void *arg)
{
	const struct list_call *l = arg;

	(void)flags;
	return l->fn(c, l->arg);
}

SHMBUS_EXPORT int shmbus_bus_list(shmbus_bus *b,
				  int (*fn)(const struct shmbus_bus_channel *,
					    void *),
				  void *arg)
{
	struct list_call l = { fn, arg };

	if (!fn) {
		sb_bus_reason_forget();
		return b ? -EINVAL : -ENOTCONN;
	}
	return sb_bus_list(b, list_one, &l);
}

SHMBUS_EXPORT int shmbus_bus_describe(shmbus_bus *b, const char *name,
				      struct shmbus_bus_channel *o)
{
	struct shmbus_ctl_name req;
	struct shmbus_ctl_desc d;
	uint32_t len = 0;
	int rc;

	sb_bus_reason_forget();
	if (!b)
		return -ENOTCONN;
	if (!o || copy_name(req.name, name))
		return -EINVAL;
	rc = call(b, SHMBUS_CTL_DESCRIBE, &req, sizeof(req), &d, sizeof(d),
		  &len, NULL);
	if (rc)
		return rc;
	if (len != sizeof(d))
		return -EPROTO;
	from_entry(o, &d.e);
	o->numa_node = d.numa_node;
	o->mode = d.mode;
	o->head = d.head;
	o->bytes = d.bytes;
	o->backpressure = d.backpressure;
	o->repairs = d.repairs;
	o->reaped = d.reaped;
	o->clients = d.clients;
	o->configured = d.configured != 0;
	take_name(o->publish, d.publish);
	take_name(o->subscribe, d.subscribe);
	return 0;
}

int sb_bus_repl(shmbus_bus *b, uint32_t op, uint32_t flags,
		struct shmbus_ctl_repl_reply *r)
{
	struct shmbus_ctl_repl req = { .op = op, .flags = flags };
	uint32_t len = 0;
	int rc;

	sb_bus_reason_forget();
	if (!b)
		return -ENOTCONN;
	rc = call(b, SHMBUS_CTL_REPL, &req, sizeof(req), r, sizeof(*r), &len,
		  NULL);
	if (rc)
		return rc;
	if (len != sizeof(*r))
		return -EPROTO;
	r->text[sizeof(r->text) - 1] = 0;
	return 0;
}

/* Joining a group of a channel opened through the bus: the daemon
 * creates it if need be and hands out its file.  A descriptor or -errno. */
/* A request whose answer is one descriptor (sent twice): it, or -errno. */
static int call_fd(shmbus_bus *b, uint16_t type, const void *req,
		   uint32_t len)
{
	int fd[2] = { -1, -1 };
	int old = sb_cancel_off(),	/* close() with fd[0] held */
	    rc = call(b, type, req, len, NULL, 0, NULL, fd);

	if (fd[1] >= 0)
		close(fd[1]);
	if (rc == 0 && fd[0] < 0)
		rc = -EPROTO;
	if (rc && fd[0] >= 0)
		close(fd[0]);
	sb_cancel_restore(old);
	return rc ? rc : fd[0];
}

int sb_bus_journal(shmbus_bus *b, const char *chan, uint32_t what,
		   uint64_t base, uint64_t *bases, size_t cap, size_t *count)
{
	struct shmbus_ctl_journal req;
	int rc;
	uint32_t len = 0;

	sb_bus_reason_forget();
	memset(&req, 0, sizeof(req));
	if (copy_name(req.channel, chan))
		return -EINVAL;
	req.what = what;
	req.base = base;
	if (what == SHMBUS_CTL_JNL_LIST) {
		rc = call(b, SHMBUS_CTL_JOURNAL, &req, sizeof(req), bases,
			  (uint32_t)(cap * sizeof(*bases)), &len, NULL);
		if (rc)
			return rc;
		/* The daemon's answer, checked: whole entries, ascending. */
		if (len % sizeof(*bases))
			return -EPROTO;
		*count = len / sizeof(*bases);
		for (size_t i = 1; i < *count; i++)
			if (bases[i] <= bases[i - 1])
				return -EPROTO;
		return 0;
	}
	return call_fd(b, SHMBUS_CTL_JOURNAL, &req, sizeof(req));
}

int sb_bus_group(shmbus_bus *b, const char *chan, uint64_t data_id,
		 const char *group, const struct shmbus_group_attr *a)
{
	struct shmbus_ctl_group req;

	sb_bus_reason_forget();
	memset(&req, 0, sizeof(req));
	if (copy_name(req.channel, chan) ||
	    strlen(group) >= sizeof(req.group) ||
	    (a->dead_letter && copy_name(req.dead_letter, a->dead_letter)))
		return -EINVAL;
	memcpy(req.group, group, strlen(group));
	req.mode = (uint32_t)a->mode;
	req.window = a->window;
	req.lanes = a->lanes;
	req.max_deliveries = a->max_deliveries;
	req.lease_ns = a->lease_ns;
	req.start = (uint32_t)a->start;
	req.data_id = data_id;
	return call_fd(b, SHMBUS_CTL_GROUP, &req, sizeof(req));
}

int sb_bus_group_delete(shmbus_bus *b, const char *chan, uint64_t data_id,
			const char *group)
{
	struct shmbus_ctl_group req;

	sb_bus_reason_forget();
	memset(&req, 0, sizeof(req));
	if (copy_name(req.channel, chan) || strlen(group) >= sizeof(req.group))
		return -EINVAL;
	memcpy(req.group, group, strlen(group));
	req.flags = SHMBUS_CTL_GROUP_DELETE;
	req.data_id = data_id;
	return call(b, SHMBUS_CTL_GROUP, &req, sizeof(req), NULL, 0, NULL,
		    NULL);
}
