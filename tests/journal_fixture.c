/* SPDX-License-Identifier: MIT */
/*
 * journal_fixture.c - what the journal tests share: a daemon's config
 * with a journaled channel "j", publishing and replaying numbered
 * messages of varying lengths, waiting for the journal, stopping and
 * pausing the daemon, reading and rewriting segment files.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"
#include "../lib/contract.h"
#include "../lib/journal.h"
#include "journal_fixture.h"

char jdir[256];		/* journal_dir */
char cdir[320];		/* the channel "j"'s journal */

void conf_with(const char *chan_keys, const char *bus_keys)
{
	char body[2048];

	if (!jdir[0])
		snprintf(jdir, sizeof(jdir), "%s/jnl", d.dir);
	snprintf(cdir, sizeof(cdir), "%s/j", jdir);
	snprintf(body, sizeof(body),
		 "journal_dir = %s\n%s"
		 "[defaults]\npublish = *\nsubscribe = *\n"
		 "[channel j]\ncapacity = 64K\nmax_msg = 2048\n"
		 "journal = on\n%s",
		 jdir, bus_keys ? bus_keys : "", chan_keys);
	write_conf(body);
}

void jnl_setup(void)
{
	char dir[64];

	/* The fixture's directory, without a daemon yet. */
	snprintf(dir, sizeof(dir), "%s", th_mkdir());
	memset(&d, 0, sizeof(d));
	snprintf(d.dir, sizeof(d.dir), "%s", dir);
	snprintf(d.conf, sizeof(d.conf), "%s/shmbusd.conf", d.dir);
	snprintf(d.sock, sizeof(d.sock), "%s/sock", d.dir);
	snprintf(d.log, sizeof(d.log), "%s/shmbusd.log", d.dir);
	jdir[0] = 0;
}

char mnt[128];		/* a small filesystem a test mounted */
char lower[128];	/* the filesystem under mnt's loop device */

void jnl_fini(void)
{
	if (d.pid > 0) {
		kill(d.pid, SIGTERM);
		kill(d.pid, SIGCONT);	/* a test may have stopped it */
		th_wait(d.pid);
		d.pid = 0;
	}
	/* A loop device mounted with -o loop goes with its last mount. */
	if (mnt[0])
		umount2(mnt, MNT_DETACH);
	if (lower[0])
		umount2(lower, MNT_DETACH);
	mnt[0] = lower[0] = 0;
	teardown();
}

/* Message i: th_msg of a length that varies with i. */
size_t len_of(uint64_t i)
{
	return TH_MSG_MIN + (i * 7919) % 600;
}

void publish_range(shmbus_pub *p, uint64_t first, uint64_t n)
{
	uint8_t buf[2048];

	for (uint64_t i = first; i < first + n; i++) {
		int rc;

		th_msg_fill(buf, len_of(i), 1, i);
		while ((rc = shmbus_publish(p, buf, len_of(i))) == -EAGAIN)
			sched_yield();
		cr_assert_eq(rc, 0, "publish %lu: %d", (unsigned long)i, rc);
	}
}

shmbus_channel *open_pub(shmbus_bus **bus, shmbus_pub **p)
{
	shmbus_channel *ch = open_role(bus, "j", SHMBUS_ROLE_PUBLISH);

	cr_assert(ch, "open: %s", strerror(errno));
	*p = shmbus_pub_open(ch, NULL);
	cr_assert(*p);
	return ch;
}

void close_pub(shmbus_bus *bus, shmbus_channel *ch, shmbus_pub *p)
{
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* Waits until the journal has written everything committed. */
void wait_written(shmbus_channel *ch, int sec)
{
	struct sb_jnl_view v;

	for (int i = 0; i < sec * 1000; i++) {
		sb_jnl_read(ch, &v);
		if ((v.state & SHMBUS_JNL_ON) && v.written == th_head(ch))
			return;
		usleep(1000);
	}
	sb_jnl_read(ch, &v);
	cr_assert_fail("journal at %lu, head %lu, state %#x",
		       (unsigned long)v.written, (unsigned long)th_head(ch),
		       v.state);
}

/* Replays from `from` and checks messages first..first+n-1 in order, each
 * intact; returns how many came from the journal. */
uint64_t replay_check(shmbus_channel *ch, uint64_t from, uint64_t first,
		      uint64_t n)
{
	shmbus_replay *r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION,
					      from, NULL);
	struct shmbus_replay_stats st;
	uint8_t buf[2048];
	uint64_t i = first;
	int64_t idle = 0;

	cr_assert(r, "replay_open: %s", strerror(errno));
	while (i < first + n) {
		struct shmbus_msg m;
		ssize_t len = shmbus_replay_read(r, buf, sizeof(buf), &m);
		uint64_t seq;
		uint32_t id;

		if (len == -EAGAIN) {
			cr_assert_lt(++idle, 5000, "stalled at message %lu",
				     (unsigned long)i);
			usleep(1000);
			continue;
		}
		idle = 0;
		cr_assert_geq(len, 0, "read: %zd at message %lu", len,
			      (unsigned long)i);
		cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0,
			     "message %lu damaged", (unsigned long)i);
		cr_assert_eq(seq, i, "message %lu where %lu was due",
			     (unsigned long)seq, (unsigned long)i);
		cr_assert_eq((size_t)len, len_of(i));
		cr_assert_eq(m.lost, 0);
		i++;
	}
	shmbus_replay_stats(r, &st);
	shmbus_replay_close(r);
	return st.from_journal;
}

