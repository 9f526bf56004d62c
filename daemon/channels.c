/* SPDX-License-Identifier: MIT */
/*
 * channels.c - the channels the daemon owns: set up from the config at
 * start (adopted if their files validate, set aside and created anew if
 * not), adopted from the directory (those created at run time), created
 * and registered at run time, and reloaded on SIGHUP.  The control
 * socket's requests that change them are control.c's.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "../lib/contract.h"
#include "shmbus/group.h"

/* dir/name, or -ENAMETOOLONG. */
static int chan_path(char *buf, size_t len, const char *prefix,
		     const char *name, const char *suffix)
{
	int n = snprintf(buf, len, "%s/%s%s%s", sbd.conf.shm_dir, prefix, name,
			 suffix);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static bool same_geometry(shmbus_channel *ch,
			  const struct shmbus_channel_attr *a)
{
	struct shmbus_channel_info in;

	shmbus_channel_info(ch, &in);
	return in.capacity == a->capacity && in.max_msg == a->max_msg &&
	       in.policy == a->policy && in.producers == a->producers;
}

/* A channel file that fails validation is renamed, never deleted: an
 * operator may want to look at it.  0, or -1 if it stays. */
static int set_aside(const char *name, int err)
{
	char from[PATH_MAX], to[PATH_MAX], when[32];

	snprintf(when, sizeof(when), ".%ld", (long)time(NULL));
	if (chan_path(from, sizeof(from), "", name, "") ||
	    chan_path(to, sizeof(to), ".corrupt.", name, when) ||
	    rename(from, to) < 0) {
		sbd_log(SBD_ERR, errno, "%s: invalid (%s), and cannot be set "
			"aside as %s", name, shmbus_strerror(-err), to);
		return -1;
	}
	sbd_log(SBD_ERR, 0, "%s: invalid channel file (%s): set aside as %s",
		name, shmbus_strerror(-err), to);
	return 0;
}

/* A channel's rules from its config section, or the defaults. */
static struct sbd_rules *rules_new(const struct sbd_chan_conf *cc)
{
	struct sbd_rules *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->pub = cc ? cc->pub : sbd.conf.def_pub;
	r->sub = cc ? cc->sub : sbd.conf.def_sub;
	for (uint32_t i = 0; cc && i < cc->ngroups; i++) {
		const struct sbd_group_conf *g = &cc->groups[i];

		if (!g->dead_letter[0])
			continue;
		snprintf(r->dl[r->ndl].group, sizeof(r->dl[0].group), "%s",
			 g->name);
		snprintf(r->dl[r->ndl].chan, sizeof(r->dl[0].chan), "%s",
			 g->dead_letter);
		r->ndl++;
	}
	return r;
}

/* Registers a mapped channel; takes ownership of ch (closed on failure). */
int sbd_channel_enroll(const char *name, shmbus_channel *ch,
		       const struct sbd_chan_conf *cc, bool configured)
{
	struct shmbus_channel_info in;
	struct sbd_chan *c = calloc(1, sizeof(*c));
	struct sbd_rules *r = rules_new(cc);
	struct stat st;
	int rc = -ENOMEM;

	if (!c || !r)
		goto fail;
	c->fd = c->data_rw = c->data_ro = -1;
	rc = sb_channel_open_fds(sbd.conf.shm_dir, name, &c->fd, &c->data_rw,
				 &c->data_ro);
	if (rc)
		goto fail;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->ch = ch;
	shmbus_channel_info(ch, &in);
	c->attr.capacity = in.capacity;
	c->attr.max_msg = in.max_msg;
	c->attr.policy = in.policy;
	c->attr.producers = in.producers;
	c->attr.numa_node = in.numa_node;
	c->mode = fstat(c->fd, &st) == 0 ? st.st_mode & 0777 : 0;
	c->configured = configured;
	c->rules = r;
	if (sbd_chan_add(c) == 0)
		return 0;
	rc = -EEXIST;
fail:
	if (c) {
		if (c->fd >= 0)
			close(c->fd);
		if (c->data_rw >= 0)
			close(c->data_rw);
		if (c->data_ro >= 0)
			close(c->data_ro);
	}
	free(c);
	free(r);
	shmbus_channel_close(ch);
	return rc;
}

/*
 * Whether channel `name`'s files may be adopted: its data file, which the
 * daemon never gives away, must be the daemon's user's or root's (the
 * control file is chowned to the configured owner, who may have changed
 * since).  shm_dir may be a sticky directory where every user can make
 * files (/dev/shm): a channel that another user made there before the
 * daemon started would otherwise be served, with that user able to read
 * and write every message through it.  Files that cannot be opened are
 * for the caller's open to report.
 */
bool sbd_file_is_ours(const struct stat *st)
{
	return st->st_uid == geteuid() || st->st_uid == 0;
}

static bool files_are_ours(const char *name)
{
	struct stat b = { 0 };
	int ctl, drw, dro;
	bool ok;

	if (sb_channel_open_fds(sbd.conf.shm_dir, name, &ctl, &drw, &dro))
		return true;
	ok = fstat(drw, &b) == 0 && sbd_file_is_ours(&b);
	if (!ok)
		sbd_log(SBD_ERR, 0, "%s: its data file belongs to uid %u, not "
			"to this daemon: not adopted (made by another user in "
			"%s?)", name, (unsigned)b.st_uid, sbd.conf.shm_dir);
	close(ctl);
	close(drw);
	close(dro);
	return ok;
}

/* The control file given the owner and group the config names (-1: as
 * is), at creation and at adoption (the config may have changed); the
 * data file its group only: it stays the daemon's user's, for the owner
 * of a file may change its mode (and so let anyone write messages), but
 * the group's members get what the channel's mode grants the group (the
 * messages to read, for busstat: docs/shmbusd.md). */
static void chown_files(const char *name, int64_t owner, int64_t group)
{
	char path[PATH_MAX];
	int ctl, drw, dro;

	if ((owner >= 0 || group >= 0) &&
	    chan_path(path, sizeof(path), "", name, "") == 0 &&
	    chown(path, (uid_t)owner, (gid_t)group) < 0)
		sbd_log(SBD_WARN, errno, "%s: chown", name);
	if (group < 0 ||
	    sb_channel_open_fds(sbd.conf.shm_dir, name, &ctl, &drw, &dro))
		return;
	if (fchown(drw, (uid_t)-1, (gid_t)group) < 0)
		sbd_log(SBD_WARN, errno, "%s: chown of its data file", name);
	close(ctl);
	close(drw);
	close(dro);
}

struct leftover {
	const char *chan;
	uint64_t id;		/* the new channel's data id */
};

/* One group file of a channel just made: removed if it names another
 * channel (see drop_leftover_groups()). */
static int drop_leftover(const char *group, void *arg)
{
	const struct leftover *l = arg;
	struct shmbus_group_hdr g = { 0 };
	char path[PATH_MAX];
	struct stat st;
	int fd, n;

	n = snprintf(path, sizeof(path), "%s/" SHMBUS_GROUP_FILE_FMT,
		     sbd.conf.shm_dir, l->chan, group);
	if (n < 0 || (size_t)n >= sizeof(path))
		return 0;
	fd = sb_open_file(path, O_RDONLY);
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) == 0 && sbd_file_is_ours(&st) &&
	    (pread(fd, &g, sizeof(g), 0) != (ssize_t)sizeof(g) ||
	     g.data_id != l->id) && unlink(path) == 0)
		sbd_log(SBD_NOTICE, 0, "%s: group %s: a file of a channel of "
			"that name deleted before (a delete cut short): "
			"removed", l->chan, group);
	close(fd);
	return 0;
}

