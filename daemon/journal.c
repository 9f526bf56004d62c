/* SPDX-License-Identifier: MIT */
/*
 * journal.c - each journaled channel's agent (docs/journal.md): a
 * subscriber of the ring, in its own thread, that appends the ring's
 * records to segment files at the same positions, syncs them by the
 * channel's policy, publishes how far it wrote and synced in shmbusd's area
 * of the channel's data file, and deletes old segments by the retention
 * rule.  A second thread per channel prepares the next segment (header,
 * zeros, fdatasync) so that rolling is a rename.  The journal's start,
 * recovery and cut are in journal_start.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "journal_int.h"

/* ------------------------------------------------------------ helpers */

static int64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int jnl_write_all(int fd, const void *buf, size_t len, off_t off)
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
void jnl_own(struct jchan *j, int fd)
{
	if (fchown(fd, geteuid(), j->gid >= 0 ? (gid_t)j->gid : (gid_t)-1))
		sbd_log(SBD_WARN, errno, "%s: journal: chown", j->name);
	fchmod(fd, j->fmode);
}

int jnl_mkdir_p(const char *path, mode_t mode)
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
		/* Held to state_dir's rule (sbd_path_is_ours()) before
		 * anything is made in it: a link another user put here would
		 * have the next mkdir() make a directory where it leads. */
		if (sbd_path_is_ours(tmp) < 0)
			return -EPERM;
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

/* The header of the segment at base, starting at start: the sequence
 * number before it recorded if the journal knows it (prev_seq not NULL),
 * which the preparer, making segments ahead, never does. */
static void make_hdr(struct jchan *j, struct shmbus_jseg_hdr *h,
		     uint64_t base, uint64_t start, uint64_t epoch,
		     const uint64_t *prev_seq, bool after_gap)
{
	sb_jseg_hdr_make(h, &j->g, base, start, epoch);
	if (prev_seq)
		sb_jseg_hdr_set_prev_seq(h, *prev_seq);
	if (after_gap)
		sb_jseg_hdr_set_after_gap(h);
}

/* Makes segment file `name` in the directory: the header, zeros for
 * every position, fdatasync.  0 or -errno. */
