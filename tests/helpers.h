/* SPDX-License-Identifier: MIT */
/* helpers.h - what the test files share: private directories in /dev/shm,
 * self-checking messages, and child processes. */
#ifndef SHMBUS_TEST_HELPERS_H
#define SHMBUS_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmbus.h"

struct shmbus_daemon_area;
struct shmbus_prod_slot;

/* A new private directory under /dev/shm, removed with its contents by
 * th_rmdir(); unique per process, so tests run in parallel and twice. */
const char *th_mkdir(void);
void th_rmdir(const char *dir);

/* Creates a channel in `dir` named "ch", failing the test on error. */
shmbus_channel *th_create(const char *dir, uint64_t cap, uint32_t max_msg,
			  enum shmbus_policy pol, enum shmbus_producers prod);
/* A multi-producer block channel in `dir` named `name`, of the default
 * max_msg (a second channel beside th_create()'s, a dead-letter one). */
shmbus_channel *th_create_mp(const char *dir, const char *name, uint64_t cap);

/*
 * A self-checking message: producer id, sequence number, length-dependent
 * filler and a checksum over all of it.  th_msg_fill() writes `len` bytes
 * (len >= TH_MSG_MIN); th_msg_check() returns 0 if they are intact and
 * stores the id and sequence.
 */
#define TH_MSG_MIN 24u
void th_msg_fill(void *buf, size_t len, uint32_t id, uint64_t seq);
int th_msg_check(const void *buf, size_t len, uint32_t *id, uint64_t *seq);

/* Maps the control file (header, slots) or the data file (records, index)
 * of channel "ch" in `dir` read-write, to damage it on purpose; NULL on
 * failure.  *len gets its size. */
uint8_t *th_map_channel(const char *dir, size_t *len);
/* The channel's head (its next claim position), by shmbus_channel_info. */
uint64_t th_head(shmbus_channel *ch);
uint8_t *th_map_data(const char *dir, size_t *len);
/* shmbusd's words of channel `name` in `dir` (in its data file), mapped
 * read-write through the file's path, as a process with write access to
 * the file (root, a producer) could; NULL on failure.  Unmapped by
 * th_unmap_daemon_area(). */
struct shmbus_daemon_area *th_map_daemon_area(const char *dir,
					      const char *name);
void th_unmap_daemon_area(struct shmbus_daemon_area *d);
/* The producer slots of channel `name` in `dir` (in its data file's last
 * page), mapped read-write the same way; never unmapped. */
struct shmbus_prod_slot *th_map_prods(const char *dir, const char *name);
/* The producers' line of channel `name` in `dir` (head, handoff, seq,
 * bytes, sp_owner: in its data file's last page), mapped read-write the
 * same way; never unmapped. */
struct shmbus_prod_line *th_map_pline(const char *dir, const char *name);

/* Stops the thread named `comm` of process `pid` (its other threads run
 * on), as a debugger does (ptrace), and waits until it is stopped: its
 * tid, or -1.  th_thread_resume() lets it go on; the stop also ends with
 * the calling process. */
pid_t th_thread_hold(pid_t pid, const char *comm);
void th_thread_resume(pid_t tid);

/* Forks; the child runs fn(arg) and _exit()s with its return value. */
pid_t th_spawn(int (*fn)(void *), void *arg);
/*
 * Forks a child with pid `want` (the kernel's next pid set through
 * ns_last_pid, tried again a few times while other processes take it
 * first), which runs fn(arg) and _exit()s with its return value.  Returns
 * its pid, or -1 where ns_last_pid cannot be written or `want` was not
 * had.  The counter is the whole pid namespace's: while it is set back,
 * every process that forks is given pids that died a moment ago, as if
 * pid_max had wrapped, and so is each child of a try that missed `want`
 * (a test of another suite run beside this one then finds its dead
 * process's pid naming someone alive).  So it is put back right after
 * each fork, and a few misses give up for the other way.
 */
pid_t th_spawn_as(pid_t want, int (*fn)(void *), void *arg);
/* The pid namespace's last pid given out (ns_last_pid), or -1 where it
 * cannot be read; th_set_last_pid() sets it (the next fork gets the first
 * free pid after it), false where it cannot be written. */
long th_last_pid(void);
bool th_set_last_pid(long v);
/* Waits for pid; returns its exit code, or 128 + signal. */
int th_wait(pid_t pid);

/* A count taken from the environment, or `def`. */
uint64_t th_env_count(const char *name, uint64_t def);

uint64_t th_now_ns(void);

/*
 * A failure found in a test's teardown (.fini): Criterion prints an
 * assertion made there but does not count it, so it is also appended to
 * the file $SHMBUS_FINI_FAILURES, which `make test` checks after each
 * test program.  `what` is one line.
 */
void th_fini_fail(const char *what);

#endif
