/* SPDX-License-Identifier: MIT */
/*
 * group.c - a consumer group's file (creating, mapping, validating) and
 * the API: join, leave, poll, read, ack, nack, extend, wait, stats.  The
 * modes' mechanics are group_shared.c's and group_lanes.c's; what dead
 * and stuck members leave is group_maint.c's.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "contract.h"
#include "group.h"

#define DEFAULT_WINDOW		256u
#define DEFAULT_LANES		16u
#define DEFAULT_DELIVERIES	5u
#define DEFAULT_LEASE_NS	INT64_C(30000000000)
#define LANE_CAP_MAX		1024u
#define GROUP_F_DELETED		0x1u	/* hdr.flags */

static size_t file_size_for(uint32_t window)
{
	size_t n = SHMBUS_GROUP_LEASES_OFF + (size_t)window * 64u;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (n + page - 1) / page * page;
}

SHMBUS_EXPORT void shmbus_group_attr_init(struct shmbus_group_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->mode = SHMBUS_GROUP_SHARED;
	a->window = DEFAULT_WINDOW;
	a->lanes = DEFAULT_LANES;
	a->max_deliveries = DEFAULT_DELIVERIES;
	a->lease_ns = DEFAULT_LEASE_NS;
	a->start = SHMBUS_START_NEWEST;
}

/* The settings a new group gets from `a` (NULL: the defaults), checked
 * and with the defaults filled in.  0 or -EINVAL. */
int sb_group_settings(const struct shmbus_group_attr *a,
		      struct shmbus_group_attr *out)
{
	shmbus_group_attr_init(out);
	if (!a)
		return 0;
	if ((unsigned)a->mode > SHMBUS_GROUP_SINGLE_ACTIVE ||
	    (unsigned)a->start > SHMBUS_START_OLDEST || a->lease_ns < 0 ||
	    a->lease_ns > SB_LEASE_MAX_NS ||
	    (a->window && (a->window > SHMBUS_GROUP_MAX_WINDOW ||
			   (a->window & (a->window - 1)))) ||
	    a->lanes > SHMBUS_GROUP_LANES ||
	    (a->dead_letter && !sb_name_ok(a->dead_letter, 200)))
		return -EINVAL;
	out->mode = a->mode;
	out->start = a->start;
	out->dead_letter = a->dead_letter;
	if (a->window)
		out->window = a->window;
	if (a->lanes)
		out->lanes = a->lanes;
	if (a->max_deliveries)
		out->max_deliveries = a->max_deliveries;
	if (a->lease_ns)
		out->lease_ns = a->lease_ns;
	if (out->mode == SHMBUS_GROUP_SINGLE_ACTIVE)
		out->lanes = 1;
	if (out->mode == SHMBUS_GROUP_SHARED)
		out->lanes = 0;
	return 0;
}

int sb_group_path(char *buf, size_t len, const char *dir, const char *chan,
		  const char *group)
{
	int n;

	if (!sb_name_ok(chan, 200) || !sb_name_ok(group, 63))
		return -EINVAL;
	n = snprintf(buf, len, "%s/" SHMBUS_GROUP_FILE_FMT, dir, chan, group);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Fills a new group's file (all but its magic). */
static void init_file(struct shmbus_group_hdr *g, size_t size,
		      const struct shmbus_channel *ch, const char *group,
		      const struct shmbus_group_attr *a, uint32_t slot,
		      uint64_t start, bool fresh)
{
	struct shmbus_lane *lanes = (void *)((uint8_t *)g +
					     SHMBUS_GROUP_LANES_OFF);
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	g->version = SHMBUS_GROUP_VERSION;
	g->hdr_size = sizeof(*g);
	g->file_size = size;
	g->data_id = ch->data_id;
	g->mode = (uint32_t)a->mode;
	g->window = a->window;
	g->lanes = a->lanes;
	g->max_deliveries = a->max_deliveries == UINT32_MAX ? 0
							    : a->max_deliveries;
	g->lease_ns = a->lease_ns;
	g->slot = slot;
	g->create_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	snprintf(g->name, sizeof(g->name), "%s", group);
	if (a->dead_letter)
		snprintf(g->dead_letter, sizeof(g->dead_letter), "%s",
			 a->dead_letter);
	g->claim_pos = g->floor_pos = start;
	g->fresh_pos = fresh ? start : UINT64_MAX;
	for (uint32_t i = 0; i < SHMBUS_GROUP_LANES; i++) {
		lanes[i].ctl = gctl(SHMBUS_LANE_FREE, SHMBUS_NO_MEMBER, 0, 0);
		lanes[i].acked = lanes[i].next = start;
	}
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		struct shmbus_member *r = (void *)((uint8_t *)g +
			SHMBUS_GROUP_MEMBERS_OFF + j * sizeof(*r));

		r->intent_seq = UINT64_MAX;
	}
	/* No claim is recorded yet: not even claim 0. */
	for (uint32_t i = 0; i < a->window; i++) {
		struct shmbus_lease_slot *l = (void *)((uint8_t *)g +
			SHMBUS_GROUP_LEASES_OFF + i * sizeof(*l));

		l->seq = UINT64_MAX;
	}
}

/*
 * Opens the group's file, creating it (and taking the channel's slot for
 * it) if it does not exist and `a` is given.  Returns a descriptor, or
 * -errno.  The file appears whole or not at all: it is written under a
 * temporary name and linked in place.
 */
