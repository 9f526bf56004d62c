/* SPDX-License-Identifier: MIT */
/*
 * repl_roles.c - a host's role changes (docs/replication.md, "Switchover"):
 * promotion, hand-over and demotion, the switchover's two sides (the
 * primary asks, the standby's handshake thread answers), the arbiter's
 * calls into them (leader.c), and shmbusctl's replication commands.
 * Every change of role happens under repl.role_mu.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl.h"
#include "repl_int.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

/* ---------------------------------------------------------- role changes */
/* At a promotion, before the fences open: lanes of the channels' groups
 * that this host's ring writer lapped while it stood by go on from the
 * oldest record the ring holds (sb_group_lanes_unlap()). */
void rp_groups_unlap(void)
{
	for (size_t i = 0; i < repl.n; i++) {
		struct rchan *rc = &repl.ch[i];
		int k = sb_group_lanes_unlap(rc->ch, sbd.conf.shm_dir, rc->name);

		if (k > 0)
			sbd_log(SBD_WARN, 0, "%s: %d lanes of its consumer "
				"groups were lapped on this standby (the copy "
				"follows the primary's every 20 ms): they go on "
				"from the oldest record the ring holds, the bytes "
				"skipped counted in the group's lost_bytes",
				rc->name, k);
		else if (k < 0)
			sbd_log(SBD_WARN, -k, "%s: the lapped lanes of its "
				"consumer groups cannot be moved on", rc->name);
	}
}

/* Standby to primary, at epoch > floor.  role_mu held.  Refused while
 * records acknowledged as received were not applied (the standby's own
 * subscribers held its ring), unless forced: that refusal stays until
 * they are (the restarted linker applies the kept frame once the ring has
 * room, or a primary ships them again: unapplied_done() in
 * repl_standby.c) or a promotion is forced. */
