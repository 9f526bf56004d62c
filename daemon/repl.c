/* SPDX-License-Identifier: MIT */
/*
 * repl.c - the replication agent: one host of an HA pair ships its
 * replicated channels to the other (docs/replication.md).
 *
 * Threads, per replicated channel:
 *   primary   an agent (finds committed records, ships them, judges
 *             whether the standby is in sync, raises the watermark, moves
 *             its cursor) and, while a standby is linked, a reader of the
 *             standby's acknowledgements
 *   standby   a linker (connects to the primary, checks and applies
 *             frames, acknowledges)
 * and one listener for the pair, which proves the peer's key in a
 * short-lived thread per connection and hands a checked link to the
 * channel's agent.  Role changes (promote, demote, switchover) are
 * serialised by role_mu; they stop one set of threads and start the
 * other.
 *
 * Each thread works on the agent's own mapping of its channel (opened
 * at start from the shm dir), so that a registry entry's lifetime does
 * not bound it.  Shared fields between the threads of a channel are
 * read and written with __atomic builtins.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

#define FRAME_MIN	(256u << 10)	/* a frame's body, at most */
#define PING_MS		100		/* an idle primary's heartbeat */
#define HANDSHAKE_MS	2000
#define HANDSHAKES_MAX	8		/* handshakes at once */
#define CONNECT_MS	1000
#define SPIN_NS		INT64_C(30000)	/* see set_spin() */

struct rchan {
	char name[SHMBUS_CTL_NAME];
	uint64_t id;			/* sbd_name_hash(name) */
	shmbus_channel *ch;		/* the agent's own mapping */
	uint32_t level;			/* SHMBUS_ACK_* */
	bool strict;
	uint64_t cap;
	uint32_t max_msg, flags;
	uint32_t frame_max;		/* bytes a frame ships, at most */
	uint32_t buf_len;		/* rc->buf: frame_max, or one record */
	uint64_t max_lag;
	pthread_mutex_t mu;		/* pending, plink, slink */
	bool stop;			/* atomic: the threads end */

	/* Primary. */
	pthread_t agent;
	bool agent_on;
	shmbus_sub *cursor;		/* holds producers for the standby */
	uint64_t cursor_pos;
	struct sbd_link *pending;	/* handed over by a handshake */
	uint64_t pending_start;
	struct sbd_link *plink;		/* the agent's link (mu to read it
					 * from another thread) */
	pthread_t reader;
	bool reader_on;
	bool link_dead;			/* atomic: the reader lost it */
	uint64_t sent;			/* atomic: shipped up to here */
	uint64_t sent_hi;		/* atomic: being shipped up to here */
	bool linked;			/* atomic: plink is set */
	uint64_t known;			/* committed up to here (agent) */
	uint64_t received, applied;	/* atomic: the standby's acks */
	int64_t progress_ns;		/* atomic: last ack that moved */
	bool in_sync;			/* agent */
	int64_t last_send_ns;		/* agent */

	/* Standby. */
	pthread_t linker;
	bool linker_on;
	bool unapplied;			/* atomic: a frame acknowledged as
					 * received was not applied */
	uint64_t acked;			/* linker: the last position it
					 * acknowledged */
	uint64_t ack_every;		/* at least one acknowledgement per
					 * this many bytes applied */
	struct sbd_link *slink;
	shmbus_pub *writer;
	uint8_t *buf;
};

static struct {
	bool on;
	int role;			/* atomic: enum sbd_role */
	uint64_t epoch;			/* atomic: this host's newest */
	const struct sbd_transport *t;
	struct rchan *ch;
	size_t n;
	int lfd;
	pthread_t listener;
	bool listener_on;
	bool stopping;			/* atomic */
	unsigned handshakes;		/* atomic */
	pthread_mutex_t role_mu;
	int hist_fd;
	struct sbd_ratelimit rl_refused, rl_link;
	unsigned long refused, link_errors;
} R = { .lfd = -1, .hist_fd = -1, .role_mu = PTHREAD_MUTEX_INITIALIZER };

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

/* A warning about links or refusals, at most one a second of each kind
 * (their limiters are shared by the agent's threads). */
#define LIMITED(rl, count, what, ...)                                      \
	do {                                                               \
		pthread_mutex_lock(&log_mu);                               \
		sbd_log_limited(rl, SBD_WARN, ++(count), what, __VA_ARGS__); \
		pthread_mutex_unlock(&log_mu);                             \
	} while (0)

static int64_t now_ns(void)
{
	return sb_now_ns();
}

static bool stopped(const struct rchan *rc)
{
	return LOAD(&rc->stop) || LOAD(&R.stopping);
}

/* Sleeps ms, or less once the channel's threads are told to stop. */
static void nap(const struct rchan *rc, int ms)
{
	for (int i = 0; i < ms && !stopped(rc); i += 10)
		usleep(10000);
}

static const char *role_name(int role)
{
	return role == SBD_ROLE_PRIMARY ? "primary" : "standby";
}

/* ------------------------------------------------------ epoch history */

/*
 * state_dir/epochs: one line per (epoch, channel) start, "EPOCH CHANNEL
 * POSITION", appended and fdatasync'd before the first record of the
 * epoch is written in that channel.  A last line cut short by a crash is
 * cut off at start; any other damage stops the daemon.
 */
struct hist_ent {
	uint64_t epoch, pos;
	uint64_t chan;
};

static struct hist_ent *hist;
static size_t nhist;
/* The history is appended to by linkers (a new epoch seen) and role
 * changes, and read by handshakes. */
static pthread_mutex_t hist_mu = PTHREAD_MUTEX_INITIALIZER;

static int hist_add_mem(uint64_t epoch, uint64_t chan, uint64_t pos)
{
	struct hist_ent *g = realloc(hist, (nhist + 1) * sizeof(*hist));

	if (!g)
		return -ENOMEM;
	hist = g;
	hist[nhist++] = (struct hist_ent){ epoch, pos, chan };
	return 0;
}

