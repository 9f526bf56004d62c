/* SPDX-License-Identifier: MIT */
/* common.c - the test helpers that need no Criterion (self-checking
 * messages, counts, clocks), so that the standalone TSan driver can use
 * them too.  See helpers.h. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "shmbus/layout.h"

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	return x;
}

static uint64_t sum(const uint8_t *p, size_t n)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * UINT64_C(0x100000001b3);
	return h;
}

void th_msg_fill(void *buf, size_t len, uint32_t id, uint64_t seq)
{
	uint8_t *b = buf;
	uint64_t x = mix(seq ^ ((uint64_t)id << 48)), h;
	uint32_t l = (uint32_t)len;

	memcpy(b, &id, 4);
	memcpy(b + 4, &l, 4);
	memcpy(b + 8, &seq, 8);
	for (size_t i = 24; i < len; i++)
		b[i] = (uint8_t)(x >> ((i % 8) * 8)) ^ (uint8_t)i;
	h = sum(b, 16) ^ sum(b + 24, len - 24);
	memcpy(b + 16, &h, 8);
}

int th_msg_check(const void *buf, size_t len, uint32_t *id, uint64_t *seq)
{
	const uint8_t *b = buf;
	uint64_t h;
	uint32_t l;

	if (len < TH_MSG_MIN)
		return -1;
	memcpy(&l, b + 4, 4);
	memcpy(&h, b + 16, 8);
	if (l != len || h != (sum(b, 16) ^ sum(b + 24, len - 24)))
		return -1;
	memcpy(id, b, 4);
	memcpy(seq, b + 8, 8);
	return 0;
}

uint64_t th_env_count(const char *name, uint64_t def)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, NULL, 10) : def;
}

uint64_t th_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Maps the whole file at path read-write. */
static uint8_t *map_file(const char *path, size_t *len)
{
	struct stat st;
	void *p;
	int fd = open(path, O_RDWR);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st)) {
		close(fd);
		return NULL;
	}
	*len = (size_t)st.st_size;
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

uint8_t *th_map_channel(const char *dir, size_t *len)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/ch", dir);
	return map_file(path, len);
}

/* The header of channel `name` in `dir`, read from its control file. */
static int read_hdr(const char *dir, const char *name, struct shmbus_hdr *h)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	if (pread(fd, h, sizeof(*h), 0) != (ssize_t)sizeof(*h)) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

uint8_t *th_map_data(const char *dir, size_t *len)
{
	char path[256];
	struct shmbus_hdr h;

	if (read_hdr(dir, "ch", &h))
		return NULL;
	snprintf(path, sizeof(path), "%s/" SHMBUS_DATA_NAME_FMT, dir, "ch",
		 (unsigned long long)h.data_id);
	return map_file(path, len);
}

struct shmbus_daemon_area *th_map_daemon_area(const char *dir,
					      const char *name)
{
	char path[256];
	struct shmbus_hdr h;
	void *p;
	int fd;

	if (read_hdr(dir, name, &h))
		return NULL;
	snprintf(path, sizeof(path), "%s/" SHMBUS_DATA_NAME_FMT, dir, name,
		 (unsigned long long)h.data_id);
	fd = open(path, O_RDWR);
	if (fd < 0)
		return NULL;
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		 (off_t)h.capacity);
	close(fd);
	return p == MAP_FAILED ? NULL
			       : (void *)((uint8_t *)p + SHMBUS_DAEMON_OFFSET);
}

struct shmbus_prod_slot *th_map_prods(const char *dir, const char *name)
{
	struct shmbus_daemon_area *d = th_map_daemon_area(dir, name);

	return d ? (struct shmbus_prod_slot *)((uint8_t *)d -
					       SHMBUS_DAEMON_OFFSET +
					       SHMBUS_PRODS_OFFSET)
		 : NULL;
}

struct shmbus_prod_line *th_map_pline(const char *dir, const char *name)
{
	struct shmbus_daemon_area *d = th_map_daemon_area(dir, name);

	return d ? (struct shmbus_prod_line *)((uint8_t *)d -
					       SHMBUS_DAEMON_OFFSET +
					       SHMBUS_PLINE_OFFSET)
		 : NULL;
}

void th_unmap_daemon_area(struct shmbus_daemon_area *d)
{
	munmap((uint8_t *)d - SHMBUS_DAEMON_OFFSET, 4096);
}

pid_t th_thread_hold(pid_t pid, const char *comm)
{
	char path[64], name[32];
	struct dirent *e;
	pid_t tid = -1;
	DIR *d;
	int st;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	while (d && tid < 0 && (e = readdir(d))) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.16s/comm",
			 (int)pid, e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(name, sizeof(name), f)) {
			name[strcspn(name, "\n")] = 0;
			if (!strcmp(name, comm))
				tid = (pid_t)atoi(e->d_name);
		}
		fclose(f);
	}
	if (d)
		closedir(d);
	if (tid < 0)
		return -1;
	/* Seized, not attached: no SIGSTOP for the whole process; the
	 * interrupt stops this thread alone. */
	if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) ||
	    ptrace(PTRACE_INTERRUPT, tid, NULL, NULL))
		return -1;
	if (waitpid(tid, &st, __WALL) != tid || !WIFSTOPPED(st)) {
		ptrace(PTRACE_DETACH, tid, NULL, NULL);
		return -1;
	}
	return tid;
}

void th_thread_resume(pid_t tid)
{
	if (tid > 0)
		ptrace(PTRACE_DETACH, tid, NULL, NULL);
}
