/* SPDX-License-Identifier: MIT */
/*
 * admission.c - who gets a place in shmbusd's client table.
 *
 * The client table has max_clients places.  A client is privileged if it
 * is root, the daemon's user or named by [bus] admins when it connects;
 * the others are ordinary.
 *
 *   - An ordinary uid holds at most max_clients_per_uid places, and the
 *     ordinary uids together at most max_clients - reserved_clients: the
 *     reserve is for privileged clients only, who have no per-uid limit.
 *   - A connection that has not completed a well-formed request is idle:
 *     it is closed idle_timeout_ms after it was accepted.  One that has is
 *     a client keeping its connection for crash detection: it is kept.
 *   - When the table (or the ordinary part of it) is full, a newcomer may
 *     evict the oldest idle connection of the ordinary uid holding the
 *     most places, if that uid holds more than the newcomer would after
 *     admission (any such uid, for a privileged newcomer).  Otherwise the
 *     newcomer is refused.  So a flooder loses places to a uid holding
 *     fewer, never the other way round, and a connection that spoke is
 *     never evicted.  The oldest idle one goes: a real client is idle only
 *     between its connect and its HELLO, so the newest idle connection is
 *     the one most likely to be a real client.
 *
 * The places ordinary uids hold are counted per uid in `uids`, sorted by
 * uid (at most one entry per ordinary client).  Refusals, evictions and
 * timeouts are counted in sbd and logged at most once a second each.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "shmbusd.h"
#include "../lib/contract.h"

struct uid_count {
	uid_t uid;
	unsigned n;		/* places held */
	unsigned idle;		/* of which idle */
};

static struct uid_count *uids;
static size_t nuids, uids_cap;
static struct sbd_client *idle_head, *idle_tail;	/* oldest first */
/* Refusals (here and in control.c), evictions, idle timeouts. */
struct sbd_ratelimit sbd_rl_refused;
static struct sbd_ratelimit rl_evicted, rl_idle;
/* The uid's entry, or NULL.  With add, a new entry is made (NULL only if
 * out of memory); that may move the others. */
