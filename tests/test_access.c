/* SPDX-License-Identifier: MIT */
/*
 * test_access.c - who may open what, through a real shmbusd: uid and gid
 * rules for clients running as another user (setresuid), and subscribers,
 * buggy or hostile, that try to write the messages they were given
 * read-only.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "../lib/contract.h"

#include "shmbus/protocol.h"

static int grab_pointer(const struct shmbus_msg *m, void *arg)
{
	*(const void **)arg = m->data;
	return 1;
}

/* A subscriber that writes into a message it received. */
static int write_into_data(void *arg)
{
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_sub *sub;
	const void *data = NULL;

	(void)arg;
	sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	if (!sub)
		return 2;
	if (shmbus_pub_open(ch, NULL) || errno != EPERM)
		return 3;
	if (shmbus_wait(sub, 5000000000) ||
	    shmbus_poll(sub, grab_pointer, &data, 1) != 1)
		return 4;
	/* Die by the signal itself, not by a sanitizer's SEGV handler. */
	signal(SIGSEGV, SIG_DFL);
	((volatile uint8_t *)data)[0] = 0xff;	/* must fault */
	return 0;
}

Test(access, subscriber_data_mapping_is_read_only, .init = setup,
     .fini = teardown)
{
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	char big[SHMBUS_MBOX_INLINE + 24] = "intact";
	pid_t s;

	cr_assert(pub, "%s", shmbus_strerror(errno));
	cr_assert_null(shmbus_sub_open(ch, NULL));
	cr_assert_eq(errno, EPERM);
	s = th_spawn(write_into_data, NULL);
	usleep(100000);
	/* Longer than the mailbox carries: the handler's pointer is into
	 * the ring, not into the handle's copy. */
	cr_assert_eq(shmbus_publish(pub, big, sizeof(big)), 0);
	cr_assert_eq(th_wait(s), 128 + SIGSEGV,
		     "a subscriber wrote into the message data");
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* OPEN by hand, keeping the descriptors the library would close. */
static int raw_open(const char *name, uint32_t role, int fds[2])
{
	struct {
		struct shmbus_ctl_hdr h;
		struct shmbus_ctl_open o;
	} req = { .h = { .magic = SHMBUS_CTL_MAGIC,
			 .version = SHMBUS_CTL_VERSION,
			 .type = SHMBUS_CTL_OPEN, .id = 1,
			 .len = sizeof(struct shmbus_ctl_open) },
		  .o = { .role = role } };
	struct shmbus_ctl_hdr rep;
	struct iovec iov = { .iov_base = &rep, .iov_len = sizeof(rep) };
	union {
		struct cmsghdr c;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} ctl;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c;
	int fd = raw_connect();

	strcpy(req.o.name, name);
	if (send(fd, &req, sizeof(req), 0) != (ssize_t)sizeof(req) ||
	    recvmsg(fd, &m, 0) != (ssize_t)sizeof(rep) || rep.status)
		return -1;
	c = CMSG_FIRSTHDR(&m);
	if (!c || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(2 * sizeof(int)))
		return -1;
	memcpy(fds, CMSG_DATA(c), 2 * sizeof(int));
	close(fd);
	return 0;
}

/* A hostile subscriber: it holds the data file's descriptor and tries
 * every way to write through it. */
static int hostile_subscriber(void)
{
	char path[64];
	void *p;
	int fds[2], fd;

	if (raw_open("mine", SHMBUS_CTL_ROLE_SUB, fds))
		return 20;
	if ((fcntl(fds[1], F_GETFL) & O_ACCMODE) != O_RDONLY)
		return 21;
	p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
	if (p != MAP_FAILED || errno != EACCES)
		return 22;
	p = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fds[1], 0);
	if (p == MAP_FAILED)
		return 23;
	if (mprotect(p, 8192, PROT_READ | PROT_WRITE) == 0 || errno != EACCES)
		return 24;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[1]);
	fd = open(path, O_RDWR);
	if (fd >= 0 || errno != EACCES)
		return 25;
	if (write(fds[1], "x", 1) >= 0 || ftruncate(fds[1], 0) == 0)
		return 26;
	return 0;
}