int sb_group_open_file(struct shmbus_channel *ch, const char *dir,
		       const char *chan, const char *group,
		       const struct shmbus_group_attr *a)
{
	char path[PATH_MAX], tmp[PATH_MAX + 32];
	struct shmbus_group_attr s;
	struct shmbus_group_hdr *g;
	uint64_t start, seq;
	uint32_t slot;
	size_t size;
	bool fresh;
	int fd, rc;

	rc = sb_group_path(path, sizeof(path), dir, chan, group);
	if (rc)
		return rc;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0 || errno != ENOENT || !a)
		return fd >= 0 ? fd : -errno;
	rc = sb_group_settings(a, &s);
	if (rc)
		return rc;
	if (s.mode != SHMBUS_GROUP_SHARED && ch_overwrite(ch))
		return -EINVAL;	/* ordered modes need a block channel */
	size = file_size_for(s.window);
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0660);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0660) < 0 || posix_fallocate(fd, 0, (off_t)size)) {
		rc = -ENOSPC;
		goto drop;
	}
	g = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (g == MAP_FAILED) {
		rc = -errno;
		goto drop;
	}
	rc = sb_slot_take_group(ch, s.start, group, &slot, &start, &fresh,
				&seq);
	if (rc) {
		munmap(g, size);
		goto drop;
	}
	if (sb_group_create_hook)
		sb_group_create_hook();
	init_file(g, size, ch, group, &s, slot, start, fresh);
	g->start_seq = seq;
	/* Release: the fields above before the magic that says they are
	 * there (readers check it first, with acquire). */
	/* R20: pairs with A20: the fields above before the magic. */
	store_release64(&g->magic, SHMBUS_GROUP_MAGIC);
	munmap(g, size);
	if (link(tmp, path) < 0) {
		rc = -errno;
		sb_slot_release_group(ch, slot);
		unlink(tmp);
		close(fd);
		if (rc == -EEXIST)	/* someone else made it first */
			return sb_group_open_file(ch, dir, chan, group, NULL);
		return rc;
	}
	unlink(tmp);
	sb_slot_group_made(ch, slot);
	return fd;
drop:
	unlink(tmp);
	close(fd);
	return rc;
}

/*
 * Checks a group file's identity and copies it into m.  Each field is
 * loaded once: a member may rewrite the file while we look, and a value
 * checked must be the value used.
 */
static int validate(struct shmbus_group *m, const struct shmbus_group_hdr *g,
		    uint64_t size, const struct shmbus_channel *ch)
{
	uint32_t mode, window, lanes, slot;
	int64_t lease_ns;

	/* A20: pairs with R20 (the magic, stored last). */
	if (load_acquire64((uint64_t *)&g->magic) != SHMBUS_GROUP_MAGIC)
		return -EBADMSG;
	if (load_relaxed32((uint32_t *)&g->version) != SHMBUS_GROUP_VERSION)
		return -EPROTONOSUPPORT;
	mode = load_relaxed32((uint32_t *)&g->mode);
	window = load_relaxed32((uint32_t *)&g->window);
	lanes = load_relaxed32((uint32_t *)&g->lanes);
	slot = load_relaxed32((uint32_t *)&g->slot);
	lease_ns = (int64_t)load_relaxed64((uint64_t *)&g->lease_ns);
	if (load_relaxed32((uint32_t *)&g->hdr_size) != sizeof(*g) ||
	    load_relaxed64((uint64_t *)&g->file_size) != size ||
	    mode > SHMBUS_GMODE_SINGLE || !window ||
	    window > SHMBUS_GROUP_MAX_WINDOW || (window & (window - 1)) ||
	    size < file_size_for(window) || lanes > SHMBUS_GROUP_LANES ||
	    (mode != SHMBUS_GMODE_SHARED && !lanes) ||
	    (mode == SHMBUS_GMODE_SINGLE && lanes != 1) || lease_ns <= 0 ||
	    lease_ns > SB_LEASE_MAX_NS ||
	    slot >= SHMBUS_MAX_SLOTS)
		return -EBADMSG;
	if (ch && (load_relaxed64((uint64_t *)&g->data_id) != ch->data_id ||
		   owner_state(load_relaxed64(&ch->subs[slot].owner)) !=
			   SHMBUS_SLOT_GROUP))
		return -EBADMSG;
	m->mode = mode;
	m->window = window;
	m->wmask = window - 1;
	m->nlanes = mode == SHMBUS_GMODE_SHARED ? 0 : lanes;
	m->max_deliveries = load_relaxed32((uint32_t *)&g->max_deliveries);
	m->lease_ns = lease_ns;
	m->slot = slot;
	return 0;
}

/* Tokens of this process's handles, for the maintenance lock. */
static _Atomic uint32_t tokens;

/* One mapping of a group's file per channel handle (channel.h). */
struct sb_gmap {
	struct sb_gmap *next;
	dev_t dev;
	ino_t ino;
	bool rdonly;
	unsigned refs;
	void *base;
	size_t len;
};

static void *gmap_get(struct shmbus_channel *ch, int fd,
		      const struct stat *st, bool rdonly, int *err)
{
	struct sb_gmap *g;
	void *base = NULL;

	pthread_mutex_lock(&ch->gmap_lock);
	for (g = ch->gmaps; g; g = g->next)
		if (g->dev == st->st_dev && g->ino == st->st_ino &&
		    g->rdonly == rdonly && g->len == (size_t)st->st_size) {
			g->refs++;
			base = g->base;
			goto out;
		}
	g = calloc(1, sizeof(*g));
	base = g ? mmap(NULL, (size_t)st->st_size,
			rdonly ? PROT_READ : PROT_READ | PROT_WRITE,
			MAP_SHARED, fd, 0) : MAP_FAILED;
	if (base == MAP_FAILED) {
		*err = g ? -errno : -ENOMEM;
		free(g);
		base = NULL;
		goto out;
	}
	g->dev = st->st_dev;
	g->ino = st->st_ino;
	g->rdonly = rdonly;
	g->refs = 1;
	g->base = base;
	g->len = (size_t)st->st_size;
	g->next = ch->gmaps;
	ch->gmaps = g;
out:
	pthread_mutex_unlock(&ch->gmap_lock);
	return base;
}

static void gmap_put(struct shmbus_channel *ch, void *base)
{
	struct sb_gmap **p, *g;

	pthread_mutex_lock(&ch->gmap_lock);
	for (p = &ch->gmaps; (g = *p); p = &g->next)
		if (g->base == base) {
			if (--g->refs == 0) {
				*p = g->next;
				munmap(g->base, g->len);
				free(g);
			}
			break;
		}
	pthread_mutex_unlock(&ch->gmap_lock);
}

