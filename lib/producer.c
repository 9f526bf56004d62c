/* SPDX-License-Identifier: MIT */
/*
 * producer.c - opening and closing a publisher: the single producer's
 * role, taken over from a dead holder after repair, and the producer slot
 * that announces claims and counts for busstat.  Claiming and committing
 * are publish.c's (publish_sp.c, publish_mp.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "contract.h"
#include "pub.h"
#include "repair.h"

/* How long a producer waits for shmbusd to finish padding a dead
 * producer's claim before it gives up with -EBUSY (a stopped daemon). */
#define SP_REPAIR_WAIT_NS	1000000000
#define SP_NAP_MIN_NS		20000		/* 20 us, doubling... */
#define SP_NAP_MAX_NS		1000000		/* ...up to 1 ms */

static bool pid_gone(void *ctx, uint32_t pid, uint32_t tag)
{
	(void)ctx;
	return sb_owner_gone_as(pid, tag);
}

/*
 * The single-producer roles this process holds: its handles that took
 * one, listed from the CAS that took the role to the one that gives it
 * back, under `roles_lock`.  A role word that names this process's own
 * pid is this process's only if one of them holds that channel's role
 * (or this process is repairing it, sb_sp_repairing_here()): otherwise it
 * was left by a process that died and whose pid this process has since
 * been given, which never holds it again.  Judged by the pid alone, such
 * a word would look alive to this process for as long as it lives, which
 * refused it the role and left the dead claim unrepaired for ever.  A
 * fork's child holds none of its parent's roles (its pid is not theirs):
 * its list starts empty.
 */
static pthread_mutex_t roles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shmbus_pub *roles;
static pthread_once_t roles_once = PTHREAD_ONCE_INIT;

static void roles_prepare(void)
{
	pthread_mutex_lock(&roles_lock);
}

static void roles_parent(void)
{
	pthread_mutex_unlock(&roles_lock);
}

static void roles_child(void)
{
	for (struct shmbus_pub *p = roles, *next; p; p = next) {
		next = p->role_next;
		p->role_next = NULL;
		p->role_listed = false;
	}
	roles = NULL;
	pthread_mutex_unlock(&roles_lock);
}

static void roles_atfork(void)
{
	pthread_atfork(roles_prepare, roles_parent, roles_child);
}

/* Under roles_lock. */
static void role_list(struct shmbus_pub *pub)
{
	pub->role_next = roles;
	roles = pub;
	pub->role_listed = true;
}

/* Under roles_lock. */
static void role_unlist(struct shmbus_pub *pub)
{
	for (struct shmbus_pub **pp = &roles; *pp; pp = &(*pp)->role_next)
		if (*pp == pub) {
			*pp = pub->role_next;
			break;
		}
	pub->role_next = NULL;
	pub->role_listed = false;
}

/* Under roles_lock: whether a handle of this process holds the role of
 * the channel `ch` maps (any mapping of it: the data id names it). */
static bool role_held_here(const struct shmbus_channel *ch)
{
	for (const struct shmbus_pub *p = roles; p; p = p->role_next)
		if (p->ch->data_id == ch->data_id)
			return true;
	return false;
}

/* Under roles_lock: whether the holder that role word `w` names is gone
 * for good (lib/pid.c: its pid, and its start tag); this process's own
 * pid when none of its handles holds the role and it is not repairing
 * one, or the word has another process's start tag. */
static bool sp_holder_gone(const struct shmbus_channel *ch, uint64_t w)
{
	uint32_t pid = role_pid(w), tag = role_tag(w);

	if (pid != (uint32_t)getpid())
		return sb_owner_gone_as(pid, tag);
	/* Our pid while a handle of ours holds the role, whatever the tag
	 * or the repairing bit: written over (only a dead holder's role is
	 * marked, and we are alive), and our producer's claim is not a
	 * dead one's. */
	if (role_held_here(ch))
		return false;
	/* A mark with our pid and tag (or none) is our repair's while one
	 * runs; another start's is a dead process's whose pid we were
	 * given. */
	if (w & SHMBUS_SP_REPAIRING)
		return !sb_sp_repairing_here() ||
		       (tag && sb_self_tag() && tag != sb_self_tag());
	return true;
}