/* The child process becomes uid and gid 65534, without supplementary
 * groups: 0, or -1. */
static int become_nobody(void)
{
	return setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
	       setresuid(65534, 65534, 65534) ? -1 : 0;
}

static int as_nobody(void *arg)
{
	const char *dir = arg;
	shmbus_bus *bus;
	shmbus_channel *ch;
	struct shmbus_channel_attr a;

	if (become_nobody())
		return 10;
	bus = shmbus_connect(d.sock);
	if (!bus)
		return 11;
	/* Denied: publish on "mine" (rule: none), subscribe on "root". */
	if (shmbus_bus_open(bus, "mine", SHMBUS_ROLE_PUBLISH) ||
	    errno != EACCES)
		return 12;
	if (shmbus_bus_open(bus, "root", SHMBUS_ROLE_SUBSCRIBE) ||
	    errno != EACCES)
		return 13;
	shmbus_channel_attr_init(&a);
	if (shmbus_bus_create(bus, "x", &a) != -EACCES ||
	    shmbus_bus_delete(bus, "mine") != -EACCES)
		return 14;
	/* A role change is an admin's too, refused the same way. */
	{
		struct shmbus_ctl_repl_reply r;

		if (sb_bus_repl(bus, SHMBUS_REPL_OP_SWITCHOVER, 0, &r) !=
		    -EACCES)
			return 18;
	}
	/* The file itself is the daemon's, mode 0600: only the passed
	 * descriptor gives access. */
	if (shmbus_channel_open(dir, "mine") || errno != EACCES)
		return 15;
	/* Allowed: subscribe on "mine" (rule: uid:65534). */
	ch = shmbus_bus_open(bus, "mine", SHMBUS_ROLE_SUBSCRIBE);
	if (!ch || !shmbus_sub_open(ch, NULL))
		return 16;
	/* Allowed by group: publish on "grp" (rule: gid:65534). */
	ch = shmbus_bus_open(bus, "grp", SHMBUS_ROLE_PUBLISH);
	if (!ch || !shmbus_pub_open(ch, NULL))
		return 17;
	return hostile_subscriber();
}

Test(access, access_control_by_uid_and_gid, .fini = teardown)
{
	int rc;

	if (geteuid() != 0)
		cr_skip_test("needs root to run a client as uid 65534");
	setup_with("[channel mine]\ncapacity = 8K\nmax_msg = 100\n"
		   "publish = none\nsubscribe = uid:65534\n"
		   "[channel root]\ncapacity = 8K\nmax_msg = 100\n"
		   "subscribe = uid:0\n"
		   "[channel grp]\ncapacity = 8K\nmax_msg = 100\n"
		   "publish = gid:65534\n");
	rc = th_wait(th_spawn(as_nobody, d.dir));
	cr_assert_eq(rc, 0, "as_nobody() returned %d", rc);
	cr_assert(log_has("pid"));
	cr_assert(log_has("may not publish"));
}

/* A client in more supplementary groups than the daemon reads (63, see
 * docs/protocol.md, "Limits") is judged on its primary group and the first
 * 63: here gid 5000, the lowest of 70 (the kernel sorts them), names it. */
static int in_seventy_groups(void *arg)
{
	gid_t g[70];
	shmbus_bus *bus;

	(void)arg;
	for (int i = 0; i < 70; i++)
		g[i] = (gid_t)(5000 + i);
	if (setgroups(70, g) || setresgid(65534, 65534, 65534) ||
	    setresuid(65534, 65534, 65534))
		return 10;
	bus = shmbus_connect(d.sock);
	if (!bus)
		return 11;
	if (!shmbus_bus_open(bus, "g5000", SHMBUS_ROLE_PUBLISH))
		return 12;
	shmbus_disconnect(bus);
	return 0;
}

