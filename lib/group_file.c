/* SPDX-License-Identifier: MIT */
/*
 * group_file.c - a consumer group's file: its name, making it (whole or
 * not at all, with the channel's slot it owns), mapping it once per
 * channel handle, validating it, finding a channel's groups, deleting
 * one.  Every value in it is untrusted (docs/groups.md §5).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "contract.h"
#include "group.h"

static size_t file_size_for(uint32_t window)
{
	size_t n = SHMBUS_GROUP_LEASES_OFF + (size_t)window * 64u;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (n + page - 1) / page * page;
}

int sb_group_path(char *buf, size_t len, const char *dir, const char *chan,
		  const char *group)
{
	int n;

	/* No directory: never the root's (a channel the daemon handed
	 * over has none). */
	if (!dir || !dir[0] || !sb_name_ok(chan, 200) || !sb_name_ok(group, 63))
		return -EINVAL;
	/* One file name, and its temporary one at creation (".PID.tmp",
	 * a pid of up to 7 digits): SHMBUS_GROUP_NAMES_MAX bytes of names. */
	if (strlen(chan) + strlen(group) > SHMBUS_GROUP_NAMES_MAX)
		return -ENAMETOOLONG;
	n = snprintf(buf, len, "%s/" SHMBUS_GROUP_FILE_FMT, dir, chan, group);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* One maker of a group's file at a time in this process
 * (sb_group_open_file()); a child after fork() makes it afresh
 * (reset_lock_child()). */
static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

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
	g->stall_seq = UINT64_MAX;	/* no stall timed: claim 0 is none */
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
 * Whether the temporary file `tmp` (this process's name for it) is a
 * leftover and is gone now: under create_lock no thread of ours is at
 * work on it, but a process that died making the group left it
 * (docs/groups.md), and its pid is ours now.  A creator holds an flock()
 * on it while it builds, so that one we cannot tell from ourselves (the
 * same pid in another pid namespace, or another copy of the library in
 * this process) keeps its file: a file not locked and older than a
 * second is a leftover.
 */
static bool leftover_gone(const char *tmp)
{
	int fd = open(tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	bool gone = false;

	if (fd < 0)
		return errno == ENOENT;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &st) == 0 &&
	    time(NULL) - st.st_mtime > 1)
		gone = unlink(tmp) == 0;
	close(fd);
	return gone;
}

/*
 * Makes the group's file at `path` through its temporary name `tmp`, and
 * returns its descriptor; -EEXIST if another process linked its own in
 * place first, or builds one under our temporary name.  Called with
 * create_lock held.
 */
static int make_file(struct shmbus_channel *ch, const char *path,
		     const char *tmp, const char *group,
		     const struct shmbus_group_attr *s)
{
	struct shmbus_group_hdr *g;
	uint64_t start, seq;
	uint32_t slot;
	size_t size = file_size_for(s->window);
	bool fresh;
	int fd, rc;

	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0660);
	if (fd < 0 && errno == EEXIST && leftover_gone(tmp))
		fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC |
			  O_NOFOLLOW, 0660);
	if (fd < 0)
		return -errno;
	/* Ours while we build it (leftover_gone()); given up once it is
	 * linked: removers of the group flock() the file too. */
	flock(fd, LOCK_EX);
	if (fchmod(fd, 0660) < 0 || posix_fallocate(fd, 0, (off_t)size)) {
		rc = -ENOSPC;
		goto drop;
	}
	g = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (g == MAP_FAILED) {
		rc = -errno;
		goto drop;
	}
	rc = sb_slot_take_group(ch, s->start, group, &slot, &start, &fresh,
				&seq);
	if (rc) {
		munmap(g, size);
		goto drop;
	}
	if (sb_group_create_hook)
		sb_group_create_hook();
	init_file(g, size, ch, group, s, slot, start, fresh);
	g->start_seq = seq;
	/* Release: the fields above before the magic that says they are
	 * there (readers check it first, with acquire). */
	/* R20: pairs with A20: the fields above before the magic. */
	store_release64(&g->magic, SHMBUS_GROUP_MAGIC);
	munmap(g, size);
	if (link(tmp, path) < 0) {
		rc = -errno;
		sb_slot_release_group(ch, slot);
		goto drop;
	}
	unlink(tmp);
	flock(fd, LOCK_UN);
	sb_slot_group_made(ch, slot);
	return fd;
drop:
	unlink(tmp);
	close(fd);
	return rc;
}

/*
 * Opens the group's file, creating it (and taking the channel's slot for
 * it) if it does not exist and `a` is given.  Returns a descriptor, or
 * -errno.  The file appears whole or not at all: it is written under a
 * temporary name and linked in place.  The temporary name is the
 * process's (".PID.tmp": all that SHMBUS_GROUP_NAMES_MAX leaves room
 * for), so this process's threads make files one at a time.
 */
