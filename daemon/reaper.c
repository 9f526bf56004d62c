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
#include "shmbus/layout.h"
#include "../lib/contract.h"

static pthread_t thread;
static int kick_fd = -1;
/* Set by the main thread, read by the reaper; the eventfd wakes it. */
static atomic_bool stopping;

/* A small cache of verdicts, one scan long: a live owner (pid and start
 * tag) is looked up once per scan, whatever number of slots it holds.  An
 * owner found gone is looked up again each time (a repair follows,
 * rarely): a process given the same pid later in the scan must not have
 * its untagged slots repaired. */
struct verdicts {
	uint32_t pid[128];
	uint32_t tag[128];
	bool gone[128];
	unsigned n;
};

static bool gone(struct verdicts *v, uint32_t pid, uint32_t tag)
{
	bool g;

	for (unsigned i = 0; i < v->n; i++)
		if (v->pid[i] == pid && v->tag[i] == tag)
			return v->gone[i] ? (v->gone[i] =
						     sb_owner_gone_as(pid, tag))
					  : false;
	g = sb_owner_gone_as(pid, tag);	/* lib/pid.c */
	if (v->n < 128) {
		v->pid[v->n] = pid;
		v->tag[v->n] = tag;
		v->gone[v->n++] = g;
	}
	return g;
}

static bool gone_cb(void *ctx, uint32_t pid, uint32_t tag)
{
	return gone(ctx, pid, tag);
}

/* sb_reap()'s report of each repair, as a log line. */
static void log_repair(void *ctx, const struct sb_reap_ev *ev)
{
	const struct sbd_chan *c = ctx;

	switch (ev->what) {
	case SB_REAP_SUB:
		sbd_log(SBD_NOTICE, 0, "%s: released subscriber slot %u of "
			"dead process %u", c->name, ev->slot, ev->pid);
		break;
	case SB_REAP_SP:
		sbd_log(SBD_NOTICE, 0, "%s: padded the unfinished claim of "
			"dead producer %u", c->name, ev->pid);
		break;
	case SB_REAP_SP_DAMAGED:
		sbd_log(SBD_ERR, 0, "%s: the ring is damaged at %llu (a "
			"header written over, committed records after it): "
			"the claim of dead producer %u is not padded over "
			"them", c->name, (unsigned long long)ev->pos, ev->pid);
		break;
	case SB_REAP_HANDOFF:
		sbd_log(SBD_NOTICE, 0, "%s: handed over and padded the claim "
			"at %llu of a dead producer", c->name,
			(unsigned long long)ev->pos);
		break;
	case SB_REAP_HANDOFF_SKIP:
		sbd_log(SBD_WARN, 0, "%s: the hand-off word stood at %llu, "
			"where no claim is (written over): moved on", c->name,
			(unsigned long long)ev->pos);
		break;
	case SB_REAP_PROD_LATER:
		sbd_log(SBD_DEBUG, 0, "%s: producer slot %u of dead process "
			"%u: the claim before it is still open; later",
			c->name, ev->slot, ev->pid);
		break;
	case SB_REAP_SP_OWNER: {
		/* Limited: a hostile writer may do it again every scan. */
		static struct sbd_ratelimit rl;
		static unsigned long n;

		sbd_log_limited(&rl, SBD_WARN, ++n, "producer roles given back",
				"%s: the producer role named gone process "
				"%llu while pid %u produces (written over): "
				"given back to it, nothing padded", c->name,
				(unsigned long long)ev->pos, ev->pid);
		break;
	}
	case SB_REAP_FENCE: {
		/* Limited: a hostile writer may do it again every scan. */
		static struct sbd_ratelimit rl;
		static unsigned long n;

		sbd_log_limited(&rl, SBD_WARN, ++n, "fences set back",
				"%s: the fence word was %#llx (written over): "
				"set back to the daemon's (%s)", c->name,
				(unsigned long long)ev->pos,
				ev->slot == SHMBUS_FENCE_OPEN ? "open" :
				ev->slot == SHMBUS_FENCE_STANDBY ? "standby" :
				ev->slot == SHMBUS_FENCE_HANDOVER ? "handover"
								  : "cut");
		break;
	}
	case SB_REAP_ACK_WORD: {
		/* Limited: a hostile writer may do it again every scan. */
		static struct sbd_ratelimit rl;
		static unsigned long n;
		static const char *const names[SB_ACKW_N] = {
			[SB_ACKW_MARK] = "the watermark",
			[SB_ACKW_RECEIVED] = "the standby's received position",
			[SB_ACKW_APPLIED] = "the standby's applied position",
			[SB_ACKW_SB_PERSISTED] =
				"the standby's persisted position",
			[SB_ACKW_HOLE_LO] = "the gap's start",
			[SB_ACKW_HOLE_HI] = "the gap's end",
			[SB_ACKW_PERSISTED] = "the journal's persisted position",
			[SB_ACKW_WRITTEN] = "the journal's written position",
			[SB_ACKW_JSTATE] = "the journal's state",
		};

		sbd_log_limited(&rl, SBD_WARN, ++n, "acknowledgement words set "
				"back", "%s: %s was %llu (written over): set "
				"back to the daemon's", c->name,
				ev->slot < SB_ACKW_N ? names[ev->slot] : "?",
				(unsigned long long)ev->pos);
		break;
	}
	case SB_REAP_REPL_FLAGS:
	case SB_REAP_REPL_LEVEL:
	case SB_REAP_EPOCH: {
		/* Limited: a hostile writer may do it again every scan. */
		static struct sbd_ratelimit rl;
		static unsigned long n;

		if (ev->what == SB_REAP_REPL_FLAGS)
			sbd_log_limited(&rl, SBD_WARN, ++n,
					"replication words set back",
					"%s: the replication flags were %#llx "
					"(written over): set back to the "
					"daemon's (%#x)", c->name,
					(unsigned long long)ev->pos, ev->slot);
		else if (ev->what == SB_REAP_REPL_LEVEL)
			sbd_log_limited(&rl, SBD_WARN, ++n,
					"replication words set back",
					"%s: the replication level was %llu "
					"(written over): set back to the "
					"daemon's (%u)", c->name,
					(unsigned long long)ev->pos, ev->slot);
		else
			sbd_log_limited(&rl, SBD_WARN, ++n,
					"replication words set back",
					"%s: the ring's epoch was %llu "
					"(written over): set back to the "
					"daemon's", c->name,
					(unsigned long long)ev->pos);
		break;
	}
	case SB_REAP_HWM: {
		/* Limited: a hostile writer may do it again every scan. */
		static struct sbd_ratelimit rl;
		static unsigned long n;

		sbd_log_limited(&rl, SBD_WARN, ++n, "high-water marks raised",
				"%s: the subscriber slots' high-water mark was "
				"%llu, below slot %u in use (written over): "
				"raised", c->name, (unsigned long long)ev->pos,
				ev->slot);
		break;
	}
	case SB_REAP_IDENT: {
		/* Limited: a hostile writer may do it again every scan. */
		static struct sbd_ratelimit rl;
		static unsigned long n;

		sbd_log_limited(&rl, SBD_WARN, ++n, "headers set back",
				"%s: %u words of the header's identity were "
				"written over: set back", c->name, ev->slot);
		break;
	}
	case SB_REAP_PROD:
		sbd_log(SBD_NOTICE, 0, "%s: released producer slot %u of dead "
			"process %u%s", c->name, ev->slot, ev->pid,
			ev->padded ? ", its unfinished claim padded" : "");
		break;
	}
}