static int make_file(struct jchan *j, const char *name, uint64_t base,
		     uint64_t start, uint64_t epoch, const uint64_t *prev_seq,
		     bool after_gap)
{
	static const uint8_t zero[64 << 10];
	uint8_t page[SHMBUS_JSEG_HDR] = { 0 };
	struct shmbus_jseg_hdr h;
	int fd, rc = 0;

	fd = openat(j->dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
				  O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	make_hdr(j, &h, base, start, epoch, prev_seq, after_gap);
	memcpy(page, &h, sizeof(h));
	rc = jnl_write_all(fd, page, sizeof(page), 0);
	/* Pre-zeroed: the blocks are allocated now, so that appending
	 * later changes no metadata and fdatasync() writes data only. */
	for (uint64_t o = 0; !rc && o < j->g.seg_size; o += sizeof(zero))
		rc = jnl_write_all(fd, zero, sizeof(zero),
			       (off_t)(SHMBUS_JSEG_HDR + o));
	if (!rc && fdatasync(fd))
		rc = -errno;
	if (!rc)
		jnl_own(j, fd);
	close(fd);
	if (rc)
		unlinkat(j->dfd, name, 0);
	return rc;
}

/* ---------------------------------------------------------- the preparer */

void *jnl_prep_main(void *arg)
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
		rc = make_file(j, name, base, base, epoch_now(j), NULL,
			       false);
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

void jnl_prep_ask(struct jchan *j, uint64_t base)
{
	pthread_mutex_lock(&j->mu);
	j->want = base;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

/* ------------------------------------------------------------- segments */

/* Opens the time index `name` to append to, keeping what a crash left of
 * it up to its first entry that does not check (a torn or damaged one)
 * or that lies at or past `limit` (records recovery removed: a crash
 * lost the segment's unsynced tail, not its index's), so that the entries
 * appended from now on are read.  0, or -errno (-EBADMSG: not a regular
 * file; O_NONBLOCK, so that a FIFO put there never blocks the agent). */
static int tix_open(struct jchan *j, const char *name, uint64_t limit)
{
	struct shmbus_jtix e;
	struct stat st;
	off_t o = 0;
	int64_t ns = INT64_MIN;
	uint64_t pos = 0;
	int fd, rc;

	fd = openat(j->dfd, name, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC |
				  O_NOFOLLOW | O_NONBLOCK, j->fmode);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EBADMSG;
	}
	while (pread(fd, &e, sizeof(e), o) == (ssize_t)sizeof(e) &&
	       e.crc == sb_crc32c(0, &e, 16) && e.ns >= ns && e.pos >= pos &&
	       e.pos >= j->base && e.pos < limit) {
		ns = e.ns;
		pos = e.pos;
		o += (off_t)sizeof(e);
	}
	if (ftruncate(fd, o)) {
		rc = -errno;
		close(fd);
		return rc;
	}
	jnl_own(j, fd);	/* readable as the segments are */
	j->tix_fd = fd;
	if (o) {
		j->tix_pos = pos;
		j->tix_ns = ns;
	}
	return 0;
}

/*
 * The segment's time index.  It is a cache (docs/journal.md): one that
 * cannot be used (not a regular file, not writable) is moved aside, said
 * with its name, and a new one begun; if even that fails, the segment
 * goes without one (lookups by time fall back to earlier entries).  The
 * journal never stops for its index.
 */
static void open_tix(struct jchan *j, uint64_t limit)
{
	char name[64], aside[96];
	int rc, rc2;

	snprintf(name, sizeof(name), "%016llx.tix",
		 (unsigned long long)j->base);
	j->tix_fd = -1;
	j->tix_pos = UINT64_MAX;
	rc = tix_open(j, name, limit);
	if (rc == 0)
		return;
	snprintf(aside, sizeof(aside), ".%016llx.tix.unusable-%lld",
		 (unsigned long long)j->base, (long long)real_ns());
	if (renameat(j->dfd, name, j->dfd, aside)) {
		sbd_log(SBD_ERR, errno, "%s: journal: time index %s/%s "
			"unusable (%s), and not moved aside; segment %016llx "
			"goes without one", j->name, j->dir, name,
			rc == -EBADMSG ? "not a regular file" : strerror(-rc),
			(unsigned long long)j->base);
		return;
	}
	fsync(j->dfd);
	rc2 = tix_open(j, name, limit);
	sbd_log(SBD_WARN, 0, "%s: journal: time index %s/%s unusable (%s): "
		"moved aside to %s; %s", j->name, j->dir, name,
		rc == -EBADMSG ? "not a regular file" : strerror(-rc), aside,
		rc2 == 0 ? "a new one is begun" : "no new one either: the "
		"segment goes without one");
}

void jnl_close_seg(struct jchan *j)
{
	if (j->fd >= 0)
		close(j->fd);
	if (j->tix_fd >= 0)
		close(j->tix_fd);
	j->fd = j->tix_fd = -1;
}

int jnl_open_seg(struct jchan *j, uint64_t base, uint64_t end)
{
	struct shmbus_jseg_hdr h;
	char name[64];

	snprintf(name, sizeof(name), "%016llx.seg", (unsigned long long)base);
	j->io_base = base;
	j->fd = openat(j->dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (j->fd < 0)
		return -errno;
	j->base = base;
	/* Checked at start (recovery) or made by us. */
	j->seg_version = pread(j->fd, &h, sizeof(h), 0) == sizeof(h) ?
				 h.version : SHMBUS_JSEG_VERSION;
	open_tix(j, end);
	return 0;
}

/* The segment for `base`, starting at `start`: the preparer's spare if
 * it made that one, else made now.  Named last (rename, then the
 * directory synced), so that a segment file always has its header, and
 * that header records the sequence number before the segment (known
 * now, not when the spare was made) whenever the journal knows it. */
int jnl_new_seg(struct jchan *j, uint64_t base, uint64_t start)
{
	char spare[64], name[64];
	uint64_t epoch = epoch_now(j);
	const uint64_t *prev_seq = j->seq_known ? &j->seq : NULL;
	bool have = false;
	int rc;

	j->io_base = base;
	/* After a gap, the last number it took: a ring made again after a
	 * reboot where the journal ends here hands none of them out again
	 * (journal_start.c, recover()). */
	if (j->after_gap && j->gap_seq_known)
		prev_seq = &j->gap_seq;

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
		/* Made ahead under the epoch of then, without the sequence
		 * number: its header is made again, and synced before the
		 * segment is named (the segment before it is already). */
		struct shmbus_jseg_hdr h;
		int fd = openat(j->dfd, spare, O_RDWR | O_CLOEXEC | O_NOFOLLOW);

		if (fd < 0 || pread(fd, &h, sizeof(h), 0) != sizeof(h)) {
			have = false;
		} else if (h.epoch != epoch || prev_seq || j->after_gap) {
			make_hdr(j, &h, base, start, epoch, prev_seq,
				 j->after_gap);
			if (jnl_write_all(fd, &h, sizeof(h), 0) || fdatasync(fd))
				have = false;
		}
		if (fd >= 0)
			close(fd);
	}
	if (!have) {
		rc = make_file(j, spare, base, start, epoch, prev_seq,
			       j->after_gap);
		if (rc)
			return rc;
	}
	if (renameat(j->dfd, spare, j->dfd, name) || fsync(j->dfd))
		return -errno;
	rc = jnl_open_seg(j, base, 0);	/* a new segment: no index yet */
	if (rc)
		return rc;
	jnl_prep_ask(j, base + j->g.seg_size);
	return 0;
}

/* ------------------------------------------------------------ retention */

void jnl_retain(struct jchan *j)
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
		if (unlinkat(j->dfd, name, 0)) {
			/* Said once per segment; the older ones stay, so
			 * that readers never find a hole before them. */
			if (b[i] != j->unlink_failed)
				sbd_log(SBD_ERR, errno, "%s: journal: segment "
					"%016llx not removed", j->name,
					(unsigned long long)b[i]);
			j->unlink_failed = b[i];
			close(fd);
			break;
		}
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
		/* The removals on disk before the new oldest is said; with
		 * none, nothing to sync (this runs ten times a second). */
		if (i > 0)
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
	j->io_base = j->base;
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
		/* Everything before the newest segment is on disk before
		 * the newest is named: recovery clears only in the newest. */
		rc = sync_now(j);
		if (rc)
			return rc;
		jnl_close_seg(j);
	}
	rc = jnl_new_seg(j, base, start);
	if (rc)
		return rc;
	jnl_retain(j);
	return 0;
}

