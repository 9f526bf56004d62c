/* SPDX-License-Identifier: MIT */
/*
 * replay.c - a subscriber that starts in the past (shmbus_replay_*):
 * it reads the channel's journal, checking every record, up to what the
 * journal agent says it wrote (A25), and moves to the ring at the same
 * position as soon as the ring can be held there (sb_sub_open_at()).
 * Positions are the same in both, so the switch is a comparison: no gap,
 * no duplicate.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "channel.h"
#include "contract.h"
#include "journal.h"

struct shmbus_replay {
	shmbus_channel *ch;
	struct shmbus_sub_attr attr;
	shmbus_sub *sub;	/* once in the ring */
	struct sb_jreader r;	/* while in the journal */
	bool reading;		/* r is open */
	uint64_t next_seq;	/* UINT64_MAX: not known yet */
	uint64_t from_journal, delivered, lost;
};

/* Moves to the ring at the reader's position if the ring can be held
 * there: true if it did. */
static bool try_ring(struct shmbus_replay *rp, uint64_t pos)
{
	int err;

	/* What the journal knew goes on: the sequence number due, and
	 * whether it had just passed a gap. */
	rp->sub = sb_sub_open_at(rp->ch, &rp->attr, pos, rp->next_seq,
				 rp->reading && rp->r.gap, &err);
	if (!rp->sub)
		return false;
	if (rp->reading)
		sb_jreader_close(&rp->r);
	rp->reading = false;
	return true;
}

/* Where the journal's files come from: through shmbusd when the channel
 * was opened through it (the files are handed out under the channel's
 * subscribe rule, whatever their modes), else the directory the header
 * names.  -ERANGE if the channel has no journal. */
static int reader_init(struct shmbus_replay *rp, const struct sb_jnl_view *v)
{
	if (!(v->state & SHMBUS_JNL_ON) || v->seg_log2 < 16 ||
	    v->seg_log2 > 30)
		return -ERANGE;		/* no journal to read it from */
	if (rp->ch->bus)
		return sb_jreader_init_bus(&rp->r, rp->ch->bus, rp->ch->name,
					   NULL);
	if (v->dir[0] != '/' || strstr(v->dir, "/../"))
		return -ERANGE;
	return sb_jreader_init(&rp->r, v->dir, NULL);
}

static int journal_open(struct shmbus_replay *rp, const struct sb_jnl_view *v,
			uint64_t pos)
{
	struct shmbus_channel_info in;
	struct sb_jgeom g;
	char why[256];
	uint64_t *b = NULL;
	size_t k = 0;
	int rc;

	rc = reader_init(rp, v);
	if (rc)
		return rc;
	shmbus_channel_info(rp->ch, &in);
	rc = sb_jgeom_make(&g, "", UINT64_C(1) << v->seg_log2, in.capacity,
			   in.max_msg, sb_channel_flags(in.policy, in.producers),
			   why, sizeof(why));
	if (rc) {
		sb_jreader_close(&rp->r);
		return -EXDEV;
	}
	/* The journal's first segment says which channel it belongs to; all
	 * the others must say the same (sb_jreader's check). */
	rc = sb_jreader_list(&rp->r, &b, &k);
	if (rc == -ENOENT)
		rc = -ERANGE;
	if (!rc)
		rc = k ? sb_jreader_seek(&rp->r, b[0]) : -ERANGE;
	/* The directory is named by the header, which every process that
	 * may subscribe can write: the segments must name this channel,
	 * with its geometry (every later one is checked the same). */
	if (!rc && (rp->r.g.capacity != g.capacity ||
		    rp->r.g.max_msg != g.max_msg || rp->r.g.flags != g.flags ||
		    rp->r.g.seg_size != g.seg_size ||
		    /* (a name of 64 or more characters: its first 63) */
		    strncmp(rp->r.g.channel, rp->ch->name,
			    sizeof(rp->r.g.channel) - 1)))
		rc = -EXDEV;
	if (!rc && pos < rp->r.start)
		rc = -ERANGE;	/* removed by retention, or never had */
	free(b);
	if (!rc)
		rc = sb_jreader_seek(&rp->r, pos);
	if (rc) {
		sb_jreader_close(&rp->r);
		return rc == -ENOENT ? -ERANGE : rc;
	}
	rp->reading = true;
	return 0;
}

/* The sequence number after the last message (or skip) that pos's
 * segment holds before pos, reading it from its start; UINT64_MAX if it
 * holds none there.  Leaves the reader anywhere. */
static uint64_t seq_after(struct shmbus_replay *rp, uint64_t pos)
{
	uint64_t seq = UINT64_MAX;
	struct sb_jrec rec;

	if (sb_jreader_seek(&rp->r, pos & ~(rp->r.g.seg_size - 1)))
		return UINT64_MAX;
	while (sb_jreader_next(&rp->r, pos, &rec) == 1)
		if (rec.type == SHMBUS_REC_MSG || rec.type == SHMBUS_REC_SKIP)
			seq = rec.seq;
	return seq == UINT64_MAX ? seq : seq + 1;
}

