/* SPDX-License-Identifier: MIT */
/*
 * reap.c - shmbusd's scan of a channel: the slots of processes that are
 * gone, repaired (repair.c), and the watchdog's question, whether
 * subscribers wait on a position that nothing live will fill.
 *
 * The daemon decides who is gone (it caches its verdicts for one scan)
 * and writes the log; everything that reads the channel is here, so
 * that the daemon uses channels only through lib/contract.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>

#include "channel.h"
#include "contract.h"
#include "repair.h"

static void say(sb_reap_log_fn log, void *lctx, enum sb_reap_event what,
		uint32_t slot, uint32_t pid, uint64_t pos, bool padded)
{
	struct sb_reap_ev ev = { .what = what, .slot = slot, .pid = pid,
				 .pos = pos, .padded = padded };

	if (log)
		log(lctx, &ev);
}

unsigned sb_reap(struct shmbus_channel *ch, uint32_t self, sb_gone_fn gone,
		 void *gctx, uint64_t *handoff_seen, sb_reap_log_fn log,
		 void *lctx)
{
	unsigned released = 0;
	uint32_t top = 0, hwm, forged, flags, level;
	uint64_t sp;
	uint64_t epoch;
	unsigned put;
	int rc;

	/* The replication words that this process set, written over (by a
	 * process that can write the data file: a publisher of a standby's
	 * time as primary could open its ring's fence to producers, one of a
	 * primary clear its out-of-sync flag), are set back to the words it
	 * stored. */
	if (sb_fence_restore(ch, &forged) == 1)
		say(log, lctx, SB_REAP_FENCE, sb_fence_get(ch), 0, forged,
		    false);
	put = sb_repl_restore(ch, &flags, &level, &epoch);
	if (put & 1)
		say(log, lctx, SB_REAP_REPL_FLAGS, sb_repl_flags(ch, 0, 0), 0,
		    flags, false);
	if (put & 4)
		say(log, lctx, SB_REAP_REPL_LEVEL, sb_repl_level(ch), 0, level,
		    false);
	if (put & 2)
		say(log, lctx, SB_REAP_EPOCH, 0, 0, epoch, false);
	/* The acknowledgement and journal words likewise: a watermark or a
	 * position written forward tells the readers of shared memory what
	 * the daemon never said, until it stores the word again. */
	{
		uint64_t found[SB_ACKW_N];

		put = sb_ack_restore(ch, found);
		for (uint32_t i = 0; i < SB_ACKW_N; i++)
			if (put & (1u << i))
				say(log, lctx, SB_REAP_ACK_WORD, i, 0,
				    found[i], false);
	}
	/* The identity lines, which every open validates, as this process
	 * validated them. */
	put = sb_ident_restore(ch);
	if (put)
		say(log, lctx, SB_REAP_IDENT, put, 0, 0, false);

	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		/* A7: pairs with R7 (the slot's ACTIVE store, after its
		 * raise of the high-water mark, below).  sb_repair_sub()
		 * re-reads the word and compares it in its CAS. */
		uint64_t o = load_acquire64(&ch->subs[i].owner);

		if (sb_slot_gates(o))
			top = i + 1;
		if (owner_state(o) == SHMBUS_SLOT_FREE ||
		    (sb_word_is_ours(o) ? sb_held_here(ch, SB_HELD_SUB, i)
					: !gone(gctx, owner_pid(o),
						owner_tag(o))))
			continue;
		if (sb_repair_sub(ch, i, o, self) == 1) {
			released++;
			say(log, lctx, SB_REAP_SUB, i, owner_pid(o), 0, false);
		}
	}
	/* Every slot that holds producers was counted in the mark before it
	 * did (sb_hwm_raise()); one below it is damage, which would let a
	 * block-policy producer that scans only the slots below the mark
	 * pass that slot's cursor (this library's scan them all). */
	hwm = load_relaxed32(&ch->hdr->nsub_hwm);
	if (hwm < top) {
		sb_hwm_raise(ch->hdr, top);
		say(log, lctx, SB_REAP_HWM, top - 1, 0, hwm, false);
	}
	/* A standby's ring (or one being cut back) is written by its
	 * replication agent alone: what
	 * a dead producer left there was settled before the ring changed
	 * hands (sb_fence_quiesce() waits for it), and a repair now would
	 * pad over records the agent is writing.  Its slots are released
	 * once the host is primary again.  No edge: the fence is set before
	 * the agent writes (sb_fence_set()).  The fence as this process set
	 * it, not as the shared word says (see sb_fence_restore() above). */
	if (sb_fence_get(ch) == SHMBUS_FENCE_STANDBY ||
	    sb_fence_get(ch) == SHMBUS_FENCE_CUT)
		return released;
	if (!ch_multi(ch)) {
		uint64_t bad = 0;
		uint32_t live, pid;

		sp = load_relaxed64(&ch->pl->sp_owner);
		/* The role's holder, or its repairer, gone: a word naming
		 * our own pid was left by a dead holder (or a previous
		 * shmbusd that died repairing) whose pid we were given,
		 * unless we hold or repair the role.  But if a live producer
		 * holds a slot, the word was written over under it: its
		 * claim is not a dead one's, and the role is given back to
		 * it (sb_sp_give_back()); else the dead claim is padded (a
		 * previous shmbusd that died repairing: finished). */
		pid = role_pid(sp);
		if (sp && (pid == self ? sb_sp_role_gone(ch, sp)
				       : gone(gctx, pid, role_tag(sp)))) {
			bool given;

			live = sb_sp_give_back(ch, sp, self, gone, gctx,
					       &given);
			if (live && given)
				say(log, lctx, SB_REAP_SP_OWNER, 0, live, pid,
				    false);
			rc = live ? 0 : sb_repair_sp(ch, sp, self, &bad);
		} else {
			rc = 0;
		}
		if (rc == 1)
			say(log, lctx, SB_REAP_SP, 0, role_pid(sp), 0, true);
		else if (rc == -EBADMSG)
			say(log, lctx, SB_REAP_SP_DAMAGED, 0, role_pid(sp), bad,
			    false);
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
		uint64_t x = load_acquire64(&ch->pl->handoff);

		if (n == 0 && x != *handoff_seen) {
			*handoff_seen = x;
			break;
		}
		rc = sb_handoff_help(ch, x, self, sb_owner_gone_as);
		/* A word no claim explains, unmoved since the last scan:
		 * written over.  Producers waiting behind it move it on
		 * themselves; this heals a ring nobody claims in now. */
		if (rc == SB_HELP_NOBODY && sb_handoff_skip(ch, x))
			say(log, lctx, SB_REAP_HANDOFF_SKIP, 0, 0, x, false);
		if (rc != SB_HELP_DONE)
			break;
		say(log, lctx, SB_REAP_HANDOFF, 0, 0, x, true);
	}
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		uint64_t o = load_relaxed64(&ch->prods[i].owner);
		uint64_t repairs;

		if (owner_state(o) == SHMBUS_SLOT_FREE ||
		    (sb_word_is_ours(o) ? sb_held_here(ch, SB_HELD_PROD, i)
					: !gone(gctx, owner_pid(o),
						owner_tag(o))))
			continue;
		repairs = load_relaxed64(&ch->hdr->repairs);
		rc = sb_repair_prod(ch, i, o, self);
		if (rc == -EAGAIN) {
			say(log, lctx, SB_REAP_PROD_LATER, i, owner_pid(o), 0,
			    false);
			continue;
		}
		if (rc == 1) {
			released++;
			say(log, lctx, SB_REAP_PROD, i, owner_pid(o), 0,
			    load_relaxed64(&ch->hdr->repairs) != repairs);
		}
	}
	return released;
}