Test(access, a_client_in_many_groups_is_judged_on_the_first_63,
     .fini = teardown)
{
	int rc;

	if (geteuid() != 0)
		cr_skip_test("needs root to run a client as uid 65534");
	setup_with("[channel g5000]\ncapacity = 8K\nmax_msg = 100\n"
		   "publish = gid:5000\n");
	rc = th_wait(th_spawn(in_seventy_groups, NULL));
	cr_assert_eq(rc, 0, "in_seventy_groups() returned %d (12: refused "
		     "although its supplementary group 5000 is named)", rc);
}

/* A group holds a subscriber slot, and a block channel's producers, until
 * it is deleted: a subscriber may join the groups that exist, and only
 * the config or an administrator makes new ones, or deletes them. */
static int joins_as_nobody(void *arg)
{
	shmbus_channel *ch;
	shmbus_bus *bus;

	(void)arg;
	if (become_nobody())
		return 10;
	bus = shmbus_connect(d.sock);
	if (!bus)
		return 11;
	ch = shmbus_bus_open(bus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	if (!ch)
		return 12;
	if (!shmbus_group_join(ch, "work", "m", NULL))
		return 13;
	if (shmbus_group_join(ch, "squat", "m", NULL) || errno != EPERM)
		return 14;
	if (shmbus_group_delete(ch, "work") != -EACCES)
		return 15;
	return 0;
}

Test(access, only_the_config_or_an_admin_makes_groups, .fini = teardown)
{
	char path[256];
	int rc;

	if (geteuid() != 0)
		cr_skip_test("needs root to run a client as uid 65534");
	setup_with("[channel jobs]\ncapacity = 8K\nmax_msg = 100\n"
		   "subscribe = uid:65534\nconsumer_groups = work\n");
	rc = th_wait(th_spawn(joins_as_nobody, NULL));
	cr_assert_eq(rc, 0, "joins_as_nobody() returned %d", rc);
	snprintf(path, sizeof(path), "%s/.jobs@squat.group", d.dir);
	cr_assert_neq(access(path, F_OK), 0, "the group was made");
	cr_assert(log_has("(uid 65534) may not make group squat"));
}

/* Every holder of a channel's file writable (a subscriber holds the
 * control file so, a publisher the data file) can cut it with
 * ftruncate(2), after which touching a mapping past the new end faults
 * (SIGBUS).  The daemon must outlive it, serve the channel no more, and
 * give the files back their size so that the channel's other clients stop
 * faulting too. */
static int list_one(const struct shmbus_bus_channel *c, void *arg)
{
	(void)c;
	(void)arg;
	return 0;
}

static int cuts_as_nobody(void *arg)
{
	const char *dir = arg;
	shmbus_bus *bus;
	int fds[2], pfds[2], gfds[2];

	if (become_nobody())
		return 10;
	if (raw_open("cut", SHMBUS_CTL_ROLE_SUB, fds) ||
	    raw_open("cut2", SHMBUS_CTL_ROLE_PUB, pfds) ||
	    raw_open("grown", SHMBUS_CTL_ROLE_SUB, gfds))
		return 11;
	/* Made longer, a file faults nobody, but would not pass the next
	 * start's check: it is cut back. */
	if (ftruncate(gfds[0], 1 << 20))
		return 15;
	bus = shmbus_connect(d.sock);
	if (!bus)
		return 12;
	/* The requests race the reaper's look at the files: the daemon reads
	 * the cut header answering them, unless the reaper was first. */
	if (ftruncate(fds[0], 0) || ftruncate(pfds[1], 0))
		return 13;
	for (int i = 0; i < 50; i++)
		if (shmbus_bus_list(bus, list_one, NULL) < 0)
			return 14;
	(void)dir;
	shmbus_disconnect(bus);
	return 0;
}

static int count_one(const struct shmbus_msg *m, void *arg)
{
	(void)m;
	(*(int *)arg)++;
	return 0;
}

Test(access, a_client_that_cuts_a_file_short_does_not_bring_down_the_daemon,
     .fini = teardown)
{
	char path[256];
	struct stat st;
	shmbus_channel *ch, *ch2;
	shmbus_bus *bus, *bus2;
	shmbus_pub *pub;
	shmbus_sub *sub;
	int rc, got = 0, i;

	if (geteuid() != 0)
		cr_skip_test("needs root to run a client as uid 65534");
	setup_with("[channel cut]\ncapacity = 64K\nsubscribe = *\n"
		   "[channel cut2]\ncapacity = 64K\npublish = *\n"
		   "[channel grown]\ncapacity = 64K\nsubscribe = *\n"
		   "[channel other]\ncapacity = 8K\n");
	rc = th_wait(th_spawn(cuts_as_nobody, d.dir));
	cr_assert_eq(rc, 0, "cuts_as_nobody() returned %d", rc);
	for (i = 0; i < 300 && !(log_has("cut: its control file was cut to 0 "
					 "bytes") &&
				 log_has("cut2: its data file was cut to 0 "
					 "bytes")); i++)
		usleep(10000);
	cr_assert_lt(i, 300, "the cuts were not found");
	for (i = 0; i < 300 && !log_has("grown: its control file was made "
					"1048576 bytes long"); i++)
		usleep(10000);
	cr_assert_lt(i, 300, "the longer file was not found");
	snprintf(path, sizeof(path), "%s/grown", d.dir);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_lt(st.st_size, 1 << 20, "the file was not cut back");
	ch = open_role(&bus, "grown", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch, "a file made longer damaged the channel: %s",
		  strerror(errno));
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	cr_assert_eq(kill(d.pid, 0), 0, "the daemon died");
	snprintf(path, sizeof(path), "%s/cut", d.dir);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_gt(st.st_size, 4096, "the file's size was not given back");
	cr_assert_null(open_role(&bus, "cut", SHMBUS_ROLE_SUBSCRIBE));
	cr_assert_eq(errno, EBADMSG, "%s", strerror(errno));
	shmbus_disconnect(bus);
	/* The other channels are served as before. */
	ch = open_role(&bus, "other", SHMBUS_ROLE_PUBLISH);
	ch2 = open_role(&bus2, "other", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch && ch2);
	pub = shmbus_pub_open(ch, NULL);
	sub = shmbus_sub_open(ch2, NULL);
	cr_assert(pub && sub);
	cr_assert_eq(shmbus_publish(pub, "x", 1), 0);
	cr_assert_eq(shmbus_poll(sub, count_one, &got, 0), 1);
	cr_assert_eq(got, 1);
	shmbus_pub_close(pub);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_channel_close(ch2);
	shmbus_disconnect(bus);
	shmbus_disconnect(bus2);
}

/* Every file of the directory whose name starts with `prefix`, given to
 * uid and gid 65534. */
static void give_away(const char *prefix)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "chown 65534:65534 %s/%s*", d.dir, prefix);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* shm_dir may be a directory where every user can make files (/dev/shm):
 * channel and group files that another user made there before the daemon
 * started are not served as the daemon's.  A configured channel's are set
 * aside and the channel made afresh; another channel's are left alone;
 * a group's file is not handed to joiners. */
