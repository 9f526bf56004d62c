/* SPDX-License-Identifier: MIT */
/*
 * journal.c - each journaled channel's agent (docs/journal.md): a
 * subscriber of the ring, in its own thread, that appends the ring's
 * records to segment files at the same positions, syncs them by the
 * channel's policy, publishes how far it wrote and synced in the
 * channel's header, and deletes old segments by the retention rule.
 * A second thread per channel prepares the next segment (header, zeros,
 * fdatasync) so that rolling is a rename.
 *
 * At start, before the first reap: each journal is checked and recovered
 * (the last two segments walked, the first impossible record and all
 * after it cleared), then the agent takes a cursor slot where the
 * journal ends, so that producers held by the previous daemon's cursor
 * stay held.  A ring that is new while its journal is not (a reboot)
 * continues at the journal's end.  At exit the cursor slot is left held.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"
#include "../lib/journal.h"

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

#define CHUNK		(1u << 20)	/* bytes copied and written at once */
#define NAP_NS		INT64_C(1000000)	/* an idle agent looks again */
#define CHECK_NS	INT64_C(100000000)	/* free space, retention */
#define RETRY_NS	INT64_C(100000000)	/* after a failed write */
#define PAD_MAX	((uint64_t)SHMBUS_LEN_MASK & ~(uint64_t)(SHMBUS_REC_ALIGN - 1))

struct jchan {
	char name[SHMBUS_CTL_NAME];
	struct sbd_jnl_conf conf;	/* copies: a reload replaces sbd.conf */
	uint64_t min_free;
	shmbus_channel *ch;		/* the agent's own mapping */
	struct sb_jgeom g;
	char dir[PATH_MAX];
	int dfd;			/* the directory, to sync it */
	mode_t fmode;
	int64_t gid;			/* the channel's group (-1: the
					 * daemon's) */
	shmbus_sub *cursor;
	uint64_t held;			/* the cursor's position */
	uint64_t pos;			/* written through */
	uint64_t synced;		/* fdatasync'd through */
	uint64_t seq;			/* the last seq written (UINT64_MAX) */
	uint64_t synced_seq;		/* the last seq synced (UINT64_MAX) */
	int fd;				/* the current segment */
	uint64_t base;
	int tix_fd;
	uint64_t tix_pos;		/* the last entry's (UINT64_MAX) */
	int64_t tix_ns;
	uint8_t *buf;
	size_t buf_cap;
	int64_t sync_ns;		/* last fdatasync (monotonic) */
	int64_t check_ns;		/* last free-space and retention check */
	uint32_t kick;
	bool full, failing;
	bool dead;			/* stopped for good: the ring went back */
	struct sbd_ratelimit rl;
	unsigned long errors;
	pthread_t th;
	bool th_on;
	bool stop;			/* atomic */

	/* The preparer: makes the spare for base `want` (UINT64_MAX:
	 * nothing to do); `ready` is the base of the spare on disk. */
	pthread_t prep;
	bool prep_on;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t want, ready;
	int prep_err;
};

static struct jchan *jc;
static size_t njc;

/* ------------------------------------------------------------ helpers */

static int64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* The files stay the daemon's user's, whoever owns the channel: an owner
 * of a file may change its mode, and the owner of the directory may put
 * files in it.  The channel's group gets them, to read only. */