bool sb_sp_role_gone(const struct shmbus_channel *ch, uint64_t w)
{
	bool gone;

	pthread_once(&roles_once, roles_atfork);
	pthread_mutex_lock(&roles_lock);
	gone = sp_holder_gone(ch, w);
	pthread_mutex_unlock(&roles_lock);
	return gone;
}

bool sb_sp_role_lock_gone(const struct shmbus_channel *ch, uint64_t w)
{
	pthread_once(&roles_once, roles_atfork);
	pthread_mutex_lock(&roles_lock);
	return sp_holder_gone(ch, w);
}

void sb_sp_role_unlock(void)
{
	pthread_mutex_unlock(&roles_lock);
}

static int take_sp_role(struct shmbus_channel *ch, struct shmbus_pub *pub)
{
	uint32_t me = (uint32_t)getpid();
	uint64_t mine = role_word(me, 0);
	struct timespec nap = { .tv_nsec = SP_NAP_MIN_NS };
	int64_t give_up = 0;

	pthread_once(&roles_once, roles_atfork);
	for (;;) {
		uint64_t cur = 0;
		bool took, gone = false;

		/* The CAS that takes the role and the handle's listing are
		 * one step for the threads of this process: none of them
		 * sees the role word name us while no handle holds it. */
		pthread_mutex_lock(&roles_lock);
		/* A11: pairs with R11 in shmbus_pub_close() and
		 * sb_repair_sp(): the producer role is handed over through
		 * sp_owner, and this seq_cst RMW reads the previous owner's
		 * releasing CAS, so its stores to head and seq are
		 * visible. */
		took = cas_strong_seqcst64(&ch->pl->sp_owner, &cur, mine);
		/* The previous producer (or its repairer) is gone (a killed
		 * one its parent has not reaped yet included: the daemon's
		 * test, lib/pid.c): take over, then repair its unfinished
		 * claim. */
		if (!took && (gone = sp_holder_gone(ch, cur))) {
			/* A gone process named (as holder or repairer) while
			 * a live one holds a producer slot, or while a handle
			 * of ours holds the role: the word was written over
			 * under that producer, whose claim must not be
			 * padded (repair.h).  Left to shmbusd's scan, which
			 * gives it back. */
			if (role_held_here(ch) ||
			    sb_sp_live_holder(ch, cur, me, pid_gone, NULL)) {
				pthread_mutex_unlock(&roles_lock);
				return -EBUSY;
			}
			/* A11, as above; a word that changed meanwhile (a
			 * new holder) is left alone. */
			took = cas_strong_seqcst64(&ch->pl->sp_owner, &cur,
						   mine);
		}
		if (took) {
			pub->role_word = mine;
			role_list(pub);
		}
		pthread_mutex_unlock(&roles_lock);
		if (took) {
			if (gone)
				sb_sp_repair(ch, NULL);
			return 0;
		}
		if (gone)
			continue;	/* another process took it first */
		if (!(cur & SHMBUS_SP_REPAIRING))
			return -EBUSY;
		/* shmbusd is padding a dead producer's claim: a few
		 * microseconds of its time.  Sleep rather than yield, so
		 * that the repairer is not kept from a CPU by us; give up on
		 * a daemon that is stopped. */
		if (give_up == 0)
			give_up = sb_now_ns() + SP_REPAIR_WAIT_NS;
		else if (sb_now_ns() > give_up)
			return -EBUSY;
		nanosleep(&nap, NULL);
		if (nap.tv_nsec < SP_NAP_MAX_NS)
			nap.tv_nsec *= 2;
	}
}

static struct shmbus_prod_slot *take_prod_slot(struct shmbus_channel *ch)
{
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		struct shmbus_prod_slot *s = &ch->prods[i];
		uint64_t o = load_acquire64(&s->owner);	/* A7 */
		uint32_t st = owner_state(o);
		bool took;
		int held;