Test(access, files_another_user_made_are_not_served, .fini = teardown)
{
	struct shmbus_channel_attr a;
	shmbus_channel *ch;
	shmbus_bus *bus;

	if (geteuid() != 0)
		cr_skip_test("needs root to give files to uid 65534");
	setup_with("[defaults]\nsubscribe = *\npublish = *\n"
		   "[channel mine]\ncapacity = 8K\nmax_msg = 100\n"
		   "[channel jobs]\ncapacity = 8K\nmax_msg = 100\n"
		   "consumer_groups = work mode=shared\n");
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	shmbus_channel_attr_init(&a);
	a.capacity = 8192;
	ch = shmbus_channel_create(d.dir, "stray", &a, SHMBUS_CREATE_EXCL);
	cr_assert(ch);
	shmbus_channel_close(ch);
	give_away("mine");
	give_away(".mine.");
	give_away("stray");
	give_away(".stray.");
	give_away(".jobs@work");
	start_daemon();
	cr_assert(log_has("mine: its data file belongs to uid 65534"));
	cr_assert(log_has("mine: invalid channel file"));
	cr_assert(log_has("stray: its data file belongs to uid 65534"));
	ch = open_role(&bus, "mine", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "mine, made afresh: %s", strerror(errno));
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	cr_assert_null(open_role(&bus, "stray", SHMBUS_ROLE_SUBSCRIBE));
	ch = open_role(&bus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	cr_assert_null(shmbus_group_join(ch, "work", "m", NULL));
	cr_assert_eq(errno, EPERM, "join: %s", strerror(errno));
	cr_assert(log_has("group work: its file belongs to uid 65534"));
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* The owner the config names changes (or goes) between two runs: the
 * channel is adopted as it is, its messages kept, and its control file
 * given the owner now named. */
Test(access, a_changed_owner_keeps_the_channel, .fini = teardown)
{
	struct stat st;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t head;
	char path[256];

	if (geteuid() != 0)
		cr_skip_test("needs root to give a channel to uid 65534");
	setup_with("[defaults]\nsubscribe = *\npublish = *\n"
		   "[channel mine]\ncapacity = 8K\nmax_msg = 100\n"
		   "owner = 65534\n");
	ch = open_role(&bus, "mine", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch);
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	cr_assert_eq(shmbus_publish(p, "kept", 4), 0);
	shmbus_pub_close(p);
	head = th_head(ch);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	write_conf("[defaults]\nsubscribe = *\npublish = *\n"
		   "[channel mine]\ncapacity = 8K\nmax_msg = 100\n"
		   "owner = 0\n");
	start_daemon();
	cr_assert_not(log_has("invalid channel file"));
	cr_assert(log_has("mine: adopted"));
	ch = open_role(&bus, "mine", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	cr_assert_eq(th_head(ch), head, "the messages were lost");
	snprintf(path, sizeof(path), "%s/mine", d.dir);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_uid, 0, "owner %u", st.st_uid);
	/* And by a reload, as at a restart. */
	write_conf("[defaults]\nsubscribe = *\npublish = *\n"
		   "[channel mine]\ncapacity = 8K\nmax_msg = 100\n"
		   "owner = 65534\n");
	kill(d.pid, SIGHUP);
	for (int i = 0; i < 300; i++) {
		cr_assert_eq(stat(path, &st), 0);
		if (st.st_uid == 65534)
			break;
		usleep(10000);
	}
	cr_assert_eq(st.st_uid, 65534, "owner %u after a reload", st.st_uid);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* A user the bus does not know takes every lock of the daemon's it can
 * open (flock() needs only a read-only descriptor) as the daemon stops:
 * the socket's lock file, shm_dir's, and a journaled channel's, whose
 * directory its group may read.  The daemon starts again all the same,
 * and writes the journal. */
static int hold_the_locks(void *arg)
{
	char path[5][192];
	int fds[5], n = 0, held = 0;

	snprintf(path[0], sizeof(path[0]), "%s.lock", d.sock);
	snprintf(path[1], sizeof(path[1]), "%s/.shmbusd.lock", d.dir);
	snprintf(path[2], sizeof(path[2]), "%s/jnl/mine/.lock", d.dir);
	/* The directories themselves: what an older daemon locked. */
	snprintf(path[3], sizeof(path[3]), "%s", d.dir);
	snprintf(path[4], sizeof(path[4]), "%s/jnl/mine", d.dir);
	if (become_nobody())
		return 10;
	for (int i = 0; i < 5; i++)
		if ((fds[n] = open(path[i], O_RDONLY | O_CLOEXEC)) >= 0)
			n++;
	if (n < 2)	/* the directories are readable */
		return 11;
	if (write(*(int *)arg, "x", 1) != 1)
		return 12;
	for (int t = 0; t < 5000 && held < n; t++) {
		held = 0;
		for (int i = 0; i < n; i++)
			held += flock(fds[i], LOCK_EX | LOCK_NB) == 0;
		usleep(1000);
	}
	alarm(10);	/* gone even if the test fails before it kills it */
	pause();
	return 0;
}

static void assert_mode_0600(const char *fmt, const char *dir)
{
	char path[192];
	struct stat st;

	snprintf(path, sizeof(path), fmt, dir);
	cr_assert_eq(stat(path, &st), 0, "%s", path);
	cr_assert_eq(st.st_mode & 0777, 0600, "%s: mode %o", path,
		     st.st_mode & 0777);
}

Test(access, another_user_cannot_hold_the_daemons_locks, .fini = teardown)
{
	char conf[512];
	int ready[2];
	pid_t h;

	if (geteuid() != 0)
		cr_skip_test("needs root to run a client as uid 65534");
	snprintf(conf, sizeof(conf), "%s", "[channel mine]\ncapacity = 8K\n");
	setup_with(conf);
	snprintf(conf, sizeof(conf), "journal_dir = %s/jnl\n"
		 "[channel mine]\ncapacity = 8K\njournal = on\n"
		 "journal_segment = 64K\nmode = 0640\ngroup = 65534\n", d.dir);
	write_conf(conf);
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	start_daemon();
	cr_assert(log_has("mine: journal in"));
	cr_assert_eq(pipe(ready), 0);
	h = th_spawn(hold_the_locks, &ready[1]);
	close(ready[1]);
	hear(ready[0]);
	close(ready[0]);
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	usleep(50000);	/* the holder takes what it can */
	start_daemon();
	cr_assert_not(log_has("served by another shmbusd"));
	cr_assert_not(log_has("already served"));
	cr_assert_not(log_has("is written by another shmbusd"));
	kill(h, SIGKILL);
	waitpid(h, NULL, 0);
	assert_mode_0600("%s.lock", d.sock);
	assert_mode_0600("%s/.shmbusd.lock", d.dir);
	assert_mode_0600("%s/jnl/mine/.lock", d.dir);
}

/* Runs the daemon on d.conf until it exits, at most 2 s (then stopped):
 * its exit status, or -1 if it ran. */
static int run_until_exit(void)
{
	pid_t pid = spawn_daemon();
	int st;

	for (int i = 0; i < 200; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
		usleep(10000);
	}
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
	return -1;
}

static void make_victim(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "precious\n", 9), 9);
	close(fd);
	cr_assert_eq(chmod(path, 0644), 0);
}

static void assert_victim_intact(const char *path)
{
	char buf[32] = { 0 };
	struct stat st;
	int fd = open(path, O_RDONLY);

	cr_assert(fd >= 0);
	cr_assert_eq(read(fd, buf, sizeof(buf) - 1), 9, "%s: \"%s\"", path,
		     buf);
	close(fd);
	cr_assert_str_eq(buf, "precious\n");
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0644, "%s made %o", path,
		     st.st_mode & 0777);
}