/*
 * A channel's groups' files are removed after its own (lib/channel.c):
 * a delete cut short in between (a kill -9 of the daemon, or of a process
 * in direct mode) leaves them for the next channel of that name, whose
 * groups they would stand for (a join or a delete-group of them -EBADMSG,
 * and no group of that name could be made).  None can be the new
 * channel's but those with its data id: the others go.
 */
static void drop_leftover_groups(const char *name, shmbus_channel *ch)
{
	struct leftover l = { .chan = name, .id = sb_channel_data_id(ch) };

	sb_group_list(sbd.conf.shm_dir, name, drop_leftover, &l);
}

/* Creates channel file `name` (exclusively), chowned as asked (-1: as
 * is), and maps it into *out.  0 or -errno. */
int sbd_channel_create_file(const char *name,
			    const struct shmbus_channel_attr *a,
			    int64_t owner, int64_t group, shmbus_channel **out)
{
	shmbus_channel *ch;

	ch = shmbus_channel_create(sbd.conf.shm_dir, name, a,
				   SHMBUS_CREATE_EXCL);
	if (!ch)
		return -errno;
	drop_leftover_groups(name, ch);
	chown_files(name, owner, group);
	*out = ch;
	return 0;
}

int sbd_channel_setup(const struct sbd_chan_conf *cc, bool configured)
{
	shmbus_channel *ch;
	struct sbd_chan *c;
	uint64_t pos;
	int rc;

	rcu_read_lock();
	c = sbd_chan_find(cc->name);
	if (c) {
		struct sbd_rules *r = rules_new(cc);

		/* The geometry stays; the rules, the groups and their dead
		 * letters follow the config whatever it says of it. */
		if (!same_geometry(c->ch, &cc->attr))
			sbd_log(SBD_WARN, 0, "%s: refused an incompatible "
				"change (capacity, max_msg, policy or "
				"producers): the channel keeps its geometry "
				"(delete it to apply the new one); its rules "
				"are the config's", cc->name);
		if (!r) {
			rc = -ENOMEM;
		} else {
			sbd_rules_replace(c, r);
			c->configured = configured;
			sbd_groups_setup(cc, c->ch);
			rc = 0;
		}
		/* The file's owner and group as the config says now, as at
		 * an adoption; its mode is the one it was made with. */
		chown_files(cc->name, cc->owner, cc->group);
		if (c->mode != (cc->attr.mode & 0777))
			sbd_log(SBD_NOTICE, 0, "%s: mode %03o in the config, "
				"%03o on the file: a mode applies when the "
				"channel is made (delete it to apply it)",
				cc->name, (unsigned)(cc->attr.mode & 0777),
				(unsigned)c->mode);
		rcu_read_unlock();
		return rc;
	}
	rcu_read_unlock();
	/* Another user's files: set aside, and the channel made afresh. */
	if (!files_are_ours(cc->name) && set_aside(cc->name, -EPERM))
		return -EPERM;
	ch = shmbus_channel_open(sbd.conf.shm_dir, cc->name);
	if (ch) {
		if (!same_geometry(ch, &cc->attr))
			sbd_log(SBD_WARN, 0, "%s: the existing channel's "
				"geometry differs from the config: kept as it "
				"is (delete it to apply the config)", cc->name);
		else
			sbd_log(SBD_INFO, 0, "%s: adopted", cc->name);
		chown_files(cc->name, cc->owner, cc->group);
		/* Before anything reads it (the journal, groups, the
		 * replication agents): a cut back that a crash stopped half
		 * way is finished (docs/failover.md, "Rejoin"). */
		if (sb_ring_cut_finish(ch, &pos))
			sbd_log(SBD_WARN, 0, "%s: a cut back to %" PRIu64
				" stopped half way; finished", cc->name, pos);
	} else {
		rc = -errno;
		if (rc == -EPROTO || rc == -EPROTONOSUPPORT ||
		    rc == -EBADMSG)
			set_aside(cc->name, rc);
		else if (rc != -ENOENT) {
			sbd_log(SBD_ERR, rc, "%s: open", cc->name);
			return rc;
		}
		/* At a reload, channels made at run time may fill the bus
		 * (the config alone is checked against the limit). */
		if (sbd_chan_count() >= sbd.conf.max_channels) {
			sbd_log(SBD_ERR, 0, "%s: not created: the bus has "
				"max_channels (%u) channels", cc->name,
				sbd.conf.max_channels);
			return -ENOSPC;
		}
		rc = sbd_channel_create_file(cc->name, &cc->attr, cc->owner, cc->group,
				 &ch);
		if (rc) {
			sbd_log(SBD_ERR, rc, "%s: create", cc->name);
			return rc;
		}
		sbd_log(SBD_INFO, 0, "%s: created (%llu bytes, %s, %s)",
			cc->name, (unsigned long long)cc->attr.capacity,
			cc->attr.policy == SHMBUS_BLOCK ? "block" : "overwrite",
			cc->attr.producers == SHMBUS_SINGLE_PRODUCER ?
				"single producer" : "multi producer");
	}
	sbd_groups_setup(cc, ch);
	return sbd_channel_enroll(cc->name, ch, cc, configured);
}

