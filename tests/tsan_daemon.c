/* SPDX-License-Identifier: MIT */
/*
 * tsan_daemon.c - the threads around the control socket, under
 * ThreadSanitizer: a client process whose threads share one bus handle
 * (requests under its lock, the watcher thread reconnecting and
 * re-attaching across a kill -9 and restart of the daemon), and a daemon
 * built with TSan too (main thread, reaper thread, call_rcu thread).
 *
 * `make tsan` builds and runs it (SHMBUSD points at the TSan build of the
 * daemon).  Exits non-zero on a race report (halt_on_error=1 in this
 * process; the daemon's reports go to its log, which is checked), on a
 * lost or duplicated message, or if the clients did not re-attach.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static char dir[] = "/dev/shm/shmbus-tsan-XXXXXX";
static char sock[128], conf[128], log_path[128];
static shmbus_bus *bus;
static uint64_t n_msgs;

static pid_t start_daemon(void)
{
	const char *bin = getenv("SHMBUSD");
	pid_t pid;

	/* The daemon reports and goes on: its log is checked at the end.
	 * Set here, before fork(): this process is multi-threaded, and the
	 * child does only async-signal-safe calls before exec.  (Our own
	 * TSAN_OPTIONS were read at start-up; changing them now is inert.) */
	setenv("TSAN_OPTIONS", getenv("SHMBUS_TSAN_DAEMON_OPTIONS") ?
		getenv("SHMBUS_TSAN_DAEMON_OPTIONS") : "", 1);
	pid = fork();
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);

		dup2(fd, 2);
		dup2(fd, 1);
		execl(bin ? bin : "build-tsan/shmbusd", "shmbusd", "-c", conf,
		      (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		shmbus_bus *b = shmbus_connect(sock);

		if (b) {
			shmbus_disconnect(b);
			return pid;
		}
		usleep(10000);
	}
	fprintf(stderr, "tsan_daemon: shmbusd did not start (see %s)\n", log_path);
	exit(1);
}

static void *publisher(void *arg)
{
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_channel *ch = shmbus_bus_open(bus, "c", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t buf[64];

	(void)arg;
	if (!pub)
		return (void *)1;
	for (uint64_t s = 0; s < n_msgs; s++) {
		th_msg_fill(buf, 32, 1, s);
		if (shmbus_publish(pub, buf, 32))
			return (void *)2;
		if (s % 1000 == 999)
			usleep(500);
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	return NULL;
}

static void *subscriber(void *arg)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST,
				      .wait = SHMBUS_WAIT_SLEEP };
	shmbus_sub *sub = arg;
	uint8_t buf[64];
	uint64_t next = 0;

	(void)sa;
	while (next < n_msgs) {
		uint32_t id;
		uint64_t seq;
		ssize_t len = shmbus_read(sub, buf, sizeof(buf), NULL);

		if (len == -EAGAIN) {
			shmbus_wait(sub, 100000000);
			continue;
		}
		if (len != 32 || th_msg_check(buf, 32, &id, &seq) ||
		    seq != next)
			return (void *)3;
		next++;
	}
	return NULL;
}

/* Control requests from a third thread while the others run. */
static void *asker(void *arg)
{
	struct shmbus_bus_channel bc;

	(void)arg;
	for (int i = 0; i < 100; i++) {
		int rc = shmbus_bus_describe(bus, "c", &bc);

		if (rc && rc != -ENOTCONN && rc != -ETIMEDOUT)
			return (void *)4;
		usleep(2000);
	}
	return NULL;
}

int main(void)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST,
				      .wait = SHMBUS_WAIT_SLEEP };
	struct shmbus_bus_channel bc;
	pthread_t t[3];
	shmbus_channel *ch;
	shmbus_sub *sub;
	void *ret;
	int fails = 0, i;
	pid_t daemon;
	FILE *f;
	char line[512];

	n_msgs = th_env_count("SHMBUS_STRESS_N", 100000);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(sock, sizeof(sock), "%s/bus.sock", dir);
	snprintf(conf, sizeof(conf), "%s/bus.conf", dir);
	snprintf(log_path, sizeof(log_path), "%s/daemon.log", dir);
	f = fopen(conf, "w");
	fprintf(f, "[bus]\nshm_dir = %s\nsocket = %s\nreap_interval_ms = 5\n"
		   "[channel c]\ncapacity = 64K\nmax_msg = 256\n", dir, sock);
	fclose(f);
	daemon = start_daemon();
	bus = shmbus_connect(sock);
	ch = bus ? shmbus_bus_open(bus, "c", SHMBUS_ROLE_SUBSCRIBE) : NULL;
	sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	if (!sub) {
		fprintf(stderr, "tsan_daemon: open: %s\n",
			shmbus_strerror(errno));
		return 1;
	}
	pthread_create(&t[0], NULL, subscriber, sub);
	pthread_create(&t[1], NULL, publisher, NULL);
	pthread_create(&t[2], NULL, asker, NULL);
	usleep(100000);
	/* A channel added at run time, which the reaper then scans. */
	{
		struct shmbus_channel_attr a;

		shmbus_channel_attr_init(&a);
		a.capacity = 8192;
		a.max_msg = 100;
		if (shmbus_bus_create(bus, "late", &a)) {
			fprintf(stderr, "tsan_daemon: create failed\n");
			fails++;
		}
		usleep(20000);
	}
	/* The daemon dies under traffic and comes back. */
	kill(daemon, SIGKILL);
	waitpid(daemon, NULL, 0);
	usleep(50000);
	daemon = start_daemon();
	for (i = 0; i < 300; i++) {
		if (shmbus_bus_describe(bus, "c", &bc) == 0 && bc.clients == 1)
			break;
		usleep(10000);
	}
	if (i == 300) {
		fprintf(stderr, "tsan_daemon: no re-attach after restart\n");
		fails++;
	}
	for (i = 0; i < 3; i++) {
		pthread_join(t[i], &ret);
		if (ret) {
			fprintf(stderr, "tsan_daemon: thread %d: %ld\n", i,
				(long)ret);
			fails++;
		}
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	kill(daemon, SIGTERM);
	waitpid(daemon, NULL, 0);
	f = fopen(log_path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "ThreadSanitizer")) {
			fprintf(stderr, "tsan_daemon: shmbusd: %s", line);
			fails++;
		}
	if (f)
		fclose(f);
	if (fails) {
		fprintf(stderr, "tsan_daemon: daemon log kept in %s\n", log_path);
		return 1;
	}
	unlink(log_path);
	unlink(conf);
	shmbus_channel_unlink(dir, "c");
	shmbus_channel_unlink(dir, "late");
	unlink(sock);
	{
		char lock[160];

		snprintf(lock, sizeof(lock), "%s.lock", sock);
		unlink(lock);
		/* The bus file the daemon writes beside its socket (the bus
		 * is named after its config file: "bus"). */
		snprintf(lock, sizeof(lock), "%s/bus.bus", dir);
		unlink(lock);
		/* And the lock that keeps a second daemon off shm_dir. */
		snprintf(lock, sizeof(lock), "%s/.shmbusd.lock", dir);
		unlink(lock);
	}
	rmdir(dir);
	printf("tsan_daemon: %llu messages across a daemon restart, no race\n",
	       (unsigned long long)n_msgs);
	return 0;
}
