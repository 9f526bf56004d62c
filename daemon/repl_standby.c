/* SPDX-License-Identifier: MIT */
/*
 * repl_standby.c - a replicated channel on the standby: the linker that
 * connects to the primary, checks and applies its frames and acknowledges
 * them (repl_int.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
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
#include "repl_int.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

/* The primary's groups: made here if need be, their floors raised to
 * theirs (never past what this ring holds). */
static int apply_groups(struct rchan *rc, const struct rw_hdr *h,
			uint64_t end, char *why, size_t wn)
{
	const size_t one = sizeof(struct sb_group_state);
	static struct sbd_ratelimit rl;
	static unsigned long failed;

	if (h->len % one || h->len / one > RW_GROUPS_MAX) {
		snprintf(why, wn, "a groups frame of %u bytes", h->len);
		return -EBADMSG;
	}
	for (uint32_t i = 0; i < h->len / one; i++) {
		struct sb_group_state st;
		int rc2;

		memcpy(&st, rc->buf + i * one, one);
		/* The records that follow this frame may need the copy raised
		 * (the primary ships states just before them), and this
		 * ring's writer does not wait for the copy.  The update waits
		 * for a maintenance of the copy under way (this host's
		 * reaper's: microseconds; -ENOLCK past 100 ms).  -EBUSY: the
		 * copy changed under us (a member of this host's acking):
		 * tried again at once; or it holds claims of its own past the
		 * primary's floor (taken while this host was primary), passed
		 * at a later state.  -EIDRM: a removal of the copy under way
		 * here (the next state makes it again, if the primary still
		 * has the group). */
		for (int tries = 0;; tries++) {
			rc2 = sb_group_state_apply(rc->ch, sbd.conf.shm_dir,
						   rc->name, &st, end);
			if (rc2 != -EBUSY || tries == 8)
				break;
			sched_yield();
		}
		if (rc2 && rc2 != -EBUSY && rc2 != -EIDRM) {
			failed++;
			st.name[sizeof(st.name) - 1] = 0;
			sbd_log_limited(&rl, SBD_WARN, failed, "group updates",
					"%s: group %s from the primary: %s",
					rc->name, st.name, strerror(-rc2));
		}
	}
	return 0;
}

/* How long an idle link waits for this host's journal to sync what it
 * applied, to say so at once (else the next acknowledgement says it). */
#define PERSIST_WAIT_NS	INT64_C(200000000)

/* A channel acknowledged at a persisted level: wakes the journal, waits
 * (while no frame is waiting) until it has synced through `end`, and
 * acknowledges that. */
static int ack_persisted(struct rchan *rc, struct sbd_link *l, uint64_t end)
{
	int64_t deadline = now_ns() + PERSIST_WAIT_NS;
	struct sb_jnl_view v;

	sb_repl_kick(rc->ch);
	for (;;) {
		struct timespec ts = { 0, 20000 };

		sb_jnl_read(rc->ch, &v);
		if (!(v.state & SHMBUS_JNL_ON) ||
		    (v.state & SHMBUS_JNL_DISK_FULL))
			return 0;	/* nothing to wait for, or to say */
		if (v.persisted >= end)
			return rp_send_ack(rc, l, end, end);
		if (repl.t->pending(l) || now_ns() > deadline ||
		    LOAD(&repl.stopping) || stopped(rc))
			return 0;
		nanosleep(&ts, NULL);
	}
}

/* The ring now ends at `end`, after a frame, a gap or (cut) a cut back:
 * records acknowledged as received and not applied before (a promotion
 * was refused for them) no longer stand in a promotion's way once the
 * ring is past them, or once a cut has removed the tail they belonged
 * to. */