static int mkdirs(const char *path)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = 0;
			if (mkdir(p, 0700) && errno != EEXIST)
				return -errno;
			*s = '/';
		}
	if (mkdir(p, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

static int hist_load(const char *dir, char *why, size_t wn)
{
	char path[PATH_MAX + 16], *text, *line, *save;
	struct stat st;
	off_t good = 0;
	ssize_t r;
	int fd, lineno = 0;

	if (mkdirs(dir)) {
		snprintf(why, wn, "state_dir %s: %s", dir, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/epochs", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_APPEND, 0600);
	if (fd < 0 || fstat(fd, &st)) {
		snprintf(why, wn, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	text = calloc(1, (size_t)st.st_size + 1);
	if (!text) {
		close(fd);
		return -1;
	}
	r = pread(fd, text, (size_t)st.st_size, 0);
	if (r != st.st_size) {
		snprintf(why, wn, "%s: short read", path);
		free(text);
		close(fd);
		return -1;
	}
	for (line = text; *line; line = save) {
		char name[SHMBUS_CTL_NAME], *nl = strchr(line, '\n');
		unsigned long long e, p;
		int used = 0;

		lineno++;
		if (!nl) {
			sbd_log(SBD_WARN, 0, "%s: line %d cut short by a crash "
				"(%zu bytes); cut off", path, lineno,
				strlen(line));
			break;
		}
		*nl = 0;
		save = nl + 1;
		if (sscanf(line, "%llu %200s %llu%n", &e, name, &p, &used) != 3 ||
		    line[used] || !sb_name_ok(name, 200) || p % 8 ||
		    (nhist && e < hist[nhist - 1].epoch)) {
			snprintf(why, wn, "%s:%d: not 'EPOCH CHANNEL POSITION' "
				 "in order: the history is damaged; move it "
				 "aside only if this host's rings are to be "
				 "rebuilt from the peer", path, lineno);
			free(text);
			close(fd);
			return -1;
		}
		if (hist_add_mem(e, sbd_name_hash(name), p)) {
			free(text);
			close(fd);
			return -1;
		}
		good = save - text;
	}
	free(text);
	if (good != st.st_size && (ftruncate(fd, good) || fdatasync(fd))) {
		snprintf(why, wn, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	R.hist_fd = fd;
	for (size_t i = 0; i < nhist; i++)
		if (hist[i].epoch > R.epoch)
			R.epoch = hist[i].epoch;
	return 0;
}

/* Appends (epoch, channel, pos); sync: fdatasync now. */
static int hist_append(uint64_t epoch, const struct rchan *rc, uint64_t pos,
		       bool sync)
{
	char line[SHMBUS_CTL_NAME + 64];
	int n = snprintf(line, sizeof(line), "%" PRIu64 " %s %" PRIu64 "\n",
			 epoch, rc->name, pos);

	int rc2;

	pthread_mutex_lock(&hist_mu);
	if (write(R.hist_fd, line, (size_t)n) != n ||
	    (sync && fdatasync(R.hist_fd))) {
		pthread_mutex_unlock(&hist_mu);
		sbd_log(SBD_ERR, errno, "epoch history: cannot append epoch "
			"%" PRIu64 " of %s", epoch, rc->name);
		return -EIO;
	}
	rc2 = hist_add_mem(epoch, rc->id, pos);
	pthread_mutex_unlock(&hist_mu);
	return rc2;
}

/* Whether the channel has an entry for epoch e. */
static bool hist_has(uint64_t e, uint64_t chan)
{
	bool found = false;

	pthread_mutex_lock(&hist_mu);
	for (size_t i = 0; i < nhist && !found; i++)
		found = hist[i].epoch == e && hist[i].chan == chan;
	pthread_mutex_unlock(&hist_mu);
	return found;
}

/* The start of the first epoch after e in the channel, or UINT64_MAX. */
static uint64_t hist_next_start(uint64_t e, uint64_t chan)
{
	uint64_t pos = UINT64_MAX;

	pthread_mutex_lock(&hist_mu);
	for (size_t i = 0; i < nhist && pos == UINT64_MAX; i++)
		if (hist[i].epoch > e && hist[i].chan == chan)
			pos = hist[i].pos;
	pthread_mutex_unlock(&hist_mu);
	return pos;
}

/* --------------------------------------------------------------- frames */

static int send_frame(struct sbd_link *l, uint16_t type, uint64_t chan,
		      uint64_t pos, const struct iovec *body, int n,
		      int timeout_ms)
{
	struct rw_hdr h;

	rw_seal(&h, type, LOAD(&R.epoch), chan, pos, body, n);
	return R.t->send(l, &h, body, n, timeout_ms);
}

static int send_ack(struct rchan *rc, struct sbd_link *l, uint64_t received,
		    uint64_t applied)
{
	struct rw_ack a = { received, applied };
	struct iovec iov = { &a, sizeof(a) };

	return send_frame(l, RW_ACK, rc->id, 0, &iov, 1, 2000);
}

static unsigned sync_ms(void)
{
	return sbd.conf.repl.sync_timeout_ms;
}

/* ----------------------------------------------------------- the primary */

/* The standby's acknowledgements on the agent's current link. */
static bool sync_waiting(void *arg)
{
	return sb_repl_sync_waiting(((struct rchan *)arg)->ch);
}

static void *reader_main(void *arg)
{
	struct rchan *rc = arg;
	struct sbd_link *l = rc->plink;
	char why[512];

	/* While a sync waiter waits, its acknowledgement is looked for
	 * without sleeping (a wake-up less in its round trip). */
	R.t->set_spin(l, SPIN_NS, sync_waiting, rc);

	for (;;) {
		struct rw_ack a;
		struct rw_hdr h;
		uint64_t prev;
		int rc2 = rw_recv_frame(R.t, l, &h, &a, sizeof(a),
					(int)sync_ms() + PING_MS, why,
					sizeof(why));

		if (rc2 == 0 && (h.type != RW_ACK || h.len != sizeof(a) ||
				 h.chan != rc->id)) {
			snprintf(why, sizeof(why), "frame type %u on an "
				 "acknowledgement link", h.type);
			rc2 = -EBADMSG;
		}
		if (rc2 == 0 && h.epoch != LOAD(&R.epoch)) {
			/* Only acknowledgements of the current epoch
			 * count; a live link never carries another. */
			snprintf(why, sizeof(why), "an acknowledgement of "
				 "epoch %" PRIu64 " (ours is %" PRIu64 ")",
				 h.epoch, LOAD(&R.epoch));
			rc2 = -EBADMSG;
		}
		prev = LOAD(&rc->received);
		if (rc2 == 0 && (a.applied > a.received || a.received < prev ||
				 a.received > LOAD(&rc->sent_hi))) {
			snprintf(why, sizeof(why), "acknowledgement of %" PRIu64
				 "/%" PRIu64 " outside what was sent (%" PRIu64
				 ")", a.received, a.applied, LOAD(&rc->sent_hi));
			rc2 = -EBADMSG;
		}
		if (rc2) {
			if (!stopped(rc))
				LIMITED(&R.rl_link, R.link_errors, "link errors",
						"%s: link to %s lost: %s",
						rc->name, R.t->peer(l), why);
			if (rc2 == -EBADMSG)
				sb_repl_count(rc->ch, SB_REPL_BAD, 1);
			STORE(&rc->link_dead, true);
			sb_repl_kick(rc->ch);
			return NULL;
		}
		if (a.received != prev || a.applied != LOAD(&rc->applied))
			STORE(&rc->progress_ns, now_ns());
		/* The header's positions first: the agent raises the
		 * watermark from rc->applied, and shmbus_pub_sync() must find
		 * them at least as far as the watermark. */
		sb_repl_acked(rc->ch, a.received, a.applied,
			      a.applied >= LOAD(&rc->sent));
		STORE(&rc->applied, a.applied);
		STORE(&rc->received, a.received);
		if (rc->level == SHMBUS_ACK_APPLIED)
			sb_repl_watermark(rc->ch, a.applied);
		else if (rc->level == SHMBUS_ACK_RECEIVED)
			sb_repl_watermark(rc->ch, a.received);
	}
}

static void drop_link(struct rchan *rc, const char *why)
{
	struct sbd_link *l = rc->plink;

	if (!l)
		return;
	if (why)
		LIMITED(&R.rl_link, R.link_errors, "link errors", "%s: link to %s dropped: %s",
				rc->name, R.t->peer(l), why);
	R.t->shutdown(l);
	if (rc->reader_on)
		pthread_join(rc->reader, NULL);
	rc->reader_on = false;
	pthread_mutex_lock(&rc->mu);
	rc->plink = NULL;
	pthread_mutex_unlock(&rc->mu);
	STORE(&rc->linked, false);
	R.t->close(l);
	sb_repl_flags(rc->ch, 0, SHMBUS_REPL_LINK);
}

static void take_pending(struct rchan *rc)
{
	struct sbd_link *l;
	uint64_t start;

	pthread_mutex_lock(&rc->mu);
	l = rc->pending;
	start = rc->pending_start;
	rc->pending = NULL;
	pthread_mutex_unlock(&rc->mu);
	if (!l)
		return;
	drop_link(rc, NULL);
	STORE(&rc->sent, start);
	STORE(&rc->sent_hi, start);
	STORE(&rc->received, start);
	STORE(&rc->applied, start);
	STORE(&rc->link_dead, false);
	STORE(&rc->progress_ns, now_ns());
	sb_repl_acked(rc->ch, start, start, false);
	pthread_mutex_lock(&rc->mu);
	rc->plink = l;
	pthread_mutex_unlock(&rc->mu);
	if (pthread_create(&rc->reader, NULL, reader_main, rc)) {
		drop_link(rc, "no thread for its reader");
		return;
	}
	rc->reader_on = true;
	STORE(&rc->linked, true);
	rc->last_send_ns = now_ns();
	sb_repl_flags(rc->ch, SHMBUS_REPL_LINK, 0);
	sbd_log(SBD_NOTICE, 0, "%s: standby %s linked; shipping from %" PRIu64,
		rc->name, R.t->peer(l), start);
}

/* Ships what is committed past `sent`, in frames.  Returns whether it
 * shipped anything. */
static bool ship(struct rchan *rc)
{
	uint64_t sent = LOAD(&rc->sent);
	bool any = false;

	while (rc->plink && sent < rc->known && !stopped(rc)) {
		uint64_t end;
		struct iovec iov[2];
		bool held;
		int n, err;

		/* What the standby lacks is gone from the ring (overwrite
		 * policy, or producers let go while it was out of sync): it
		 * comes back and goes on past the gap, counted. */
		if (!sb_ring_has_record(rc->ch, sent)) {
			drop_link(rc, "the standby was lapped: the ring no "
				  "longer holds what it lacks");
			return any;
		}
		end = sb_committed_end(rc->ch, sent, rc->frame_max);
		if (end > rc->known)
			end = rc->known;
		if (end == sent)
			break;
		n = sb_ring_span(rc->ch, sent, end, iov);
		if (n < 0) {
			drop_link(rc, "a span outside the ring");
			return any;
		}
		/* Zero copy while our cursor holds producers off these bytes
		 * (block policy, in sync); else the bytes are copied first and
		 * checked whole, so that the CRC is computed over bytes that
		 * were never torn by a lapping producer. */
		held = !(rc->flags & SHMBUS_F_OVERWRITE) &&
		       rc->cursor_pos <= sent;
		if (!held) {
			memcpy(rc->buf, iov[0].iov_base, iov[0].iov_len);
			if (n == 2)
				memcpy(rc->buf + iov[0].iov_len,
				       iov[1].iov_base, iov[1].iov_len);
			if (!sb_ring_holds(rc->ch, sent)) {
				drop_link(rc, "lapped by the producers while "
					  "copying");
				return any;
			}
			iov[0] = (struct iovec){ rc->buf, end - sent };
			n = 1;
		}
		STORE(&rc->sent_hi, end);
		err = send_frame(rc->plink, RW_DATA, rc->id, sent, iov, n,
				 (int)sync_ms());
		if (err) {
			drop_link(rc, strerror(-err));
			return any;
		}
		sent = end;
		STORE(&rc->sent, sent);
		sb_repl_count(rc->ch, SB_REPL_FRAMES, 1);
		rc->last_send_ns = now_ns();
		any = true;
	}
	if (rc->plink && !any &&
	    now_ns() - rc->last_send_ns > PING_MS * INT64_C(1000000)) {
		if (send_frame(rc->plink, RW_PING, rc->id, sent, NULL, 0,
			       (int)sync_ms()))
			drop_link(rc, "heartbeat not sent");
		rc->last_send_ns = now_ns();
	}
	return any;
}

/* In sync or not, the watermark, and the cursor. */
static void judge(struct rchan *rc)
{
	int64_t now = now_ns();
	bool link = rc->plink != NULL;
	uint64_t received = LOAD(&rc->received), applied = LOAD(&rc->applied);
	uint64_t sync_pos = rc->level == SHMBUS_ACK_APPLIED ? applied
							      : received;
	uint64_t level_pos = rc->level == SHMBUS_ACK_LOCAL ? rc->known
							     : sync_pos;
	bool caught = link && sync_pos >= rc->known;
	bool ok, degrade;
	uint64_t cur;

	if (caught)
		STORE(&rc->progress_ns, now);
	/* A link that drops and comes back within sync_timeout_ms (a frame
	 * refused, a reconnection) keeps the standby in sync: only progress
	 * counts, and a lag beyond max_lag. */
	ok = (!rc->max_lag || rc->known - sync_pos <= rc->max_lag) &&
	     now - LOAD(&rc->progress_ns) <= (int64_t)sync_ms() * 1000000;
	if (rc->in_sync && !ok) {
		rc->in_sync = false;
		/* First the flag, then (degrade) the watermark: R14 orders
		 * them for shmbus_pub_sync(). */
		sb_repl_flags(rc->ch, SHMBUS_REPL_OUT_OF_SYNC, 0);
		sb_repl_count(rc->ch, SB_REPL_OUT_OF_SYNC, 1);
		sbd_log(SBD_WARN, 0, "%s: standby out of sync (%s; it has %"
			PRIu64 " of %" PRIu64 "): %s", rc->name,
			!link ? "no link for sync_timeout_ms" :
			rc->max_lag && rc->known - sync_pos > rc->max_lag ?
			"lag over max_lag" : "no progress for sync_timeout_ms",
			sync_pos, rc->known,
			rc->strict ? "sync waiters are held (strict)" :
				     "acknowledging locally (degrade)");
	} else if (!rc->in_sync && caught) {
		rc->in_sync = true;
		sb_repl_flags(rc->ch, 0, SHMBUS_REPL_OUT_OF_SYNC);
		sbd_log(SBD_NOTICE, 0, "%s: standby in sync at %" PRIu64,
			rc->name, rc->known);
	}
	degrade = !rc->in_sync && !rc->strict;
	if (rc->level == SHMBUS_ACK_LOCAL || degrade)
		sb_repl_watermark(rc->ch, rc->known);
	else
		sb_repl_watermark(rc->ch, level_pos);
	if (caught)
		sb_repl_caught_up(rc->ch);
	/* The cursor: while the standby is in sync, what it has not
	 * received stays in the ring (producers wait for it as for a slow
	 * subscriber); out of sync, it follows what is committed and holds
	 * nobody, unless the channel is strict, whose producers wait for the
	 * standby (and a sync waiter never sees a gap).  It never moves
	 * back. */
	cur = rc->in_sync || rc->strict ? received : rc->known;
	if (cur > rc->cursor_pos && cur <= rc->known) {
		rc->cursor_pos = cur;
		sb_sub_seek(rc->cursor, cur);
	}
}

static void *agent_main(void *arg)
{
	struct rchan *rc = arg;
	uint32_t kick = 0;
	int64_t nap = (int64_t)sbd.conf.repl.nap_us * 1000;

	while (!stopped(rc)) {
		uint64_t head, oldest;
		bool busy;

		take_pending(rc);
		if (rc->plink && LOAD(&rc->link_dead))
			drop_link(rc, NULL);
		head = sb_ring_head(rc->ch);
		if (head - rc->known > rc->cap) {
			/* Lapped (overwrite policy): the standby too, if it
			 * was behind the oldest record. */
			oldest = sb_ring_oldest(rc->ch);
			rc->known = oldest;
			if (rc->plink && LOAD(&rc->sent) < oldest)
				drop_link(rc, "the standby was lapped");
		}
		rc->known = sb_committed_end(rc->ch, rc->known, UINT64_MAX);
		busy = ship(rc);
		judge(rc);
		if (busy)
			continue;
		/* While a sync waiter waits, yield rather than sleep: its
		 * acknowledgement may bring it back with the next record at
		 * once.  (Staying awake longer, 200 us after the last waiter,
		 * made the synchronous round trip 3x slower on two CPUs.) */
		if (sb_repl_sync_waiting(rc->ch))
			sched_yield();
		else
			kick = sb_repl_agent_wait(rc->ch, kick, nap);
	}
	drop_link(rc, NULL);
	return NULL;
}

static int agent_start(struct rchan *rc)
{
	struct shmbus_sub_attr a;
	uint64_t oldest = sb_ring_oldest(rc->ch);

	shmbus_sub_attr_init(&a);
	a.start = SHMBUS_START_OLDEST;
	rc->cursor = shmbus_sub_open(rc->ch, &a);
	if (!rc->cursor)
		return -errno;
	rc->known = sb_committed_end(rc->ch, oldest, UINT64_MAX);
	rc->cursor_pos = oldest;
	sb_sub_seek(rc->cursor, oldest);
	rc->in_sync = false;
	STORE(&rc->sent, rc->known);
	STORE(&rc->sent_hi, rc->known);
	STORE(&rc->received, 0);
	STORE(&rc->applied, 0);
	STORE(&rc->progress_ns, now_ns());
	STORE(&rc->stop, false);
	sb_repl_flags(rc->ch, SHMBUS_REPL_OUT_OF_SYNC,
		      SHMBUS_REPL_STANDBY | SHMBUS_REPL_LINK);
	if (pthread_create(&rc->agent, NULL, agent_main, rc)) {
		shmbus_sub_close(rc->cursor);
		rc->cursor = NULL;
		return -EAGAIN;
	}
	rc->agent_on = true;
	return 0;
}

static void agent_stop(struct rchan *rc)
{
	if (!rc->agent_on)
		return;
	STORE(&rc->stop, true);
	sb_repl_kick(rc->ch);
	pthread_mutex_lock(&rc->mu);
	if (rc->plink)
		R.t->shutdown(rc->plink);
	pthread_mutex_unlock(&rc->mu);
	pthread_join(rc->agent, NULL);
	rc->agent_on = false;
	pthread_mutex_lock(&rc->mu);
	if (rc->pending) {
		R.t->close(rc->pending);
		rc->pending = NULL;
	}
	pthread_mutex_unlock(&rc->mu);
	shmbus_sub_close(rc->cursor);
	rc->cursor = NULL;
}

/* ----------------------------------------------------------- the standby */

static bool geometry_refused(const struct rchan *rc, const struct rw_hello *h,
			     char *why, size_t n)
{
	if (h->layout_version != SHMBUS_LAYOUT_VERSION)
		snprintf(why, n, "layout version %u, this host has %u",
			 h->layout_version, SHMBUS_LAYOUT_VERSION);
	else if (h->capacity != rc->cap)
		snprintf(why, n, "channel %.200s: capacity %" PRIu64 ", this host "
			 "has %" PRIu64, rc->name, h->capacity, rc->cap);
	else if (h->max_msg != rc->max_msg)
		snprintf(why, n, "channel %.200s: max_msg %u, this host has %u",
			 rc->name, h->max_msg, rc->max_msg);
	else if (h->flags != rc->flags)
		snprintf(why, n, "channel %.200s: policy or producers differ "
			 "(flags %u, this host has %u)", rc->name, h->flags,
			 rc->flags);
	else
		return false;
	return true;
}

/* One frame from the primary, checked and applied; 0, or -errno with
 * why (the link is then dropped). */
static int apply_frame(struct rchan *rc, struct sbd_link *l,
		       const struct rw_hdr *h, uint64_t *end, char *why,
		       size_t wn)
{
	uint64_t e = LOAD(&R.epoch);
	struct sb_frame f;
	int64_t stop_at = 0;
	bool told = false;
	int rc2;

	if (h->chan != rc->id) {
		snprintf(why, wn, "a frame for another channel");
		return -EBADMSG;
	}
	if (h->epoch < e) {
		snprintf(why, wn, "a frame of epoch %" PRIu64 ", older than "
			 "ours (%" PRIu64 ")", h->epoch, e);
		return -EBADMSG;
	}
	if (h->type == RW_PING)
		return send_ack(rc, l, *end, *end);
	if (h->type != RW_DATA) {
		snprintf(why, wn, "frame type %u in the stream", h->type);
		return -EBADMSG;
	}
	if (h->pos != *end) {
		snprintf(why, wn, "records at %" PRIu64 ", not continuous with "
			 "ours (%" PRIu64 ")", h->pos, *end);
		return -EBADMSG;
	}
	rc2 = sb_apply_check(rc->ch, h->pos, rc->buf, h->len, &f, why, wn);
	if (rc2)
		return rc2;
	if (h->epoch > e || !hist_has(h->epoch, rc->id)) {
		/* A new epoch: on disk before its first record. */
		if (hist_append(h->epoch, rc, h->pos, true))
			return -EIO;
		if (h->epoch > e)
			STORE(&R.epoch, h->epoch);
		sb_repl_epoch(rc->ch, h->epoch);
		sbd_log(SBD_NOTICE, 0, "%s: epoch %" PRIu64 " from %" PRIu64,
			rc->name, h->epoch, h->pos);
	}
	while ((rc2 = sb_apply(rc->writer, h->pos, rc->buf, h->len, &f)) ==
	       -ETIMEDOUT) {
		/* Our own subscribers hold the ring: say we have the bytes,
		 * and wait.  Once said, the frame is applied before this
		 * host can be promoted (become_primary() waits for it), or
		 * the promotion is refused. */
		if (!told && send_ack(rc, l, h->pos + h->len, *end))
			return -EIO;
		told = true;
		if (LOAD(&R.stopping))
			return -ECANCELED;
		if (stopped(rc) && !stop_at)
			stop_at = now_ns();
		if (stop_at && now_ns() - stop_at >
		    (int64_t)sbd.conf.repl.handover_ms * 1000000) {
			STORE(&rc->unapplied, true);
			sbd_log(SBD_ERR, 0, "%s: records %" PRIu64 "..%" PRIu64
				" were acknowledged as received and cannot be "
				"applied: the standby's own subscribers hold "
				"the ring", rc->name, h->pos, h->pos + h->len);
			return -ECANCELED;
		}
	}
	if (rc2) {
		snprintf(why, wn, "apply: %s", strerror(-rc2));
		return rc2;
	}
	*end = h->pos + h->len;
	sb_repl_acked(rc->ch, *end, *end, true);
	sb_repl_watermark(rc->ch, *end);
	/* While more frames wait in the socket (a backlog), one
	 * acknowledgement for several: each one wakes the primary's reader.
	 * An idle link, and a sync waiter's frame, are acknowledged at once;
	 * and a backlog at least every ack_every bytes, so that the
	 * primary's cursor never waits long for it. */
	if (*end - rc->acked < rc->ack_every && R.t->pending(l))
		return 0;
	rc->acked = *end;
	return send_ack(rc, l, *end, *end);
}

static void linker_session(struct rchan *rc, struct sbd_link *l)
{
	struct rw_hello hello = { 0 };
	struct iovec iov = { &hello, sizeof(hello) };
	struct rw_hdr h;
	uint32_t restart = 0;
	uint64_t end;
	char why[512];
	int rc2;

	if ((rc2 = rw_auth_client(R.t, l, sbd.conf.bus, HANDSHAKE_MS, why,
				  sizeof(why)))) {
		LIMITED(&R.rl_link, R.link_errors, "link errors", "%s: primary %s: %s", rc->name,
				R.t->peer(l), why);
		return;
	}
	end = sb_ring_head(rc->ch);
	snprintf(hello.bus, sizeof(hello.bus), "%s", sbd.conf.bus);
	snprintf(hello.channel, sizeof(hello.channel), "%s", rc->name);
	hello.layout_version = SHMBUS_LAYOUT_VERSION;
	hello.flags = rc->flags;
	hello.capacity = rc->cap;
	hello.max_msg = rc->max_msg;
	hello.purpose = RW_FOR_LINK;
	hello.epoch = LOAD(&R.epoch);
	hello.end = end;
	if (send_frame(l, RW_HELLO, rc->id, end, &iov, 1, HANDSHAKE_MS))
		return;
	rc2 = rw_recv_frame(R.t, l, &h, rc->buf, sizeof(restart), HANDSHAKE_MS,
			    why, sizeof(why));
	if (rc2 == 0 && (h.type != RW_ACCEPT || h.len != sizeof(restart))) {
		snprintf(why, sizeof(why), "frame type %u instead of an "
			 "acceptance", h.type);
		rc2 = -EBADMSG;
	}
	if (rc2) {
		LIMITED(&R.rl_link, R.link_errors, "link errors", "%s: primary %s: %s", rc->name,
				R.t->peer(l), why);
		return;
	}
	memcpy(&restart, rc->buf, sizeof(restart));
	if (h.epoch < LOAD(&R.epoch)) {
		sbd_log(SBD_ERR, 0, "%s: primary %s has epoch %" PRIu64
			", older than ours (%" PRIu64 "): refused", rc->name,
			R.t->peer(l), h.epoch, LOAD(&R.epoch));
		return;
	}
	if (!hist_has(h.epoch, rc->id)) {
		/* The primary's epoch, on disk before its first record
		 * here; our acknowledgements carry it from now on. */
		if (hist_append(h.epoch, rc, h.pos, true))
			return;
		if (h.epoch > LOAD(&R.epoch))
			STORE(&R.epoch, h.epoch);
		sb_repl_epoch(rc->ch, h.epoch);
	}
	if (h.pos != end) {
		if (!restart || h.pos < end) {
			sbd_log(SBD_ERR, 0, "%s: primary would ship from %"
				PRIu64 ", we end at %" PRIu64, rc->name, h.pos,
				end);
			return;
		}
		while ((rc2 = sb_apply_restart(rc->writer, h.pos)) ==
		       -ETIMEDOUT && !stopped(rc))
			;
		if (rc2) {
			sbd_log(SBD_ERR, 0, "%s: cannot go on from %" PRIu64
				": %s", rc->name, h.pos, strerror(-rc2));
			return;
		}
		sb_repl_count(rc->ch, SB_REPL_GAPS, 1);
		sb_repl_count(rc->ch, SB_REPL_GAP_BYTES, h.pos - end);
		sbd_log(SBD_WARN, 0, "%s: gap: the primary no longer holds %"
			PRIu64 "..%" PRIu64 " (%" PRIu64 " bytes); going on "
			"from %" PRIu64, rc->name, end, h.pos, h.pos - end,
			h.pos);
		end = h.pos;
		sb_repl_acked(rc->ch, end, end, false);
		sb_repl_watermark(rc->ch, end);
	}
	rc->acked = end;
	/* The next frame is looked for a little without sleeping: a
	 * synchronous producer's comes a round trip after our ack. */
	R.t->set_spin(l, SPIN_NS, NULL, NULL);
	sb_repl_flags(rc->ch, SHMBUS_REPL_LINK, 0);
	sbd_log(SBD_NOTICE, 0, "%s: linked to primary %s at %" PRIu64
		" (epoch %" PRIu64 ")", rc->name, R.t->peer(l), end, h.epoch);
	for (;;) {
		rc2 = rw_recv_frame(R.t, l, &h, rc->buf, rc->buf_len,
				    (int)sync_ms() + PING_MS, why, sizeof(why));
		if (rc2 == 0)
			rc2 = apply_frame(rc, l, &h, &end, why, sizeof(why));
		if (rc2) {
			if (rc2 == -EBADMSG) {
				sb_repl_count(rc->ch, SB_REPL_BAD, 1);
				sbd_log(SBD_ERR, 0, "%s: frame from %s refused: "
					"%s; reconnecting from %" PRIu64,
					rc->name, R.t->peer(l), why, end);
			} else if (!stopped(rc)) {
				LIMITED(&R.rl_link, R.link_errors, "link errors",
						"%s: link to %s lost: %s",
						rc->name, R.t->peer(l), why);
			}
			break;
		}
	}
	sb_repl_flags(rc->ch, 0, SHMBUS_REPL_LINK);
}

static void *linker_main(void *arg)
{
	struct rchan *rc = arg;
	int backoff = 50;

	while (!stopped(rc)) {
		struct sbd_link *l;
		int err = R.t->connect(sbd.conf.repl.peer, CONNECT_MS, &l);

		if (err) {
			LIMITED(&R.rl_link, R.link_errors, "link errors", "%s: cannot reach the "
					"primary at %s: %s", rc->name,
					sbd.conf.repl.peer, strerror(-err));
			nap(rc, backoff);
			backoff = backoff < 1000 ? backoff * 2 : 1000;
			continue;
		}
		backoff = 50;
		pthread_mutex_lock(&rc->mu);
		rc->slink = l;
		pthread_mutex_unlock(&rc->mu);
		if (!stopped(rc))
			linker_session(rc, l);
		pthread_mutex_lock(&rc->mu);
		rc->slink = NULL;
		pthread_mutex_unlock(&rc->mu);
		R.t->close(l);
		nap(rc, 50);
	}
	return NULL;
}

static int linker_start(struct rchan *rc)
{
	uint64_t end = sb_apply_recover(rc->ch);

	if (end == UINT64_MAX) {
		sbd_log(SBD_ERR, 0, "%s: head is corrupt; not replicating it",
			rc->name);
		return -EBADMSG;
	}
	/* The watermark stays where the peer earned it: records this host
	 * wrote as a primary and the peer never acknowledged (a forced
	 * demotion) must not count as acknowledged here. */
	sb_repl_acked(rc->ch, end, end, true);
	sb_repl_flags(rc->ch, SHMBUS_REPL_STANDBY,
		      SHMBUS_REPL_LINK | SHMBUS_REPL_OUT_OF_SYNC);
	STORE(&rc->stop, false);
	if (pthread_create(&rc->linker, NULL, linker_main, rc))
		return -EAGAIN;
	rc->linker_on = true;
	return 0;
}

static void linker_stop(struct rchan *rc)
{
	if (!rc->linker_on)
		return;
	STORE(&rc->stop, true);
	pthread_mutex_lock(&rc->mu);
	if (rc->slink)
		R.t->shutdown(rc->slink);
	pthread_mutex_unlock(&rc->mu);
	pthread_join(rc->linker, NULL);
	rc->linker_on = false;
}

/* ---------------------------------------------------------- role changes */

static struct rchan *find(uint64_t id)
{
	for (size_t i = 0; i < R.n; i++)
		if (R.ch[i].id == id)
			return &R.ch[i];
	return NULL;
}

/* Standby to primary, at epoch > floor.  role_mu held. */
static int become_primary(uint64_t floor, char *out, size_t n)
{
	uint64_t e = LOAD(&R.epoch);
	int rc2 = 0;

	if (floor > e)
		e = floor;
	e++;
	for (size_t i = 0; i < R.n; i++)
		linker_stop(&R.ch[i]);
	for (size_t i = 0; i < R.n && !rc2; i++)
		if (LOAD(&R.ch[i].unapplied)) {
			snprintf(out, n, "%s: records acknowledged as received "
				 "are not applied (the standby's subscribers "
				 "hold the ring); still standby", R.ch[i].name);
			STORE(&R.ch[i].unapplied, false);
			rc2 = -EBUSY;
		}
	if (rc2) {
		for (size_t i = 0; i < R.n; i++)
			linker_start(&R.ch[i]);
		return rc2;
	}
	for (size_t i = 0; i < R.n && !rc2; i++) {
		struct rchan *rc = &R.ch[i];
		uint64_t end = sb_apply_recover(rc->ch);

		rc2 = hist_append(e, rc, end, i + 1 == R.n);
	}
	if (rc2) {
		snprintf(out, n, "the epoch history could not be written; "
			 "still standby");
		for (size_t i = 0; i < R.n; i++)
			linker_start(&R.ch[i]);
		return rc2;
	}
	STORE(&R.epoch, e);
	STORE(&R.role, SBD_ROLE_PRIMARY);
	for (size_t i = 0; i < R.n; i++) {
		struct rchan *rc = &R.ch[i];

		sb_repl_epoch(rc->ch, e);
		sb_repl_acked(rc->ch, 0, 0, false);
		agent_start(rc);
		sb_fence_set(rc->ch, SHMBUS_FENCE_OPEN);
	}
	sbd_log(SBD_NOTICE, 0, "promoted: primary at epoch %" PRIu64, e);
	snprintf(out, n, "primary at epoch %" PRIu64, e);
	return 0;
}

/* Primary: closes the fence and waits for the last claims; with drain,
 * until the standby applied everything too.  On failure the fence opens
 * again.  role_mu held. */
static int hand_over(bool drain, uint64_t *ends, char *out, size_t n)
{
	int64_t limit = (int64_t)sbd.conf.repl.handover_ms * 1000000;
	int64_t deadline = now_ns() + limit;
	int rc2 = 0;

	for (size_t i = 0; i < R.n && !rc2; i++) {
		rc2 = sb_fence_set(R.ch[i].ch, SHMBUS_FENCE_HANDOVER);
		if (rc2)
			snprintf(out, n, "%s: the kernel refused membarrier(2) "
				 "(%s): a claim in flight could slip past the "
				 "fence, so this host cannot hand over",
				 R.ch[i].name, strerror(-rc2));
	}
	for (size_t i = 0; i < R.n && !rc2; i++) {
		struct rchan *rc = &R.ch[i];

		rc2 = sb_fence_quiesce(rc->ch, sb_ring_oldest(rc->ch), limit,
				       &ends[i]);
		if (rc2)
			snprintf(out, n, "%s: %s", rc->name,
				 rc2 == -ETIMEDOUT ? "a producer keeps a claim "
				 "open" : "the ring is damaged");
	}
	for (size_t i = 0; i < R.n && !rc2 && drain; i++) {
		struct rchan *rc = &R.ch[i];

		while (LOAD(&rc->applied) < ends[i] || !LOAD(&rc->linked)) {
			if (now_ns() > deadline) {
				snprintf(out, n, "%s: the standby has applied "
					 "%" PRIu64 " of %" PRIu64 " in %u ms",
					 rc->name, LOAD(&rc->applied), ends[i],
					 sbd.conf.repl.handover_ms);
				rc2 = -ETIMEDOUT;
				break;
			}
			sb_repl_kick(rc->ch);
			usleep(200);
		}
	}
	if (rc2)
		for (size_t i = 0; i < R.n; i++)
			sb_fence_set(R.ch[i].ch, SHMBUS_FENCE_OPEN);
	return rc2;
}

/* Primary to standby, once hand_over() succeeded.  role_mu held. */
static void become_standby(void)
{
	for (size_t i = 0; i < R.n; i++) {
		agent_stop(&R.ch[i]);
		sb_fence_set(R.ch[i].ch, SHMBUS_FENCE_STANDBY);
	}
	STORE(&R.role, SBD_ROLE_STANDBY);
	for (size_t i = 0; i < R.n; i++)
		linker_start(&R.ch[i]);
	sbd_log(SBD_NOTICE, 0, "demoted: standby at epoch %" PRIu64,
		LOAD(&R.epoch));
}

/* Asks the peer to promote itself, after our hand-over. */
static int ask_promote(const uint64_t *ends, uint64_t *epoch, char *out,
		       size_t n)
{
	struct rw_hello hello = { 0 };
	struct rw_promote pr = { 0 };
	struct iovec iov = { &hello, sizeof(hello) };
	struct sbd_link *l;
	struct rw_hdr h;
	uint8_t body[RW_REASON];
	char why[512] = "";
	int rc2;

	rc2 = R.t->connect(sbd.conf.repl.peer, CONNECT_MS, &l);
	if (rc2) {
		snprintf(out, n, "peer %s: %s", sbd.conf.repl.peer,
			 strerror(-rc2));
		return rc2;
	}
	rc2 = rw_auth_client(R.t, l, sbd.conf.bus, HANDSHAKE_MS, why,
			     sizeof(why));
	if (!rc2) {
		snprintf(hello.bus, sizeof(hello.bus), "%s", sbd.conf.bus);
		hello.layout_version = SHMBUS_LAYOUT_VERSION;
		hello.purpose = RW_FOR_PROMOTE;
		hello.epoch = LOAD(&R.epoch);
		rc2 = send_frame(l, RW_HELLO, 0, 0, &iov, 1, HANDSHAKE_MS);
	}
	if (!rc2) {
		pr.n = (uint32_t)R.n;
		for (size_t i = 0; i < R.n; i++) {
			pr.e[i].chan = R.ch[i].id;
			pr.e[i].end = ends[i];
		}
		iov = (struct iovec){ &pr, sizeof(pr) };
		rc2 = send_frame(l, RW_PROMOTE, 0, 0, &iov, 1, HANDSHAKE_MS);
		if (rc2)
			snprintf(why, sizeof(why), "%s", strerror(-rc2));
	}
	if (!rc2) {
		/* From here on the peer may have promoted itself: whatever
		 * happens, this host stays a standby. */
		rc2 = rw_recv_frame(R.t, l, &h, body, sizeof(body),
				    (int)sbd.conf.repl.handover_ms, why,
				    sizeof(why));
		if (!rc2 && h.type != RW_PROMOTED)
			rc2 = -EBADMSG;
		if (!rc2)
			*epoch = h.epoch;
		if (rc2)
			rc2 = rc2 == -ECONNREFUSED ? rc2 : -EINPROGRESS;
	}
	if (rc2)
		snprintf(out, n, "peer %s: %.300s", sbd.conf.repl.peer, why);
	R.t->close(l);
	return rc2;
}

/* The standby's side of a switchover (a handshake thread). */
static void serve_promote(struct sbd_link *l, const struct rw_hello *hello)
{
	struct rw_promote pr;
	struct rw_hdr h;
	char why[512], out[256];
	int rc2;

	rc2 = rw_recv_frame(R.t, l, &h, &pr, sizeof(pr), HANDSHAKE_MS, why,
			    sizeof(why));
	if (rc2 || h.type != RW_PROMOTE || h.len != sizeof(pr) ||
	    pr.n != R.n) {
		rw_refuse(R.t, l, "a malformed promote request");
		return;
	}
	pthread_mutex_lock(&R.role_mu);
	if (LOAD(&R.role) != SBD_ROLE_STANDBY) {
		pthread_mutex_unlock(&R.role_mu);
		rw_refuse(R.t, l, "this host is not a standby");
		return;
	}
	for (uint32_t i = 0; i < pr.n; i++) {
		struct rchan *rc = find(pr.e[i].chan);
		uint64_t head = rc ? sb_ring_head(rc->ch) : 0;
		bool twice = false;

		for (uint32_t j = 0; j < i; j++)
			twice |= pr.e[j].chan == pr.e[i].chan;
		if (!rc || twice || head != pr.e[i].end) {
			snprintf(why, sizeof(why), "%.200s: the standby holds %"
				 PRIu64 ", the primary ended at %" PRIu64,
				 rc ? rc->name : "a channel unknown here",
				 head, pr.e[i].end);
			pthread_mutex_unlock(&R.role_mu);
			sbd_log(SBD_WARN, 0, "switchover refused: %s", why);
			rw_refuse(R.t, l, why);
			return;
		}
	}
	rc2 = become_primary(hello->epoch, out, sizeof(out));
	pthread_mutex_unlock(&R.role_mu);
	if (rc2)
		rw_refuse(R.t, l, out);
	else
		send_frame(l, RW_PROMOTED, 0, 0, NULL, 0, HANDSHAKE_MS);
}

/* ------------------------------------------------------------ handshakes */

static void serve_link(struct sbd_link *l, const struct rw_hello *hi)
{
	struct rchan *rc = find(sbd_name_hash(hi->channel));
	uint64_t e = LOAD(&R.epoch), known, oldest, start = hi->end;
	uint32_t restart = 0;
	struct iovec iov = { &restart, sizeof(restart) };
	char why[512];

	why[0] = 0;
	if (LOAD(&R.role) != SBD_ROLE_PRIMARY)
		snprintf(why, sizeof(why), "this host is a standby");
	else if (!rc || strcmp(rc->name, hi->channel))
		snprintf(why, sizeof(why), "channel '%.200s' is not "
			 "replicated here", hi->channel);
	else if (geometry_refused(rc, hi, why, sizeof(why)))
		;
	else if (hi->epoch > e)
		snprintf(why, sizeof(why), "the standby has epoch %" PRIu64
			 ", newer than ours (%" PRIu64 "): this host must not "
			 "be primary", hi->epoch, e);
	else if (hi->end % SHMBUS_REC_ALIGN)
		snprintf(why, sizeof(why), "an unaligned end position");
	if (!why[0]) {
		known = sb_committed_end(rc->ch, sb_ring_oldest(rc->ch),
					 UINT64_MAX);
		if (hi->end > known ||
		    (hi->epoch < e &&
		     hi->end > hist_next_start(hi->epoch, rc->id)))
			snprintf(why, sizeof(why), "%.200s: the standby's records "
				 "(epoch %" PRIu64 ", end %" PRIu64 ") diverge "
				 "from ours (end %" PRIu64 "): its ring must be "
				 "rebuilt", rc->name, hi->epoch, hi->end,
				 known);
	}
	if (why[0]) {
		LIMITED(&R.rl_refused, R.refused, "refusals", "replication: %s refused: %s",
				R.t->peer(l), why);
		rw_refuse(R.t, l, why);
		R.t->close(l);
		return;
	}
	oldest = sb_ring_oldest(rc->ch);
	if (start < oldest && !sb_ring_has_record(rc->ch, start)) {
		restart = 1;
		start = oldest;
		sb_repl_count(rc->ch, SB_REPL_GAPS, 1);
		sb_repl_count(rc->ch, SB_REPL_GAP_BYTES, start - hi->end);
		sb_repl_hole(rc->ch, hi->end, start);
		sbd_log(SBD_WARN, 0, "%s: gap: the standby ends at %" PRIu64
			", the ring holds from %" PRIu64 "; it goes on from "
			"there", rc->name, hi->end, start);
	}
	if (send_frame(l, RW_ACCEPT, rc->id, start, &iov, 1, HANDSHAKE_MS)) {
		R.t->close(l);
		return;
	}
	/* Under role_mu: a role change in progress stops the agent, which
	 * then closes the link we park here. */
	pthread_mutex_lock(&R.role_mu);
	if (LOAD(&R.role) != SBD_ROLE_PRIMARY || !rc->agent_on) {
		pthread_mutex_unlock(&R.role_mu);
		R.t->close(l);
		return;
	}
	pthread_mutex_lock(&rc->mu);
	if (rc->pending)
		R.t->close(rc->pending);
	rc->pending = l;
	rc->pending_start = start;
	pthread_mutex_unlock(&rc->mu);
	pthread_mutex_unlock(&R.role_mu);
	sb_repl_kick(rc->ch);
}

static void *handshake_main(void *arg)
{
	struct sbd_link *l = arg;
	struct rw_hello hi;
	struct rw_hdr h;
	char why[512];
	int rc2;

	rc2 = rw_auth_server(R.t, l, sbd.conf.bus, HANDSHAKE_MS, why,
			     sizeof(why));
	if (!rc2) {
		rc2 = rw_recv_frame(R.t, l, &h, &hi, sizeof(hi), HANDSHAKE_MS,
				    why, sizeof(why));
		if (!rc2 && (h.type != RW_HELLO || h.len != sizeof(hi))) {
			snprintf(why, sizeof(why), "frame type %u instead of "
				 "a hello", h.type);
			rc2 = -EBADMSG;
		}
	}
	if (!rc2) {
		hi.bus[sizeof(hi.bus) - 1] = 0;
		hi.channel[sizeof(hi.channel) - 1] = 0;
		if (strcmp(hi.bus, sbd.conf.bus)) {
			snprintf(why, sizeof(why), "bus '%.63s', this is '%s'",
				 hi.bus, sbd.conf.bus);
			rc2 = -EPERM;
		} else if (hi.purpose != RW_FOR_LINK &&
			   hi.purpose != RW_FOR_PROMOTE) {
			snprintf(why, sizeof(why), "unknown purpose %u",
				 hi.purpose);
			rc2 = -EBADMSG;
		}
	}
	if (rc2) {
		LIMITED(&R.rl_refused, R.refused, "refusals", "replication: %s refused: %s",
				R.t->peer(l), why);
		if (rc2 != -EACCES)
			rw_refuse(R.t, l, why);
		R.t->close(l);
	} else if (hi.purpose == RW_FOR_PROMOTE) {
		serve_promote(l, &hi);
		R.t->close(l);
	} else {
		serve_link(l, &hi);
	}
	/* Release: sbd_repl_stop() frees what we used once it sees the
	 * count drop. */
	__atomic_sub_fetch(&R.handshakes, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *listener_main(void *arg)
{
	(void)arg;
	while (!LOAD(&R.stopping)) {
		struct sbd_link *l;
		pthread_t t;
		pthread_attr_t a;

		if (R.t->accept(R.lfd, &l)) {
			if (LOAD(&R.stopping))
				break;
			usleep(10000);
			continue;
		}
		if (__atomic_add_fetch(&R.handshakes, 1, __ATOMIC_RELAXED) >
		    HANDSHAKES_MAX) {
			__atomic_sub_fetch(&R.handshakes, 1, __ATOMIC_RELAXED);
			LIMITED(&R.rl_refused, R.refused, "refusals", "replication: %s refused: "
					"%u handshakes at once already",
					R.t->peer(l), HANDSHAKES_MAX);
			R.t->close(l);
			continue;
		}
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &a, handshake_main, l)) {
			__atomic_sub_fetch(&R.handshakes, 1, __ATOMIC_RELAXED);
			R.t->close(l);
		}
		pthread_attr_destroy(&a);
	}
	return NULL;
}

/* --------------------------------------------------------------- the API */

/* Channels the config no longer replicates: what replication left in
 * their headers (a closed fence, the flags) is cleared, so that their
 * producers are accepted again. */
static void unreplicate_others(void)
{
	for (size_t i = 0; i < sbd.conf.nchans; i++) {
		const struct sbd_chan_conf *cc = &sbd.conf.chans[i];
		shmbus_channel *ch;
		struct sb_repl_view v;

		if (cc->repl_level >= 0 && sbd.conf.repl.line)
			continue;
		ch = shmbus_channel_open(sbd.conf.shm_dir, cc->name);
		if (!ch)
			continue;
		sb_repl_read(ch, &v);
		if ((v.flags & SHMBUS_REPL_ON) ||
		    v.fence != SHMBUS_FENCE_OPEN) {
			sb_repl_setup(ch, 0, 0, v.epoch);
			sb_fence_set(ch, SHMBUS_FENCE_OPEN);
			sbd_log(SBD_NOTICE, 0, "%s: no longer replicated; "
				"producers are accepted", cc->name);
		}
		shmbus_channel_close(ch);
	}
}

int sbd_repl_start(void)
{
	const struct sbd_repl_conf *c = &sbd.conf.repl;
	char why[PATH_MAX + 256];
	size_t n = 0;

	unreplicate_others();
	if (!c->line)
		return 0;
	if (rw_key_load(c->key_file, why, sizeof(why))) {
		sbd_log(SBD_ERR, 0, "replication: %s", why);
		return -1;
	}
	if (hist_load(c->state_dir, why, sizeof(why))) {
		sbd_log(SBD_ERR, 0, "replication: %s", why);
		return -1;
	}
	R.t = &sbd_tcp;
	for (size_t i = 0; i < sbd.conf.nchans; i++)
		n += sbd.conf.chans[i].repl_level >= 0;
	if (n > RW_PROMOTE_MAX) {
		sbd_log(SBD_ERR, 0, "replication: %zu replicated channels; at "
			"most %u", n, RW_PROMOTE_MAX);
		return -1;
	}
	R.ch = calloc(n ? n : 1, sizeof(*R.ch));
	if (!R.ch)
		return -1;
	for (size_t i = 0; i < sbd.conf.nchans; i++) {
		const struct sbd_chan_conf *cc = &sbd.conf.chans[i];
		struct rchan *rc = &R.ch[R.n];
		struct shmbus_channel_info in;

		if (cc->repl_level < 0)
			continue;
		snprintf(rc->name, sizeof(rc->name), "%s", cc->name);
		rc->id = sbd_name_hash(cc->name);
		rc->ch = shmbus_channel_open(sbd.conf.shm_dir, cc->name);
		if (!rc->ch || shmbus_channel_info(rc->ch, &in)) {
			sbd_log(SBD_ERR, errno, "replication: %s: cannot map "
				"it", cc->name);
			return -1;
		}
		pthread_mutex_init(&rc->mu, NULL);
		rc->level = (uint32_t)cc->repl_level;
		rc->strict = cc->repl_strict;
		rc->cap = in.capacity;
		rc->max_msg = in.max_msg;
		rc->flags = sb_channel_flags(in.policy, in.producers);
		/* Frames of at most 256 KiB and half the ring (a standby
		 * applies a frame as one claim); one record may be longer. */
		rc->frame_max = FRAME_MIN;
		if (rc->frame_max > rc->cap / 2 - 8)
			rc->frame_max = (uint32_t)(rc->cap / 2 - 8);
		rc->buf_len = rc->frame_max;
		if (rc->buf_len < 16 + ((uint64_t)rc->max_msg + 7) / 8 * 8)
			rc->buf_len = 16 + (rc->max_msg + 7u) / 8u * 8u;
		rc->max_lag = c->max_lag;
		rc->ack_every = rc->cap / 4 < (1u << 20) ? rc->cap / 4
							  : (1u << 20);
		rc->buf = malloc(rc->buf_len);
		rc->writer = sb_writer_open(rc->ch, 100000000);
		if (!rc->buf || !rc->writer)
			return -1;
		R.n++;
	}
	STORE(&R.role, c->role);
	if (c->role == SBD_ROLE_PRIMARY) {
		bool was_standby = false;

		for (size_t i = 0; i < R.n; i++)
			was_standby |= sb_fence_get(R.ch[i].ch) ==
				       SHMBUS_FENCE_STANDBY;
		/* A standby's rings made primary by its config: a promotion,
		 * at the next epoch, from the records it applied whole. */
		if (was_standby || R.epoch == 0) {
			R.epoch++;
			for (size_t i = 0; i < R.n; i++) {
				shmbus_channel *ch = R.ch[i].ch;
				/* Only a standby's ring may have an apply
				 * cut short; a primary's may have producers
				 * at work. */
				uint64_t end =
					sb_fence_get(ch) == SHMBUS_FENCE_STANDBY
						? sb_apply_recover(ch)
						: sb_committed_end(ch,
							sb_ring_oldest(ch),
							UINT64_MAX);

				if (end == UINT64_MAX ||
				    hist_append(R.epoch, &R.ch[i], end,
						i + 1 == R.n))
					return -1;
			}
			if (was_standby)
				sbd_log(SBD_NOTICE, 0, "replication: this "
					"host's standby rings become primary "
					"at epoch %" PRIu64, R.epoch);
		}
	}
	for (size_t i = 0; i < R.n; i++) {
		struct rchan *rc = &R.ch[i];
		uint32_t f = SHMBUS_REPL_ON | SHMBUS_REPL_OUT_OF_SYNC |
			     (rc->strict ? SHMBUS_REPL_STRICT : 0);

		if (c->role == SBD_ROLE_STANDBY) {
			/* Before anyone is handed the channel. */
			sb_fence_set(rc->ch, SHMBUS_FENCE_STANDBY);
			f |= SHMBUS_REPL_STANDBY;
		} else if (!hist_has(R.epoch, rc->id) &&
			   hist_append(R.epoch, rc,
				       sb_committed_end(rc->ch,
							sb_ring_oldest(rc->ch),
							UINT64_MAX), true)) {
			return -1;	/* a channel new to the config */
		}
		sb_repl_setup(rc->ch, rc->level, f, R.epoch);
	}
	if (R.t->listen(c->listen, &R.lfd, why, sizeof(why))) {
		sbd_log(SBD_ERR, 0, "replication: %s", why);
		return -1;
	}
	if (pthread_create(&R.listener, NULL, listener_main, NULL))
		return -1;
	R.listener_on = true;
	R.on = true;
	for (size_t i = 0; i < R.n; i++) {
		struct rchan *rc = &R.ch[i];

		if (c->role == SBD_ROLE_STANDBY) {
			linker_start(rc);
		} else {
			agent_start(rc);
			sb_fence_set(rc->ch, SHMBUS_FENCE_OPEN);
		}
	}
	sbd_log(SBD_NOTICE, 0, "replication: %s at epoch %" PRIu64 ", %zu "
		"channel%s, listening on %s, peer %s", role_name(c->role),
		LOAD(&R.epoch), R.n, R.n == 1 ? "" : "s", c->listen, c->peer);
	return 0;
}

void sbd_repl_stop(void)
{
	if (!R.on)
		return;
	STORE(&R.stopping, true);
	pthread_mutex_lock(&R.role_mu);
	for (size_t i = 0; i < R.n; i++) {
		agent_stop(&R.ch[i]);
		linker_stop(&R.ch[i]);
	}
	pthread_mutex_unlock(&R.role_mu);
	shutdown(R.lfd, SHUT_RDWR);
	if (R.listener_on)
		pthread_join(R.listener, NULL);
	close(R.lfd);
	/* Handshake threads end within their time limits (two seconds a
	 * frame).  One still running keeps what it uses: nothing is freed
	 * then, the process is about to exit anyway. */
	for (int i = 0; i < 1000 && LOAD(&R.handshakes); i++)
		usleep(10000);
	if (LOAD(&R.handshakes)) {
		sbd_log(SBD_WARN, 0, "replication: %u handshakes still running "
			"at exit", LOAD(&R.handshakes));
		return;
	}
	for (size_t i = 0; i < R.n; i++) {
		sb_writer_close(R.ch[i].writer);
		free(R.ch[i].buf);
		shmbus_channel_close(R.ch[i].ch);
	}
	free(R.ch);
	free(hist);
	if (R.hist_fd >= 0)
		close(R.hist_fd);
	R.on = false;
}

bool sbd_repl_is(const char *name)
{
	return R.on && find(sbd_name_hash(name)) != NULL;
}

int sbd_repl_command(uint32_t op, uint32_t flags, struct shmbus_ctl_repl_reply *r)
{
	uint64_t ends[RW_PROMOTE_MAX], epoch = 0;
	int64_t t0 = now_ns();
	int rc2 = 0;

	r->text[0] = 0;
	if (!R.on) {
		snprintf(r->text, sizeof(r->text), "replication is not "
			 "configured ([replication] in the config)");
		return -ENOTSUP;
	}
	pthread_mutex_lock(&R.role_mu);
	switch (op) {
	case SHMBUS_REPL_OP_STATUS: {
		size_t o = (size_t)snprintf(r->text, sizeof(r->text), "%s at "
			"epoch %" PRIu64 ", %zu channel%s, listening on %s, "
			"peer %s", role_name(LOAD(&R.role)), LOAD(&R.epoch),
			R.n, R.n == 1 ? "" : "s", sbd.conf.repl.listen,
			sbd.conf.repl.peer);

		/* A line a channel, as many as the answer holds. */
		for (size_t i = 0; i < R.n && o < sizeof(r->text); i++) {
			struct sb_repl_view v;
			uint64_t have;

			sb_repl_read(R.ch[i].ch, &v);
			have = v.level == SHMBUS_ACK_APPLIED ? v.applied
							     : v.received;
			if (v.flags & SHMBUS_REPL_STANDBY)
				o += (size_t)snprintf(r->text + o,
					sizeof(r->text) - o, "\n  %.40s: link "
					"%s, holds %" PRIu64, R.ch[i].name,
					v.flags & SHMBUS_REPL_LINK ? "up" :
					"down", v.head);
			else
				o += (size_t)snprintf(r->text + o,
					sizeof(r->text) - o, "\n  %.40s: link "
					"%s, standby %s, lag %" PRIu64 " bytes",
					R.ch[i].name,
					v.flags & SHMBUS_REPL_LINK ? "up" :
					"down",
					v.flags & SHMBUS_REPL_OUT_OF_SYNC ?
					"out of sync" : "in sync",
					v.head > have ? v.head - have : 0);
		}
		break;
	}
	case SHMBUS_REPL_OP_PROMOTE:
		if (LOAD(&R.role) == SBD_ROLE_PRIMARY) {
			snprintf(r->text, sizeof(r->text), "already primary");
			rc2 = -EALREADY;
			break;
		}
		rc2 = become_primary(0, r->text, sizeof(r->text));
		break;
	case SHMBUS_REPL_OP_DEMOTE:
	case SHMBUS_REPL_OP_SWITCHOVER:
		if (LOAD(&R.role) != SBD_ROLE_PRIMARY) {
			snprintf(r->text, sizeof(r->text), "not primary");
			rc2 = -EALREADY;
			break;
		}
		rc2 = hand_over(op == SHMBUS_REPL_OP_SWITCHOVER ||
					!(flags & SHMBUS_REPL_FORCE),
				ends, r->text, sizeof(r->text));
		if (rc2)
			break;
		if (op == SHMBUS_REPL_OP_DEMOTE) {
			for (size_t i = 0; i < R.n; i++)
				if (LOAD(&R.ch[i].applied) < ends[i])
					sbd_log(SBD_WARN, 0, "%s: demoted "
						"with --force: the standby "
						"lacks %" PRIu64 "..%" PRIu64,
						R.ch[i].name,
						LOAD(&R.ch[i].applied), ends[i]);
			become_standby();
			snprintf(r->text, sizeof(r->text), "standby at epoch %"
				 PRIu64, LOAD(&R.epoch));
			break;
		}
		/* Switchover: we stand by, then the peer is asked. */
		for (size_t i = 0; i < R.n; i++)
			agent_stop(&R.ch[i]);
		for (size_t i = 0; i < R.n; i++)
			sb_fence_set(R.ch[i].ch, SHMBUS_FENCE_STANDBY);
		STORE(&R.role, SBD_ROLE_STANDBY);
		rc2 = ask_promote(ends, &epoch, r->text, sizeof(r->text));
		if (rc2 == -EINPROGRESS) {
			/* Asked, no answer: the peer may be primary now.
			 * Stay a standby; an operator decides. */
			for (size_t i = 0; i < R.n; i++)
				linker_start(&R.ch[i]);
			sbd_log(SBD_ERR, 0, "switchover: %s; this host stays "
				"standby: check the peer", r->text);
			break;
		}
		if (rc2) {
			/* Refused (or never asked): we are still the only
			 * primary.  Open again. */
			STORE(&R.role, SBD_ROLE_PRIMARY);
			for (size_t i = 0; i < R.n; i++) {
				agent_start(&R.ch[i]);
				sb_fence_set(R.ch[i].ch, SHMBUS_FENCE_OPEN);
			}
			sbd_log(SBD_WARN, 0, "switchover abandoned, still "
				"primary: %s", r->text);
			break;
		}
		for (size_t i = 0; i < R.n; i++) {
			sb_repl_flags(R.ch[i].ch, SHMBUS_REPL_STANDBY,
				      SHMBUS_REPL_LINK);
			linker_start(&R.ch[i]);
		}
		snprintf(r->text, sizeof(r->text), "switched over: the peer "
			 "is primary at epoch %" PRIu64 ", this host its "
			 "standby", epoch);
		sbd_log(SBD_NOTICE, 0, "%s (%.1f ms)", r->text,
			(double)(now_ns() - t0) / 1e6);
		break;
	default:
		rc2 = -EINVAL;
	}
	r->role = (uint32_t)LOAD(&R.role);
	r->epoch = LOAD(&R.epoch);
	r->duration_ns = (uint64_t)(now_ns() - t0);
	pthread_mutex_unlock(&R.role_mu);
	return rc2;
}