SHMBUS_EXPORT shmbus_replay *shmbus_replay_open(shmbus_channel *ch,
						enum shmbus_replay_from from,
						uint64_t at,
						const struct shmbus_sub_attr *a)
{
	struct shmbus_replay *rp;
	struct sb_jnl_view v;
	uint64_t pos = at;
	int rc;

	if (!ch || (from != SHMBUS_REPLAY_POSITION &&
		    from != SHMBUS_REPLAY_TIME) ||
	    (a && a->wait > SHMBUS_WAIT_SLEEP)) {
		errno = EINVAL;
		return NULL;
	}
	rp = calloc(1, sizeof(*rp));
	if (!rp) {
		errno = ENOMEM;
		return NULL;
	}
	rp->ch = ch;
	rp->next_seq = UINT64_MAX;
	if (a)
		rp->attr = *a;
	else
		shmbus_sub_attr_init(&rp->attr);
	sb_jnl_read(ch, &v);
	if (from == SHMBUS_REPLAY_TIME) {
		rc = reader_init(rp, &v);
		if (rc)
			goto fail;
		rc = sb_jtime_find_r(&rp->r, (int64_t)at, &pos);
		sb_jreader_close(&rp->r);
		if (rc == -ENOENT) {
			/* No index to go by: all the journal holds. */
			pos = v.oldest;
			rc = 0;
		}
		if (rc)
			goto fail;
	}
	if (pos % SHMBUS_REC_ALIGN) {
		rc = -EINVAL;
		goto fail;
	}
	if (pos > v.head && pos > v.written) {
		rc = -ERANGE;
		goto fail;
	}
	/* The ring first: it may still hold the position. */
	if (try_ring(rp, pos))
		return rp;
	rc = journal_open(rp, &v, pos);
	if (rc)
		goto fail;
	if (rp->r.pos < v.written) {
		/* The position must be a record's: look at it once. */
		struct sb_jrec rec;
		uint64_t skipped = rp->r.skipped;

		rc = sb_jreader_next(&rp->r, v.written, &rec);
		if (rc < 0) {
			sb_jreader_close(&rp->r);
			if (rc == -EBADMSG)
				rc = -EINVAL;
			goto fail;
		}
		/* Starting on padding or a gap, the first message's `lost`
		 * counts from the message before: from the channel's first
		 * sequence number at position 0, else from what the segment
		 * holds before pos. */
		if (rc == 1 && rec.type != SHMBUS_REC_MSG &&
		    rec.type != SHMBUS_REC_SKIP)
			rp->next_seq = pos ? seq_after(rp, pos) : 0;
		rc = sb_jreader_seek(&rp->r, pos);
		if (rc) {
			sb_jreader_close(&rp->r);
			goto fail;
		}
		rp->r.skipped = skipped;
		rp->r.gap = false;
	}
	return rp;
fail:
	free(rp);
	errno = -rc;
	return NULL;
}

SHMBUS_EXPORT void shmbus_replay_close(shmbus_replay *rp)
{
	if (!rp)
		return;
	if (rp->sub)
		shmbus_sub_close(rp->sub);
	if (rp->reading)
		sb_jreader_close(&rp->r);
	free(rp);
}

/* Counts what a ring handler sees, then passes it on. */
struct ring_ctx {
	struct shmbus_replay *rp;
	shmbus_handler fn;
	void *arg;
};

static int ring_msg(const struct shmbus_msg *m, void *arg)
{
	struct ring_ctx *c = arg;

	c->rp->delivered++;
	c->rp->lost += m->lost;
	return c->fn(m, c->arg);
}

/* From the journal; `ring`: and on from the ring if it moves there. */
static int journal_poll(struct shmbus_replay *rp, shmbus_handler fn,
			void *arg, unsigned max, bool ring)
{
	struct ring_ctx c = { rp, fn, arg };
	struct sb_jnl_view v;
	unsigned n = 0;
	int rc;

	/* A25: the files hold everything below written. */
	sb_jnl_read(rp->ch, &v);
	while (n < max) {
		struct sb_jrec rec;
		struct shmbus_msg m;

		rc = sb_jreader_next(&rp->r, v.written, &rec);
		if (rc < 0)
			return n ? (int)n : rc;
		if (rc == 0) {
			/* Where the journal ends: the ring, if it can be
			 * held here; else the journal has gone on. */
			if (try_ring(rp, rp->r.pos)) {
				if (n || !ring)
					return (int)n;
				return shmbus_poll(rp->sub, ring_msg, &c, max);
			}
			if (!(v.state & SHMBUS_JNL_ON))
				return n ? (int)n : -ERANGE;
			return (int)n;
		}
		if (SHMBUS_REC_WORD_ONLY(rec.type))
			continue;
		m = (struct shmbus_msg){ .data = rec.data, .len = rec.len,
					 .seq = rec.seq, .pos = rec.pos };
		/* Lost: sequence numbers skipped where the journal lacks
		 * positions.  Not those a claim took whose producer died
		 * before it wrote (padded: no message ever had them), as a
		 * subscriber of the ring does not count them either (in
		 * format 1, which wrote gaps as padding, they count). */
		if (rp->next_seq != UINT64_MAX && rec.seq > rp->next_seq &&
		    rp->r.gap)
			m.lost = rec.seq - rp->next_seq;
		rp->r.gap = false;
		rp->next_seq = rec.seq + 1;
		if (rec.type != SHMBUS_REC_MSG)
			continue;
		rp->lost += m.lost;
		rp->delivered++;
		rp->from_journal++;
		n++;
		if (fn(&m, arg))
			break;
	}
	return (int)n;
}

