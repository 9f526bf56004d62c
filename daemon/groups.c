/* SPDX-License-Identifier: MIT */
/*
 * groups.c - shmbusd's part in consumer groups (docs/groups.md): the
 * groups a channel's config names (parsed by groups_conf.c), and the
 * maintenance of every group at each scan (leases of dead members and
 * expired ones taken back, lanes moved, poison records dead-lettered).
 * The groups' state is in their files; the daemon keeps none of it, so a
 * restarted daemon carries on where the files are.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/contract.h"
#include "shmbusd.h"

static void attr_of(const struct sbd_group_conf *g,
		    struct shmbus_group_attr *a)
{
	*a = g->attr;
	a->dead_letter = g->dead_letter[0] ? g->dead_letter : NULL;
}

void sbd_groups_setup(const struct sbd_chan_conf *cc, shmbus_channel *ch)
{
	for (uint32_t i = 0; i < cc->ngroups; i++) {
		struct shmbus_group_attr a;
		int fd;

		attr_of(&cc->groups[i], &a);
		fd = sb_group_open_file(ch, sbd.conf.shm_dir, cc->name,
					cc->groups[i].name, &a);
		if (fd < 0)
			sbd_log(SBD_ERR, fd, "%s: group %s", cc->name,
				cc->groups[i].name);
		else
			close(fd);
	}
}

/* The configured settings of group `group` of channel `chan`, if any. */
bool sbd_group_configured(const char *chan, const char *group,
			  struct shmbus_group_attr *a)
{
	for (uint32_t i = 0; i < sbd.conf.nchans; i++) {
		const struct sbd_chan_conf *cc = &sbd.conf.chans[i];

		if (strcmp(cc->name, chan))
			continue;
		for (uint32_t j = 0; j < cc->ngroups; j++)
			if (!strcmp(cc->groups[j].name, group)) {
				attr_of(&cc->groups[j], a);
				return true;
			}
	}
	return false;
}

/* ------------------------------------------------------- maintenance */

/* Dead-letter publishers, reaper thread only: one per channel named,
 * kept for the daemon's life, in a table that grows with the channels
 * named (a group whose dead-letter channel found no place would keep its
 * poison, and its floor with it). */
struct dl_entry {
	char name[64];
	shmbus_channel *ch;
	shmbus_pub *pub;
};
static struct dl_entry *dl;
static size_t ndl;

/*
 * Every channel's groups, from one listing of the shm directory, made
 * again only when the directory has changed (a file made or removed):
 * sorted by channel, so that each channel finds its own at each scan
 * without reading the directory (which holds every channel's files: a
 * listing a channel would cost channels x files a scan).  Reaper thread
 * only.
 */
struct gentry {
	uint64_t key;		/* sbd_name_hash() of the channel */
	char chan[SHMBUS_CTL_NAME];
	char group[64];
};

static struct {
	int64_t dir_ns;		/* the directory's change time when read */
	uint64_t gen;		/* changed so many times */
	bool read;		/* dir_ns can be trusted (see below) */
	unsigned long faults;	/* SIGBUS faults taken when last looked */
	struct gentry *e, *next;	/* the listing, and the one being made */
	size_t n, cap, next_n, next_cap;
} gl;

struct scan {
	struct sbd_chan *c;
	const char *group;
};

/*
 * Whether dead-letter publisher i is still on the channel of its name;
 * one deleted (and perhaps made again) is let go, with the memory of its
 * ring: its letters would go where no subscriber can ever read them.
 * Reaper thread, under rcu_read_lock().
 */
static bool dl_current(size_t i)
{
	struct sbd_chan *now = sbd_chan_find(dl[i].name);
	struct shmbus_channel_info a, b;

	if (now && shmbus_channel_info(now->ch, &a) == 0 &&
	    shmbus_channel_info(dl[i].ch, &b) == 0 &&
	    a.create_ns == b.create_ns)
		return true;
	shmbus_pub_close(dl[i].pub);
	shmbus_channel_close(dl[i].ch);
	dl[i].ch = NULL;
	dl[i].pub = NULL;
	return false;
}

/* The dead-letter channel the config gives the group, or NULL. */
static const char *dead_letter_of(const struct scan *s)
{
	/* Under the reaper's rcu_read_lock() (sbd_reap_once()). */
	struct sbd_rules *r = rcu_dereference(s->c->rules);

	sbd_tsan_acquire(r);	/* pairs with sbd_rules_replace() */
	for (uint32_t i = 0; i < r->ndl; i++)
		if (!strcmp(r->dl[i].group, s->group))
			return r->dl[i].chan;
	return NULL;
}