/* Whether a channel named `name` was set aside in shm_dir (".corrupt.
 * NAME.TIME"): its data file is kept with it. */
static bool set_aside_exists(DIR *d, const char *name)
{
	size_t n = strlen(name);
	struct dirent *e;

	rewinddir(d);
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, ".corrupt.", 9) &&
		    !strncmp(e->d_name + 9, name, n) && e->d_name[9 + n] == '.')
			return true;
	return false;
}

/* Appends `name` to the list *v of *n names (room for *cap): the files a
 * sweep removes once its walk of the directory is done.  False if out of
 * memory. */
static bool names_add(char (**v)[NAME_MAX + 1], size_t *n, size_t *cap,
		      const char *name)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 8;
		void *m = realloc(*v, c * sizeof(**v));

		if (!m)
			return false;
		*v = m;
		*cap = c;
	}
	snprintf((*v)[(*n)++], sizeof(**v), "%s", name);
	return true;
}

/*
 * At start, after every channel is adopted: data files no control file
 * names (".NAME.ID.data"), left by a create or a delete that a kill -9
 * cut short (the data file is made first and removed last), are
 * removed; they hold shared memory for nothing.  One whose channel is
 * registered with another id, or that no control file names at all, is
 * such a file; one of a channel set aside as corrupt stays with it, and
 * so does one that is not the daemon's user's (or root's).
 */
