/* SPDX-License-Identifier: MIT */
/*
 * repl_int.h - what the replication agent's files share (not the daemon's
 * other parts: they use shmbusd.h's sbd_repl_*()).
 *
 *   repl.c          start and stop, the listener and its handshakes, role
 *                   changes (promote, demote, switchover), the helpers
 *   repl_primary.c  a primary's channel: the agent, the acknowledgements'
 *                   reader
 *   repl_accept.c   a standby's link accepted: where shipping starts
 *   repl_standby.c  a standby's channel: the linker
 *   epochs.c        the epoch history on disk
 *
 * Threads, per replicated channel: on a primary, an agent (finds
 * committed records, ships them, judges whether the standby is in sync,
 * raises the watermark, moves its cursor) and, while a standby is linked,
 * a reader of the standby's acknowledgements; on a standby, a linker
 * (connects to the primary, checks and applies frames, acknowledges).
 * One listener for the pair proves the peer's key in a short-lived
 * thread per connection and hands a checked link to the channel's agent.
 * Role changes are serialised by repl.role_mu; they stop one set of
 * threads and start the other.
 *
 * Each thread works on the agent's own mapping of its channel (opened at
 * start from the shm dir), so that a registry entry's lifetime does not
 * bound it.  Fields shared between the threads of a channel are read and
 * written with __atomic builtins (LOAD, STORE).
 */
#ifndef SHMBUSD_REPL_INT_H
#define SHMBUSD_REPL_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl.h"
#include "../lib/contract.h"

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

#define FRAME_MIN	(256u << 10)	/* a frame's body, at most */
#define PING_MS		100		/* an idle primary's heartbeat */
#define HANDSHAKE_MS	2000
#define HANDSHAKES_MAX	8		/* handshakes at once from hosts
					 * other than the peer's */
#define HANDSHAKES_PEER	4		/* and from the peer's host: places
					 * nobody else can fill */
#define CONNECT_MS	1000
#define SPIN_NS		INT64_C(30000)	/* see set_spin() */
#define SYNC_LINGER_NS	INT64_C(1000000) /* see sync_waiting() */

struct rchan {
	char name[SHMBUS_CTL_NAME];
	uint64_t id;			/* sbd_name_hash(name) */
	shmbus_channel *ch;		/* the agent's own mapping */
	uint32_t level;			/* SHMBUS_ACK_* */
	bool strict;
	uint64_t cap;
	uint32_t max_msg, flags;
	uint32_t frame_max;		/* bytes a frame ships, at most */
	uint32_t buf_len;		/* rc->buf: frame_max, or one record */
	uint64_t max_lag;
	struct sbd_ratelimit rl_events;	/* LINK_EVENT(), under repl_log_mu */
	unsigned long events;
	pthread_mutex_t mu;		/* pending, plink, slink */
	bool stop;			/* atomic: the threads end */

	/* Primary. */
	pthread_t agent;
	bool agent_on;			/* atomic: read by handshake threads */
	shmbus_sub *cursor;		/* holds producers for the standby */
	uint64_t cursor_pos;
	struct sbd_link *pending;	/* handed over by a handshake */
	uint64_t pending_start;
	uint64_t pending_end;		/* where the standby ends */
	uint64_t pending_token;		/* its hello's token */
	struct sbd_link *plink;		/* the agent's link (mu to read it
					 * from another thread) */
	pthread_t reader;
	bool reader_on;
	struct sb_sync_hint hint_agent;	/* is a sync waiter there: each */
	struct sb_sync_hint hint_reader; /* thread's own view */
	bool link_dead;			/* atomic: the reader lost it */
	const char *dead_why;		/* why, when the reader's shipping
					 * lost it (before link_dead) */
	pthread_mutex_t ship_mu;	/* what ship() uses: the agent's
					 * loop, or the reader's spin */
	bool reader_ships;		/* atomic: the reader's spin ships
					 * while a sync waiter waits */
	bool agent_parked;		/* atomic: the agent sleeps on park
					 * meanwhile */
	uint32_t park;			/* futex word (private) */
	int64_t reader_sync_ns;		/* reader: a sync waiter last seen */
	bool walk_short;		/* the last walk stopped at its bound,
					 * short of what is committed */
	uint64_t sent;			/* atomic: shipped up to here */
	uint64_t sent_hi;		/* atomic: being shipped up to here */
	bool linked;			/* atomic: plink is set */
	uint64_t known;			/* committed up to here (agent) */
	struct sb_marks marks;		/* agent: frame ends its walks to
					 * known passed */
	uint64_t damaged_at;		/* agent: the walk stopped at a record
					 * a standby would refuse here
					 * (UINT64_MAX: none) */
	uint64_t received, applied;	/* atomic: the standby's acks */
	uint64_t persisted;		/* atomic: its journal's, acked */
	int64_t progress_ns;		/* atomic: last ack that moved */
	bool in_sync;			/* agent */
	bool resume;			/* set at start: rp_agent_start() */
	bool provisional;		/* atomic: in sync, taken to be at
					 * the start or after a link that
					 * showed it lost records, and not
					 * caught up since (the leader
					 * records it out of sync) */
	uint32_t provisional_n;		/* atomic: times it became so */
	uint64_t link_token;		/* atomic: the current link's hello
					 * token (0: none, or no link) */
	int64_t last_send_ns;		/* agent */
	int64_t groups_ns;		/* agent: groups last shipped */
	uint64_t groups_safe;		/* agent: data may be shipped up to
					 * here before the groups' states
					 * must be shipped again (groups_send()
					 * in repl_primary.c) */
	int64_t groups_dir_ns;		/* agent: the shm dir's change time
					 * when it last found no group */

