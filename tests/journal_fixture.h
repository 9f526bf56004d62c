/* SPDX-License-Identifier: MIT */
/*
 * journal_fixture.h - what test_journal.c and test_journal_recovery.c
 * share (journal_fixture.c): a private shmbusd (daemon_fixture.h) whose
 * config journals the channel "j".
 */
#ifndef SHMBUS_JOURNAL_FIXTURE_H
#define SHMBUS_JOURNAL_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "daemon_fixture.h"

extern char jdir[256];		/* journal_dir */
extern char cdir[320];		/* the channel "j"'s journal */
extern char mnt[128];		/* a small filesystem a test mounted */
extern char lower[128];		/* the filesystem under mnt's loop device */

/* The suite's init and fini: the fixture's directory without a daemon;
 * the daemon stopped and a mounted filesystem detached. */
void jnl_setup(void);
void jnl_fini(void);

/* The config: channel "j" (64K, max_msg 2048, journal on) with
 * chan_keys, and bus_keys at the top; or "j" with only `keys`. */
void conf_with(const char *chan_keys, const char *bus_keys);
void conf_raw(const char *keys);

/* Message i's length, and messages first..first+n-1 published. */
size_t len_of(uint64_t i);
void publish_range(shmbus_pub *p, uint64_t first, uint64_t n);
shmbus_channel *open_pub(shmbus_bus **bus, shmbus_pub **p);
void close_pub(shmbus_bus *bus, shmbus_channel *ch, shmbus_pub *p);
/* A daemon on the config with `keys`, and n messages published through
 * it and journaled. */
shmbus_channel *journaled(const char *keys, uint64_t n, shmbus_bus **bus,
			  shmbus_pub **p);

/* A daemon whose channel "j" acknowledges persisted, in 64K segments:
 * messages 0..n-1 published and acknowledged, then the daemon stopped. */
void persisted_then_stopped(uint64_t n);
/* Waits until the journal has written everything committed. */
void wait_written(shmbus_channel *ch, int sec);
/* Replays from `from` and checks messages first..first+n-1 in order,
 * each intact; returns how many came from the journal. */
uint64_t replay_check(shmbus_channel *ch, uint64_t from, uint64_t first,
		      uint64_t n);
int count_segments(void);

/* The daemon stopped (SIGSTOP, until the kernel says so), its ring
 * removed as a reboot removes it, or the daemon stopped for good. */
void pause_daemon(void);
void remove_ring(void);
void stop_daemon(void);

/* Every record of the journal in cdir, in order. */
struct recs {
	uint64_t pos[8192], size[8192], seq[8192];
	uint32_t type[8192];
	size_t n;
	uint64_t end;
};
void read_all(struct recs *rs);
void put_file(const char *path, const uint8_t *buf, size_t len);
uint8_t *get_file(const char *path, size_t *len);
/* Removes every segment and index after base (and spares). */
void remove_after(uint64_t base);

#endif