static void sweep_orphans(void)
{
	DIR *d = opendir(sbd.conf.shm_dir);
	char (*gone)[NAME_MAX + 1] = NULL;
	size_t ngone = 0, cap = 0;
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char name[NAME_MAX + 1], path[PATH_MAX];
		unsigned long long id;
		size_t len = strlen(e->d_name);
		const char *dot;
		struct sbd_chan *c;
		struct stat st;
		bool orphan;

		if (e->d_name[0] != '.' || len < 23 ||
		    strcmp(e->d_name + len - 5, ".data"))
			continue;
		dot = e->d_name + len - 22;	/* ".%016llx.data" */
		if (*dot != '.' || sscanf(dot + 1, "%16llx", &id) != 1 ||
		    (size_t)(dot - e->d_name - 1) >= sizeof(name) ||
		    dot == e->d_name + 1)
			continue;
		memcpy(name, e->d_name + 1, (size_t)(dot - e->d_name - 1));
		name[dot - e->d_name - 1] = 0;
		if (snprintf(path, sizeof(path), "%s/%s", sbd.conf.shm_dir,
			     e->d_name) >= (int)sizeof(path) ||
		    lstat(path, &st) || !S_ISREG(st.st_mode) ||
		    !sbd_file_is_ours(&st))
			continue;
		rcu_read_lock();
		c = sbd_chan_find(name);
		orphan = c ? sb_ring_id(c->ch) != id : false;
		rcu_read_unlock();
		if (!c) {
			char ctl[PATH_MAX];

			orphan = chan_path(ctl, sizeof(ctl), "", name, "") == 0 &&
				 access(ctl, F_OK) < 0 && errno == ENOENT;
		}
		if (!orphan)
			continue;
		if (!names_add(&gone, &ngone, &cap, e->d_name))
			break;
	}
	/* Removed after the walk, and not those of a set-aside channel. */
	for (size_t i = 0; i < ngone; i++) {
		char name[NAME_MAX + 1], path[PATH_MAX];
		size_t len = strlen(gone[i]);

		snprintf(name, sizeof(name), "%.*s", (int)(len - 23),
			 gone[i] + 1);
		if (set_aside_exists(d, name) ||
		    snprintf(path, sizeof(path), "%s/%s", sbd.conf.shm_dir,
			     gone[i]) >= (int)sizeof(path))
			continue;
		if (unlink(path) == 0)
			sbd_log(SBD_NOTICE, 0, "%s: a data file no channel "
				"names (a create or delete cut short): removed",
				gone[i]);
	}
	free(gone);
	closedir(d);
}

