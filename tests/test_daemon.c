/* SPDX-License-Identifier: MIT */
/*
 * test_daemon.c - shmbusd's life and its tools, with a real daemon in a
 * private directory (tests/daemon_fixture.h): channels opened, listed and
 * described through it, a second daemon refused, a corrupt channel set
 * aside at restart, SIGHUP, and shmbusctl's commands and exit codes; the
 * daemon's reasons for a refusal (protocol version 2, and none in version
 * 1), the bus file that lets a bus name find the bus, and the tools'
 * common exit codes.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "../lib/contract.h"
#include "../lib/journal.h"
#include "shmbus/quarantine.h"
#include "shmbus/protocol.h"

#include "shmbus/layout.h"

static int count_rows(const struct shmbus_bus_channel *c, void *arg)
{
	(void)c;
	++*(int *)arg;
	return 0;
}

/* DESCRIBE's clients are those that opened the channel there now, not a
 * channel deleted since that had its name. */
Test(daemon, describe_counts_no_client_of_a_deleted_namesake, .init = setup,
     .fini = teardown)
{
	struct shmbus_channel_attr a;
	struct shmbus_bus_channel bc;
	shmbus_bus *bus = shmbus_connect(d.sock), *other;
	shmbus_channel *old, *now;

	cr_assert(bus);
	shmbus_channel_attr_init(&a);
	a.capacity = 16384;
	cr_assert_eq(shmbus_bus_create(bus, "again", &a), 0);
	old = open_role(&other, "again", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(old);
	cr_assert_eq(shmbus_bus_describe(bus, "again", &bc), 0);
	cr_assert_eq(bc.clients, 1);
	cr_assert_eq(shmbus_bus_delete(bus, "again"), 0);
	cr_assert_eq(shmbus_bus_create(bus, "again", &a), 0);
	cr_assert_eq(shmbus_bus_describe(bus, "again", &bc), 0);
	cr_assert_eq(bc.clients, 0, "a client of the deleted channel counted");
	now = shmbus_bus_open(bus, "again", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(now);
	cr_assert_eq(shmbus_bus_describe(bus, "again", &bc), 0);
	cr_assert_eq(bc.clients, 1);
	shmbus_channel_close(now);
	shmbus_channel_close(old);
	shmbus_disconnect(other);
	cr_assert_eq(shmbus_bus_delete(bus, "again"), 0);
	shmbus_disconnect(bus);
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
		cr_assert(strstr(shmbus_bus_strerror(bus, -EINVAL),
				 "capacity 1000 is not a power of two"));
		/* Refused here, not by the daemon: the reason is not the
		 * earlier request's. */
		cr_assert_eq(shmbus_bus_create(bus, "bad", NULL), -EINVAL);
		cr_assert_str_eq(shmbus_bus_strerror(bus, -EINVAL),
				 shmbus_strerror(-EINVAL));
		cr_assert_eq(shmbus_bus_create(bus, "bad", &a), -EINVAL);
		cr_assert_eq(shmbus_bus_describe(bus, "bad", NULL), -EINVAL);
		cr_assert_str_eq(shmbus_bus_strerror(bus, -EINVAL),
				 shmbus_strerror(-EINVAL));
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

/* shmbusd with `opt` (-t or -v) on d.conf and -S sock, its output in
 * d.log: its exit status. */
static int daemon_with_socket(const char *opt, const char *sock)
{
	pid_t p = fork();

	cr_assert(p >= 0);
	if (p == 0) {
		int fd = open(d.log, O_WRONLY | O_APPEND);

		dup2(fd, 1);
		dup2(fd, 2);
		execl(shmbusd_path(), "shmbusd", opt, "-c", d.conf, "-S", sock,
		      (char *)NULL);
		_exit(127);
	}
	return th_wait(p);
}

/*
 * A second daemon on the same config given another socket (-S) would
 * adopt the same channels and write the same journals: the bus's shm_dir
 * is locked too, and it is refused.  A relative -S is refused as the
 * config's socket key is.
 */
Test(daemon, a_second_daemon_with_another_socket_refuses, .init = setup,
     .fini = teardown)
{
	char other[128];

	snprintf(other, sizeof(other), "%s/other.sock", d.dir);
	cr_assert_eq(daemon_with_socket("-v", other), 1,
		     "the second daemon ran");
	cr_assert(log_has("is served by another shmbusd (its lock is held)"));
	cr_assert_eq(access(other, F_OK), -1, "it made its socket");
	cr_assert_eq(daemon_with_socket("-t", "rel.sock"), 2);
	cr_assert(log_has("-S rel.sock: not an absolute path"));
	cr_assert_eq(waitpid(d.pid, NULL, WNOHANG), 0);
}

/*
 * A daemon killed with kill -9 lets go of its lock only once its last
 * thread has exited, some moments after its main thread is a zombie.  A
 * daemon started at once waits for a holder that is gone (it once said
 * "already served" and exited); a live holder is still refused at once
 * (second_daemon_refuses).
 */
Test(daemon, a_restart_waits_for_a_gone_holder_to_let_go_of_the_lock,
     .init = setup, .fini = teardown)
{
	char path[160], line[32];
	int ready[2], st, n;
	pid_t gone, holder;

	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	gone = fork();
	if (gone == 0)
		_exit(0);
	cr_assert_eq(waitpid(gone, &st, 0), gone);
	snprintf(path, sizeof(path), "%s.lock", d.sock);
	n = snprintf(line, sizeof(line), "%d\n", (int)gone);
	cr_assert_eq(pipe(ready), 0);
	holder = fork();
	if (holder == 0) {
		/* The exiting daemon: holds the lock, which names a pid that
		 * is gone, for 300 ms. */
		int fd = open(path, O_RDWR | O_CLOEXEC);

		if (fd < 0 || flock(fd, LOCK_EX) < 0 || ftruncate(fd, 0) < 0 ||
		    pwrite(fd, line, (size_t)n, 0) != n ||
		    write(ready[1], "x", 1) != 1)
			_exit(1);
		usleep(300000);
		_exit(0);
	}
	close(ready[1]);
	cr_assert_eq(read(ready[0], line, 1), 1);
	close(ready[0]);
	start_daemon();
	cr_assert_eq(th_wait(holder), 0);
	cr_assert_not(log_has("already served"));
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

/* Sends SIGHUP and waits for the daemon to say it reloaded (the n-th
 * time since it started). */
static void reload(int n)
{
	char buf[1 << 16];

	kill(d.pid, SIGHUP);
	for (int i = 0; i < 300; i++) {
		FILE *f = fopen(d.log, "r");
		size_t len = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		int k = 0;

		if (f)
			fclose(f);
		buf[len] = 0;
		for (const char *p = buf;
		     (p = strstr(p, "configuration reloaded")); p++)
			k++;
		if (k >= n)
			return;
		usleep(10000);
	}
	cr_assert_fail("no reload %d in the log", n);
}

static const char *subscribe_rule(shmbus_bus *bus, const char *name)
{
	static struct shmbus_bus_channel bc;

	cr_assert_eq(shmbus_bus_describe(bus, name, &bc), 0, "%s", name);
	return bc.subscribe;
}

/*
 * A reload gives every channel the rules a restart would: a configured
 * channel whose geometry the new file changes (kept) gets its new rules
 * all the same; a channel made at run time, and one no longer in the
 * file, get the new [defaults]; a configured name deleted and made again
 * at run time gets its section's rules.
 */
Test(daemon, a_reload_gives_every_channel_the_rules_a_restart_would,
     .fini = teardown)
{
	struct shmbus_channel_attr a;
	shmbus_bus *bus;

	setup_with("[defaults]\nsubscribe = *\n"
		   "[channel geo]\ncapacity = 8K\nsubscribe = *\n"
		   "[channel gone]\ncapacity = 8K\n");
	bus = shmbus_connect(d.sock);
	cr_assert(bus);
	shmbus_channel_attr_init(&a);
	a.capacity = 8192;
	cr_assert_eq(shmbus_bus_create(bus, "rt", &a), 0);
	cr_assert_str_eq(subscribe_rule(bus, "rt"), "*");
	write_conf("[defaults]\nsubscribe = uid:0\n"
		   "[channel geo]\ncapacity = 16K\nsubscribe = uid:0\n");
	reload(1);
	cr_assert(log_has("geo: refused an incompatible change"));
	cr_assert_str_eq(subscribe_rule(bus, "geo"), "uid:0",
			 "a change of geometry kept the old rules");
	cr_assert_str_eq(subscribe_rule(bus, "gone"), "uid:0");
	cr_assert_str_eq(subscribe_rule(bus, "rt"), "uid:0");
	write_conf("[defaults]\nsubscribe = *\n"
		   "[channel geo]\ncapacity = 8K\nsubscribe = uid:0\n");
	reload(2);
	cr_assert_eq(shmbus_bus_delete(bus, "geo"), 0);
	cr_assert_eq(shmbus_bus_create(bus, "geo", &a), 0);
	cr_assert_str_eq(subscribe_rule(bus, "geo"), "uid:0",
			 "made again at run time, with the defaults");
	shmbus_disconnect(bus);
}

/* remove_on_exit and socket_mode take effect at a reload: the channels
 * stay at the stop that follows it, and the socket's mode changes. */
Test(daemon, a_reload_applies_remove_on_exit_and_socket_mode,
     .fini = teardown)
{
	struct stat st;
	char path[160];

	setup_with("remove_on_exit = yes\nsocket_mode = 0666\n"
		   "[channel kept]\ncapacity = 8K\n");
	cr_assert_eq(stat(d.sock, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0666);
	write_conf("remove_on_exit = no\nsocket_mode = 0600\n"
		   "[channel kept]\ncapacity = 8K\n");
	reload(1);
	cr_assert_eq(stat(d.sock, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600, "socket mode %o",
		     st.st_mode & 0777);
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	snprintf(path, sizeof(path), "%s/kept", d.dir);
	cr_assert_eq(access(path, F_OK), 0, "the channel was removed at the "
		     "stop after remove_on_exit was turned off");
}

/*
 * A SIGHUP that comes while the daemon starts (here: sent before it
 * runs, held pending across its exec) is a reload once it serves, not
 * its end; and the reload keeps -v over the file's log_level.
 */
Test(daemon, a_sighup_at_start_is_a_reload_that_keeps_v, .fini = teardown)
{
	sigset_t hup;
	FILE *f;
	int n;

	snprintf(d.dir, sizeof(d.dir), "%s", th_mkdir());
	snprintf(d.conf, sizeof(d.conf), "%s/bus.conf", d.dir);
	snprintf(d.sock, sizeof(d.sock), "%s/bus.sock", d.dir);
	snprintf(d.log, sizeof(d.log), "%s/daemon.log", d.dir);
	f = fopen(d.conf, "w");
	cr_assert(f);
	fprintf(f, "[bus]\nname = test\nshm_dir = %s\nsocket = %s\n"
		"log_level = notice\n[channel c]\ncapacity = 8K\n", d.dir,
		d.sock);
	fclose(f);
	d.pid = fork();
	cr_assert(d.pid >= 0);
	if (d.pid == 0) {
		int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 1);
		dup2(fd, 2);
		sigemptyset(&hup);
		sigaddset(&hup, SIGHUP);
		sigprocmask(SIG_BLOCK, &hup, NULL);
		raise(SIGHUP);		/* pending, through the exec */
		execl(shmbusd_path(), "shmbusd", "-c", d.conf, "-v",
		      (char *)NULL);
		_exit(127);
	}
	for (n = 0; n < 500 && !log_has("configuration reloaded"); n++) {
		cr_assert(waitpid(d.pid, NULL, WNOHANG) == 0,
			  "shmbusd ended (see %s)", d.log);
		usleep(10000);
	}
	cr_assert(log_has("configuration reloaded"), "the SIGHUP was lost");
	shmbus_disconnect(shmbus_connect(d.sock));
	for (n = 0; n < 100 && !log_has("connected"); n++)
		usleep(10000);
	cr_assert(log_has("connected"), "debug lines stopped at the reload "
		  "(-v lost)");
}

static void touch(const char *name)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", d.dir, name);
	f = fopen(path, "w");
	cr_assert(f, "%s", path);
	fputs("left behind", f);
	fclose(f);
}

static bool present(const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", d.dir, name);
	return access(path, F_OK) == 0;
}

/*
 * Data files that no control file names (a create or a delete that a
 * kill -9 cut short) are removed at start; a data file of a channel set
 * aside as corrupt stays with it.
 */
Test(daemon, data_files_no_channel_names_are_removed_at_start,
     .fini = teardown)
{
	setup_with("[channel blk]\ncapacity = 8K\n");
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	touch(".ghost.0123456789abcdef.data");
	touch(".blk.00000000000000aa.data");
	touch(".corrupt.old.1700000000");
	touch(".old.00000000000000bb.data");
	touch(".notes.data");
	start_daemon();
	cr_assert_not(present(".ghost.0123456789abcdef.data"));
	cr_assert_not(present(".blk.00000000000000aa.data"));
	cr_assert(log_has("a data file no channel names"));
	cr_assert(present(".old.00000000000000bb.data"), "a set-aside "
		  "channel's data file was removed");
	cr_assert(present(".notes.data"));
	cr_assert(present("blk"));
}

static unsigned count_files(void)
{
	DIR *dir = opendir(d.dir);
	struct dirent *e;
	unsigned n = 0;

	cr_assert(dir);
	while ((e = readdir(dir)))
		n += e->d_type == DT_REG;
	closedir(dir);
	return n;
}

/*
 * A daemon killed while it makes a channel or a group leaves the file it
 * was building under its temporary name (".NAME.PID.N.tmp",
 * ".CHANNEL@GROUP.group.PID.tmp"); a kill loop must not pile them up in
 * shm_dir.  The next daemon removes those whose maker is gone and keeps
 * those of a live maker, a locked one (its maker builds it) and names
 * that are not theirs.
 */
Test(daemon, temporary_files_of_dead_makers_are_removed_at_start,
     .fini = teardown)
{
	char name[128], live[128], locked[128], path[512];
	unsigned before;
	pid_t dead = fork();
	int fd;

	cr_assert(dead >= 0);
	if (dead == 0)
		_exit(0);
	cr_assert_eq(th_wait(dead), 0);
	setup_with("[channel blk]\ncapacity = 8K\n"
		   "consumer_groups = g mode=shared\n");
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	before = count_files();
	/* Three kill cycles' worth of leftovers, then the keepers. */
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), ".dyn%d.%d.%d.tmp", i, (int)dead,
			 i);
		touch(name);
		snprintf(name, sizeof(name), ".blk@g%d.group.%d.tmp", i,
			 (int)dead);
		touch(name);
	}
	snprintf(name, sizeof(name), ".a.b.%d.1.tmp", (int)dead);
	touch(name);	/* a channel named "a.b" */
	snprintf(live, sizeof(live), ".live.%d.0.tmp", (int)getpid());
	touch(live);
	snprintf(locked, sizeof(locked), ".blk@gl.group.%d.tmp", (int)dead);
	touch(locked);
	snprintf(path, sizeof(path), "%s/%s", d.dir, locked);
	fd = open(path, O_RDONLY);
	cr_assert(fd >= 0 && flock(fd, LOCK_EX) == 0);
	touch(".notes.tmp");
	touch(".x.y.tmp");
	cr_assert_eq(count_files(), before + 11);
	start_daemon();
	cr_assert_eq(count_files(), before + 4, "%u files left of 11",
		     count_files() - before);
	cr_assert(present(live), "a live maker's file was removed");
	cr_assert(present(locked), "a locked file was removed");
	cr_assert(present(".notes.tmp") && present(".x.y.tmp"));
	cr_assert(log_has("the temporary file of a create cut short"));
	close(fd);
	cr_assert(present("blk"));
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

	snprintf(args, sizeof(args), "-b %s create made --capacity 16KiB "
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
	cr_assert(strstr(out, "create odd: capacity 5000 is not a power of "
			 "two from 4 KiB to 16 GiB"), "%s", out);
	snprintf(args, sizeof(args), "-b %s describe nothing", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "%s", out);
	cr_assert(strstr(out, "no channel 'nothing' on bus 'test'"), "%s", out);

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

/* shmbusctl prints the daemon's reason, never only "Invalid argument",
 * and never changes an explicit value: the daemon refuses it and says
 * what it allows.  The default max_msg follows the capacity. */
Test(daemon, shmbusctl_prints_the_daemons_reason, .init = setup,
     .fini = teardown)
{
	static const struct {
		const char *args;
		const char *reason;
	} refused[] = {
		{ "create x --capacity 32G",
		  "capacity 34359738368 (32 GiB) is more than 16 GiB" },
		{ "create x --numa 7", "NUMA node 7 does not exist on this "
		  "machine (nodes 0.." },
		{ "create x --max-msg 1M", "max_msg 1048576 is too large for "
		  "capacity 1048576 (1 MiB): at most 524256 (capacity/2 - 32)" },
		{ "create x --capacity 64K --max-msg 32737",
		  "at most 32736" },
		{ "create blk", "channel 'blk' exists" },
		{ "delete nothing", "no channel 'nothing' on bus 'test'" },
	};
	char out[8192], args[512];

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		snprintf(args, sizeof(args), "-b %s %s", d.sock,
			 refused[i].args);
		cr_expect_eq(ctl(out, sizeof(out), args), 1, "%s: %s",
			     refused[i].args, out);
		cr_expect(strstr(out, refused[i].reason), "%s: %s",
			  refused[i].args, out);
	}
	snprintf(args, sizeof(args), "-b %s describe x", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "a refused create made "
		     "a channel: %s", out);
	/* Small, no --max-msg: the default for the capacity. */
	snprintf(args, sizeof(args), "-b %s create small --capacity 8K",
		 d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	cr_assert(strstr(out, "8192 bytes, max message 4064"), "%s", out);
	/* The exact limit is allowed. */
	snprintf(args, sizeof(args), "-b %s create edge --capacity 64K "
		 "--max-msg 32736", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	cr_assert(strstr(out, "max message 32736"), "%s", out);
}

/* The reason travels from version 2 on: a version 1 client (an older
 * library) gets the bare status it always got. */
Test(daemon, reasons_from_protocol_version_2_on, .init = setup,
     .fini = teardown)
{
	struct {
		struct shmbus_ctl_hdr h;
		struct shmbus_ctl_create c;
	} req = { .h = { .magic = SHMBUS_CTL_MAGIC, .type = SHMBUS_CTL_CREATE,
			 .id = 7, .len = sizeof(struct shmbus_ctl_create) },
		  .c = { .name = "odd", .capacity = 5000, .numa_node = -1 } };
	uint8_t rep[512];
	struct shmbus_ctl_hdr h;
	int fd = raw_connect();
	ssize_t n;

	for (uint16_t v = 1; v <= 4; v++) {
		req.h.version = v;
		cr_assert_eq(send(fd, &req, sizeof(req), 0),
			     (ssize_t)sizeof(req));
		n = recv(fd, rep, sizeof(rep), 0);
		cr_assert_geq(n, (ssize_t)sizeof(h));
		memcpy(&h, rep, sizeof(h));
		cr_assert_eq(h.len, (size_t)n - sizeof(h));
		if (v == 1) {
			cr_assert_eq(h.version, 1);
			cr_assert_eq(h.status, -EINVAL);
			cr_assert_eq(h.len, 0, "a reason to a version 1 client");
		} else if (v <= 3) {
			cr_assert_eq(h.version, v);
			cr_assert_eq(h.status, -EINVAL);
			cr_assert_gt(h.len, 1);
			cr_assert_eq(rep[n - 1], 0);
			cr_assert(strstr((char *)rep + sizeof(h),
					 "capacity 5000 is not a power of two"),
				  "%s", (char *)rep + sizeof(h));
		} else {
			/* Unknown: its own version, and what it speaks. */
			cr_assert_eq(h.version, SHMBUS_CTL_VERSION);
			cr_assert_eq(h.status, -EPROTONOSUPPORT);
			cr_assert(strstr((char *)rep + sizeof(h),
					 "speaks 1 to 3"));
		}
	}
	close(fd);
}

/* The daemon writes BUS.bus beside its socket: with it, the bus's name
 * finds the socket (here bus.sock, not test.sock) and the channels, for
 * shmbusctl, busstat and shmbus_connect() alike; busstat skips the
 * directory's other files (the config, the log, the lock). */
Test(daemon, a_bus_name_finds_the_bus, .init = setup, .fini = teardown)
{
	const char *bs = getenv("BUSSTAT");
	char out[8192], path[256], cmd[512];
	struct stat st;
	shmbus_bus *b;
	FILE *p;
	int st_code;

	snprintf(path, sizeof(path), "%s/test.bus", d.dir);
	cr_assert_eq(stat(path, &st), 0, "no bus file %s", path);
	cr_assert_eq(st.st_mode & 0777, 0644);
	setenv("SHMBUS_RUN_DIR", d.dir, 1);
	cr_assert_eq(ctl(out, sizeof(out), "-b test list"), 0, "%s", out);
	cr_assert(strstr(out, "blk") && strstr(out, "tiny"), "%s", out);
	snprintf(cmd, sizeof(cmd), "%s test 2>&1",
		 bs && *bs ? bs : "build/tools/busstat");
	p = popen(cmd, "r");
	cr_assert(p);
	out[fread(out, 1, sizeof(out) - 1, p)] = 0;
	st_code = pclose(p);
	cr_assert(WIFEXITED(st_code) && WEXITSTATUS(st_code) == 0, "%s", out);
	cr_assert(strstr(out, "blk ") && strstr(out, "ow ") &&
		  !strstr(out, "bus.conf") && !strstr(out, "daemon.log"),
		  "%s", out);
	b = shmbus_connect("test");
	cr_assert(b, "%s", shmbus_strerror(errno));
	shmbus_disconnect(b);
	unsetenv("SHMBUS_RUN_DIR");
}

static int run_tool(const char *tool, const char *env, const char *args,
		    char *out, size_t cap)
{
	char cmd[1024];
	const char *bin = getenv(env);
	FILE *p;
	int st;

	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", bin && *bin ? bin : tool,
		 args);
	p = popen(cmd, "r");
	cr_assert(p);
	out[fread(out, 1, cap - 1, p)] = 0;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* One convention: 0 done, 1 a failure, 2 usage; --version and --help on
 * each tool. */
Test(daemon, the_tools_exit_codes_and_version)
{
	char out[8192];

	cr_assert_eq(run_tool("build/shmbusd", "SHMBUSD", "--version", out,
			      sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "shmbusd (shmbus) 0."), "%s", out);
	cr_assert_eq(run_tool("build/shmbusd", "SHMBUSD", "--help", out,
			      sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "usage: shmbusd"), "%s", out);
	cr_assert_eq(run_tool("build/shmbusd", "SHMBUSD", "--frobnicate",
			      out, sizeof(out)), 2, "%s", out);
	cr_assert_eq(run_tool("build/shmbusd", "SHMBUSD", "extra", out,
			      sizeof(out)), 2, "%s", out);
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL",
			      "--version", out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "shmbusctl (shmbus) 0."), "%s", out);
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL", "-b", out,
			      sizeof(out)), 2, "%s", out);
	/* After -b as without it. */
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL",
			      "-b nosuchbus --version", out, sizeof(out)), 0,
		     "%s", out);
	cr_assert(strstr(out, "shmbusctl (shmbus) 0."), "%s", out);
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL",
			      "--bus nosuchbus --help", out, sizeof(out)), 0,
		     "%s", out);
	cr_assert(strstr(out, "usage: shmbusctl"), "%s", out);
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL", "", out,
			      sizeof(out)), 2, "%s", out);
	/* A bus name no daemon can serve is a usage error, as in busstat. */
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL",
			      "-b .hidden list", out, sizeof(out)), 2, "%s",
		     out);
	cr_assert(strstr(out, "'.hidden' is not a bus name"), "%s", out);
	/* create's options are checked before the daemon is looked for. */
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL",
			      "-b nosuchbus create c --policy sideways", out,
			      sizeof(out)), 2, "%s", out);
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL",
			      "-b nosuchbus create c --numa 4294967296", out,
			      sizeof(out)), 2, "%s", out);
	/* A max_msg past 32 bits is refused as the daemon refuses one the
	 * capacity cannot carry: with the limit. */
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL",
			      "-b nosuchbus create c --max-msg 4G", out,
			      sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "create c: max_msg 4294967296 is too large for "
			 "capacity 1048576: at most 524256 (capacity/2 - 32)"),
		  "%s", out);
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL",
			      "-b nosuchbus create c --max-msg 8G --capacity "
			      "5000", out, sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "create c: capacity 5000 is not a power of two"),
		  "%s", out);
	/* A FIFO named as a quarantine file is refused, not waited on. */
	cr_assert_eq(system("rm -f /tmp/shmbus-test-fifo && "
			    "mkfifo /tmp/shmbus-test-fifo"), 0);
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL",
			      "quarantine /tmp/shmbus-test-fifo", out,
			      sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "not a regular file"), "%s", out);
	unlink("/tmp/shmbus-test-fifo");
	cr_assert_eq(run_tool("build/tools/busstat", "BUSSTAT", "--version",
			      out, sizeof(out)), 0, "%s", out);
	cr_assert_eq(run_tool("build/tools/busstat", "BUSSTAT", "--bogus",
			      out, sizeof(out)), 2, "%s", out);
	cr_assert_eq(run_tool("build/tools/busstat", "BUSSTAT",
			      "-d /nonexistent", out, sizeof(out)), 1, "%s",
		     out);
}