static unsigned reap_channel(struct sbd_chan *c, struct verdicts *v)
{
	return sb_reap(c->ch, (uint32_t)sbd.self_pid, gone_cb, v,
		       &c->handoff_seen, log_repair, c);
}

/* How long subscribers may wait on a position nothing live covers before
 * the watchdog reports it: five scans, and at least the repair bound. */
static int64_t stuck_after_ns(void)
{
	int64_t ns = 5 * (int64_t)sbd.conf.reap_ms * 1000000;

	return ns < 100000000 ? 100000000 : ns;
}

/* Logs what an operator (or a developer) needs to see why. */
static void report_stuck(struct sbd_chan *c, uint64_t pos, int64_t ms)
{
	char state[1400];

	sb_stuck_describe(c->ch, pos, state, sizeof(state));
	sbd_log(SBD_WARN, 0, "%s: stuck: subscribers have waited %lld ms at "
		"position %llu, which no live producer covers; %s", c->name,
		(long long)ms, (unsigned long long)pos, state);
}

/* The watchdog: repairs should leave no position that subscribers wait on
 * with nothing live to fill it.  One that lasts is logged once, with the
 * slots' state, and counted in the header (busstat's STUCK). */
static void watch_channel(struct sbd_chan *c, struct verdicts *v)
{
	uint64_t pos = sb_stuck_position(c->ch, gone_cb, v);
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
	sb_count_stuck(c->ch);
	report_stuck(c, pos, (now - c->wd_since_ns) / 1000000);
}

unsigned sbd_reap_once(void)
{
	struct verdicts v = { .n = 0 };
	struct cds_lfht_iter it;
	struct sbd_chan *c;
	unsigned n = 0;

	sbd_groups_scan_begin();
	rcu_read_lock();
	cds_lfht_for_each_entry(sbd_chans(), &it, c, node) {
		sbd_tsan_acquire(c);	/* pairs with sbd_chan_add() */
		if (sbd_chan_cut(c))
			continue;
		n += reap_channel(c, &v);
		watch_channel(c, &v);
		sbd_groups_maintain(c);
	}
	rcu_read_unlock();
	sbd_faults_check();
	return n;
}

static void *reaper(void *arg)
{
	struct pollfd p = { .fd = kick_fd, .events = POLLIN };
	int wait_ms = (int)sbd.conf.reap_ms;
	uint64_t junk;

	(void)arg;
	sbd_thread_setup("sb-reaper", false);
	rcu_register_thread();
	while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
		bool kicked = poll(&p, 1, wait_ms) > 0;

		if (kicked && read(kick_fd, &junk, sizeof(junk)) < 0)
			sbd_log(SBD_WARN, errno, "reaper: eventfd");
		sbd_reap_once();
		/* A process's files are closed (its connection with them:
		 * the kick) a little before it becomes a zombie, which is
		 * when sb_pid_gone() first says it is gone: after a kick,
		 * look again 1, 2, 4 ... ms later, up to the interval.
		 * test_repair, 9 runs each way: a dead single producer's
		 * claim repaired in at most 2.4 ms, against 11 ms in 2 runs
		 * of 9 that waited for the periodic scan. */
		wait_ms = kicked ? 1 : wait_ms * 2 < (int)sbd.conf.reap_ms ?
				       wait_ms * 2 : (int)sbd.conf.reap_ms;
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