static void own(struct jchan *j, int fd)
{
	if (fchown(fd, geteuid(), j->gid >= 0 ? (gid_t)j->gid : (gid_t)-1))
		sbd_log(SBD_WARN, errno, "%s: journal: chown", j->name);
	fchmod(fd, j->fmode);
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

static void spare_path(char *buf, size_t n, uint64_t base)
{
	snprintf(buf, n, ".%016llx.seg.tmp", (unsigned long long)base);
}

static uint64_t epoch_now(struct jchan *j)
{
	struct sb_repl_view v;

	sb_repl_read(j->ch, &v);
	return v.epoch;
}

/* Makes segment file `name` in the directory: the header, zeros for
 * every position, fdatasync.  0 or -errno. */
static int make_file(struct jchan *j, const char *name, uint64_t base,
		     uint64_t start, uint64_t epoch)
{
	static const uint8_t zero[64 << 10];
	uint8_t page[SHMBUS_JSEG_HDR] = { 0 };
	struct shmbus_jseg_hdr h;
	int fd, rc = 0;

	fd = openat(j->dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
				  O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	sb_jseg_hdr_make(&h, &j->g, base, start, epoch);
	memcpy(page, &h, sizeof(h));
	rc = write_all(fd, page, sizeof(page), 0);
	/* Pre-zeroed: the blocks are allocated now, so that appending
	 * later changes no metadata and fdatasync() writes data only. */
	for (uint64_t o = 0; !rc && o < j->g.seg_size; o += sizeof(zero))
		rc = write_all(fd, zero, sizeof(zero),
			       (off_t)(SHMBUS_JSEG_HDR + o));
	if (!rc && fdatasync(fd))
		rc = -errno;
	if (!rc)
		own(j, fd);
	close(fd);
	if (rc)
		unlinkat(j->dfd, name, 0);
	return rc;
}

/* ---------------------------------------------------------- the preparer */

static void *prep_main(void *arg)
{
	struct jchan *j = arg;

	sbd_thread_setup("sb-jnl-prep", false);

	pthread_mutex_lock(&j->mu);
	while (!LOAD(&j->stop)) {
		uint64_t base = j->want;
		char name[64];
		int rc;

		if (base == UINT64_MAX || base == j->ready) {
			pthread_cond_wait(&j->cv, &j->mu);
			continue;
		}
		pthread_mutex_unlock(&j->mu);
		spare_path(name, sizeof(name), base);
		rc = make_file(j, name, base, base, epoch_now(j));
		pthread_mutex_lock(&j->mu);
		if (rc == 0) {
			j->ready = base;
			j->prep_err = 0;
		} else {
			j->prep_err = rc;
			if (j->want == base)
				j->want = UINT64_MAX;	/* asked again */
		}
		pthread_cond_broadcast(&j->cv);
	}
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

static void prep_ask(struct jchan *j, uint64_t base)
{
	pthread_mutex_lock(&j->mu);
	j->want = base;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

/* ------------------------------------------------------------- segments */

/* The segment's time index, to append to: what a crash left of it is
 * kept up to its first entry that does not check (a torn or damaged
 * one), so that the entries appended from now on are read. */
static int open_tix(struct jchan *j, uint64_t limit)
{
	struct shmbus_jtix e;
	char name[64];
	off_t o = 0;
	int64_t ns = INT64_MIN;
	uint64_t pos = 0;

	snprintf(name, sizeof(name), "%016llx.tix",
		 (unsigned long long)j->base);
	j->tix_fd = openat(j->dfd, name, O_RDWR | O_CREAT | O_APPEND |
					 O_CLOEXEC | O_NOFOLLOW, j->fmode);
	j->tix_pos = UINT64_MAX;
	if (j->tix_fd < 0)
		return -errno;
	own(j, j->tix_fd);	/* readable as the segments are */
	/* Entries past `limit` name records recovery removed (a crash lost
	 * the segment's unsynced tail, not its index's). */
	while (pread(j->tix_fd, &e, sizeof(e), o) == (ssize_t)sizeof(e) &&
	       e.crc == sb_crc32c(0, &e, 16) && e.ns >= ns && e.pos >= pos &&
	       e.pos >= j->base && e.pos < limit) {
		ns = e.ns;
		pos = e.pos;
		o += (off_t)sizeof(e);
	}
	if (ftruncate(j->tix_fd, o))
		return -errno;
	if (o) {
		j->tix_pos = pos;
		j->tix_ns = ns;
	}
	return 0;
}

static void close_seg(struct jchan *j)
{
	if (j->fd >= 0)
		close(j->fd);
	if (j->tix_fd >= 0)
		close(j->tix_fd);
	j->fd = j->tix_fd = -1;
}

static int open_seg(struct jchan *j, uint64_t base, uint64_t end)
{
	char name[64];

	snprintf(name, sizeof(name), "%016llx.seg", (unsigned long long)base);
	j->fd = openat(j->dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (j->fd < 0)
		return -errno;
	j->base = base;
	return open_tix(j, end);
}

/* The segment for `base`, starting at `start`: the preparer's spare if
 * it made that one, else made now.  Named last (rename, then the
 * directory synced), so that a segment file always has its header. */
static int new_seg(struct jchan *j, uint64_t base, uint64_t start)
{
	char spare[64], name[64];
	uint64_t epoch = epoch_now(j);
	bool have = false;
	int rc;

	/* A segment that starts past its base (a gap) is made here under a
	 * name of its own: the preparer may be making the spare for this
	 * base at this moment. */
	if (start == base)
		spare_path(spare, sizeof(spare), base);
	else
		snprintf(spare, sizeof(spare), ".%016llx.%016llx.seg.tmp",
			 (unsigned long long)base, (unsigned long long)start);
	snprintf(name, sizeof(name), "%016llx.seg", (unsigned long long)base);
	if (start == base) {
		pthread_mutex_lock(&j->mu);
		while (j->want == base && j->ready != base && !LOAD(&j->stop))
			pthread_cond_wait(&j->cv, &j->mu);
		have = j->ready == base;
		j->ready = UINT64_MAX;
		pthread_mutex_unlock(&j->mu);
	}
	if (have) {
		/* Made ahead under the epoch of then. */
		struct shmbus_jseg_hdr h;
		int fd = openat(j->dfd, spare, O_RDWR | O_CLOEXEC | O_NOFOLLOW);

		if (fd < 0 || pread(fd, &h, sizeof(h), 0) != sizeof(h)) {
			have = false;
		} else if (h.epoch != epoch) {
			sb_jseg_hdr_make(&h, &j->g, base, start, epoch);
			if (write_all(fd, &h, sizeof(h), 0) || fdatasync(fd))
				have = false;
		}
		if (fd >= 0)
			close(fd);
	}
	if (!have) {
		rc = make_file(j, spare, base, start, epoch);
		if (rc)
			return rc;
	}
	if (renameat(j->dfd, spare, j->dfd, name) || fsync(j->dfd))
		return -errno;
	rc = open_seg(j, base, 0);	/* a new segment: no index yet */
	if (rc)
		return rc;
	prep_ask(j, base + j->g.seg_size);
	return 0;
}

/* ------------------------------------------------------------ retention */

static void retain(struct jchan *j)
{
	uint64_t *b, total, oldest;
	uint32_t keep = SHMBUS_JKEEP_RULE;
	int64_t now = real_ns();
	size_t k, i = 0;

	if (sb_jlist(j->dir, &b, &k) || !k) {
		free(b);
		return;
	}
	total = k * (j->g.seg_size + SHMBUS_JSEG_HDR);
	/* Whole segments, oldest first, never the one being written. */
	for (; i + 1 < k && b[i] < j->base; i++) {
		char name[64];
		struct stat st;
		bool old, big;
		int fd;

		snprintf(name, sizeof(name), "%016llx.seg",
			 (unsigned long long)b[i]);
		fd = openat(j->dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || fstat(fd, &st)) {
			if (fd >= 0)
				close(fd);
			break;
		}
		big = j->conf.retain_bytes && total > j->conf.retain_bytes;
		old = j->conf.retain_ms &&
		      (now - ((int64_t)st.st_mtim.tv_sec * 1000000000 +
			      st.st_mtim.tv_nsec)) / 1000000 >
			      (int64_t)j->conf.retain_ms;
		if (!big && !old) {
			close(fd);
			break;
		}
		/* A replaying reader holds a shared lock on what it reads. */
		if (flock(fd, LOCK_EX | LOCK_NB)) {
			close(fd);
			keep = SHMBUS_JKEEP_READER;
			break;
		}
		unlinkat(j->dfd, name, 0);
		snprintf(name, sizeof(name), "%016llx.tix",
			 (unsigned long long)b[i]);
		unlinkat(j->dfd, name, 0);
		close(fd);
		total -= j->g.seg_size + SHMBUS_JSEG_HDR;
		sbd_log(SBD_INFO, 0, "%s: journal: removed segment %016llx "
			"(%s)", j->name, (unsigned long long)b[i],
			big ? "size" : "age");
	}
	if (i < k) {
		struct shmbus_jseg_hdr h;
		char name[64];
		int fd;

		oldest = b[i];
		snprintf(name, sizeof(name), "%016llx.seg",
			 (unsigned long long)b[i]);
		fd = openat(j->dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0 && pread(fd, &h, sizeof(h), 0) == sizeof(h) &&
		    h.start >= b[i] && h.start - b[i] < j->g.seg_size)
			oldest = h.start;
		if (fd >= 0)
			close(fd);
		fsync(j->dfd);
		sb_jnl_oldest(j->ch, oldest, total, keep);
	}
	free(b);
}

/* ---------------------------------------------------------- appending */

static void publish_synced(struct jchan *j)
{
	sb_jnl_persisted(j->ch, j->synced, !j->full);
}

static void hold(struct jchan *j);

/*
 * A failed fdatasync() may have dropped the pages it could not write (a
 * later one then succeeds without them): what was written since the last
 * sync is not trusted.  A channel that acknowledges holds its cursor at
 * what is synced, so the ring still has it: it is copied again.  Others
 * say what a power loss may take.
 */
static int sync_now(struct jchan *j)
{
	if (j->synced == j->pos)
		return 0;
	if (fdatasync(j->fd)) {
		int rc = -errno;

		if (j->conf.ack) {
			/* Copied again from there: its numbers too. */
			j->pos = j->synced;
			j->seq = j->synced_seq;
		} else
			sbd_log_limited(&j->rl, SBD_ERR, ++j->errors,
					"journal errors", "%s: journal: a sync "
					"failed (%s): [%" PRIu64 ", %" PRIu64 ") "
					"may be lost with a power loss",
					j->name, strerror(-rc), j->synced,
					j->pos);
		return rc;
	}
	j->synced = j->pos;
	j->synced_seq = j->seq;
	j->sync_ns = sb_now_ns();
	sb_jnl_count(j->ch, 1, 0, 0);
	publish_synced(j);
	hold(j);
	return 0;
}

/* The position we are at ends the current segment: the next one. */
static int roll(struct jchan *j, uint64_t start)
{
	uint64_t base = start & ~(j->g.seg_size - 1);
	int rc;

	if (j->fd >= 0) {
		/* Everything before the newest segment is on disk: recovery
		 * walks only the last two. */
		rc = sync_now(j);
		if (rc)
			return rc;
		close_seg(j);
	}
	rc = new_seg(j, base, start);
	if (rc)
		return rc;
	retain(j);
	return 0;
}

/* Seals and writes PAD records over [from, to) (within one segment):
 * a range the journal does not have. */
static int write_pads(struct jchan *j, uint64_t from, uint64_t to)
{
	uint64_t p = from;

	while (p < to) {
		uint64_t k = to - p, room = j->g.capacity -
					    (p & (j->g.capacity - 1));
		uint8_t w[8];
		uint64_t word;
		int rc;

		if (k > room)
			k = room;
		if (k > PAD_MAX + SHMBUS_REC_ALIGN)
			k = PAD_MAX + SHMBUS_REC_ALIGN;
		word = (uint64_t)SHMBUS_REC_PAD << SHMBUS_LEN_BITS |
		       (k - SHMBUS_REC_ALIGN);
		memcpy(w, &word, 8);
		sb_jrec_seal(w, p);
		rc = write_all(j->fd, w, 8,
			       (off_t)(SHMBUS_JSEG_HDR + (p - j->base)));
		if (rc)
			return rc;
		p += k;
	}
	return 0;
}

/* The journal lacks [j->pos, to): padding to its segment's end, and a
 * segment that starts at `to`. */
static int gap(struct jchan *j, uint64_t to)
{
	uint64_t end = j->base + j->g.seg_size;
	int rc;

	sbd_log(SBD_WARN, 0, "%s: journal: gap [%" PRIu64 ", %" PRIu64 "): "
		"the ring no longer held it", j->name, j->pos, to);
	sb_jnl_count(j->ch, 0, 1, to - j->pos);
	/* Before anything after it is acknowledged: a sync waiter with
	 * records in it is told SHMBUS_SYNC_DEGRADED, never 0. */
	if (j->conf.ack) {
		/* One range covers every gap so far (the header has room
		 * for one): a waiter with records in any of them, or between
		 * them, is told DEGRADED; never 0 unearned. */
		struct sb_repl_view v;
		uint64_t lo = j->pos;

		sb_repl_read(j->ch, &v);
		if (v.hole_lo < v.hole_hi && v.hole_lo < lo)
			lo = v.hole_lo;
		sb_repl_hole(j->ch, lo, to);
	}
	rc = write_pads(j, j->pos, to < end ? to : end);
	if (rc)
		return rc;
	if (to < end) {
		j->pos = to;
		return 0;
	}
	j->pos = end;
	rc = roll(j, to);
	if (rc)
		return rc;
	j->pos = to;
	j->synced = to;
	j->synced_seq = j->seq;
	return 0;
}

static void tix_note(struct jchan *j, uint64_t pos)
{
	struct shmbus_jtix e;
	int64_t now = real_ns();

	if (j->tix_pos != UINT64_MAX && pos >= j->tix_pos &&
	    pos - j->tix_pos < SHMBUS_JTIX_EVERY)
		return;
	/* A running maximum: monotone whatever the clock does. */
	if (now < j->tix_ns)
		now = j->tix_ns;
	e = (struct shmbus_jtix){ .ns = now, .pos = pos };
	e.crc = sb_crc32c(0, &e, 16);
	if (write(j->tix_fd, &e, sizeof(e)) == (ssize_t)sizeof(e)) {
		j->tix_pos = pos;
		j->tix_ns = now;
	}
}

/* The ring may reuse what is in the files now (the cursor only moves
 * forward: after a lost tail, the journal copies again what lies below
 * it). */
static void hold(struct jchan *j)
{
	/* A channel that acknowledges persisted keeps in the ring what is
	 * not synced yet (a failed sync copies it again). */
	uint64_t to = j->conf.ack ? j->synced : j->pos;

	if (to > j->held && j->cursor) {
		sb_sub_seek(j->cursor, to);
		j->held = to;
	}
}

/* The ring is damaged under the journal: said, counted, and retried
 * (append()'s caller) without writing anything. */
static int damaged(struct jchan *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int damaged(struct jchan *j, const char *fmt, ...)
{
	char why[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	sbd_log_limited(&j->rl, SBD_ERR, ++j->errors, "journal errors",
			"%s: journal: the ring is damaged at %" PRIu64 ": %s",
			j->name, j->pos, why);
	return -EBADMSG;
}

/* append() found no committed record at j->pos: a claim not committed
 * yet (0: waited for), the ring lapped it (overwrite: a gap, counted), or
 * damage (-EBADMSG: said and retried, never a gap). */
static int nothing_at_pos(struct jchan *j)
{
	uint64_t head = sb_ring_head(j->ch), oldest;
	char why[256];
	int rc;

	if (sb_ring_damage(j->ch, j->pos, NULL, why, sizeof(why)))
		return damaged(j, "%s", why);
	/* head behind what the journal has: a header written over (a ring
	 * made again is found at start, not here). */
	if (head < j->pos)
		return damaged(j, "head %" PRIu64 " is behind the journal",
			       head);
	if (sb_ring_holds(j->ch, j->pos))
		return 0;	/* a claim not committed yet */
	/* Lapped.  The journal's cursor holds a block channel's producers
	 * a lap behind it: head further on is a header written over, not
	 * records the journal missed.  (Below its cursor, after a host
	 * crash lost the journal's tail, the ring may have gone on.) */
	if (!(j->g.flags & SHMBUS_F_OVERWRITE) && j->held <= j->pos)
		return damaged(j, "head %" PRIu64 " is more than a lap ahead "
			       "of the journal on a block channel", head);
	oldest = sb_ring_oldest(j->ch);
	if (oldest <= j->pos)
		return 0;
	/* Producers that lapped the journal left the index naming record
	 * boundaries in the lap below head; a head with none below it was
	 * written there, not reached. */
	if (oldest == sb_ring_head(j->ch) && oldest != 0)
		return damaged(j, "head %" PRIu64 " is more than a lap ahead "
			       "with no record indexed below it", oldest);
	rc = gap(j, oldest);
	if (rc)
		return rc;
	hold(j);
	sb_jnl_written(j->ch, j->pos);
	return 1;
}

/* Appends what is committed from j->pos: 1 if it wrote, 0 if nothing was
 * there, -errno. */
static int append(struct jchan *j)
{
	uint64_t seg_end = j->base + j->g.seg_size, most, end, len, o;
	struct iovec iov[2];
	struct sb_frame f;
	char why[256];
	bool first;
	int n, rc;

	if (j->pos == seg_end) {
		rc = roll(j, seg_end);
		if (rc)
			return rc;
		seg_end = j->base + j->g.seg_size;
	}
	most = seg_end - j->pos;
	if (most > j->buf_cap)
		most = j->buf_cap;
	end = sb_committed_end(j->ch, j->pos, most);
	if (end == j->pos || end - j->pos > j->buf_cap) {
		/* Padding longer than the buffer (a batch's wrap, a repair, a
		 * standby's restart): its word is all there is to write. */
		uint64_t pad = sb_ring_pad_at(j->ch, j->pos);

		if (pad > j->buf_cap ||
		    (pad && end - j->pos > j->buf_cap)) {
			if (j->pos + pad > seg_end)
				return -EBADMSG;	/* cannot be */
			rc = write_pads(j, j->pos, j->pos + pad);
			if (rc)
				return rc;
			j->pos += pad;
			sb_jnl_written(j->ch, j->pos);
			hold(j);
			return 1;
		}
	}
	if (end == j->pos)
		return nothing_at_pos(j);
	len = end - j->pos;
	if (len > j->buf_cap)
		return -EMSGSIZE;	/* one record longer than the buffer */
	n = sb_ring_span(j->ch, j->pos, end, iov);
	if (n < 0)
		return n;
	memcpy(j->buf, iov[0].iov_base, iov[0].iov_len);
	if (n == 2)
		memcpy(j->buf + iov[0].iov_len, iov[1].iov_base,
		       iov[1].iov_len);
	/* Overwrite: a producer may have lapped us during the copy. */
	if (!sb_ring_holds(j->ch, j->pos))
		return 0;	/* the next look finds the gap */
	/* The copy, as untrusted as the ring it came from. */
	rc = sb_apply_check(j->ch, j->pos, j->buf, len, &f, why, sizeof(why));
	if (rc) {
		sbd_log_limited(&j->rl, SBD_ERR, ++j->errors, "journal errors",
				"%s: journal: the ring is damaged at %" PRIu64
				": %s", j->name, j->pos, why);
		return rc;
	}
	first = true;
	for (o = 0; o < len;) {
		uint64_t w, size, s;
		bool pad;

		memcpy(&w, j->buf + o, 8);
		pad = ((w >> SHMBUS_LEN_BITS) & 7u) == SHMBUS_REC_PAD;
		size = pad ? SHMBUS_REC_ALIGN + (uint32_t)(w & SHMBUS_LEN_MASK)
			   : SHMBUS_REC_HDR + (((uint32_t)(w & SHMBUS_LEN_MASK) +
						7u) & ~7u);
		if (!pad && first && j->seq != UINT64_MAX) {
			/* The copy's seqs grow (checked above); the first
			 * must follow what the journal has, else the ring
			 * went back (a ring made again) and the journal
			 * would hold one position twice over. */
			memcpy(&s, j->buf + o + 8, 8);
			if (s <= j->seq) {
				sbd_log_limited(&j->rl, SBD_ERR, ++j->errors,
						"journal errors", "%s: journal: "
						"sequence %" PRIu64 " at %" PRIu64
						" after %" PRIu64 ": the ring went "
						"back; the journal stops here "
						"(move %s aside to start another)",
						j->name, s, j->pos + o, j->seq,
						j->dir);
				j->dead = true;
				return -EBADMSG;
			}
		}
		if (!pad)
			first = false;	/* the rest grow */
		sb_jrec_seal(j->buf + o, j->pos + o);
		o += size;
	}
	rc = write_all(j->fd, j->buf, len,
		       (off_t)(SHMBUS_JSEG_HDR + (j->pos - j->base)));
	if (rc)
		return rc;
	tix_note(j, j->pos);
	j->pos = end;
	if (f.last_pos != UINT64_MAX)
		j->seq = f.last_seq;
	sb_jnl_written(j->ch, j->pos);
	hold(j);
	return 1;
}

/* Free space on the journal's filesystem: below the threshold, nothing
 * is acknowledged as persisted until it is back. */
static void check_space(struct jchan *j)
{
	struct statvfs sv;
	uint64_t free_b;
	bool full;

	if (fstatvfs(j->dfd, &sv))
		return;
	free_b = (uint64_t)sv.f_bavail * sv.f_frsize;
	full = free_b < j->min_free;
	if (full == j->full)
		return;
	j->full = full;
	if (full) {
		sb_jnl_state(j->ch, SHMBUS_JNL_DISK_FULL, 0);
		sbd_log(SBD_ERR, 0, "%s: journal: %" PRIu64 " bytes free in %s, "
			"below journal_min_free (%" PRIu64 "): not "
			"acknowledging persisted levels until space returns",
			j->name, free_b, j->dir, j->min_free);
	} else {
		sb_jnl_state(j->ch, 0, SHMBUS_JNL_DISK_FULL);
		sbd_log(SBD_NOTICE, 0, "%s: journal: %" PRIu64 " bytes free "
			"again: acknowledging", j->name, free_b);
		publish_synced(j);
	}
}

static bool sync_due(struct jchan *j, int64_t now)
{
	if (j->synced == j->pos)
		return false;
	switch (j->conf.fsync) {
	case SBD_FSYNC_BATCH:
		return true;
	case SBD_FSYNC_INTERVAL:
		return now - j->sync_ns >= (int64_t)j->conf.fsync_ms * 1000000 ||
		       j->pos - j->synced >= j->conf.fsync_bytes;
	default:
		return false;
	}
}

static void *agent_main(void *arg)
{
	struct jchan *j = arg;
	int64_t retry_at = 0;

	sbd_thread_setup("sb-journal", false);

	while (!LOAD(&j->stop)) {
		int64_t now = sb_now_ns(), nap = NAP_NS;
		int rc = 0, wrote = 0;

		if (now - j->check_ns >= CHECK_NS) {
			j->check_ns = now;
			check_space(j);
			retain(j);
		}
		if (now >= retry_at) {
			/* Write what is there, a MiB at a time, then sync
			 * once: a group commit of everything committed. */
			for (int i = 0; i < 64 && !LOAD(&j->stop); i++) {
				rc = append(j);
				if (rc <= 0)
					break;
				wrote = 1;
				if (j->conf.fsync == SBD_FSYNC_INTERVAL &&
				    sync_due(j, sb_now_ns()))
					break;
			}
			if (rc >= 0 && sync_due(j, sb_now_ns()))
				rc = sync_now(j);
			if (rc < 0 && j->dead) {
				/* Nothing more can be written: the channel goes
				 * on without a journal, its cursor released. */
				sb_jnl_off(j->ch, j->conf.ack);
				shmbus_sub_close(j->cursor);
				j->cursor = NULL;
				break;
			}
			if (rc < 0) {
				if (!j->failing)
					sb_jnl_state(j->ch, SHMBUS_JNL_ERROR, 0);
				j->failing = true;
				sbd_log_limited(&j->rl, SBD_ERR, ++j->errors,
						"journal errors", "%s: journal: "
						"%s at %" PRIu64 "; retrying",
						j->name, strerror(-rc), j->pos);
				retry_at = sb_now_ns() + RETRY_NS;
				continue;
			}
			if (j->failing) {
				j->failing = false;
				sb_jnl_state(j->ch, 0, SHMBUS_JNL_ERROR);
				sbd_log(SBD_NOTICE, 0, "%s: journal: writing "
					"again at %" PRIu64, j->name, j->pos);
			}
		} else {
			nap = retry_at - now;
		}
		if (wrote)
			continue;
		if (j->conf.fsync == SBD_FSYNC_INTERVAL && j->synced < j->pos) {
			int64_t left = j->sync_ns +
				       (int64_t)j->conf.fsync_ms * 1000000 - now;

			if (left < nap)
				nap = left > 0 ? left : 0;
		}
		/* A shmbus_pub_sync() caller kicks us awake (the kick word,
		 * which the nap waits on): no need to spin for it. */
		if (nap > 0)
			j->kick = sb_repl_agent_wait(j->ch, j->kick, nap);
		else
			sched_yield();
	}
	/* A clean stop: what was written is synced. */
	if (j->fd >= 0 && !sync_now(j))
		publish_synced(j);
	return NULL;
}

/* ------------------------------------------------------------- recovery */

/* Clears [from, the end of segment `base`): a record that failed, and
 * whatever followed it, can never be read as valid again. */
static int clear_from(struct jchan *j, uint64_t base, uint64_t from)
{
	static const uint8_t zero[64 << 10];
	char name[64];
	off_t off = (off_t)(SHMBUS_JSEG_HDR + (from - base)),
	      end = (off_t)(SHMBUS_JSEG_HDR + j->g.seg_size);
	int fd, rc = 0;

	snprintf(name, sizeof(name), "%016llx.seg", (unsigned long long)base);
	fd = openat(j->dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	for (off_t o = off; !rc && o < end; o += (off_t)sizeof(zero)) {
		size_t n = end - o < (off_t)sizeof(zero) ? (size_t)(end - o)
							 : sizeof(zero);
		rc = write_all(fd, zero, n, o);
	}
	if (!rc && fdatasync(fd))
		rc = -errno;
	close(fd);
	return rc;
}

/* Segments made ahead by a previous daemon: made again when needed. */
static void remove_spares(struct jchan *j)
{
	DIR *d = fdopendir(dup(j->dfd));
	struct dirent *e;

	if (!d)
		return;
	rewinddir(d);	/* the offset is shared with j->dfd's */
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);

		if (e->d_name[0] == '.' && n > 8 &&
		    !strcmp(e->d_name + n - 8, ".seg.tmp"))
			unlinkat(j->dfd, e->d_name, 0);
	}
	closedir(d);
}

/*
 * Checks every segment's header, walks the last two segments, clears
 * from the first impossible record on (later segments removed).  *end is
 * where the journal ends (UINT64_MAX: empty), *seq the last seq in it,
 * *oldest its first position.
 */
static int recover(struct jchan *j, uint64_t *end, uint64_t *seq,
		   uint64_t *oldest)
{
	struct sb_jreader r;
	struct sb_jrec rec;
	uint64_t *b;
	size_t k;
	int rc;

	*end = *oldest = UINT64_MAX;
	*seq = UINT64_MAX;
	remove_spares(j);
	rc = sb_jlist(j->dir, &b, &k);
	if (rc)
		return rc;
	if (!k) {
		free(b);
		return 0;
	}
	rc = sb_jreader_init(&r, j->dir, &j->g);
	for (size_t i = 0; !rc && i < k; i++) {
		/* Every header: a segment of another channel or geometry
		 * is never used. */
		rc = sb_jreader_seek(&r, b[i]);
		if (rc == 0 && i == 0)
			*oldest = r.start;
	}
	if (rc) {
		sbd_log(SBD_ERR, 0, "%s: journal: %s: refused; the journal is "
			"not written until the directory %s is put right",
			j->name, rc == -EBADMSG || rc == -EXDEV ? r.why :
			strerror(-rc), j->dir);
		sb_jreader_close(&r);
		free(b);
		return -EXDEV;
	}
	rc = sb_jreader_seek(&r, b[k >= 2 ? k - 2 : 0]);
	while (rc == 0 && (rc = sb_jreader_next(&r, UINT64_MAX, &rec)) == 1)
		rc = 0;
	if (rc < 0) {
		sbd_log(SBD_ERR, rc, "%s: journal: reading it back", j->name);
		sb_jreader_close(&r);
		free(b);
		return rc;
	}
	*end = r.pos;
	*seq = r.seq;
	if (r.pos < b[k - 1] + j->g.seg_size) {
		uint64_t base = r.pos & ~(j->g.seg_size - 1);
		bool tail = strncmp(r.why, "nothing written", 15) != 0;

		if (tail)
			sbd_log(SBD_WARN, 0, "%s: journal: recovered through "
				"%" PRIu64 "; cleared from there on: %s",
				j->name, r.pos, r.why);
		for (size_t i = 0; i < k; i++) {
			char name[64];

			if (b[i] <= base)
				continue;
			snprintf(name, sizeof(name), "%016llx.seg",
				 (unsigned long long)b[i]);
			unlinkat(j->dfd, name, 0);
			snprintf(name, sizeof(name), "%016llx.tix",
				 (unsigned long long)b[i]);
			unlinkat(j->dfd, name, 0);
			sbd_log(SBD_WARN, 0, "%s: journal: removed segment "
				"%016llx, after the damage", j->name,
				(unsigned long long)b[i]);
		}
		rc = clear_from(j, base, r.pos);
		fsync(j->dfd);	/* the segments removed stay removed */
	}
	/* What the walk found is on disk before it counts as persisted: a
	 * previous daemon may have died before syncing it. */
	for (size_t i = k >= 2 ? k - 2 : 0; rc == 0 && i < k; i++) {
		char name[64];
		int fd;

		snprintf(name, sizeof(name), "%016llx.seg",
			 (unsigned long long)b[i]);
		fd = openat(j->dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			if (fdatasync(fd))
				rc = -errno;
			close(fd);
		}
	}
	sb_jreader_close(&r);
	free(b);
	return rc;
}

/* ---------------------------------------------------------------- start */

static int start_one(struct jchan *j, const struct sbd_chan_conf *cc)
{
	struct shmbus_channel_info in;
	struct shmbus_sub_stats st;
	uint64_t end, seq, oldest, at, head;
	char why[256];
	int rc, err;

	snprintf(j->name, sizeof(j->name), "%s", cc->name);
	j->conf = cc->jnl;
	j->min_free = sbd.conf.journal_min_free;
	j->fd = j->tix_fd = j->dfd = -1;
	j->want = j->ready = UINT64_MAX;
	j->seq = j->synced_seq = UINT64_MAX;
	j->gid = cc->group;
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	j->ch = shmbus_channel_open(sbd.conf.shm_dir, cc->name);
	if (!j->ch || shmbus_channel_info(j->ch, &in))
		return -errno;
	/* Only the daemon writes the files; its group and others read them
	 * as the channel's mode lets them read the channel. */
	j->fmode = (cc->attr.mode ? cc->attr.mode : 0600) & 0044;
	j->fmode |= 0600;
	if (snprintf(j->dir, sizeof(j->dir), "%s/%s", sbd.conf.journal_dir,
		     cc->name) >= (int)sizeof(j->dir) ||
	    strlen(j->dir) >= sizeof(((struct sb_jnl_view *)0)->dir))
		return -ENAMETOOLONG;
	rc = sb_jgeom_make(&j->g, cc->name, cc->jnl.segment, in.capacity,
			   in.max_msg, sb_channel_flags(in.policy,
							in.producers),
			   why, sizeof(why));
	if (rc) {
		sbd_log(SBD_ERR, 0, "%s: journal: %s", j->name, why);
		return rc;
	}
	rc = mkdir_p(j->dir, j->fmode | ((j->fmode & 0444) >> 2));
	if (rc)
		return rc;
	j->dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dfd < 0)
		return -errno;
	own(j, j->dfd);
	fchmod(j->dfd, j->fmode | ((j->fmode & 0444) >> 2));
	j->buf_cap = CHUNK;
	if (j->buf_cap > in.capacity / 2 - SHMBUS_REC_ALIGN)
		j->buf_cap = in.capacity / 2 - SHMBUS_REC_ALIGN;
	if (j->buf_cap < 16 + ((uint64_t)in.max_msg + 7) / 8 * 8)
		j->buf_cap = 16 + ((uint64_t)in.max_msg + 7) / 8 * 8;
	j->buf = malloc(j->buf_cap);
	if (!j->buf)
		return -ENOMEM;
	rc = recover(j, &end, &seq, &oldest);
	if (rc)
		return rc;
	head = sb_ring_head(j->ch);
	if (end != UINT64_MAX && end > head) {
		/* The ring is behind its journal: new after a reboot, it
		 * continues where the journal ends; used, it conflicts. */
		rc = sb_ring_continue(j->ch, end, seq == UINT64_MAX ? 0
								   : seq + 1);
		if (rc) {
			sbd_log(SBD_ERR, 0, "%s: journal: the ring (at %" PRIu64
				") is behind its journal (ends at %" PRIu64
				"): positions would repeat; the journal is not "
				"written (move %s aside to start another)",
				j->name, head, end, j->dir);
			return -EEXIST;
		}
		sbd_log(SBD_NOTICE, 0, "%s: a new ring continues at %" PRIu64
			", where its journal ends", j->name, end);
	}
	/* The previous daemon's cursor where it is (it held producers while
	 * no daemon ran), or a new one where the journal ends. */
	j->cursor = sb_sub_journal(j->ch, end, &err);
	if (!j->cursor)
		return err;
	shmbus_sub_stats(j->cursor, &st);
	j->held = at = st.pos;
	if (end != UINT64_MAX && end > at) {
		/* Written past the cursor before the daemon stopped.  (On an
		 * overwrite channel the ring may have lapped it since: the
		 * first append finds the gap.) */
		if (in.policy == SHMBUS_OVERWRITE) {
			/* The cursor holds nobody: it follows. */
		} else if (end != sb_ring_head(j->ch) &&
			   !sb_ring_has_record(j->ch, end)) {
			sbd_log(SBD_ERR, 0, "%s: journal: its end %" PRIu64
				" is not a record of the ring; the journal is "
				"not written", j->name, end);
			return -EBADMSG;
		} else {
			sb_sub_seek(j->cursor, end);
			j->held = end;
		}
	}
	/* end < at: the journal lost a tail its cursor had passed (a crash
	 * of the host before a sync); what the ring still holds of it is
	 * copied again, checked against being overwritten meanwhile. */
	sb_jnl_setup(j->ch, j->dir, (uint32_t)__builtin_ctzll(j->g.seg_size),
		     j->conf.ack);
	j->seq = j->synced_seq = seq;
	j->sync_ns = sb_now_ns();
	if (end == UINT64_MAX) {
		/* A new journal starts at what the ring holds. */
		rc = new_seg(j, at & ~(j->g.seg_size - 1), at);
		j->pos = j->synced = at;
		oldest = at;
	} else {
		rc = open_seg(j, end & ~(j->g.seg_size - 1), end);
		if (rc == -ENOENT)	/* it ends where a segment would begin */
			rc = new_seg(j, end, end);
		/* From end on, whatever lies below the cursor included:
		 * copies are checked against being overwritten, and what the
		 * ring no longer holds becomes a gap. */
		j->pos = j->synced = end;
	}
	if (rc)
		return rc;
	sb_jnl_written(j->ch, j->pos);
	sb_jnl_persisted(j->ch, j->synced, true);
	sb_jnl_oldest(j->ch, oldest, 0, SHMBUS_JKEEP_RULE);
	retain(j);
	sbd_log(SBD_INFO, 0, "%s: journal in %s from %" PRIu64 " (fsync %s)",
		j->name, j->dir, j->pos,
		j->conf.fsync == SBD_FSYNC_BATCH ? "batch" :
		j->conf.fsync == SBD_FSYNC_INTERVAL ? "interval" : "none");
	if (pthread_create(&j->prep, NULL, prep_main, j))
		return -EAGAIN;
	j->prep_on = true;
	prep_ask(j, j->base + j->g.seg_size);
	if (pthread_create(&j->th, NULL, agent_main, j))
		return -EAGAIN;
	j->th_on = true;
	return 0;
}

static void free_one(struct jchan *j, bool keep_slot)
{
	STORE(&j->stop, true);
	if (j->ch)
		sb_repl_kick(j->ch);
	if (j->prep_on) {
		pthread_mutex_lock(&j->mu);
		pthread_cond_broadcast(&j->cv);
		pthread_mutex_unlock(&j->mu);
	}
	if (j->th_on)
		pthread_join(j->th, NULL);
	if (j->prep_on)
		pthread_join(j->prep, NULL);
	j->th_on = j->prep_on = false;
	close_seg(j);
	if (j->cursor) {
		if (keep_slot)
			sb_sub_abandon(j->cursor);
		else
			shmbus_sub_close(j->cursor);
	}
	j->cursor = NULL;
	if (j->dfd >= 0)
		close(j->dfd);
	j->dfd = -1;
	free(j->buf);
	j->buf = NULL;
	if (j->ch)
		shmbus_channel_close(j->ch);
	j->ch = NULL;
	pthread_mutex_destroy(&j->mu);
	pthread_cond_destroy(&j->cv);
}

/*
 * Takes an exclusive lock on every segment at or after base: a replaying
 * reader holds a shared one on the segment it reads (lib/journal.c), and
 * one that read records past the cut must not be handed others at their
 * positions.  The descriptors (locks) go in fds, their number in *nfds;
 * -EBUSY if a reader holds one.
 */
static int lock_from(int dfd, const uint64_t *b, size_t k, uint64_t base,
		     int *fds, size_t *nfds)
{
	*nfds = 0;
	if (!fds)
		return -ENOMEM;
	for (size_t i = 0; i < k; i++) {
		char n[64];
		int fd;

		if (b[i] < base)
			continue;
		snprintf(n, sizeof(n), "%016llx.seg", (unsigned long long)b[i]);
		fd = openat(dfd, n, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		fds[(*nfds)++] = fd;
		if (flock(fd, LOCK_EX | LOCK_NB))
			return errno == EWOULDBLOCK ? -EBUSY : -errno;
	}
	return 0;
}

/* Clears the journal in directory dfd (segments of seg_size) from pos on:
 * the segment that holds pos is zeroed from there, later ones removed. */
static int clear_dir_from(struct jchan *j, const uint64_t *b, size_t k,
			  uint64_t pos)
{
	uint64_t seg_base = pos & ~(j->g.seg_size - 1);
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < k; i++) {
		char n[64];

		if (b[i] < seg_base)
			continue;
		if (b[i] == seg_base) {
			rc = clear_from(j, b[i], pos);
			continue;
		}
		snprintf(n, sizeof(n), "%016llx.seg", (unsigned long long)b[i]);
		if (unlinkat(j->dfd, n, 0) && errno != ENOENT)
			rc = -errno;
		snprintf(n, sizeof(n), "%016llx.tix", (unsigned long long)b[i]);
		unlinkat(j->dfd, n, 0);
	}
	if (rc == 0 && fsync(j->dfd))
		rc = -errno;
	return rc;
}

/*
 * A journal directory no agent writes (its start failed, or the journal
 * is off now) holds the tail too: it is moved aside whole, so that no
 * later start continues it past the cut.  No directory: nothing to do.
 */
static int set_aside(const char *name, uint64_t pos)
{
	char dir[PATH_MAX], to[PATH_MAX + 64];
	struct stat st;

	if (snprintf(dir, sizeof(dir), "%s/%s", sbd.conf.journal_dir,
		     name) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	if (stat(dir, &st) != 0)
		return errno == ENOENT ? 0 : -errno;
	snprintf(to, sizeof(to), "%s.cut-%" PRIu64, dir, pos);
	if (rename(dir, to))
		return -errno;
	sbd_log(SBD_WARN, 0, "%s: journal: no agent writes it; moved aside to "
		"%s, as it holds records past the cut at %" PRIu64, name, to,
		pos);
	return 0;
}

/* One cut at a time: jc[] is read here while another linker restarts
 * its own entry. */
static pthread_mutex_t cut_mu = PTHREAD_MUTEX_INITIALIZER;

/*
 * A returning primary's ring is cut back to pos (rejoin.c): the agent
 * stops (its cursor slot stays), the journal's records from pos on are
 * cleared (they are in the quarantine file already), cut() cuts the
 * ring, and the agent starts again where both now end.  Cleared first:
 * a daemon killed before the ring is cut copies the tail again from the
 * ring, and the next cut clears it again; killed after, its journal and
 * its ring end at the same place.  -EBUSY if a replaying reader holds a
 * segment the cut would change (the agent then goes on as it was).
 */
int sbd_journal_cut(const char *name, uint64_t pos, int (*cut)(void *),
		    void *arg)
{
	struct sbd_chan_conf cc;
	struct jchan *j = NULL;
	uint64_t *b = NULL;
	size_t k = 0, nfds = 0;
	int *fds = NULL, rc;

	pthread_mutex_lock(&cut_mu);
	for (size_t i = 0; i < njc && !j; i++)
		if (jc[i].th_on && !strcmp(jc[i].name, name))
			j = &jc[i];
	if (!j) {
		rc = set_aside(name, pos);
		if (rc == 0)
			rc = cut(arg);
		pthread_mutex_unlock(&cut_mu);
		return rc;
	}
	memset(&cc, 0, sizeof(cc));
	snprintf(cc.name, sizeof(cc.name), "%s", j->name);
	cc.jnl = j->conf;
	cc.group = j->gid;
	cc.attr.mode = j->fmode;
	free_one(j, true);
	j->dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	rc = j->dfd < 0 ? -errno : sb_jlist(j->dir, &b, &k);
	if (rc == 0)
		fds = calloc(k ? k : 1, sizeof(*fds));
	if (rc == 0)
		rc = lock_from(j->dfd, b, k, pos & ~(j->g.seg_size - 1), fds,
			       &nfds);
	if (rc == 0)
		rc = clear_dir_from(j, b, k, pos);
	if (rc) {
		/* The ring is not cut: the agent starts again as it was. */
		sbd_log(SBD_ERR, rc, "%s: journal: cannot clear it from %"
			PRIu64 "%s", name, pos, rc == -EBUSY ? " (a replaying "
			"reader holds it)" : "");
	} else {
		rc = cut(arg);
		if (rc == 0)
			sbd_log(SBD_NOTICE, 0, "%s: journal: cleared from %"
				PRIu64, name, pos);
	}
	for (size_t i = 0; i < nfds; i++)
		close(fds[i]);	/* the locks go with them */
	free(fds);
	free(b);
	if (j->dfd >= 0)
		close(j->dfd);
	j->dfd = -1;
	memset(j, 0, sizeof(*j));
	if (start_one(j, &cc)) {
		sbd_log(SBD_ERR, 0, "%s: journal not started again after the "
			"cut; the channel goes on without it%s", cc.name,
			cc.jnl.ack ? " and acknowledges nothing as persisted"
				   : "");
		STORE(&j->stop, true);
		if (j->cursor)
			shmbus_sub_close(j->cursor);
		j->cursor = NULL;
		if (j->ch) {
			sb_jnl_off(j->ch, cc.jnl.ack);
			sb_sub_journal_release(j->ch);
		}
		free_one(j, false);
	}
	pthread_mutex_unlock(&cut_mu);
	return rc;
}

int sbd_journal_start(void)
{
	size_t n = 0;

	for (size_t i = 0; i < sbd.conf.nchans; i++)
		n += sbd.conf.chans[i].jnl.on;
	jc = calloc(n ? n : 1, sizeof(*jc));
	if (!jc)
		return -1;
	for (size_t i = 0; i < sbd.conf.nchans; i++) {
		const struct sbd_chan_conf *cc = &sbd.conf.chans[i];
		struct jchan *j = &jc[njc];
		int rc;

		if (!cc->jnl.on) {
			/* One that had a journal at the last start: no
			 * longer described as having one. */
			shmbus_channel *ch = shmbus_channel_open(
				sbd.conf.shm_dir, cc->name);

			if (ch) {
				sb_jnl_off(ch, false);
				sb_sub_journal_release(ch);
			}
			shmbus_channel_close(ch);
			continue;
		}
		njc++;
		rc = start_one(j, cc);
		if (rc) {
			/* The channel works without its journal (its cursor
			 * no longer holds producers); a journal that cannot
			 * be trusted is never written. */
			sbd_log(SBD_ERR, rc, "%s: journal not started; the "
				"channel goes on without it%s", cc->name,
				cc->jnl.ack ? " and acknowledges nothing as "
				"persisted" : "");
			STORE(&j->stop, true);
			if (j->cursor)
				shmbus_sub_close(j->cursor);
			j->cursor = NULL;
			if (j->ch) {
				sb_jnl_off(j->ch, cc->jnl.ack);
				sb_sub_journal_release(j->ch);
			}
			free_one(j, false);
		}
	}
	return 0;
}

void sbd_journal_stop(void)
{
	for (size_t i = 0; i < njc; i++)
		if (jc[i].th_on)
			free_one(&jc[i], true);
	free(jc);
	jc = NULL;
	njc = 0;
}
