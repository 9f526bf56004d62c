/* SPDX-License-Identifier: MIT */
/*
 * test_daemon.c - shmbusd's life and its tools, with a real daemon in a
 * private directory (tests/daemon_fixture.h): channels opened, listed and
 * described through it, a second daemon refused, a corrupt channel set
 * aside at restart, SIGHUP, and shmbusctl's commands and exit codes.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"

#include "shmbus/layout.h"

static int count_rows(const struct shmbus_bus_channel *c, void *arg)
{
	(void)c;
	++*(int *)arg;
	return 0;
}

Test(daemon, publish_subscribe_list_describe, .init = setup,
     .fini = teardown)
{
	struct child c = { .name = "blk", .n = 20000, .id = 1 };
	struct shmbus_bus_channel bc;
	shmbus_bus *bus = shmbus_connect(d.sock);
	pid_t s, p;
	int rows = 0;

	cr_assert(bus);
	child_pipes(&c);
	cr_assert_eq(shmbus_bus_list(bus, count_rows, &rows), 4);
	cr_assert_eq(rows, 4);
	cr_assert_eq(shmbus_bus_describe(bus, "nope", &bc), -ENOENT);

	s = th_spawn(subscriber, &c);
	hear(c.ready[0]);
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.subscribers, 1);
	cr_assert_eq(bc.clients, 1);
	cr_assert_eq(bc.published, 0);
	cr_assert_eq(bc.capacity, 65536);
	cr_assert_eq(bc.max_msg, 1024);
	cr_assert_eq(bc.policy, SHMBUS_BLOCK);
	cr_assert_eq(bc.configured, 1);
	cr_assert_str_eq(bc.subscribe, "*");
	cr_assert_eq(bc.numa_node, -1);
	cr_assert_eq(shmbus_bus_describe(bus, "ow", &bc), 0);
	cr_assert_eq(bc.numa_node, 0, "the configured NUMA node");
	cr_assert_eq(bc.policy, SHMBUS_OVERWRITE);
	cr_assert_eq(bc.producers, SHMBUS_MULTI_PRODUCER);

	p = th_spawn(publisher, &c);
	cr_assert_eq(th_wait(p), 0);
	cr_assert_eq(th_wait(s), 0);
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.published, 20000);
	cr_assert_eq(bc.subscribers, 0);
	cr_assert_eq(bc.producers_active, 0);

	/* A channel outlives the connection it was opened on. */
	{
		shmbus_bus *b2 = shmbus_connect(d.sock);
		shmbus_channel *ch = shmbus_bus_open(b2, "blk",
						     SHMBUS_ROLE_PUBLISH);
		shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;

		cr_assert(pub);
		shmbus_disconnect(b2);
		cr_assert_eq(shmbus_publish(pub, "after", 5), 0);
		shmbus_pub_close(pub);
		shmbus_channel_close(ch);
	}
	/* Create, then delete, at run time. */
	{
		struct shmbus_channel_attr a;

		shmbus_channel_attr_init(&a);
		a.capacity = 8192;
		a.max_msg = 100;
		cr_assert_eq(shmbus_bus_create(bus, "dyn", &a), 0);
		cr_assert_eq(shmbus_bus_create(bus, "dyn", &a), -EEXIST);
		cr_assert_eq(shmbus_bus_describe(bus, "dyn", &bc), 0);
		cr_assert_eq(bc.capacity, 8192);
		cr_assert_eq(bc.configured, 0);
		a.capacity = 1000;
		cr_assert_eq(shmbus_bus_create(bus, "bad", &a), -EINVAL);
		cr_assert_eq(shmbus_bus_delete(bus, "dyn"), 0);
		cr_assert_eq(shmbus_bus_delete(bus, "dyn"), -ENOENT);
		cr_assert_eq(access("dyn", F_OK), -1);
	}
	shmbus_disconnect(bus);
}

Test(daemon, second_daemon_refuses, .init = setup, .fini = teardown)
{
	pid_t p = spawn_daemon();

	cr_assert_eq(th_wait(p), 1);
	cr_assert(log_has("already served by shmbusd pid"));
	cr_assert_eq(waitpid(d.pid, NULL, WNOHANG), 0);
}