int sb_group_open_file(struct shmbus_channel *ch, const char *dir,
		       const char *chan, const char *group,
		       const struct shmbus_group_attr *a)
{
	char path[PATH_MAX], tmp[PATH_MAX + 32];
	struct shmbus_group_attr s;
	int fd, rc;

	rc = sb_group_path(path, sizeof(path), dir, chan, group);
	if (rc)
		return rc;
	fd = sb_open_file(path, O_RDWR);
	if (fd != -ENOENT || !a)
		return fd;
	rc = sb_group_settings(a, &s);
	if (rc)
		return rc;
	if (s.mode != SHMBUS_GROUP_SHARED && ch_overwrite(ch))
		return -EINVAL;	/* ordered modes need a block channel */
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	pthread_mutex_lock(&create_lock);
	/* Another thread of ours may have made it while we waited. */
	fd = sb_open_file(path, O_RDWR);
	if (fd == -ENOENT)
		fd = make_file(ch, path, tmp, group, &s);
	pthread_mutex_unlock(&create_lock);
	if (fd == -EEXIST)	/* someone else made it first */
		return sb_group_open_file(ch, dir, chan, group, NULL);
	return fd;
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
	/* A count stops at SB_DELIVERIES_MAX: a limit past it (a file an
	 * older version made) is that, or no message would ever reach it. */
	m->max_deliveries = load_relaxed32((uint32_t *)&g->max_deliveries);
	if (m->max_deliveries > SB_DELIVERIES_MAX)
		m->max_deliveries = SB_DELIVERIES_MAX;
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

/*
 * fork(): a thread of the parent may have held a channel's gmap_lock, and
 * the child, which joins groups for itself on the channels it inherits,
 * would wait for it for ever.  The first use of a channel's lock in a
 * process other than the one that set it up makes it afresh and drops the
 * cache it guards (its list may be half changed; the mappings, inherited,
 * stay, unused), under reset_lock, which a child makes afresh itself.
 */
static pthread_mutex_t reset_lock = PTHREAD_MUTEX_INITIALIZER;

static void reset_lock_child(void)
{
	pthread_mutex_init(&reset_lock, NULL);
	pthread_mutex_init(&create_lock, NULL);
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, reset_lock_child);
}

void sb_gmap_init(struct shmbus_channel *ch)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, register_atfork);
	pthread_mutex_init(&ch->gmap_lock, NULL);
	ch->gmap_pid = (uint32_t)getpid();
}

static void gmap_lock(struct shmbus_channel *ch)
{
	uint32_t me = (uint32_t)getpid();

	/* A27: pairs with R27 below: the lock made afresh by another
	 * thread of this process. */
	if (load_acquire32(&ch->gmap_pid) != me) {
		pthread_mutex_lock(&reset_lock);
		if (load_relaxed32(&ch->gmap_pid) != me) {
			pthread_mutex_init(&ch->gmap_lock, NULL);
			ch->gmaps = NULL;
			/* R27: pairs with A27 above. */
			store_release32(&ch->gmap_pid, me);
		}
		pthread_mutex_unlock(&reset_lock);
	}
	pthread_mutex_lock(&ch->gmap_lock);
}

static void *gmap_get(struct shmbus_channel *ch, int fd,
		      const struct stat *st, bool rdonly, int *err)
{
	struct sb_gmap *g;
	void *base = NULL;

	gmap_lock(ch);
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

	gmap_lock(ch);
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
	m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	m->dev = (uint64_t)st.st_dev;
	m->ino = (uint64_t)st.st_ino;
	m->map_len = (size_t)st.st_size;
	m->members = (void *)((uint8_t *)base + SHMBUS_GROUP_MEMBERS_OFF);
	m->lanes = (void *)((uint8_t *)base + SHMBUS_GROUP_LANES_OFF);
	m->leases = (void *)((uint8_t *)base + SHMBUS_GROUP_LEASES_OFF);
	m->me = SHMBUS_NO_MEMBER;
	m->idle_head = UINT64_MAX;
	m->lanes_stop = UINT64_MAX;
	m->wait = SHMBUS_WAIT_SLEEP;
	m->spin_ns = SB_GROUP_SPIN_NS;
	m->token = atomic_fetch_add(&tokens, 1) + 1;
	m->lane_cap = m->window < SB_LANE_CAP_MAX ? m->window : SB_LANE_CAP_MAX;
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
	free(m->kept);
	if (m->fd >= 0)
		close(m->fd);	/* drops any flock of ours */
	gmap_put(m->ch, m->g);
	free(m);
}