	/* Standby. */
	pthread_t linker;
	bool linker_on;
	bool unapplied;			/* atomic: a frame acknowledged as
					 * received was not applied */
	uint64_t unapplied_to;		/* linker: the end of that frame;
					 * applied through it, unapplied
					 * is cleared */
	uint8_t *kept;			/* that frame's bytes, kept to apply
					 * at a promotion once the ring has
					 * room (linker, then role changes
					 * once it stopped) */
	uint32_t kept_len;
	uint64_t kept_pos;
	uint64_t acked;			/* linker: the last position it
					 * acknowledged */
	uint64_t wrote;			/* linker: where the ring ends by
					 * what this daemon's linkers wrote
					 * (their start, frames, gaps, cuts),
					 * if wrote_known: a head elsewhere
					 * was moved by a process that maps
					 * the ring (rp_ring_moved()) */
	bool wrote_known;
	uint64_t last_seq;		/* linker: the last sequence number
					 * applied on this link, if
					 * seq_known */
	bool seq_known;
	uint64_t link_epoch;		/* linker: the primary's epoch at this
					 * link's acceptance, the only one its
					 * frames may carry */
	uint64_t ack_every;		/* at least one acknowledgement per
					 * this many bytes applied */
	struct sbd_link *slink;
	shmbus_pub *writer;
	uint8_t *buf;
	struct group_batch *groups;	/* agent: its groups' states, made
					 * at their first listing */
};

struct repl_state {
	bool on;
	int role;			/* atomic: enum sbd_role */
	uint64_t epoch;			/* atomic: this host's newest */
	const struct sbd_transport *t;
	struct rchan *ch;
	size_t n;
	int lfd;
	pthread_t listener;
	bool listener_on;
	bool stopping;			/* atomic */
	unsigned hs_other, hs_peer;	/* atomic: handshakes running from
					 * other hosts, from the peer's */
	pthread_mutex_t role_mu;
	int hist_fd;
	struct sbd_ratelimit rl_refused, rl_link;
	unsigned long refused, link_errors;

	/* With an arbiter (leader.c): */
	bool arbiter;			/* [replication] arbiter = etcd */
	int64_t lease_until;		/* atomic: lease_ns() until
					 * which this primary may acknowledge
					 * (its lease, or the failsafe) */
	bool out_recorded;		/* atomic: the arbiter records the
					 * standby out of sync: a degrading
					 * channel may acknowledge without it */
	int64_t peer_seen_ns;		/* atomic, lease_ns(): standby: the
					 * last frame from a primary */
	int64_t acked_ns;		/* atomic, lease_ns(): primary: the
					 * last acknowledgement from the
					 * standby */
	bool rings_lost;		/* atomic: a replicated ring was made
					 * again since the last run (a reboot):
					 * no automatic promotion until a
					 * primary records it in sync again */
	uint64_t lost_token;		/* set at start while rings_lost: its
					 * links' hello.token */
};

/* The agent's state (repl.c). */
extern struct repl_state repl;

extern pthread_mutex_t repl_log_mu;

/* A warning about links or refusals, at most one a second of each kind
 * (their limiters are shared by the agent's threads). */