SHMBUS_EXPORT int shmbus_replay_poll(shmbus_replay *rp, shmbus_handler fn,
				     void *arg, unsigned max)
{
	struct ring_ctx c = { rp, fn, arg };

	if (!rp || !fn)
		return -EINVAL;
	if (!max)
		max = UINT32_MAX;
	if (rp->sub)
		return shmbus_poll(rp->sub, ring_msg, &c, max);
	return journal_poll(rp, fn, arg, max, true);
}

struct read_ctx {
	void *buf;
	size_t cap;
	struct shmbus_msg *info;
	ssize_t rc;
};

static int read_one(const struct shmbus_msg *m, void *arg)
{
	struct read_ctx *r = arg;

	if (m->len > r->cap) {
		r->rc = -EMSGSIZE;
		return 1;
	}
	memcpy(r->buf, m->data, m->len);
	if (r->info) {
		*r->info = *m;
		r->info->data = r->buf;
	}
	r->rc = m->len;
	return 1;
}

static ssize_t ring_read(struct shmbus_replay *rp, void *buf, size_t cap,
			 struct shmbus_msg *info)
{
	struct shmbus_msg m;
	ssize_t n = shmbus_read(rp->sub, buf, cap, &m);

	if (n >= 0) {
		rp->delivered++;
		rp->lost += m.lost;
		if (info)
			*info = m;
	}
	return n;
}

SHMBUS_EXPORT ssize_t shmbus_replay_read(shmbus_replay *rp, void *buf,
					 size_t cap, struct shmbus_msg *info)
{
	struct read_ctx c = { buf, cap, info, -EAGAIN };
	uint64_t pos, seq, next, lost, skipped;
	bool gap;
	int rc;

	if (!rp || (!buf && cap))
		return -EINVAL;
	if (rp->sub)
		return ring_read(rp, buf, cap, info);
	pos = rp->r.pos;
	seq = rp->r.seq;
	next = rp->next_seq;
	lost = rp->lost;
	gap = rp->r.gap;
	skipped = rp->r.skipped;
	rc = journal_poll(rp, read_one, &c, 1, false);
	if (rc < 0)
		return rc;
	if (rc == 0 && rp->sub)
		return ring_read(rp, buf, cap, info);	/* just moved there */
	if (c.rc == -EMSGSIZE) {
		/* Not delivered: it stays the next one (the reader may have
		 * moved to the next segment on its way to it, or past a
		 * missing one: it passes it again, and says so again). */
		rp->r.gap = gap;
		rp->r.skipped = skipped;
		rc = sb_jreader_back(&rp->r, pos);
		if (rc)
			return rc;
		rp->r.seq = seq;
		rp->next_seq = next;
		rp->lost = lost;
		rp->delivered--;
		rp->from_journal--;
	}
	return c.rc;
}

SHMBUS_EXPORT int shmbus_replay_wait(shmbus_replay *rp, int64_t timeout_ns)
{
	int64_t deadline;

	if (!rp)
		return -EINVAL;
	deadline = timeout_ns < 0 ? INT64_MAX : sb_after(sb_now_ns(), timeout_ns);
	for (;;) {
		struct sb_jnl_view v;
		int64_t now;

		if (rp->sub) {
			now = sb_now_ns();
			return shmbus_wait(rp->sub, deadline == INT64_MAX ? -1 :
						    deadline > now ? deadline - now : 0);
		}
		sb_jnl_read(rp->ch, &v);
		if (rp->r.pos < v.written)
			return 0;
		if (try_ring(rp, rp->r.pos))
			continue;
		now = sb_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		{
			struct timespec ts = { 0, 1000000 };

			if (nanosleep(&ts, NULL))
				return -EINTR;
		}
	}
}

SHMBUS_EXPORT int shmbus_replay_stats(shmbus_replay *rp,
				      struct shmbus_replay_stats *st)
{
	struct shmbus_sub_stats ss;

	if (!rp || !st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	if (rp->sub) {
		shmbus_sub_stats(rp->sub, &ss);
		st->pos = ss.pos;
		st->in_ring = 1;
	} else {
		st->pos = rp->r.pos;
	}
	st->from_journal = rp->from_journal;
	st->delivered = rp->delivered;
	st->lost = rp->lost;
	return 0;
}