/* Whitespace runs in s as one space, in place. */
static char *squeeze(char *s)
{
	char *o = s;

	for (const char *p = s; *p; p++)
		if (!isspace((unsigned char)*p))
			*o++ = *p;
		else if (o > s && o[-1] != ' ')
			*o++ = ' ';
	*o = 0;
	return s;
}

/* docs/shmbusd.md's shmbusctl section gives every command of
 * `shmbusctl --help`, as it gives them, and every exit code. */
Test(daemon, shmbusd_md_has_shmbusctls_usage)
{
	static char out[8192], doc[1 << 18];
	char *cmd, *next, *end;
	FILE *f = fopen("docs/shmbusd.md", "r");

	cr_assert(f, "docs/shmbusd.md: run from the source tree");
	doc[fread(doc, 1, sizeof(doc) - 1, f)] = 0;
	fclose(f);
	squeeze(doc);
	cr_assert_eq(run_tool("build/tools/shmbusctl", "SHMBUSCTL", "--help",
			      out, sizeof(out)), 0, "%s", out);
	end = strstr(out, "\nSIZE:");
	cr_assert(end && !strncmp(out, "usage: ", 7), "%s", out);
	*end = 0;
	squeeze(out + 7);
	/* Each command: from one "shmbusctl " to the next. */
	for (cmd = out + 7; cmd; cmd = next) {
		next = strstr(cmd + 1, " shmbusctl ");
		if (next)
			*next++ = 0;
		cr_expect(strstr(doc, cmd), "docs/shmbusd.md lacks '%s'", cmd);
	}
	cr_expect(strstr(doc, "3 no daemon, 4 "), "docs/shmbusd.md: exit 4");
}

