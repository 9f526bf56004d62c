/* SPDX-License-Identifier: MIT */
/*
 * repl.c - the replication agent: one host of an HA pair ships its
 * replicated channels to the other (docs/replication.md).  Start and
 * stop, the listener and its handshakes, the record of the rings'
 * identities, and what the agent's files share (repl_int.h describes the
 * threads); role changes are in repl_roles.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl.h"
#include "repl_int.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

struct repl_state repl = { .lfd = -1, .hist_fd = -1,
			   .role_mu = PTHREAD_MUTEX_INITIALIZER };

pthread_mutex_t repl_log_mu = PTHREAD_MUTEX_INITIALIZER;

/* --------------------------------------------------------------- frames */

int rp_send_frame(struct sbd_link *l, uint16_t type, uint64_t chan,
		      uint64_t pos, const struct iovec *body, int n,
		      int timeout_ms)
{
	struct rw_hdr h;

	rw_seal(&h, type, LOAD(&repl.epoch), chan, pos, body, n);
	return repl.t->send(l, &h, body, n, timeout_ms);
}

int rp_send_ack(struct rchan *rc, struct sbd_link *l, uint64_t received,
		    uint64_t applied)
{
	struct sb_jnl_view v;
	struct rw_ack a = { received, applied, 0 };

	/* What this host's journal of the channel has synced of it; nothing
	 * while it is below journal_min_free, as for a local acknowledgement
	 * (the primary then finds this standby out of sync). */
	sb_jnl_read(rc->ch, &v);
	if ((v.state & SHMBUS_JNL_ON) && !(v.state & SHMBUS_JNL_DISK_FULL))
		a.persisted = v.persisted < applied ? v.persisted : applied;
	struct iovec iov = { &a, sizeof(a) };

	return rp_send_frame(l, RW_ACK, rc->id, 0, &iov, 1, 2000);
}


struct rchan *rp_find(uint64_t id)
{
	for (size_t i = 0; i < repl.n; i++)
		if (repl.ch[i].id == id)
			return &repl.ch[i];
	return NULL;
}

/* A ring a standby writes: its fence says so, or says it was being cut
 * back when the daemon stopped (rejoin.c). */
static bool standby_ring(shmbus_channel *ch)
{
	uint32_t f = sb_fence_get(ch);

	return f == SHMBUS_FENCE_STANDBY || f == SHMBUS_FENCE_CUT;
}

/* state_dir/rings: "NAME ID" per replicated channel, the identity of its
 * ring when it last held everything; state_dir/rings-lost while a ring
 * made again has not been caught up. */
static void rings_paths(char *ids, char *lost, size_t n)
{
	snprintf(ids, n, "%s/rings", sbd.conf.repl.state_dir);
	snprintf(lost, n, "%s/rings-lost", sbd.conf.repl.state_dir);
}

/* One line of state_dir/rings, as rp_rings_record() writes it: 0, or -1
 * for anything else. */
static int rings_parse(char *line, char *name, size_t n, uint64_t *id)
{
	char *sp = strchr(line, ' '), *nl = strchr(line, '\n');

	if (!sp || !nl || nl[1] || (size_t)(sp - line) >= n)
		return -1;
	memcpy(name, line, (size_t)(sp - line));
	name[sp - line] = 0;
	return sb_name_ok(name, n - 1) && nl > sp + 1 &&
	       sp + 1 + sb_hex_digits(sp + 1, 16, id) == nl ? 0 : -1;
}

bool rp_rings_check(void)
{
	char ids[PATH_MAX + 16], lost[PATH_MAX + 16], line[512], name[300];
	bool gone = false, damaged = false;
	int lineno = 0;
	uint64_t id;
	FILE *f;

	rings_paths(ids, lost, sizeof(ids));
	if (access(lost, F_OK) == 0)
		return true;
	{
		int fd = open(ids, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
			      O_NONBLOCK);

		f = fd >= 0 ? fdopen(fd, "r") : NULL;
		if (!f && fd >= 0)
			close(fd);
	}
	if (!f && errno == ENOENT)
		return false;	/* never recorded: a new pair */
	if (!f)
		damaged = true;	/* a link, unreadable: cannot vouch */
	while (f && fgets(line, sizeof(line), f)) {
		lineno++;
		/* A NUL byte ends the string before its newline: refused
		 * like any line that is not as written. */
		if (rings_parse(line, name, sizeof(name), &id)) {
			damaged = true;
			break;
		}
		for (size_t i = 0; i < repl.n; i++)
			if (!strcmp(repl.ch[i].name, name))
				gone |= sb_ring_id(repl.ch[i].ch) != id;
	}
	if (f)
		fclose(f);
	if (damaged)
		sbd_log(SBD_ERR, 0, "replication: %s:%d is damaged: this "
			"host cannot tell whether its rings are the ones it "
			"recorded, and takes them for lost (they are caught up "
			"from the peer before this host may become primary)",
			ids, lineno);
	if (gone || damaged) {
		int fd = open(lost, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
			      0600);

		if (fd >= 0) {
			fsync(fd);
			close(fd);
		}
	}
	return gone || damaged;
}

