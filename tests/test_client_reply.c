/* SPDX-License-Identifier: MIT */
/*
 * test_client_reply.c - the client library believes a daemon's reply only
 * as far as the protocol allows, and waits for it a bounded time in all.
 * A fake daemon (a forked process on a private socket) answers HELLO,
 * then answers OPEN badly: a status out of the errno range, a stream of
 * frames with the wrong id, or nothing while the caller is interrupted by
 * signals.  The call fails with EPROTO or ETIMEDOUT, within the library's
 * reply bound (5 s, REPLY_TIMEOUT_S in lib/client.c).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "helpers.h"
#include "shmbus/protocol.h"
#include "../lib/contract.h"

enum fake_mode { BAD_STATUS, WRONG_IDS, SILENT, OLDER, REFUSING, SLOW };

struct fake {
	enum fake_mode mode;
	uint16_t speaks;	/* OLDER: the newest version it speaks */
	char sock[100];
	int ready[2];
	int seen[2];		/* OLDER: the version and body length of a
				 * request other than HELLO */
};

static const char *dir;
static struct fake fk;

static void setup(void)
{
	dir = th_mkdir();
	snprintf(fk.sock, sizeof(fk.sock), "%s/fake.sock", dir);
	cr_assert(pipe(fk.ready) == 0);
}

static void teardown(void)
{
	th_rmdir(dir);
}

/* Serves one connection: HELLO properly, OPEN as the mode says. */
static int fake_daemon(void *arg)
{
	struct fake *f = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET, 0), fd;
	struct {
		struct shmbus_ctl_hdr h;
		uint8_t body[512];
	} req, rep;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->sock);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(lfd, 8))
		return 100;
	if (write(f->ready[1], "x", 1) != 1)
		return 101;
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		return 102;
	while (recv(fd, &req, sizeof(req), 0) >= (ssize_t)sizeof(req.h)) {
		memset(&rep, 0, sizeof(rep));
		rep.h = (struct shmbus_ctl_hdr){
			.magic = SHMBUS_CTL_MAGIC, .version = req.h.version,
			.type = (uint16_t)(req.h.type | SHMBUS_CTL_REPLY),
			.id = req.h.id,
		};
		if (f->mode == REFUSING) {
			/* A daemon at its connection limits, as it refuses
			 * (daemon/control.c, refuse()): in version 2, after
			 * our HELLO was sent. */
			rep.h.version = 2;
			rep.h.id = 0;
			rep.h.type = SHMBUS_CTL_HELLO | SHMBUS_CTL_REPLY;
			rep.h.status = -EUSERS;
			send(fd, &rep.h, sizeof(rep.h), 0);
			close(fd);
			return 0;
		}
		if (f->mode == OLDER && req.h.version > f->speaks) {
			/* A daemon of an older version, as it answers. */
			rep.h.version = f->speaks;
			rep.h.status = -EPROTONOSUPPORT;
			if (send(fd, &rep.h, sizeof(rep.h), 0) < 0)
				return 105;
			continue;
		}
		if (req.h.type == SHMBUS_CTL_HELLO) {
			rep.h.len = sizeof(struct shmbus_ctl_hello);
			if (send(fd, &rep, sizeof(rep.h) + rep.h.len, 0) < 0)
				return 103;
			continue;
		}
		switch (f->mode) {
		case BAD_STATUS:
			rep.h.status = INT_MIN;
			if (send(fd, &rep.h, sizeof(rep.h), 0) < 0)
				return 104;
			break;
		case WRONG_IDS:
			/* Until the client hangs up. */
			for (uint32_t k = 1;; k++) {
				rep.h.id = req.h.id + k;
				if (send(fd, &rep.h, sizeof(rep.h),
					 MSG_NOSIGNAL) < 0)
					return 0;
				usleep(100000);
			}
		case SLOW:	/* a refusal, after 300 ms */
			usleep(300000);
			rep.h.status = -ENOENT;
			if (send(fd, &rep.h, sizeof(rep.h), 0) < 0)
				return 108;
			break;
		case SILENT:
		case REFUSING:
			break;
		case OLDER: {
			uint32_t seen[2] = { req.h.version, req.h.len };

			if (write(f->seen[1], seen, sizeof(seen)) < 0)
				return 106;
			rep.h.status = -ENOENT;
			if (send(fd, &rep.h, sizeof(rep.h), 0) < 0)
				return 107;
			break;
		}
		}
	}
	return 0;
}

static void start_fake(enum fake_mode mode, pid_t *pid)
{
	char c;

	fk.mode = mode;
	*pid = th_spawn(fake_daemon, &fk);
	cr_assert_eq(read(fk.ready[0], &c, 1), 1, "fake daemon failed");
}

static void on_usr1(int sig)
{
	(void)sig;
}

/* Opens a channel through the fake; returns the errno and the time. */
static int open_through_fake(uint64_t *ns)
{
	shmbus_bus *b = shmbus_connect(fk.sock);
	shmbus_channel *ch;
	uint64_t t0;
	int err;

	cr_assert(b, "connect to the fake daemon: %s", strerror(errno));
	t0 = th_now_ns();
	ch = shmbus_bus_open(b, "chan", SHMBUS_ROLE_SUBSCRIBE);
	err = ch ? 0 : errno;
	*ns = th_now_ns() - t0;
	shmbus_disconnect(b);
	return err;
}

