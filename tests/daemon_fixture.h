/* SPDX-License-Identifier: MIT */
/*
 * daemon_fixture.h - what the tests of shmbusd share: one daemon per test
 * process in a private directory of /dev/shm, started by setup() or
 * setup_with(), stopped by teardown(); and the client processes they fork
 * (publishers, subscribers, a producer stuck in a claim, a subscriber that
 * never reads), each connecting on its own.
 *
 * The repair bound (100 ms, SHMBUS_REPAIR_BOUND_MS) is the daemon's
 * promise, checked from the moment of a kill.
 */
#ifndef SHMBUS_TEST_DAEMON_FIXTURE_H
#define SHMBUS_TEST_DAEMON_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "helpers.h"

struct daemon {
	char dir[64];
	char conf[128];
	char sock[100];
	char log[128];
	pid_t pid;
};

/* The daemon of this test process. */
extern struct daemon d;

uint64_t bound_ns(void);
/* The daemon to run: $SHMBUSD, or build/shmbusd. */
const char *shmbusd_path(void);
/* Writes d.conf: a [bus] section pointing into d.dir, then `body`. */
void write_conf(const char *body);
/* Forks and execs the daemon on d.conf (its output to d.log). */
pid_t spawn_daemon(void);
/* Spawns it and waits until it answers. */
void start_daemon(void);
/* A private directory, a config of `conf` channels, a running daemon. */
void setup_with(const char *conf);
/* setup_with() four channels: blk (block, SP, 64K), mp (block, MP, 64K),
 * tiny (block, SP, 4K), ow (overwrite, MP, 16K, NUMA node 0). */
void setup(void);
/* Stops the daemon (it must exit 0), fails on a sanitizer report in its
 * log, removes the directory. */
void teardown(void);
bool log_has(const char *what);
/* Connects and opens `name` for `role`; NULL on failure (errno set). */
shmbus_channel *open_role(shmbus_bus **bus, const char *name,
			  enum shmbus_role role);
int raw_connect(void);

/* A forked client and the pipes to talk with it. */
struct child {
	const char *name;	/* channel */
	uint64_t n;		/* messages */
	uint32_t id;
	unsigned pace_us;	/* publisher: pause after every 1000 */
	int ready[2];		/* child -> parent */
	int go[2];		/* parent -> child */
};

void child_pipes(struct child *c);
void say(int fd);
void hear(int fd);

/* Child bodies, for th_spawn(): */
int subscriber(void *arg);	/* receives c->n messages exactly once */
int publisher(void *arg);	/* publishes c->n messages, waiting */
int stuck_producer(void *arg);	/* c->n messages, then an open claim */
int idle_subscriber(void *arg);	/* subscribes and never reads */

/* Whether seq is the next one expected from producer id (and counts it). */
int prod_id_order(uint32_t id, uint64_t seq, uint64_t *next);
/* Reads `want` messages, each intact and in order per producer (next[]
 * indexed by producer id, < 4); fails after 5 s without one.  Returns when
 * the first of them arrived (ns). */
uint64_t read_in_order(shmbus_sub *sub, uint64_t want, uint64_t *next);

#endif
