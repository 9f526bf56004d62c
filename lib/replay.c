/* SPDX-License-Identifier: MIT */
/*
 * replay.c - a subscriber that starts in the past (shmbus_replay_*):
 * it reads the channel's journal, checking every record, up to what the
 * journal agent says it wrote (A25), and moves to the ring at the same
 * position as soon as the ring can be held there (sb_sub_open_at()).
 * Positions are the same in both, so the switch is a comparison: no gap,
 * no duplicate.  In the ring it knows the sequence number due, so that a
 * lap there (an overwrite channel) shows; it then goes back to the
 * journal where the ring left off, if the journal holds that.
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
	uint64_t ring_next;	/* in the ring: the position after the last
				 * message it delivered (where it entered) */
	bool lapped;		/* the ring lapped it: back to the journal */
	bool ahead;		/* in the journal past what it wrote when
				 * opened there, no record read since */
	uint64_t from_journal, delivered, lost;
};

static int journal_open(struct shmbus_replay *rp, const struct sb_jnl_view *v,
			uint64_t pos);

/* Moves to the ring at the reader's position if the ring can be held
 * there: true if it did. */
static bool try_ring(struct shmbus_replay *rp, uint64_t pos, int *why)
{
	uint64_t next = rp->next_seq;
	struct sb_jnl_view v;
	int err;

	/* A subscriber counts what a lap takes from it against the
	 * sequence number due: the journal's, or else the message's at pos.
	 * Without either, the journal is read on (it delivers a message
	 * first), unless there is none. */
	sb_jnl_read(rp->ch, &v);
	if (next == UINT64_MAX && (v.state & SHMBUS_JNL_ON) &&
	    !sb_ring_seq_at(rp->ch, pos, &next))
		return false;
	/* What the journal knew goes on: the sequence number due, and
	 * whether it had just passed a gap. */
	rp->sub = sb_sub_open_at(rp->ch, &rp->attr, pos, next,
				 rp->reading && rp->r.gap, &err);
	if (!rp->sub) {
		if (why)
			*why = err;
		return false;
	}
	if (rp->reading)
		sb_jreader_close(&rp->r);
	rp->reading = false;
	rp->ahead = false;
	rp->ring_next = pos;
	return true;
}

/* A message of the ring told of a loss: if the ring lapped us (it no
 * longer holds where we were: not GAP records, which the journal has as
 * they are), whether the journal, opened where the ring left off, holds
 * what the lap took; else the loss stands, and the ring goes on.  The
 * journal holds it only if it wrote it, and a record starts there: past
 * what it wrote, the lap took it from the journal's agent too, which
 * records it as a gap from where the agent was (a GAP word where each of
 * its records starts, zeros between them); and a position it wrote may
 * lie inside such a gap, from an earlier lap of the agent.
 * The ring's subscriber is then closed by the caller. */
static bool journal_again(struct shmbus_replay *rp)
{
	struct sb_jnl_view v;
	struct sb_jrec rec;
	uint64_t skipped;
	int rc;

	if (sb_ring_holds(rp->ch, rp->ring_next))
		return false;
	/* A25: the files hold everything below written. */
	sb_jnl_read(rp->ch, &v);
	if (!(v.state & SHMBUS_JNL_ON) || rp->ring_next < v.oldest ||
	    rp->ring_next >= v.written ||
	    journal_open(rp, &v, rp->ring_next))
		return false;
	/* Looked at once, then read again from there.  Zeros there (inside
	 * a gap, or padding) start no record: the loss stands.  What the
	 * look passed is forgotten; what the seek passes is not: a segment
	 * that starts past the position (the journal resumed past a gap
	 * there) is a loss, counted at its first message. */
	skipped = rp->r.skipped;
	rc = sb_jreader_next(&rp->r, v.written, &rec);
	rp->r.skipped = skipped;
	rp->r.gap = false;
	if (rc == 1 || (rc < 0 && rp->r.stop != SB_JSTOP_UNWRITTEN))
		rc = sb_jreader_seek(&rp->r, rp->ring_next);
	else
		rc = -EBADMSG;
	if (rc) {
		sb_jreader_close(&rp->r);
		rp->reading = false;
		return false;
	}
	return true;
}