/* The value of the `n` decimal digits at s (a pid or a counter), or -1. */
static long decimal(const char *s, size_t n)
{
	long v = 0;

	if (n == 0 || n > 9)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/*
 * The pid that a file of a create cut short names, or 0 if `n` is no
 * such name: a channel's control file under its temporary name
 * (".NAME.PID.N.tmp", lib/channel.c) or a group's file under its own
 * (".CHANNEL@GROUP.group.PID.tmp", lib/group_file.c).
 */
static pid_t temp_pid(const char *n)
{
	size_t len = strlen(n);
	const char *last, *prev;
	long pid;

	if (n[0] != '.' || len < 8 || strcmp(n + len - 4, ".tmp"))
		return 0;
	len -= 4;
	last = memrchr(n, '.', len);
	if (!last || last == n || decimal(last + 1, len - (size_t)(last -
							      n) - 1) < 0)
		return 0;
	if (last - n > 7 && !strncmp(last - 6, ".group", 6) &&
	    memchr(n, '@', (size_t)(last - n)))
		pid = decimal(last + 1, len - (size_t)(last - n) - 1);
	else {
		prev = memrchr(n, '.', (size_t)(last - n));
		if (!prev || prev == n)
			return 0;
		pid = decimal(prev + 1, (size_t)(last - prev) - 1);
	}
	return pid > 0 ? (pid_t)pid : 0;
}

/*
 * At start: the temporary files of creates that a kill -9 cut short (a
 * channel's control file, a group's file, built under a name of their
 * maker's pid and linked in place whole) are removed; they hold shared
 * memory for nothing and nothing else removes them (a maker removes a
 * leftover only when it makes the same name with the same pid).  One is
 * removed when it is the daemon's user's (or root's), its maker is gone
 * (or had this daemon's pid: the one before it, in a pid namespace of
 * its own) and nobody holds its lock (a group's maker holds it while it
 * builds).
 */
static void sweep_temps(void)
{
	DIR *d = opendir(sbd.conf.shm_dir);
	char (*gone)[NAME_MAX + 1] = NULL;
	size_t ngone = 0, cap = 0;
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		pid_t pid = temp_pid(e->d_name);
		char path[PATH_MAX];
		struct stat st;
		int fd;

		if (!pid || (pid != sbd.self_pid &&
			     (kill(pid, 0) == 0 || errno != ESRCH)))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", sbd.conf.shm_dir,
			     e->d_name) >= (int)sizeof(path))
			continue;
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
			  O_NONBLOCK);
		if (fd < 0)
			continue;
		if (fstat(fd, &st) || !S_ISREG(st.st_mode) ||
		    !sbd_file_is_ours(&st) || flock(fd, LOCK_EX | LOCK_NB)) {
			close(fd);
			continue;
		}
		close(fd);
		if (!names_add(&gone, &ngone, &cap, e->d_name))
			break;
	}
	closedir(d);
	for (size_t i = 0; i < ngone; i++) {
		char path[PATH_MAX];

		if (snprintf(path, sizeof(path), "%s/%s", sbd.conf.shm_dir,
			     gone[i]) < (int)sizeof(path) && unlink(path) == 0)
			sbd_log(SBD_NOTICE, 0, "%s: the temporary file of a "
				"create cut short (its maker is gone): removed",
				gone[i]);
	}
	free(gone);
}

void sbd_channel_adopt_dir(void)
{
	DIR *d = opendir(sbd.conf.shm_dir);
	struct dirent *e;

	if (!d) {
		sbd_log(SBD_ERR, errno, "%s", sbd.conf.shm_dir);
		return;
	}
	while ((e = readdir(d))) {
		shmbus_channel *ch;
		struct sbd_chan *c;
		int rc;

		if (e->d_name[0] == '.' || e->d_type != DT_REG ||
		    strlen(e->d_name) >= SHMBUS_CTL_NAME)
			continue;
		rcu_read_lock();
		c = sbd_chan_find(e->d_name);
		rcu_read_unlock();
		if (c || !files_are_ours(e->d_name))
			continue;
		ch = shmbus_channel_open(sbd.conf.shm_dir, e->d_name);
		if (!ch) {
			rc = -errno;
			/* Set aside only what is recognisably ours. */
			if (rc == -EPROTONOSUPPORT || rc == -EBADMSG)
				set_aside(e->d_name, rc);
			else
				sbd_log(SBD_DEBUG, rc, "%s: not a channel",
					e->d_name);
			continue;
		}
		/* Not in the config: neither journaled nor replicated. */
		sbd_journal_forget(ch);
		sbd_repl_forget(ch, e->d_name);
		if (sbd_channel_enroll(e->d_name, ch, NULL, false) == 0)
			sbd_log(SBD_INFO, 0, "%s: adopted (created at run "
				"time, default rules)", e->d_name);
	}
	closedir(d);
	sweep_orphans();
	sweep_temps();
	/* Channels that exist are served, whatever the limit says now (it
	 * bounds what is made): a lower one than they were made under is
	 * said, as the descriptors set aside at start follow it. */
	if (sbd_chan_count() > sbd.conf.max_channels)
		sbd_log(SBD_WARN, 0, "%lu channels served, more than "
			"max_channels (%u): none is made until some are "
			"deleted", sbd_chan_count(),
			sbd.conf.max_channels);
}