/* Seals and writes records of the word alone over [from, to) (within one
 * segment): PAD for the ring's padding, SHMBUS_JREC_GAP for a range the
 * journal never had. */
static int write_pads(struct jchan *j, uint64_t from, uint64_t to,
		      uint32_t type)
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
		word = (uint64_t)type << SHMBUS_LEN_BITS |
		       (k - SHMBUS_REC_ALIGN);
		memcpy(w, &word, 8);
		sb_jrec_seal(w, p);
		rc = jnl_write_all(j->fd, w, 8,
			       (off_t)(SHMBUS_JSEG_HDR + (p - j->base)));
		if (rc)
			return rc;
		p += k;
	}
	return 0;
}

/* The last sequence number a gap up to `to` took: the one before the
 * first message the ring holds at `to` (none: UINT64_MAX).  False if no
 * message is there now (padding, or lapped again) or its number is not
 * possible after what the journal holds. */
static bool gap_last_seq(struct jchan *j, uint64_t to, uint64_t *seq)
{
	uint64_t s;

	if (!sb_ring_seq_at(j->ch, to, &s) || s >= SHMBUS_JSEG_SEQ_LIMIT ||
	    s >= sb_ring_next_seq(j->ch) ||
	    (j->seq != UINT64_MAX && s <= j->seq))
		return false;
	*seq = s ? s - 1 : UINT64_MAX;
	return true;
}