void rp_rings_record(void)
{
	char ids[PATH_MAX + 16], lost[PATH_MAX + 16], tmp[PATH_MAX + 32];
	FILE *f;

	rings_paths(ids, lost, sizeof(ids));
	snprintf(tmp, sizeof(tmp), "%s.tmp", ids);
	{
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
			      O_NOFOLLOW, 0600);

		f = fd >= 0 ? fdopen(fd, "w") : NULL;
		if (!f) {
			if (fd >= 0)
				close(fd);
			return;
		}
	}
	for (size_t i = 0; i < repl.n; i++)
		fprintf(f, "%s %llx\n", repl.ch[i].name,
			(unsigned long long)sb_ring_id(repl.ch[i].ch));
	if (fflush(f) == 0 && fsync(fileno(f)) == 0 && fclose(f) == 0 &&
	    rename(tmp, ids) == 0)
		unlink(lost);
	else
		unlink(tmp);
}

/* ------------------------------------------------------------ handshakes */

/* One handshake's thread: its link, and the count of its kind. */
struct handshake {
	struct sbd_link *l;
	unsigned *count;
};

static void *handshake_main(void *arg)
{
	struct handshake *hs = arg;
	struct sbd_link *l = hs->l;
	struct rw_hello hi;
	struct rw_hdr h;
	char why[512];
	int rc2;

	sbd_thread_setup("sb-handshake", false);
	rc2 = rw_auth_server(repl.t, l, sbd.conf.bus, HANDSHAKE_MS, why,
			     sizeof(why));
	if (!rc2) {
		rc2 = rw_recv_frame(repl.t, l, &h, &hi, sizeof(hi), HANDSHAKE_MS,
				    why, sizeof(why));
		if (!rc2 && (h.type != RW_HELLO || h.len != sizeof(hi))) {
			snprintf(why, sizeof(why), "frame type %u instead of "
				 "a hello", h.type);
			rc2 = -EBADMSG;
		}
	}
	if (!rc2) {
		hi.bus[sizeof(hi.bus) - 1] = 0;
		hi.channel[sizeof(hi.channel) - 1] = 0;
		if (strcmp(hi.bus, sbd.conf.bus)) {
			snprintf(why, sizeof(why), "bus '%.63s', this is '%s'",
				 hi.bus, sbd.conf.bus);
			rc2 = -EPERM;
		} else if (hi.purpose != RW_FOR_LINK &&
			   hi.purpose != RW_FOR_PROMOTE) {
			snprintf(why, sizeof(why), "unknown purpose %u",
				 hi.purpose);
			rc2 = -EBADMSG;
		} else if (hi.epoch >= RW_EPOCH_MAX || hi.end >= RW_POS_MAX) {
			snprintf(why, sizeof(why), "a hello with epoch %"
				 PRIu64 " or end %" PRIu64 " out of range",
				 hi.epoch, hi.end);
			rc2 = -EBADMSG;
		}
	}
	if (rc2) {
		LIMITED(&repl.rl_refused, repl.refused, "refusals",
			"replication: %s refused: %s", repl.t->peer(l), why);
		if (rc2 != -EACCES)
			rw_refuse(repl.t, l, why);
		repl.t->close(l);
	} else if (hi.purpose == RW_FOR_PROMOTE) {
		rp_serve_promote(l, &hi);
		repl.t->close(l);
	} else {
		rp_serve_link(l, &hi);
	}
	/* Release: sbd_repl_stop() frees what we used once it sees the
	 * count drop (running()). */
	__atomic_sub_fetch(hs->count, 1, __ATOMIC_RELEASE);
	free(hs);
	return NULL;
}