		/* A slot of a dead process is taken over, unless it holds an
		 * open multi-producer claim: that is shmbusd's to repair
		 * (sb_repair_prod()), and its claim_pos must keep holding
		 * other producers back until then.  So is one left BUSY by
		 * a process that died setting it up (as sb_repair_prod()
		 * frees it): without shmbusd nobody else would.  A BUSY
		 * slot announces nothing (only an ACTIVE slot's claim_pos
		 * counts, sb_refresh_limit()): its word may be a fresh
		 * slot's 0.  A6: pairs with R6 (the claim released). */
		if (st != SHMBUS_SLOT_FREE &&
		    ((st != SHMBUS_SLOT_ACTIVE && st != SHMBUS_SLOT_BUSY) ||
		     sb_slot_alive(ch, SB_HELD_PROD, i, o) ||
		     (st == SHMBUS_SLOT_ACTIVE &&
		      load_acquire64(&s->claim_pos) != UINT64_MAX)))
			continue;
		/* Listed first; a word naming our pid is judged again (a
		 * thread of ours may have taken the slot since) under the
		 * lock the CAS is made under (pid.c). */
		if (!(held = sb_held_begin(ch, SB_HELD_PROD, i, o)))
			continue;
		/* A13: pairs with R13 (the slot freed by its previous owner
		 * or a repair).  Claims the slot for us alone: the state and
		 * the dead pid in one compare. */
		took = cas_strong_seqcst64(&s->owner, &o,
					   own_word(SHMBUS_SLOT_BUSY));
		sb_held_end(ch, SB_HELD_PROD, i, held, took);
		if (!took)
			continue;
		store_relaxed64(&s->published, 0);
		store_relaxed64(&s->claim_end, UINT64_MAX);
		store_release64(&s->claim_pos, UINT64_MAX);	/* R6 */
		memset(s->comm, 0, sizeof(s->comm));
		prctl(PR_GET_NAME, s->comm);
		/* R7: pairs with A7 wherever a slot is read: the fields
		 * above are visible to whoever sees it ACTIVE. */
		store_release64(&s->owner, own_word(SHMBUS_SLOT_ACTIVE));
		/* Taken from a dead process, which may have died between
		 * its last commit and its wake-up call. */
		if (st == SHMBUS_SLOT_ACTIVE)
			sb_wake_check(ch);
		return s;
	}
	return NULL;
}

void sb_pub_init(struct shmbus_pub *pub, struct shmbus_channel *ch)
{
	pub->ch = ch;
	pub->hdr = ch->hdr;
	pub->mbox = ch->mbox;
	pub->daemon = ch->daemon;
	pub->data = ch->data;
	pub->mask = ch->mask;
	pub->cap = ch->cap;
	pub->max_msg = ch->max_msg;
	pub->seg_log2 = ch->seg_log2;
	pub->cap_log2 = ch->cap_log2;
	pub->small_max = ch_mbox_max(ch);
	pub->multi = ch_multi(ch);
}

/* In a fork's child, the copy of a parent's publisher: its claims and
 * commits say -EPERM (a single producer's claims reach the slow path, for
 * want of room, and it is fenced; a multi producer's look at `forked`
 * first; the parent's claim is not the copy's to commit). */
static void pub_forked(struct sb_forkable *f)
{
	struct shmbus_pub *pub = sb_container_of(f, struct shmbus_pub, fork);

	pub->forked = true;
	pub->fenced = true;
	pub->room = 0;
	pub->claimed = false;
}