/*
 * The slowest subscriber's position, if it waits for a record nothing
 * will commit: below head, in the current lap, its word not a commit,
 * and no live producer's claim covering it (single producer: a live role
 * holder; multi: a live slot announcing a claim at or before it, which
 * will hand over and commit in its turn).  UINT64_MAX if there is none.
 * Every value is checked before it addresses the ring.
 */
uint64_t sb_stuck_position(struct shmbus_channel *ch, sb_gone_fn gone,
			   void *gctx)
{
	/* A12: pairs with R12 (the head CAS, or a single producer's
	 * claims before its hand-off). */
	uint64_t head = load_acquire64(&ch->pl->head), pos = UINT64_MAX, w;
	uint64_t sp;

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
		sp = load_acquire64(&ch->pl->sp_owner);
		return role_pid(sp) && !gone(gctx, role_pid(sp), role_tag(sp))
			       ? UINT64_MAX : pos;
	}
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		struct shmbus_prod_slot *s = &ch->prods[i];
		/* A7: pairs with R7 (the slot's ACTIVE store). */
		uint64_t o = load_acquire64(&s->owner);

		/* A6: pairs with R6 (a claim announced or released). */
		if (owner_state(o) == SHMBUS_SLOT_ACTIVE &&
		    load_acquire64(&s->claim_pos) <= pos &&
		    !gone(gctx, owner_pid(o), owner_tag(o)))
			return UINT64_MAX;
	}
	return pos;
}

/* No edge: a snapshot of the slots for a log line, nothing acts on it. */
void sb_stuck_describe(struct shmbus_channel *ch, uint64_t pos, char *buf,
		       size_t len)
{
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
			     sb_owner_gone(o) ? " (gone)" : "",
			     owner_state(o),
			     (unsigned long long)load_relaxed64(&s->claim_pos),
			     (unsigned long long)load_relaxed64(&s->claim_end));
		if (k < 0)
			break;
		n += (size_t)k;
	}
	snprintf(buf, len, "head %llu, handoff %llu, word there %#llx, "
		 "sp_owner %u; producer slots:%s",
		 (unsigned long long)load_relaxed64(&ch->pl->head),
		 (unsigned long long)load_relaxed64(&ch->pl->handoff),
		 (unsigned long long)load_relaxed64(&rec_at(ch, pos)->commit),
		 role_pid(load_relaxed64(&ch->pl->sp_owner)),
		 n ? slots : " none");
}

void sb_count_stuck(struct shmbus_channel *ch)
{
	add_relaxed64(&ch->hdr->stuck, 1);
}