/* Maps a group's file for the channel ch.  NULL with *err set. */
struct shmbus_group *sb_group_map(struct shmbus_channel *ch, int fd,
				  bool rdonly, int *err)
{
	struct shmbus_group *m;
	struct stat st;
	void *base;
	int rc;

	if (fstat(fd, &st) < 0 || st.st_size < (off_t)SHMBUS_GROUP_LEASES_OFF ||
	    st.st_size > (off_t)file_size_for(SHMBUS_GROUP_MAX_WINDOW)) {
		*err = -EBADMSG;
		return NULL;
	}
	base = gmap_get(ch, fd, &st, rdonly, err);
	if (!base)
		return NULL;
	m = calloc(1, sizeof(*m));
	rc = m ? validate(m, base, (uint64_t)st.st_size, ch) : -ENOMEM;
	if (rc) {
		gmap_put(ch, base);
		free(m);
		*err = rc;
		return NULL;
	}
	m->ch = ch;
	m->g = base;
	m->map_len = (size_t)st.st_size;
	m->members = (void *)((uint8_t *)base + SHMBUS_GROUP_MEMBERS_OFF);
	m->lanes = (void *)((uint8_t *)base + SHMBUS_GROUP_LANES_OFF);
	m->leases = (void *)((uint8_t *)base + SHMBUS_GROUP_LEASES_OFF);
	m->me = SHMBUS_NO_MEMBER;
	m->idle_head = UINT64_MAX;
	m->token = atomic_fetch_add(&tokens, 1) + 1;
	m->lane_cap = m->window < LANE_CAP_MAX ? m->window : LANE_CAP_MAX;
	return m;
}

void sb_group_unmap(struct shmbus_group *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < SHMBUS_GROUP_LANES; i++)
		free(m->lane[i].starts);
	if (m->dl_pub)
		shmbus_pub_close(m->dl_pub);
	if (m->dl_ch)
		shmbus_channel_close(m->dl_ch);
	free(m->buf);
	gmap_put(m->ch, m->g);
	free(m);
}

static int take_member(struct shmbus_group *m, const char *name)
{
	uint32_t self = (uint32_t)getpid();

	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		struct shmbus_member *r = &m->members[j];
		uint64_t o = load_relaxed64(&r->owner);

		if (owner_state(o) != SHMBUS_SLOT_FREE)
			continue;
		/* Ours alone: the maintenance frees a record (release)
		 * only once nothing names it. */
		/* A22: pairs with R22 (the record freed). */
		if (!cas_strong_seqcst64(&r->owner, &o,
					 owner_word(SHMBUS_SLOT_BUSY, self)))
			continue;
		store_relaxed64(&r->gen, load_relaxed64(&r->gen) + 1);
		store_relaxed64(&r->intent_seq, UINT64_MAX);
		store_relaxed64(&r->delivered, 0);
		store_relaxed64(&r->acked, 0);
		store_relaxed64(&r->stale, 0);
		store_relaxed64(&r->order, add_relaxed64(&m->g->member_seq, 1));
		store_relaxed64((uint64_t *)&r->joined_ns,
				(uint64_t)time(NULL) * 1000000000u);
		store_relaxed64((uint64_t *)&r->looked_ns,
				(uint64_t)sb_now_ns());
		memset(r->name, 0, sizeof(r->name));
		snprintf(r->name, sizeof(r->name), "%s", name);
		memset(r->comm, 0, sizeof(r->comm));
		prctl(PR_GET_NAME, r->comm);
		/* Release (and the Dekker pair with shmbus_group_delete():
		 * either we see its DELETED flag or it sees us). */
		/* R22: pairs with A22; and F6 with sb_group_remove(). */
		store_seqcst64(&r->owner, owner_word(SHMBUS_SLOT_ACTIVE, self));
		m->me = j;
		m->rec = r;
		m->self = self;
		return 0;
	}
	return -ENOSPC;
}

SHMBUS_EXPORT shmbus_group *shmbus_group_join(shmbus_channel *ch,
					      const char *group,
					      const char *member,
					      const struct shmbus_group_attr *a)
{
	struct shmbus_group_attr s;
	struct shmbus_group *m;
	int fd, rc;

	if (!ch || !sb_name_ok(group, 63) || !sb_name_ok(member, 31) ||
	    sb_group_settings(a, &s)) {
		errno = EINVAL;
		return NULL;
	}
	if (ch->rdonly || ch->no_sub) {
		errno = EPERM;
		return NULL;
	}
	if (ch->bus)
		fd = sb_bus_group(ch->bus, ch->name, group, &s);
	else
		fd = sb_group_open_file(ch, ch->dir, ch->name, group, &s);
	if (fd < 0) {
		errno = -fd;
		return NULL;
	}
	m = sb_group_map(ch, fd, false, &rc);
	close(fd);
	if (!m) {
		errno = -rc;
		return NULL;
	}
	m->direct = !ch->bus;
	snprintf(m->dir, sizeof(m->dir), "%s", ch->dir);
	if (m->mode != (uint32_t)s.mode) {
		rc = -EEXIST;
		goto fail;
	}
	if (m->nlanes)
		for (uint32_t i = 0; i < m->nlanes; i++) {
			m->lane[i].starts = calloc(m->lane_cap,
						   sizeof(uint64_t));
			if (!m->lane[i].starts) {
				rc = -ENOMEM;
				goto fail;
			}
		}
	if (ch_overwrite(ch) && !(m->buf = malloc(ch->max_msg ? ch->max_msg
							       : 1))) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = take_member(m, member);
	if (rc == -ENOSPC) {	/* dead members' records, perhaps */
		sb_group_maintain_as(m, NULL, (uint32_t)getpid());
		rc = take_member(m, member);
	}
	if (rc)
		goto fail;
	/* F6: the pair of shmbus_group_join() and sb_group_remove(): one sees
	 * the other. */
	if (load_seqcst32(&m->g->flags) & GROUP_F_DELETED) {
		shmbus_group_leave(m);
		errno = EIDRM;
		return NULL;
	}
	/* Lanes for us at once, rather than at the next scan. */
	if (m->nlanes)
		sb_group_maintain_as(m, NULL, (uint32_t)getpid());
	return m;
fail:
	sb_group_unmap(m);
	errno = -rc;
	return NULL;
}