static struct uid_count *uid_slot(uid_t uid, bool add)
{
	size_t lo = 0, hi = nuids;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (uids[mid].uid == uid)
			return &uids[mid];
		if (uids[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!add)
		return NULL;
	if (nuids == uids_cap) {
		size_t cap = uids_cap ? 2 * uids_cap : 16;
		struct uid_count *grown = realloc(uids, cap * sizeof(*uids));

		if (!grown)
			return NULL;
		uids = grown;
		uids_cap = cap;
	}
	memmove(&uids[lo + 1], &uids[lo], (nuids - lo) * sizeof(*uids));
	uids[lo] = (struct uid_count){ .uid = uid };
	nuids++;
	return &uids[lo];
}

static void uid_release(struct sbd_client *cl)
{
	struct uid_count *u = uid_slot(cl->uid, false);

	if (!u)
		return;
	u->n--;
	u->idle -= !cl->spoke;
	if (u->n == 0) {
		size_t i = (size_t)(u - uids);

		memmove(u, u + 1, (nuids - i - 1) * sizeof(*uids));
		nuids--;
	}
}

static void idle_unlink(struct sbd_client *cl)
{
	if (cl->idle_prev)
		cl->idle_prev->idle_next = cl->idle_next;
	else
		idle_head = cl->idle_next;
	if (cl->idle_next)
		cl->idle_next->idle_prev = cl->idle_prev;
	else
		idle_tail = cl->idle_prev;
	cl->idle_prev = cl->idle_next = NULL;
}

/* A well-formed request completed: the client is no longer idle. */
void sbd_admission_spoke(struct sbd_client *cl)
{
	struct uid_count *u;

	if (cl->spoke)
		return;
	cl->spoke = true;
	idle_unlink(cl);
	if (!cl->privileged && (u = uid_slot(cl->uid, false)))
		u->idle--;
}

bool sbd_admission_privileged(uid_t uid, const gid_t *gids, int ngids)
{
	return uid == 0 || uid == sbd.self_uid ||
	       sbd_rule_allows(&sbd.conf.admins, uid, gids, ngids);
}

/* Evicts the oldest idle connection of the ordinary uid (not `uid`) that
 * holds the most places, if it holds more than `floor`.  Returns whether
 * one was evicted. */
static bool evict_idle(const struct sbd_client *newcomer, unsigned floor)
{
	struct uid_count *v = NULL;
	struct sbd_client *cl;
	uid_t vuid;
	unsigned vn;

	for (size_t i = 0; i < nuids; i++)
		if (uids[i].idle && uids[i].uid != newcomer->uid &&
		    uids[i].n > floor && (!v || uids[i].n > v->n))
			v = &uids[i];
	if (!v)
		return false;
	vuid = v->uid;
	vn = v->n;
	for (cl = idle_head; cl; cl = cl->idle_next)
		if (!cl->privileged && cl->uid == vuid)
			break;
	if (!cl)
		return false;	/* not reached: v->idle counts them */
	sbd.evicted++;
	sbd_log_limited(&rl_evicted, SBD_NOTICE, sbd.evicted, "evicted",
		    "evicted pid %d (uid %u, idle for %llu ms) for pid %d "
		    "(uid %u): max_clients (%u) reached and uid %u holds the "
		    "most connections (%u)", (int)cl->pid, (unsigned)cl->uid,
		    (unsigned long long)(((uint64_t)sb_now_ns() - cl->since_ns) /
					 1000000),
		    (int)newcomer->pid, (unsigned)newcomer->uid,
		    sbd.conf.max_clients, (unsigned)vuid, vn);
	sbd_control_drop(cl);
	return true;
}

/* Whether the newcomer gets a place (evicting one if fair); otherwise
 * logs why not. */
bool sbd_admit(const struct sbd_client *cl)
{
	const struct sbd_conf *c = &sbd.conf;
	struct uid_count *u;
	unsigned have;

	if (cl->privileged) {
		if (sbd.nclients < c->max_clients || evict_idle(cl, 0))
			return true;
		goto full;
	}
	u = uid_slot(cl->uid, false);
	have = u ? u->n : 0;
	if (have >= c->max_clients_per_uid) {
		sbd.refused++;
		sbd_log_limited(&sbd_rl_refused, SBD_WARN, sbd.refused, "refused",
			    "refused pid %d (uid %u): the uid holds "
			    "max_clients_per_uid (%u) connections",
			    (int)cl->pid, (unsigned)cl->uid,
			    c->max_clients_per_uid);
		return false;
	}
	if ((sbd.nordinary < c->max_clients - c->reserved_clients &&
	     sbd.nclients < c->max_clients) ||
	    evict_idle(cl, have + 1))
		return true;
full:
	sbd.refused++;
	sbd_log_limited(&sbd_rl_refused, SBD_WARN, sbd.refused, "refused",
		    "refused pid %d (uid %u): max_clients (%u) reached (%u of "
		    "them reserved for root, the daemon's user and admins), "
		    "and no uid holding more has an idle connection",
		    (int)cl->pid, (unsigned)cl->uid, c->max_clients,
		    c->reserved_clients);
	return false;
}

/* Counts the admitted client in: it is idle until it completes a
 * request.  Returns -ENOMEM if its uid cannot be counted. */
int sbd_admission_enter(struct sbd_client *cl)
{
	struct uid_count *u;

	if (!cl->privileged) {
		u = uid_slot(cl->uid, true);
		if (!u)
			return -ENOMEM;
		u->n++;
		u->idle++;
		sbd.nordinary++;
	}
	sbd.nclients++;
	cl->since_ns = (uint64_t)sb_now_ns();
	cl->idle_prev = idle_tail;
	cl->idle_next = NULL;
	if (idle_tail)
		idle_tail->idle_next = cl;
	else
		idle_head = cl;
	idle_tail = cl;
	return 0;
}

void sbd_admission_leave(struct sbd_client *cl)
{
	if (!cl->spoke)
		idle_unlink(cl);
	if (!cl->privileged) {
		uid_release(cl);
		sbd.nordinary--;
	}
	sbd.nclients--;
}

/* Closes the idle connections whose timeout has passed (a request that
 * waits unread is read first: the daemon may have been slow, not the
 * client).  Returns the ms until the next one times out, or -1. */
int sbd_admission_expire(uint64_t now)
{
	uint64_t timeout = (uint64_t)sbd.conf.idle_timeout_ms * 1000000u;
	uint64_t wait;

	while (idle_head && now - idle_head->since_ns >= timeout) {
		struct sbd_client *cl = idle_head;

		if (!sbd_control_serve(cl)) {
			sbd_control_drop(cl);
			continue;
		}
		if (cl->spoke)
			continue;
		sbd.timed_out++;
		sbd_log_limited(&rl_idle, SBD_NOTICE, sbd.timed_out, "closed",
				"closed pid %d (uid %u): no complete request "
				"within idle_timeout_ms (%u)", (int)cl->pid,
				(unsigned)cl->uid, sbd.conf.idle_timeout_ms);
		sbd_control_drop(cl);
	}
	if (!idle_head)
		return -1;
	wait = (idle_head->since_ns + timeout - now + 999999) / 1000000;
	return wait > INT_MAX ? INT_MAX : (int)wait;
}
