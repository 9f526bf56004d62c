/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c - a fork()'s copies of the library's handles: closing them in
 * the child leaves the parent's publisher, subscriber and group member
 * as they were; a child whose parent had another thread inside a bus
 * request, or inside a group's join, when it forked is told (or goes on)
 * instead of waiting for ever on a lock that thread held; and a channel
 * whose connection is gone makes no group file anywhere.  A child's use
 * of the handles it inherited is refused (-EPERM), and the parent's
 * messages, cursor and membership stay whole.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

static const char *dir;

static void direct_setup(void)
{
	dir = th_mkdir();
}

static void direct_teardown(void)
{
	th_rmdir(dir);
}

/* The child of the next test: closes what it inherited, nothing else. */
static shmbus_pub *c_pub;
static shmbus_sub *c_sub;
static shmbus_group *c_grp;

static int close_copies(void *arg)
{
	(void)arg;
	shmbus_group_leave(c_grp);
	shmbus_sub_close(c_sub);
	shmbus_pub_close(c_pub);
	return 0;
}

/* The child's closes must not abort the parent's open claim (its commit
 * would publish nothing, silently), free the parent's subscriber slot (a
 * second subscriber would take it: two cursors in one slot) nor give the
 * parent's group membership back (its ack would be -ESTALE). */
Test(fork, a_childs_close_of_inherited_handles_leaves_the_parents,
     .init = direct_setup, .fini = direct_teardown)
{
	shmbus_channel *ch = th_create(dir, 65536, 256, SHMBUS_BLOCK,
				       SHMBUS_MULTI_PRODUCER);
	struct shmbus_group_attr ga;
	struct shmbus_channel_info in, before;
	struct shmbus_group_msg m;
	uint64_t v = 42, got = 0;
	void *buf;

	shmbus_group_attr_init(&ga);
	c_grp = shmbus_group_join(ch, "g", "m", &ga);
	c_sub = shmbus_sub_open(ch, NULL);
	c_pub = shmbus_pub_open(ch, NULL);
	cr_assert(c_grp && c_sub && c_pub);
	cr_assert_eq(shmbus_claim(c_pub, sizeof(v), &buf), 0);
	memcpy(buf, &v, sizeof(v));
	cr_assert_eq(shmbus_channel_info(ch, &before), 0);
	cr_assert_eq(th_wait(th_spawn(close_copies, NULL)), 0);
	cr_assert_eq(shmbus_commit(c_pub), 0);
	cr_assert_eq(shmbus_read(c_sub, &got, sizeof(got), NULL),
		     (ssize_t)sizeof(got), "the parent's message was lost");
	cr_assert_eq(got, 42);
	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	cr_assert_eq(in.aborts, 0, "the child aborted the parent's claim");
	cr_assert_eq(in.producers_active, before.producers_active);
	cr_assert_eq(in.subscribers, before.subscribers,
		     "the child freed the parent's subscriber slot");
	cr_assert_eq(shmbus_group_read(c_grp, &got, sizeof(got), &m),
		     (ssize_t)sizeof(got));
	cr_assert_eq(shmbus_group_ack(c_grp, &m.lease), 0,
		     "the child gave the parent's membership back");
	shmbus_group_leave(c_grp);
	shmbus_sub_close(c_sub);
	shmbus_pub_close(c_pub);
	shmbus_channel_close(ch);
}

static int take_none(const struct shmbus_msg *m, void *arg)
{
	(void)m;
	(void)arg;
	return 0;
}

/* The child of the next test: uses what it inherited; returns the number
 * of the first call that was not refused with -EPERM, 0 if all were. */
static int use_copies(void *arg)
{
	struct iovec iov = { .iov_base = "child", .iov_len = 5 };
	struct shmbus_group_msg m = { 0 };
	uint8_t buf[64];
	void *p;
	int rc[] = {
		shmbus_publish(c_pub, "child", 5),
		shmbus_publishv(c_pub, &iov, 1),
		shmbus_publish_batch(c_pub, &iov, 1),
		shmbus_claim(c_pub, 8, &p),
		shmbus_commit(c_pub),	/* the parent's claim */
		shmbus_abort(c_pub),
		shmbus_pub_sync(c_pub, 0),
		(int)shmbus_read(c_sub, buf, sizeof(buf), NULL),
		shmbus_poll(c_sub, take_none, NULL, 0),
		shmbus_wait(c_sub, 1000000),
		shmbus_sub_set_visibility(c_sub, SHMBUS_SEE_COMMITTED),
		(int)shmbus_group_read(c_grp, buf, sizeof(buf), &m),
		shmbus_group_wait(c_grp, 1000000),
		shmbus_group_ack(c_grp, &m.lease),
		shmbus_group_maintain(c_grp),
	};

	(void)arg;
	for (size_t i = 0; i < sizeof(rc) / sizeof(rc[0]); i++)
		if (rc[i] != -EPERM)
			return (int)i + 1;
	close_copies(NULL);
	return 0;
}