SHMBUS_EXPORT void shmbus_group_leave(shmbus_group *m)
{
	if (!m)
		return;
	if (m->rec) {
		if (m->mode == SHMBUS_GMODE_SHARED) {
			uint64_t fp, fs, cp, cs;

			sb_pair_read(&m->g->floor_pos, &fp, &fs);
			sb_pair_read(&m->g->claim_pos, &cp, &cs);
			for (uint64_t x = fs; x < cs && cs - fs <= m->window;
			     x++) {
				struct shmbus_lease_slot *l =
					&m->leases[x & m->wmask];
				/* A17: pairs with R17 (the lease's last
				 * change). */
				uint64_t c = load_acquire64(&l->ctl);

				if (gctl_state(c) == SHMBUS_LEASE_LEASED &&
				    gctl_member(c) == m->me)
					sb_shared_settle(m, x, c,
							 SB_SETTLE_GIVE, 0);
			}
		} else {
			sb_lanes_leave(m);
		}
		store_relaxed64(&m->rec->intent_seq, UINT64_MAX);
		/* R22: pairs with A22: our last stores before the record's
		 * reuse. */
		store_release64(&m->rec->owner,
				owner_word(SHMBUS_SLOT_FREE, 0));
		if (m->nlanes)	/* our lanes to the others now */
			sb_group_maintain_as(m, NULL, (uint32_t)getpid());
	}
	sb_group_unmap(m);
}

SHMBUS_EXPORT int shmbus_group_delete(shmbus_channel *ch, const char *group)
{
	char path[PATH_MAX];
	struct shmbus_group *m;
	int fd, rc;

	if (!ch || ch->bus || ch->rdonly)
		return ch && ch->bus ? -EOPNOTSUPP : -EINVAL;
	rc = sb_group_path(path, sizeof(path), ch->dir, ch->name, group);
	if (rc)
		return rc;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	m = sb_group_map(ch, fd, false, &rc);
	close(fd);
	if (!m)
		return rc;
	rc = sb_group_remove(m, path);
	sb_group_unmap(m);
	return rc;
}

/* Deletes the group m maps at path: refused while a live member is
 * joined.  0 or -errno. */
int sb_group_remove(struct shmbus_group *m, const char *path)
{
	uint32_t f = load_relaxed32(&m->g->flags);

	/* F6: the pair of shmbus_group_join() and sb_group_remove(): one sees
	 * the other. */
	while (!cas_strong_seqcst32(&m->g->flags, &f, f | GROUP_F_DELETED))
		;
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		/* F6: the pair of shmbus_group_join() and sb_group_remove():
		 * one sees the other. */
		uint64_t o = load_seqcst64(&m->members[j].owner);

		if (owner_state(o) != SHMBUS_SLOT_FREE &&
		    !sb_pid_gone(owner_pid(o))) {
			and_relaxed32(&m->g->flags, ~GROUP_F_DELETED);
			return -EBUSY;
		}
	}
	if (unlink(path) < 0)
		return -errno;
	sb_slot_release_group(m->ch, m->slot);
	return 0;
}

static int maybe_maintain(struct shmbus_group *m)
{
	int64_t now = sb_now_ns();

	if (now < m->maint_next ||
	    now < (int64_t)load_relaxed64((uint64_t *)&m->g->maint_at))
		return 0;
	m->maint_next = now + 1000000;	/* own look: 1 ms at most */
	return sb_group_maintain_as(m, sb_group_dead_letter_pub(m),
				    (uint32_t)getpid());
}

/* Direct mode: a publisher on the dead-letter channel, opened when
 * first needed.  NULL without one (through shmbusd, the daemon does it). */
shmbus_pub *sb_group_dead_letter_pub(struct shmbus_group *m)
{
	if (!m->direct || !m->g->dead_letter[0])
		return NULL;
	if (!m->dl_ch) {
		char name[64];

		memcpy(name, m->g->dead_letter, sizeof(name));
		name[sizeof(name) - 1] = 0;
		m->dl_ch = shmbus_channel_open(m->dir, name);
		if (!m->dl_ch)
			return NULL;
	}
	if (!m->dl_pub)
		m->dl_pub = shmbus_pub_open(m->dl_ch, NULL);
	return m->dl_pub;
}

static int gone_check(struct shmbus_group *m)
{
	if (!m || !m->rec)
		return -EINVAL;
	if (load_relaxed32(&m->g->flags) & GROUP_F_DELETED)
		return -EIDRM;
	/* Our record taken from us (the maintenance thought us dead: a
	 * pid reused?) */
	if (load_relaxed64(&m->rec->owner) !=
	    owner_word(SHMBUS_SLOT_ACTIVE, m->self))
		return -EIDRM;
	return 0;
}

/* The message of a shared lease's range at p, for the caller. */
static int shared_msg(struct shmbus_group *m, uint64_t p, uint64_t end,
		      struct sb_gmsg *out, uint64_t *next)
{
	struct shmbus_channel *ch = m->ch;

	while (p < end) {
		uint32_t type, len;
		uint64_t seq = 0, size, head;
		int rc = sb_rec_look(ch, p, UINT64_MAX, &type, &len, &seq,
				     &size);
		const uint8_t *data;

		if (rc == 2)
			return 2;
		if (rc != 1)
			return rc < 0 ? rc : -EBADMSG;
		if (size > end - p)
			return -EBADMSG;
		data = (const uint8_t *)rec_at(ch, p) + SHMBUS_REC_HDR;
		if (type == SHMBUS_REC_MSG && ch_overwrite(ch)) {
			memcpy(m->buf, data, len);
			/* A2's check: the copy is of this lap. */
			fence_acquire();
			head = load_relaxed64(&ch->hdr->head);
			if (!not_overwritten(ch, p, head))
				return 2;
			data = m->buf;
		}
		if (type == SHMBUS_REC_MSG) {
			out->data = data;
			out->len = len;
			out->seq = seq;
			out->pos = p;
			out->end = p + size;
			out->key = sb_msg_key(data, len);
			*next = p + size;
			return 1;
		}
		p += size;
	}
	return 0;
}