/* Handshakes running, of both kinds (acquire: pairs with the release
 * of handshake_main()'s end). */
static unsigned running(void)
{
	return LOAD(&repl.hs_other) + LOAD(&repl.hs_peer);
}

static void *listener_main(void *arg)
{
	(void)arg;
	sbd_thread_setup("sb-listener", false);
	while (!LOAD(&repl.stopping)) {
		struct handshake *hs;
		struct sbd_link *l;
		pthread_t t;
		pthread_attr_t a;
		bool peer;
		unsigned most;

		if (repl.t->accept(repl.lfd, &l)) {
			if (LOAD(&repl.stopping))
				break;
			usleep(10000);
			continue;
		}
		/* Before its proof, anyone may hold a handshake's place for
		 * up to HANDSHAKE_MS a frame: the peer's host has places of
		 * its own, so that others filling theirs never keep the
		 * standby from linking, nor a switchover from promoting. */
		peer = repl.t->from_peer(l);
		most = peer ? HANDSHAKES_PEER : HANDSHAKES_MAX;
		hs = malloc(sizeof(*hs));
		if (!hs) {
			repl.t->close(l);
			continue;
		}
		hs->l = l;
		hs->count = peer ? &repl.hs_peer : &repl.hs_other;
		if (__atomic_add_fetch(hs->count, 1, __ATOMIC_RELAXED) > most) {
			__atomic_sub_fetch(hs->count, 1, __ATOMIC_RELAXED);
			LIMITED(&repl.rl_refused, repl.refused, "refusals",
				"replication: %s refused: %u handshakes at "
				"once already from %s", repl.t->peer(l), most,
				peer ? "the peer's host" : "hosts other than "
				"the peer's");
			repl.t->close(l);
			free(hs);
			continue;
		}
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &a, handshake_main, hs)) {
			__atomic_sub_fetch(hs->count, 1, __ATOMIC_RELAXED);
			repl.t->close(l);
			free(hs);
		}
		pthread_attr_destroy(&a);
	}
	return NULL;
}

/* --------------------------------------------------------------- the API */

void sbd_repl_forget(shmbus_channel *ch, const char *name)
{
	struct sb_repl_view v;

	/* The last shmbusd's agent cursor holds nothing any more. */
	sb_sub_kept_release(ch, SHMBUS_SLOT_REPL);
	sb_repl_read(ch, &v);
	if ((v.flags & SHMBUS_REPL_ON) || v.fence != SHMBUS_FENCE_OPEN) {
		sb_repl_setup(ch, 0, 0, v.epoch);
		sb_fence_set(ch, SHMBUS_FENCE_OPEN);
		sbd_log(SBD_NOTICE, 0, "%s: no longer replicated; producers "
			"are accepted", name);
	}
}

/* Channels the config no longer replicates (sbd_repl_forget()). */
static void unreplicate_others(void)
{
	for (size_t i = 0; i < sbd.conf.nchans; i++) {
		const struct sbd_chan_conf *cc = &sbd.conf.chans[i];
		shmbus_channel *ch;

		if (cc->repl_level >= 0 && sbd.conf.repl.line)
			continue;
		ch = shmbus_channel_open(sbd.conf.shm_dir, cc->name);
		if (!ch)
			continue;
		sbd_repl_forget(ch, cc->name);
		shmbus_channel_close(ch);
	}
}

