/* SPDX-License-Identifier: MIT */
/*
 * journal_start.c - the journal's start and stop (docs/journal.md): at
 * start, before the first reap, each journal is checked and recovered (the
 * newest segment walked, its first impossible record and all after it
 * cleared; damage before it said and kept), then the agent (journal.c)
 * takes a cursor slot where the journal ends, so that producers held by
 * the previous daemon's cursor stay held.  A ring that is new while its
 * journal is not (a reboot) continues at the journal's end.  At exit the
 * cursor slot is left held.
 * Also the cut: a returning primary's journal cleared past where its ring
 * is cut back.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "journal_int.h"

static struct jchan *jc;
static size_t njc;

/* ------------------------------------------------------------- recovery */

/* Zeroes [from, the end of segment `base`) of its open file fd: a record
 * that failed, and whatever followed it, can never be read as valid
 * again.  Not synced. */
static int zero_from(struct jchan *j, int fd, uint64_t base, uint64_t from)
{
	static const uint8_t zero[64 << 10];
	off_t off = (off_t)(SHMBUS_JSEG_HDR + (from - base)),
	      end = (off_t)(SHMBUS_JSEG_HDR + j->g.seg_size);
	int rc = 0;

	for (off_t o = off; !rc && o < end; o += (off_t)sizeof(zero)) {
		size_t n = end - o < (off_t)sizeof(zero) ? (size_t)(end - o)
							 : sizeof(zero);
		rc = jnl_write_all(fd, zero, n, o);
	}
	return rc;
}

/*
 * A segment file that could not be opened, read, written or synced (the
 * verb says which): said with its path and the system's reason (errno
 * values such as ENOSPC mean something else to shmbus_strerror(), which
 * the log's errno argument would use), and marked said.  Returns rc.
 */
static int file_failed(struct jchan *j, const char *what, uint64_t base,
		       int rc)
{
	sbd_log(SBD_ERR, 0, "%s: journal: %s %s/%016llx.seg: %s", j->name,
		what, j->dir, (unsigned long long)base, strerror(-rc));
	j->said = true;
	return rc;
}

