/* SPDX-License-Identifier: MIT */
/*
 * rejoin.c - a returning primary cuts off its diverged tail
 * (docs/failover.md, "Rejoin").
 *
 * A host that was primary at epoch E and comes back behind a newer
 * primary may hold records past the position where the new primary's
 * epoch began: written here, never acknowledged at a synchronous level,
 * and absent there.  The primary says where (RW_ACCEPT with
 * RW_RESTART_CUT, from its epoch history); this host then
 *
 *   1. closes its ring (SHMBUS_FENCE_CUT), checks that nobody else
 *      uses it (sb_ring_cut_begin()), and cuts its consumer groups
 *      back there (sb_group_cut());
 *   2. writes the records past that position, unchanged, to a quarantine
 *      file (shmbus/quarantine.h), synced, and logs the range;
 *   3. clears its journal from there, cuts its ring there, and starts
 *      its journal again (sbd_journal_cut());
 *   4. catches up from there as any standby does.
 *
 * It never merges, and it never raises its epoch before the cut is made,
 * so that a cut that fails is asked for again at the next link.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "repl_int.h"
#include "shmbus/layout.h"
#include "shmbus/quarantine.h"

/* Group `group` of the channel cut back to the ring's cut: what it took
 * or acknowledged past it is of records the new primary never had.  A
 * non-zero return (why it cannot be) stops sb_group_list(). */
struct gcut {
	shmbus_channel *ch;
	uint64_t pos;
	char *why;
	size_t n;
};

static int group_cut(const char *group, void *arg)
{
	struct gcut *g = arg;
	struct shmbus_group_stats st;
	struct sb_member_info mi[1];
	unsigned nm = 1;
	int rc = sb_group_inspect(g->ch, sbd.conf.shm_dir, group, &st, mi, &nm);

	if (rc == 0 && st.members) {
		snprintf(g->why, g->n, "group %.64s has %u members on this "
			 "host", group, st.members);
		return 1;
	}
	if (rc == 0)
		rc = sb_group_cut(g->ch, sbd.conf.shm_dir, group, g->pos);
	if (rc) {
		snprintf(g->why, g->n, "group %.64s cannot be cut back: %s",
			 group, strerror(-rc));
		return 1;
	}
	return 0;
}

