/* examples/workers.c - a producer and three workers that share its jobs
 * through a consumer group: each job goes to one worker, not to all.
 *
 *   workers [N]
 *
 * The producer creates channel "jobs" in a new directory under /dev/shm
 * (direct mode: no shmbusd), creates the shared group "jobs" on it, forks
 * three workers that join the group, publishes N jobs (default 100000)
 * and waits until the group has acknowledged them all.  Then it sends one
 * "stop" per worker, prints how the jobs were spread, and removes
 * everything. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmbus.h"

#define WORKERS 3

/* What a worker's handler keeps between calls. */
struct worker {
	unsigned long jobs;
	uint64_t results;	/* what the jobs computed, combined */
	int stop;
	struct shmbus_lease lease;	/* of the batch being handled */
};

/* A job: here, a few microseconds of arithmetic on its number. */
static uint64_t do_job(uint64_t job)
{
	for (int i = 0; i < 2000; i++)
		job = job * 6364136223846793005u + 1442695040888963407u;
	return job;
}

static int handle(const struct shmbus_group_msg *msg, void *arg)
{
	struct worker *w = arg;

	w->lease = msg->lease;	/* shared mode: one lease per batch */
	if (msg->len == 4 && !memcmp(msg->data, "stop", 4)) {
		w->stop = 1;
		return 1;	/* end the batch here */
	}
	if (msg->len == sizeof(uint64_t)) {
		uint64_t job;

		memcpy(&job, msg->data, sizeof(job));
		w->results ^= do_job(job);
		w->jobs++;
	}
	return 0;
}

/* What a worker tells the producer, through a pipe. */
struct report {
	int id;
	unsigned long jobs;
};

/* A worker process: takes batches of jobs until it is told to stop, and
 * acknowledges each batch once it is done with it. */
static int worker(const char *dir, int id, int fd)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "jobs");
	struct worker w = { 0 };
	struct report r = { .id = id };
	shmbus_group *g;
	char name[24];

	snprintf(name, sizeof(name), "worker%d", id);
	g = ch ? shmbus_group_join(ch, "jobs", name, NULL) : NULL;
	if (!g) {
		fprintf(stderr, "%s: join: %s\n", name, shmbus_strerror(errno));
		return 1;
	}
	while (!w.stop) {
		int n = shmbus_group_poll(g, handle, &w, 0);

		if (n < 0) {
			fprintf(stderr, "%s: poll: %s\n", name,
				shmbus_strerror(n));
			return 1;
		}
		if (n == 0)	/* nothing now: sleep until there may be */
			shmbus_group_wait(g, 100 * 1000000LL);
		else
			shmbus_group_ack(g, &w.lease);
	}
	printf("%s: %lu jobs\n", name, w.jobs);
	fflush(stdout);
	r.jobs = w.jobs;
	if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		return 1;
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	return 0;
}

/* Waits until the group has at least `members` members alive and has
 * acknowledged everything published (its floor has reached the
 * channel's head).  0, or -1 after 30 s. */
static int wait_group(shmbus_group *g, uint32_t members)
{
	struct shmbus_group_stats st;

	for (int ms = 0; ms < 30000; ms++) {
		if (shmbus_group_stats(g, &st) == 0 &&
		    st.members >= members && st.floor >= st.head)
			return 0;
		usleep(1000);
	}
	fprintf(stderr, "workers: the group did not get there in 30 s\n");
	return -1;
}

/* Once the workers have joined, publishes n jobs (each its number), then
 * a "stop" for each worker, one at a time: a worker that takes one
 * leaves, so the next goes to another. */
static int produce(shmbus_pub *pub, shmbus_group *g, uint64_t n)
{
	if (wait_group(g, WORKERS + 1))	/* they and the producer */
		return -1;
	for (uint64_t job = 0; job < n; job++) {
		int rc = shmbus_publish(pub, &job, sizeof(job));

		if (rc) {
			fprintf(stderr, "workers: publish: %s\n",
				shmbus_strerror(rc));
			return -1;
		}
	}
	if (wait_group(g, 0))
		return -1;
	for (int i = 0; i < WORKERS; i++)
		if (shmbus_publish(pub, "stop", 4) || wait_group(g, 0))
			return -1;
	return 0;
}

/* Reads the workers' reports and prints how the jobs were spread;
 * 0 if every job was done once. */
static int report(int fd, uint64_t n)
{
	unsigned long jobs[WORKERS + 1] = { 0 }, total = 0;
	struct report r;

	for (int i = 0; i < WORKERS; i++) {
		if (read(fd, &r, sizeof(r)) != (ssize_t)sizeof(r) ||
		    r.id < 1 || r.id > WORKERS)
			return -1;
		jobs[r.id] = r.jobs;
		total += r.jobs;
	}
	printf("distribution of %llu jobs:", (unsigned long long)n);
	for (int i = 1; i <= WORKERS; i++)
		printf(" worker%d %lu (%.1f%%)", i, jobs[i],
		       n ? 100.0 * (double)jobs[i] / (double)n : 0.0);
	printf("; %lu in all\n", total);
	return total == n ? 0 : -1;
}

int main(int argc, char **argv)
{
	char dir[] = "/dev/shm/shmbus-workers-XXXXXX";
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000;
	struct shmbus_pub_attr pa = { .timeout_ns = 10 * 1000000000LL };
	struct shmbus_channel_attr attr;
	pid_t pids[WORKERS];
	shmbus_channel *ch;
	shmbus_group *g;
	shmbus_pub *pub;
	int fds[2], rc = 0;

	if (!mkdtemp(dir) || pipe(fds)) {
		perror("workers");
		return 1;
	}
	shmbus_channel_attr_init(&attr);	/* 1 MiB, block policy */
	ch = shmbus_channel_create(dir, "jobs", &attr, 0);
	/* The producer joins first, so that the group exists (and holds
	 * the ring for it) before the first job; it never polls. */
	g = ch ? shmbus_group_join(ch, "jobs", "producer", NULL) : NULL;
	pub = g ? shmbus_pub_open(ch, &pa) : NULL;
	if (!pub) {
		fprintf(stderr, "workers: %s\n", shmbus_strerror(errno));
		rc = 1;
		goto out;
	}
	fflush(stdout);
	for (int i = 0; i < WORKERS; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(worker(dir, i + 1, fds[1]));
		if (pids[i] < 0)
			rc = 1;
	}
	close(fds[1]);
	if (rc || produce(pub, g, n)) {
		rc = 1;
		for (int i = 0; i < WORKERS; i++)	/* they will not stop */
			if (pids[i] > 0)
				kill(pids[i], SIGTERM);
	}
	for (int i = 0; i < WORKERS; i++) {
		int status;

		if (pids[i] > 0 && (waitpid(pids[i], &status, 0) < 0 ||
				    !WIFEXITED(status) || WEXITSTATUS(status)))
			rc = 1;
	}
	if (rc || report(fds[0], n))
		rc = 1;
out:
	shmbus_pub_close(pub);
	shmbus_group_leave(g);
	shmbus_group_delete(ch, "jobs");
	shmbus_channel_close(ch);
	shmbus_channel_unlink(dir, "jobs");
	rmdir(dir);
	return rc;
}