Test(daemon, restart_sets_a_corrupt_channel_aside, .init = setup,
     .fini = teardown)
{
	char path[256];
	shmbus_bus *bus;
	shmbus_channel *ch;
	int fd;

	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	cr_assert(log_has("stopping"));
	/* Damage one field of "ow" (its capacity), restart. */
	snprintf(path, sizeof(path), "%s/ow", d.dir);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0, "the channel stays when the daemon stops");
	cr_assert_eq(pwrite(fd, "\x03\x00\x00\x00", 4,
			    offsetof(struct shmbus_hdr, capacity)), 4);
	close(fd);
	start_daemon();
	cr_assert(log_has("ow: invalid channel file"));
	cr_assert(log_has("set aside as"));
	cr_assert(log_has("blk: adopted"));
	/* A fresh "ow" was made, and the damaged one kept. */
	bus = shmbus_connect(d.sock);
	ch = shmbus_bus_open(bus, "ow", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", shmbus_strerror(errno));
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(daemon, sighup_adds_channels_refuses_incompatible_changes,
     .init = setup, .fini = teardown)
{
	struct shmbus_bus_channel bc;
	shmbus_bus *bus = shmbus_connect(d.sock);
	int tries;

	cr_assert(bus);
	write_conf("[channel blk]\ncapacity = 128K\n"
		   "[channel newone]\ncapacity = 8K\nsubscribe = *\n");
	kill(d.pid, SIGHUP);
	for (tries = 0; tries < 200; tries++) {
		if (shmbus_bus_describe(bus, "newone", &bc) == 0)
			break;
		usleep(10000);
	}
	cr_assert_eq(bc.capacity, 8192);
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.capacity, 65536, "an incompatible change applied");
	cr_assert(log_has("blk: refused an incompatible change"));
	cr_assert(log_has("configuration reloaded"));
	/* A broken file is refused, the daemon goes on. */
	write_conf("[channel x]\ncapacity = lots\n");
	kill(d.pid, SIGHUP);
	usleep(200000);
	cr_assert(log_has("reload refused"));
	cr_assert_eq(shmbus_bus_describe(bus, "newone", &bc), 0);
	shmbus_disconnect(bus);
}

/* ------------------------------------------------------------ shmbusctl */

/* Runs shmbusctl with `args` (through sh); returns its exit code and its
 * output (stdout and stderr) in out. */
static int ctl(char *out, size_t cap, const char *args)
{
	char cmd[1024];
	const char *bin = getenv("SHMBUSCTL");
	FILE *p;
	size_t n;
	int st;

	snprintf(cmd, sizeof(cmd), "%s %s 2>&1",
		 bin && *bin ? bin : "build/tools/shmbusctl", args);
	p = popen(cmd, "r");
	cr_assert(p);
	n = fread(out, 1, cap - 1, p);
	out[n] = 0;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(daemon, shmbusctl_commands_and_exit_codes, .init = setup,
     .fini = teardown)
{
	char out[8192], args[512];

	snprintf(args, sizeof(args), "-b %s list", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	cr_assert(strstr(out, "blk") && strstr(out, "tiny") &&
		  strstr(out, "overwrite"), "%s", out);

	snprintf(args, sizeof(args), "-b %s create made --capacity 16K "
		 "--policy overwrite --producers multi --mode 0640", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	snprintf(args, sizeof(args), "-b %s describe made", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	cr_assert(strstr(out, "16384 bytes") && strstr(out, "overwrite, multi")
		  && strstr(out, "0640") && strstr(out, "created at run time"),
		  "%s", out);

	/* Refusals: 1, with the reason. */
	snprintf(args, sizeof(args), "-b %s create made", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "%s", out);
	cr_assert(strstr(out, "create made:"), "%s", out);
	snprintf(args, sizeof(args), "-b %s create odd --capacity 5000",
		 d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "%s", out);
	cr_assert(strstr(out, "Invalid argument"), "%s", out);
	snprintf(args, sizeof(args), "-b %s describe nothing", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "%s", out);
	cr_assert(strstr(out, "No such file"), "%s", out);

	snprintf(args, sizeof(args), "-b %s delete made", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	snprintf(args, sizeof(args), "-b %s delete made", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "%s", out);

	/* Usage: 2.  No daemon: 3. */
	snprintf(args, sizeof(args), "-b %s frobnicate", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 2, "%s", out);
	snprintf(args, sizeof(args), "-b %s create x --policy sometimes",
		 d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 2, "%s", out);
	snprintf(args, sizeof(args), "-b %s/none.sock list", d.dir);
	cr_assert_eq(ctl(out, sizeof(out), args), 3, "%s", out);
	cr_assert(strstr(out, "cannot reach shmbusd"), "%s", out);
}
