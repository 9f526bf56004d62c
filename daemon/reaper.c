/* SPDX-License-Identifier: MIT */
/*
 * reaper.c - finds the slots of processes that died and repairs them.
 *
 * The reaper thread scans every channel every reap_interval_ms (20 ms by
 * default), and at once when the main thread tells it that a client's
 * control connection closed.  A slot is repaired only when the process it
 * names is gone: no such process, or a zombie.  A process that is slow or
 * stopped (SIGSTOP, a debugger) is alive, and nothing of it is touched.
 * The scan also catches processes that never talked to the daemon (direct
 * mode) and those that died while the daemon was down.
 *
 * Repairs run only in this thread, so two repairs never race each other;
 * they are built to race live producers and subscribers (lib/repair.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "shmbusd.h"
#include "../lib/contract.h"

static pthread_t thread;
static int kick_fd = -1;
/* Set by the main thread, read by the reaper; the eventfd wakes it. */
static atomic_bool stopping;

/* A small cache of verdicts, one scan long: a pid is looked up once per
 * scan, whatever number of slots it holds. */
struct verdicts {
	uint32_t pid[128];
	bool gone[128];
	unsigned n;
};

static bool gone(struct verdicts *v, uint32_t pid)
{
	bool g;

	for (unsigned i = 0; i < v->n; i++)
		if (v->pid[i] == pid)
			return v->gone[i];
	g = sb_pid_gone(pid);	/* lib/pid.c */
	if (v->n < 128) {
		v->pid[v->n] = pid;
		v->gone[v->n++] = g;
	}
	return g;
}

static unsigned reap_channel(struct sbd_chan *c, struct verdicts *v)
{
	struct shmbus_channel *ch = c->ch;
	unsigned released = 0;
	uint32_t sp;
	int rc;

	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		/* Relaxed: only a hint; sb_repair_sub() re-reads the word
		 * with acquire and compares it in its CAS. */
		uint64_t o = load_relaxed64(&ch->subs[i].owner);

		if (owner_state(o) == SHMBUS_SLOT_FREE ||
		    !gone(v, owner_pid(o)))
			continue;
		if (sb_repair_sub(ch, i, owner_pid(o),
				  (uint32_t)sbd.self_pid) == 1) {
			released++;
			sbd_log(SBD_NOTICE, 0, "%s: released subscriber slot "
				"%u of dead process %u", c->name, i,
				owner_pid(o));
		}
	}
	if (!ch_multi(ch)) {
		sp = load_relaxed32(&ch->hdr->sp_owner);
		if (sp && !(sp & SHMBUS_SP_REPAIRING) && gone(v, sp) &&
		    sb_repair_sp(ch, sp, (uint32_t)sbd.self_pid) == 1)
			sbd_log(SBD_NOTICE, 0, "%s: padded the unfinished "
				"claim of dead producer %u", c->name, sp);
		else if (sp & SHMBUS_SP_REPAIRING &&
			 gone(v, sp & ~SHMBUS_SP_REPAIRING))
			/* A previous shmbusd died repairing: finish. */
			sb_repair_sp(ch, sp, (uint32_t)sbd.self_pid);
	}
	/*
	 * Claims of dead producers that never handed over, at the hand-off,
	 * one after another.  Producers waiting behind such a claim hand it
	 * over themselves at once; the daemon steps in only when the
	 * hand-off has not moved since the last scan (no producer waits, or
	 * all of them died), so that it seldom holds an adopted slot that
	 * producers would wait for if the daemon were stopped meanwhile.
	 */
	for (uint32_t n = 0; ch_multi(ch) && n < SHMBUS_MAX_PRODUCERS; n++) {
		/* A3: pairs with R3 (the hand-off store of the claim before
		 * it); sb_handoff_help() orders the rest. */
		uint64_t x = load_acquire64(&ch->hdr->handoff);

		if (n == 0 && x != c->handoff_seen) {
			c->handoff_seen = x;
			break;
		}
		if (sb_handoff_help(ch, x, (uint32_t)sbd.self_pid,
				    sb_pid_gone) != SB_HELP_DONE)
			break;
		sbd_log(SBD_NOTICE, 0, "%s: handed over and padded the claim "
			"at %llu of a dead producer", c->name,
			(unsigned long long)x);
	}
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		uint64_t o = load_relaxed64(&ch->prods[i].owner);
		uint64_t repairs;

		if (owner_state(o) == SHMBUS_SLOT_FREE ||
		    !gone(v, owner_pid(o)))
			continue;
		repairs = load_relaxed64(&ch->hdr->repairs);
		rc = sb_repair_prod(ch, i, owner_pid(o),
				    (uint32_t)sbd.self_pid);
		if (rc == -EAGAIN) {
			sbd_log(SBD_DEBUG, 0, "%s: producer slot %u of dead "
				"process %u: the claim before it is still open;"
				" later", c->name, i, owner_pid(o));
			continue;
		}
		if (rc == 1) {
			released++;
			sbd_log(SBD_NOTICE, 0, "%s: released producer slot %u "
				"of dead process %u%s", c->name, i,
				owner_pid(o),
				load_relaxed64(&ch->hdr->repairs) != repairs ?
					", its unfinished claim padded" : "");
		}
	}
	return released;
}