/* Overwrite policy: the lease's bytes were overwritten before we could
 * deliver them: the messages are lost, counted, and the lease done. */
static void shared_lost(struct shmbus_group *m, uint64_t seq, uint64_t ctl)
{
	struct shmbus_lease_slot *l = &m->leases[seq & m->wmask];
	uint64_t start = load_relaxed64(&l->start), end = load_relaxed64(
							 &l->end);
	uint64_t msgs = load_relaxed64(&l->msgs), dl;

	dl = load_relaxed64((uint64_t *)&l->deadline);
	/* A15: pairs with R15 (a lease's seq, stored last): its fields. */
	/* R17: pairs with A17 (readers of the lease's word): the holder's reads
	 * come first. */
	if (load_acquire64(&l->seq) != seq ||
	    !cas_pair(&l->ctl, ctl, dl, gctl(SHMBUS_LEASE_DEAD,
					     SHMBUS_NO_MEMBER,
					     gctl_deliveries(ctl),
					     gctl_gen(ctl) + 1), dl))
		return;
	add_relaxed64(&m->g->lost, msgs);
	add_relaxed64(&m->g->lost_bytes, end - start);
	store_relaxed64(&m->g->loss_from, start);
	store_relaxed64(&m->g->loss_to, end);
	sb_floor_advance(m->g, m->leases, m->wmask, m->ch, m->slot);
}

static void to_user(const struct sb_gmsg *in, struct shmbus_group_msg *out,
		    uint64_t w0, uint64_t w1, uint64_t w2)
{
	out->data = in->data;
	out->len = in->len;
	out->deliveries = in->deliveries;
	out->seq = in->seq;
	out->pos = in->pos;
	out->key = in->key;
	out->lease.w[0] = w0;
	out->lease.w[1] = w1;
	out->lease.w[2] = w2;
}

/* A poll found nothing: what wait compares with. */
static void note_idle(struct shmbus_group *m)
{
	m->idle_head = load_relaxed64(&m->ch->hdr->head);	/* compared */
	m->idle_ns = sb_now_ns();
}

/*
 * Shared mode: the lease being delivered (m->cur) first, then a new one.
 * A lease's messages are delivered in order across polls (a handler that
 * stops, or max, may leave some for the next call), and its ack counts
 * only once the last of them has been delivered (shmbus_group_ack()).
 */
static int shared_poll(struct shmbus_group *m, shmbus_group_handler fn,
		       void *arg, unsigned max)
{
	struct sb_cur *c = &m->cur;
	struct shmbus_group_msg um;
	struct sb_gmsg gm;
	unsigned n = 0;
	int rc;

	for (int leases = 0; leases < 64 && n < max; leases++) {
		uint64_t start, p;

		if (!c->on) {
			if (n)
				break;	/* one lease a call */
			rc = sb_shared_take(m, max, &c->seq, &c->ctl, &start,
					    &c->end, &c->d);
			if (rc <= 0) {
				if (rc == 0)
					note_idle(m);
				maybe_maintain(m);
				return rc;
			}
			c->on = true;
			c->next = start;
			c->given = 0;
		}
		while (n < max) {
			rc = shared_msg(m, c->next, c->end, &gm, &p);
			if (rc == 2) {
				shared_lost(m, c->seq, c->ctl);
				c->on = false;
				break;
			}
			if (rc < 0) {
				c->on = false;
				return n ? (int)n : rc;
			}
			if (rc == 0) {
				/* No message left: a lease given back that held
				 * none (padding only) is done at once. */
				c->on = false;
				if (!c->given)
					sb_shared_settle(m, c->seq, c->ctl,
							 SB_SETTLE_ACK, 0);
				break;
			}
			c->next = p;
			c->given++;
			gm.deliveries = c->d;
			to_user(&gm, &um, c->seq, c->ctl, 0);
			if (p >= c->end)
				c->on = false;	/* the lease's last */
			n++;
			add_relaxed64(&m->g->delivered, 1);
			add_relaxed64(&m->rec->delivered, 1);
			if (fn(&um, arg))
				return (int)n;
		}
		if (n)
			break;
	}
	return (int)n;
}

SHMBUS_EXPORT int shmbus_group_poll(shmbus_group *m, shmbus_group_handler fn,
				    void *arg, unsigned max)
{
	struct shmbus_group_msg um;
	struct sb_gmsg gm;
	int rc, n = 0;

	rc = gone_check(m);
	if (rc)
		return rc;
	if (!fn)
		return -EINVAL;
	if (!max)
		max = 64;
	if (m->mode == SHMBUS_GMODE_SHARED)
		return shared_poll(m, fn, arg, max);
	while ((unsigned)n < max) {
		uint32_t lane;

		rc = sb_lanes_take(m, &gm, &lane);
		if (rc < 0)
			return n ? n : rc;
		if (rc == 0) {
			if (!n) {
				note_idle(m);
				maybe_maintain(m);
			}
			break;
		}
		to_user(&gm, &um, lane, gctl_gen(m->lane[lane].ctl), gm.pos);
		n++;
		add_relaxed64(&m->g->delivered, 1);
		add_relaxed64(&m->g->redelivered, gm.deliveries > 1);
		add_relaxed64(&m->rec->delivered, 1);
		if (fn(&um, arg))
			break;
	}
	return n;
}

struct read_ctx {
	void *buf;
	size_t cap;
	struct shmbus_group_msg *msg;
	ssize_t rc;
};

static int read_one(const struct shmbus_group_msg *msg, void *arg)
{
	struct read_ctx *r = arg;

	*r->msg = *msg;
	if (msg->len > r->cap) {
		r->rc = -EMSGSIZE;
		return 1;
	}
	memcpy(r->buf, msg->data, msg->len);
	r->msg->data = r->buf;
	r->rc = msg->len;
	return 1;
}

