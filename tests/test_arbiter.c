/* SPDX-License-Identifier: MIT */
/*
 * test_arbiter.c - the arbiter's client (daemon/etcd.c) and leader thread
 * (daemon/leader.c) when etcd's gateway misbehaves (docs/failover.md).
 *
 * The etcd_client suite speaks to the client alone through a gateway of
 * its own in this process, which answers each request with a canned text
 * or never.  The arbiter suite runs the failover tests' pair and etcd
 * (failover_fixture.h), one host reaching etcd through tests/etcd_liar.py
 * instead of its forwarder: a gateway that forwards to the real etcd but
 * answers late, or with a field changed, as its rules say.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "failover_fixture.h"
#include "repl_fixture.h"
#include "shmbus/layout.h"
#include "../daemon/etcd.h"

/* ------------------------------------------------ a gateway in-process */

/* Answers every request on a Unix socket with `answer` (a JSON text, as
 * a 200), or never (NULL: the connection is held open until the end). */
static struct {
	char path[108];
	int lfd;
	const char *answer;
	atomic_bool stop;
	pthread_t th;
} gw;

/* Reads one request (its headers, then Content-Length bytes). */
static void read_request(int fd)
{
	char buf[8192], *end;
	size_t n = 0, need = 0;

	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);

		if (r <= 0)
			return;
		n += (size_t)r;
		buf[n] = 0;
		end = strstr(buf, "\r\n\r\n");
		if (end && !need) {
			char *cl = strcasestr(buf, "Content-Length:");

			need = (size_t)(end + 4 - buf) +
			       (cl ? strtoul(cl + 15, NULL, 10) : 0);
		}
		if (need && n >= need)
			return;
		if (n == sizeof(buf) - 1)
			return;
	}
}

static void *gw_main(void *arg)
{
	int held[16], nheld = 0;

	(void)arg;
	while (!atomic_load(&gw.stop)) {
		struct pollfd p = { gw.lfd, POLLIN, 0 };
		char head[160];
		int fd;

		if (poll(&p, 1, 20) <= 0)
			continue;
		fd = accept4(gw.lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		read_request(fd);
		if (!gw.answer) {
			if (nheld < 16)
				held[nheld++] = fd;
			else
				close(fd);
			continue;
		}
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: "
			 "application/json\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n", strlen(gw.answer));
		if (send(fd, head, strlen(head), MSG_NOSIGNAL) < 0 ||
		    send(fd, gw.answer, strlen(gw.answer), MSG_NOSIGNAL) < 0) {
			/* the client gave up: nothing to do */
		}
		close(fd);
	}
	while (nheld)
		close(held[--nheld]);
	return NULL;
}

/* The gateway, answering `answer` (NULL: never); a client of it, whose
 * requests time out after 200 ms. */
static struct etcd *gw_start(const char *answer)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	char url[160], why[128];
	struct etcd *e;

	snprintf(gw.path, sizeof(gw.path), "/tmp/shmbus-test-gw-%d.sock",
		 getpid());
	unlink(gw.path);
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", gw.path);
	gw.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(gw.lfd >= 0);
	cr_assert_eq(bind(gw.lfd, (void *)&un, sizeof(un)), 0);
	cr_assert_eq(listen(gw.lfd, 16), 0);
	gw.answer = answer;
	atomic_store(&gw.stop, false);
	cr_assert_eq(pthread_create(&gw.th, NULL, gw_main, NULL), 0);
	snprintf(url, sizeof(url), "unix:%s", gw.path);
	e = etcd_open(url, 200, why, sizeof(why));
	cr_assert(e, "%s", why);
	return e;
}

static void gw_fini(void)
{
	if (!gw.path[0])
		return;
	atomic_store(&gw.stop, true);
	pthread_join(gw.th, NULL);
	close(gw.lfd);
	unlink(gw.path);
	gw.path[0] = 0;
}

TestSuite(etcd_client, .fini = gw_fini, .timeout = 30);

/* A gateway that takes the request and never answers: the request may
 * have been applied, which -ETIMEDOUT says (and the log's strerror()). */
Test(etcd_client, a_request_without_an_answer_times_out)
{
	struct etcd *e = gw_start(NULL);
	struct etcd_kv kv;

	cr_assert_eq(etcd_get(e, "/k", &kv), -ETIMEDOUT);
	etcd_close(e);
}

/* Nobody listening: the request was never made. */
Test(etcd_client, a_gateway_not_listening_refuses)
{
	struct etcd *e = gw_start("{}");
	struct etcd_kv kv;

	gw_fini();
	cr_assert_eq(etcd_get(e, "/k", &kv), -ECONNREFUSED);
	etcd_close(e);
}
