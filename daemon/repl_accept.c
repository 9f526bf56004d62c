/* SPDX-License-Identifier: MIT */
/*
 * repl_accept.c - a standby's link on the primary, its key proven and its
 * hello read (a handshake thread): the geometry compared, where shipping
 * starts decided (where the standby ends, a gap, or a diverged tail it
 * must cut), and the link handed to the channel's agent (repl_int.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "shmbusd.h"
#include "repl.h"
#include "repl_int.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

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

void rp_serve_link(struct sbd_link *l, const struct rw_hello *hi)
{
	struct rchan *rc = rp_find(sbd_name_hash(hi->channel));
	uint64_t e = LOAD(&repl.epoch), known, oldest, start = hi->end;
	uint64_t next = UINT64_MAX, ours;
	struct rw_accept acc = { .restart = RW_RESTART_NONE };
	struct iovec iov = { &acc, sizeof(acc) };
	char why[512];

	why[0] = 0;
	if (LOAD(&repl.role) != SBD_ROLE_PRIMARY)
		snprintf(why, sizeof(why), "this host is a standby");
	/* Out of term (it has not taken the leader key yet, say, etcd out
	 * of its reach): its channels are closed, and a standby that heard
	 * it would not take over (leader.c). */
	else if (!rp_may_ack())
		snprintf(why, sizeof(why), "this host is primary by its rings "
			 "but holds no term of the leader key: it serves no "
			 "standby until it does");
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
	/* Its epoch begun by another promotion than ours: two hosts were
	 * primary at it (each promoted by force while they were apart), so
	 * the records it holds of that epoch are not ours, and this host
	 * cannot say where they part.  Matched by the epoch alone, the
	 * standby would keep them and take ours after them. */
	else if (hi->tag && (ours = rp_hist_tag(hi->epoch)) &&
		 hi->tag != ours)
		snprintf(why, sizeof(why), "%.200s: the standby's epoch %"
			 PRIu64 " was begun by another promotion (%016" PRIx64
			 ") than ours (%016" PRIx64 "): two hosts were primary "
			 "at it, and its records of it are not ours: its ring "
			 "must be rebuilt", rc->name, hi->epoch, hi->tag, ours);
	if (!why[0]) {
		known = sb_committed_end(rc->ch, sb_ring_oldest(rc->ch),
					 UINT64_MAX);
		if (hi->epoch < e)
			next = rp_hist_next_start(hi->epoch, rc->id);
		/* Only where this host knows the standby's epoch, and so
		 * where it ended here. */
		if (hi->end > next && next <= known &&
		    rp_hist_has(hi->epoch, rc->id) &&
		    sb_ring_has_record(rc->ch, next)) {
			/* A returning primary: its records from where the
			 * next epoch began here on are not ours.  It cuts
			 * them off (rejoin.c) and we ship from there. */
			acc.restart = RW_RESTART_CUT;
			start = next;
			LINK_EVENT(rc, SBD_WARN, "%s: the standby's records %"
				PRIu64 "..%" PRIu64 " (epoch %" PRIu64 ") "
				"diverge from ours, whose epoch %" PRIu64
				" began at %" PRIu64 ": it cuts them off",
				rc->name, next, hi->end, hi->epoch, e, next);
		} else if (hi->end > known || hi->end > next) {
			snprintf(why, sizeof(why), "%.200s: the standby's records "
				 "(epoch %" PRIu64 ", end %" PRIu64 ") diverge "
				 "from ours (end %" PRIu64 ") where this host "
				 "cannot say where they diverge (an epoch it "
				 "does not know, or records its ring no longer "
				 "holds): its ring must be rebuilt",
				 rc->name, hi->epoch, hi->end, known);
		}
	}
	if (why[0]) {
		LIMITED(&repl.rl_refused, repl.refused, "refusals",
			"replication: %s refused: %s", repl.t->peer(l), why);
		rw_refuse(repl.t, l, why);
		repl.t->close(l);
		return;
	}
	oldest = sb_ring_oldest(rc->ch);
	/* A gap only where the ring no longer holds the standby's end (a
	 * record not committed there yet is shipped once it is). */
	if (acc.restart == RW_RESTART_NONE && start < oldest &&
	    !sb_ring_holds(rc->ch, start)) {
		acc.restart = RW_RESTART_GAP;
		start = oldest;
		sb_repl_count(rc->ch, SB_REPL_GAPS, 1);
		sb_repl_count(rc->ch, SB_REPL_GAP_BYTES, start - hi->end);
		sb_repl_hole(rc->ch, hi->end, start);
		LINK_EVENT(rc, SBD_WARN, "%s: gap: the standby ends at %" PRIu64
			", the ring holds from %" PRIu64 "; it goes on from "
			"there", rc->name, hi->end, start);
	}
	acc.tag = rp_hist_tag(e);
	if (rp_send_frame(l, RW_ACCEPT, rc->id, start, &iov, 1, HANDSHAKE_MS)) {
		repl.t->close(l);
		return;
	}
	/* Parked under rc->mu while the agent runs: rp_agent_stop() sets
	 * stop before it joins the agent, and closes what is parked under
	 * rc->mu after, so a link parked here is taken by the agent or
	 * closed by the stop.  (Not under role_mu: a switchover holds it
	 * while it waits for this very link, hand_over().) */
	pthread_mutex_lock(&rc->mu);
	if (LOAD(&repl.role) != SBD_ROLE_PRIMARY || !LOAD(&rc->agent_on) ||
	    LOAD(&rc->stop)) {
		pthread_mutex_unlock(&rc->mu);
		repl.t->close(l);
		return;
	}
	if (rc->pending)
		repl.t->close(rc->pending);
	rc->pending = l;
	rc->pending_start = start;
	rc->pending_end = hi->end;
	rc->pending_token = hi->token;
	pthread_mutex_unlock(&rc->mu);
	rp_agent_wake(rc);
}