/* The publisher for the group's poison messages: on the channel the config
 * names, whatever the group's file says (its members may write it), and
 * only if that channel is multi-producer (the daemon must not take a
 * single producer's place). */
static shmbus_pub *dead_letter_pub(const char *asked, void *ctx, bool *drop)
{
	static struct sbd_ratelimit rl;
	static unsigned long refused;
	const struct scan *s = ctx;
	const char *name = dead_letter_of(s);
	size_t i, free_i = ndl;
	struct shmbus_channel_info in;

	if (!name || strcmp(name, asked)) {
		refused++;
		sbd_log_limited(&rl, SBD_WARN, refused, "dead letters refused",
				"%s: group %s: its file names dead-letter "
				"channel %s, the config %s: poison messages %s",
				s->c->name, s->group, asked,
				name ? name : "none",
				name ? "go where the config says" :
				       "are dropped and counted");
		if (!name) {
			*drop = true;
			return NULL;
		}
	}
	for (i = 0; i < ndl; i++) {
		if (dl[i].ch && !strcmp(dl[i].name, name) && dl_current(i))
			return dl[i].pub;
		if (!dl[i].ch && free_i == ndl)
			free_i = i;
	}
	if (free_i == ndl) {
		struct dl_entry *more = realloc(dl, (ndl + 8) * sizeof(*dl));

		if (!more) {
			refused++;
			sbd_log_limited(&rl, SBD_WARN, refused,
					"dead letters refused", "dead-letter "
					"channel %s: %s: poison messages wait "
					"for it", name, strerror(ENOMEM));
			return NULL;
		}
		memset(more + ndl, 0, 8 * sizeof(*dl));
		dl = more;
		ndl += 8;
	}
	dl[free_i].ch = shmbus_channel_open(sbd.conf.shm_dir, name);
	if (!dl[free_i].ch) {
		/* Asked again at every scan while poison waits: said at
		 * the rate-limited pace. */
		refused++;
		sbd_log_limited(&rl, SBD_WARN, refused, "dead letters refused",
				"dead-letter channel %s: %s: poison messages "
				"wait for it", name, strerror(errno));
		return NULL;
	}
	if (shmbus_channel_info(dl[free_i].ch, &in) ||
	    in.producers != SHMBUS_MULTI_PRODUCER) {
		refused++;
		sbd_log_limited(&rl, SBD_WARN, refused, "dead letters refused",
				"dead-letter channel %s: not a multi-producer "
				"channel: not used; poison messages are "
				"dropped and counted", name);
		shmbus_channel_close(dl[free_i].ch);
		dl[free_i].ch = NULL;
		*drop = true;
		return NULL;
	}
	dl[free_i].pub = shmbus_pub_open(dl[free_i].ch, NULL);
	if (!dl[free_i].pub) {
		refused++;
		sbd_log_limited(&rl, SBD_WARN, refused, "dead letters refused",
				"dead-letter channel %s: publish: %s", name,
				strerror(errno));
		shmbus_channel_close(dl[free_i].ch);
		dl[free_i].ch = NULL;
		return NULL;
	}
	/* The reaper never waits on the channel's other producers, whose
	 * claims any process that maps it could fake for ever: a dead
	 * letter not sent now goes at a later scan. */
	sb_pub_bounded(dl[free_i].pub);
	snprintf(dl[free_i].name, sizeof(dl[free_i].name), "%s", name);
	return dl[free_i].pub;
}

/* A group's place in c->gseen (taken for it if new), or NULL if all are
 * taken. */
static struct sbd_group_seen *seen_of(struct sbd_chan *c, const char *group)
{
	uint64_t key = sbd_name_hash(group);
	struct sbd_group_seen *e = NULL;

	for (size_t i = 0; i < c->gseen_top && !e; i++)
		if (c->gseen[i].key == key &&
		    !strcmp(c->gseen[i].name, group))
			e = &c->gseen[i];
	for (size_t i = 0; i < c->gseen_top && !e; i++)
		if (!c->gseen[i].key || !c->gseen[i].f.size)
			e = &c->gseen[i];
	if (!e && c->gseen_top < SBD_GROUPS_SEEN)
		e = &c->gseen[c->gseen_top++];
	if (e && (e->key != key || strcmp(e->name, group)))
		sbd_group_seen_clear(e);
	if (e) {
		e->key = key;
		snprintf(e->name, sizeof(e->name), "%s", group);
		e->listed = true;
	}
	return e;
}

