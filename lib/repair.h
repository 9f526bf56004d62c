/* SPDX-License-Identifier: MIT */
/*
 * repair.h - undoing what a dead process left in a channel.
 *
 * Used by a producer taking over a single-producer channel from a dead one,
 * and by shmbusd when it learns that a client died.  Every function here
 * acts only on slots that still name the dead pid, compares that pid in the
 * same CAS that takes the slot, and is safe against live producers and
 * subscribers running concurrently (docs/design.md, "Crash repair").
 * A repairer first adopts the slot it repairs (a CAS of its owner word
 * from the dead pid to its own), so that each claim has one repairer at a
 * time, and one that dies in turn is repaired like any dead producer.
 */
#ifndef SHMBUS_REPAIR_H
#define SHMBUS_REPAIR_H

#include "channel.h"
#include "contract.h"

/* Releases subscriber slot i if it belongs to the owner of word `dead`
 * (its pid and start tag; ACTIVE, or BUSY: died setting it up), taking it
 * as `self` meanwhile.  Returns 1 if it
 * did, 0 if the slot is not (or no longer) that process's. */
/* A ring being cut back: dead producers' slots and role given back
 * without a repair (see repair.c). */
void sb_cut_release_dead(struct shmbus_channel *ch, uint32_t self);
int sb_repair_sub(struct shmbus_channel *ch, uint32_t i, uint64_t dead,
		  uint32_t self);

/* Releases producer slot i if it belongs to the owner of word `dead` (its
 * pid and start tag).  Multi producer: a
 * claim it handed over and did not commit is padded first.  The slot is
 * adopted (its owner word set to `self`) while that is done.  Returns 1
 * when the slot was released, 0 if it is not (or no longer) that
 * process's, -EAGAIN if its claim has not been handed over yet: that is
 * sb_handoff_help()'s, once the hand-off reaches it. */
int sb_repair_prod(struct shmbus_channel *ch, uint32_t i, uint64_t dead,
		   uint32_t self);

/* What sb_handoff_help() found at the hand-off. */
#define SB_HELP_DONE	1	/* we handed over and padded the claim */
#define SB_HELP_LIVE	0	/* a live process holds the claim at x, or
				 * the hand-off moved meanwhile */
#define SB_HELP_NOBODY	(-1)	/* no slot announces a claim at x: a race
				 * with its hand-off, or a corrupt word */

/* Multi producer, the hand-off standing at x: if every slot that
 * announces a claim at x belongs to a process that is gone (by `gone`),
 * adopts one of them as `self`, hands the claim over for it (the claim's
 * end is where the next claim starts) and pads the whole claim.  Several
 * helpers may run at once, for the same x too. */
int sb_handoff_help(struct shmbus_channel *ch, uint64_t x, uint32_t self,
		    bool (*gone)(uint32_t pid, uint32_t tag));

/* Multi producer, the hand-off word standing at hv where no slot
 * announces a claim (sb_handoff_help() said SB_HELP_NOBODY for long: a
 * word written over, as any process that maps the data file writable
 * can).  Moves it on to the claim whose turn it is, the least announced
 * start above hv (head if none), never back: no claim is handed to
 * twice.  A word past head goes back to head, only while no claim is
 * announced at all.  A word that a slot announces a claim at by the time
 * head is read (a claim made since the caller looked) is left alone, and
 * so is a ring whose fence is not open (a standby's or one being cut: its
 * one writer moves the word).  Whether it moved the word. */
bool sb_handoff_skip(struct shmbus_channel *ch, uint64_t hv);

/* Single producer, the role word `dead` naming a process that is gone:
 * a live process other than it and `me` that holds an ACTIVE producer
 * slot.  A slot with the dead word's pid is another process's if both
 * name a start tag and the tags differ (a live holder's pid written over
 * with another tag); with the same tag, or a word without one, it is
 * the dead holder's.  A single producer takes its slot after the role
 * and gives it back on close, so such a process holds the role, and the
 * word was written over (any process that maps the data file writable
 * can): neither the repair nor a new producer may take the role from it
 * and pad over its claim.  Returns the role word that names it (its pid and
 * its slot's start tag), or 0. */
uint64_t sb_sp_live_holder(struct shmbus_channel *ch, uint64_t dead,
			   uint32_t me, sb_gone_fn gone, void *gctx);

/* Single producer, the role word `w` naming a holder (or repairer) judged
 * gone, a process given its pid included: if a live process other than it
 * and `self` holds an ACTIVE producer slot, the word was written over
 * under that producer; gives the role back to it (a CAS from `w`; *given
 * says whether it moved the word) and returns its pid.  0: no such
 * producer, a repair may go on.  A word naming our own pid is judged
 * again and given back under the roles' lock (sb_sp_role_lock_gone()). */
uint32_t sb_sp_give_back(struct shmbus_channel *ch, uint64_t w,
			 uint32_t self, sb_gone_fn gone, void *gctx,
			 bool *given);

/* Single producer: if `dead` holds the producer role, takes it (marked as
 * being repaired by `self`), pads its unfinished claim and gives the role
 * back free.  Returns 1 if it did, 0 otherwise, -EBADMSG if the walk
 * stopped at damage (not padded; its position in *damaged, may be NULL):
 * see sb_sp_repair(). */
int sb_repair_sp(struct shmbus_channel *ch, uint64_t dead, uint32_t self,
		 uint64_t *damaged);

/*
 * What a dead process whose pid this process was given left on `ch`:
 * subscriber slots, and if `data_too` (this process may write the
 * records) producer slots and their claims and a single producer's role,
 * that name our pid while we do not hold them (pid.c).  Every other
 * process takes that pid for a live one until we exit, so we release
 * them as soon as we try to open a handle on the channel (what our
 * other threads hold is listed: pid.c).
 */
void sb_release_own_left(struct shmbus_channel *ch, bool data_too);

/* The new owner of a single-producer role repairs what the previous one
 * left: [end of committed records, head) becomes padding, if the walk
 * stopped at a word that is zero, as a claim not committed leaves it.
 * Any other word there is damage, with committed records after it:
 * nothing is padded, -EBADMSG, its position in *damaged (may be NULL).
 * 1 if it padded, else 0. */
int sb_sp_repair(struct shmbus_channel *ch, uint64_t *damaged);

/* Walks committed records from `p` (a record boundary) towards `to`;
 * returns the first position not covered by a committed record of its
 * lap (a record that would cross `to` does not count).  What a repair
 * takes as committed: any record with its lap's word, whatever its type
 * and length (the agents' walk, mirror.c, also applies the standby's
 * rules). */
uint64_t sb_committed_until(struct shmbus_channel *ch, uint64_t p,
			    uint64_t to);

#endif /* SHMBUS_REPAIR_H */
