/* SPDX-License-Identifier: MIT */
/*
 * test_notify.c - shmbusd's readiness protocol for systemd (Type=notify),
 * without systemd: the test plays the service manager.  It binds a Unix
 * datagram socket, starts shmbusd with NOTIFY_SOCKET naming it, and reads
 * what sd_notify() sends, with the sender's credentials (SO_PASSCRED), as
 * systemd does for NotifyAccess=main.
 *
 *   READY=1      only once the bus is served: the control socket answers
 *                a client that tries once, and the configured channels
 *                are there;
 *   RELOADING=1  at SIGHUP, then READY=1 once the new config is in force;
 *   STOPPING=1   at SIGTERM, before a clean exit.
 *
 * Every other test runs shmbusd without NOTIFY_SOCKET (sd_notify() then
 * does nothing).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon_fixture.h"

static int notify_fd = -1;

/* A private directory and config (as setup_with(), but the daemon is
 * started by the test), and the service manager's socket in it. */
static void notify_setup(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int one = 1;

	snprintf(d.dir, sizeof(d.dir), "%s", th_mkdir());
	snprintf(d.conf, sizeof(d.conf), "%s/bus.conf", d.dir);
	snprintf(d.sock, sizeof(d.sock), "%s/bus.sock", d.dir);
	snprintf(d.log, sizeof(d.log), "%s/daemon.log", d.dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", d.dir);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert(notify_fd >= 0);
	cr_assert(setsockopt(notify_fd, SOL_SOCKET, SO_PASSCRED, &one,
			     sizeof(one)) == 0);
	cr_assert(bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
		  "bind %s: %s", sa.sun_path, strerror(errno));
	cr_assert(setenv("NOTIFY_SOCKET", sa.sun_path, 1) == 0);
}

static void notify_teardown(void)
{
	unsetenv("NOTIFY_SOCKET");
	if (notify_fd >= 0)
		close(notify_fd);
	notify_fd = -1;
	teardown();
}

/* The next notification, within timeout_ms, NUL-terminated in buf.
 * Returns the sender's pid (from its credentials), or -1 on timeout. */
static pid_t next_notification(char *buf, size_t cap, int timeout_ms)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(struct ucred))];
	} c;
	struct iovec iov = { .iov_base = buf, .iov_len = cap - 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = c.b, .msg_controllen = sizeof(c.b) };
	struct pollfd p = { .fd = notify_fd, .events = POLLIN };
	struct cmsghdr *h;
	ssize_t n;

	buf[0] = 0;
	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	n = recvmsg(notify_fd, &m, 0);
	cr_assert(n >= 0, "recvmsg: %s", strerror(errno));
	buf[n] = 0;
	for (h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
		if (h->cmsg_level == SOL_SOCKET &&
		    h->cmsg_type == SCM_CREDENTIALS) {
			struct ucred u;

			memcpy(&u, CMSG_DATA(h), sizeof(u));
			return u.pid;
		}
	cr_assert_fail("a notification without credentials: %s", buf);
	return -1;
}

/* One line of a notification is exactly `line`. */
static bool has_line(const char *msg, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = msg; p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (!strncmp(p, line, n) && (p[n] == '\n' || p[n] == 0))
			return true;
	}
	return false;
}

Test(notify, ready_reloading_stopping, .init = notify_setup,
     .fini = notify_teardown, .timeout = 60)
{
	struct shmbus_bus_channel info;
	char msg[1024];
	shmbus_bus *bus;
	pid_t from;

	write_conf("[defaults]\nsubscribe = *\n"
		   "[channel first]\ncapacity = 64K\n");
	d.pid = spawn_daemon();

	/* The first thing it says is READY=1, and by then it serves: a
	 * client that tries only once gets in and finds the channel. */
	from = next_notification(msg, sizeof(msg), 10000);
	cr_assert(from > 0, "no notification within 10 s (see %s)", d.log);
	cr_assert_eq(from, d.pid, "sent by pid %d, not shmbusd's %d",
		     (int)from, (int)d.pid);
	cr_assert(has_line(msg, "READY=1"), "first notification: %s", msg);
	bus = shmbus_connect_timeout(d.sock, 0);
	cr_assert(bus, "READY=1 before the socket answers: %s",
		  shmbus_strerror(errno));
	cr_expect_eq(shmbus_bus_describe(bus, "first", &info), 0);
	cr_expect(strstr(msg, "STATUS=serving bus 'test': 1 channels"),
		  "status: %s", msg);

	/* SIGHUP: RELOADING=1, then READY=1 once the new config is in
	 * force (the channel it adds is there). */
	write_conf("[defaults]\nsubscribe = *\n"
		   "[channel first]\ncapacity = 64K\n"
		   "[channel second]\ncapacity = 64K\n");
	cr_assert_eq(kill(d.pid, SIGHUP), 0);
	cr_assert_eq(next_notification(msg, sizeof(msg), 10000), d.pid);
	cr_assert(has_line(msg, "RELOADING=1"), "after SIGHUP: %s", msg);
	cr_expect(strstr(msg, "MONOTONIC_USEC="), "%s", msg);
	cr_assert_eq(next_notification(msg, sizeof(msg), 10000), d.pid);
	cr_assert(has_line(msg, "READY=1"), "after the reload: %s", msg);
	cr_expect(strstr(msg, "2 channels"), "status: %s", msg);
	cr_expect_eq(shmbus_bus_describe(bus, "second", &info), 0);
	shmbus_disconnect(bus);

	/* SIGTERM: STOPPING=1, then a clean exit, and nothing more. */
	cr_assert_eq(kill(d.pid, SIGTERM), 0);
	cr_assert_eq(next_notification(msg, sizeof(msg), 10000), d.pid);
	cr_assert(has_line(msg, "STOPPING=1"), "after SIGTERM: %s", msg);
	cr_expect_eq(th_wait(d.pid), 0, "shmbusd did not stop cleanly");
	d.pid = 0;
	cr_expect_eq(next_notification(msg, sizeof(msg), 100), -1,
		     "after STOPPING=1: %s", msg);
}

/* Without NOTIFY_SOCKET, nothing is sent and it serves as ever (the other
 * tests all run so); with one that nobody listens on, it serves too:
 * systemd gone is not a reason to stop. */
Test(notify, a_dead_notify_socket_is_harmless, .init = notify_setup,
     .fini = notify_teardown, .timeout = 60)
{
	shmbus_bus *bus;
	char path[128];

	snprintf(path, sizeof(path), "%s/nobody", d.dir);
	cr_assert(setenv("NOTIFY_SOCKET", path, 1) == 0);
	write_conf("[channel first]\ncapacity = 64K\n");
	start_daemon();
	cr_assert_eq(kill(d.pid, SIGHUP), 0);
	usleep(100000);
	bus = shmbus_connect_timeout(d.sock, 0);
	cr_assert(bus, "after a reload: %s", shmbus_strerror(errno));
	shmbus_disconnect(bus);
}
