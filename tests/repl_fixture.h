/* SPDX-License-Identifier: MIT */
/*
 * repl_fixture.h - an HA pair for the replication tests: two shmbusd, A
 * (primary at start) and B (standby), each in its own network namespace
 * joined by a veth pair when the tests run as root, else both on the
 * loopback.  Clients in the test process reach either daemon through its
 * socket (a path: any namespace reaches it).  pair_teardown() kills both
 * daemons and deletes the namespaces, after a failed test too; a later
 * run deletes namespaces a crashed run left (their names carry the pid).
 */
#ifndef SHMBUS_TEST_REPL_FIXTURE_H
#define SHMBUS_TEST_REPL_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmbus.h"
#include "../lib/contract.h"

struct host {
	char tag;		/* 'a' or 'b' */
	char ns[32];		/* its network namespace, "" on loopback */
	char ifname[16];	/* its end of the veth pair */
	char ip[32];
	char listen[64];	/* ip:port */
	char dir[96];		/* shm_dir */
	char conf[128];
	char sock[108];
	char log[128];
	char state[128];
	char run[128];		/* its SHMBUS_RUN_DIR */
	pid_t pid;
};

extern struct host A, B;
extern bool pair_netns;		/* two namespaces (root), else loopback */
/* Whether pair_setup() will make two namespaces (before it is called). */
bool pair_netns_possible(void);
/* SHMBUS_TEST_PREFIX (at most 4 characters), or NULL: what the names of
 * this run's namespaces and files start with. */
const char *pair_prefix(void);
extern char pair_key[128];	/* the key file both use */

/* Writes both configs with the channel sections `chans` (each channel
 * needs its own `replicate = ...`) and `extra` appended to [replication]
 * (may be ""), starts A as primary and B as standby, and waits until
 * every replicated channel of B is linked. */
void pair_setup(const char *chans, const char *extra);
/* A's and B's paths (dir, conf, log...) as pair_setup() sets them, for
 * a test that puts something in place before it. */
void pair_paths(void);
void pair_teardown(void);

/* Rewrites h's config (role, peer) and starts its daemon. */
void host_config(struct host *h, const char *role, const char *peer,
		 const char *chans, const char *extra);
void host_start(struct host *h);
/* The same, false if the daemon exited at start (h->pid is then 0). */
bool host_try_start(struct host *h);
/* kill(sig) and wait for it. */
void host_kill(struct host *h, int sig);
/* Whether h's log has `what` within timeout_ms. */
bool host_log_wait(const struct host *h, const char *what, int timeout_ms);
/* Runs a shell command in h's namespace (or here); its exit status. */
int host_sh(const struct host *h, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The channel through the daemon (NULL, errno set). */
shmbus_channel *host_open(const struct host *h, shmbus_bus **bus,
			  const char *chan, enum shmbus_role role);
/* The channel mapped directly, to inspect it. */
shmbus_channel *host_map(const struct host *h, const char *chan);
/* A subscriber of ch (a mapping, host_map()) at the oldest record its ring
 * holds, whoever else reads it; NULL if none can be opened. */
shmbus_sub *ring_reader(shmbus_channel *ch);
/* The data region (capacity bytes) of channel `chan`, read-only. */
const uint8_t *host_data(const struct host *h, const char *chan,
			 size_t *len);
/* Waits until B's ring of chan holds everything A's does (heads equal,
 * at least `min`), at most timeout_ms; returns A's head. */
uint64_t pair_wait_caught_up(const char *chan, uint64_t min, int timeout_ms);
/* Asserts that the data regions and heads of chan are equal on A and B. */
void pair_assert_identical(const char *chan);
/* pair_wait_caught_up(chan, 0, timeout_ms), then pair_assert_identical()
 * and pair_assert_no_gap(): B holds all of A's ring, with no gap. */
void pair_assert_whole(const char *chan, int timeout_ms);
/* The same for ring positions [from, to) only. */
void pair_assert_identical_range(const char *chan, uint64_t from,
				 uint64_t to);
/* The replication words of chan on h. */
void host_view(const struct host *h, const char *chan,
	       struct sb_repl_view *v);
/* Runs fn(arg) in a child inside h's network namespace (th_spawn). */
pid_t host_spawn(const struct host *h, int (*fn)(void *), void *arg);

/* Two channels of each producer model, acknowledged at applied and
 * received; STRICT_CHANS adds "st", strict when the standby is out of
 * sync. */
#define CHANS \
	"[channel sp]\ncapacity = 1M\nmax_msg = 4K\nreplicate = applied\n" \
	"[channel mp]\ncapacity = 1M\nmax_msg = 4K\nproducers = multi\n" \
	"replicate = received\n"
#define STRICT_CHANS CHANS \
	"[channel st]\ncapacity = 1M\nmax_msg = 4K\nreplicate = applied\n" \
	"out_of_sync = strict\n"

/* A publisher on A (th_spawn(pair_publisher, &arg)): n self-checking
 * messages of mixed sizes (24..max), producer id `id`, then a pub_sync.
 * Exits 0, or with the step that failed. */
struct pubarg {
	const char *chan;
	uint64_t n;
	uint32_t id, max;
	bool sync_each;		/* pub_sync after every message */
	bool degraded_ok;	/* the last pub_sync may find the standby out
				 * of sync */
};
int pair_publisher(void *arg);
/* Fails the test with what pair_publisher()'s exit code rc says, unless
 * it is 0. */
void pair_assert_published(const char *chan, int rc);

/* A publisher on A paced to `rate` fixed 64-byte messages per 10 ms, for
 * `ms` milliseconds. */
struct paced {
	const char *chan;
	uint32_t id;
	int rate, ms;
};
int pair_paced_publisher(void *arg);

/* Reads channel chan on h from its oldest record to `until` (or its end):
 * every message intact and in order per producer (ids < 4); returns how
 * many, and the last sequence number of each producer (UINT64_MAX:
 * none). */
uint64_t pair_read_all(const struct host *h, const char *chan,
		       uint64_t until);
uint64_t pair_read_all_last(const struct host *h, const char *chan,
			    uint64_t until, uint64_t last[4]);
/* B counted no gap on chan. */
void pair_assert_no_gap(const char *chan);
/* SIGSTOP h's daemon, and wait until the kernel says it is stopped. */
void host_pause(const struct host *h);

/* shmbusctl's request to h's daemon: 0 or -errno, answer in out. */
int host_ctl(const struct host *h, uint32_t op, uint32_t flags,
	     struct shmbus_ctl_repl_reply *out);

#endif