int count_segments(void)
{
	uint64_t *b;
	size_t k;

	if (sb_jlist(cdir, &b, &k))
		return 0;
	free(b);
	return (int)k;
}

/* SIGSTOP of the daemon, and waits until the kernel says it is stopped
 * (the signal is delivered asynchronously: until then it still runs). */
void pause_daemon(void)
{
	char path[64], st[512], *p;

	kill(d.pid, SIGSTOP);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)d.pid);
	for (int i = 0; i < 2000; i++) {
		FILE *f = fopen(path, "r");
		size_t n = f ? fread(st, 1, sizeof(st) - 1, f) : 0;

		if (f)
			fclose(f);
		st[n] = 0;
		p = strrchr(st, ')');
		if (p && p[1] == ' ' && p[2] == 'T')
			return;
		usleep(1000);
	}
	cr_assert_fail("shmbusd did not stop");
}

/* Removes the channel's files from the shm dir, as a reboot would. */
void remove_ring(void)
{
	DIR *dd = opendir(d.dir);
	struct dirent *e;

	cr_assert(dd);
	while ((e = readdir(dd))) {
		char path[512];

		if (strncmp(e->d_name, "j", 1) && strncmp(e->d_name, ".j", 2))
			continue;
		snprintf(path, sizeof(path), "%s/%s", d.dir, e->d_name);
		unlink(path);
	}
	closedir(dd);
}

void stop_daemon(void)
{
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
}


void read_all(struct recs *rs)
{
	struct sb_jreader r;
	struct sb_jrec rec;
	uint64_t *b;
	size_t k;
	int rc;

	cr_assert_eq(sb_jlist(cdir, &b, &k), 0);
	cr_assert_eq(sb_jreader_init(&r, cdir, NULL), 0);
	cr_assert_eq(sb_jreader_seek(&r, b[0]), 0);
	free(b);
	rs->n = 0;
	while ((rc = sb_jreader_next(&r, UINT64_MAX, &rec)) == 1) {
		cr_assert_lt(rs->n, 8192);
		rs->pos[rs->n] = rec.pos;
		rs->size[rs->n] = rec.size;
		rs->seq[rs->n] = rec.seq;
		rs->type[rs->n] = rec.type;
		rs->n++;
	}
	cr_assert_eq(rc, 0, "%s", r.why);
	rs->end = r.pos;
	sb_jreader_close(&r);
}

void put_file(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

uint8_t *get_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY);

	cr_assert(fd >= 0, "%s", path);
	cr_assert_eq(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	cr_assert_eq(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

/* Removes every segment and index after base (and spares). */
void remove_after(uint64_t base)
{
	DIR *dd = opendir(cdir);
	struct dirent *e;

	cr_assert(dd);
	while ((e = readdir(dd))) {
		unsigned long long b;
		char path[600];

		if (e->d_name[0] == '.' && strstr(e->d_name, ".tmp"))
			;
		else if (sscanf(e->d_name, "%16llx", &b) != 1 || b <= base)
			continue;
		snprintf(path, sizeof(path), "%s/%s", cdir, e->d_name);
		unlink(path);
	}
	closedir(dd);
}

/* The channel "j" with `keys` (its capacity among them). */
void conf_raw(const char *keys)
{
	char all[2048];

	snprintf(jdir, sizeof(jdir), "%s/jnl", d.dir);
	snprintf(cdir, sizeof(cdir), "%s/j", jdir);
	snprintf(all, sizeof(all),
		 "journal_dir = %s\n[defaults]\npublish = *\n"
		 "subscribe = *\n[channel j]\njournal = on\n%s", jdir, keys);
	write_conf(all);
}

/* A daemon on the config with `keys`, and n messages published through
 * it and journaled. */
shmbus_channel *journaled(const char *keys, uint64_t n, shmbus_bus **bus,
			  shmbus_pub **p)
{
	shmbus_channel *ch;

	conf_with(keys, NULL);
	start_daemon();
	ch = open_pub(bus, p);
	publish_range(*p, 0, n);
	wait_written(ch, 10);
	return ch;
}

void persisted_then_stopped(uint64_t n)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	conf_with("acknowledge = persisted\njournal_segment = 64K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, n);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	close_pub(bus, ch, p);
	stop_daemon();
}
