/* SPDX-License-Identifier: MIT */
/*
 * failover_fixture.h - what the failover tests and the failover benchmark
 * share (docs/failover.md): a real etcd (one member, or a cluster of
 * three) on the loopback, which each host of the pair (repl_fixture.h)
 * reaches through a forwarder of its own in this process (a Unix socket
 * to etcd's TCP port), so that a test cuts one host from etcd by cutting
 * its forwarder; a publisher on A that logs what shmbus_pub_sync()
 * acknowledged; and the checks on B.
 */
#ifndef SHMBUS_TEST_FAILOVER_FIXTURE_H
#define SHMBUS_TEST_FAILOVER_FIXTURE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "repl_fixture.h"

#define TTL_MS 2000	/* the leader key's lease */

/* etcd: its process, client port (the peer port is the next one) and
 * data directory (in /dev/shm). */
extern pid_t etcd_pid;
extern int etcd_port;
extern char etcd_dir[64];
void etcd_start(void);
void etcd_kill(void);
int tcp_to_port(int port);

struct fwd {
	char path[108];
	int port;			/* etcd's client port */
	int lfd;
	atomic_bool cut;
	atomic_int delay_ms;		/* each request to etcd held so long */
	atomic_bool stop;
	pthread_t th;
};

/* Host a's and b's forwarders to the single etcd. */
extern struct fwd fw[2];
void fwd_start_to(struct fwd *f, const char *path, int port);
void fwd_start(struct fwd *f, char tag);
void fwd_stop(struct fwd *f);

/* PREFIX/suffix as etcd has it (etcd.h's struct etcd_kv): 0, or -errno. */
struct etcd_kv;
int arbiter_key(const char *suffix, struct etcd_kv *kv);
/* The arbiter's sync record ("in E ..." / "out E ..."), read from etcd:
 * whether it starts with want (and its mod revision); wait_record()
 * waits for it at most ms. */
bool sync_record_is_rev(const char *want, int64_t *rev);
/* Whether a host holds the leader key (or etcd does not say). */
bool leader_key_held(void);
bool sync_record_is(const char *want);
bool wait_record(const char *want, int ms);

/* The suite's init and fini: etcd and both forwarders; `extra` is the
 * [replication] lines that point both hosts at it.  fo_fini() also
 * unmounts df_mnt if a test left it mounted, and stops a cluster. */
extern char extra[512];
extern char df_mnt[160];
void fo_setup(void);
void fo_fini(void);
/* The arbiter's keys go under prefix from now on (extra and the sync
 * record's readers); fo_setup() makes it /shmbus/tPID. */
extern char fo_prefix[64];
void fo_arbiter(const char *prefix);

/* 16 MiB: a subscriber on B that reads only at the end (watch_b()) holds
 * B's ring, and with it A's: room for the messages of a few seconds. */
#define FO_CHANS \
	"[channel fo]\ncapacity = 16M\nmax_msg = 1K\nreplicate = applied\n"
#define FO_CHANS_BIG \
	"[channel fo]\ncapacity = 64M\nmax_msg = 1K\nreplicate = applied\n"

/* What the publisher logs: how many messages were acknowledged (it
 * publishes 0, 1, 2... and syncs each), in shared memory. */
struct log {
	_Atomic uint64_t acked;		/* messages 0..acked-1 acknowledged */
	_Atomic int stop;
	_Atomic int refused;		/* a publish or sync said EROFS */
	int64_t sync_ns;		/* a pub_sync's bound (0: 200 ms) */
	unsigned pace_us;		/* a pause after each acknowledgement */
	_Atomic uint64_t next;		/* the next message's number: a
					 * publisher started again goes on */
};
extern struct log *lg;
/* The publisher's pause after each acknowledgement, in every log opened
 * after it is set: 200 us in the tests, which keeps the two daemons' agents
 * from taking both CPUs (a scenario waits on a few hundred
 * acknowledgements, not on a rate); bench_failover sets 0, a stream of
 * synchronous publishes back to back. */
extern unsigned fo_pace_us;
/* A child (th_spawn()) on A: publishes 64-byte messages of producer 1,
 * numbered from lg->next, each followed by a pub_sync; lg->acked counts
 * those a pub_sync acknowledged (a success covers every earlier one); it
 * stops at EROFS, and goes on after a timeout or a degraded
 * acknowledgement (not counted). */
int sync_publisher(void *arg);
/* Until the publisher has n messages acknowledged, at most ms: else the
 * test fails, saying how far it got. */
void wait_acked(uint64_t n, int ms);
/* Maps the log; also starts the split-brain watch. */
void log_open(void);

/* The split-brain watch: a thread that samples, every 2 ms, whether both
 * hosts' channel "fo" take writes at the same epoch.  splitbrain_stop()
 * returns how many samples found them so (and how many were taken). */
void splitbrain_start(void);
uint64_t splitbrain_stop(uint64_t *samples);

/* A scenario's usual start: log_open(), the pair with chans (and ext in
 * [replication]), B watched from the start if watch (watch_b()), A holding
 * the key, the logging publisher running until n messages are
 * acknowledged, and the standby recorded in sync; the publisher's pid,
 * still publishing.  fo_stop() stops it: how many it had acknowledged. */
pid_t fo_start(const char *chans, const char *ext, uint64_t n, bool watch);
uint64_t fo_stop(pid_t pub);

/* h is a primary now, by its channel's header (not fenced, not a
 * standby); h is a standby linked to its primary. */
bool is_primary(const struct host *h);
bool is_standby_linked(const struct host *h);
/* Waits until cond(h), at most ms: the time it took (ms), or -1. */
int wait_for(bool (*cond)(const struct host *), const struct host *h,
	     int ms);

/* A subscriber on B from the start (watch_b()), and the check that B
 * holds every acknowledged message, in order, once. */
extern shmbus_channel *bch;
extern shmbus_sub *bsub;
void watch_b(void);
void assert_b_has_acked(uint64_t acked);

/* A three-member etcd cluster, and both hosts' forwarders to each
 * member (paths ETCD_DIR-cK-a.sock, ...-b.sock). */
#define MEMBERS 3
extern pid_t member_pid[MEMBERS];
extern struct fwd fwc[2][MEMBERS];
int member_port(int k);
void cluster_start(void);
void cluster_stop(void);
/* The member that leads the cluster now, or -1. */
int cluster_leader(void);

#endif