/* How long subscribers may wait on a position nothing live covers before
 * the watchdog reports it: five scans, and at least the repair bound. */
static int64_t stuck_after_ns(void)
{
	int64_t ns = 5 * (int64_t)sbd.conf.reap_ms * 1000000;

	return ns < 100000000 ? 100000000 : ns;
}

/*
 * Where the slowest subscriber waits for a record nothing will commit:
 * a position below head, in the current lap, whose word is not a commit,
 * and that no live producer's claim covers (single producer: a live role
 * holder; multi: a live slot announcing a claim at or before it, which
 * will hand over and commit in its turn).  UINT64_MAX if there is none.
 * Every value is checked before it addresses the ring.
 */
static uint64_t stuck_position(struct sbd_chan *c, struct verdicts *v)
{
	struct shmbus_channel *ch = c->ch;
	/* A12: pairs with R12 (the head CAS, or a single producer's
	 * claims before its hand-off). */
	uint64_t head = load_acquire64(&ch->hdr->head), pos = UINT64_MAX, w;
	uint32_t sp;

	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		struct shmbus_sub_slot *s = &ch->subs[i];
		uint64_t p;

		/* A7: pairs with R7 (the slot's ACTIVE store). */
		if (owner_state(load_acquire64(&s->owner)) !=
		    SHMBUS_SLOT_ACTIVE)
			continue;
		/* A5: pairs with R5 in publish_cursor(). */
		p = load_acquire64(&s->pos);
		if (p < pos && p < head && head - p < ch->cap &&
		    p % SHMBUS_REC_ALIGN == 0)
			pos = p;
	}
	if (pos == UINT64_MAX)
		return pos;
	/* A1: pairs with R1; only the tag is looked at. */
	w = load_acquire64(&rec_at(ch, pos)->commit);
	if (word_tag(w) == lap_tag(ch, pos))
		return UINT64_MAX;	/* it has something to read */
	if (!ch_multi(ch)) {
		/* A11: pairs with R11 (the role given back). */
		sp = load_acquire32(&ch->hdr->sp_owner) & ~SHMBUS_SP_REPAIRING;
		return sp && !gone(v, sp) ? UINT64_MAX : pos;
	}
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		struct shmbus_prod_slot *s = &ch->prods[i];
		/* A7: pairs with R7 (the slot's ACTIVE store). */
		uint64_t o = load_acquire64(&s->owner);

		/* A6: pairs with R6 (a claim announced or released). */
		if (owner_state(o) == SHMBUS_SLOT_ACTIVE &&
		    load_acquire64(&s->claim_pos) <= pos &&
		    !gone(v, owner_pid(o)))
			return UINT64_MAX;
	}
	return pos;
}

/* Logs what an operator (or a developer) needs to see why.  No edge: a
 * snapshot of the slots for the log, nothing acts on it. */