/* A child's copy of a single producer wrote where the parent writes next
 * (its head is private), and its publish returned 0: one of the two
 * messages was lost, silently.  Its subscriber moved the parent's cursor,
 * its member took leases as the parent. */
static void copies_refused(enum shmbus_producers prod)
{
	shmbus_channel *ch = th_create(dir, 65536, 256, SHMBUS_BLOCK, prod);
	struct shmbus_group_attr ga;
	shmbus_sub *watch;
	struct shmbus_msg info;
	uint64_t v = 42, got = 0;
	void *buf;

	shmbus_group_attr_init(&ga);
	c_grp = shmbus_group_join(ch, "g", "m", &ga);
	c_sub = shmbus_sub_open(ch, NULL);
	watch = shmbus_sub_open(ch, NULL);
	c_pub = shmbus_pub_open(ch, NULL);
	cr_assert(c_grp && c_sub && watch && c_pub);
	cr_assert_eq(shmbus_publish(c_pub, &v, sizeof(v)), 0);
	cr_assert_eq(shmbus_claim(c_pub, sizeof(v), &buf), 0);
	v = 43;
	memcpy(buf, &v, sizeof(v));
	cr_assert_eq(th_wait(th_spawn(use_copies, NULL)), 0,
		     "a child's call was not refused");
	cr_assert_eq(shmbus_commit(c_pub), 0);
	v = 44;
	cr_assert_eq(shmbus_publish(c_pub, &v, sizeof(v)), 0);
	for (uint64_t want = 42; want <= 44; want++) {
		cr_assert_eq(shmbus_read(watch, &got, sizeof(got), &info),
			     (ssize_t)sizeof(got));
		cr_assert_eq(got, want, "message %llu", (unsigned long long)want);
		cr_assert_eq(info.seq, want - 42);
		cr_assert_eq(shmbus_read(c_sub, &got, sizeof(got), NULL),
			     (ssize_t)sizeof(got), "the parent's cursor moved");
		cr_assert_eq(got, want);
	}
	cr_assert_eq(shmbus_read(watch, &got, sizeof(got), NULL), -EAGAIN);
	{
		struct shmbus_group_msg m;

		cr_assert_eq(shmbus_group_read(c_grp, &got, sizeof(got), &m),
			     (ssize_t)sizeof(got));
		cr_assert_eq(got, 42, "the child took the parent's leases");
		cr_assert_eq(shmbus_group_ack(c_grp, &m.lease), 0);
	}
	shmbus_group_leave(c_grp);
	shmbus_sub_close(c_sub);
	shmbus_sub_close(watch);
	shmbus_pub_close(c_pub);
	shmbus_channel_close(ch);
}

Test(fork, a_childs_use_of_a_single_producers_copies_is_refused,
     .init = direct_setup, .fini = direct_teardown)
{
	copies_refused(SHMBUS_SINGLE_PRODUCER);
}

Test(fork, a_childs_use_of_a_multi_producers_copies_is_refused,
     .init = direct_setup, .fini = direct_teardown)
{
	copies_refused(SHMBUS_MULTI_PRODUCER);
}

/*
 * The next two fork while another thread of the parent is in the library.
 * The child then allocates (a join maps the group's file), which glibc's
 * malloc allows after fork(); the sanitizers' allocator (GCC 12's
 * libasan) does not: its child waits for ever on the allocator lock the
 * other thread held (make sanitize, the child in sb_group_map()'s calloc).
 * They run in make test, not under the sanitizers.
 */
#ifndef __SANITIZE_ADDRESS__
/* A thread that joins and leaves a group on ch until told to stop. */
static atomic_bool stop;

static void *join_leave(void *arg)
{
	shmbus_channel *ch = arg;
	struct shmbus_group_attr ga;

	shmbus_group_attr_init(&ga);
	while (!atomic_load(&stop)) {
		shmbus_group *g = shmbus_group_join(ch, "busy", "t", &ga);

		if (g)
			shmbus_group_leave(g);
	}
	return NULL;
}

static shmbus_channel *f_ch;