static void unapplied_done(struct rchan *rc, uint64_t end, bool cut)
{
	if (!LOAD(&rc->unapplied) || (!cut && end < rc->unapplied_to))
		return;
	free(rc->kept);
	rc->kept = NULL;
	sbd_log(SBD_NOTICE, 0, "%s: the records acknowledged as received and "
		"not applied are %s", rc->name, cut ? "cut away with the "
		"diverged tail" : "past (applied, or skipped by a gap)");
	STORE(&rc->unapplied, false);
}

/* One frame from the primary, checked and applied; 0, or -errno with
 * why (the link is then dropped). */
static int apply_frame(struct rchan *rc, struct sbd_link *l,
		       const struct rw_hdr *h, uint64_t *end, char *why,
		       size_t wn)
{
	uint64_t e = LOAD(&repl.epoch);
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
	/* A primary's epoch is fixed while it ships (a demotion ends its
	 * links), and the acceptance's was recorded before the first
	 * record: another one on the link is no primary's.  Taken, it
	 * would be recorded (any epoch below 2^62, untagged) and this host
	 * would refuse its real primary from then on as older. */
	if (h->epoch != rc->link_epoch) {
		snprintf(why, wn, "a frame of epoch %" PRIu64 " on a link of "
			 "epoch %" PRIu64, h->epoch, rc->link_epoch);
		return -EBADMSG;
	}
	if (h->type == RW_PING)
		return rp_send_ack(rc, l, *end, *end);
	if (h->type == RW_GROUPS)
		return apply_groups(rc, h, *end, why, wn);
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
	/* The numbers go on from the last frame's on this link (the ring's
	 * own next one may be ahead of its records after an apply that a
	 * crash cut short was rolled back). */
	if (rc->seq_known && f.first_seq != UINT64_MAX &&
	    f.first_seq <= rc->last_seq) {
		snprintf(why, wn, "sequence %" PRIu64 " at the frame's start, "
			 "after %" PRIu64, f.first_seq, rc->last_seq);
		return -EBADMSG;
	}
	while ((rc2 = sb_apply(rc->writer, h->pos, rc->buf, h->len, &f)) ==
	       -ETIMEDOUT) {
		/* Our own subscribers hold the ring: say we have the bytes,
		 * and wait.  Once said, the frame is applied before this
		 * host can be promoted (become_primary() waits for it), or
		 * the promotion is refused. */
		if (!told && rp_send_ack(rc, l, h->pos + f.extent, *end))
			return -EIO;
		told = true;
		if (LOAD(&repl.stopping))
			return -ECANCELED;
		if (stopped(rc) && !stop_at)
			stop_at = now_ns();
		if (stop_at && now_ns() - stop_at >
		    (int64_t)sbd.conf.repl.handover_ms * 1000000) {
			rc->unapplied_to = h->pos + f.extent;
			/* Kept: the linker, restarted, or a promotion
			 * applies it once the ring has room
			 * (rp_apply_kept()), as the primary would ship it
			 * again if it comes back. */
			free(rc->kept);
			rc->kept = malloc(h->len ? h->len : 1);
			if (rc->kept) {
				memcpy(rc->kept, rc->buf, h->len);
				rc->kept_len = h->len;
				rc->kept_pos = h->pos;
			}
			STORE(&rc->unapplied, true);
			sbd_log(SBD_ERR, 0, "%s: records %" PRIu64 "..%" PRIu64
				" were acknowledged as received and cannot be "
				"applied: the standby's own subscribers hold "
				"the ring", rc->name, h->pos, h->pos + f.extent);
			return -ECANCELED;
		}
	}
	if (rc2) {
		snprintf(why, wn, "apply: %s", strerror(-rc2));
		return rc2;
	}
	*end = h->pos + f.extent;
	rc->wrote = *end;
	if (f.last_pos != UINT64_MAX) {
		rc->last_seq = f.last_seq;
		rc->seq_known = true;
	}
	unapplied_done(rc, *end, false);
	sb_repl_acked(rc->ch, *end, *end, 0, true);
	sb_repl_watermark(rc->ch, *end);
	/* While more frames wait in the socket (a backlog), one
	 * acknowledgement for several: each one wakes the primary's reader.
	 * An idle link, and a sync waiter's frame, are acknowledged at once;
	 * and a backlog at least every ack_every bytes, so that the
	 * primary's cursor never waits long for it.  (A frame read to the
	 * socket's end is acknowledged without looking again: a system
	 * call less on a synchronous round trip.) */
	if (*end - rc->acked < rc->ack_every && !repl.t->drained(l) &&
	    repl.t->pending(l))
		return 0;
	rc->acked = *end;
	rc2 = rp_send_ack(rc, l, *end, *end);
	if (rc2 || (rc->level != SHMBUS_ACK_STANDBY_PERSISTED &&
		    rc->level != SHMBUS_ACK_BOTH_PERSISTED))
		return rc2;
	return ack_persisted(rc, l, *end);
}