/* Whether two channels' journal settings differ (not where they were
 * written). */
static bool jnl_differs(const struct sbd_jnl_conf *a,
			const struct sbd_jnl_conf *b)
{
	return a->on != b->on || a->ack != b->ack || a->fsync != b->fsync ||
	       a->fsync_ms != b->fsync_ms ||
	       a->fsync_bytes != b->fsync_bytes || a->segment != b->segment ||
	       a->retain_ms != b->retain_ms ||
	       a->retain_bytes != b->retain_bytes;
}

int sbd_reload(void)
{
	struct sbd_conf nc;
	struct cds_lfht_iter it;
	struct sbd_chan *c;
	bool partial = false;

	if (sbd_conf_load(sbd.conf.path, &nc)) {
		sbd_log(SBD_ERR, 0, "reload refused: %s", nc.err);
		return -EINVAL;
	}
	/* Against what the file said at start; a setting -d or -S
	 * overrides stays overridden at a restart, whatever the file says. */
	if (strcmp(nc.bus, sbd.conf.bus))
		sbd_log(SBD_WARN, 0, "reload: name changed ('%s' to '%s'); it "
			"takes effect only at restart", sbd.conf.bus, nc.bus);
	if (strcmp(nc.file_socket, sbd.conf.file_socket) &&
	    !strcmp(sbd.conf.socket, sbd.conf.file_socket))
		sbd_log(SBD_WARN, 0, "reload: socket changed (%s to %s); it "
			"takes effect only at restart", sbd.conf.file_socket,
			nc.file_socket);
	if (strcmp(nc.file_shm_dir, sbd.conf.file_shm_dir) &&
	    !strcmp(sbd.conf.shm_dir, sbd.conf.file_shm_dir))
		sbd_log(SBD_WARN, 0, "reload: shm_dir changed (%s to %s); it "
			"takes effect only at restart", sbd.conf.file_shm_dir,
			nc.file_shm_dir);
	if (nc.reap_ms != sbd.conf.reap_ms)
		sbd_log(SBD_WARN, 0, "reload: reap_interval_ms changed (%u to "
			"%u); it takes effect only at restart",
			sbd.conf.reap_ms, nc.reap_ms);
	if (memcmp(&nc.repl, &sbd.conf.repl, sizeof(nc.repl)))
		sbd_log(SBD_WARN, 0, "reload: [replication] changed; it takes "
			"effect only at restart");
	if (strcmp(nc.journal_dir, sbd.conf.journal_dir) ||
	    nc.journal_min_free != sbd.conf.journal_min_free)
		sbd_log(SBD_WARN, 0, "reload: journal_dir or journal_min_free "
			"changed; it takes effect only at restart");
	for (size_t i = 0; i < nc.nchans; i++) {
		const struct sbd_chan_conf *n = &nc.chans[i], *o = NULL;

		for (size_t j = 0; j < sbd.conf.nchans; j++)
			if (!strcmp(n->name, sbd.conf.chans[j].name))
				o = &sbd.conf.chans[j];
		/* !o: a channel made at run time that the config now
		 * replicates (one made here later waits for the restart). */
		if ((o && (n->repl_level != o->repl_level ||
			   n->repl_strict != o->repl_strict)) ||
		    (!o && n->repl_level >= 0))
			sbd_log(SBD_WARN, 0, "reload: %s: replicate or "
				"out_of_sync changed; it takes effect only at "
				"restart", n->name);
		if ((o && jnl_differs(&n->jnl, &o->jnl)) || (!o && n->jnl.on))
			sbd_log(SBD_WARN, 0, "reload: %s: its journal settings "
				"changed; they take effect only at restart",
				n->name);
	}
	/* What a reload may change, on the main thread's own copy. */
	sbd.conf.admins = nc.admins;
	sbd.conf.def_pub = nc.def_pub;
	sbd.conf.def_sub = nc.def_sub;
	sbd.conf.max_channels = nc.max_channels;
	sbd.conf.max_clients = nc.max_clients;
	sbd.conf.max_clients_per_uid = nc.max_clients_per_uid;
	sbd.conf.reserved_clients = nc.reserved_clients;
	sbd.conf.idle_timeout_ms = nc.idle_timeout_ms;
	sbd.conf.log_level = nc.log_level;
	sbd.conf.remove_on_exit = nc.remove_on_exit;
	if (nc.socket_mode != sbd.conf.socket_mode) {
		/* Who may connect from now on (connections made stay). */
		if (chmod(sbd.conf.socket, nc.socket_mode) < 0)
			sbd_log(SBD_ERR, errno, "reload: socket_mode %o not "
				"applied to %s", nc.socket_mode,
				sbd.conf.socket);
		else
			sbd.conf.socket_mode = nc.socket_mode;
	}
	sbd_log_setup(sbd.opt_verbose ? SBD_DEBUG : nc.log_level,
		      sbd.opt_syslog || nc.syslog);
	for (size_t i = 0; i < nc.nchans; i++) {
		bool here;

		rcu_read_lock();
		here = sbd_chan_find(nc.chans[i].name) != NULL;
		rcu_read_unlock();
		/* As shmbusctl create (control.c): a journal starts only
		 * with the daemon, and so does replication: a replicated
		 * channel made now would be neither (its pub_sync()
		 * acknowledging at once at `local`, and on a standby taking
		 * producers whose records the primary's would diverge from
		 * at the next start). */
		if (!here && (nc.chans[i].jnl.on ||
			      nc.chans[i].repl_level >= 0)) {
			sbd_log(SBD_WARN, 0, "reload: %s: %s, so made at the "
				"next restart, with %s", nc.chans[i].name,
				nc.chans[i].jnl.on ? "journaled" : "replicated",
				nc.chans[i].jnl.on &&
				nc.chans[i].repl_level >= 0 ? "its journal and "
				"its replication" : nc.chans[i].jnl.on ?
				"its journal" : "its replication");
			continue;
		}
		if (sbd_channel_setup(&nc.chans[i], true)) {
			partial = true;
			sbd_log(SBD_ERR, 0, "reload: %s: not set up (above); "
				"the rest of the config is applied",
				nc.chans[i].name);
		}
	}
	rcu_read_lock();
	cds_lfht_for_each_entry(sbd_chans(), &it, c, node) {
		bool found = false;

		for (size_t i = 0; i < nc.nchans && !found; i++)
			found = !strcmp(nc.chans[i].name, c->name);
		if (found)
			continue;
		/* Made at run time, or no longer in the config: the
		 * [defaults] of this config, as a restart would give. */
		struct sbd_rules *r = rules_new(NULL);

		if (r)
			sbd_rules_replace(c, r);
		else
			sbd_log(SBD_ERR, ENOMEM, "%s: rules not reloaded",
				c->name);
		if (c->configured)
			sbd_log(SBD_NOTICE, 0, "%s: no longer in the config; "
				"kept with the default rules (delete it with "
				"shmbusctl)", c->name);
		c->configured = false;
	}
	rcu_read_unlock();
	sbd_conf_free(&sbd.conf);
	sbd.conf.chans = nc.chans;
	sbd.conf.nchans = nc.nchans;
	if (partial)
		sbd_log(SBD_WARN, 0, "configuration reloaded from %s, but not "
			"every channel in it could be set up (above)",
			sbd.conf.path);
	else
		sbd_log(SBD_NOTICE, 0, "configuration reloaded from %s",
			sbd.conf.path);
	return 0;
}