static int join_in_child(void *arg)
{
	struct shmbus_group_attr ga;
	shmbus_group *g;

	(void)arg;
	alarm(5);	/* a hang is a SIGALRM */
	shmbus_group_attr_init(&ga);
	g = shmbus_group_join(f_ch, "kid", "c", &ga);
	if (!g)
		return 1;
	shmbus_group_leave(g);
	return 0;
}

/* "A child after fork() joins for itself": with another thread of the
 * parent inside a join (holding the channel's lock of group mappings),
 * the child must not wait for that lock. */
Test(fork, a_child_joins_while_a_parent_thread_was_joining,
     .init = direct_setup, .fini = direct_teardown)
{
	pthread_t t;

	f_ch = th_create(dir, 65536, 256, SHMBUS_BLOCK,
			 SHMBUS_SINGLE_PRODUCER);
	atomic_store(&stop, false);
	cr_assert_eq(pthread_create(&t, NULL, join_leave, f_ch), 0);
	for (int i = 0; i < 60; i++) {
		int rc = th_wait(th_spawn(join_in_child, NULL));

		cr_assert_eq(rc, 0, "child %d: exit %d (128 + %d: SIGALRM, "
			     "it hung)", i, rc, SIGALRM);
	}
	atomic_store(&stop, true);
	pthread_join(t, NULL);
	shmbus_channel_close(f_ch);
}

/* Through the daemon: a thread of the parent asks and asks. */
static shmbus_bus *f_bus;

static void *ask(void *arg)
{
	struct shmbus_bus_channel c;

	(void)arg;
	while (!atomic_load(&stop))
		shmbus_bus_describe(f_bus, "blk", &c);
	return NULL;
}

static int use_copy_in_child(void *arg)
{
	struct shmbus_bus_channel c;
	int rc;

	(void)arg;
	alarm(5);	/* a hang is a SIGALRM */
	rc = shmbus_bus_describe(f_bus, "blk", &c);
	shmbus_channel_close(f_ch);
	shmbus_disconnect(f_bus);
	return rc == -ENOTCONN ? 0 : 1;
}

/* The child of a parent whose other thread was inside a request must not
 * wait for the handle's lock that thread held, in a request or a
 * channel's close: it is told -ENOTCONN, and may close what it inherited. */
