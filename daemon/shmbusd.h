/* SPDX-License-Identifier: MIT */
/*
 * shmbusd.h - the supervisor daemon's parts and what they share.
 *
 *   main.c      arguments, the single-instance lock, signals, the loop
 *   config.c    the INI file, table-driven (libinih)
 *   registry.c  channels and clients in RCU hash tables (liburcu)
 *   channels.c  the channels: set up, adopted, created, reloaded
 *   admission.c who gets a place in the client table (limits, idle)
 *   control.c   the control socket: requests, authorisation, fd passing
 *   reaper.c    the reaper thread: finds dead processes' slots, repairs
 *   log.c       levels, stderr or syslog
 *   repl*.c     replication to a standby host (repl.h, repl_int.h)
 *
 * Threads: the main thread (control socket, signals, reload), the reaper,
 * liburcu's call_rcu worker, and replication's (repl_int.h).  The
 * registry is written by the main thread only and read by all of them
 * without a lock.
 */
#ifndef SHMBUSD_H
#define SHMBUSD_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define _LGPL_SOURCE
#include <urcu.h>
#include <urcu/rculfhash.h>

#include "shmbus.h"
#include "shmbus/protocol.h"
#include "../lib/contract.h"

/* ------------------------------------------------------------------ log */

enum sbd_level { SBD_ERR, SBD_WARN, SBD_NOTICE, SBD_INFO, SBD_DEBUG };