/* Whether the ring's head is past where this daemon's linker left it
 * with records there (said, rate-limited): records this host never
 * received, which the primary would ship from after, and a promotion
 * take for its.  A claim taken back wrote nothing there (nor a producer
 * that died in its claim), which the walk of the committed records cuts
 * back first. */
static bool ring_written_by_hand(struct rchan *rc)
{
	if (rp_ring_moved(rc))
		sb_apply_recover(rc->ch);
	if (!rp_ring_moved(rc))
		return false;
	LIMITED(&repl.rl_link, repl.link_errors, "link errors",
		"%s: the ring is damaged: its head is at %" PRIu64 ", past "
		"the %" PRIu64 " this standby applied (records written by a "
		"process that maps the ring); not replicating it", rc->name,
		sb_ring_head(rc->ch), rc->wrote);
	return true;
}

static void linker_session(struct rchan *rc, struct sbd_link *l)
{
	struct rw_hello hello = { 0 };
	struct iovec iov = { &hello, sizeof(hello) };
	struct rw_hdr h;
	struct rw_accept acc;
	uint32_t restart;
	uint64_t end;
	char why[512];
	int rc2;

	if ((rc2 = rw_auth_client(repl.t, l, sbd.conf.bus, HANDSHAKE_MS, why,
				  sizeof(why)))) {
		LIMITED(&repl.rl_link, repl.link_errors, "link errors",
			"%s: primary %s: %s", rc->name, repl.t->peer(l), why);
		return;
	}
	if (ring_written_by_hand(rc)) {
		nap(rc, 500);
		return;
	}
	/* Below where it applied: a single producer's claim taken back over
	 * the linker's (design.md §4), which wrote nothing: head returns
	 * there, or, if the records below are not whole, the primary ships
	 * again from head. */
	end = rc->wrote_known ? sb_apply_reclaim(rc->ch, rc->wrote)
			      : sb_ring_head(rc->ch);
	if (rc->wrote_known)
		rc->wrote = end;
	snprintf(hello.bus, sizeof(hello.bus), "%s", sbd.conf.bus);
	snprintf(hello.channel, sizeof(hello.channel), "%s", rc->name);
	hello.layout_version = SHMBUS_LAYOUT_VERSION;
	hello.flags = rc->flags;
	hello.capacity = rc->cap;
	hello.max_msg = rc->max_msg;
	hello.purpose = RW_FOR_LINK;
	hello.token = LOAD(&repl.rings_lost) ? repl.lost_token : 0;
	/* The channel's own epoch, not the host's: another channel may
	 * have moved to the new epoch while this one still holds its
	 * diverged tail. */
	hello.epoch = rp_hist_last(rc->id);
	hello.tag = rp_hist_tag(hello.epoch);
	hello.end = end;
	if (rp_send_frame(l, RW_HELLO, rc->id, end, &iov, 1, HANDSHAKE_MS))
		return;
	rc2 = rw_recv_frame(repl.t, l, &h, rc->buf, sizeof(acc), HANDSHAKE_MS,
			    why, sizeof(why));
	if (rc2 == 0 && (h.type != RW_ACCEPT || h.len != sizeof(acc))) {
		snprintf(why, sizeof(why), "frame type %u instead of an "
			 "acceptance", h.type);
		rc2 = -EBADMSG;
	}
	if (rc2) {
		LIMITED(&repl.rl_link, repl.link_errors, "link errors",
			"%s: primary %s: %s", rc->name, repl.t->peer(l), why);
		return;
	}
	memcpy(&acc, rc->buf, sizeof(acc));
	restart = acc.restart;
	if (h.epoch < LOAD(&repl.epoch)) {
		sbd_log(SBD_ERR, 0, "%s: primary %s has epoch %" PRIu64
			", older than ours (%" PRIu64 "): refused", rc->name,
			repl.t->peer(l), h.epoch, LOAD(&repl.epoch));
		return;
	}
	/* The same epoch begun by two promotions (repl_accept.c). */
	if (acc.tag && rp_hist_tag(h.epoch) &&
	    rp_hist_tag(h.epoch) != acc.tag) {
		sbd_log(SBD_ERR, 0, "%s: primary %s is at epoch %" PRIu64
			" by another promotion (%016" PRIx64 ") than the one "
			"this host followed (%016" PRIx64 "): two hosts were "
			"primary at it; refused", rc->name, repl.t->peer(l),
			h.epoch, acc.tag, rp_hist_tag(h.epoch));
		return;
	}
	/* Every check before anything is recorded or moved here: a cut
	 * back to a position before our end, in a newer epoch; a skip ahead
	 * (a gap) past it; or our end itself.  rw_check_hdr() bounded the
	 * position. */
	if (h.pos % SHMBUS_REC_ALIGN ||
	    (restart == RW_RESTART_CUT ? h.epoch <= hello.epoch || h.pos >= end
	     : restart == RW_RESTART_GAP ? h.pos < end
	     : restart != RW_RESTART_NONE || h.pos != end)) {
		sbd_log(SBD_ERR, 0, "%s: primary %s would ship from %" PRIu64
			" (epoch %" PRIu64 ", restart %u); we end at %" PRIu64
			" (epoch %" PRIu64 "): refused", rc->name,
			repl.t->peer(l), h.pos, h.epoch, restart, end,
			hello.epoch);
		return;
	}
	if (restart == RW_RESTART_CUT) {
		/* Before anything of the new epoch is recorded here: a cut
		 * that fails is asked for again at the next link. */
		if ((rc2 = rp_rejoin_cut(rc, h.pos, hello.epoch, h.epoch, why,
					 sizeof(why)))) {
			LIMITED(&repl.rl_link, repl.link_errors, "link errors",
				"%s: rejoin: the ring cannot be cut back to %"
				PRIu64 " yet: %s", rc->name, h.pos, why);
			nap(rc, 500);
			return;
		}
		end = h.pos;
		rc->wrote = end;
		sb_repl_acked(rc->ch, end, end, 0, false);
		unapplied_done(rc, end, true);
	}
	rc->link_epoch = h.epoch;
	if (!rp_hist_has(h.epoch, rc->id)) {
		/* The primary's epoch, on disk before its first record
		 * here; our acknowledgements carry it from now on. */
		if (rp_hist_append(h.epoch, acc.tag, rc, h.pos, true))
			return;
		sb_repl_epoch(rc->ch, h.epoch);
	}
	if (h.pos != end) {
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
		rc->wrote = end;
		sb_repl_acked(rc->ch, end, end, 0, false);
		sb_repl_watermark(rc->ch, end);
		unapplied_done(rc, end, false);
	}
	rc->acked = end;
	rc->seq_known = false;
	/* The next frame is looked for a little without sleeping: a
	 * synchronous producer's comes a round trip after our ack. */
	repl.t->set_spin(l, SPIN_NS, NULL, NULL, NULL);
	sb_repl_flags(rc->ch, SHMBUS_REPL_LINK, 0);
	sbd_log(SBD_NOTICE, 0, "%s: linked to primary %s at %" PRIu64
		" (epoch %" PRIu64 ")", rc->name, repl.t->peer(l), end, h.epoch);
	for (;;) {
		/* Not every failure names itself (an acknowledgement not sent,
		 * the epoch history not written): those say their errno. */
		why[0] = 0;
		rc2 = rw_recv_frame(repl.t, l, &h, rc->buf, rc->buf_len,
				    (int)sync_ms() + PING_MS, why, sizeof(why));
		if (rc2 == 0)
			rc2 = apply_frame(rc, l, &h, &end, why, sizeof(why));
		if (rc2 && !why[0])
			snprintf(why, sizeof(why), "%s", strerror(-rc2));
		/* A primary of our epoch or newer is alive (leader.c: no
		 * automatic promotion while it is heard). */
		if (rc2 == 0)
			STORE(&repl.peer_seen_ns, lease_ns());
		if (rc2) {
			if (rc2 == -EBADMSG) {
				sb_repl_count(rc->ch, SB_REPL_BAD, 1);
				sbd_log(SBD_ERR, 0, "%s: frame from %s refused: "
					"%s; reconnecting from %" PRIu64,
					rc->name, repl.t->peer(l), why, end);
			} else if (!stopped(rc)) {
				LIMITED(&repl.rl_link, repl.link_errors, "link errors",
						"%s: link to %s lost: %s",
						rc->name, repl.t->peer(l), why);
			}
			break;
		}
	}
	sb_repl_flags(rc->ch, 0, SHMBUS_REPL_LINK);
}