void sbd_group_seen_clear(struct sbd_group_seen *e)
{
	if (e->m)
		sb_group_unkeep(e->m);
	*e = (struct sbd_group_seen){ 0 };
}

/* How often a kept group's file size is looked at (a member may cut it). */
#define MEND_EVERY_NS	INT64_C(100000000)

/* A group's file cut short by a member: its size given back before the
 * maintenance maps it (and before the other members fault on it). */
static void mend_file(struct sbd_chan *c, struct sbd_group_seen *e,
		      const char *group)
{
	static struct sbd_ratelimit rl;
	static unsigned long mended;
	int64_t now = sb_now_ns();
	int rc;

	uint64_t ino = e->f.ino;

	if (e->m && e->gen == gl.gen && now - e->mended_ns < MEND_EVERY_NS)
		return;
	e->mended_ns = now;
	rc = sb_group_file_mend(sbd.conf.shm_dir, c->name, group, &e->f);
	/* Another file by that name now, or one cut short (a page of ours
	 * may be the zeros the SIGBUS guard mapped): mapped again. */
	if (e->m && (rc > 0 || e->f.ino != ino)) {
		sb_group_unkeep(e->m);
		e->m = NULL;
	}
	if (rc > 0) {
		mended++;
		sbd_log_limited(&rl, SBD_ERR, mended, "group files mended",
				"%s: group %s: its file was cut short by a "
				"member; its size is given back (what was cut "
				"reads as zeros: the group is damaged, delete "
				"it and make it again)", c->name, group);
	}
}

static int maintain_one(const char *group, void *arg)
{
	struct scan *s = arg;
	int rc;

	static struct sbd_ratelimit rl;
	static unsigned long failed;

	struct sbd_group_seen *e = seen_of(s->c, group);

	s->group = group;
	if (!e)		/* more groups than places: mapped each time */
		rc = sb_group_maintain_file(s->c->ch, sbd.conf.shm_dir, group,
					    dead_letter_pub, s);
	else {
		mend_file(s->c, e, group);
		/* Mapped once, and again only once the directory changed
		 * (the file may be another since). */
		if (e->m && e->gen != gl.gen) {
			sb_group_unkeep(e->m);
			e->m = NULL;
		}
		if (!e->m) {
			e->m = sb_group_keep(s->c->ch, sbd.conf.shm_dir, group,
					     &rc);
			e->gen = gl.gen;
		}
		rc = e->m ? sb_group_maintain_kept(e->m, dead_letter_pub, s)
			  : rc;
	}
	/* -EIDRM: a removal under way (by a process in direct mode).
	 * -EBADMSG from a file of another channel of the name, made since
	 * this scan took the entry (a delete and a create meanwhile; the
	 * data ids differ, and nothing was written): no damage to say.
	 * Under the scan's rcu_read_lock() (sbd_reap_once()). */
	if (rc == -EBADMSG && sbd_chan_find(s->c->name) != s->c)
		return 0;
	if (rc < 0 && rc != -ENOENT && rc != -EIDRM) {
		failed++;
		sbd_log_limited(&rl, SBD_WARN, failed, "group failures",
				"%s: group %s: %s", s->c->name, group,
				shmbus_strerror(rc));
	}
	return 0;
}

/* The reaper maintains the groups while the main thread may delete one:
 * one at a time, so that no scan writes a deleted group's floor into a
 * slot that someone took since. */
static pthread_mutex_t groups_mu = PTHREAD_MUTEX_INITIALIZER;

int sbd_group_delete(struct sbd_chan *c, const char *group)
{
	int rc;

	pthread_mutex_lock(&groups_mu);
	rc = shmbus_group_delete(c->ch, group);
	pthread_mutex_unlock(&groups_mu);
	return rc;
}

static int gentry_cmp(const void *a, const void *b)
{
	const struct gentry *x = a, *y = b;

	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return strcmp(x->chan, y->chan);
}