static void leave_ring(struct shmbus_replay *rp)
{
	shmbus_sub_close(rp->sub);
	rp->sub = NULL;
	rp->lapped = false;
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
	 * the others must say the same (sb_jreader's check).  Retention may
	 * remove the oldest between the listing and the look: listed again
	 * (ENOENT from the look means that, and only that). */
	for (int tries = 0;; tries++) {
		rc = sb_jreader_list(&rp->r, &b, &k);
		if (rc == -ENOENT)
			rc = -ERANGE;
		if (!rc)
			rc = k ? sb_jreader_seek(&rp->r, b[0]) : -ERANGE;
		if (rc != -ENOENT || tries == 8)
			break;
		free(b);
		b = NULL;
	}
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

/* Whether pos, at or past where the journal's files end (a record
 * boundary), starts no record of the ring: the walk from there over
 * committed records passes it.  False where it cannot tell (a claim not
 * committed yet, or records overwritten meanwhile). */
static bool inside_a_record(shmbus_channel *ch, uint64_t from, uint64_t pos)
{
	uint64_t p = from;
	uint32_t type;

	while (p < pos) {
		uint64_t size = sb_ring_rec_at(ch, p, &type);

		if (!size)
			return false;
		p += size;
	}
	return p != pos;
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
	int rc, ring_err = 0;

	sb_bus_reason_forget();
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
	if (try_ring(rp, pos, &ring_err))
		return rp;
	/* Past the journal's files, the position is checked in the ring
	 * (in them, below). */
	if (pos >= v.written && inside_a_record(ch, v.written, pos)) {
		rc = -EINVAL;
		goto fail;
	}
	/* Past what the journal wrote, and lapped in the ring (looked at
	 * first: the agent may have written it since): neither holds it,
	 * nor will (the agent, lapped too, records it as a gap). */
	if (pos > v.written && !sb_ring_holds(ch, pos)) {
		sb_jnl_read(ch, &v);
		if (pos > v.written) {
			rc = -ERANGE;
			goto fail;
		}
	}
	rc = journal_open(rp, &v, pos);
	if (rc)
		goto fail;
	rp->ahead = rp->r.pos > v.written;
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
	/* Out of the journal's range, in the ring's, which the replay could
	 * not enter: why not (no free subscriber slot, a handle that may
	 * not subscribe), as shmbus_sub_open() would say it. */
	if (rc == -ERANGE && ring_err && ring_err != -ERANGE &&
	    sb_ring_holds(ch, pos))
		rc = ring_err;
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

	/* Lapped: not delivered from here if the journal holds what the
	 * lap took, this message included. */
	if (m->lost && journal_again(c->rp)) {
		c->rp->lapped = true;
		return 1;
	}
	c->rp->delivered++;
	c->rp->lost += m->lost;
	c->rp->next_seq = m->seq + 1;
	c->rp->ring_next = m->pos + rec_size(m->len);
	return c->fn(m, c->arg);
}

/* shmbus_poll() through ring_msg(): n as it counts; a lap (ring_msg()
 * stopped on it, uncounted by us) goes back to the journal and polls on
 * there when nothing was delivered yet. */
static int ring_poll(struct shmbus_replay *rp, shmbus_handler fn, void *arg,
		     unsigned max);

/*
 * The reader was opened in the journal past what it wrote, and the ring
 * lapped that position before the journal's agent copied it: the agent,
 * lapped too, records a gap from where it was, which may start before
 * the reader's position (zeros there, between GAP words), so the journal
 * never holds it as a record.  Seen at the journal's end (rc 0) as a
 * position past what it wrote, or once it wrote on as nothing written
 * there (rc < 0).  The ring is read from its oldest record on, with what
 * the lap took counted from the sequence number due (from the message
 * there if none is known yet).  1 if it moved there, 0 if this is not
 * that case, -EAGAIN if it is and the ring could not be held now (lapped
 * again meanwhile, or no free subscriber slot): the next call tries
 * again, and the journal is never read as damaged there.
 */
static int lapped_ahead(struct shmbus_replay *rp, int rc)
{
	struct sb_jnl_view v;
	bool gap = rp->r.gap;

	if (!rp->ahead || sb_ring_holds(rp->ch, rp->r.pos))
		return 0;
	/* A25, after the look at the ring: what the agent wrote since. */
	sb_jnl_read(rp->ch, &v);
	if (rc == 0 ? rp->r.pos <= v.written
		    : rp->r.stop != SB_JSTOP_UNWRITTEN)
		return 0;
	/* The ring's subscriber starts past a loss (try_ring()). */
	rp->r.gap = true;
	if (try_ring(rp, sb_ring_oldest(rp->ch), NULL))
		return 1;
	rp->r.gap = gap;
	return -EAGAIN;
}

/* From the journal; `ring`: and on from the ring if it moves there. */
static int journal_poll(struct shmbus_replay *rp, shmbus_handler fn,
			void *arg, unsigned max, bool ring)
{
	struct sb_jnl_view v;
	unsigned n = 0;
	int rc;

	/* A25: the files hold everything below written. */
	sb_jnl_read(rp->ch, &v);
	while (n < max) {
		struct sb_jrec rec;
		struct shmbus_msg m;

		rc = sb_jreader_next(&rp->r, v.written, &rec);
		if (rc < 0) {
			int la = lapped_ahead(rp, rc);

			if (la == 0)
				return n ? (int)n : rc;
			if (la < 0 || n || !ring)
				return (int)n;	/* -EAGAIN: nothing now */
			return ring_poll(rp, fn, arg, max);
		}
		if (rc == 0) {
			/* Where the journal ends: the ring, if it can be
			 * held here; else the journal has gone on.  (Or the
			 * ring already: lapped ahead of the journal.) */
			if (try_ring(rp, rp->r.pos, NULL) ||
			    lapped_ahead(rp, rc) > 0) {
				if (n || !ring)
					return (int)n;
				return ring_poll(rp, fn, arg, max);
			}
			if (!(v.state & SHMBUS_JNL_ON))
				return n ? (int)n : -ERANGE;
			return (int)n;
		}
		rp->ahead = false;
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

static int ring_poll(struct shmbus_replay *rp, shmbus_handler fn, void *arg,
		     unsigned max)
{
	struct ring_ctx c = { rp, fn, arg };
	int n = shmbus_poll(rp->sub, ring_msg, &c, max);

	if (!rp->lapped)
		return n;
	n--;	/* the message it stopped on, not delivered */
	leave_ring(rp);
	return n ? n : journal_poll(rp, fn, arg, max, true);
}

SHMBUS_EXPORT int shmbus_replay_poll(shmbus_replay *rp, shmbus_handler fn,
				     void *arg, unsigned max)
{
	if (!rp || !fn)
		return -EINVAL;
	if (!max)
		max = UINT32_MAX;
	if (rp->sub)
		return ring_poll(rp, fn, arg, max);
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

	if (n >= 0 && m.lost && journal_again(rp)) {
		/* Lapped: from the journal, which holds what the lap took
		 * (this message included). */
		leave_ring(rp);
		return shmbus_replay_read(rp, buf, cap, info);
	}
	if (n >= 0) {
		rp->delivered++;
		rp->lost += m.lost;
		rp->next_seq = m.seq + 1;
		rp->ring_next = m.pos + rec_size(m.len);
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
		if (try_ring(rp, rp->r.pos, NULL) || lapped_ahead(rp, 0) > 0)
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