/* Before the ring is recovered and written: no live producer may still
 * hold a claim on it (a primary that lost its lease stood by while one
 * was between its claim and its commit, stopped, say).  False if the
 * linker is stopped meanwhile. */
static bool settle(struct rchan *rc)
{
	uint32_t pid = 0;
	bool said = false;
	uint64_t end;

	while (sb_fence_settle(rc->ch, INT64_C(100000000), &pid)) {
		if (!said)
			sbd_log(SBD_WARN, 0, "%s: producer %u holds a claim on "
				"this standby's ring; waiting for it before "
				"anything is written here", rc->name, pid);
		said = true;
		if (stopped(rc))
			return false;
	}
	end = sb_apply_recover(rc->ch);
	if (end == UINT64_MAX) {
		sbd_log(SBD_ERR, 0, "%s: the ring is damaged (its head, or a "
			"record below it); not replicating it", rc->name);
		return false;
	}
	/* A linker started again (a promotion refused) finds the ring
	 * where the last one left it (a claim taken back below it returns
	 * there), or records were written there by hand meanwhile: it
	 * waits, and goes on from where the ring ends then. */
	if (rc->wrote_known)
		sb_apply_reclaim(rc->ch, rc->wrote);
	while (ring_written_by_hand(rc)) {
		nap(rc, 500);
		if (stopped(rc))
			return false;
	}
	end = sb_ring_head(rc->ch);
	/* The watermark stays where the peer earned it: records this host
	 * wrote as a primary and the peer never acknowledged (a forced
	 * demotion) must not count as acknowledged here. */
	sb_repl_acked(rc->ch, end, end, 0, true);
	/* From here on, only this linker moves the ring's end (known
	 * until this host is primary again: become_primary()). */
	rc->wrote = end;
	rc->wrote_known = true;
	return true;
}