/* A lock file that is a hard link to another file (which another user
 * can make in a sticky directory such as /tmp or /dev/shm, where
 * fs.protected_hardlinks is off): refused, and the file left as it is
 * (the socket's lock was truncated and given the pid, both made 0600). */
Test(access, a_lock_file_linked_to_another_file_is_refused, .fini = teardown)
{
	char lock[192], victim[192];

	setup_with("[channel mine]\ncapacity = 8K\n");
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	snprintf(lock, sizeof(lock), "%s.lock", d.sock);
	snprintf(victim, sizeof(victim), "%s/victim", d.dir);
	make_victim(victim);
	cr_assert_eq(unlink(lock), 0);
	cr_assert_eq(link(victim, lock), 0);
	cr_assert_eq(run_until_exit(), 1, "started with its lock linked");
	assert_victim_intact(victim);
	cr_assert(log_has("bus.sock.lock: refused"));
	/* shm_dir's. */
	cr_assert_eq(unlink(lock), 0);
	snprintf(lock, sizeof(lock), "%s/.shmbusd.lock", d.dir);
	unlink(lock);
	cr_assert_eq(link(victim, lock), 0);
	cr_assert_eq(run_until_exit(), 1, "started with its lock linked");
	assert_victim_intact(victim);
	cr_assert(log_has(".shmbusd.lock: refused"));
	cr_assert_eq(unlink(lock), 0);
}