/*
 * Removers take turns, by an exclusive flock(2) on the group's file held
 * until its unlink: the DELETED flag then has one owner at a time.  Two
 * removers at once could otherwise share it: one that saw a live member
 * clears it while the other, whose scan came before a new joiner's
 * record, unlinks the file under that joiner.  The kernel drops a dead
 * remover's lock; one held for over 20 ms is -EBUSY.  Under it, path must still name fd's file: a remover
 * that waited may find the group removed, or removed and made again.
 */
static int lock_for_removal(int fd, const char *path)
{
	struct stat a, b;

	/* Not blocking: a hostile holder must not hold shmbusd's main
	 * thread (and its reaper, which waits for deletes); an honest one
	 * holds it for microseconds. */
	for (int i = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; i++) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		if (i == 20)
			return -EBUSY;
		usleep(1000);
	}
	if (fstat(fd, &a) < 0)
		return -errno;
	if (stat(path, &b) < 0)
		return -errno;
	if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		return -ENOENT;
	return 0;
}

static int group_delete(shmbus_channel *ch, const char *group)
{
	char path[PATH_MAX];
	struct shmbus_group *m;
	int fd, rc;

	sb_bus_reason_forget();
	if (ch && ch->bus)
		return group ? sb_bus_group_delete(ch->bus, ch->name,
						   ch->data_id, group)
			     : -EINVAL;
	if (!ch || ch->rdonly)
		return -EINVAL;
	if (!ch->dir[0])	/* the daemon's channel, disconnected */
		return -ENOTCONN;
	rc = sb_group_path(path, sizeof(path), ch->dir, ch->name, group);
	if (rc)
		return rc;
	fd = sb_open_file(path, O_RDWR);
	if (fd < 0)
		return fd;
	rc = lock_for_removal(fd, path);
	m = rc ? NULL : sb_group_map(ch, fd, false, &rc);
	if (m) {
		rc = sb_group_remove(m, path);
		sb_group_unmap(m);
	}
	close(fd);	/* drops the lock, after the unlink */
	return rc;
}

/* With cancellation off (sb_cancel_off()): the removal holds the file's
 * lock, its DELETED flag set, across open() and read() of /proc. */
SHMBUS_EXPORT int shmbus_group_delete(shmbus_channel *ch, const char *group)
{
	int old = sb_cancel_off(), rc = group_delete(ch, group);

	sb_cancel_restore(old);
	return rc;
}

/*
 * Whether the group is deleted: its DELETED flag set, and its file
 * unlinked or a removal in flight (a remover holds the file's flock from
 * before it sets the flag until after the unlink).  A flag with the file
 * still linked and the lock free is a dead remover's: cleared here, under
 * the lock held shared, so that no remover sets it meanwhile.  `held`:
 * the caller holds it shared already.
 */
bool sb_group_deleted(struct shmbus_group *m, bool held)
{
	struct stat st;
	bool gone;

	/* F6: pairs with F6 in sb_group_remove(): a joiner's ACTIVE store
	 * comes before (shmbus_group_join()). */
	if (!(load_seqcst32(&m->g->flags) & SB_GROUP_F_DELETED))
		return false;
	if (m->fd < 0 || (!held && flock(m->fd, LOCK_SH | LOCK_NB) < 0))
		return true;	/* a removal in flight */
	gone = fstat(m->fd, &st) < 0 || st.st_nlink == 0;
	if (!gone)
		and_relaxed32(&m->g->flags, ~SB_GROUP_F_DELETED);
	if (!held)
		flock(m->fd, LOCK_UN);
	return gone;
}

void sb_member_unsleep(struct shmbus_group *m, uint32_t j)
{
	uint64_t bit = UINT64_C(1) << j;

	if (and_relaxed64(&m->g->sleepers, ~bit) & bit)
		/* F3's count (member_sleep()'s increment in group.c, undone
		 * for a member that died asleep). */
		sub_seqcst32(&m->ch->hdr->sleepers, 1);
	/* A member that sleeps after this announces again (a slice's
	 * sleep at most is not woken meanwhile). */
	if (and_relaxed64(&m->g->may_sleep, ~bit) == bit)
		sb_sleep_unannounce(m->ch, m->slot);
}

/* Deletes the group m maps at path, its removal lock held: refused while
 * a live member is joined.  0 or -errno. */