bool rp_ring_moved(struct rchan *rc)
{
	/* Only past: a head below is a single producer's claim taken back
	 * over what the linker applied (design.md §4: a handle that passed
	 * its first look at the fence before the ring changed hands stores
	 * head, then sees the fence and takes its claim back to where it
	 * was), which sb_apply_reclaim() undoes. */
	return rc->wrote_known && sb_ring_head(rc->ch) > rc->wrote;
}

static void *linker_main(void *arg)
{
	struct rchan *rc = arg;
	int backoff = 50;

	sbd_thread_setup("sb-apply", true);
	if (!settle(rc))
		return NULL;
	while (!stopped(rc)) {
		struct sbd_link *l;
		int err;

		/* A frame acknowledged as received that our subscribers kept
		 * from the ring goes in as soon as they let go, whether or
		 * not a primary is there to ship it again: it may be the
		 * only copy left, and an automatic promotion waits for it
		 * (leader.c). */
		if (LOAD(&rc->unapplied))
			(void)rp_apply_kept(rc, 0);
		/* Not a connection, and a proof of the key, every half
		 * second for a ring that will not be linked. */
		if (ring_written_by_hand(rc)) {
			nap(rc, 500);
			continue;
		}
		err = repl.t->connect(sbd.conf.repl.peer, CONNECT_MS, &l);

		if (err) {
			LIMITED(&repl.rl_link, repl.link_errors,
				"link errors", "%s: cannot reach the primary "
				"at %s: %s", rc->name, sbd.conf.repl.peer,
				strerror(-err));
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
		repl.t->close(l);
		nap(rc, 50);
	}
	return NULL;
}

int rp_apply_kept(struct rchan *rc, int64_t wait_ns)
{
	int64_t until = now_ns() + wait_ns;
	struct sb_frame f;
	char why[256];
	int rc2;

	if (!LOAD(&rc->unapplied) || !rc->kept)
		return -ENOENT;
	if (sb_ring_head(rc->ch) != rc->kept_pos)
		return -ESTALE;	/* the ring moved on: not where it goes */
	/* Checked again as at its arrival: the ring is what it checks
	 * against, and its subscribers may have moved meanwhile. */
	rc2 = sb_apply_check(rc->ch, rc->kept_pos, rc->kept, rc->kept_len, &f,
			     why, sizeof(why));
	if (rc2) {
		if (wait_ns)	/* the linker's looks stay quiet */
			sbd_log(SBD_ERR, 0, "%s: the records acknowledged as "
				"received no longer apply here: %s", rc->name,
				why);
		return rc2;
	}
	while ((rc2 = sb_apply(rc->writer, rc->kept_pos, rc->kept,
			       rc->kept_len, &f)) == -ETIMEDOUT &&
	       now_ns() < until && !LOAD(&repl.stopping))
		;
	if (rc2)
		return rc2;
	rc->wrote = rc->kept_pos + f.extent;
	sbd_log(SBD_NOTICE, 0, "%s: records %" PRIu64 "..%" PRIu64 ", "
		"acknowledged as received, applied now that the ring has "
		"room", rc->name, rc->kept_pos, rc->kept_pos + f.extent);
	sb_repl_acked(rc->ch, rc->kept_pos + f.extent,
		      rc->kept_pos + f.extent, 0, true);
	sb_repl_watermark(rc->ch, rc->kept_pos + f.extent);
	unapplied_done(rc, rc->kept_pos + f.extent, false);
	return 0;
}

int rp_linker_start(struct rchan *rc)
{
	sb_repl_flags(rc->ch, SHMBUS_REPL_STANDBY,
		      SHMBUS_REPL_LINK | SHMBUS_REPL_OUT_OF_SYNC);
	STORE(&rc->stop, false);
	if (pthread_create(&rc->linker, NULL, linker_main, rc))
		return -EAGAIN;
	rc->linker_on = true;
	return 0;
}

void rp_linker_stop(struct rchan *rc)
{
	if (!rc->linker_on)
		return;
	STORE(&rc->stop, true);
	pthread_mutex_lock(&rc->mu);
	if (rc->slink)
		repl.t->shutdown(rc->slink);
	pthread_mutex_unlock(&rc->mu);
	pthread_join(rc->linker, NULL);
	rc->linker_on = false;
}