#define LIMITED(rl, count, what, ...)                                      \
	do {                                                               \
		pthread_mutex_lock(&repl_log_mu);                          \
		sbd_log_limited(rl, SBD_WARN, ++(count), what, __VA_ARGS__); \
		pthread_mutex_unlock(&repl_log_mu);                        \
	} while (0)

/* A link's event on channel rc (linked, a gap, records cut off or lost):
 * a few at once in normal operation, for ever from a peer that links
 * again and again; at most 8 lines a second a channel. */
#define LINK_EVENT(rc, level, ...)                                          \
	do {                                                               \
		pthread_mutex_lock(&repl_log_mu);                          \
		sbd_log_burst(&(rc)->rl_events, 8, level, ++(rc)->events,   \
			      "link events", __VA_ARGS__);                 \
		pthread_mutex_unlock(&repl_log_mu);                        \
	} while (0)

static inline int64_t now_ns(void)
{
	return sb_now_ns();
}

static inline bool stopped(const struct rchan *rc)
{
	return LOAD(&rc->stop) || LOAD(&repl.stopping);
}

/* Sleeps ms, or less once the channel's threads are told to stop. */
static inline void nap(const struct rchan *rc, int ms)
{
	for (int i = 0; i < ms && !stopped(rc); i += 10)
		usleep(10000);
}

static inline const char *role_name(int role)
{
	return role == SBD_ROLE_PRIMARY ? "primary" : "standby";
}

static inline unsigned sync_ms(void)
{
	return sbd.conf.repl.sync_timeout_ms;
}

/* repl.c */
struct rchan *rp_find(uint64_t id);
/* The arbiter's clock: CLOCK_BOOTTIME, which goes on counting while the
 * machine is suspended or frozen, so that a term never outlives them. */
static inline int64_t lease_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Whether this primary may acknowledge now: no arbiter, or its lease (or
 * the failsafe) holds (leader.c). */
static inline bool rp_may_ack(void)
{
	return !repl.arbiter || lease_ns() < LOAD(&repl.lease_until);
}
/* repl_roles.c */
/* The standby's side of a switchover: a handshake thread, after a hello
 * for RW_FOR_PROMOTE. */
void rp_serve_promote(struct sbd_link *l, const struct rw_hello *hello);
/* leader.c's role changes, under role_mu: an automatic promotion at an
 * epoch above floor; a primary whose lease is lost fences its channels
 * and stands by, said at `level` (an error for one that served in this
 * run). */
int rp_auto_promote(uint64_t floor, char *out, size_t n);
void rp_lease_lost(const char *why, int level);
/* Whether records acknowledged as received were not applied here. */
bool rp_unapplied(void);
/* A primary's fences: opened once it holds the key's term, closed (a
 * primary that no longer takes claims) at a clean stop. */
void rp_open_fences(void);
void rp_close_fences(void);
/* The rings' identities in state_dir (repl.c): whether a ring was made
 * again since they were recorded (or a loss is still recorded); and the
 * record made anew once it was caught up. */
bool rp_rings_check(void);
void rp_rings_record(void);
/* leader.c, leader_key.c */
/* The arbiter's client, opened before the channels' threads start; its
 * threads, started last. */
int sbd_leader_open(void);
int sbd_leader_start(void);
void sbd_leader_stop(void);
size_t sbd_leader_status(char *out, size_t n);
/* Before a switchover hands the role over: gives the leader key up.  0;
 * or -errno with why when etcd does not answer (the key stays this
 * host's until its lease runs out), then with `keep` the key and its term
 * are kept as they were. */
int sbd_leader_release(bool keep, char *why, size_t n);
/* Whether etcd answers and the leader key is this host's: 0, or -errno
 * with why (before a switchover, which needs both). */
int sbd_leader_check(char *why, size_t n);
/* A promotion by hand or by a switchover: takes the leader key, and
 * records "out" at the epoch to promote at (*floor + 1) with it; 0, or
 * -errno with why.  Then sbd_leader_claimed() says whether the promotion
 * went through (if not, the sync record is put back as the claim found
 * it, unless written since, and the key given back).  Not under role_mu. */
enum sbd_claim {
	SBD_CLAIM_CHECKED,	/* only if recorded in sync (promote) */
	SBD_CLAIM_FORCE,	/* whatever the record says (--force) */
	SBD_CLAIM_HANDOVER,	/* a switchover's peer, which holds all */
};
int sbd_leader_claim(enum sbd_claim how, uint64_t *floor, char *why,
		     size_t n);