void sbd_log_setup(int level, bool syslog);
/* err: an errno to append (positive or negative), 0 for none. */
void sbd_log(int level, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int sbd_log_level_parse(const char *s);
/* Whether path and every level above it is a real directory of root or
 * the daemon's user that no other user may write to (but for a root-owned
 * sticky one): 0, or -1 logged with the level and why (main.c). */
int sbd_dir_is_ours(const char *path);
/* The same for every level of path as written, each where it resolves to
 * (a symbolic link is followed only from, and only to, such a
 * directory): 0, or -1 logged (dirs.c). */
int sbd_path_is_ours(const char *path);

/* The calling thread is named `name` (15 characters at most); a hot one
 * (it moves records) runs on [replication] cpus if the config gives
 * them. */
void sbd_thread_setup(const char *name, bool hot);

/* At most one line a second for one kind of event, so that a flood cannot
 * fill the log.  sbd_log_allow() says whether to log this one; *missed
 * gets how many were not logged since the last line. */
struct sbd_ratelimit {
	uint64_t next_ns;	/* the end of the current second's window */
	unsigned used;		/* lines in it */
	unsigned long missed;
};
bool sbd_log_allow(struct sbd_ratelimit *rl, unsigned long *missed);
/* Logs one line through rl, with `total` and how many lines rl left out
 * ("N more <what> since the last line, T in all"). */
void sbd_log_limited(struct sbd_ratelimit *rl, int level,
		     unsigned long total, const char *what, const char *fmt,
		     ...) __attribute__((format(printf, 5, 6)));
/* The same, up to n lines a second: events that come a few at once in
 * normal operation, and that a misbehaving peer could repeat for ever. */
void sbd_log_burst(struct sbd_ratelimit *rl, unsigned n, int level,
		   unsigned long total, const char *what, const char *fmt,
		   ...) __attribute__((format(printf, 6, 7)));
/* --------------------------------------------------------------- config */

#define SBD_RULE_MAX 32

/* Who may do something: a list of uids and gids, or anyone. */
struct sbd_rule {
	bool any;
	uint32_t n;
	struct {
		bool group;
		uint32_t id;
	} e[SBD_RULE_MAX];
	char text[SHMBUS_CTL_NAME];	/* as written, for describe */
};

/* A consumer group named in a channel's config (consumer_groups). */
#define SBD_MAX_GROUPS	8
struct sbd_group_conf {
	char name[64];
	char dead_letter[64];
	struct shmbus_group_attr attr;	/* dead_letter: see above */
};

/* A channel's journal (docs/journal.md). */
enum sbd_fsync { SBD_FSYNC_BATCH, SBD_FSYNC_INTERVAL, SBD_FSYNC_NONE };

struct sbd_jnl_conf {
	bool on;
	bool ack;			/* acknowledge = persisted */
	int fsync;			/* enum sbd_fsync */
	unsigned fsync_ms;		/* interval: at most this old */
	uint64_t fsync_bytes;		/* interval: at most this much */
	uint64_t segment;		/* positions a segment covers; 0: the
					 * default, sbd_jnl_segment() */
	uint64_t retain_ms;		/* 0: no age limit */
	uint64_t retain_bytes;		/* 0: no size limit */
	int line;			/* of the journal key */
	int seg_line;			/* of journal_segment, 0: none */
};

/* The segment size of a journal of a ring of `capacity` bytes: the
 * config's, or by default 64 MiB or the capacity if larger.  From the
 * ring's own capacity, not the config's: a change of capacity the daemon
 * refused leaves the ring, and its journal, as they were. */
uint64_t sbd_jnl_segment(const struct sbd_jnl_conf *j, uint64_t capacity);

/* How many channels one bus may replicate: a promotion names them all in
 * one frame (RW_PROMOTE_MAX, daemon/repl.h). */
#define SBD_REPL_CHANNELS_MAX	64u

struct sbd_chan_conf {
	char name[SHMBUS_CTL_NAME];
	struct shmbus_channel_attr attr;
	int64_t owner;			/* uid, -1: the daemon's */
	int64_t group;			/* gid, -1: the daemon's */
	struct sbd_rule pub, sub;
	bool pub_set, sub_set;
	int line;			/* of its [channel ...] header */
	int cap_line, msg_line;
	int repl_level;			/* SHMBUS_ACK_*, or -1: not replicated */
	bool repl_strict;		/* out of sync: hold sync waiters */
	uint32_t ngroups;
	struct sbd_group_conf groups[SBD_MAX_GROUPS];
	struct sbd_jnl_conf jnl;
};

/* [replication]: this host's part of an HA pair (docs/replication.md). */
enum sbd_role { SBD_ROLE_PRIMARY = 1, SBD_ROLE_STANDBY = 2 };

#define SBD_CPUS_MAX	1024		/* [replication] cpus: CPUs 0..1023 */

struct sbd_repl_conf {
	int line;			/* of the section's header, 0: none */
	int role;			/* enum sbd_role, at start */
	char listen[128];		/* host:port this host listens on */
	char peer[128];			/* the peer's listen address */
	char transport[16];		/* "tcp" */
	char key_file[PATH_MAX];
	char state_dir[PATH_MAX];	/* the epoch history */
	unsigned sync_timeout_ms;	/* no progress for this long: out of
					 * sync */
	uint64_t max_lag;		/* bytes a standby may lag and stay in
					 * sync (0: no bound but the ring's) */
	unsigned nap_us;		/* an idle agent looks this often */
	unsigned handover_ms;		/* what a switchover may take */
	/* The arbiter (docs/failover.md): "" none, or "etcd". */
	char arbiter[8];
	char etcd_endpoints[1024];	/* comma-separated */
	char arbiter_prefix[256];	/* keys under it; default /shmbus/BUS */
	unsigned lease_ttl_ms;		/* the leader key's lease */
	/* cpus: the CPUs the threads that move records (agents, readers of
	 * acknowledgements, linkers) run on; bit i of cpus[i / 64] is CPU i.
	 * No bit set: wherever the scheduler puts them. */
	uint64_t cpus[SBD_CPUS_MAX / 64];
};

struct sbd_conf {
	char path[PATH_MAX];
	char bus[64];
	char shm_dir[PATH_MAX];
	char socket[108];
	unsigned socket_mode;
	unsigned max_channels;
	unsigned max_clients;
	unsigned max_clients_per_uid;	/* for each uid that is not privileged */
	unsigned reserved_clients;	/* places only privileged uids take */
	unsigned idle_timeout_ms;	/* to complete a first request */
	int per_uid_line, reserved_line;	/* 0: not in the file */
	unsigned reap_ms;
	int log_level;
	bool syslog;
	bool remove_on_exit;
	struct sbd_rule admins;
	struct sbd_rule def_pub, def_sub;	/* [defaults] */
	struct sbd_chan_conf *chans;
	size_t nchans;
	struct sbd_repl_conf repl;
	char journal_dir[PATH_MAX];	/* channels' journals: DIR/CHANNEL */
	uint64_t journal_min_free;	/* free bytes below which the journal
					 * stops acknowledging */
	/* shm_dir and socket as the file sets them (or their defaults),
	 * before -d and -S override them: what a reload compares. */
	char file_shm_dir[PATH_MAX];
	char file_socket[108];
	char err[PATH_MAX + 1024];	/* "file:line: reason" */
};

/* Reads and checks the file.  Returns 0, or -1 with c->err set. */
int sbd_conf_load(const char *path, struct sbd_conf *c);
void sbd_conf_free(struct sbd_conf *c);
/* A rule from text ("user:alice group:trading uid:0 *"); 0 or -1 with a
 * reason in err. */
int sbd_rule_parse(const char *text, struct sbd_rule *r, char *err,
		   size_t errlen);
bool sbd_rule_allows(const struct sbd_rule *r, uid_t uid, const gid_t *gids,
		     int ngids);

/* -------------------------------------------------------------- journal */

/* journal.c and journal_start.c: each journaled channel's agent
 * (docs/journal.md).  Start
 * after the channels are set up and before the first reap (the previous
 * daemon's journal cursor holds producers until ours does); a channel
 * whose journal cannot be trusted works without one, logged. */
int sbd_journal_start(void);
/* Syncs and stops the agents; their cursor slots stay held. */
void sbd_journal_stop(void);
/* A channel without a journal: one that had one at the last start no
 * longer says so, and its kept cursor holds nobody. */
void sbd_journal_forget(shmbus_channel *ch);
/* Channel `name` was deleted: its agent syncs and stops, and lets go of
 * the ring (its memory), the segment and the directory.  The journal's
 * files stay; the next start continues it.  Main thread. */
void sbd_journal_drop(const char *name);
/* Channel `name`'s journal cleared from pos on, around cut(arg), which
 * cuts its ring there (see journal_start.c); cut's result, or -errno. */
int sbd_journal_cut(const char *name, uint64_t pos, int (*cut)(void *),
		    void *arg);

/* ------------------------------------------------------------- registry */

struct sbd_rules {			/* replaced whole on reload */
	struct sbd_rule pub, sub;
	/* the dead-letter channel of each of the channel's groups that
	 * names one in the config: the only channels shmbusd copies their
	 * poison messages into (a group's file, which its members may
	 * write, is not trusted for it) */
	uint32_t ndl;
	struct {
		char group[64];
		char chan[64];
	} dl[SBD_MAX_GROUPS];
	struct rcu_head rcu;
};

#define SBD_GROUPS_SEEN	64	/* groups a channel can hold slots for */

struct sbd_chan {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	char name[SHMBUS_CTL_NAME];
	shmbus_channel *ch;		/* the daemon's own mapping */
	int fd;				/* its control file, handed out */
	int data_rw;			/* its data file, to publishers */
	int data_ro;			/* the same, read-only, to subscribers */
	struct sbd_rules *rules;	/* rcu_dereference() */
	struct shmbus_channel_attr attr;
	bool configured;
	unsigned mode;
	/* the watchdog's (reaper thread only): where subscribers wait and
	 * since when, and whether that wait has been reported */
	uint64_t wd_pos;
	int64_t wd_since_ns;
	bool wd_reported;
	/* the hand-off as the last scan saw it (reaper thread only) */
	uint64_t handoff_seen;
	/* how many groups the last scan found the channel had (reaper
	 * thread only) */
	unsigned ngroups;
	/* when its files' sizes were last looked at, and the SIGBUS faults
	 * taken then (reaper thread only) */
	int64_t cut_checked_ns;
	unsigned long cut_faults;
	/* its groups' files as first seen, to give one cut short its size
	 * back (reaper thread only) */
	struct sbd_group_seen {
		uint64_t key;		/* sbd_name_hash() of the group */
		char name[64];		/* and its name (hashes may collide) */
		struct sb_file_seen f;
		bool listed;		/* by the last scan */
		/* its file, mapped while the shm directory is as it was
		 * (listing gen), and when its size was last looked at */
		struct shmbus_group *m;
		uint64_t gen;
		int64_t mended_ns;
	} gseen[SBD_GROUPS_SEEN];
	/* One past the last place in use: the reaper's walks of gseen stop
	 * there (most channels have a group or two, and it walks every
	 * channel at every scan). */
	uint32_t gseen_top;
	/* its files were found cut short (faults.c): no longer served.
	 * Relaxed: a flag, no data travels with it. */
	atomic_bool damaged;
};

struct sbd_client {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	int fd;
	pid_t pid;
	uid_t uid;
	gid_t gids[64];
	int ngids;
	/* channels it opened or attached to, by data id (for describe: a
	 * channel deleted and made again under its name is another) */
	uint32_t nopen;
	uint64_t opened[64];
	/* Admission (control.c, main thread only): root, the daemon's user
	 * or an admin when it connected; whether it has completed a
	 * request; while it has not, its place in the idle list (oldest
	 * first), whose deadline is since_ns + idle_timeout_ms. */
	bool privileged;
	bool spoke;
	uint64_t since_ns;
	struct sbd_client *idle_prev, *idle_next;
};

int sbd_registry_init(void);
void sbd_registry_fini(void);
/* Under rcu_read_lock(). */
struct sbd_chan *sbd_chan_find(const char *name);
/* Main thread only. */
int sbd_chan_add(struct sbd_chan *c);
void sbd_chan_remove(struct sbd_chan *c);
unsigned long sbd_chan_count(void);
struct cds_lfht *sbd_chans(void);
struct cds_lfht *sbd_clients(void);
int sbd_client_add(struct sbd_client *cl);
void sbd_client_remove(struct sbd_client *cl);
uint64_t sbd_name_hash(const char *name);
void sbd_rules_replace(struct sbd_chan *c, struct sbd_rules *r);

/* ThreadSanitizer does not see the ordering that liburcu provides (it is
 * built from volatile accesses and barriers).  The registry states it:
 * publishing an entry is a release, finding one an acquire. */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define sbd_tsan_release(p) __tsan_release(p)
#define sbd_tsan_acquire(p) __tsan_acquire(p)
#else
#define sbd_tsan_release(p) ((void)(p))
#define sbd_tsan_acquire(p) ((void)(p))
#endif

/* -------------------------------------------------------------- control */

struct sbd_state {
	struct sbd_conf conf;
	bool opt_verbose;		/* -v and -s: over the file's log */
	bool opt_syslog;		/* settings, at a reload too */
	uid_t self_uid;
	pid_t self_pid;
	int listen_fd;
	int epoll_fd;
	unsigned nclients;
	unsigned nordinary;		/* clients that are not privileged */
	/* Connections refused, evicted to make room, closed as idle. */
	unsigned long refused, evicted, timed_out;
};

extern struct sbd_state sbd;

int sbd_control_listen(void);
/* Writes the bus file (lib/busfile.h) beside the socket: where the bus's
 * channels and socket are, for busstat and clients that know only the
 * bus's name.  A failure is logged, not fatal. */
void sbd_busfile_publish(void);
/* Accepts, judged by connection limits (see docs/shmbusd.md).  Call it
 * outside the handling of other clients' events: it may evict one. */
void sbd_control_accept(void);
/* Closes the connections whose idle timeout has passed; returns the ms
 * until the next one does, or -1 if none waits (for epoll_wait()). */
int sbd_control_expire(void);
/* Serves one readable client; returns false when it is gone. */
bool sbd_control_serve(struct sbd_client *cl);
void sbd_control_drop(struct sbd_client *cl);

/* admission.c.  Whether a client is privileged (root, the daemon's user,
 * [bus] admins); whether a newcomer gets a place (evicting an idle one if
 * fair; logs why not); counting it in and out; its first complete
 * request; closing idle connections (returns the ms until the next one
 * times out, or -1).  Main thread only. */
bool sbd_admission_privileged(uid_t uid, const gid_t *gids, int ngids);
bool sbd_admit(const struct sbd_client *cl);
int sbd_admission_enter(struct sbd_client *cl);
void sbd_admission_leave(struct sbd_client *cl);
void sbd_admission_spoke(struct sbd_client *cl);
int sbd_admission_expire(uint64_t now);
/* Refusals are logged through one limiter, wherever they are made. */
extern struct sbd_ratelimit sbd_rl_refused;

/* channels.c.  Creates (or adopts) the channel of a config entry and
 * registers it. */
int sbd_channel_setup(const struct sbd_chan_conf *cc, bool configured);
struct stat;
/* Whether a file in shm_dir is the daemon's (its user's or root's), not
 * another user's: shm_dir may be a sticky directory such as /dev/shm. */
bool sbd_file_is_ours(const struct stat *st);
/* Creates channel file `name` exclusively, chowned as asked (-1: as is),
 * and maps it into *out.  0 or -errno. */
int sbd_channel_create_file(const char *name,
			    const struct shmbus_channel_attr *a,
			    int64_t owner, int64_t group, shmbus_channel **out);
/* Registers a mapped channel under `name` with the rules of its config
 * section cc, or the default rules if cc is NULL; takes ownership of ch
 * (closed on failure).  0, -ENOMEM, -EEXIST or an open error. */
int sbd_channel_enroll(const char *name, shmbus_channel *ch,
		       const struct sbd_chan_conf *cc, bool configured);
/* Adopts valid channel files found in the shm dir that are not in the
 * config; sets corrupt ones aside. */
void sbd_channel_adopt_dir(void);
int sbd_reload(void);

/* --------------------------------------------------------------- reaper */

int sbd_reaper_start(void);
void sbd_reaper_stop(void);
/* Asks for a scan now (a client's connection closed). */
void sbd_reaper_kick(void);
/* One synchronous scan; returns the number of slots released. */
unsigned sbd_reap_once(void);

/* faults.c: a SIGBUS from a shared file cut short (ftruncate by a client)
 * is survived; the reaper's sbd_chan_cut() finds such a channel, gives its
 * files back their size and marks it damaged; sbd_faults_check() logs a
 * fault no channel explains. */
int sbd_faults_setup(void);
bool sbd_chan_cut(struct sbd_chan *c);
void sbd_faults_check(void);

/* ---------------------------------------------------------- replication */

/* repl.c: starts the agent if [replication] is configured (0, or -1 after
 * logging why), stops it; whether a channel is replicated; a request of
 * shmbusctl (SHMBUS_REPL_OP_*): 0 or -errno, with words in r->text. */
int sbd_repl_start(void);
void sbd_repl_stop(void);
/* A channel not replicated here (not in the config, or without
 * `replicate`): what replication left in its header, a closed fence and
 * the agent's kept cursor, no longer holds its producers. */
void sbd_repl_forget(shmbus_channel *ch, const char *name);
bool sbd_repl_is(const char *name);
int sbd_repl_command(uint32_t op, uint32_t flags,
		     struct shmbus_ctl_repl_reply *r);

/* ------------------------------------------------------------- groups */

int sbd_parse_groups(const char *v, struct sbd_chan_conf *cc, char *err,
		     size_t n);
void sbd_groups_setup(const struct sbd_chan_conf *cc, shmbus_channel *ch);
bool sbd_group_configured(const char *chan, const char *group,
			  struct shmbus_group_attr *a);
/* A channel's place for a group: its kept mapping let go, emptied (the
 * reaper's thread, or once no reader sees the channel). */
void sbd_group_seen_clear(struct sbd_group_seen *e);
/* Before a scan's sbd_groups_maintain() calls: the shm directory's groups
 * read again if it has changed. */
void sbd_groups_scan_begin(void);
void sbd_groups_maintain(struct sbd_chan *c);
/* Deletes a group of c (main thread), never during a scan of the groups:
 * shmbus_group_delete()'s answers. */
int sbd_group_delete(struct sbd_chan *c, const char *group);
void sbd_groups_close(void);

#endif /* SHMBUSD_H */