/* A daemon started with -d and -S: a reload of an unchanged file warns of
 * nothing (the overrides are not changes); a changed name is named. */
Test(daemon, reload_with_overrides_warns_only_of_real_changes)
{
	char conf[128], log[128], shm[128], sock[128], buf[8192];
	const char *bin = getenv("SHMBUSD");
	const char *dir = th_mkdir();
	pid_t pid;
	FILE *f;
	size_t n;

	snprintf(conf, sizeof(conf), "%s/r.conf", dir);
	snprintf(log, sizeof(log), "%s/r.log", dir);
	snprintf(shm, sizeof(shm), "%s/shm", dir);
	snprintf(sock, sizeof(sock), "%s/r.sock", dir);
	f = fopen(conf, "w");
	cr_assert(f);
	fputs("[bus]\nname = reload\n[channel a]\ncapacity = 4K\n", f);
	fclose(f);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		dup2(fd, 2);
		execl(bin && *bin ? bin : "build/shmbusd", "shmbusd", "-c",
		      conf, "-d", shm, "-S", sock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500 && access(sock, F_OK); i++)
		usleep(10000);
	kill(pid, SIGHUP);
	usleep(300000);
	f = fopen(conf, "w");
	fputs("[bus]\nname = renamed\n[channel a]\ncapacity = 4K\n", f);
	fclose(f);
	kill(pid, SIGHUP);
	usleep(300000);
	kill(pid, SIGTERM);
	cr_assert_eq(th_wait(pid), 0);
	f = fopen(log, "r");
	cr_assert(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	cr_assert(strstr(buf, "configuration reloaded"), "%s", buf);
	cr_assert(!strstr(buf, "shm_dir changed") &&
		  !strstr(buf, "socket changed"), "%s", buf);
	cr_assert(strstr(buf, "name changed ('reload' to 'renamed')"), "%s",
		  buf);
	th_rmdir(dir);
}

/*
 * A client out of file descriptors opens a channel: the descriptors the
 * daemon passes cannot be installed, and the open says so (EMFILE), not
 * that the channel is damaged.  With room again, the same open works.
 */
static int open_without_fds(void *arg)
{
	shmbus_bus *bus = shmbus_connect(d.sock);
	shmbus_channel *ch;
	struct rlimit rl;
	int free_fd;

	(void)arg;
	if (!bus || getrlimit(RLIMIT_NOFILE, &rl))
		return 2;
	free_fd = dup(0);	/* the lowest free descriptor */
	if (free_fd < 0)
		return 3;
	close(free_fd);
	rl.rlim_cur = (rlim_t)free_fd;	/* none free from here on */
	if (setrlimit(RLIMIT_NOFILE, &rl))
		return 4;
	ch = shmbus_bus_open(bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	if (ch || errno != EMFILE)
		return 10 + (ch ? 0 : errno);
	rl.rlim_cur = (rlim_t)free_fd + 8;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		return 5;
	ch = shmbus_bus_open(bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	if (!ch)
		return 6;
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

Test(daemon, a_client_out_of_descriptors_is_told_so, .init = setup,
     .fini = teardown)
{
	int rc = th_wait(th_spawn(open_without_fds, NULL));

	cr_assert_eq(rc, 0, "exit %d (10 + errno: the open's error)", rc);
}

/* The highest descriptor the daemon holds. */
static int daemon_top_fd(void)
{
	char path[64];
	struct dirent *e;
	DIR *dp;
	int top = -1;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d.pid);
	dp = opendir(path);
	cr_assert(dp);
	while ((e = readdir(dp)))
		if (e->d_name[0] != '.' && atoi(e->d_name) > top)
			top = atoi(e->d_name);
	closedir(dp);
	return top;
}

/* A create the daemon makes but cannot serve (out of descriptors for
 * the channel's entry, with the files made) removes them, or the name
 * would be refused as a foreign file's until a restart adopted it.
 * The daemon's limit is lowered to a few descriptors past its highest,
 * one more each time, so that some attempt fails between the two. */
Test(daemon, a_create_that_cannot_be_served_leaves_no_file, .init = setup,
     .fini = teardown)
{
	shmbus_bus *bus = shmbus_connect(d.sock);
	struct shmbus_channel_attr a;
	struct rlimit keep, rl;
	char name[16], path[300];
	int served = 0, refused = 0;

	cr_assert(bus);
	shmbus_channel_attr_init(&a);
	a.capacity = 4096;
	cr_assert_eq(prlimit(d.pid, RLIMIT_NOFILE, NULL, &keep), 0);
	for (int k = 0; k < 8; k++) {
		int rc;

		snprintf(name, sizeof(name), "nc%d", k);
		rl = keep;
		rl.rlim_cur = (rlim_t)daemon_top_fd() + 1 + (rlim_t)k;
		cr_assert_eq(prlimit(d.pid, RLIMIT_NOFILE, &rl, NULL), 0);
		rc = shmbus_bus_create(bus, name, &a);
		cr_assert_eq(prlimit(d.pid, RLIMIT_NOFILE, &keep, NULL), 0);
		snprintf(path, sizeof(path), "%s/%s", d.dir, name);
		if (rc == 0) {
			served++;
			cr_assert_eq(shmbus_bus_delete(bus, name), 0);
			continue;
		}
		refused++;
		cr_assert(access(path, F_OK) != 0, "create %s refused (%s), "
			  "its file left", name, strerror(-rc));
		/* And the name is free: made at once with descriptors. */
		cr_assert_eq(shmbus_bus_create(bus, name, &a), 0);
		cr_assert_eq(shmbus_bus_delete(bus, name), 0);
	}
	cr_assert(served && refused, "%d served, %d refused", served,
		  refused);
	shmbus_disconnect(bus);
}

/* max_channels bounds what a reload makes too: with channels made at run
 * time filling the bus, a channel the new config adds is not made (the
 * descriptors set aside at start follow the limit). */
Test(daemon, a_reload_makes_no_channel_past_max_channels, .fini = teardown)
{
	const char *two = "max_channels = 3\n[channel a]\ncapacity = 4K\n"
			  "[channel b]\ncapacity = 4K\n";
	char body[256];
	struct shmbus_channel_attr a;
	shmbus_bus *bus;
	shmbus_channel *ch;

	setup_with(two);
	bus = shmbus_connect(d.sock);
	cr_assert(bus);
	shmbus_channel_attr_init(&a);
	a.capacity = 4096;
	cr_assert_eq(shmbus_bus_create(bus, "rt", &a), 0);
	snprintf(body, sizeof(body), "%s[channel c]\ncapacity = 4K\n", two);
	write_conf(body);
	kill(d.pid, SIGHUP);
	for (int i = 0; i < 300 && !log_has("c: not created: the bus has "
					    "max_channels (3)"); i++)
		usleep(10000);
	cr_assert(log_has("c: not created: the bus has max_channels (3)"));
	ch = shmbus_bus_open(bus, "c", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert_null(ch, "c was made past max_channels");
	cr_assert_eq(errno, ENOENT);
	/* A place made: the next reload makes it. */
	cr_assert_eq(shmbus_bus_delete(bus, "rt"), 0);
	kill(d.pid, SIGHUP);
	for (int i = 0; i < 300 && !ch; i++) {
		usleep(10000);
		ch = shmbus_bus_open(bus, "c", SHMBUS_ROLE_SUBSCRIBE);
	}
	cr_assert(ch, "c not made once there was room");
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/*
 * A journal segment's and a quarantine file's header name their channel;
 * a file crafted (or damaged) with a name that no channel can have, with
 * control characters in it, and valid checksums: shmbusctl journal and
 * quarantine must not write those bytes to the operator's terminal (as
 * busstat never does, and docs/protocol.md asks of every client).
 */
static const char hostile_name[] = "j\033]0;pwned\007\033[2J";

Test(daemon, journal_and_quarantine_names_do_not_reach_the_terminal)
{
	const char *dir = th_mkdir();
	char out[8192], args[1024], path[512], why[256];
	struct shmbus_jseg_hdr h;
	struct shmbus_quar_hdr q;
	struct sb_jgeom g;
	int fd;

	/* A segment whose header is whole, but for the name. */
	snprintf(path, sizeof(path), "%s/j", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	cr_assert_eq(sb_jgeom_make(&g, "j", 64 << 10, 64 << 10, 2048,
				   sb_channel_flags(SHMBUS_BLOCK,
						    SHMBUS_SINGLE_PRODUCER),
				   why, sizeof(why)), 0, "%s", why);
	sb_jseg_hdr_make(&h, &g, 0, 0, 0);
	memset(h.channel, 0, sizeof(h.channel));
	memcpy(h.channel, hostile_name, sizeof(hostile_name));
	h.crc = sb_crc32c(0, &h, offsetof(struct shmbus_jseg_hdr, crc));
	snprintf(path, sizeof(path), "%s/j/%016llx.seg", dir, 0ull);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_eq(ftruncate(fd, SHMBUS_JSEG_HDR + (64 << 10)), 0);
	close(fd);
	snprintf(args, sizeof(args), "journal verify %s/j", dir);
	cr_assert_eq(ctl(out, sizeof(out), args), 4, "%s", out);
	cr_assert(!strchr(out, '\033') && !strchr(out, '\007'),
		  "journal verify wrote the name's control characters: %s",
		  out);
	snprintf(args, sizeof(args), "journal dump %s/j", dir);
	ctl(out, sizeof(out), args);
	cr_assert(!strchr(out, '\033') && !strchr(out, '\007'),
		  "journal dump wrote the name's control characters: %s", out);

	/* A quarantine file of no record, its checksums right. */
	memset(&q, 0, sizeof(q));
	q.magic = SHMBUS_QUAR_MAGIC;
	q.version = SHMBUS_QUAR_VERSION;
	q.hdr_size = SHMBUS_QUAR_HDR;
	q.capacity = 64 << 10;
	q.max_msg = 2048;
	q.epoch = 1;
	q.new_epoch = 2;
	q.data_crc = sb_crc32c(0, "", 0);
	memcpy(q.channel, hostile_name, sizeof(hostile_name));
	q.hdr_crc = sb_crc32c(0, &q, offsetof(struct shmbus_quar_hdr,
					      hdr_crc));
	snprintf(path, sizeof(path), "%s/q", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, &q, sizeof(q)), (ssize_t)sizeof(q));
	close(fd);
	snprintf(args, sizeof(args), "quarantine %s", path);
	cr_assert_eq(ctl(out, sizeof(out), args), 4, "%s", out);
	cr_assert(!strchr(out, '\033') && !strchr(out, '\007'),
		  "quarantine wrote the name's control characters: %s", out);
	th_rmdir(dir);
}

/*
 * A channel the daemon found cut short (docs/shmbusd.md, "A file cut
 * short") is damaged: it refuses OPEN, ATTACH and GROUP on it with
 * -EBADMSG, and an operator who asks is told so: shmbusctl describe
 * refuses it with the reason, list says "damaged", and its files no
 * longer validate for whoever opens them (busstat, a direct-mode
 * process), though the cut kept the header's page and the daemon gave
 * the file back its size (they looked healthy, with zeros where the cut
 * was).
 */
Test(daemon, shmbusctl_tells_a_damaged_channel, .init = setup,
     .fini = teardown)
{
	char out[8192], args[512], path[256];
	shmbus_channel *ch;
	shmbus_bus *b;
	int i;

	ch = shmbus_channel_open_ro(d.dir, "blk");
	cr_assert_not_null(ch, "%s", strerror(errno));
	shmbus_channel_close(ch);
	snprintf(path, sizeof(path), "%s/blk", d.dir);
	cr_assert_eq(truncate(path, 4096), 0);
	for (i = 0; i < 300 && !log_has("blk: its control file was cut to "
					"4096 bytes"); i++)
		usleep(10000);
	cr_assert_lt(i, 300, "the cut was not found");
	ch = open_role(&b, "blk", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert_null(ch);
	cr_assert_eq(errno, EBADMSG, "%s", strerror(errno));
	shmbus_disconnect(b);
	ch = shmbus_channel_open_ro(d.dir, "blk");
	cr_assert_null(ch, "the files of a damaged channel validate");
	cr_assert_eq(errno, EBADMSG, "%s", strerror(errno));

	snprintf(args, sizeof(args), "-b %s describe blk", d.sock);
	cr_assert_neq(ctl(out, sizeof(out), args), 0, "%s", out);
	cr_assert(strstr(out, "damaged"), "describe of a channel the daemon "
		  "no longer serves does not say so: %s", out);
	snprintf(args, sizeof(args), "-b %s list", d.sock);
	ctl(out, sizeof(out), args);
	cr_assert(strstr(out, "damaged"), "list does not say which channel "
		  "the daemon no longer serves: %s", out);
}