void sbd_leader_claimed(bool ok);
/* The leader thread's next step now: a switchover made this host primary,
 * and it takes the key (and opens its channels) at that step. */
void sbd_leader_kick(void);
int rp_send_frame(struct sbd_link *l, uint16_t type, uint64_t chan,
		  uint64_t pos, const struct iovec *body, int n, int timeout_ms);
int rp_send_ack(struct rchan *rc, struct sbd_link *l, uint64_t received,
		uint64_t applied);

/* repl_primary.c: a primary's channel threads.  The agent's cursor is a
 * kept slot (SHMBUS_SLOT_REPL) that holds the standby's records in the
 * ring also while no shmbusd runs.  `resume`: the ring's flags say the
 * standby was in sync when the last shmbusd stopped; if that daemon's
 * cursor is there, the standby is taken to be in sync still
 * (provisionally: docs/replication.md), so that the cursor goes on
 * holding what it lacks.  handed: a switchover's new primary, whose
 * standby (the old primary) held exactly what this host holds when it
 * handed over: in sync from the start, provisionally, likewise. */
int rp_agent_start(struct rchan *rc, bool resume, bool handed);
/* Standby: whether the ring's head is not where this daemon's linker
 * left it (a process that maps the ring wrote records there by hand: a
 * publisher gets the data file writable on a standby too).  Linker, or
 * once it is stopped. */
bool rp_ring_moved(struct rchan *rc);
/* Wakes the agent, wherever it sleeps (its nap, or while the reader
 * ships). */
void rp_agent_wake(struct rchan *rc);
/* `keep`: shmbusd exits, the cursor stays for the next one; else it is
 * released (the host stands by). */
void rp_agent_stop(struct rchan *rc, bool keep);
/* repl_accept.c: a standby's link, its key proven and its hello read (a
 * handshake thread), answered and handed to the channel's agent, or
 * refused. */
void rp_serve_link(struct sbd_link *l, const struct rw_hello *hi);

/* repl_standby.c */
int rp_linker_start(struct rchan *rc);
/* rejoin.c: the ring (and journal) cut back to pos, where the new
 * primary's epoch (new_epoch) began, the records past it, of this
 * channel's newest epoch here (epoch: the host's may be newer already,
 * another channel having linked first), kept in a quarantine file; 0, or
 * -errno with why (the ring is then as it was). */
int rp_rejoin_cut(struct rchan *rc, uint64_t pos, uint64_t epoch,
		  uint64_t new_epoch,
		  char *why, size_t n);
void rp_linker_stop(struct rchan *rc);
/* The frame acknowledged as received and not applied, applied now if
 * the standby's subscribers let go of the ring within wait_ns (0: one
 * look).  Called by the linker itself between links, or at a promotion
 * once the linker is stopped: one thread writes the ring at a time.  0,
 * or -errno. */
int rp_apply_kept(struct rchan *rc, int64_t wait_ns);

/* repl_roles.c: at a promotion, the groups' lanes a standby's ring
 * writer lapped go on from the ring's oldest record. */
void rp_groups_unlap(void);

/* epochs.c: the history (state_dir/epochs).  Loading sets repl.epoch to
 * its newest epoch; an append raises it, is fdatasync'd when `sync`, and
 * is refused for an epoch older than the newest recorded (-ESTALE) or a
 * tag other than the epoch's (-EXDEV); tag 0 takes the epoch's. */
int rp_hist_load(const char *dir, char *why, size_t wn);
int rp_hist_append(uint64_t epoch, uint64_t tag, const struct rchan *rc,
		   uint64_t pos, bool sync);
/* The tag of the promotion that began epoch e, as recorded here (0: not
 * known); a new random one (0 only if the kernel has no randomness). */
uint64_t rp_hist_tag(uint64_t e);
uint64_t rp_new_tag(void);
bool rp_hist_has(uint64_t e, uint64_t chan);
/* The start of the first epoch after e in the channel, or UINT64_MAX. */
uint64_t rp_hist_next_start(uint64_t e, uint64_t chan);
/* The newest epoch channel chan's records carry here (0: none). */
uint64_t rp_hist_last(uint64_t chan);
void rp_hist_close(void);

#endif /* SHMBUSD_REPL_INT_H */