/* The journal lacks [j->pos, to): padding to its segment's end, and a
 * segment that starts at `to`, whose header records the last sequence
 * number the gap took when the ring still shows it. */
static int gap(struct jchan *j, uint64_t to)
{
	uint64_t end = j->base + j->g.seg_size;
	int rc;

	j->io_base = j->base;
	/* Counted always (busstat's journal gaps); said at most once a
	 * second: a producer that outruns the journal makes hundreds. */
	sbd_log_limited(&j->rl_gap, SBD_WARN, ++j->gaps, "journal gaps",
			"%s: journal: gap [%" PRIu64 ", %" PRIu64 "): the ring "
			"no longer held it", j->name, j->pos, to);
	sb_jnl_count(j->ch, 0, 1, to - j->pos);
	/* Before anything after it is acknowledged: a sync waiter with
	 * records in it is told SHMBUS_SYNC_DEGRADED, never 0. */
	if (j->conf.ack)
		sb_repl_hole(j->ch, j->pos, to);
	/* An older daemon's segment, continued: no GAP records in it, which
	 * that daemon could not read (a gap is padding there, format 1). */
	rc = write_pads(j, j->pos, to < end ? to : end,
			j->seg_version < 2 ? SHMBUS_REC_PAD : SHMBUS_JREC_GAP);
	if (rc)
		return rc;
	if (to < end) {
		j->pos = to;
		return 0;
	}
	j->pos = end;
	/* The segments up to to's are never made: the next one says so. */
	j->after_gap = true;
	j->gap_seq_known = gap_last_seq(j, to, &j->gap_seq);
	rc = roll(j, to);
	j->after_gap = j->gap_seq_known = false;
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

	if (j->tix_fd < 0 || (j->tix_pos != UINT64_MAX && pos >= j->tix_pos &&
			      pos - j->tix_pos < SHMBUS_JTIX_EVERY))
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
	/* A standby's ring (the fence closed): its agent, which no cursor
	 * holds back there, moves head past a lap when the primary no
	 * longer holds what it lacks (sb_apply_restart()), indexing the new
	 * head only: such a lap is a gap, as it always was. */
	bool applied = sb_fence_get(j->ch) != SHMBUS_FENCE_OPEN;
	/* The journal's cursor holds a block channel's producers a lap
	 * behind j->pos, unless it is behind it (after a host crash lost
	 * the journal's tail, the ring may have gone on). */
	bool held = j->held <= j->pos;
	uint64_t oldest;
	char why[256];
	int rc;

	if (sb_ring_damage(j->ch, j->pos, NULL, why, sizeof(why)) ||
	    sb_head_damage(j->ch, j->pos, held, applied, why, sizeof(why)))
		return damaged(j, "%s", why);
	if (sb_ring_holds(j->ch, j->pos))
		return 0;	/* a claim not committed yet */
	oldest = sb_ring_oldest(j->ch);
	if (oldest <= j->pos)
		return 0;
	rc = gap(j, oldest);
	if (rc)
		return rc;
	hold(j);
	sb_jnl_written(j->ch, j->pos);
	return 1;
}

/* The type the journal writes for a ring record of the word alone: the
 * ring's own, except a gap in a format-1 segment (an older daemon's,
 * continued), which has no GAP records. */