SHMBUS_EXPORT shmbus_pub *shmbus_pub_open(shmbus_channel *ch,
					  const struct shmbus_pub_attr *attr)
{
	struct shmbus_pub *pub;
	uint32_t fence;
	int rc;

	if (!ch || ch->rdonly || ch->no_pub) {
		errno = ch ? EPERM : EINVAL;
		return NULL;
	}
	/* No edge: a refusal made early; the claims compare the word
	 * again, on the edge that counts (F4). */
	fence = load_relaxed32(&ch->daemon->fence);
	if (SHMBUS_FENCE_STATE(fence) != SHMBUS_FENCE_OPEN) {
		errno = EROFS;
		return NULL;
	}
	/* What a dead process with our pid left: nobody else repairs it
	 * while we live.  Whether this open succeeds or not (a single
	 * producer refused with EBUSY keeps trying, say). */
	sb_release_own_left(ch, true);
	pub = calloc(1, sizeof(*pub));
	if (!pub) {
		errno = ENOMEM;
		return NULL;
	}
	sb_pub_init(pub, ch);
	pub->opener = (uint32_t)getpid();
	pub->fence_word = fence;
	/* room stays 0 (calloc): the first claim is a slow one, which sets
	 * it (sp_set_room() in publish_sp.c); a multi producer's stays 0. */
	/* Overwrite, single producer: nothing ever holds it back. */
	pub->limit = ch_overwrite(ch) && !pub->multi ? UINT64_MAX : 0;
	pub->timeout_ns = attr ? attr->timeout_ns : 0;
	if (!ch_multi(ch)) {
		rc = take_sp_role(ch, pub);
		if (rc) {
			free(pub);
			errno = -rc;
			return NULL;
		}
		/* A11 (ordered after the sp_owner CAS above): the previous
		 * producer's head and seq. */
		pub->head = load_acquire64(&ch->pl->head);
		if (pub->head % SHMBUS_REC_ALIGN) {
			shmbus_pub_close(pub);
			errno = EBADMSG;
			return NULL;
		}
		pub->seq = load_relaxed64(&ch->pl->seq);
		pub->bytes = load_relaxed64(&ch->pl->bytes);
	}
	/* What shmbus_pub_sync() answers for starts with this handle's
	 * records: a gap recorded below them is not theirs.  No edge: head
	 * only grows, and our claims start at or above any value of it. */
	pub->synced = pub->multi ? load_relaxed64(&ch->pl->head) : pub->head;
	pub->slot = take_prod_slot(ch);
	if (!pub->slot && ch_multi(ch)) {
		/* A multi-producer claim is announced in the slot. */
		free(pub);
		errno = ENOSPC;
		return NULL;
	}
	sb_fork_track(&pub->fork, pub_forked);
	return pub;
}

void sb_pub_bounded(shmbus_pub *pub)
{
	pub->bounded = true;
	pub->hv_since = -1;
}

SHMBUS_EXPORT void shmbus_pub_close(shmbus_pub *pub)
{
	uint64_t me;

	if (!pub)
		return;
	sb_fork_untrack(&pub->fork);
	if (pub->role_listed && (pub->forked ||
				 (pub->opener && pub->opener != (uint32_t)getpid()))) {
		/* A copy made by a clone() that ran no fork handler:
		 * unlisted here, the role is its parent's. */
		pthread_mutex_lock(&roles_lock);
		role_unlist(pub);
		pthread_mutex_unlock(&roles_lock);
	}
	/* A fork's copy of the handle: the slot, the role and any claim are
	 * the parent's, which goes on using them (or, if it closed them,
	 * perhaps this process's own new publisher's): only the copy goes. */
	if (pub->forked ||
	    (pub->opener && pub->opener != (uint32_t)getpid())) {
		free(pub);
		return;
	}
	if (pub->claimed)
		shmbus_abort(pub);
	if (pub->slot) {
		store_relaxed64(&pub->slot->claim_pos, UINT64_MAX);
		/* R13: pairs with A13 in take_prod_slot(): our last stores
		 * to the slot precede its reuse. */
		store_release64(&pub->slot->owner,
				owner_word(SHMBUS_SLOT_FREE, 0));
		sb_held_drop(pub->ch, SB_HELD_PROD,
			     (uint32_t)(pub->slot - pub->ch->prods));
	}
	if (pub->role_listed) {
		me = pub->role_word;
		pthread_mutex_lock(&roles_lock);
		role_unlist(pub);
		/* R11: pairs with A11 in take_sp_role().  On failure `me`
		 * holds the word found: the role given back to us by
		 * shmbusd (sb_sp_give_back(), with our slot's tag, which a
		 * first failure to read our start may have left out of the
		 * word we took it with) is ours too. */
		if (!cas_strong_seqcst64(&pub->ch->pl->sp_owner, &me, 0) &&
		    role_pid(me) == (uint32_t)getpid() &&
		    !(me & SHMBUS_SP_REPAIRING) &&
		    (!role_tag(me) || role_tag(me) == sb_self_tag()))
			/* R11, as above. */
			cas_strong_seqcst64(&pub->ch->pl->sp_owner, &me, 0);
		pthread_mutex_unlock(&roles_lock);
	}
	free(pub);
}