int sbd_repl_start(void)
{
	const struct sbd_repl_conf *c = &sbd.conf.repl;
	char why[PATH_MAX + 256];
	int role = c->role;
	size_t n = 0;

	unreplicate_others();
	if (!c->line)
		return 0;
	if (rw_key_load(c->key_file, why, sizeof(why))) {
		sbd_log(SBD_ERR, 0, "replication: %s", why);
		return -1;
	}
	if (rp_hist_load(c->state_dir, why, sizeof(why))) {
		sbd_log(SBD_ERR, 0, "replication: %s", why);
		return -1;
	}
	repl.t = &sbd_tcp;
	_Static_assert(SBD_REPL_CHANNELS_MAX <= RW_PROMOTE_MAX,
		       "a promotion names every replicated channel");
	for (size_t i = 0; i < sbd.conf.nchans; i++)
		n += sbd.conf.chans[i].repl_level >= 0;
	repl.ch = calloc(n ? n : 1, sizeof(*repl.ch));
	if (!repl.ch)
		return -1;
	for (size_t i = 0; i < sbd.conf.nchans; i++) {
		const struct sbd_chan_conf *cc = &sbd.conf.chans[i];
		struct rchan *rc = &repl.ch[repl.n];
		struct shmbus_channel_info in;

		if (cc->repl_level < 0)
			continue;
		snprintf(rc->name, sizeof(rc->name), "%s", cc->name);
		rc->id = sbd_name_hash(cc->name);
		rc->ch = shmbus_channel_open(sbd.conf.shm_dir, cc->name);
		if (!rc->ch || shmbus_channel_info(rc->ch, &in)) {
			sbd_log(SBD_ERR, errno, "replication: %s: cannot map "
				"it", cc->name);
			return -1;
		}
		pthread_mutex_init(&rc->mu, NULL);
		pthread_mutex_init(&rc->ship_mu, NULL);
		rc->level = (uint32_t)cc->repl_level;
		rc->strict = cc->repl_strict;
		rc->cap = in.capacity;
		rc->max_msg = in.max_msg;
		rc->flags = sb_channel_flags(in.policy, in.producers);
		/* Frames of at most 256 KiB and half the ring (a standby
		 * applies a frame as one claim); one record may be longer. */
		rc->frame_max = FRAME_MIN;
		if (rc->frame_max > rc->cap / 2 - 8)
			rc->frame_max = (uint32_t)(rc->cap / 2 - 8);
		rc->buf_len = rc->frame_max;
		if (rc->buf_len < 16 + ((uint64_t)rc->max_msg + 7) / 8 * 8)
			rc->buf_len = 16 + (rc->max_msg + 7u) / 8u * 8u;
		/* ... and a frame of the channel's groups. */
		if (rc->buf_len < RW_GROUPS_MAX * sizeof(struct sb_group_state))
			rc->buf_len = RW_GROUPS_MAX *
				      sizeof(struct sb_group_state);
		rc->max_lag = c->max_lag;
		rc->ack_every = rc->cap / 4 < (1u << 20) ? rc->cap / 4
							  : (1u << 20);
		rc->buf = malloc(rc->buf_len);
		rc->writer = sb_writer_open(rc->ch, 100000000);
		if (!rc->buf || !rc->writer)
			return -1;
		repl.n++;
	}
	/* Each ring's epoch word names the epoch its records were last
	 * written at, and that epoch is in the history, synced, before the
	 * ring is written at it (become_primary(), a standby's first frame of
	 * an epoch): a history that lacks it was damaged or replaced, and
	 * this host would link, promote or refuse by an epoch not its own. */
	for (size_t i = 0; i < repl.n; i++) {
		struct sb_repl_view v;

		sb_repl_read(repl.ch[i].ch, &v);
		if (v.epoch && !rp_hist_has(v.epoch, repl.ch[i].id)) {
			sbd_log(SBD_ERR, 0, "replication: %s: its ring was "
				"written at epoch %" PRIu64 ", which %s/epochs "
				"does not record for it: the history is damaged "
				"or not this host's; put the right one back (or "
				"move the channel's ring aside to start it "
				"afresh)", repl.ch[i].name, v.epoch,
				c->state_dir);
			return -1;
		}
	}
	if (role == SBD_ROLE_PRIMARY && c->arbiter[0]) {
		bool was_standby = false;

		/* With an arbiter, a host whose rings were a standby's stays
		 * one at start, whatever its config says: etcd decides, and
		 * its leader thread promotes it if it may. */
		for (size_t i = 0; i < repl.n; i++)
			was_standby |= standby_ring(repl.ch[i].ch);
		if (was_standby) {
			role = SBD_ROLE_STANDBY;
			sbd_log(SBD_NOTICE, 0, "arbiter: this host's rings were a "
				"standby's: it starts as standby");
		}
	}
	if (role == SBD_ROLE_STANDBY && c->arbiter[0] && repl.epoch > 0 &&
	    repl.n) {
		bool was_primary = true;

		/* The converse: a host whose rings were a primary's (after
		 * an automatic failover made it one, its config still
		 * says standby) starts as a primary, whose leader thread
		 * takes the key back only if no host has been primary since
		 * (may_retake()); else it stands by.  Starting as a standby
		 * would hand the role to the other host when the key
		 * expires, for a restart. */
		for (size_t i = 0; i < repl.n; i++)
			was_primary &= !standby_ring(repl.ch[i].ch);
		/* Rings made again since (a reboot) are a new primary's
		 * look, not a primary's past. */
		if (was_primary && !rp_rings_check()) {
			role = SBD_ROLE_PRIMARY;
			sbd_log(SBD_NOTICE, 0, "arbiter: this host's rings were "
				"a primary's: it starts as primary");
		}
	}
	STORE(&repl.role, role);
	if (role == SBD_ROLE_PRIMARY) {
		bool was_standby = false;

		for (size_t i = 0; i < repl.n; i++)
			was_standby |= standby_ring(repl.ch[i].ch);
		/* A standby's rings made primary by its config: a promotion,
		 * at the next epoch, from the records it applied whole. */
		if (was_standby || repl.epoch == 0) {
			uint64_t tag = rp_new_tag();

			repl.epoch++;
			for (size_t i = 0; i < repl.n; i++) {
				shmbus_channel *ch = repl.ch[i].ch;
				/* Only a standby's ring may have an apply
				 * cut short; a primary's may have producers
				 * at work. */
				uint64_t end =
					standby_ring(ch)
						? sb_apply_recover(ch)
						: sb_committed_end(ch,
							sb_ring_oldest(ch),
							UINT64_MAX);

				if (end == UINT64_MAX ||
				    rp_hist_append(repl.epoch, tag,
						   &repl.ch[i], end,
						   i + 1 == repl.n))
					return -1;
			}
			if (was_standby) {
				rp_groups_unlap();
				sbd_log(SBD_NOTICE, 0, "replication: this "
					"host's standby rings become primary "
					"at epoch %" PRIu64, repl.epoch);
			}
		}
	}
	for (size_t i = 0; i < repl.n; i++) {
		struct rchan *rc = &repl.ch[i];
		uint32_t f = SHMBUS_REPL_ON | SHMBUS_REPL_OUT_OF_SYNC |
			     (rc->strict ? SHMBUS_REPL_STRICT : 0);
		struct sb_repl_view v;

		/* A primary that goes on at the same epoch, whose standby
		 * was in sync when the last shmbusd stopped: the agent
		 * takes that daemon's cursor over (rp_agent_start()). */
		sb_repl_read(rc->ch, &v);
		rc->resume = role == SBD_ROLE_PRIMARY &&
			     (v.flags & SHMBUS_REPL_ON) &&
			     !(v.flags & (SHMBUS_REPL_STANDBY |
					  SHMBUS_REPL_OUT_OF_SYNC)) &&
			     v.epoch == repl.epoch;
		if (rc->resume)
			f &= ~SHMBUS_REPL_OUT_OF_SYNC;
		/* A ring that was a standby's, or a primary's of another
		 * epoch: what a standby has of it, and when it last had
		 * everything, are not known of this primary (busstat's lag
		 * the whole ring, LAGT "?"), as after a promotion
		 * (become_primary()); the positions there were this host's
		 * own as a standby, or another term's standby's. */
		if (role == SBD_ROLE_PRIMARY &&
		    (v.flags & SHMBUS_REPL_STANDBY || v.epoch != repl.epoch)) {
			sb_repl_acked(rc->ch, 0, 0, 0, false);
			sb_repl_caught_up_unknown(rc->ch);
		}
		if (role == SBD_ROLE_STANDBY) {
			/* A standby's ring is written by its linker alone:
			 * a cursor its agent left when it was primary would
			 * hold that writer back. */
			sb_sub_kept_release(rc->ch, SHMBUS_SLOT_REPL);
			/* Before anyone is handed the channel. */
			sb_fence_set(rc->ch, SHMBUS_FENCE_STANDBY);
			f |= SHMBUS_REPL_STANDBY;
		} else if (!rp_hist_has(repl.epoch, rc->id) &&
			   rp_hist_append(repl.epoch, 0, rc,
				       sb_committed_end(rc->ch,
							sb_ring_oldest(rc->ch),
							UINT64_MAX), true)) {
			return -1;	/* a channel new to the config */
		}
		sb_repl_setup(rc->ch, rc->level, f, repl.epoch);
	}
	if (repl.t->listen(c->listen, &repl.lfd, why, sizeof(why))) {
		sbd_log(SBD_ERR, 0, "replication: %s", why);
		return -1;
	}
	/* Before the listener: a switchover's handshake may come at once,
	 * and an arbiter changes what a promotion does. */
	repl.arbiter = c->arbiter[0] != 0;
	if (repl.arbiter) {
		STORE(&repl.rings_lost, rp_rings_check());
		/* This run's token (struct rw_hello): 0 never. */
		while (LOAD(&repl.rings_lost) && !repl.lost_token)
			if (getrandom(&repl.lost_token,
				      sizeof(repl.lost_token), 0) !=
			    (ssize_t)sizeof(repl.lost_token) &&
			    errno != EINTR) {
				sbd_log(SBD_ERR, errno, "replication: no "
					"random token for this run");
				return -1;
			}
		if (LOAD(&repl.rings_lost))
			sbd_log(SBD_WARN, 0, "arbiter: a replicated ring was made "
				"again since the last run (a reboot?): this host "
				"neither takes the leader key nor promotes itself "
				"until a primary records it in sync again "
				"(shmbusctl promote --force takes the risk)");
		else
			rp_rings_record();
	}
	if (repl.arbiter && sbd_leader_open())
		return -1;
	repl.on = true;
	/* Until the leader thread holds the lease: a primary acknowledges
	 * nothing, and degrades only once the arbiter records it. */
	STORE(&repl.lease_until, 0);
	for (size_t i = 0; i < repl.n; i++) {
		struct rchan *rc = &repl.ch[i];

		if (role == SBD_ROLE_STANDBY) {
			rp_linker_start(rc);
		} else {
			rp_agent_start(rc, rc->resume, false);
			/* With an arbiter, closed until the leader thread
			 * holds the key (rp_open_fences()). */
			sb_fence_set(rc->ch, repl.arbiter ? SHMBUS_FENCE_HANDOVER
							  : SHMBUS_FENCE_OPEN);
		}
	}
	/* The peer's host, for its handshakes' places (listener_main()):
	 * looked up once here, never on the listener's path (a lookup may
	 * wait on DNS for long). */
	if (repl.t->peer_host(c->peer))
		sbd_log(SBD_WARN, 0, "replication: peer %s does not resolve "
			"now: its handshakes share the places of other hosts "
			"until shmbusd restarts", c->peer);
	/* After the channels' threads: a peer's promote or link (which take
	 * role_mu, as the start does not) finds them as the role says. */
	if (pthread_create(&repl.listener, NULL, listener_main, NULL))
		return -1;
	repl.listener_on = true;
	/* Last: its role changes take role_mu, which the start does not. */
	if (repl.arbiter && sbd_leader_start())
		return -1;
	sbd_log(SBD_NOTICE, 0, "replication: %s at epoch %" PRIu64 ", %zu "
		"channel%s, listening on %s, peer %s", role_name(role),
		LOAD(&repl.epoch), repl.n, repl.n == 1 ? "" : "s", c->listen, c->peer);
	return 0;
}