/* One group file the listing found. */
static int add_gentry(const char *chan, const char *group, void *arg)
{
	struct gentry *g;

	if (gl.next_n == gl.next_cap) {
		size_t cap = gl.next_cap ? gl.next_cap * 2 : 64;
		struct gentry *e = realloc(gl.next, cap * sizeof(*e));

		if (!e) {
			*(bool *)arg = true;	/* partial: not kept */
			return 1;
		}
		gl.next = e;
		gl.next_cap = cap;
	}
	g = &gl.next[gl.next_n++];
	memset(g, 0, sizeof(*g));	/* compared whole (below) */
	g->key = sbd_name_hash(chan);
	snprintf(g->chan, sizeof(g->chan), "%s", chan);
	snprintf(g->group, sizeof(g->group), "%s", group);
	return 0;
}

void sbd_groups_scan_begin(void)
{
	unsigned long f = sb_sigbus_faults(NULL);
	bool partial = false;
	bool settled;
	int64_t t;

	/* A fault (a file cut short): every kept mapping is mapped again,
	 * after its file's size is given back (mend_file()), so that no page
	 * of zeros the SIGBUS guard put in one stays there. */
	if (f != gl.faults) {
		gl.faults = f;
		gl.gen++;
	}
	if (sb_dir_time(sbd.conf.shm_dir, &t, &settled))
		return;
	if (gl.read && t == gl.dir_ns)
		return;
	/* A file made or removed: a dead-letter channel deleted is let go
	 * now, not at the next poison message for it, which may never
	 * come. */
	rcu_read_lock();
	for (size_t i = 0; i < ndl; i++)
		if (dl[i].ch)
			dl_current(i);
	rcu_read_unlock();
	gl.next_n = 0;
	if (sb_group_list_all(sbd.conf.shm_dir, add_gentry, &partial) < 0 ||
	    partial)
		return;		/* again at the next scan */
	if (gl.next_n)
		qsort(gl.next, gl.next_n, sizeof(*gl.next), gentry_cmp);
	if (gl.next_n != gl.n ||
	    (gl.n && memcmp(gl.next, gl.e, gl.n * sizeof(*gl.e)))) {
		struct gentry *e = gl.e;
		size_t cap = gl.cap;

		gl.e = gl.next;
		gl.cap = gl.next_cap;
		gl.n = gl.next_n;
		gl.next = e;
		gl.next_cap = cap;
		gl.gen++;	/* files kept mapped are mapped again */
	}
	gl.dir_ns = t;
	gl.read = settled;	/* else read again at the next scan */
}

/* Every group of channel c, at each scan (after sbd_groups_scan_begin()). */
void sbd_groups_maintain(struct sbd_chan *c)
{
	struct gentry k = { .key = sbd_name_hash(c->name) };
	struct scan s = { c, NULL };
	size_t lo = 0, hi = gl.n;
	unsigned n = 0;

	snprintf(k.chan, sizeof(k.chan), "%s", c->name);
	while (lo < hi) {	/* the first entry not below c's */
		size_t mid = lo + (hi - lo) / 2;

		if (gentry_cmp(&gl.e[mid], &k) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!c->ngroups && (lo == gl.n || gentry_cmp(&gl.e[lo], &k)))
		return;		/* none now, and none before */
	for (size_t i = 0; i < c->gseen_top; i++)
		c->gseen[i].listed = false;
	pthread_mutex_lock(&groups_mu);
	for (size_t i = lo; i < gl.n && !gentry_cmp(&gl.e[i], &k); i++) {
		maintain_one(gl.e[i].group, &s);
		n++;
	}
	pthread_mutex_unlock(&groups_mu);
	/* Groups deleted since: their places for others. */
	for (size_t i = 0; i < c->gseen_top; i++)
		if (!c->gseen[i].listed)
			sbd_group_seen_clear(&c->gseen[i]);
	while (c->gseen_top && !c->gseen[c->gseen_top - 1].key)
		c->gseen_top--;
	c->ngroups = n;
}

void sbd_groups_close(void)
{
	free(gl.e);
	free(gl.next);
	gl.e = gl.next = NULL;
	gl.n = gl.cap = gl.next_n = gl.next_cap = 0;
	gl.read = false;
	for (size_t i = 0; i < ndl; i++) {
		if (dl[i].pub)
			shmbus_pub_close(dl[i].pub);
		if (dl[i].ch)
			shmbus_channel_close(dl[i].ch);
	}
	free(dl);
	dl = NULL;
	ndl = 0;
}
