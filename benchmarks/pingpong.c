/* SPDX-License-Identifier: MIT */
/* pingpong.c - the local round trip on a running shmbusd's channels. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "pingpong.h"
#include "shmbus.h"

struct side {
	const char *sock, *ping, *pong;
	long n;
	struct hist *h;
	int who;		/* 0: P, 1: Q */
};

static int side(const struct side *j)
{
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	struct shmbus_sub_attr sa;
	shmbus_channel *out_ch, *in_ch;
	shmbus_bus *bus, *bus2;
	shmbus_pub *p;
	shmbus_sub *s;
	char msg[32] = "ping";
	double tps = bh_ns_per_tick();

	bh_pin(j->who);
	bus = shmbus_connect(j->sock);
	out_ch = bus ? shmbus_bus_open(bus, j->who ? j->pong : j->ping,
				       SHMBUS_ROLE_PUBLISH) : NULL;
	p = out_ch ? shmbus_pub_open(out_ch, &pa) : NULL;
	bus2 = shmbus_connect(j->sock);
	in_ch = bus2 ? shmbus_bus_open(bus2, j->who ? j->ping : j->pong,
				       SHMBUS_ROLE_SUBSCRIBE) : NULL;
	shmbus_sub_attr_init(&sa);
	s = in_ch ? shmbus_sub_open(in_ch, &sa) : NULL;
	if (!p || !s)
		return 2;
	if (j->who == 0)
		usleep(200000);	/* Q subscribes first */
	for (long i = -j->n / 10; i < j->n; i++) {
		uint64_t t = bh_ticks();
		ssize_t r;

		if (j->who == 0 && shmbus_publish(p, msg, sizeof(msg)))
			return 3;
		while ((r = shmbus_read(s, msg, sizeof(msg), NULL)) == -EAGAIN)
			;
		if (r < 0)
			return 4;
		if (j->who == 1 && shmbus_publish(p, msg, sizeof(msg)))
			return 5;
		if (j->who == 0 && i >= 0)
			hist_record(j->h, (uint64_t)((double)(bh_ticks() - t) *
						      tps));
	}
	return 0;
}

static int reap(pid_t pid)
{
	int st;

	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return 127;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

int bp_pingpong(const char *sock, const char *ping, const char *pong, long n,
		struct hist *h)
{
	struct side q = { sock, ping, pong, n, h, 1 };
	struct side p = { sock, ping, pong, n, h, 0 };
	pid_t a, b;
	int ra, rb;

	hist_init(h);
	b = bh_fork();
	if (b == 0)
		_exit(side(&q));
	a = bh_fork();
	if (a == 0)
		_exit(side(&p));
	ra = reap(a);
	rb = reap(b);
	return ra ? ra : rb;
}