/* The daemon of a plain config started and stopped (the suite's files
 * made), and d.dir/victim made, root's and 0755: where a link another
 * user puts in place comes to lead. */
static void stopped_with_victim(char *victim, size_t n)
{
	setup_with("[channel mine]\ncapacity = 8K\n");
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	snprintf(victim, n, "%s/victim", d.dir);
	cr_assert_eq(mkdir(victim, 0755), 0);
}

/* A link of uid 65534's at `at`, to `target`. */
static void their_link(const char *target, const char *at)
{
	cr_assert_eq(symlink(target, at), 0);
	cr_assert_eq(lchown(at, 65534, 65534), 0);
}

/* d.dir/theirs, uid 65534's, holding a link of theirs named `name` to
 * `target`; its path goes in link. */
static void their_dir_link(const char *target, const char *name, char *link,
			   size_t n)
{
	snprintf(link, n, "%s/theirs", d.dir);
	cr_assert_eq(mkdir(link, 0755), 0);
	cr_assert_eq(chown(link, 65534, 65534), 0);
	snprintf(link, n, "%s/theirs/%s", d.dir, name);
	their_link(target, link);
}

/* journal_dir in a directory another user owns, who put a link there in
 * place of a journaled channel's directory: the daemon follows no such
 * link (it chowned, chmodded and filled whatever directory it led to)
 * and the channel goes on without its journal. */