SHMBUS_EXPORT ssize_t shmbus_group_read(shmbus_group *m, void *buf,
					size_t cap,
					struct shmbus_group_msg *msg)
{
	struct read_ctx r = { buf, cap, msg, -EAGAIN };
	int rc;

	if (!msg || (!buf && cap))
		return -EINVAL;
	rc = shmbus_group_poll(m, read_one, &r, 1);
	if (rc < 0)
		return rc;
	if (r.rc == -EMSGSIZE) {
		/* Not delivered: it stays the next one. */
		if (m->mode == SHMBUS_GMODE_SHARED) {
			m->cur.on = true;
			m->cur.next = msg->pos;
			m->cur.given--;
		} else
			sb_lanes_settle(m, (uint32_t)msg->lease.w[0],
					(uint32_t)msg->lease.w[1],
					msg->lease.w[2], 0, SB_SETTLE_GIVE, 0);
	}
	return r.rc;
}

static int settle(shmbus_group *m, const struct shmbus_lease *l, int what,
		  int64_t delay_ns)
{
	int rc = gone_check(m);

	if (rc)
		return rc == -EIDRM ? -ESTALE : rc;
	if (!l || delay_ns < 0)
		return -EINVAL;
	if (m->mode == SHMBUS_GMODE_SHARED) {
		struct sb_cur *c = &m->cur;

		if (c->on && l->w[0] == c->seq && l->w[1] == c->ctl) {
			/* Its last messages are still to be delivered: an
			 * ack waits for them (the ack after the last one
			 * counts); a nack gives the whole lease back. */
			if (what == SB_SETTLE_ACK)
				return 0;
			c->on = false;
		}
		return sb_shared_settle(m, l->w[0], l->w[1], (uint32_t)what,
					delay_ns);
	}
	if (l->w[0] >= m->nlanes || l->w[1] > UINT32_MAX)
		return -EINVAL;
	return sb_lanes_settle(m, (uint32_t)l->w[0], (uint32_t)l->w[1],
			       l->w[2], 0, what, delay_ns);
}

SHMBUS_EXPORT int shmbus_group_ack(shmbus_group *m,
				   const struct shmbus_lease *l)
{
	return settle(m, l, SB_SETTLE_ACK, 0);
}

SHMBUS_EXPORT int shmbus_group_nack(shmbus_group *m,
				    const struct shmbus_lease *l,
				    int64_t delay_ns)
{
	return settle(m, l, SB_SETTLE_NACK, delay_ns);
}

SHMBUS_EXPORT int shmbus_group_extend(shmbus_group *m,
				      const struct shmbus_lease *l,
				      int64_t ns)
{
	int rc = gone_check(m);

	if (rc)
		return rc == -EIDRM ? -ESTALE : rc;
	if (!l || ns < 0)
		return -EINVAL;
	if (!ns)
		ns = m->lease_ns;
	if (m->mode == SHMBUS_GMODE_SHARED)
		return sb_shared_extend(m, l->w[0], l->w[1], ns);
	if (l->w[0] >= m->nlanes || l->w[1] > UINT32_MAX)
		return -EINVAL;
	return sb_lanes_extend(m, (uint32_t)l->w[0], (uint32_t)l->w[1], ns);
}

/* Whether a poll may find something now: the channel moved since the
 * last empty poll, or leases were given back (looked at every 10 ms:
 * one may wait for its nack's delay, or the window be full). */
static bool maybe_ready(struct shmbus_group *m, int64_t now)
{
	if (load_relaxed64(&m->ch->hdr->head) != m->idle_head)
		return true;
	return sb_elapsed(now, m->idle_ns) >= 10000000 &&
	       (load_relaxed64(&m->g->avail) || m->mode != SHMBUS_GMODE_SHARED);
}

SHMBUS_EXPORT int shmbus_group_wait(shmbus_group *m, int64_t timeout_ns)
{
	int64_t now = sb_now_ns();
	int64_t end = timeout_ns < 0 ? INT64_MAX : sb_after(now, timeout_ns);
	int rc = gone_check(m);

	if (rc)
		return rc;
	for (unsigned spins = 0;; spins++, now = sb_now_ns()) {
		struct timespec ts = { 0, 1000000 };

		if (maybe_ready(m, now))
			return 0;
		if (spins % 64 == 0)
			maybe_maintain(m);
		if (now >= end)
			return -ETIMEDOUT;
		if (spins < 200) {
			cpu_relax();
			continue;
		}
		/* The channel's futex wakes subscribers that announced
		 * themselves; a member is not one, so it naps. */
		if (spins > 2000)
			nanosleep(&ts, NULL);
		else
			sched_yield();
	}
}