Test(fork, a_childs_copy_of_a_busy_bus_handle_says_enotconn, .init = setup,
     .fini = teardown)
{
	pthread_t t;

	f_bus = shmbus_connect(d.sock);
	cr_assert(f_bus);
	f_ch = shmbus_bus_open(f_bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(f_ch);
	atomic_store(&stop, false);
	cr_assert_eq(pthread_create(&t, NULL, ask, NULL), 0);
	for (int i = 0; i < 40; i++) {
		int rc = th_wait(th_spawn(use_copy_in_child, NULL));

		cr_assert_eq(rc, 0, "child %d: exit %d (128 + %d: SIGALRM, "
			     "it hung)", i, rc, SIGALRM);
	}
	atomic_store(&stop, true);
	pthread_join(t, NULL);
	shmbus_channel_close(f_ch);
	shmbus_disconnect(f_bus);
}

#endif /* __SANITIZE_ADDRESS__ */

/* A channel the daemon handed over keeps working once its connection is
 * gone, but knows no directory: a group join on it must not make its
 * file at the root ("/.blk@g.group", as root), taking a slot the daemon
 * knows nothing of. */
Test(fork, a_disconnected_channel_makes_no_group_file, .init = setup,
     .fini = teardown)
{
	shmbus_bus *bus = shmbus_connect(d.sock);
	shmbus_channel *ch = bus ? shmbus_bus_open(bus, "blk",
						    SHMBUS_ROLE_SUBSCRIBE)
				 : NULL;
	struct shmbus_group_attr ga;
	struct stat st;

	cr_assert(ch);
	shmbus_disconnect(bus);
	shmbus_group_attr_init(&ga);
	cr_assert_null(shmbus_group_join(ch, "nodir", "m", &ga));
	cr_assert_eq(errno, ENOTCONN);
	cr_assert_neq(stat("/.blk@nodir.group", &st), 0,
		      "a group file at the root");
	cr_assert_eq(shmbus_group_delete(ch, "nodir"), -ENOTCONN);
	shmbus_channel_close(ch);
}

/* The child of the next test: waits until its parent closed its own
 * handles, opens its own (they take the parent's freed slots), closes the
 * copies it inherited, and says whether its own still hold their slots. */
static int p2c[2], c2p[2];

static int reopen_then_close_copies(void *arg)
{
	shmbus_channel *ch = arg;
	struct shmbus_channel_info in;
	shmbus_pub *pub;
	shmbus_sub *sub;
	char c;

	if (read(p2c[0], &c, 1) != 1)
		return 1;
	sub = shmbus_sub_open(ch, NULL);
	pub = shmbus_pub_open(ch, NULL);
	if (!sub || !pub)
		return 2;
	shmbus_sub_close(c_sub);
	shmbus_pub_close(c_pub);
	if (shmbus_channel_info(ch, &in) || in.subscribers != 1 ||
	    in.producers_active != 1)
		return 3;	/* its own were freed */
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	return 0;
}

/* Closing a copy checks who opened the handle, not who holds its slot
 * now: a slot the parent gave up and this child took for a handle of its
 * own stays the child's when it closes the copy. */
Test(fork, closing_a_copy_frees_no_slot_the_child_took_since,
     .init = direct_setup, .fini = direct_teardown)
{
	shmbus_channel *ch = th_create(dir, 65536, 256, SHMBUS_BLOCK,
				       SHMBUS_MULTI_PRODUCER);
	pid_t pid;
	char c = 1;

	cr_assert(pipe(p2c) == 0 && pipe(c2p) == 0);
	c_sub = shmbus_sub_open(ch, NULL);
	c_pub = shmbus_pub_open(ch, NULL);
	cr_assert(c_sub && c_pub);
	pid = th_spawn(reopen_then_close_copies, ch);
	shmbus_sub_close(c_sub);
	shmbus_pub_close(c_pub);
	cr_assert_eq(write(p2c[1], &c, 1), 1);
	cr_assert_eq(th_wait(pid), 0, "exit 3: the child's own slots were "
		     "freed by the close of its copies");
	shmbus_channel_close(ch);
}

/* shmbusd's kept cursors (the journal's, replication's) are opened with
 * no process of their own: whoever closes one releases its slot, or a
 * block channel's producers would stop at it for good. */
Test(fork, a_kept_cursor_is_released_by_its_close, .init = direct_setup,
     .fini = direct_teardown)
{
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	uint8_t msg[200] = { 0 };
	bool taken;
	int err;
	shmbus_sub *k = sb_sub_kept(ch, SHMBUS_SLOT_JOURNAL, th_head(ch),
				    &taken, &err);

	cr_assert(k && pub, "%d", err);
	shmbus_sub_close(k);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0,
			     "held at publish %d by a slot left in use", i);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
}

/* The sockets this process has open. */
static int count_sockets(void)
{
	char path[300], target[64];
	struct dirent *e;
	DIR *fds = opendir("/proc/self/fd");
	int n = 0;

	if (!fds)
		return -1;
	while ((e = readdir(fds))) {
		ssize_t k;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		k = readlink(path, target, sizeof(target) - 1);
		if (k > 0) {
			target[k] = 0;
			n += !strncmp(target, "socket:", 7);
		}
	}
	closedir(fds);
	return n;
}

static int sockets_in_child(void *arg)
{
	(void)arg;
	return count_sockets();
}

static void *connect_now(void *arg)
{
	*(shmbus_bus **)arg = shmbus_connect(d.sock);
	return NULL;
}

/* A child forked while another thread's shmbus_connect() waits for the
 * daemon's answer closes its copy of that socket, as it does a handle's:
 * the connection belongs to the parent alone (its hang-up is how the
 * daemon learns the parent died). */
Test(fork, a_child_forked_during_a_connect_keeps_no_copy_of_its_socket,
     .init = setup, .fini = teardown)
{
	shmbus_bus *b = NULL;
	int base = count_sockets(), in_child;
	pthread_t t;

	cr_assert_geq(base, 0);
	/* Stopped, the daemon accepts (the kernel does) but answers no
	 * HELLO: the connect waits with its socket open. */
	kill(d.pid, SIGSTOP);
	cr_assert_eq(pthread_create(&t, NULL, connect_now, &b), 0);
	for (int i = 0; i < 2000 && count_sockets() != base + 1; i++)
		usleep(1000);
	cr_assert_eq(count_sockets(), base + 1, "no connect under way");
	in_child = th_wait(th_spawn(sockets_in_child, NULL));
	kill(d.pid, SIGCONT);
	pthread_join(t, NULL);
	cr_assert(b, "connect: %s", strerror(errno));
	cr_assert_eq(in_child, base, "the child has %d sockets, the parent "
		     "had %d before it connected", in_child, base);
	shmbus_disconnect(b);
}
