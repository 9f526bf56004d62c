/* SPDX-License-Identifier: MIT */
/*
 * control.c - the control socket: accepting connections, the requests
 * and their checks, authorisation, descriptor passing.  Who gets a place
 * is admission.c's; the channels themselves are channels.c's.
 *
 * Every request is checked before it is believed: the datagram's size
 * against the header's, the magic and the version, the body's exact size
 * for its type, every name field for a NUL.  A bad request gets an error
 * reply (and a log line) and the daemon goes on serving everyone.  Who
 * asks is never taken from the message: the peer's uid, gids and pid come
 * from the socket (SO_PEERCRED, SO_PEERGROUPS) when it connects.
 *
 * root and the daemon's own user may do anything.  Others may publish or
 * subscribe where the channel's rules name them, and administer (create,
 * delete) where [bus] admins does.
 *
 * Who gets a place in the client table at all is decided when a
 * connection is accepted, so that no local user can take every place
 * (admission.c, and docs/shmbusd.md, "Connection limits").
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "shmbusd.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"
#include "../lib/journal.h"

/* Why the request being served was refused, for the reply's body
 * (protocol version 2); "" if there is nothing to add to the errno. */
static char reason[SHMBUS_CTL_REASON];

/* Notes the reason and returns err, for `return deny(-EINVAL, ...)`. */
static int deny(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int deny(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	return err;
}

/* Given up to accept one connection when the descriptors run out, so that
 * the pending one can be taken off the queue and closed.  Another thread
 * may take the number it frees, so it is had again whenever it is -1;
 * while it cannot be, the listening socket is not polled until
 * listen_resume_ns (0: polled), instead of waking the loop for ever. */
static int spare_fd = -1;
static uint64_t listen_resume_ns;
#define LISTEN_PAUSE_NS (100 * 1000000ull)
/* At most this many connections accepted per wakeup: a flood of connects
 * does not keep the loop from the clients already connected (the
 * listening socket, level-triggered, stays ready for the rest). */
#define ACCEPT_BATCH 32
/* Clients dropped for not reading their replies; malformed requests (by
 * kind, so that a flood of one does not hide another); requests refused
 * for want of permission.  Each logged at most once a second, with the
 * count of those left out. */
enum malformed_kind {
	BAD_SIZE, BAD_SHORT, BAD_MAGIC, BAD_VERSION, BAD_HEADER, BAD_BODY,
	BAD_TYPE, BAD_KINDS
};
static const char *const malformed_why[BAD_KINDS] = {
	[BAD_SIZE] = "oversized request", [BAD_SHORT] = "truncated request",
	[BAD_MAGIC] = "bad magic",
	[BAD_VERSION] = "unsupported protocol version",
	[BAD_HEADER] = "inconsistent header",
	[BAD_BODY] = "wrong body size", [BAD_TYPE] = "unknown request type",
};
static unsigned long dropped_unread, malformed[BAD_KINDS], denied;
static struct sbd_ratelimit rl_unread, rl_malformed[BAD_KINDS], rl_denied;

/* A request refused for want of a right: counted and logged, rate-limited,
 * as "CHANNEL: pid P (uid U) may not WHAT". */
static void note_denied(const struct sbd_client *cl, const char *chan,
			const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void note_denied(const struct sbd_client *cl, const char *chan,
			const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	denied++;
	sbd_log_limited(&rl_denied, SBD_NOTICE, denied, "refused",
			"%s: pid %d (uid %u) may not %s", chan, (int)cl->pid,
			(unsigned)cl->uid, what);
}

/* The listening socket polled (EPOLLIN) or not; its epoll data is the
 * address of sbd.listen_fd, as main.c registered it. */
static void listen_poll(bool on)
{
	struct epoll_event ev = { .events = on ? EPOLLIN : 0,
				  .data.ptr = &sbd.listen_fd };

	if (epoll_ctl(sbd.epoll_fd, EPOLL_CTL_MOD, sbd.listen_fd, &ev) < 0)
		sbd_log(SBD_WARN, errno, "listening socket: epoll_ctl");
}

int sbd_control_expire(void)
{
	uint64_t now = (uint64_t)sb_now_ns();
	int resume = -1, idle;

	/* The listening socket, resting since descriptors ran out. */
	if (listen_resume_ns && now >= listen_resume_ns) {
		listen_resume_ns = 0;
		listen_poll(true);
	} else if (listen_resume_ns) {
		resume = (int)((listen_resume_ns - now + 999999) / 1000000);
	}
	idle = sbd_admission_expire(now);
	if (resume < 0 || (idle >= 0 && idle < resume))
		return idle;
	return resume;
}

/*
 * Refuses a connection in words before closing it: a HELLO reply (id 0,
 * the id a client's HELLO carries) with -err.  A client tells it from a
 * daemon that died under it, which closes without a word, and fails at
 * once instead of waiting for a new daemon (lib/client.c, dial()).  The
 * socket is new and its buffer empty: the send does not block.  It is
 * sent before the client's HELLO is read, in version 2: a library of
 * version 2 reads it in its own version only, a newer one in any.
 */
static void refuse(int fd, int err)
{
	struct shmbus_ctl_hdr h = {
		.magic = SHMBUS_CTL_MAGIC, .version = 2,
		.type = SHMBUS_CTL_HELLO | SHMBUS_CTL_REPLY, .id = 0,
		.status = -err,
	};

	if (send(fd, &h, sizeof(h), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		sbd_log(SBD_DEBUG, errno, "refusal not sent");
	close(fd);
}

/* Whether the spare descriptor is held, opening it again if it is not. */
static bool have_spare(void)
{
	if (spare_fd < 0)
		spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return spare_fd >= 0;
}

/* Out of descriptors: take one pending connection off the queue with the
 * spare descriptor and close it, so that the listening socket does not
 * stay readable for ever.  Returns whether it could; if it could not, the
 * listening socket rests for LISTEN_PAUSE_NS (sbd_control_expire()
 * polls it again) rather than waking the loop at once, again and again. */
static bool refuse_without_fds(int err)
{
	int fd = -1;

	sbd.refused++;
	sbd_log_limited(&sbd_rl_refused, SBD_WARN, sbd.refused, "refused",
		    "refused a connection: out of file descriptors (%s)",
		    shmbus_strerror(-err));
	if (have_spare()) {
		close(spare_fd);
		spare_fd = -1;
		fd = accept4(sbd.listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			refuse(fd, EMFILE);
		have_spare();
	}
	if (fd < 0 || spare_fd < 0) {
		listen_poll(false);
		listen_resume_ns = (uint64_t)sb_now_ns() + LISTEN_PAUSE_NS;
	}
	return fd >= 0 && spare_fd >= 0;
}

/* --------------------------------------------------------------- socket */

int sbd_control_listen(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sbd.conf.socket);
	/* We hold the bus's lock: a socket file there is a dead daemon's. */
	unlink(sa.sun_path);
	/* bind() makes the file with the socket's own mode (less the umask,
	 * 0 here): set first, so that no user socket_mode shuts out can
	 * connect between bind() and chmod(), which stays for a kernel that
	 * refuses this. */
	if (fchmod(fd, sbd.conf.socket_mode) < 0)
		sbd_log(SBD_DEBUG, errno, "%s: fchmod before bind", sa.sun_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(sa.sun_path, sbd.conf.socket_mode) < 0 ||
	    listen(fd, 128) < 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	if (spare_fd < 0)
		spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return fd;
}

void sbd_busfile_publish(void)
{
	struct sb_busfile bf = { .pid = (long)sbd.self_pid };
	char path[PATH_MAX];
	int rc;

	snprintf(bf.bus, sizeof(bf.bus), "%s", sbd.conf.bus);
	snprintf(bf.socket, sizeof(bf.socket), "%s", sbd.conf.socket);
	snprintf(bf.shm_dir, sizeof(bf.shm_dir), "%s", sbd.conf.shm_dir);
	rc = sb_busfile_path_for(sbd.conf.socket, sbd.conf.bus, path,
				 sizeof(path));
	if (rc == 0)
		rc = sb_busfile_write(path, &bf);
	if (rc)
		sbd_log(SBD_WARN, rc, "%s: cannot write the bus file (busstat "
			"and clients that name the bus will not find it)",
			path);
	else
		sbd_log(SBD_DEBUG, 0, "%s: bus file written", path);
}

/* The peer's supplementary groups, at most `max` of them (the lowest: the
 * kernel sorts them) into g; how many.  SO_PEERGROUPS copies nothing when
 * they do not all fit (ERANGE, with the size they need), so a client in
 * more groups is read again into a buffer of that size. */
static int peer_groups(int fd, gid_t *g, int max)
{
	socklen_t len = (socklen_t)(max * sizeof(gid_t));
	gid_t *all;
	int n;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0)
		return (int)(len / sizeof(gid_t));
	if (errno != ERANGE || len <= max * sizeof(gid_t) ||
	    !(all = malloc(len)))
		return 0;
	n = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, all, &len) == 0 ?
		    (int)(len / sizeof(gid_t)) : 0;
	if (n > max)
		n = max;
	memcpy(g, all, (size_t)n * sizeof(gid_t));
	free(all);
	return n;
}

void sbd_control_accept(void)
{
	/* Had again if another thread took its number (see spare_fd). */
	have_spare();
	for (int batch = 0; batch < ACCEPT_BATCH; batch++) {
		struct sbd_client *cl;
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
		struct ucred cr;
		socklen_t len = sizeof(cr);
		int rc, fd = accept4(sbd.listen_fd, NULL, NULL,
				     SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0) {
			rc = errno;
			if (rc == EMFILE || rc == ENFILE) {
				if (refuse_without_fds(rc))
					continue;
				return;	/* logged, and resting */
			}
			if (rc == ECONNABORTED || rc == EINTR)
				continue;
			if (rc != EAGAIN)
				sbd_log(SBD_WARN, rc, "accept");
			return;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 ||
		    len != sizeof(cr) || !(cl = calloc(1, sizeof(*cl)))) {
			sbd.refused++;
			sbd_log_limited(&sbd_rl_refused, SBD_WARN, sbd.refused,
				    "refused", "refused a connection: no "
				    "credentials, or out of memory");
			refuse(fd, ENOMEM);
			continue;
		}
		cl->fd = fd;
		cl->pid = cr.pid;
		cl->uid = cr.uid;
		/* The primary group, then the supplementary ones (which
		 * need not include it). */
		cl->gids[0] = cr.gid;
		cl->ngids = 1 + peer_groups(fd, cl->gids + 1,
					    sizeof(cl->gids) / sizeof(gid_t) - 1);
		cl->privileged = sbd_admission_privileged(cl->uid, cl->gids,
						      cl->ngids);
		if (!sbd_admit(cl)) {
			refuse(fd, EUSERS);
			free(cl);
			continue;
		}
		ev.data.ptr = cl;
		rc = epoll_ctl(sbd.epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ?
			     -errno : sbd_admission_enter(cl);
		if (rc) {
			sbd_log(SBD_WARN, rc, "client pid %d refused",
				(int)cl->pid);
			epoll_ctl(sbd.epoll_fd, EPOLL_CTL_DEL, fd, NULL);
			refuse(fd, -rc);
			free(cl);
			continue;
		}
		sbd_client_add(cl);
		sbd_log(SBD_DEBUG, 0, "client pid %d uid %u connected%s",
			(int)cl->pid, (unsigned)cl->uid,
			cl->privileged ? " (privileged)" : "");
	}
}

void sbd_control_drop(struct sbd_client *cl)
{
	epoll_ctl(sbd.epoll_fd, EPOLL_CTL_DEL, cl->fd, NULL);
	close(cl->fd);
	sbd_admission_leave(cl);
	sbd_log(SBD_DEBUG, 0, "client pid %d gone", (int)cl->pid);
	sbd_client_remove(cl);
	/* If it died, its slots are repaired now, not at the next tick. */
	sbd_reaper_kick();
}

/* A reply speaks the request's version if it is one this daemon speaks,
 * else its own. */
static uint16_t reply_version(const struct shmbus_ctl_hdr *req)
{
	return req->version >= SHMBUS_CTL_VERSION_MIN &&
			       req->version <= SHMBUS_CTL_VERSION ?
		       req->version : SHMBUS_CTL_VERSION;
}

/* pass: NULL, or two descriptors to hand over (SCM_RIGHTS). */
static int reply(struct sbd_client *cl, const struct shmbus_ctl_hdr *req,
		 int status, const void *body, uint32_t len, const int *pass)
{
	struct shmbus_ctl_hdr h = {
		.magic = SHMBUS_CTL_MAGIC, .version = reply_version(req),
		.type = (uint16_t)(req->type | SHMBUS_CTL_REPLY),
		.id = req->id, .len = len, .status = status,
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)body, .iov_len = len },
	};
	union {
		struct cmsghdr c;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} ctl;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

	if (pass) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		m.msg_control = ctl.buf;
		m.msg_controllen = sizeof(ctl.buf);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(2 * sizeof(int));
		memcpy(CMSG_DATA(c), pass, 2 * sizeof(int));
	}
	if (sendmsg(cl->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

/* What a handler returns once it has replied itself: REPLIED, or DROP if
 * the reply could not be queued and the client is to be disconnected. */
#define REPLIED 1
#define DROP 2

/* A client whose reply cannot be queued (its socket's send buffer full:
 * it does not read) is dropped, and so is one whose connection is gone.
 * Returns REPLIED or DROP. */
static int replied(struct sbd_client *cl, int rc)
{
	if (rc == 0)
		return REPLIED;
	if (rc == -EAGAIN || rc == -ENOBUFS) {
		dropped_unread++;
		sbd_log_limited(&rl_unread, SBD_NOTICE, dropped_unread, "dropped",
			    "dropped pid %d (uid %u): its replies are not "
			    "read (%s)", (int)cl->pid, (unsigned)cl->uid,
			    shmbus_strerror(rc));
	} else {
		sbd_log(SBD_DEBUG, rc, "pid %d: reply not sent", (int)cl->pid);
	}
	return DROP;
}

/* Whether the client has not yet read a reply sent to it: a client asks,
 * reads the answer, then asks again (lib/client.c), so one that sends a
 * request before reading the last reply is not reading them.  Each reply
 * to OPEN holds two of the daemon's descriptors in flight until it is
 * read, counted against the daemon user's RLIMIT_NOFILE: one unread reply
 * per connection bounds them. */
static bool reply_unread(const struct sbd_client *cl)
{
	int queued = 0;

	return ioctl(cl->fd, SIOCOUTQ, &queued) == 0 && queued > 0;
}

static bool privileged(const struct sbd_client *cl)
{
	return cl->uid == 0 || cl->uid == sbd.self_uid;
}

/* Root, the daemon's user, or one the [bus] admins rule names as the
 * config stands now (a reload may change it under a connected client). */
static bool admin(const struct sbd_client *cl)
{
	return privileged(cl) ||
	       sbd_rule_allows(&sbd.conf.admins, cl->uid, cl->gids, cl->ngids);
}

/* A name field: NUL-terminated within its size, and a valid name. */
static bool name_ok(const char name[SHMBUS_CTL_NAME])
{
	size_t n = strnlen(name, SHMBUS_CTL_NAME);

	if (n == 0 || n == SHMBUS_CTL_NAME || n > 200 || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return false;
	}
	return true;
}

#define DAMAGED "channel '%s' is damaged (a file of it was cut short): " \
		"delete and recreate it"

/* cl opened the channel of data id `id`. */
static void note_open(struct sbd_client *cl, uint64_t id)
{
	for (uint32_t i = 0; i < cl->nopen; i++)
		if (cl->opened[i] == id)
			return;
	if (cl->nopen < 64)
		cl->opened[cl->nopen++] = id;
}

static int do_open(struct sbd_client *cl, const struct shmbus_ctl_hdr *h,
		   const struct shmbus_ctl_open *req, bool attach)
{
	const char *role = req->role == SHMBUS_CTL_ROLE_PUB ? "publish"
							    : "subscribe";
	struct sbd_chan *c;
	struct sbd_rules *r;
	uint32_t fence;
	bool ok;
	int fds[2], rc;

	if ((req->role != SHMBUS_CTL_ROLE_PUB &&
	     req->role != SHMBUS_CTL_ROLE_SUB) || req->flags)
		return deny(-EINVAL, "role %u, flags %u: expected role 1 "
			      "(publish) or 2 (subscribe), flags 0", req->role,
			      req->flags);
	rcu_read_lock();
	c = sbd_chan_find(req->name);
	if (!c) {
		rcu_read_unlock();
		return deny(-ENOENT, "no channel '%s' on bus '%s'",
			      req->name, sbd.conf.bus);
	}
	/* No edge: a flag alone (faults.c sets it, nothing travels with
	 * it). */
	if (atomic_load_explicit(&c->damaged, memory_order_relaxed)) {
		rcu_read_unlock();
		return deny(-EBADMSG, DAMAGED, req->name);
	}
	r = rcu_dereference(c->rules);
	ok = privileged(cl) ||
	     sbd_rule_allows(req->role == SHMBUS_CTL_ROLE_PUB ? &r->pub
							     : &r->sub,
			     cl->uid, cl->gids, cl->ngids);
	/* A subscriber gets the data file read-only: it cannot map the
	 * messages writable, whatever it does.  The descriptors are the
	 * entry's: passed before the read-side section ends. */
	fds[0] = c->fd;
	fds[1] = req->role == SHMBUS_CTL_ROLE_PUB ? c->data_rw : c->data_ro;
	if (!ok) {
		rcu_read_unlock();
		note_denied(cl, req->name, "%s", role);
		return deny(-EACCES, "uid %u may not %s on '%s': its %s "
			      "rule names neither the uid nor its groups",
			      (unsigned)cl->uid, role, req->name, role);
	}
	/* A standby's replicated ring (its fence STANDBY, or CUT while a
	 * rejoin cuts it back) takes no publisher: the library would refuse
	 * the handle (EROFS), and the data file must not reach a process
	 * writable there at all (what it wrote by hand would be taken for
	 * the primary's).  A re-attach (a publisher of this host's time as
	 * primary, after a daemon restart) only says it is there.  No edge:
	 * a promotion meanwhile makes this a refusal the client tries
	 * again. */
	fence = SHMBUS_FENCE_STATE(sb_fence_get(c->ch));
	if (!attach && req->role == SHMBUS_CTL_ROLE_PUB &&
	    (fence == SHMBUS_FENCE_STANDBY || fence == SHMBUS_FENCE_CUT)) {
		rcu_read_unlock();
		return deny(-EROFS, "channel '%s' is a standby's replica here: "
			    "publish on the primary", req->name);
	}
	note_open(cl, sb_channel_data_id(c->ch));
	sbd_log(SBD_DEBUG, 0, "%s: pid %d %s to %s", req->name, (int)cl->pid,
		attach ? "re-attached" : "opened", role);
	rc = attach ? 0 : reply(cl, h, 0, NULL, 0, fds);
	rcu_read_unlock();
	if (attach)
		return 0;
	if (rc == -ETOOMANYREFS) {
		/* The daemon's user has RLIMIT_NOFILE descriptors in flight
		 * (unread, in its clients' sockets): said at once, rather
		 * than a reply the client waits for in vain. */
		sbd_log(SBD_WARN, rc, "%s: pid %d: descriptors not passed",
			req->name, (int)cl->pid);
		return deny(rc, "the daemon has too many descriptors in "
			      "flight to its clients; try again");
	}
	return replied(cl, rc);
}

static int do_create(struct sbd_client *cl, const struct shmbus_ctl_create *q)
{
	const struct sbd_chan_conf *cc;
	struct shmbus_channel_attr a;
	shmbus_channel *ch;
	uint64_t id;
	int rc;

	if (!admin(cl)) {
		note_denied(cl, q->name, "create it");
		return deny(-EACCES, "uid %u may not create channels: only "
			      "root, the daemon's user and [bus] admins may",
			      (unsigned)cl->uid);
	}
	if (q->reserved)
		return deny(-EINVAL, "the reserved field is not 0");
	if (q->policy > SHMBUS_OVERWRITE)
		return deny(-EINVAL, "policy %u: expected 0 (block) or 1 "
			      "(overwrite)", q->policy);
	if (q->producers > SHMBUS_MULTI_PRODUCER)
		return deny(-EINVAL, "producers %u: expected 0 (single) or "
			      "1 (multi)", q->producers);
	if (sbd_chan_count() >= sbd.conf.max_channels)
		return deny(-ENOSPC, "the bus has max_channels (%u) "
			      "channels", sbd.conf.max_channels);
	shmbus_channel_attr_init(&a);
	a.capacity = q->capacity;
	a.max_msg = q->max_msg;
	a.policy = (enum shmbus_policy)q->policy;
	a.producers = (enum shmbus_producers)q->producers;
	a.numa_node = q->numa_node;
	a.mode = q->mode ? (mode_t)q->mode : 0600;
	/* The library's rule and its words: which limit, what is allowed. */
	rc = shmbus_channel_attr_check(&a, reason, sizeof(reason));
	if (rc)
		return rc;
	rcu_read_lock();
	rc = sbd_chan_find(q->name) ? -EEXIST : 0;
	rcu_read_unlock();
	if (rc)
		return deny(rc, "channel '%s' exists", q->name);
	/* A journal starts only with the daemon: a ring made now would be
	 * journaled by nobody (its pub_sync() acknowledging at once what no
	 * journal holds), and at the next start, used and behind its
	 * journal, would stop the journal for good. */
	for (size_t i = 0; i < sbd.conf.nchans; i++)
		if (!strcmp(sbd.conf.chans[i].name, q->name) &&
		    (sbd.conf.chans[i].jnl.on ||
		     sbd.conf.chans[i].repl_level >= 0))
			return deny(-EBUSY, "'%s' is %s by the config: "
				    "the daemon makes it, with its %s, "
				    "when it starts (restart it)", q->name,
				    sbd.conf.chans[i].jnl.on ? "journaled"
							     : "replicated",
				    sbd.conf.chans[i].jnl.on ? "journal"
							     : "replication");
	rc = sbd_channel_create_file(q->name, &a, -1, -1, &ch);
	if (rc == -EEXIST)
		return deny(rc, "a file named '%s' is in %s (not a channel "
			      "of this bus)", q->name, sbd.conf.shm_dir);
	if (rc == -ENOMEM && sb_memcg_room() < a.capacity)
		return deny(rc, "cannot create '%s': the daemon's memory cgroup "
			    "has %" PRIu64 " bytes of room left, and a ring's "
			    "pages are charged to it", q->name,
			    sb_memcg_room());
	if (rc)
		return deny(rc, "cannot create '%s' in %s: %s", q->name,
			      sbd.conf.shm_dir, shmbus_strerror(rc));
	/* A name the config has a section for (deleted, made again) gets
	 * that section's rules and groups, as at a restart. */
	cc = NULL;
	for (size_t i = 0; i < sbd.conf.nchans && !cc; i++)
		if (!strcmp(sbd.conf.chans[i].name, q->name))
			cc = &sbd.conf.chans[i];
	if (cc)
		sbd_groups_setup(cc, ch);
	id = sb_channel_data_id(ch);
	rc = sbd_channel_enroll(q->name, ch, cc, cc != NULL);	/* owns ch */
	if (rc) {
		/* Made but not served (no descriptors or memory for its
		 * entry): its files go, or the name would be refused as a
		 * foreign file's until a restart adopted them. */
		int rc2 = sb_channel_unlink_id(sbd.conf.shm_dir, q->name, id);

		sbd_log(SBD_WARN, -rc, "%s: created for pid %d but not served%s",
			q->name, (int)cl->pid, rc2 == -ESTALE ?
			"; another process made another under its name" :
			rc2 && rc2 != -ENOENT ?
			"; its files could not be removed" : "; removed");
		return deny(rc, "'%s' could not be served: %s", q->name,
			    shmbus_strerror(rc));
	}
	sbd_log(SBD_NOTICE, 0, "%s: created by pid %d (uid %u)%s",
		q->name, (int)cl->pid, (unsigned)cl->uid,
		cc ? ", with its rules from the config" : "");
	return 0;
}

/* shmbusctl status, promote, demote, switchover: admins only.  A role
 * change holds the main thread while it lasts (at most the config's
 * handover_ms, plus the peer's answer). */
static int do_repl(struct sbd_client *cl, const struct shmbus_ctl_hdr *h,
		   const struct shmbus_ctl_repl *q)
{
	struct shmbus_ctl_repl_reply r = { 0 };
	int rc;

	if (q->op != SHMBUS_REPL_OP_STATUS && !admin(cl)) {
		note_denied(cl, "replication", "change roles");
		return deny(-EACCES, "uid %u may not change replication roles: "
			    "only root, the daemon's user and [bus] admins may",
			    (unsigned)cl->uid);
	}
	if (q->op < SHMBUS_REPL_OP_STATUS || q->op > SHMBUS_REPL_OP_SWITCHOVER ||
	    (q->flags & ~SHMBUS_REPL_FORCE))
		return deny(-EINVAL, "unknown replication request %u", q->op);
	rc = sbd_repl_command(q->op, q->flags, &r);
	if (rc)
		return deny(rc, "%s", r.text);
	return replied(cl, reply(cl, h, 0, &r, sizeof(r), NULL));
}

static int do_delete(struct sbd_client *cl, const char *name)
{
	struct sbd_chan *c;
	int rc;

	if (!admin(cl)) {
		note_denied(cl, name, "delete it");
		return deny(-EACCES, "uid %u may not delete channels: only "
			      "root, the daemon's user and [bus] admins may",
			      (unsigned)cl->uid);
	}
	if (sbd_repl_is(name))
		return deny(-EBUSY, "'%s' is replicated: take it out of the "
			    "config and restart first", name);
	rcu_read_lock();
	c = sbd_chan_find(name);
	if (!c) {
		rcu_read_unlock();
		return deny(-ENOENT, "no channel '%s' on bus '%s'", name,
			      sbd.conf.bus);
	}
	rc = shmbus_channel_unlink(sbd.conf.shm_dir, name);
	if (!rc || rc == -ENOENT)
		sbd_chan_remove(c);	/* freed after this section */
	rcu_read_unlock();
	if (rc && rc != -ENOENT)
		return rc;
	/* Its journal's agent maps the ring: it would hold its memory. */
	sbd_journal_drop(name);
	sbd_log(SBD_NOTICE, 0, "%s: deleted by pid %d (uid %u)", name,
		(int)cl->pid, (unsigned)cl->uid);
	return 0;
}

static void fill_entry(struct shmbus_ctl_entry *e, struct sbd_chan *c)
{
	struct shmbus_channel_info in;

	shmbus_channel_info(c->ch, &in);
	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", c->name);
	e->capacity = in.capacity;
	e->max_msg = in.max_msg;
	e->flags = sb_channel_flags(in.policy, in.producers);
	/* No edge, as in do_open(). */
	if (atomic_load_explicit(&c->damaged, memory_order_relaxed))
		e->flags |= SHMBUS_F_DAMAGED;
	e->subscribers = in.subscribers;
	e->producers = in.producers_active;
	e->published = in.published;
}

static int do_list(struct sbd_client *cl, const struct shmbus_ctl_hdr *h,
		   const struct shmbus_ctl_list *q)
{
	static uint8_t buf[SHMBUS_CTL_MAX];
	struct shmbus_ctl_list *rep = (struct shmbus_ctl_list *)buf;
	struct shmbus_ctl_entry *e = (struct shmbus_ctl_entry *)(rep + 1);
	struct cds_lfht_iter it;
	struct sbd_chan *c;
	uint32_t i = 0;

	if (q->total || q->count || q->reserved)
		return deny(-EINVAL, "total, count and reserved must be 0 "
			      "in a request");
	memset(rep, 0, sizeof(*rep));
	rcu_read_lock();
	cds_lfht_for_each_entry(sbd_chans(), &it, c, node) {
		if (i >= q->offset && rep->count < SHMBUS_CTL_LIST_PAGE)
			fill_entry(&e[rep->count++], c);
		i++;
	}
	rcu_read_unlock();
	rep->offset = q->offset;
	rep->total = i;
	return replied(cl, reply(cl, h, 0, buf, (uint32_t)(sizeof(*rep) +
					rep->count * sizeof(*e)), NULL));
}

static int do_describe(struct sbd_client *cl, const struct shmbus_ctl_hdr *h,
		       const char *name)
{
	struct shmbus_ctl_desc d;
	struct shmbus_channel_info in;
	struct cds_lfht_iter it;
	struct sbd_client *o;
	struct sbd_chan *c;
	struct sbd_rules *r;
	uint64_t id;

	memset(&d, 0, sizeof(d));
	rcu_read_lock();
	c = sbd_chan_find(name);
	if (!c) {
		rcu_read_unlock();
		return deny(-ENOENT, "no channel '%s' on bus '%s'", name,
			      sbd.conf.bus);
	}
	/* No edge, as in do_open(). */
	if (atomic_load_explicit(&c->damaged, memory_order_relaxed)) {
		rcu_read_unlock();
		return deny(-EBADMSG, DAMAGED, name);
	}
	fill_entry(&d.e, c);
	shmbus_channel_info(c->ch, &in);
	d.numa_node = in.numa_node;
	d.mode = c->mode;
	d.head = in.head;
	d.bytes = in.bytes;
	d.backpressure = in.backpressure;
	d.repairs = in.repairs;
	d.reaped = in.reaped;
	d.configured = c->configured;
	r = rcu_dereference(c->rules);
	snprintf(d.publish, sizeof(d.publish), "%s",
		 r->pub.text[0] ? r->pub.text : "(root and the daemon's user)");
	snprintf(d.subscribe, sizeof(d.subscribe), "%s",
		 r->sub.text[0] ? r->sub.text : "(root and the daemon's user)");
	id = sb_channel_data_id(c->ch);
	cds_lfht_for_each_entry(sbd_clients(), &it, o, node)
		for (uint32_t i = 0; i < o->nopen; i++)
			d.clients += o->opened[i] == id;
	rcu_read_unlock();
	return replied(cl, reply(cl, h, 0, &d, sizeof(d), NULL));
}

/* Joining a consumer group: the channel's subscribe rule decides; the
 * group is created from the config, else from the member's settings. */
/* Whether cl may subscribe to channel `name` (what: for the refusal's
 * words): 0 with *c (inside rcu_read_lock()), or a deny() status. */
static int subscriber_of(struct sbd_client *cl, const char *name,
			 const char *what, struct sbd_chan **c)
{
	struct sbd_rules *r;

	*c = sbd_chan_find(name);
	if (!*c)
		return deny(-ENOENT, "no channel '%s' on bus '%s'", name,
			      sbd.conf.bus);
	/* No edge, as in do_open(). */
	if (atomic_load_explicit(&(*c)->damaged, memory_order_relaxed))
		return deny(-EBADMSG, DAMAGED, name);
	r = rcu_dereference((*c)->rules);
	if (!privileged(cl) &&
	    !sbd_rule_allows(&r->sub, cl->uid, cl->gids, cl->ngids)) {
		note_denied(cl, name, "%s", what);
		return deny(-EACCES, "uid %u may not %s '%s': its subscribe "
			      "rule names neither the uid nor its groups",
			      (unsigned)cl->uid, what, name);
	}
	return 0;
}

/* A GROUP request from a handle of a channel deleted and made again under
 * its name since: it names the group of another channel (data_id 0: the
 * client does not say which, version 1 and 2). */
static bool stale(const struct sbd_chan *c, const struct shmbus_ctl_group *req)
{
	return req->data_id && req->data_id != sb_channel_data_id(c->ch);
}

#define STALE "channel '%s' was deleted and made again since this handle " \
	      "opened it: group '%s' is another channel's now (open the " \
	      "channel again)"

/* Deleting a group: administrators only (it drops what the group has not
 * acknowledged, and a configured group comes back at the next reload). */
static int do_group_delete(struct sbd_client *cl,
			   const struct shmbus_ctl_group *req)
{
	struct shmbus_group_attr a;
	struct sbd_chan *c;
	int rc;

	if (!memchr(req->group, 0, sizeof(req->group)) ||
	    !sb_name_ok(req->group, 63))
		return deny(-EINVAL, "a group name is 1 to 63 letters, digits, "
			      "'.', '_' or '-', not starting with '.'%s", "");
	if (!admin(cl)) {
		note_denied(cl, req->channel, "delete group %s", req->group);
		return deny(-EACCES, "uid %u may not delete groups: only root, "
			      "the daemon's user and [bus] admins may",
			      (unsigned)cl->uid);
	}
	rcu_read_lock();
	c = sbd_chan_find(req->channel);
	rc = !c ? -ENOENT : stale(c, req) ? -ESTALE
					   : sbd_group_delete(c, req->group);
	rcu_read_unlock();
	if (!c)
		return deny(-ENOENT, "no channel '%s' on bus '%s'",
			      req->channel, sbd.conf.bus);
	if (rc == -ESTALE)
		return deny(rc, STALE, req->channel, req->group);
	if (rc == -EBUSY)
		return deny(rc, "group '%s' of '%s' has a live member (or "
			      "another removal holds it)", req->group,
			      req->channel);
	if (rc)
		return deny(rc, "group '%s' of '%s': %s", req->group,
			      req->channel, shmbus_strerror(rc));
	sbd_log(SBD_NOTICE, 0, "%s: group %s deleted by pid %d (uid %u)%s",
		req->channel, req->group, (int)cl->pid, (unsigned)cl->uid,
		sbd_group_configured(req->channel, req->group, &a) ?
		"; the config names it: it is made again at the next reload" :
		"");
	return 0;
}

static int do_group(struct sbd_client *cl, const struct shmbus_ctl_hdr *h,
		    struct shmbus_ctl_group *req)
{
	struct shmbus_group_attr a, s;
	bool configured, is_admin;
	struct sbd_chan *c;
	struct stat st = { 0 };
	uint64_t id;
	int fd, rc, fds[2];

	if (req->flags == SHMBUS_CTL_GROUP_DELETE)
		return do_group_delete(cl, req);
	if (!memchr(req->group, 0, sizeof(req->group)) ||
	    !memchr(req->dead_letter, 0, sizeof(req->dead_letter)) ||
	    !sb_name_ok(req->group, 63) || req->flags ||
	    (req->dead_letter[0] && !sb_name_ok(req->dead_letter, 63)))
		return deny(-EINVAL, "a group name is 1 to 63 letters, digits, "
			      "'.', '_' or '-', not starting with '.'; flags "
			      "0%s", "");
	configured = sbd_group_configured(req->channel, req->group, &a);
	/* A group holds a subscriber slot, and a block channel's producers
	 * behind its floor, until it is deleted: made by the config or an
	 * administrator, joined by subscribers.  The daemon copies poison
	 * messages only where the config says, as it publishes with its
	 * own rights: a dead-letter channel named here would let a member
	 * publish where it may not. */
	if (!configured && req->dead_letter[0]) {
		note_denied(cl, req->channel, "name a dead-letter channel for "
			    "group %s", req->group);
		return deny(-EPERM, "group '%s' of '%s': a dead-letter channel "
			      "is named in shmbusd's config only (the daemon "
			      "copies poison messages with its own rights)",
			      req->group, req->channel);
	}
	is_admin = admin(cl);
	if (!configured) {
		memset(&a, 0, sizeof(a));
		a.mode = (enum shmbus_group_mode)req->mode;
		a.window = req->window;
		a.lanes = req->lanes;
		a.max_deliveries = req->max_deliveries;
		a.lease_ns = req->lease_ns;
		a.start = (enum shmbus_start)req->start;
	}
	if (sb_group_settings(&a, &s))
		return deny(-EINVAL, "group settings: mode 0-2, window a power "
			      "of two up to 65536, lanes up to 64, "
			      "max_deliveries up to 65535 (or UINT32_MAX), "
			      "start 0-1, lease_ns >= 0%s", "");
	rcu_read_lock();
	rc = subscriber_of(cl, req->channel, "join a group of", &c);
	if (!rc && stale(c, req))
		rc = deny(-ESTALE, STALE, req->channel, req->group);
	if (rc) {
		rcu_read_unlock();
		return rc;
	}
	fd = sb_group_open_file(c->ch, sbd.conf.shm_dir, c->name, req->group,
				configured || is_admin ? &s : NULL);
	id = sb_channel_data_id(c->ch);
	rcu_read_unlock();
	if (fd == -ENOENT) {
		note_denied(cl, req->channel, "make group %s", req->group);
		return deny(-EPERM, "group '%s' of '%s' does not exist, and "
			      "uid %u may not make one: groups are made by the "
			      "config, root, the daemon's user and [bus] "
			      "admins", req->group, req->channel,
			      (unsigned)cl->uid);
	}
	if (fd < 0)
		return deny(fd, "group '%s' of '%s': %s", req->group,
			      req->channel, shmbus_strerror(fd));
	/* shm_dir may be a directory where every user can make files
	 * (/dev/shm): a group's file made there by another user is not
	 * handed out as the group. */
	if (fstat(fd, &st) < 0 || !sbd_file_is_ours(&st)) {
		close(fd);
		sbd_log(SBD_ERR, 0, "%s: group %s: its file belongs to uid %u, "
			"not to this daemon: not handed out (made by another "
			"user in %s?)", req->channel, req->group,
			(unsigned)st.st_uid, sbd.conf.shm_dir);
		return deny(-EPERM, "group '%s' of '%s': its file is not the "
			      "daemon's", req->group, req->channel);
	}
	note_open(cl, id);
	sbd_log(SBD_DEBUG, 0, "%s: pid %d joins group %s", req->channel,
		(int)cl->pid, req->group);
	fds[0] = fds[1] = fd;
	rc = reply(cl, h, 0, NULL, 0, fds);
	close(fd);
	return replied(cl, rc);
}

/* A replaying subscriber's access to a channel's journal, judged by the
 * channel's subscribe rule, as a consumer group's file is: the files stay
 * the daemon's. */
static int do_journal(struct sbd_client *cl, const struct shmbus_ctl_hdr *h,
		      const struct shmbus_ctl_journal *req)
{
	static uint64_t out[SHMBUS_CTL_JNL_MAX];
	char dir[PATH_MAX + 300], path[PATH_MAX + 340];
	struct sbd_chan *c;
	uint64_t *b;
	size_t k, i;
	int fd, rc, fds[2];

	if (!memchr(req->channel, 0, sizeof(req->channel)) ||
	    !sb_name_ok(req->channel, 200) || req->flags ||
	    req->what > SHMBUS_CTL_JNL_TIX || req->base % SHMBUS_JSEG_MIN)
		return deny(-EINVAL, "a journal request: a channel's name, "
			      "LIST, SEG or TIX, flags 0, a segment's base%s",
			      "");
	rcu_read_lock();
	rc = subscriber_of(cl, req->channel, "read the journal of", &c);
	rcu_read_unlock();
	if (rc)
		return rc;
	snprintf(dir, sizeof(dir), "%s/%s", sbd.conf.journal_dir,
		 req->channel);
	if (req->what == SHMBUS_CTL_JNL_LIST) {
		rc = sb_jlist(dir, &b, &k);
		if (rc)
			return deny(rc, "the journal of '%s': %s", req->channel,
				      strerror(-rc));
		/* This page: from the first base at or past req->base. */
		for (i = 0; i < k && b[i] < req->base; i++)
			;
		k -= i;
		if (k > SHMBUS_CTL_JNL_MAX)
			k = SHMBUS_CTL_JNL_MAX;
		memcpy(out, b + i, k * sizeof(*b));
		free(b);
		rc = reply(cl, h, 0, out, (uint32_t)(k * sizeof(*out)), NULL);
		return replied(cl, rc);
	}
	if ((req->what == SHMBUS_CTL_JNL_SEG ? sb_jseg_path : sb_jtix_path)(
		    path, sizeof(path), dir, req->base))
		return deny(-ENAMETOOLONG, "journal path too long%s", "");
	fd = sb_open_file(path, O_RDONLY);
	if (fd < 0)
		return deny(fd, "the journal of '%s': %s", req->channel,
			      strerror(-fd));
	fds[0] = fds[1] = fd;
	rc = reply(cl, h, 0, NULL, 0, fds);
	close(fd);
	return replied(cl, rc);
}

#define NAME_RULE "a channel name is 1 to 200 letters, digits, '.', '_' " \
		  "or '-', not starting with '.'"

/* Dispatches one well-formed request.  Returns a status to reply with,
 * REPLIED if the reply was sent already, or DROP. */

/* recvmsg() read 0 bytes: the peer closed, or sent an empty datagram
 * (a malformed request, answered like any other). */
static bool peer_closed(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLRDHUP };
	int rc;

	/* A signal is not a hang-up (the fuzzer's timer, a reload's). */
	do
		rc = poll(&p, 1, 0);
	while (rc < 0 && errno == EINTR);
	return rc < 0 || (rc == 1 && (p.revents & (POLLRDHUP | POLLHUP |
						   POLLERR | POLLNVAL)));
}

/* The body size of each request type in protocol version `ver`: the
 * framing's last check, before dispatch(); UINT32_MAX for a type this
 * daemon does not know. */
static uint32_t body_size(uint16_t type, uint16_t ver)
{
	static const uint32_t size[] = {
		[SHMBUS_CTL_HELLO] = 0,
		[SHMBUS_CTL_OPEN] = sizeof(struct shmbus_ctl_open),
		[SHMBUS_CTL_ATTACH] = sizeof(struct shmbus_ctl_open),
		[SHMBUS_CTL_CREATE] = sizeof(struct shmbus_ctl_create),
		[SHMBUS_CTL_DELETE] = sizeof(struct shmbus_ctl_name),
		[SHMBUS_CTL_LIST] = sizeof(struct shmbus_ctl_list),
		[SHMBUS_CTL_DESCRIBE] = sizeof(struct shmbus_ctl_name),
		[SHMBUS_CTL_REPL] = sizeof(struct shmbus_ctl_repl),
		[SHMBUS_CTL_GROUP] = sizeof(struct shmbus_ctl_group),
		[SHMBUS_CTL_JOURNAL] = sizeof(struct shmbus_ctl_journal),
	};

	if (type == SHMBUS_CTL_GROUP && ver < 3)
		return SHMBUS_CTL_GROUP_V2_LEN;	/* no data_id */
	return type == 0 || type > SHMBUS_CTL_JOURNAL ? UINT32_MAX
						      : size[type];
}

/* A well-formed request (its type known, its body of that type's size):
 * whatever it answers, it is not a malformed one. */
static int dispatch(struct sbd_client *cl, const struct shmbus_ctl_hdr *h,
		    const uint8_t *body)
{
	union {
		struct shmbus_ctl_open open;
		struct shmbus_ctl_create create;
		struct shmbus_ctl_name name;
		struct shmbus_ctl_list list;
		struct shmbus_ctl_repl repl;
		struct shmbus_ctl_group group;
		struct shmbus_ctl_journal journal;
	} q;

	/* An aligned copy of the body; what an older version's body lacks
	 * reads 0 (GROUP's data_id: any channel under the name). */
	memset(&q, 0, sizeof(q));
	memcpy(&q, body, h->len);
	switch (h->type) {
	case SHMBUS_CTL_HELLO: {
		struct shmbus_ctl_hello hello = {
			.daemon_pid = (uint32_t)sbd.self_pid,
			.channels = (uint32_t)sbd_chan_count(),
		};

		snprintf(hello.bus, sizeof(hello.bus), "%s", sbd.conf.bus);
		return replied(cl, reply(cl, h, 0, &hello, sizeof(hello),
					 NULL));
	}
	case SHMBUS_CTL_OPEN:
	case SHMBUS_CTL_ATTACH:
		if (!name_ok(q.open.name))
			return deny(-EINVAL, NAME_RULE);
		return do_open(cl, h, &q.open, h->type == SHMBUS_CTL_ATTACH);
	case SHMBUS_CTL_CREATE:
		if (!name_ok(q.create.name))
			return deny(-EINVAL, NAME_RULE);
		return do_create(cl, &q.create);
	case SHMBUS_CTL_DELETE:
		if (!name_ok(q.name.name))
			return deny(-EINVAL, NAME_RULE);
		return do_delete(cl, q.name.name);
	case SHMBUS_CTL_LIST:
		return do_list(cl, h, &q.list);
	case SHMBUS_CTL_DESCRIBE:
		if (!name_ok(q.name.name))
			return deny(-EINVAL, NAME_RULE);
		return do_describe(cl, h, q.name.name);
	case SHMBUS_CTL_REPL:
		return do_repl(cl, h, &q.repl);
	case SHMBUS_CTL_GROUP:
		if (!memchr(q.group.channel, 0, sizeof(q.group.channel)) ||
		    !name_ok(q.group.channel))
			return deny(-EINVAL, NAME_RULE);
		return do_group(cl, h, &q.group);
	case SHMBUS_CTL_JOURNAL:
		return do_journal(cl, h, &q.journal);
	}
	return -EOPNOTSUPP;
}

bool sbd_control_serve(struct sbd_client *cl)
{
	static uint8_t buf[SHMBUS_CTL_MAX];
	struct shmbus_ctl_hdr h = { 0 };
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	int bad = BAD_KINDS;	/* none */
	ssize_t n;
	int rc;

	reason[0] = 0;
	/* A request before the last reply was read: see reply_unread(). */
	if (reply_unread(cl)) {
		dropped_unread++;
		sbd_log_limited(&rl_unread, SBD_NOTICE, dropped_unread, "dropped",
			    "dropped pid %d (uid %u): it sent a request "
			    "before reading the reply to the last one",
			    (int)cl->pid, (unsigned)cl->uid);
		return false;
	}
	/* No control buffer: descriptors a client sends are closed by the
	 * kernel (MSG_CTRUNC), never received. */
	n = recvmsg(cl->fd, &m, MSG_DONTWAIT);
	if (n == 0 && peer_closed(cl->fd))
		return false;
	if (n < 0)
		return errno == EAGAIN || errno == EINTR;
	if ((size_t)n >= sizeof(h))
		memcpy(&h, buf, sizeof(h));
	if (m.msg_flags & MSG_TRUNC) {
		rc = -EMSGSIZE;
		bad = BAD_SIZE;
	} else if ((size_t)n < sizeof(h)) {
		rc = -EBADMSG;
		bad = BAD_SHORT;
		memset(&h, 0, sizeof(h));
	} else if (h.magic != SHMBUS_CTL_MAGIC) {
		rc = -EPROTO;
		bad = BAD_MAGIC;
	} else if (h.version < SHMBUS_CTL_VERSION_MIN ||
		   h.version > SHMBUS_CTL_VERSION) {
		rc = deny(-EPROTONOSUPPORT, "protocol version %u: this "
			    "daemon speaks %u to %u", h.version,
			    SHMBUS_CTL_VERSION_MIN, SHMBUS_CTL_VERSION);
		bad = BAD_VERSION;
	} else if (h.len != (size_t)n - sizeof(h) || h.status || h.reserved ||
		   h.type & SHMBUS_CTL_REPLY) {
		rc = -EBADMSG;
		bad = BAD_HEADER;
	} else if (body_size(h.type, h.version) == UINT32_MAX) {
		rc = deny(-EOPNOTSUPP, "unknown request type %u", h.type);
		bad = BAD_TYPE;
	} else if (h.len != body_size(h.type, h.version)) {
		rc = deny(-EBADMSG, "a body of %u bytes: request type %u "
			  "takes %u in version %u", h.len, h.type,
			  body_size(h.type, h.version), h.version);
		bad = BAD_BODY;
	} else {
		rc = dispatch(cl, &h, buf + sizeof(h));
		sbd_admission_spoke(cl);
	}
	if (bad != BAD_KINDS) {
		malformed[bad]++;
		sbd_log_limited(&rl_malformed[bad], SBD_WARN, malformed[bad],
			    "alike", "pid %d (uid %u): %s (%zd bytes): "
			    "answered %s", (int)cl->pid, (unsigned)cl->uid,
			    malformed_why[bad], n, strerror(-rc));
	}
	if (rc == REPLIED || rc == DROP)
		return rc == REPLIED;
	/* A client that does not read its replies is dropped.  A version 2
	 * refusal says why, when there is more to say than the errno. */
	if (rc < 0 && reason[0] && reply_version(&h) >= 2) {
		for (char *p = reason; *p; p++)	/* a path from the config */
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
		return replied(cl, reply(cl, &h, rc, reason,
					 (uint32_t)strlen(reason) + 1,
					 NULL)) == REPLIED;
	}
	return replied(cl, reply(cl, &h, rc, NULL, 0, NULL)) == REPLIED;
}