static uint32_t pad_type(const struct jchan *j, uint32_t ring_type)
{
	return j->seg_version < 2 ? SHMBUS_REC_PAD : ring_type;
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
	j->io_base = j->base;
	most = seg_end - j->pos;
	if (most > j->buf_cap)
		most = j->buf_cap;
	end = sb_committed_end(j->ch, j->pos, most);
	if (end == j->pos || end - j->pos > j->buf_cap) {
		/* Padding longer than the buffer (a batch's wrap, a repair, a
		 * standby's restart): its word is all there is to write. */
		uint32_t type = SHMBUS_REC_PAD;
		uint64_t pad = sb_ring_pad_at(j->ch, j->pos, &type);

		if (pad > j->buf_cap ||
		    (pad && end - j->pos > j->buf_cap)) {
			if (j->pos + pad > seg_end)
				return -EBADMSG;	/* cannot be */
			rc = write_pads(j, j->pos, j->pos + pad,
					pad_type(j, type));
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
	if (!rc && f.extent != len) {
		/* A word alone where the walk found a record of 8 bytes:
		 * written over since. */
		snprintf(why, sizeof(why), "the record at %" PRIu64 " changed "
			 "while it was copied", j->pos);
		rc = -EBADMSG;
	}
	if (!rc && f.last_pos != UINT64_MAX &&
	    f.last_seq >= sb_ring_next_seq(j->ch)) {
		/* A sequence number no producer has handed out, written
		 * since the walk (which checks it too). */
		snprintf(why, sizeof(why), "sequence %" PRIu64 " at %" PRIu64
			 ", and the channel's next is %" PRIu64, f.last_seq,
			 f.last_pos, sb_ring_next_seq(j->ch));
		rc = -EBADMSG;
	}
	if (rc) {
		sbd_log_limited(&j->rl, SBD_ERR, ++j->errors, "journal errors",
				"%s: journal: the ring is damaged at %" PRIu64
				": %s", j->name, j->pos, why);
		return rc;
	}
	first = true;
	for (o = 0; o < len;) {
		uint64_t w, size, s;
		uint32_t type;
		bool pad;

		/* Checked above (sb_apply_check()). */
		memcpy(&w, j->buf + o, 8);
		type = (uint32_t)(w >> SHMBUS_LEN_BITS) & 7u;
		pad = SHMBUS_REC_WORD_ONLY(type);
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
		else if (pad_type(j, type) != type) {
			w = (w & ~((uint64_t)7 << SHMBUS_LEN_BITS)) |
			    (uint64_t)pad_type(j, type) << SHMBUS_LEN_BITS;
			memcpy(j->buf + o, &w, 8);
		}
		sb_jrec_seal(j->buf + o, j->pos + o);
		o += size;
	}
	rc = jnl_write_all(j->fd, j->buf, len,
		       (off_t)(SHMBUS_JSEG_HDR + (j->pos - j->base)));
	if (rc)
		return rc;
	tix_note(j, j->pos);
	j->pos = end;
	if (f.last_pos != UINT64_MAX) {
		j->seq = f.last_seq;
		j->seq_known = true;
	}
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

void *jnl_agent_main(void *arg)
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
			jnl_retain(j);
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
				/* A system call's failure names its file (the
				 * ring's damage is said where it is found). */
				if (rc == -EBADMSG || rc == -EMSGSIZE)
					sbd_log_limited(&j->rl, SBD_ERR,
							++j->errors,
							"journal errors",
							"%s: journal: %s at %"
							PRIu64 "; retrying",
							j->name, strerror(-rc),
							j->pos);
				else
					sbd_log_limited(&j->rl, SBD_ERR,
							++j->errors,
							"journal errors",
							"%s: journal: %s/"
							"%016llx.seg: %s at %"
							PRIu64 "; retrying",
							j->name, j->dir,
							(unsigned long long)
								j->io_base,
							strerror(-rc), j->pos);
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