static int become_primary(uint64_t floor, bool force, bool handed, char *out,
			  size_t n)
{
	uint64_t e = LOAD(&repl.epoch), tag;
	int rc2 = 0;

	if (floor > e)
		e = floor;
	/* The last epoch a frame, an acknowledgement or the history may
	 * carry is 2^62 - 1 (RW_EPOCH_MAX): one past it would be refused by
	 * every peer, and by this host's own history at its next start.  A
	 * peer or an arbiter that names such an epoch is not believed. */
	if (e >= RW_EPOCH_MAX - 1) {
		snprintf(out, n, "the next epoch would be %" PRIu64 ", past "
			 "the last one an epoch may be (%" PRIu64 "); still "
			 "standby", e + 1, RW_EPOCH_MAX - 1);
		return -ERANGE;
	}
	e++;
	for (size_t i = 0; i < repl.n; i++)
		rp_linker_stop(&repl.ch[i]);
	/* Frames acknowledged as received and not applied: now, if the
	 * standby's subscribers have let go of the ring. */
	for (size_t i = 0; i < repl.n; i++)
		if (LOAD(&repl.ch[i].unapplied))
			(void)rp_apply_kept(&repl.ch[i],
					    (int64_t)sbd.conf.repl.handover_ms *
					    1000000);
	for (size_t i = 0; i < repl.n && !rc2; i++)
		if (LOAD(&repl.ch[i].unapplied) && !force) {
			snprintf(out, n, "%s: records acknowledged as received "
				 "are not applied (the standby's subscribers "
				 "held the ring); still standby (promote "
				 "--force loses them)", repl.ch[i].name);
			rc2 = -EBUSY;
		} else if (LOAD(&repl.ch[i].unapplied)) {
			sbd_log(SBD_WARN, 0, "%s: promoted with --force: records "
				"acknowledged as received were not applied",
				repl.ch[i].name);
			STORE(&repl.ch[i].unapplied, false);
			free(repl.ch[i].kept);
			repl.ch[i].kept = NULL;
		}
	for (size_t i = 0; i < repl.n && !rc2; i++) {
		uint32_t pid = 0;

		/* A producer of this host's days as a primary, stopped
		 * between its claim and its commit: its record would land
		 * in the middle of ours. */
		if (sb_fence_settle(repl.ch[i].ch,
				    (int64_t)sbd.conf.repl.handover_ms * 1000000,
				    &pid)) {
			snprintf(out, n, "%s: producer %u holds a claim open on "
				 "this ring; still standby", repl.ch[i].name,
				 pid);
			rc2 = -EBUSY;
		}
	}
	/* Every ring's end before any is recorded (sb_apply_recover() is
	 * idempotent: the loop below finds the same); first, a head that a
	 * producer's claim taken back left below what the linker applied
	 * returns there (its records are acknowledged). */
	for (size_t i = 0; i < repl.n && !rc2; i++)
		if (repl.ch[i].wrote_known)
			sb_apply_reclaim(repl.ch[i].ch, repl.ch[i].wrote);
	for (size_t i = 0; i < repl.n && !rc2; i++)
		if (sb_apply_recover(repl.ch[i].ch) == UINT64_MAX ||
		    rp_ring_moved(&repl.ch[i])) {
			snprintf(out, n, "%s: the ring is damaged (its head, "
				 "a record below it, or records past what this "
				 "host applied: see the log); still standby, "
				 "whatever --force says", repl.ch[i].name);
			rc2 = -EBADMSG;
		}
	if (rc2) {
		for (size_t i = 0; i < repl.n; i++)
			rp_linker_start(&repl.ch[i]);
		return rc2;
	}
	tag = rp_new_tag();
	for (size_t i = 0; i < repl.n && !rc2; i++) {
		struct rchan *rc = &repl.ch[i];
		uint64_t end = sb_apply_recover(rc->ch);

		if (force)
			sbd_log(SBD_WARN, 0, "%s: promoted with --force at "
				"epoch %" PRIu64 ": this host ends at %" PRIu64
				"; whatever the old primary acknowledged from "
				"%" PRIu64 " on is lost here (that host keeps "
				"it in its quarantine file when it comes back)",
				rc->name, e, end, end);
		rc2 = rp_hist_append(e, tag, rc, end, i + 1 == repl.n);
	}
	if (rc2) {
		snprintf(out, n, "the epoch history could not be written; "
			 "still standby");
		for (size_t i = 0; i < repl.n; i++)
			rp_linker_start(&repl.ch[i]);
		return rc2;
	}
	rp_groups_unlap();
	for (size_t i = 0; i < repl.n; i++)
		repl.ch[i].wrote_known = false;	/* its agent's now */
	STORE(&repl.epoch, e);
	STORE(&repl.role, SBD_ROLE_PRIMARY);
	for (size_t i = 0; i < repl.n; i++) {
		struct rchan *rc = &repl.ch[i];

		sb_repl_epoch(rc->ch, e);
		sb_repl_acked(rc->ch, 0, 0, 0, false);
		/* LAGT counts from the standby's catching up with this
		 * primary, not from when this host's linker last linked. */
		sb_repl_caught_up_unknown(rc->ch);
		rp_agent_start(rc, false, handed);
		/* With an arbiter, closed until the leader thread holds the
		 * key's term (rp_open_fences()). */
		sb_fence_set(rc->ch, repl.arbiter ? SHMBUS_FENCE_HANDOVER
						  : SHMBUS_FENCE_OPEN);
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

	for (size_t i = 0; i < repl.n && !rc2; i++) {
		rc2 = sb_fence_set(repl.ch[i].ch, SHMBUS_FENCE_HANDOVER);
		if (rc2)
			snprintf(out, n, "%s: the kernel refused membarrier(2) "
				 "(%s): a claim in flight could slip past the "
				 "fence, so this host cannot hand over",
				 repl.ch[i].name, strerror(-rc2));
	}
	for (size_t i = 0; i < repl.n && !rc2; i++) {
		struct rchan *rc = &repl.ch[i];

		rc2 = sb_fence_quiesce(rc->ch, sb_ring_oldest(rc->ch), limit,
				       &ends[i]);
		if (rc2)
			snprintf(out, n, "%s: %s", rc->name,
				 rc2 == -ETIMEDOUT ? "a producer keeps a claim "
				 "open" : "the ring is damaged");
	}
	for (size_t i = 0; i < repl.n && !rc2 && drain; i++) {
		struct rchan *rc = &repl.ch[i];

		while (LOAD(&rc->applied) < ends[i] || !LOAD(&rc->linked)) {
			if (now_ns() > deadline) {
				snprintf(out, n, "%s: the standby has applied "
					 "%" PRIu64 " of %" PRIu64 " in %u ms",
					 rc->name, LOAD(&rc->applied), ends[i],
					 sbd.conf.repl.handover_ms);
				rc2 = -ETIMEDOUT;
				break;
			}
			rp_agent_wake(rc);
			usleep(200);
		}
	}
	if (rc2)
		for (size_t i = 0; i < repl.n; i++)
			sb_fence_set(repl.ch[i].ch, SHMBUS_FENCE_OPEN);
	return rc2;
}

/* Primary to standby, once hand_over() succeeded.  role_mu held. */
static void become_standby(void)
{
	/* It has just heard a primary (itself): with an arbiter, it waits a
	 * whole term before it may take the key again. */
	STORE(&repl.peer_seen_ns, lease_ns());
	for (size_t i = 0; i < repl.n; i++) {
		rp_agent_stop(&repl.ch[i], false);
		sb_fence_set(repl.ch[i].ch, SHMBUS_FENCE_STANDBY);
	}
	STORE(&repl.role, SBD_ROLE_STANDBY);
	for (size_t i = 0; i < repl.n; i++)
		rp_linker_start(&repl.ch[i]);
	sbd_log(SBD_NOTICE, 0, "demoted: standby at epoch %" PRIu64,
		LOAD(&repl.epoch));
}

bool rp_unapplied(void)
{
	for (size_t i = 0; i < repl.n; i++)
		if (LOAD(&repl.ch[i].unapplied))
			return true;
	return false;
}

void rp_open_fences(void)
{
	pthread_mutex_lock(&repl.role_mu);
	if (LOAD(&repl.role) == SBD_ROLE_PRIMARY && !LOAD(&repl.stopping))
		for (size_t i = 0; i < repl.n; i++)
			sb_fence_set(repl.ch[i].ch, SHMBUS_FENCE_OPEN);
	pthread_mutex_unlock(&repl.role_mu);
}

void rp_close_fences(void)
{
	pthread_mutex_lock(&repl.role_mu);
	if (LOAD(&repl.role) == SBD_ROLE_PRIMARY)
		for (size_t i = 0; i < repl.n; i++)
			sb_fence_set(repl.ch[i].ch, SHMBUS_FENCE_HANDOVER);
	pthread_mutex_unlock(&repl.role_mu);
}

int rp_auto_promote(uint64_t floor, char *out, size_t n)
{
	int rc2;

	pthread_mutex_lock(&repl.role_mu);
	if (LOAD(&repl.role) != SBD_ROLE_STANDBY || LOAD(&repl.stopping)) {
		snprintf(out, n, "not a standby");
		rc2 = -EALREADY;
	} else {
		rc2 = become_primary(floor, false, false, out, n);
	}
	pthread_mutex_unlock(&repl.role_mu);
	return rc2;
}

void rp_lease_lost(const char *why, int level)
{
	pthread_mutex_lock(&repl.role_mu);
	if (LOAD(&repl.role) == SBD_ROLE_PRIMARY && !LOAD(&repl.stopping)) {
		/* Producers first: no claim from here on; then the agents,
		 * whose acknowledgements rp_may_ack() already holds. */
		for (size_t i = 0; i < repl.n; i++)
			sb_fence_set(repl.ch[i].ch, SHMBUS_FENCE_STANDBY);
		sbd_log(level, 0, "replication: %s: this host's channels are "
			"fenced (producers get EROFS) and it stands by", why);
		become_standby();
	}
	pthread_mutex_unlock(&repl.role_mu);
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

	rc2 = repl.t->connect(sbd.conf.repl.peer, CONNECT_MS, &l);
	if (rc2) {
		snprintf(out, n, "peer %s: %s", sbd.conf.repl.peer,
			 strerror(-rc2));
		return rc2;
	}
	rc2 = rw_auth_client(repl.t, l, sbd.conf.bus, HANDSHAKE_MS, why,
			     sizeof(why));
	if (!rc2) {
		snprintf(hello.bus, sizeof(hello.bus), "%s", sbd.conf.bus);
		hello.layout_version = SHMBUS_LAYOUT_VERSION;
		hello.purpose = RW_FOR_PROMOTE;
		hello.epoch = LOAD(&repl.epoch);
		rc2 = rp_send_frame(l, RW_HELLO, 0, 0, &iov, 1, HANDSHAKE_MS);
	}
	if (!rc2) {
		pr.n = (uint32_t)repl.n;
		for (size_t i = 0; i < repl.n; i++) {
			pr.e[i].chan = repl.ch[i].id;
			pr.e[i].end = ends[i];
		}
		iov = (struct iovec){ &pr, sizeof(pr) };
		rc2 = rp_send_frame(l, RW_PROMOTE, 0, 0, &iov, 1, HANDSHAKE_MS);
		if (rc2)
			snprintf(why, sizeof(why), "%s", strerror(-rc2));
	}
	if (!rc2) {
		/* From here on the peer may have promoted itself: whatever
		 * happens, this host stays a standby. */
		rc2 = rw_recv_frame(repl.t, l, &h, body, sizeof(body),
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
	repl.t->close(l);
	return rc2;
}

/* Whether this host's rings end where the switchover's primary says its
 * ended (pr), every channel once; why says where not.  Under role_mu. */
static bool holds_all(const struct rw_promote *pr, char *why, size_t n)
{
	for (uint32_t i = 0; i < pr->n; i++) {
		struct rchan *rc = rp_find(pr->e[i].chan);
		uint64_t head = rc ? sb_ring_head(rc->ch) : 0;
		bool twice = false;

		for (uint32_t j = 0; j < i; j++)
			twice |= pr->e[j].chan == pr->e[i].chan;
		if (!rc || twice || head != pr->e[i].end) {
			snprintf(why, n, "%.200s: the standby holds %" PRIu64
				 ", the primary ended at %" PRIu64,
				 rc ? rc->name : "a channel unknown here",
				 head, pr->e[i].end);
			return false;
		}
	}
	return true;
}

/* The standby's side of a switchover (a handshake thread). */
void rp_serve_promote(struct sbd_link *l, const struct rw_hello *hello)
{
	struct rw_promote pr;
	struct rw_hdr h;
	char why[512], out[256];
	uint64_t floor = 0;
	int rc2;

	rc2 = rw_recv_frame(repl.t, l, &h, &pr, sizeof(pr), HANDSHAKE_MS, why,
			    sizeof(why));
	if (rc2 || h.type != RW_PROMOTE || h.len != sizeof(pr) ||
	    pr.n != repl.n) {
		rw_refuse(repl.t, l, "a malformed promote request");
		return;
	}
	/* Under role_mu, stopping is final: sbd_repl_stop() sets it before
	 * it takes role_mu to stop the channels' threads, so a promotion
	 * that finds it unset is over before they are stopped. */
	pthread_mutex_lock(&repl.role_mu);
	if (LOAD(&repl.role) != SBD_ROLE_STANDBY) {
		pthread_mutex_unlock(&repl.role_mu);
		rw_refuse(repl.t, l, "this host is not a standby");
		return;
	}
	if (LOAD(&repl.stopping)) {
		pthread_mutex_unlock(&repl.role_mu);
		rw_refuse(repl.t, l, "this host's shmbusd is stopping");
		return;
	}
	if (repl.arbiter && LOAD(&repl.rings_lost)) {
		/* Its leader thread would not take the key: no primary. */
		pthread_mutex_unlock(&repl.role_mu);
		rw_refuse(repl.t, l, "this host's rings were made again since "
			  "its last run and no primary has recorded it in sync "
			  "since");
		return;
	}
	if (!holds_all(&pr, why, sizeof(why))) {
		pthread_mutex_unlock(&repl.role_mu);
		sbd_log(SBD_WARN, 0, "switchover refused: %s", why);
		rw_refuse(repl.t, l, why);
		return;
	}
	if (repl.arbiter) {
		/* The old primary gave the key up: it is taken, and the new
		 * epoch recorded with it, before this host is primary at
		 * that epoch (outside role_mu: the leader thread takes its
		 * step's lock, then role_mu). */
		pthread_mutex_unlock(&repl.role_mu);
		rc2 = sbd_leader_claim(SBD_CLAIM_HANDOVER, &floor, out,
				       sizeof(out));
		if (rc2) {
			sbd_log(SBD_WARN, 0, "switchover refused: %s", out);
			rw_refuse(repl.t, l, out);
			return;
		}
		pthread_mutex_lock(&repl.role_mu);
		if (LOAD(&repl.role) != SBD_ROLE_STANDBY ||
		    LOAD(&repl.stopping) ||
		    !holds_all(&pr, why, sizeof(why))) {
			pthread_mutex_unlock(&repl.role_mu);
			sbd_leader_claimed(false);
			rw_refuse(repl.t, l, "this host changed meanwhile");
			return;
		}
	}
	/* holds_all(): the old primary, our standby from now on, holds
	 * exactly what we hold. */
	rc2 = become_primary(floor > hello->epoch ? floor : hello->epoch,
			     false, true, out, sizeof(out));
	pthread_mutex_unlock(&repl.role_mu);
	if (repl.arbiter)
		sbd_leader_claimed(rc2 == 0);
	if (rc2) {
		sbd_log(SBD_WARN, 0, "switchover asked by %s refused: %s",
			repl.t->peer(l), out);
		rw_refuse(repl.t, l, out);
		return;
	}
	rp_send_frame(l, RW_PROMOTED, 0, 0, NULL, 0, HANDSHAKE_MS);
}

int sbd_repl_command(uint32_t op, uint32_t flags,
		     struct shmbus_ctl_repl_reply *r)
{
	uint64_t ends[RW_PROMOTE_MAX], epoch = 0;
	int64_t t0 = now_ns();
	int claimed = -1;	/* a promotion's claim to end: its outcome */
	int rc2 = 0;

	r->text[0] = 0;
	if (!repl.on) {
		snprintf(r->text, sizeof(r->text), "replication is not "
			 "configured ([replication] in the config)");
		return -ENOTSUP;
	}
	pthread_mutex_lock(&repl.role_mu);
	switch (op) {
	case SHMBUS_REPL_OP_STATUS: {
		bool primary = LOAD(&repl.role) == SBD_ROLE_PRIMARY;
		size_t o = (size_t)snprintf(r->text, sizeof(r->text), "%s%s at "
			"epoch %" PRIu64 ", %zu channel%s, listening on %s, "
			"peer %s", role_name(LOAD(&repl.role)),
			/* Without a term, its channels are closed. */
			primary && !rp_may_ack() ? " (no term of the leader "
			"key: fenced, producers get EROFS)" : "",
			LOAD(&repl.epoch), repl.n, repl.n == 1 ? "" : "s",
			sbd.conf.repl.listen, sbd.conf.repl.peer);

		/* A line a channel, as many as the answer holds. */
		for (size_t i = 0; i < repl.n && o < sizeof(r->text); i++) {
			struct sb_repl_view v;
			uint64_t have;

			sb_repl_read(repl.ch[i].ch, &v);
			have = v.level == SHMBUS_ACK_APPLIED ? v.applied
			     : v.level == SHMBUS_ACK_STANDBY_PERSISTED ||
			       v.level == SHMBUS_ACK_BOTH_PERSISTED
					? v.persisted : v.received;
			if (v.flags & SHMBUS_REPL_STANDBY)
				o += (size_t)snprintf(r->text + o,
					sizeof(r->text) - o, "\n  %.40s: link "
					"%s, holds %" PRIu64, repl.ch[i].name,
					v.flags & SHMBUS_REPL_LINK ? "up" :
					"down", v.head);
			/* A primary that no standby has linked to since it
			 * became one (a promotion, or a start on a ring of
			 * another epoch) does not know what the other host
			 * holds: not "at 0", nor its whole ring as lag. */
			else if (!v.caught_up_ns && !have &&
				 !(v.flags & SHMBUS_REPL_LINK) && v.head)
				o += (size_t)snprintf(r->text + o,
					sizeof(r->text) - o, "\n  %.40s: link "
					"down, at %" PRIu64 ", standby not "
					"linked at this epoch: what it holds is "
					"not known (%s)", repl.ch[i].name,
					v.head,
					v.flags & SHMBUS_REPL_OUT_OF_SYNC ?
					"out of sync" : "in sync");
			else
				o += (size_t)snprintf(r->text + o,
					sizeof(r->text) - o, "\n  %.40s: link "
					"%s, at %" PRIu64 ", standby at %"
					PRIu64 " (%s), lag %" PRIu64 " bytes",
					repl.ch[i].name,
					v.flags & SHMBUS_REPL_LINK ? "up" :
					"down", v.head, have,
					v.flags & SHMBUS_REPL_OUT_OF_SYNC ?
					"out of sync" : "in sync",
					v.head > have ? v.head - have : 0);
		}
		if (repl.arbiter && o < sizeof(r->text))
			sbd_leader_status(r->text + o, sizeof(r->text) - o);
		break;
	}
	case SHMBUS_REPL_OP_PROMOTE: {
		uint64_t floor = 0;

		if (LOAD(&repl.role) == SBD_ROLE_PRIMARY) {
			snprintf(r->text, sizeof(r->text), "already primary");
			rc2 = -EALREADY;
			break;
		}
		/* With an arbiter, only the holder of the leader key may be
		 * primary: the key first (outside role_mu: the leader thread
		 * takes it inside a step, then role_mu). */
		if (repl.arbiter) {
			pthread_mutex_unlock(&repl.role_mu);
			rc2 = sbd_leader_claim(flags & SHMBUS_REPL_FORCE ?
						       SBD_CLAIM_FORCE :
						       SBD_CLAIM_CHECKED,
					       &floor, r->text,
					       sizeof(r->text));
			pthread_mutex_lock(&repl.role_mu);
			if (rc2)
				break;
			if (LOAD(&repl.role) == SBD_ROLE_PRIMARY) {
				snprintf(r->text, sizeof(r->text), "already "
					 "primary");
				rc2 = -EALREADY;
				claimed = 1;
				break;
			}
		}
		rc2 = become_primary(floor, flags & SHMBUS_REPL_FORCE, false,
				     r->text, sizeof(r->text));
		if (repl.arbiter)
			claimed = rc2 == 0;
		break;
	}
	case SHMBUS_REPL_OP_DEMOTE:
	case SHMBUS_REPL_OP_SWITCHOVER:
		if (LOAD(&repl.role) != SBD_ROLE_PRIMARY) {
			snprintf(r->text, sizeof(r->text), "not primary");
			rc2 = -EALREADY;
			break;
		}
		/* The new primary takes the leader key: not without etcd,
		 * and not from a host that does not hold it.  Asked before
		 * anything closes. */
		if (op == SHMBUS_REPL_OP_SWITCHOVER && repl.arbiter &&
		    (rc2 = sbd_leader_check(r->text, sizeof(r->text)))) {
			sbd_log(SBD_WARN, 0, "switchover refused: %s", r->text);
			break;
		}
		rc2 = hand_over(op == SHMBUS_REPL_OP_SWITCHOVER ||
					!(flags & SHMBUS_REPL_FORCE),
				ends, r->text, sizeof(r->text));
		if (rc2)
			break;
		if (op == SHMBUS_REPL_OP_DEMOTE) {
			for (size_t i = 0; i < repl.n; i++)
				if (LOAD(&repl.ch[i].applied) < ends[i])
					sbd_log(SBD_WARN, 0, "%s: demoted "
						"with --force: the standby "
						"lacks %" PRIu64 "..%" PRIu64,
						repl.ch[i].name,
						LOAD(&repl.ch[i].applied), ends[i]);
			become_standby();
			if (repl.arbiter)
				sbd_leader_release(false, r->text,
						   sizeof(r->text));
			snprintf(r->text, sizeof(r->text), "standby at epoch %"
				 PRIu64, LOAD(&repl.epoch));
			break;
		}
		/* Switchover: we stand by, then the peer is asked. */
		for (size_t i = 0; i < repl.n; i++)
			rp_agent_stop(&repl.ch[i], false);
		for (size_t i = 0; i < repl.n; i++)
			sb_fence_set(repl.ch[i].ch, SHMBUS_FENCE_STANDBY);
		STORE(&repl.role, SBD_ROLE_STANDBY);
		/* The peer takes the leader key as it promotes.  If etcd
		 * does not answer, the key stays ours and nobody could take
		 * it: we are still primary, in the term we had. */
		if (repl.arbiter &&
		    (rc2 = sbd_leader_release(true, r->text,
					      sizeof(r->text)))) {
			STORE(&repl.role, SBD_ROLE_PRIMARY);
			for (size_t i = 0; i < repl.n; i++) {
				rp_agent_start(&repl.ch[i], false, false);
				sb_fence_set(repl.ch[i].ch, SHMBUS_FENCE_OPEN);
			}
			sbd_log(SBD_WARN, 0, "switchover abandoned, still "
				"primary: %s", r->text);
			break;
		}
		rc2 = ask_promote(ends, &epoch, r->text, sizeof(r->text));
		if (rc2 == -EINPROGRESS) {
			/* Asked, no answer: the peer may be primary now.
			 * Stay a standby; an operator decides. */
			for (size_t i = 0; i < repl.n; i++)
				rp_linker_start(&repl.ch[i]);
			sbd_log(SBD_ERR, 0, "switchover: %s; this host stays "
				"standby: check the peer", r->text);
			break;
		}
		if (rc2) {
			/* Refused (or never asked): we are still the only
			 * primary.  Open again; with an arbiter, once the
			 * leader thread has taken the key back (we gave it
			 * up above). */
			STORE(&repl.role, SBD_ROLE_PRIMARY);
			for (size_t i = 0; i < repl.n; i++) {
				rp_agent_start(&repl.ch[i], false, false);
				sb_fence_set(repl.ch[i].ch, repl.arbiter ?
						SHMBUS_FENCE_HANDOVER :
						SHMBUS_FENCE_OPEN);
			}
			if (repl.arbiter)
				sbd_leader_kick();
			sbd_log(SBD_WARN, 0, "switchover abandoned, still "
				"primary: %s", r->text);
			break;
		}
		for (size_t i = 0; i < repl.n; i++) {
			sb_repl_flags(repl.ch[i].ch, SHMBUS_REPL_STANDBY,
				      SHMBUS_REPL_LINK);
			rp_linker_start(&repl.ch[i]);
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
	r->role = (uint32_t)LOAD(&repl.role);
	r->epoch = LOAD(&repl.epoch);
	r->duration_ns = (uint64_t)(now_ns() - t0);
	pthread_mutex_unlock(&repl.role_mu);
	/* After role_mu: the claim's end takes the leader thread's step
	 * lock, which that thread takes before role_mu. */
	if (claimed >= 0)
		sbd_leader_claimed(claimed);
	return rc2;
}
