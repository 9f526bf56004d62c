/* SPDX-License-Identifier: MIT */
/*
 * repair.h - undoing what a dead process left in a channel.
 *
 * Used by a producer taking over a single-producer channel from a dead one,
 * and by shmbusd when it learns that a client died.  Every function here
 * acts only on slots that still name the dead pid, compares that pid in the
 * same CAS that takes the slot, and is safe against live producers and
 * subscribers running concurrently (docs/design.md, "Crash repair").
 * Several repairers may run at once on one channel only for different
 * dead pids; shmbusd runs them from one thread.
 */
#ifndef SHMBUS_REPAIR_H
#define SHMBUS_REPAIR_H

#include "channel.h"

/* Releases subscriber slot i if it belongs to `dead`.  Returns 1 if it
 * did, 0 if the slot is not (or no longer) that process's. */
int sb_repair_sub(struct shmbus_channel *ch, uint32_t i, uint32_t dead);

/* Multi producer: turns the open claim of producer slot i (if it belongs
 * to `dead`) into padding, then releases the slot.  Single producer:
 * releases the slot (the claim is repaired by sb_repair_sp()).  Returns 1
 * when the slot was released, 0 if it is not that process's, -EAGAIN if
 * the repair must wait (the claim before it is still open). */
int sb_repair_prod(struct shmbus_channel *ch, uint32_t i, uint32_t dead);

/* Single producer: if `dead` holds the producer role, takes it (marked as
 * being repaired by `self`), pads its unfinished claim and gives the role
 * back free.  Returns 1 if it did, 0 otherwise. */
int sb_repair_sp(struct shmbus_channel *ch, uint32_t dead, uint32_t self);

/* The new owner of a single-producer role repairs what the previous one
 * left: [end of committed records, head) becomes padding. */
bool sb_sp_repair(struct shmbus_channel *ch);

#endif /* SHMBUS_REPAIR_H */