/* Clears [from, the end of segment `base`), synced; a failure is said. */
static int clear_from(struct jchan *j, uint64_t base, uint64_t from)
{
	char name[64];
	int fd, rc;

	snprintf(name, sizeof(name), "%016llx.seg", (unsigned long long)base);
	fd = openat(j->dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return file_failed(j, "opening", base, -errno);
	rc = zero_from(j, fd, base, from);
	if (rc)
		file_failed(j, "clearing", base, rc);
	else if (fdatasync(fd))
		rc = file_failed(j, "syncing", base, -errno);
	close(fd);
	return rc;
}

/*
 * Writes [from, the end of segment `base`) of the open segment fd again,
 * byte for byte, from what reads back now, so that the next fdatasync()
 * of fd writes it to the device.  A page whose write failed under an
 * earlier daemon stays in the page cache, clean (its error was reported
 * to that daemon's descriptor, never to ours): read back it looks
 * written, and a sync of it alone writes nothing.  Written again, it is
 * dirty: the sync writes it or reports why not, and a page the kernel
 * dropped instead reads back as what the device holds.  Done before the
 * walk, so that what the walk reads is what the sync writes (a clean
 * page could be dropped between the two).
 */
static int rewrite_from(struct jchan *j, int fd, uint64_t base, uint64_t from)
{
	off_t off = (off_t)(SHMBUS_JSEG_HDR + (from - base)),
	      end = (off_t)(SHMBUS_JSEG_HDR + j->g.seg_size);

	while (off < end) {
		size_t n = end - off < (off_t)j->buf_cap ? (size_t)(end - off)
							 : j->buf_cap;
		ssize_t got = pread(fd, j->buf, n, off);
		int rc;

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			break;	/* cut short: the walk ends there */
		rc = jnl_write_all(fd, j->buf, (size_t)got, off);
		if (rc)
			return rc;
		off += got;
	}
	return 0;
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

/* The next sequence number after prev (UINT64_MAX: none, so 0). */
static uint64_t seq_after(uint64_t prev)
{
	return prev == UINT64_MAX ? 0 : prev + 1;
}

/*
 * The sequence number the journal's last message had, when no message is
 * left in its last two segments (a roll just made the newest, and
 * retention took the rest, or they hold only gaps): older segments are
 * read back, newest first, for a message or a header that records the
 * sequence number before it (segments made by older releases record
 * none).  *next is raised to the number after it; false if nothing says.
 */
static bool seq_from_older(struct sb_jreader *r, const uint64_t *b, size_t n,
			   uint64_t *next)
{
	struct sb_jrec rec;

	for (size_t i = n; i-- > 0;) {
		uint64_t lim = b[i] + r->g.seg_size;
		int rc = sb_jreader_seek(r, b[i]);

		while (rc == 0 && (rc = sb_jreader_next(r, lim, &rec)) == 1)
			rc = 0;
		/* Damage ends the read: the messages before it still say
		 * at least this much. */
		if (r->seq != UINT64_MAX && seq_after(r->seq) > *next)
			*next = seq_after(r->seq);
		if (r->seq != UINT64_MAX)
			return true;
		if (rc != -EBADMSG && r->has_prev_seq && r->base == b[i]) {
			if (seq_after(r->prev_seq) > *next)
				*next = seq_after(r->prev_seq);
			return true;
		}
	}
	return false;
}

/*
 * A run of records that carry no sequence number at the journal's end,
 * begun by a gap (GAP records, or segments never made): where it begins
 * (UINT64_MAX: the journal ends otherwise), and the number after the
 * last one before it.  The numbers the gap took were handed out (to live
 * subscribers, to the standby) and may not come again; the journal does
 * not hold them, but no message takes less than SHMBUS_REC_HDR bytes of
 * positions, so the run's length bounds how many there were.
 */
struct tail_gap {
	uint64_t from, next;
};

/* Notes rec, read with r->seq now the last number before it (UINT64_MAX:
 * none) and `next` what the headers say comes at least. */
static void tail_note(struct tail_gap *t, const struct sb_jrec *rec,
		      uint64_t seq, uint64_t next)
{
	if (rec->type == SHMBUS_REC_MSG || rec->type == SHMBUS_REC_SKIP) {
		t->from = UINT64_MAX;
	} else if (rec->type == SHMBUS_JREC_GAP && t->from == UINT64_MAX) {
		t->from = rec->pos;
		t->next = seq_after(seq) > next ? seq_after(seq) : next;
	}
}

/*
 * Checks every segment's header, then recovers the journal's end.  Only
 * the newest segment can hold what a crash tore: rolling syncs the old
 * segment before the new one is named (journal.c, roll()), and no other
 * write reaches an older one.  So the newest is walked from its start,
 * and from its first impossible record on it is cleared.  The segment
 * before it is read too, for the last sequence number when the newest
 * holds no message; damage found there is the media's, not a crash's:
 * said, and kept as it is, as in any older segment (readers get -EBADMSG
 * there, `journal verify` reports it), never cleared with the intact
 * records after it.  The newest segment is written again from the
 * ring's `persisted` position on (from its start if that is older)
 * before it is walked, then synced: what a previous daemon wrote but
 * never synced, or failed to sync, is on the device before it counts as
 * persisted (rewrite_from()).  *end is where the journal ends
 * (UINT64_MAX: empty), *seq the last seq in it (UINT64_MAX: none),
 * *seq_known false if no message nor header says what it was, *oldest
 * its first position, *cont the sequence number a new ring continues
 * from: the one after *seq, or past those a gap at the journal's end
 * took (the header after it records the last when the journal knew it;
 * else the gap's length bounds them, struct tail_gap).
 */
static int recover(struct jchan *j, uint64_t persisted, uint64_t *end,
		   uint64_t *seq, bool *seq_known, uint64_t *oldest,
		   uint64_t *cont)
{
	struct sb_jreader r;
	struct sb_jrec rec;
	struct tail_gap tg = { UINT64_MAX, 0 };
	uint64_t *b, newest, next = 0, hdr_next = 0, start = 0;
	bool known = false, whole = false;
	size_t k;
	int rc, nfd = -1;

	*end = *oldest = UINT64_MAX;
	*seq = UINT64_MAX;
	*cont = 0;
	*seq_known = true;
	remove_spares(j);
	rc = sb_jlist(j->dir, &b, &k);
	if (rc) {
		sbd_log(SBD_ERR, 0, "%s: journal: listing %s: %s", j->name,
			j->dir, strerror(-rc));
		j->said = true;
		return rc;
	}
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
		/* Segments missing where the journal left no gap: removed
		 * by someone else.  Said; the journal goes on (readers get
		 * EBADMSG there, `journal verify` reports it). */
		if (rc == 0 && i && b[i] != b[i - 1] + j->g.seg_size &&
		    r.unmarked_hole)
			sbd_log(SBD_ERR, 0, "%s: journal: segments [%" PRIu64
				", %" PRIu64 ") are missing, and the journal "
				"left no gap there: their records are lost "
				"(removed by hand?); replays get EBADMSG there, "
				"and `shmbusctl journal verify` reports it",
				j->name, b[i - 1] + j->g.seg_size, b[i]);
	}
	if (rc) {
		sbd_log(SBD_ERR, 0, "%s: journal: %s: refused; the journal is "
			"not written until the directory %s is put right",
			j->name, r.why[0] ? r.why : strerror(-rc), j->dir);
		j->said = true;
		sb_jreader_close(&r);
		free(b);
		return -EXDEV;
	}
	newest = b[k - 1];
	if (k >= 2) {
		rc = sb_jreader_seek(&r, b[k - 2]);
		if (rc == 0 && r.has_prev_seq) {
			next = seq_after(r.prev_seq);
			known = true;
		}
		while (rc == 0 && (rc = sb_jreader_next(&r, newest, &rec)) == 1) {
			tail_note(&tg, &rec, r.seq, next);
			rc = 0;
		}
		/* Read to its end: what follows it is known. */
		whole = rc == 0;
		if (rc == -EBADMSG) {
			sbd_log(SBD_ERR, 0, "%s: journal: segment %016llx is "
				"damaged: %s; kept as it is (a crash cannot "
				"tear a segment the journal rolled past): "
				"replays get EBADMSG there, and `shmbusctl "
				"journal verify` reports it", j->name,
				(unsigned long long)b[k - 2], r.why);
			rc = 0;
		}
	}
	if (rc == 0) {
		char name[64];

		snprintf(name, sizeof(name), "%016llx.seg",
			 (unsigned long long)newest);
		nfd = openat(j->dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (nfd < 0) {
			rc = file_failed(j, "opening", newest, -errno);
			goto out;
		}
		/* Any process that maps the ring can write its header: a
		 * position outside the newest segment is not believed (the
		 * whole segment is written again). */
		rc = rewrite_from(j, nfd, newest,
				  persisted < newest ||
						  persisted - newest >
							  j->g.seg_size
					  ? newest
					  : persisted);
		if (rc) {
			file_failed(j, "reading back and writing again",
				    newest, rc);
			goto out;
		}
	}
	if (rc == 0) {
		uint64_t before = r.seq;

		rc = sb_jreader_seek(&r, newest);
		r.seq = before;	/* seqs go on growing across segments */
		/* Segments never made before the newest, or its start past
		 * its base: a gap from where the one before ends. */
		if (rc == 0 && whole && tg.from == UINT64_MAX &&
		    (newest != b[k - 2] + j->g.seg_size || r.start > newest))
			tg = (struct tail_gap){ b[k - 2] + j->g.seg_size,
						seq_after(before) > next ?
							seq_after(before) :
							next };
		if (!whole)
			tg.from = UINT64_MAX;	/* not known */
		start = r.start;
		if (rc == 0 && r.has_prev_seq)
			hdr_next = seq_after(r.prev_seq);
		if (rc == 0 && r.has_prev_seq &&
		    seq_after(r.prev_seq) > next) {
			next = seq_after(r.prev_seq);
			known = true;
		}
	}
	while (rc == 0 && (rc = sb_jreader_next(&r, UINT64_MAX, &rec)) == 1) {
		tail_note(&tg, &rec, r.seq, next);
		rc = 0;
	}
	if (rc < 0) {
		/* Damage the reader describes (why), or an error of the
		 * system's. */
		if (rc == -EBADMSG)
			sbd_log(SBD_ERR, 0, "%s: journal: reading back %s: %s",
				j->name, j->dir, r.why);
		else
			file_failed(j, "reading back",
				    r.fd >= 0 ? r.base : newest, rc);
		j->said = true;
		goto out;
	}
	*end = r.pos;
	if (r.seq != UINT64_MAX && seq_after(r.seq) > next) {
		next = seq_after(r.seq);
		known = true;
	}
	if (r.pos < newest + j->g.seg_size) {
		/* A clean end: nothing written, with nothing written after
		 * it in the segment.  Anything else loses records that may
		 * have been synced: said. */
		bool tail = r.stop != SB_JSTOP_UNWRITTEN ||
			    sb_jreader_written_after(&r);

		if (tail)
			sbd_log(SBD_WARN, 0, "%s: journal: recovered through "
				"%" PRIu64 "; cleared from there on: %s",
				j->name, r.pos, r.why);
		rc = zero_from(j, nfd, newest, r.pos);
		if (rc) {
			file_failed(j, "clearing", newest, rc);
			goto out;
		}
	}
	if (rc == 0 && !known && k >= 3)
		known = seq_from_older(&r, b, k - 2, &next);
	*seq = next ? next - 1 : UINT64_MAX;
	*seq_known = known;
	*cont = next;
	/* The journal ends in a gap: past the numbers it took, as many as
	 * its positions could hold; up to the newest segment's start
	 * exactly, if that segment's header says more than what came
	 * before the gap (it records the last number the gap took). */
	if (rc == 0 && tg.from != UINT64_MAX) {
		uint64_t from = tg.from, after = tg.next, most;

		if (tg.from < start && hdr_next > tg.next) {
			from = start;
			after = hdr_next;
		}
		most = (*end - from) / SHMBUS_REC_HDR;
		if (after + most > *cont && after + most <
						    SHMBUS_JSEG_SEQ_LIMIT)
			*cont = after + most;
	}
	/* What the walk found is on disk before it counts as persisted: a
	 * previous daemon may have died before syncing it.  The newest
	 * segment's sync writes what was written again above. */
	if (rc == 0 && fdatasync(nfd))
		rc = file_failed(j, "syncing", newest, -errno);
	if (rc == 0 && k >= 2) {
		char name[64];
		int fd;

		snprintf(name, sizeof(name), "%016llx.seg",
			 (unsigned long long)b[k - 2]);
		fd = openat(j->dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			if (fdatasync(fd))
				rc = file_failed(j, "syncing", b[k - 2],
						 -errno);
			close(fd);
		}
	}
out:
	if (nfd >= 0)
		close(nfd);
	sb_jreader_close(&r);
	free(b);
	return rc;
}

/* ---------------------------------------------------------------- start */

/* A system call of the start failed: logged with what it was for and
 * the system's reason (strerror(), not shmbus_strerror(): ENOSPC here is
 * the journal's disk, not a slot); returns rc. */
static int __attribute__((format(printf, 3, 4)))
said_sys(struct jchan *j, int rc, const char *fmt, ...)
{
	char what[PATH_MAX + 128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	sbd_log(SBD_ERR, 0, "%s: journal: %s: %s", j->name, what,
		strerror(-rc));
	j->said = true;
	return rc;
}

/* A journal directory's single-writer lock, dir/.lock (made, mode 0600):
 * its fd, to flock(), or -1 (errno). */
static int open_lock(int dfd)
{
	int fd = openat(dfd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW |
				      O_NONBLOCK | O_CLOEXEC, 0600);

	if (fd >= 0)
		fchmod(fd, 0600);
	return fd;
}

/* Starts channel cc's journal in j.  held_lock: the journal directory's
 * lock, already held (a cut's: sbd_journal_cut()), or -1. */
static int start_one(struct jchan *j, const struct sbd_chan_conf *cc,
		     int held_lock)
{
	struct shmbus_channel_info in;
	struct shmbus_sub_stats st;
	struct sb_jnl_view v;
	uint64_t end, seq, oldest, at, head, cont;
	char why[256], real[PATH_MAX];
	int rc, err;
	bool taken, seq_known;

	snprintf(j->name, sizeof(j->name), "%s", cc->name);
	j->conf = cc->jnl;
	j->min_free = sbd.conf.journal_min_free;
	j->fd = j->tix_fd = j->dfd = -1;
	j->lock_fd = held_lock;	/* closed by free_one() whatever happens */
	j->want = j->ready = UINT64_MAX;
	j->seq = j->synced_seq = UINT64_MAX;
	j->unlink_failed = UINT64_MAX;
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
	rc = sb_jgeom_make(&j->g, cc->name,
			   sbd_jnl_segment(&cc->jnl, in.capacity), in.capacity,
			   in.max_msg, sb_channel_flags(in.policy,
							in.producers),
			   why, sizeof(why));
	if (rc) {
		sbd_log(SBD_ERR, 0, "%s: journal: %s", j->name, why);
		j->said = true;
		return rc;
	}
	rc = jnl_mkdir_p(j->dir, j->fmode | ((j->fmode & 0444) >> 2));
	if (rc)
		return said_sys(j, rc, "cannot make the directory %s", j->dir);
	/* Held to shm_dir's rule, as state_dir is: in a directory another
	 * user may write to, that user could put a link in place of the
	 * channel's directory (which the daemon would then chown, chmod and
	 * fill), or swap the segments handed to subscribers. */
	if (sbd_path_is_ours(j->dir) < 0) {
		sbd_log(SBD_ERR, 0, "%s: journal: %s refused (see above); the "
			"journal is not written", j->name, j->dir);
		j->said = true;
		return -EPERM;
	}
	if (!realpath(j->dir, real))
		return said_sys(j, -errno, "cannot resolve %s", j->dir);
	j->dfd = open(real, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (j->dfd < 0)
		return said_sys(j, -errno, "cannot open the directory %s",
				j->dir);
	/* One writer per journal: another daemon of the same config (run
	 * with its own -d and -S, which its socket's and shm_dir's locks do
	 * not catch) or of another bus with this journal_dir would write
	 * its own ring's records at the same positions.  Held on dir/.lock
	 * (mode 0600: the directory is readable by the channel's group,
	 * who could lock it) until free_one() closes it; a daemon killed a
	 * moment ago lets go as its descriptors close. */
	if (j->lock_fd < 0)
		j->lock_fd = open_lock(j->dfd);
	if (j->lock_fd < 0)
		return said_sys(j, -errno, "cannot open %s/.lock", j->dir);
	for (int i = 0; i < 20 && flock(j->lock_fd, LOCK_EX | LOCK_NB) &&
			errno == EWOULDBLOCK; i++)
		usleep(10000);
	if (flock(j->lock_fd, LOCK_EX | LOCK_NB)) {
		rc = -errno;
		sbd_log(SBD_ERR, rc == -EWOULDBLOCK ? 0 : -rc,
			"%s: journal: %s is written by another shmbusd (its "
			"lock is held); the journal is not written", j->name,
			j->dir);
		j->said = true;
		return rc;
	}
	jnl_own(j, j->dfd);
	fchmod(j->dfd, j->fmode | ((j->fmode & 0444) >> 2));
	j->buf_cap = CHUNK;
	if (j->buf_cap > in.capacity / 2 - SHMBUS_REC_ALIGN)
		j->buf_cap = in.capacity / 2 - SHMBUS_REC_ALIGN;
	if (j->buf_cap < 16 + ((uint64_t)in.max_msg + 7) / 8 * 8)
		j->buf_cap = 16 + ((uint64_t)in.max_msg + 7) / 8 * 8;
	j->buf = malloc(j->buf_cap);
	if (!j->buf)
		return -ENOMEM;
	/* The ring's persisted position outlives the daemon (a reboot
	 * empties the ring and the page cache alike): past it, what the
	 * files hold may be pages whose write failed. */
	sb_jnl_read(j->ch, &v);
	rc = recover(j, v.persisted, &end, &seq, &seq_known, &oldest, &cont);
	if (rc)
		return rc;
	head = sb_ring_head(j->ch);
	if (end != UINT64_MAX && end > head) {
		/* The ring is behind its journal: new after a reboot, it
		 * continues where the journal ends; used, it conflicts. */
		rc = sb_ring_continue(j->ch, end, cont);
		if (rc == 0 && !seq_known)
			sbd_log(SBD_WARN, 0, "%s: journal: no message is left "
				"in it and its segments, made by an older "
				"release, do not record the sequence number "
				"before them: the new ring's sequence numbers "
				"start at %" PRIu64 " and may repeat earlier "
				"ones", j->name, cont);
		if (rc == 0 && cont > seq_after(seq))
			sbd_log(SBD_NOTICE, 0, "%s: journal: it ends in a gap "
				"whose sequence numbers it does not hold: the "
				"new ring's start at %" PRIu64 ", past the %"
				PRIu64 " the gap may have taken", j->name,
				cont, cont - seq_after(seq));
		if (rc) {
			sbd_log(SBD_ERR, 0, "%s: journal: the ring (at %" PRIu64
				") is behind its journal (ends at %" PRIu64
				"): positions would repeat; the journal is not "
				"written (move %s aside to start another)",
				j->name, head, end, j->dir);
			j->said = true;
			return -EEXIST;
		}
		sbd_log(SBD_NOTICE, 0, "%s: a new ring continues at %" PRIu64
			", where its journal ends", j->name, end);
	}
	/* The previous daemon's cursor where it is (it held producers while
	 * no daemon ran), or a new one where the journal ends. */
	j->cursor = sb_sub_kept(j->ch, SHMBUS_SLOT_JOURNAL, end, &taken, &err);
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
			   !sb_ring_has_record(j->ch, end) &&
			   sb_committed_end(j->ch, at, end - at) != end) {
			/* Not a record boundary of the ring: neither a
			 * record committed at end, nor the end of the
			 * committed records the journal copied from the
			 * cursor on (a claim may be open at end: still
			 * being written, or its producer killed there and
			 * not repaired yet, repairs coming after this). */
			sbd_log(SBD_ERR, 0, "%s: journal: its end %" PRIu64
				" is not a record of the ring; the journal is "
				"not written", j->name, end);
			j->said = true;
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
	j->seq_known = seq_known;
	j->sync_ns = sb_now_ns();
	if (end == UINT64_MAX) {
		/* A new journal starts at what the ring holds: what came
		 * before it, if anything did, it does not know. */
		j->seq_known = at == 0;
		rc = jnl_new_seg(j, at & ~(j->g.seg_size - 1), at);
		j->pos = j->synced = at;
		oldest = at;
	} else {
		rc = jnl_open_seg(j, end & ~(j->g.seg_size - 1), end);
		if (rc == -ENOENT)	/* it ends where a segment would begin */
			rc = jnl_new_seg(j, end, end);
		/* From end on, whatever lies below the cursor included:
		 * copies are checked against being overwritten, and what the
		 * ring no longer holds becomes a gap. */
		j->pos = j->synced = end;
	}
	if (rc)
		return said_sys(j, rc, "its segment at %" PRIu64 " (%" PRIu64
				" bytes, made in full at once) cannot be "
				"made or opened in %s", j->pos & ~(j->g.seg_size - 1),
				j->g.seg_size, j->dir);
	sb_jnl_written(j->ch, j->pos);
	sb_jnl_persisted(j->ch, j->synced, true);
	sb_jnl_oldest(j->ch, oldest, 0, SHMBUS_JKEEP_RULE);
	jnl_retain(j);
	sbd_log(SBD_INFO, 0, "%s: journal in %s from %" PRIu64 " (fsync %s)",
		j->name, j->dir, j->pos,
		j->conf.fsync == SBD_FSYNC_BATCH ? "batch" :
		j->conf.fsync == SBD_FSYNC_INTERVAL ? "interval" : "none");
	if (pthread_create(&j->prep, NULL, jnl_prep_main, j))
		return -EAGAIN;
	j->prep_on = true;
	jnl_prep_ask(j, j->base + j->g.seg_size);
	if (pthread_create(&j->th, NULL, jnl_agent_main, j))
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
	jnl_close_seg(j);
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
	if (j->lock_fd >= 0)
		close(j->lock_fd);
	j->lock_fd = -1;
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

/*
 * Clears the journal in directory dfd (segments of seg_size) from pos on:
 * later segments removed, newest first, and the removals synced before
 * the segment that holds pos is zeroed from there.  A crash at any point
 * leaves whole segments up to a newest one that may be cleared in part,
 * which recovery reads as a journal that ends there: never a segment
 * cleared in part with intact ones after it, which it reads as damage.
 */
static int clear_dir_from(struct jchan *j, const uint64_t *b, size_t k,
			  uint64_t pos)
{
	uint64_t seg_base = pos & ~(j->g.seg_size - 1);
	bool have = false;
	int rc = 0;

	for (size_t i = k; rc == 0 && i-- > 0 && b[i] >= seg_base;) {
		char n[64];

		if (b[i] == seg_base) {
			have = true;
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
	if (rc == 0 && have)
		rc = clear_from(j, seg_base, pos);
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
	int fd, lfd, rc;

	if (snprintf(dir, sizeof(dir), "%s/%s", sbd.conf.journal_dir,
		     name) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	if (stat(dir, &st) != 0)
		return errno == ENOENT ? 0 : -errno;
	/* Not another daemon's journal at work (its agent holds dir/.lock:
	 * start_one()), which this one may have been refused for.  Not the
	 * directory's own flock(), which the channel's group, who may read
	 * the directory, could hold to keep every cut from happening. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Not made: none, no agent writes it (nothing is made in a
	 * directory this daemon may have refused). */
	lfd = openat(fd, ".lock", O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
				  O_CLOEXEC);
	if (lfd < 0 && errno != ENOENT) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB)) {
		if (lfd >= 0)
			close(lfd);
		close(fd);
		sbd_log(SBD_ERR, 0, "%s: journal: %s, written by another "
			"shmbusd, holds records past the cut at %" PRIu64
			": left as it is", name, dir, pos);
		return -EBUSY;
	}
	snprintf(to, sizeof(to), "%s.cut-%" PRIu64, dir, pos);
	rc = rename(dir, to) ? -errno : 0;
	if (lfd >= 0)
		close(lfd);
	close(fd);
	if (rc)
		return rc;
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
	int *fds = NULL, rc, held;

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
	/* The directory's lock is kept through the cut and the start again
	 * (flock() again on the same open file is a no-op): another daemon
	 * on this directory must not take it meanwhile. */
	held = j->lock_fd;
	j->lock_fd = -1;
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
		sbd_log(SBD_ERR, 0, "%s: journal: cannot clear it from %"
			PRIu64 ": %s", name, pos, rc == -EBUSY ? "a replaying "
			"reader holds it" : strerror(-rc));
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
	if (start_one(j, &cc, held)) {
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
			sb_sub_kept_release(j->ch, SHMBUS_SLOT_JOURNAL);
		}
		free_one(j, false);
	}
	pthread_mutex_unlock(&cut_mu);
	return rc;
}

void sbd_journal_drop(const char *name)
{
	pthread_mutex_lock(&cut_mu);
	for (size_t i = 0; i < njc; i++) {
		struct jchan *j = &jc[i];

		if (!j->th_on || strcmp(j->name, name))
			continue;
		/* Processes that still map the ring are no longer
		 * acknowledged as persisted (they time out); its cursor goes
		 * with it. */
		if (j->ch)
			sb_jnl_off(j->ch, j->conf.ack);
		free_one(j, false);
		sbd_log(SBD_INFO, 0, "%s: journal stopped with its channel "
			"(its files stay in %s)", name, j->dir);
	}
	pthread_mutex_unlock(&cut_mu);
}

void sbd_journal_forget(shmbus_channel *ch)
{
	sb_jnl_off(ch, false);
	sb_sub_kept_release(ch, SHMBUS_SLOT_JOURNAL);
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
			shmbus_channel *ch = shmbus_channel_open(
				sbd.conf.shm_dir, cc->name);

			if (ch)
				sbd_journal_forget(ch);
			shmbus_channel_close(ch);
			continue;
		}
		njc++;
		rc = start_one(j, cc, -1);
		if (rc) {
			/* The channel works without its journal (its cursor
			 * no longer holds producers); a journal that cannot
			 * be trusted is never written.  The reason, if the
			 * start said it, is not repeated as an errno. */
			sbd_log(SBD_ERR, j->said ? 0 : rc, "%s: journal not "
				"started; the channel goes on without it%s",
				cc->name, cc->jnl.ack ? " and acknowledges "
				"nothing as persisted" : "");
			STORE(&j->stop, true);
			if (j->cursor)
				shmbus_sub_close(j->cursor);
			j->cursor = NULL;
			if (j->ch) {
				sb_jnl_off(j->ch, cc->jnl.ack);
				sb_sub_kept_release(j->ch, SHMBUS_SLOT_JOURNAL);
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