/* Fills *st from a group's file (m: a member's or an inspection's map). */
void sb_group_fill_stats(struct shmbus_group *m, struct shmbus_group_stats *st)
{
	struct shmbus_group_hdr *g = m->g;
	int64_t now = sb_now_ns(), oldest = INT64_MAX;
	uint32_t who = SHMBUS_NO_MEMBER;

	memset(st, 0, sizeof(*st));
	st->mode = (enum shmbus_group_mode)m->mode;
	st->window = m->window;
	st->lanes = m->nlanes;
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		uint64_t o = load_relaxed64(&m->members[j].owner);

		st->members += owner_state(o) == SHMBUS_SLOT_ACTIVE &&
			       !sb_pid_gone(owner_pid(o));
	}
	st->floor = load_relaxed64(&g->floor_pos);
	st->claim = load_relaxed64(&g->claim_pos);
	st->head = load_relaxed64(&m->ch->hdr->head);
	if (m->mode == SHMBUS_GMODE_SHARED) {
		uint64_t fs = load_relaxed64(&g->floor_seq);
		uint64_t cs = load_relaxed64(&g->claim_seq);

		for (uint64_t x = fs; x < cs && cs - fs <= m->window; x++) {
			struct shmbus_lease_slot *l = &m->leases[x & m->wmask];
			uint64_t c = load_relaxed64(&l->ctl);	/* a statistic */
			int64_t since;

			if (gctl_state(c) != SHMBUS_LEASE_LEASED)
				continue;
			st->in_flight++;
			since = (int64_t)load_relaxed64(
					(uint64_t *)&l->deadline);
			since = sb_after(since, -m->lease_ns);
			if (since < oldest) {
				oldest = since;
				who = gctl_member(c);
			}
		}
	} else {
		st->claim = 0;
		for (uint32_t i = 0; i < m->nlanes; i++) {
			struct shmbus_lane *ln = &m->lanes[i];
			uint64_t c = load_relaxed64(&ln->ctl);	/* a statistic */
			int64_t since;

			if (load_relaxed64(&ln->next) <=
			    load_relaxed64(&ln->acked))
				continue;
			st->in_flight++;
			since = (int64_t)load_relaxed64(
					(uint64_t *)&ln->deadline) -
				m->lease_ns;
			if (since < oldest) {
				oldest = since;
				who = gctl_member(c);
			}
		}
	}
	if (who < SHMBUS_GROUP_MEMBERS) {
		st->oldest_ns = now > oldest ? sb_elapsed(now, oldest) : 0;
		st->oldest_pid = owner_pid(load_relaxed64(
				&m->members[who].owner));
		memcpy(st->oldest_member, m->members[who].name,
		       sizeof(st->oldest_member));
		st->oldest_member[sizeof(st->oldest_member) - 1] = 0;
	}
	st->delivered = load_relaxed64(&g->delivered);
	st->redelivered = load_relaxed64(&g->redelivered);
	st->acked = load_relaxed64(&g->acked);
	st->nacked = load_relaxed64(&g->nacked);
	st->expired = load_relaxed64(&g->expired);
	st->released = load_relaxed64(&g->released);
	st->dead_lettered = load_relaxed64(&g->dead_lettered);
	st->dropped = load_relaxed64(&g->dropped);
	st->window_full = load_relaxed64(&g->full);
	st->lost = load_relaxed64(&g->lost);
	st->lost_bytes = load_relaxed64(&g->lost_bytes);
	st->loss_from = load_relaxed64(&g->loss_from);
	st->loss_to = load_relaxed64(&g->loss_to);
	st->lane_moves = load_relaxed64(&g->lane_moves);
}

SHMBUS_EXPORT int shmbus_group_stats(shmbus_group *m,
				     struct shmbus_group_stats *st)
{
	if (!m || !st)
		return -EINVAL;
	sb_group_fill_stats(m, st);
	return 0;
}

SHMBUS_EXPORT int shmbus_group_maintain(shmbus_group *m)
{
	int rc = gone_check(m);

	if (rc)
		return rc;
	return sb_group_maintain_as(m, sb_group_dead_letter_pub(m),
				    (uint32_t)getpid());
}

SHMBUS_EXPORT int shmbus_publish_keyed(shmbus_pub *pub, uint64_t key,
				       const void *data, size_t len)
{
	struct iovec iov[2] = {
		{ .iov_base = &key, .iov_len = sizeof(key) },
		{ .iov_base = (void *)data, .iov_len = len },
	};

	if (!data && len)
		return -EINVAL;
	return shmbus_publishv(pub, iov, 2);
}

int sb_group_list(const char *dir, const char *name,
		  int (*fn)(const char *group, void *arg), void *arg)
{
	size_t n = strlen(name);
	struct dirent *e;
	DIR *d = opendir(dir);
	int count = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		char group[64];

		if (len <= n + 8 || e->d_name[0] != '.' ||
		    strncmp(e->d_name + 1, name, n) || e->d_name[n + 1] != '@' ||
		    strcmp(e->d_name + len - 6, ".group") ||
		    len - n - 8 >= sizeof(group))
			continue;
		memcpy(group, e->d_name + n + 2, len - n - 8);
		group[len - n - 8] = 0;
		if (!sb_name_ok(group, 63))
			continue;
		count++;
		if (fn && fn(group, arg))
			break;
	}
	closedir(d);
	return count;
}

static struct shmbus_group *open_map(struct shmbus_channel *ch,
				     const char *dir, const char *group,
				     bool rdonly, int *err)
{
	char path[PATH_MAX];
	struct shmbus_group *m;
	int fd;

	*err = sb_group_path(path, sizeof(path), dir, ch->name, group);
	if (*err)
		return NULL;
	fd = open(path, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	m = sb_group_map(ch, fd, rdonly, err);
	close(fd);
	return m;
}

int sb_group_inspect(shmbus_channel *ch, const char *dir, const char *group,
		     struct shmbus_group_stats *st, struct sb_member_info *mi,
		     unsigned *n)
{
	struct shmbus_group *m;
	unsigned k = 0;
	int rc;

	if (!ch || !st || !n)
		return -EINVAL;
	m = open_map(ch, dir, group, true, &rc);
	if (!m)
		return rc;
	sb_group_fill_stats(m, st);
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		struct shmbus_member *r = &m->members[j];
		uint64_t o = load_relaxed64(&r->owner);

		if (owner_state(o) == SHMBUS_SLOT_FREE)
			continue;
		if (k < *n && mi) {
			struct sb_member_info *x = &mi[k];

			x->index = j;
			x->pid = owner_pid(o);
			x->alive = !sb_pid_gone(owner_pid(o));
			memcpy(x->name, r->name, sizeof(x->name));
			x->name[sizeof(x->name) - 1] = 0;
			memcpy(x->comm, r->comm, sizeof(x->comm));
			x->comm[sizeof(x->comm) - 1] = 0;
			x->delivered = load_relaxed64(&r->delivered);
			x->acked = load_relaxed64(&r->acked);
			x->stale = load_relaxed64(&r->stale);
		}
		k++;
	}
	*n = k;
	sb_group_unmap(m);
	return 0;
}