static int64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Writes [from, to) of the ring to the quarantine file (path), synced. */
static int quarantine(struct rchan *rc, uint64_t cut, uint64_t from,
		      uint64_t to, uint64_t epoch, uint64_t new_epoch,
		      char *path, size_t pn)
{
	struct shmbus_quar_hdr *q;
	struct iovec iov[2];
	char dir[PATH_MAX], tmp[PATH_MAX + 8];
	int n, fd, dfd, err;

	if (snprintf(dir, sizeof(dir), "%s/quarantine",
		     sbd.conf.repl.state_dir) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	if (snprintf(path, pn, "%s/%s.%" PRIu64 ".%" PRIu64 "-%" PRIu64 ".q",
		     dir, rc->name, epoch, from, to) >= (int)pn)
		return -ENAMETOOLONG;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	n = sb_ring_span(rc->ch, from, to, iov);
	if (n < 0)
		return n;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->magic = SHMBUS_QUAR_MAGIC;
	q->version = SHMBUS_QUAR_VERSION;
	q->hdr_size = SHMBUS_QUAR_HDR;
	q->from = from;
	q->to = to;
	q->cut = cut;
	q->epoch = epoch;
	q->new_epoch = new_epoch;
	q->capacity = rc->cap;
	q->max_msg = rc->max_msg;
	q->flags = rc->flags;
	q->time_ns = real_ns();
	snprintf(q->channel, sizeof(q->channel), "%s", rc->name);
	q->data_crc = 0;
	for (int i = 0; i < n; i++)
		q->data_crc = sb_crc32c(q->data_crc, iov[i].iov_base,
					iov[i].iov_len);
	q->hdr_crc = sb_crc32c(0, q, offsetof(struct shmbus_quar_hdr,
					      hdr_crc));
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	err = fd < 0 ? -errno : write_all(fd, q, sizeof(*q));
	free(q);
	for (int i = 0; err == 0 && i < n; i++)
		err = write_all(fd, iov[i].iov_base, iov[i].iov_len);
	if (err == 0 && fdatasync(fd))
		err = -errno;
	if (fd >= 0)
		close(fd);
	if (err == 0 && rename(tmp, path))
		err = -errno;
	if (err) {
		unlink(tmp);
		return err;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		if (fsync(dfd))
			err = -errno;
		close(dfd);
	}
	return err;
}

struct cut {
	struct rchan *rc;
	uint64_t pos;
};

static int ring_cut(void *arg)
{
	struct cut *c = arg;

	sb_ring_cut_end(c->rc->ch, c->pos, SHMBUS_FENCE_STANDBY);
	return 0;
}

int rp_rejoin_cut(struct rchan *rc, uint64_t pos, uint64_t epoch,
		  uint64_t new_epoch, char *why, size_t n)
{
	struct gcut g = { rc->ch, pos, why, n };
	struct cut c = { rc, pos };
	struct sb_repl_view v;
	char path[PATH_MAX];
	uint64_t end, from;
	int err;

	why[0] = 0;
	err = sb_ring_cut_begin(rc->ch, pos, &end, why, n);
	if (err)
		return err;
	err = sb_group_list(sbd.conf.shm_dir, rc->name, group_cut, &g);
	if (err < 0 || why[0]) {
		if (err < 0)
			snprintf(why, n, "its groups cannot be listed: %s",
				 strerror(-err));
		sb_ring_cut_abort(rc->ch, SHMBUS_FENCE_STANDBY);
		return -EBUSY;
	}
	from = sb_ring_oldest(rc->ch);
	if (from > pos) {
		struct sb_jnl_view jv;

		/* The tail is longer than the ring holds: its start was
		 * overwritten here.  A journal still has it, and a cut
		 * would destroy it unseen. */
		sb_jnl_read(rc->ch, &jv);
		if (jv.state & SHMBUS_JNL_ON) {
			snprintf(why, n, "the diverged records start at %"
				 PRIu64 ", before the oldest the ring holds (%"
				 PRIu64 "): only the journal has them; rebuild "
				 "this host by hand (docs/failover.md)", pos,
				 from);
			sb_ring_cut_abort(rc->ch, SHMBUS_FENCE_STANDBY);
			return -EXDEV;
		}
		sbd_log(SBD_ERR, 0, "%s: rejoin: records %" PRIu64 "..%" PRIu64
			" of the diverged tail were overwritten in this ring "
			"and are kept nowhere", rc->name, pos, from);
	} else {
		from = pos;
	}
	if (from < end) {
		err = quarantine(rc, pos, from, end, epoch, new_epoch, path,
				 sizeof(path));
		if (err) {
			snprintf(why, n, "the quarantine file: %s",
				 strerror(-err));
			sb_ring_cut_abort(rc->ch, SHMBUS_FENCE_STANDBY);
			return err;
		}
	}
	sb_repl_read(rc->ch, &v);
	if (v.watermark > pos)
		sbd_log(SBD_ERR, 0, "%s: records %" PRIu64 "..%" PRIu64 " were "
			"acknowledged here (a forced promotion, or a degraded "
			"channel) and are not on the new primary", rc->name,
			pos, v.watermark);
	err = sbd_journal_cut(rc->name, pos, ring_cut, &c);
	if (err) {
		snprintf(why, n, "the journal could not be cut: %s",
			 strerror(-err));
		sb_ring_cut_abort(rc->ch, SHMBUS_FENCE_STANDBY);
		return err;
	}
	/* The writer's room was computed from cursors the cut moved. */
	sb_writer_reset(rc->writer);
	if (from < end)
		sbd_log(SBD_WARN, 0, "%s: rejoin: records %" PRIu64 "..%" PRIu64
			" of epoch %" PRIu64 " are not on the new primary "
			"(epoch %" PRIu64 "): moved to %s, and the ring cut "
			"back to %" PRIu64, rc->name, from, end,
			epoch, new_epoch, path, pos);
	else
		sbd_log(SBD_WARN, 0, "%s: rejoin: the ring cut back to %" PRIu64
			" (it no longer held %" PRIu64 "..%" PRIu64 ")",
			rc->name, pos, pos, end);
	return 0;
}