Test(client_reply, status_out_of_range_is_eproto, .init = setup,
     .fini = teardown, .timeout = 30)
{
	uint64_t ns;
	pid_t pid;

	start_fake(BAD_STATUS, &pid);
	cr_expect_eq(open_through_fake(&ns), EPROTO);
	kill(pid, SIGKILL);
	th_wait(pid);
}

Test(client_reply, wrong_id_frames_do_not_extend_the_wait, .init = setup,
     .fini = teardown, .timeout = 30)
{
	uint64_t ns;
	pid_t pid;
	int err;

	start_fake(WRONG_IDS, &pid);
	err = open_through_fake(&ns);
	cr_expect_eq(err, ETIMEDOUT, "got %s", strerror(err));
	cr_expect(ns >= 4500000000ull && ns < 6500000000ull,
		  "failed after %.2f s, not the 5 s bound", ns / 1e9);
	kill(pid, SIGKILL);
	th_wait(pid);
}

/* A thread of the caller's process that signals it every 100 ms. */
static void *signaller(void *arg)
{
	pthread_t *target = arg;

	for (;;) {
		usleep(100000);
		pthread_kill(*target, SIGUSR1);
	}
	return NULL;
}

Test(client_reply, signals_do_not_extend_the_wait, .init = setup,
     .fini = teardown, .timeout = 30)
{
	struct sigaction sa = { .sa_handler = on_usr1 };	/* no SA_RESTART */
	pthread_t self = pthread_self(), t;
	uint64_t ns;
	pid_t pid;
	int err;

	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	start_fake(SILENT, &pid);
	cr_assert_eq(pthread_create(&t, NULL, signaller, &self), 0);
	err = open_through_fake(&ns);
	pthread_cancel(t);
	pthread_join(t, NULL);
	cr_expect_eq(err, ETIMEDOUT, "got %s", strerror(err));
	cr_expect(ns >= 4500000000ull && ns < 6500000000ull,
		  "failed after %.2f s, not the 5 s bound", ns / 1e9);
	kill(pid, SIGKILL);
	th_wait(pid);
}

/* A daemon older than the library: the library says HELLO in each older
 * version until one is spoken, and speaks that one, GROUP's body of that
 * version included (without data_id before version 3). */
Test(client_reply, an_older_daemon_is_spoken_to_in_its_version,
     .init = setup, .fini = teardown)
{
	for (uint16_t v = 1; v < SHMBUS_CTL_VERSION; v++) {
		uint32_t seen[2];
		shmbus_bus *b;
		pid_t pid;

		cr_assert_eq(pipe(fk.seen), 0);
		fk.speaks = v;
		unlink(fk.sock);
		start_fake(OLDER, &pid);
		b = shmbus_connect(fk.sock);
		cr_assert(b, "version %u: %s", v, strerror(errno));
		cr_assert_eq(sb_bus_group_delete(b, "chan", 42, "g"), -ENOENT);
		cr_assert_eq(read(fk.seen[0], seen, sizeof(seen)),
			     (ssize_t)sizeof(seen));
		cr_assert_eq(seen[0], v);
		cr_assert_eq(seen[1], SHMBUS_CTL_GROUP_V2_LEN);
		shmbus_disconnect(b);
		cr_assert_eq(th_wait(pid), 0);
		close(fk.seen[0]);
		close(fk.seen[1]);
	}
}

/* A refusal read as the reply to our HELLO (the daemon refused once the
 * HELLO was on its way) is a refusal in whatever version it comes: the
 * connect fails at once with its errno, not as a daemon gone away. */
Test(client_reply, a_refusal_in_another_version_is_a_refusal,
     .init = setup, .fini = teardown)
{
	uint64_t t0 = th_now_ns();
	shmbus_bus *b;
	pid_t pid;

	start_fake(REFUSING, &pid);
	b = shmbus_connect(fk.sock);
	cr_assert_null(b);
	cr_assert_eq(errno, EUSERS, "%s", strerror(errno));
	cr_assert_lt(th_now_ns() - t0, 1000000000ull, "waited for a daemon");
	cr_assert_eq(th_wait(pid), 0);
}

/* A thread cancelled while it waits for the daemon's reply: the cancel
 * waits for the call to return, so the connection's lock is not left held
 * and the process's other threads go on using the handle. */
static void *open_cancelled(void *arg)
{
	shmbus_channel *ch = shmbus_bus_open(arg, "chan",
					     SHMBUS_ROLE_SUBSCRIBE);

	pthread_testcancel();
	return ch;
}

Test(client_reply, a_thread_cancelled_in_a_call_leaves_the_handle_usable,
     .init = setup, .fini = teardown, .timeout = 15)
{
	shmbus_bus *b;
	pthread_t t;
	pid_t pid;
	void *ret;

	start_fake(SLOW, &pid);
	b = shmbus_connect(fk.sock);
	cr_assert(b, "connect to the fake daemon: %s", strerror(errno));
	cr_assert_eq(pthread_create(&t, NULL, open_cancelled, b), 0);
	usleep(100000);		/* in its wait for the reply */
	cr_assert_eq(pthread_cancel(t), 0);
	cr_assert_eq(pthread_join(t, &ret), 0);
	cr_assert_eq(ret, PTHREAD_CANCELED);
	/* Hangs (the test's timeout) if the lock was left held. */
	cr_assert_null(shmbus_bus_open(b, "chan", SHMBUS_ROLE_SUBSCRIBE));
	cr_assert_eq(errno, ENOENT, "%s", strerror(errno));
	shmbus_disconnect(b);
	kill(pid, SIGKILL);
	th_wait(pid);
}