int sb_group_maintain_file(shmbus_channel *ch, const char *dir,
			   const char *group,
			   shmbus_pub *(*dl_for)(const char *name, void *ctx),
			   void *ctx)
{
	struct shmbus_group *m;
	shmbus_pub *dl = NULL;
	char name[64];
	int rc;

	if (!ch || ch->rdonly)
		return -EINVAL;
	m = open_map(ch, dir, group, false, &rc);
	if (!m)
		return rc;
	memcpy(name, m->g->dead_letter, sizeof(name));
	name[sizeof(name) - 1] = 0;
	if (name[0] && dl_for && sb_name_ok(name, 63))
		dl = dl_for(name, ctx);
	rc = sb_group_maintain_as(m, dl, (uint32_t)getpid());
	sb_group_unmap(m);
	return rc;
}

int sb_group_state_get(shmbus_channel *ch, const char *dir, const char *group,
		       struct sb_group_state *st)
{
	struct shmbus_group *m;
	uint64_t fp, fs;
	int rc;

	m = open_map(ch, dir, group, true, &rc);
	if (!m)
		return rc;
	memset(st, 0, sizeof(*st));
	snprintf(st->name, sizeof(st->name), "%s", group);
	memcpy(st->dead_letter, m->g->dead_letter, sizeof(st->dead_letter));
	st->dead_letter[sizeof(st->dead_letter) - 1] = 0;
	st->mode = m->mode;
	st->window = m->window;
	st->lanes = m->nlanes;
	st->max_deliveries = m->max_deliveries ? m->max_deliveries
					       : UINT32_MAX;
	st->lease_ns = m->lease_ns;
	sb_pair_read(&m->g->floor_pos, &fp, &fs);
	st->floor = fp;
	sb_group_unmap(m);
	return 0;
}

/* Shared: the floor and the claim word both to f, when nothing is
 * claimed past the floor here (a standby's group has no members). */
static int shared_raise(struct shmbus_group *m, uint64_t f)
{
	uint64_t fp, fs, cp, cs;

	sb_pair_read(&m->g->floor_pos, &fp, &fs);
	sb_pair_read(&m->g->claim_pos, &cp, &cs);
	if (f <= fp)
		return 0;
	if (cs != fs || cp != fp)
		return -EBUSY;
	/* The claim word first (no claim starts below f from now on), then
	 * the floor: one claim number, recorded as passed. */
	if (!cas_pair(&m->g->claim_pos, cp, cs, f, cs + 1))	/* R16 */
		return -EBUSY;
	if (!sb_lease_record(&m->leases[cs & m->wmask], cs,
			     gctl(SHMBUS_LEASE_DEAD, SHMBUS_NO_MEMBER, 0, 0),
			     0, fp, f, 0, 0, SHMBUS_NO_MEMBER))
		return -EBUSY;
	sb_floor_advance(m->g, m->leases, m->wmask, m->ch, m->slot);
	return 0;
}

/* Lanes: each FREE lane's acked raised to f, then the floor. */
static int lanes_raise(struct shmbus_group *m, uint64_t f)
{
	int rc = 0;

	for (uint32_t i = 0; i < m->nlanes; i++) {
		struct shmbus_lane *ln = &m->lanes[i];
		/* A18: pairs with R18 (the lane's last change). */
		uint64_t c = load_acquire64(&ln->ctl);
		uint64_t a = load_relaxed64(&ln->acked);

		if (a >= f)
			continue;
		if (gctl_state(c) != SHMBUS_LANE_FREE) {
			rc = -EBUSY;
			continue;
		}
		/* R18: pairs with A18: the next owner starts at f. */
		if (!cas_pair(&ln->ctl, c, a, c, f))
			rc = -EBUSY;
		else
			store_relaxed64(&ln->next, f);
	}
	sb_lanes_floor(m);
	return rc;
}

int sb_group_state_apply(shmbus_channel *ch, const char *dir,
			 const char *chan, const struct sb_group_state *st,
			 uint64_t upto)
{
	struct shmbus_group_attr a;
	struct shmbus_group *m;
	char name[64], dl[64];
	uint64_t f;
	int fd, rc;

	memcpy(name, st->name, sizeof(name));
	name[sizeof(name) - 1] = 0;
	memcpy(dl, st->dead_letter, sizeof(dl));
	dl[sizeof(dl) - 1] = 0;
	if (!sb_name_ok(name, 63) || (dl[0] && !sb_name_ok(dl, 63)))
		return -EINVAL;
	memset(&a, 0, sizeof(a));
	a.mode = (enum shmbus_group_mode)st->mode;
	a.window = st->window;
	a.lanes = st->lanes;
	a.max_deliveries = st->max_deliveries;
	a.lease_ns = st->lease_ns;
	a.start = SHMBUS_START_OLDEST;
	a.dead_letter = dl[0] ? dl : NULL;
	if ((unsigned)a.mode > SHMBUS_GROUP_SINGLE_ACTIVE)
		return -EINVAL;
	fd = sb_group_open_file(ch, dir, chan, name, &a);
	if (fd < 0)
		return fd;
	m = sb_group_map(ch, fd, false, &rc);
	close(fd);
	if (!m)
		return rc;
	f = st->floor < upto ? st->floor : upto;
	rc = m->mode == SHMBUS_GMODE_SHARED ? shared_raise(m, f)
					    : lanes_raise(m, f);
	sb_group_unmap(m);
	return rc;
}

struct claims {
	struct shmbus_channel *ch;
	uint32_t slot;
	bool found;
};

static int claims_one(const char *group, void *arg)
{
	struct claims *c = arg;
	char path[PATH_MAX];
	struct shmbus_group_hdr h;
	int fd;

	if (sb_group_path(path, sizeof(path), c->ch->dir, c->ch->name, group))
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	if (pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
	    h.magic == SHMBUS_GROUP_MAGIC && h.data_id == c->ch->data_id &&
	    h.slot == c->slot)
		c->found = true;
	close(fd);
	return c->found;
}

bool sb_group_claims_slot(struct shmbus_channel *ch, uint32_t index)
{
	struct claims c = { ch, index, false };

	if (!ch->dir[0])
		return true;	/* cannot tell: leave it */
	if (sb_group_list(ch->dir, ch->name, claims_one, &c) < 0)
		return true;
	return c.found;
}