int sb_group_remove(struct shmbus_group *m, const char *path)
{
	uint32_t f = load_relaxed32(&m->g->flags);

	/* F6: the pair of shmbus_group_join() and sb_group_remove(): one sees
	 * the other.  A flag already set is a dead remover's (we hold the
	 * lock): ours now. */
	while (!cas_strong_seqcst32(&m->g->flags, &f, f | SB_GROUP_F_DELETED))
		;
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		/* F6: the pair of shmbus_group_join() and sb_group_remove():
		 * one sees the other. */
		uint64_t o = load_seqcst64(&m->members[j].owner);

		if (owner_state(o) != SHMBUS_SLOT_FREE &&
		    !sb_pid_gone(owner_pid(o))) {
			if (sb_group_hook)
				sb_group_hook(SB_HOOK_REMOVE_SEEN);
			/* A joiner that saw the flag has left (EIDRM). */
			and_relaxed32(&m->g->flags, ~SB_GROUP_F_DELETED);
			return -EBUSY;
		}
	}
	if (sb_group_hook)
		sb_group_hook(SB_HOOK_REMOVE_SEEN);
	if (unlink(path) < 0)
		return -errno;
	/* Members that died asleep, their records not freed yet. */
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++)
		sb_member_unsleep(m, j);
	sb_slot_release_group(m->ch, m->slot);
	return 0;
}

/* ".CHAN@GROUP.group", both names as the rules have them (neither holds
 * an '@'): the names into chan and group. */
static bool group_file_name(const char *f, char chan[256], char group[64])
{
	const char *at = strchr(f, '@');
	size_t len = strlen(f), cn, gn;

	if (f[0] != '.' || !at || len < 9 || strcmp(f + len - 6, ".group"))
		return false;
	cn = (size_t)(at - f - 1);
	gn = (size_t)(f + len - 6 - at - 1);
	if (cn == 0 || cn >= 256 || gn == 0 || gn >= 64)
		return false;
	memcpy(chan, f + 1, cn);
	chan[cn] = 0;
	memcpy(group, at + 1, gn);
	group[gn] = 0;
	return sb_name_ok(chan, 200) && sb_name_ok(group, 63);
}

int sb_group_list_all(const char *dir,
		      int (*fn)(const char *chan, const char *group, void *arg),
		      void *arg)
{
	char chan[256], group[64];
	struct dirent *e;
	DIR *d = opendir(dir);
	int count = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (!group_file_name(e->d_name, chan, group))
			continue;
		count++;
		if (fn && fn(chan, group, arg))
			break;
	}
	closedir(d);
	return count;
}

int sb_dir_time(const char *dir, int64_t *t, bool *settled)
{
	struct timespec now;
	struct stat st;

	if (stat(dir, &st) < 0)
		return -errno;
	*t = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	clock_gettime(CLOCK_REALTIME, &now);
	*settled = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec - *t >
		   INT64_C(1000000000);
	return 0;
}

struct one_chan {
	const char *name;
	int (*fn)(const char *group, void *arg);
	void *arg;
	int count;
};

static int of_one_chan(const char *chan, const char *group, void *arg)
{
	struct one_chan *o = arg;

	if (strcmp(chan, o->name))
		return 0;
	o->count++;
	return o->fn ? o->fn(group, o->arg) : 0;
}

int sb_group_list(const char *dir, const char *name,
		  int (*fn)(const char *group, void *arg), void *arg)
{
	struct one_chan o = { name, fn, arg, 0 };
	int rc = sb_group_list_all(dir, of_one_chan, &o);

	return rc < 0 ? rc : o.count;
}

int sb_group_file_mend(const char *dir, const char *chan, const char *group,
		       struct sb_file_seen *seen)
{
	char path[PATH_MAX];
	struct stat st;
	int fd, rc = 0;

	rc = sb_group_path(path, sizeof(path), dir, chan, group);
	if (rc)
		return rc;
	fd = sb_open_file(path, O_RDWR);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
	} else if (seen->ino != (uint64_t)st.st_ino || !seen->size) {
		/* Another file (made again), or never seen: its size now,
		 * if it is one a group can have. */
		seen->ino = (uint64_t)st.st_ino;
		seen->size = (uint64_t)st.st_size >= file_size_for(1) ?
				     (uint64_t)st.st_size : 0;
	} else if ((uint64_t)st.st_size < seen->size) {
		rc = ftruncate(fd, (off_t)seen->size) < 0 ? -errno : 1;
	}
	close(fd);
	return rc;
}

struct shmbus_group *sb_group_open_map(struct shmbus_channel *ch,
				       const char *dir, const char *group,
				       bool rdonly, int *err)
{
	char path[PATH_MAX];
	struct shmbus_group *m;
	int fd;

	*err = sb_group_path(path, sizeof(path), dir, ch->name, group);
	if (*err)
		return NULL;
	fd = sb_open_file(path, rdonly ? O_RDONLY : O_RDWR);
	if (fd < 0) {
		*err = fd;
		return NULL;
	}
	m = sb_group_map(ch, fd, rdonly, err);
	close(fd);
	return m;
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
	fd = sb_open_file(path, O_RDONLY);
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