Test(access, a_link_another_user_put_in_journal_dir_is_not_followed,
     .fini = teardown)
{
	char conf[512], victim[192], link[256];
	struct stat st;

	if (geteuid() != 0)
		cr_skip_test("needs root to give a directory to uid 65534");
	stopped_with_victim(victim, sizeof(victim));
	their_dir_link(victim, "mine", link, sizeof(link));
	snprintf(conf, sizeof(conf), "journal_dir = %s/theirs\n"
		 "[channel mine]\ncapacity = 8K\njournal = on\n"
		 "journal_segment = 64K\nmode = 0640\ngroup = 65534\n", d.dir);
	write_conf(conf);
	start_daemon();
	cr_assert_eq(stat(victim, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0755, "the link's target made %o",
		     st.st_mode & 07777);
	cr_assert_eq(st.st_gid, 0, "the link's target given to gid %u",
		     st.st_gid);
	snprintf(link, sizeof(link), "%s/.lock", victim);
	cr_assert_eq(access(link, F_OK), -1, "files made in the link's target");
	snprintf(link, sizeof(link), "%s/0000000000000000.seg", victim);
	cr_assert_eq(access(link, F_OK), -1, "files made in the link's target");
	cr_assert(log_has("theirs: refused: owned by another user"));
	cr_assert(log_has("mine: journal not started"));
}

/* The same link one level up, in place of journal_dir itself: nothing is
 * made where it leads (a channel's directory was, before the refusal). */
Test(access, a_link_another_user_put_above_a_journal_makes_nothing,
     .fini = teardown)
{
	char conf[512], victim[192], link[256];

	if (geteuid() != 0)
		cr_skip_test("needs root to give a directory to uid 65534");
	stopped_with_victim(victim, sizeof(victim));
	their_dir_link(victim, "jnl", link, sizeof(link));
	snprintf(conf, sizeof(conf), "journal_dir = %s\n"
		 "[channel mine]\ncapacity = 8K\njournal = on\n"
		 "journal_segment = 64K\n", link);
	write_conf(conf);
	start_daemon();
	snprintf(link, sizeof(link), "%s/mine", victim);
	cr_assert_eq(access(link, F_OK), -1, "%s made", link);
	cr_assert(log_has("theirs: refused: owned by another user"));
	cr_assert(log_has("mine: journal not started"));
}

/* journal_dir in a root-owned sticky directory every user may add to
 * (as /tmp is), where another user put a link of theirs at journal_dir's
 * name, to a directory that would pass the rule itself: not followed
 * (the kernel would, without fs.protected_symlinks). */
Test(access, a_link_another_user_put_in_a_sticky_directory_is_not_followed,
     .fini = teardown)
{
	char conf[512], victim[192], sticky[192], link[256];

	if (geteuid() != 0)
		cr_skip_test("needs root to give a link to uid 65534");
	stopped_with_victim(victim, sizeof(victim));
	snprintf(sticky, sizeof(sticky), "%s/sticky", d.dir);
	cr_assert_eq(mkdir(sticky, 0755), 0);
	cr_assert_eq(chmod(sticky, 01777), 0);
	snprintf(link, sizeof(link), "%s/jnl", sticky);
	their_link(victim, link);
	snprintf(conf, sizeof(conf), "journal_dir = %s\n"
		 "[channel mine]\ncapacity = 8K\njournal = on\n"
		 "journal_segment = 64K\n", link);
	write_conf(conf);
	start_daemon();
	snprintf(link, sizeof(link), "%s/mine/0000000000000000.seg", victim);
	cr_assert_eq(access(link, F_OK), -1, "the journal written in the "
		     "link's target");
	cr_assert(log_has("jnl: refused: a symbolic link owned by another "
			  "user"));
	cr_assert(log_has("mine: journal not started"));
}

static int watches_as_nobody(void *arg)
{
	const char *dir = arg;
	shmbus_channel *ch;

	if (become_nobody())
		return 10;
	/* In the channel's group, mode 0640: both files readable, so
	 * busstat's read-only map works; neither writable. */
	ch = shmbus_channel_open_ro(dir, "watched");
	if (!ch)
		return 11;
	shmbus_channel_close(ch);
	if (shmbus_channel_open(dir, "watched") || errno != EACCES)
		return 12;
	/* The group named, mode 0600: nothing for the group. */
	if (shmbus_channel_open_ro(dir, "closed") || errno != EACCES)
		return 13;
	return 0;
}

/* A channel's `group` is its files' group, the data file's included: its
 * members get what the mode grants the group (read, for busstat), and the
 * data file stays the daemon's user's. */
Test(access, a_channels_group_may_read_both_its_files, .fini = teardown)
{
	char path[256];
	struct stat st;
	int rc;

	if (geteuid() != 0)
		cr_skip_test("needs root to run a client as uid 65534");
	setup_with("[channel watched]\ncapacity = 8K\nmax_msg = 100\n"
		   "group = 65534\nmode = 0640\n"
		   "[channel closed]\ncapacity = 8K\nmax_msg = 100\n"
		   "group = 65534\n");
	rc = th_wait(th_spawn(watches_as_nobody, (void *)d.dir));
	cr_assert_eq(rc, 0, "watches_as_nobody() returned %d", rc);
	snprintf(path, sizeof(path), "%s/watched", d.dir);
	cr_assert_eq(stat(path, &st), 0);
	cr_expect_eq(st.st_gid, 65534);
}