static void report_stuck(struct sbd_chan *c, uint64_t pos, int64_t ms)
{
	struct shmbus_channel *ch = c->ch;
	char slots[1024];
	size_t n = 0;

	slots[0] = 0;
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS && n < sizeof(slots);
	     i++) {
		struct shmbus_prod_slot *s = &ch->prods[i];
		uint64_t o = load_relaxed64(&s->owner);
		int k;

		if (owner_state(o) == SHMBUS_SLOT_FREE)
			continue;
		k = snprintf(slots + n, sizeof(slots) - n,
			     " [%u: pid %u%s, state %u, claim %llu..%llu]", i,
			     owner_pid(o),
			     sb_pid_gone(owner_pid(o)) ? " (gone)" : "",
			     owner_state(o),
			     (unsigned long long)load_relaxed64(&s->claim_pos),
			     (unsigned long long)load_relaxed64(&s->claim_end));
		if (k < 0)
			break;
		n += (size_t)k;
	}
	sbd_log(SBD_WARN, 0, "%s: stuck: subscribers have waited %lld ms at "
		"position %llu, which no live producer covers; head %llu, "
		"handoff %llu, word there %#llx, sp_owner %u; producer "
		"slots:%s", c->name, (long long)ms, (unsigned long long)pos,
		(unsigned long long)load_relaxed64(&ch->hdr->head),
		(unsigned long long)load_relaxed64(&ch->hdr->handoff),
		(unsigned long long)load_relaxed64(&rec_at(ch, pos)->commit),
		load_relaxed32(&ch->hdr->sp_owner), n ? slots : " none");
}

/* The watchdog: repairs should leave no position that subscribers wait on
 * with nothing live to fill it.  One that lasts is logged once, with the
 * slots' state, and counted in the header (busstat's STUCK). */
static void watch_channel(struct sbd_chan *c, struct verdicts *v)
{
	uint64_t pos = stuck_position(c, v);
	int64_t now = sb_now_ns();

	if (pos == UINT64_MAX) {
		c->wd_pos = UINT64_MAX;
		return;
	}
	if (pos != c->wd_pos || c->wd_since_ns == 0) {
		c->wd_pos = pos;
		c->wd_since_ns = now;
		c->wd_reported = false;
		return;
	}
	if (c->wd_reported || now - c->wd_since_ns < stuck_after_ns())
		return;
	c->wd_reported = true;
	add_relaxed64(&c->ch->hdr->stuck, 1);
	report_stuck(c, pos, (now - c->wd_since_ns) / 1000000);
}

unsigned sbd_reap_once(void)
{
	struct verdicts v = { .n = 0 };
	struct cds_lfht_iter it;
	struct sbd_chan *c;
	unsigned n = 0;

	rcu_read_lock();
	cds_lfht_for_each_entry(sbd_chans(), &it, c, node) {
		sbd_tsan_acquire(c);	/* pairs with sbd_chan_add() */
		n += reap_channel(c, &v);
		watch_channel(c, &v);
	}
	rcu_read_unlock();
	return n;
}

static void *reaper(void *arg)
{
	struct pollfd p = { .fd = kick_fd, .events = POLLIN };
	uint64_t junk;

	(void)arg;
	rcu_register_thread();
	while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
		if (poll(&p, 1, (int)sbd.conf.reap_ms) > 0 &&
		    read(kick_fd, &junk, sizeof(junk)) < 0)
			sbd_log(SBD_WARN, errno, "reaper: eventfd");
		sbd_reap_once();
	}
	rcu_unregister_thread();
	return NULL;
}

int sbd_reaper_start(void)
{
	int rc;

	kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (kick_fd < 0)
		return -errno;
	rc = pthread_create(&thread, NULL, reaper, NULL);
	return -rc;
}

void sbd_reaper_kick(void)
{
	uint64_t one = 1;

	if (kick_fd >= 0 && write(kick_fd, &one, sizeof(one)) < 0 &&
	    errno != EAGAIN)
		sbd_log(SBD_WARN, errno, "reaper: eventfd");
}

void sbd_reaper_stop(void)
{
	atomic_store_explicit(&stopping, true, memory_order_relaxed);
	sbd_reaper_kick();
	pthread_join(thread, NULL);
	close(kick_fd);
	kick_fd = -1;
}