void sbd_repl_stop(void)
{
	if (!repl.on)
		return;
	STORE(&repl.stopping, true);
	sbd_leader_stop();
	pthread_mutex_lock(&repl.role_mu);
	for (size_t i = 0; i < repl.n; i++) {
		rp_agent_stop(&repl.ch[i], true);
		rp_linker_stop(&repl.ch[i]);
	}
	pthread_mutex_unlock(&repl.role_mu);
	shutdown(repl.lfd, SHUT_RDWR);
	if (repl.listener_on)
		pthread_join(repl.listener, NULL);
	close(repl.lfd);
	/* Handshake threads end within their time limits (two seconds a
	 * frame).  One still running keeps what it uses: nothing is freed
	 * then, the process is about to exit anyway. */
	for (int i = 0; i < 1000 && running(); i++)
		usleep(10000);
	if (running()) {
		sbd_log(SBD_WARN, 0, "replication: %u handshakes still running "
			"at exit", running());
		return;
	}
	for (size_t i = 0; i < repl.n; i++) {
		sb_writer_close(repl.ch[i].writer);
		free(repl.ch[i].buf);
		free(repl.ch[i].groups);
		free(repl.ch[i].kept);
		shmbus_channel_close(repl.ch[i].ch);
	}
	free(repl.ch);
	rp_hist_close();
	repl.on = false;
}

bool sbd_repl_is(const char *name)
{
	return repl.on && rp_find(sbd_name_hash(name)) != NULL;
}
