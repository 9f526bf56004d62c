/* SPDX-License-Identifier: MIT */
/* test_layout.c - creating and opening channel files: validation of every
 * header field, stale and foreign files, deliberate replacement. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/channel.h"
#include "../lib/contract.h"
#include "helpers.h"

static const char *dir;

static void setup(void)
{
	dir = th_mkdir();
}

static void teardown(void)
{
	th_rmdir(dir);
}

static void attr(struct shmbus_channel_attr *a, uint64_t cap)
{
	shmbus_channel_attr_init(a);
	a->capacity = cap;
	a->max_msg = 512;
}

static void write_file(const char *name, const void *data, size_t len)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	cr_assert(f);
	fwrite(data, 1, len, f);
	fclose(f);
}

Test(layout, create_open_info, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	struct shmbus_channel_info in;
	shmbus_channel *c1, *c2;

	attr(&a, 1u << 16);
	a.policy = SHMBUS_OVERWRITE;
	a.producers = SHMBUS_MULTI_PRODUCER;
	c1 = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c1, "%s", shmbus_strerror(errno));
	c2 = shmbus_channel_open(dir, "ch");
	cr_assert(c2, "%s", shmbus_strerror(errno));
	cr_assert_eq(shmbus_channel_info(c2, &in), 0);
	cr_assert_eq(in.capacity, 1u << 16);
	cr_assert_eq(in.max_msg, 512);
	cr_assert_eq(in.policy, SHMBUS_OVERWRITE);
	cr_assert_eq(in.producers, SHMBUS_MULTI_PRODUCER);
	cr_assert_eq(in.head, 0);
	cr_assert_gt(in.create_ns, 0);
	shmbus_channel_close(c1);
	shmbus_channel_close(c2);
	cr_assert_eq(shmbus_channel_unlink(dir, "ch"), 0);
	cr_assert_null(shmbus_channel_open(dir, "ch"));
	cr_assert_eq(errno, ENOENT);
}

/* sb_channel_unlink_id() of channel "ch" with every descriptor in use. */
static int unlink_without_descriptors(void *arg)
{
	struct rlimit rl = { 256, 256 };
	int rc;

	if (setrlimit(RLIMIT_NOFILE, &rl))
		return 101;
	while (dup(0) >= 0)
		;
	if (errno != EMFILE)
		return 100;
	rc = sb_channel_unlink_id(dir, "ch", *(uint64_t *)arg);
	return rc < 0 ? -rc : 0;
}

/* Removing a channel by the data id it was made with (shmbusd's removal
 * of a create it could not serve) leaves alone another channel made under
 * the name since. */
Test(layout, a_removal_by_data_id_leaves_a_replacement, .init = setup,
     .fini = teardown)
{
	struct shmbus_channel_attr a;
	shmbus_channel *c;
	uint64_t first, second;
	char cmd[256], path[300];

	attr(&a, 1u << 16);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c);
	first = sb_channel_data_id(c);
	shmbus_channel_close(c);
	cr_assert_eq(shmbus_channel_unlink(dir, "ch"), 0);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c);
	second = sb_channel_data_id(c);
	shmbus_channel_close(c);
	cr_assert_neq(first, second);
	cr_assert_eq(sb_channel_unlink_id(dir, "ch", first), -ESTALE);
	c = shmbus_channel_open(dir, "ch");
	cr_assert(c, "the replacement was removed: %s", strerror(errno));
	shmbus_channel_close(c);
	cr_assert_eq(sb_channel_unlink_id(dir, "ch", second), 0);
	cr_assert_null(shmbus_channel_open(dir, "ch"));
	cr_assert_eq(errno, ENOENT);
	cr_assert_eq(sb_channel_unlink_id(dir, "ch", second), -ENOENT);
	snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 0", dir);
	cr_assert_eq(system(cmd), 0, "a file left behind");

	/* Out of descriptors, the control file cannot be read: removed by
	 * its name, the data file by its id. */
	c = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c);
	first = sb_channel_data_id(c);
	shmbus_channel_close(c);
	cr_assert_eq(th_wait(th_spawn(unlink_without_descriptors, &first)), 0);
	cr_assert_eq(system(cmd), 0, "a file left behind");

	/* A name that cannot be read otherwise (a link put there) is not
	 * removed: the open's error. */
	snprintf(path, sizeof(path), "%s/ch", dir);
	cr_assert_eq(symlink("/dev/null", path), 0);
	cr_assert_eq(sb_channel_unlink_id(dir, "ch", first), -ELOOP);
	cr_assert_eq(access(path, F_OK), 0, "the link was removed");
	unlink(path);
}

Test(layout, create_existing, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	shmbus_channel *c1, *c2;

	attr(&a, 8192);
	c1 = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c1);
	/* Same geometry: opened. */
	c2 = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c2, "%s", shmbus_strerror(errno));
	shmbus_channel_close(c2);
	cr_assert_null(shmbus_channel_create(dir, "ch", &a, SHMBUS_CREATE_EXCL));
	cr_assert_eq(errno, EEXIST);
	a.capacity = 16384;
	cr_assert_null(shmbus_channel_create(dir, "ch", &a, 0));
	cr_assert_eq(errno, EEXIST);
	/* Deliberate replacement; the old mapping stays usable. */
	c2 = shmbus_channel_create(dir, "ch", &a, SHMBUS_CREATE_REPLACE);
	cr_assert(c2);
	shmbus_pub *p = shmbus_pub_open(c1, NULL);
	cr_assert_eq(shmbus_publish(p, "x", 1), 0);
	shmbus_pub_close(p);
	shmbus_channel_close(c1);
	shmbus_channel_close(c2);
}

Test(layout, foreign_and_stale_files, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	char junk[8192];
	shmbus_channel *c;

	attr(&a, 8192);
	memset(junk, 'J', sizeof(junk));
	write_file("ch", junk, sizeof(junk));
	cr_assert_null(shmbus_channel_open(dir, "ch"));
	cr_assert_eq(errno, EPROTO);
	cr_assert_null(shmbus_channel_create(dir, "ch", &a, 0));
	cr_assert_eq(errno, EPROTO, "an invalid file is reported, not adopted");
	/* An empty file (a creator that died before ftruncate). */
	write_file("ch", "", 0);
	cr_assert_null(shmbus_channel_open(dir, "ch"));
	cr_assert_eq(errno, EPROTO);
	c = shmbus_channel_create(dir, "ch", &a, SHMBUS_CREATE_REPLACE);
	cr_assert(c, "%s", shmbus_strerror(errno));
	shmbus_channel_close(c);
	c = shmbus_channel_open(dir, "ch");
	cr_assert(c);
	shmbus_channel_close(c);
}

/* A directory at the name is EISDIR to every open, the read-only one
 * (an inspector's) included, which once said EBADMSG. */
Test(layout, a_directory_at_the_name_is_eisdir, .init = setup, .fini = teardown)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/ch", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	cr_assert_null(shmbus_channel_open(dir, "ch"));
	cr_assert_eq(errno, EISDIR);
	cr_assert_null(shmbus_channel_open_ro(dir, "ch"));
	cr_assert_eq(errno, EISDIR, "open_ro: %s", strerror(errno));
	cr_assert_eq(rmdir(path), 0);
}

/* Each header field, damaged, makes open fail with a clear code. */
Test(layout, every_header_field_validated, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	shmbus_channel *c;
	struct shmbus_hdr *h, saved;
	size_t len;

	attr(&a, 8192);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c);
	shmbus_channel_close(c);
	h = (struct shmbus_hdr *)th_map_channel(dir, &len);
	cr_assert(h);
	saved = *h;

#define BREAK(field, value, err)                                              \
	do {                                                                  \
		h->field = value;                                             \
		cr_assert_null(shmbus_channel_open(dir, "ch"), #field);        \
		cr_assert_eq(errno, err, #field ": %s", strerror(errno));      \
		*h = saved;                                                   \
	} while (0)

	BREAK(magic, 0, EPROTO);
	BREAK(version, SHMBUS_LAYOUT_VERSION - 1, EPROTONOSUPPORT);
	BREAK(version, SHMBUS_LAYOUT_VERSION + 1, EPROTONOSUPPORT);
	BREAK(data_id, 0, EBADMSG);
	BREAK(data_id, 12345, EBADMSG);		/* names no data file */
	BREAK(data_size, 4096, EBADMSG);
	BREAK(hdr_size, 64, EBADMSG);
	BREAK(capacity, 8191, EBADMSG);
	BREAK(capacity, 16384, EBADMSG);
	BREAK(capacity, UINT64_C(1) << 40, EBADMSG);
	BREAK(data_offset, 4096, EBADMSG);
	BREAK(slots_offset, 0, EBADMSG);
	BREAK(file_size, 1u << 30, EBADMSG);
	BREAK(max_msg, 8192, EBADMSG);
	BREAK(flags, 0x80, EBADMSG);
	BREAK(nslots, 1000, EBADMSG);
	BREAK(cap_log2, 3, EBADMSG);
	BREAK(nseg, 0, EBADMSG);
	BREAK(seg_log2, 63, EBADMSG);
#undef BREAK
	c = shmbus_channel_open(dir, "ch");
	cr_assert(c, "restored header opens again");
	shmbus_channel_close(c);
	munmap(h, len);
}

Test(layout, truncated_file, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	char path[128];
	shmbus_channel *c;

	attr(&a, 8192);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	shmbus_channel_close(c);
	snprintf(path, sizeof(path), "%s/ch", dir);
	cr_assert_eq(truncate(path, 4096 + 1024), 0);
	cr_assert_null(shmbus_channel_open(dir, "ch"));
	cr_assert_eq(errno, EBADMSG);
	cr_assert_eq(truncate(path, 100), 0);
	cr_assert_null(shmbus_channel_open(dir, "ch"));
	cr_assert_eq(errno, EPROTO);
}

Test(layout, names_and_attributes, .init = setup, .fini = teardown)
{
	static const char *bad[] = { "", ".hidden", "a/b", "..", "sp ace",
				     "new\nline" };
	struct shmbus_channel_attr a;

	attr(&a, 8192);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_null(shmbus_channel_create(dir, bad[i], &a, 0));
		cr_assert_eq(errno, EINVAL, "name '%s'", bad[i]);
	}
	cr_assert_null(shmbus_channel_create(dir, "ch", NULL, 0));
	a.capacity = 3000;
	cr_assert_null(shmbus_channel_create(dir, "ch", &a, 0));
	cr_assert_eq(errno, EINVAL);
	a.capacity = 2048;
	cr_assert_null(shmbus_channel_create(dir, "ch", &a, 0));
	cr_assert_eq(errno, EINVAL);
	attr(&a, 8192);
	a.max_msg = 8192 / 2;
	cr_assert_null(shmbus_channel_create(dir, "ch", &a, 0));
	cr_assert_eq(errno, EMSGSIZE);
	attr(&a, 8192);
	a.numa_node = 4096;
	cr_assert_null(shmbus_channel_create(dir, "ch", &a, 0));
	cr_assert_eq(errno, EINVAL);
	attr(&a, 8192);
	cr_assert_null(shmbus_channel_create(dir, "ch", &a,
					     SHMBUS_CREATE_EXCL |
						     SHMBUS_CREATE_REPLACE));
	cr_assert_eq(errno, EINVAL);
	cr_assert_null(shmbus_channel_create("/nonexistent-dir", "ch", &a, 0));
	cr_assert_eq(errno, ENOENT);
}

Test(layout, numa_node_zero_and_large_ring, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	struct shmbus_channel_info in;
	shmbus_channel *c;

	attr(&a, UINT64_C(64) << 20);
	a.numa_node = 0;
	c = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c, "%s", shmbus_strerror(errno));
	shmbus_channel_info(c, &in);
	cr_assert_eq(in.numa_node, 0);
	shmbus_channel_close(c);
}

Test(layout, gigabyte_ring, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	shmbus_channel *c;
	shmbus_pub *p;
	shmbus_sub *s;
	char got[8];

	attr(&a, UINT64_C(1) << 30);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c, "%s", shmbus_strerror(errno));
	p = shmbus_pub_open(c, NULL);
	s = shmbus_sub_open(c, NULL);
	cr_assert_eq(shmbus_publish(p, "big", 3), 0);
	cr_assert_eq(shmbus_read(s, got, sizeof(got), NULL), 3);
	shmbus_sub_close(s);
	shmbus_pub_close(p);
	shmbus_channel_close(c);
}

Test(layout, no_temporary_files_left, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	char cmd[256];
	shmbus_channel *c;

	attr(&a, 8192);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	shmbus_channel_close(c);
	/* Adopting: the loser's data file goes too. */
	c = shmbus_channel_create(dir, "ch", &a, 0);
	shmbus_channel_close(c);
	snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 2", dir);
	cr_assert_eq(system(cmd), 0, "only the control and data files remain");
	/* Replacing: the old data file goes. */
	c = shmbus_channel_create(dir, "ch", &a, SHMBUS_CREATE_REPLACE);
	cr_assert(c);
	shmbus_channel_close(c);
	cr_assert_eq(system(cmd), 0, "the replaced data file remains");
	cr_assert_eq(shmbus_channel_unlink(dir, "ch"), 0);
	snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 0", dir);
	cr_assert_eq(system(cmd), 0, "unlink leaves a file behind");
}

Test(layout, data_file_missing_or_foreign, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	char cmd[512];
	shmbus_channel *c;
	uint8_t *data;
	size_t len;

	attr(&a, 8192);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c);
	shmbus_channel_close(c);
	/* Another channel's data file under this one's name: refused. */
	data = th_map_data(dir, &len);
	cr_assert(data);
	data[8192 + SHMBUS_NSEG * sizeof(struct shmbus_seg) + 8] ^= 1;
	cr_assert_null(shmbus_channel_open(dir, "ch"));
	cr_assert_eq(errno, EBADMSG);
	data[8192 + SHMBUS_NSEG * sizeof(struct shmbus_seg) + 8] ^= 1;
	c = shmbus_channel_open(dir, "ch");
	cr_assert(c);
	shmbus_channel_close(c);
	munmap(data, len);
	/* No data file at all. */
	snprintf(cmd, sizeof(cmd), "rm %s/.ch.*.data", dir);
	cr_assert_eq(system(cmd), 0);
	cr_assert_null(shmbus_channel_open(dir, "ch"));
	cr_assert_eq(errno, EBADMSG);
}

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static void write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fprintf(f, "%ld\n", v);
		fclose(f);
	}
}

static long free_huge_pages(void)
{
	char line[128];
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "HugePages_Free: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

/*
 * Huge pages where the system has them: a channel in a hugetlbfs directory
 * is laid out on huge-page boundaries, its pages come from the huge page
 * pool, and it reopens.  Needs root to reserve pages and mount hugetlbfs
 * (CI runs as root).
 */
Test(layout, hugetlbfs_channel)
{
	const char *nr = "/proc/sys/vm/nr_hugepages";
	char mnt[] = "/tmp/shmbus-huge-XXXXXX";
	struct shmbus_channel_attr a;
	struct shmbus_channel_info in;
	long before, had;
	shmbus_channel *c, *c2;
	shmbus_pub *p;
	shmbus_sub *s;
	char got[8];

	if (geteuid() != 0)
		cr_skip_test("needs root to reserve huge pages and mount hugetlbfs");
	had = read_long(nr);
	if (had < 8)
		write_long(nr, 8);
	cr_assert(mkdtemp(mnt));
	cr_assert_eq(mount("none", mnt, "hugetlbfs", 0, NULL), 0,
		     "mount hugetlbfs: %s", strerror(errno));
	before = free_huge_pages();
	cr_assert_geq(before, 3, "no free huge pages");
	attr(&a, 2u << 20);
	c = shmbus_channel_create(mnt, "ch", &a, 0);
	cr_assert(c, "create on hugetlbfs: %s", shmbus_strerror(errno));
	shmbus_channel_info(c, &in);
	cr_expect_eq(in.huge_pages, 1);
	/* The control file: one huge page; the data file: the 2 MiB ring
	 * and the page holding its index. */
	cr_expect_eq(free_huge_pages(), before - 3, "control + data + index");
	p = shmbus_pub_open(c, NULL);
	s = shmbus_sub_open(c, NULL);
	cr_expect_eq(shmbus_publish(p, "huge", 4), 0);
	cr_expect_eq(shmbus_read(s, got, sizeof(got), NULL), 4);
	c2 = shmbus_channel_open(mnt, "ch");
	cr_expect(c2, "reopen: %s", shmbus_strerror(errno));
	shmbus_channel_close(c2);
	shmbus_sub_close(s);
	shmbus_pub_close(p);
	shmbus_channel_close(c);
	shmbus_channel_unlink(mnt, "ch");
	umount(mnt);
	rmdir(mnt);
	if (had < 8)
		write_long(nr, had);
}

/* Read-only inspection: what busstat and the daemon see.  White-box: the
 * internal handle gives the mapping to write through. */
static int write_to_ro(void *arg)
{
	shmbus_channel *c = shmbus_channel_open_ro(arg, "ch");

	if (!c)
		return 2;
	/* Die by the signal itself, not by a sanitizer's SEGV handler. */
	signal(SIGSEGV, SIG_DFL);
	store_relaxed64(&c->pl->head, 0);	/* must fault */
	return 0;
}

Test(layout, read_only_inspection, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	struct shmbus_sub_info si;
	struct shmbus_prod_info pi;
	shmbus_channel *c, *ro;
	shmbus_pub *p;
	shmbus_sub *s;
	char got[16];

	attr(&a, 8192);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	p = shmbus_pub_open(c, NULL);
	s = shmbus_sub_open(c, NULL);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(shmbus_publish(p, "0123456789", 10), 0);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(shmbus_read(s, got, sizeof(got), NULL), 10);
	ro = shmbus_channel_open_ro(dir, "ch");
	cr_assert(ro, "%s", shmbus_strerror(errno));
	cr_assert_null(shmbus_pub_open(ro, NULL));
	cr_assert_eq(errno, EPERM);
	cr_assert_null(shmbus_sub_open(ro, NULL));
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(shmbus_channel_subscriber(ro, 0, &si), 0);
	cr_assert_eq(si.pid, getpid());
	cr_assert(si.alive);
	cr_assert_eq(si.delivered, 4);
	cr_assert_eq(si.lag_msgs, 6);
	cr_assert_eq(si.lag_bytes, 6 * 32);	/* 16 + align8(10) each */
	cr_assert_eq(si.lost, 0);
	cr_assert_eq(shmbus_channel_subscriber(ro, 1, &si), -ENOENT);
	cr_assert_eq(shmbus_channel_subscriber(ro, 64, &si), -EINVAL);
	cr_assert_eq(shmbus_channel_producer(ro, 0, &pi), 0);
	cr_assert_eq(pi.published, 10);
	cr_assert_eq(pi.claiming, 0);
	cr_assert_eq(shmbus_channel_producer(ro, 16, &pi), -EINVAL);
	shmbus_channel_close(ro);
	shmbus_sub_close(s);
	shmbus_pub_close(p);
	shmbus_channel_close(c);
	cr_assert_eq(th_wait(th_spawn(write_to_ro, (void *)dir)), 128 + SIGSEGV,
		     "a write through the read-only mapping must fault");
}

/* This process's resident bytes, mappings of shared files included. */
static uint64_t resident(void)
{
	unsigned long size, res;
	FILE *f = fopen("/proc/self/statm", "r");

	cr_assert(f);
	cr_assert_eq(fscanf(f, "%lu %lu", &size, &res), 2);
	fclose(f);
	return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* An inspector (busstat, many times a second) maps the ring without
 * faulting its pages in; a channel opened for use faults them all, so
 * that no page fault lands on the data path. */
Test(layout, an_inspector_faults_no_ring_page_in, .init = setup,
     .fini = teardown)
{
	const uint64_t cap = 64u << 20;
	struct shmbus_channel_attr a;
	shmbus_channel *c, *ro;
	uint64_t before;

	attr(&a, cap);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(c, "%s", shmbus_strerror(errno));
	shmbus_channel_close(c);
	before = resident();
	ro = shmbus_channel_open_ro(dir, "ch");
	cr_assert(ro, "%s", shmbus_strerror(errno));
	cr_assert_lt(resident() - before, 1u << 20,
		     "open_ro made %llu bytes resident",
		     (unsigned long long)(resident() - before));
	shmbus_channel_close(ro);
	before = resident();
	c = shmbus_channel_open(dir, "ch");
	cr_assert(c);
	cr_assert_geq(resident() - before, cap);
	shmbus_channel_close(c);
}

/* Writes text to path (a file made if need be; a cgroup's is there). */
static bool write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	bool ok;

	if (fd < 0)
		return false;
	ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	close(fd);
	return ok;
}

/* Makes a memory cgroup below ours with `limit` bytes and moves process
 * pid into it; its directory in *dir.  False if this host has none we can
 * make (no memory controller, not root). */
static bool memcg_make(pid_t pid, uint64_t limit, char *cgd, size_t n)
{
	char line[4096], path[2048] = "", f[4400];
	bool v2 = false;
	FILE *cg = fopen("/proc/self/cgroup", "r");

	if (!cg)
		return false;
	while (fgets(line, sizeof(line), cg)) {
		char *c = strchr(line, ':'), *p = c ? strchr(c + 1, ':') : NULL;

		if (!p)
			continue;
		*p++ = 0;
		p[strcspn(p, "\n")] = 0;
		if (strstr(c + 1, "memory")) {
			snprintf(path, sizeof(path), "%s", p);
			v2 = false;
			break;
		}
		if (c == line + 1 && line[0] == '0' && !c[1]) {
			snprintf(path, sizeof(path), "%s", p);
			v2 = true;
		}
	}
	fclose(cg);
	if (!path[0])
		return false;
	snprintf(cgd, n, "%s%s/shmbus-test-%d",
		 v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory",
		 strcmp(path, "/") ? path : "", (int)getpid());
	if (v2) {	/* the controller for our cgroup's children */
		snprintf(f, sizeof(f), "%s/../cgroup.subtree_control", cgd);
		write_text(f, "+memory");
	}
	if (mkdir(cgd, 0755) < 0)
		return false;
	snprintf(f, sizeof(f), "%s/%s", cgd, v2 ? "memory.max"
						: "memory.limit_in_bytes");
	snprintf(line, sizeof(line), "%llu", (unsigned long long)limit);
	if (!write_text(f, line))
		return rmdir(cgd), false;
	snprintf(f, sizeof(f), "%s/cgroup.procs", cgd);
	snprintf(line, sizeof(line), "%d", (int)pid);
	if (!write_text(f, line))
		return rmdir(cgd), false;
	return true;
}

/* Writes dir/rel (making its directories) with text. */
static void put(const char *rel, const char *text)
{
	char path[512], *slash;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	for (slash = strchr(path + strlen(dir) + 1, '/'); slash;
	     slash = strchr(slash + 1, '/')) {
		*slash = 0;
		mkdir(path, 0755);
		*slash = '/';
	}
	cr_assert(write_text(path, text), "%s", path);
}

/* The room read from files laid out as cgroup v2 and v1 lay them out:
 * the least over the cgroup and its ancestors, up to the top level, of
 * limit - usage + page cache; "max" and missing files say nothing. */
Test(layout, the_memory_cgroups_room_is_read_from_either_version,
     .init = setup, .fini = teardown)
{
	char cg[512], v2[512], v1[512];

	snprintf(cg, sizeof(cg), "%s/cgroup", dir);
	snprintf(v2, sizeof(v2), "%s/v2", dir);
	snprintf(v1, sizeof(v1), "%s/v1", dir);
	/* v2, as systemd makes it: a unit's limit, its slice's, the top's. */
	put("cgroup", "0::/system.slice/shmbusd.service\n");
	put("v2/system.slice/shmbusd.service/memory.max", "100000000\n");
	put("v2/system.slice/shmbusd.service/memory.current", "60000000\n");
	put("v2/system.slice/shmbusd.service/memory.stat",
	    "anon 50000000\nfile 9000000\nactive_file 3000\n"
	    "inactive_file 2000\n");
	put("v2/system.slice/memory.max", "max\n");
	put("v2/system.slice/memory.current", "70000000\n");
	cr_assert_eq(sb_memcg_room_at(cg, v2, v1), 40005000u);
	/* A limit at the top level only (a container's namespace). */
	put("v2/memory.max", "80000000\n");
	put("v2/memory.current", "75000000\n");
	cr_assert_eq(sb_memcg_room_at(cg, v2, v1), 5000000u);
	/* v1 beside a named hierarchy: the memory line wins. */
	put("cgroup", "12:name=systemd:/x\n4:memory:/a/b\n0::/y\n");
	put("v1/a/b/memory.limit_in_bytes", "9223372036854771712\n");
	put("v1/a/b/memory.usage_in_bytes", "1000\n");
	put("v1/a/memory.limit_in_bytes", "50000000\n");
	put("v1/a/memory.usage_in_bytes", "20000000\n");
	put("v1/a/memory.stat", "cache 1\ntotal_inactive_file 100\n"
				"total_active_file 200\n");
	cr_assert_eq(sb_memcg_room_at(cg, v2, v1), 30000300u);
	/* No limit anywhere, or nothing readable: no limit. */
	put("cgroup", "0::/\n");
	put("v2/memory.max", "max\n");
	cr_assert_eq(sb_memcg_room_at(cg, v2, v1), UINT64_MAX);
	put("cgroup", "garbage\n");
	cr_assert_eq(sb_memcg_room_at(cg, v2, v1), UINT64_MAX);
}

/* In a cgroup of 48 MiB: a ring of 64 MiB refused, one of 8 MiB made. */
static int create_in_memcg(void *arg)
{
	struct shmbus_channel_attr a;
	shmbus_channel *c;
	int go;

	/* Moved into the cgroup by the parent first. */
	if (read(*(int *)arg, &go, sizeof(go)) != sizeof(go))
		return 1;
	attr(&a, 64u << 20);
	c = shmbus_channel_create(dir, "big", &a, 0);
	if (c || errno != ENOMEM)
		return 2;
	attr(&a, 8u << 20);
	c = shmbus_channel_create(dir, "small", &a, 0);
	if (!c)
		return 3;
	shmbus_channel_close(c);
	return 0;
}

/* A tmpfs page is charged to the memory cgroup of the process that
 * allocates it, and a charge past the limit inside fallocate() runs the
 * OOM killer on the creator (shmbusd under a unit's MemoryMax, for one).
 * A creator in a cgroup too small for the ring is told ENOMEM instead. */
Test(layout, a_ring_too_big_for_the_memory_cgroup_is_refused, .init = setup,
     .fini = teardown)
{
	char cg[4096];
	int p[2], go = 1, rc;
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	pid = th_spawn(create_in_memcg, &p[0]);
	if (!memcg_make(pid, 48u << 20, cg, sizeof(cg))) {
		kill(pid, SIGKILL);
		th_wait(pid);
		cr_skip_test("no memory cgroup can be made here");
	}
	cr_assert_eq(write(p[1], &go, sizeof(go)), (ssize_t)sizeof(go));
	rc = th_wait(pid);
	/* Its pages stay charged to the cgroup until the files go. */
	shmbus_channel_unlink(dir, "small");
	shmbus_channel_unlink(dir, "big");
	cr_assert_eq(rmdir(cg), 0, "%s: %s", cg, strerror(errno));
	cr_assert_eq(rc, 0, "exit %d (128 + 9: killed by the OOM killer)", rc);
}

/* A pid read from shared memory that would be negative as a pid_t (kill()
 * would take it as a process group, or as "every process") is no process. */
Test(layout, corrupt_slot_pid_is_not_alive, .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	struct shmbus_sub_info si;
	shmbus_channel *c;
	shmbus_sub *s;
	uint8_t *raw;
	size_t len;

	attr(&a, 8192);
	c = shmbus_channel_create(dir, "ch", &a, 0);
	s = shmbus_sub_open(c, NULL);
	cr_assert(s);
	raw = th_map_channel(dir, &len);
	cr_assert(raw);
	/* Subscriber slot 0: after the header; the pid is the high half of
	 * the owner word. */
	store_relaxed32((uint32_t *)(void *)(raw + SHMBUS_HDR_SIZE +
			offsetof(struct shmbus_sub_slot, owner) + 4), 0xffffffffu);
	cr_assert_eq(shmbus_channel_subscriber(c, 0, &si), 0);
	cr_assert_eq(si.alive, 0, "kill(-1, 0) answered for a corrupt pid");
	cr_assert_eq(si.pid, 0);
	munmap(raw, len);
	shmbus_sub_close(s);
	shmbus_channel_close(c);
}

/*
 * A create that fails leaves no channel: with RLIMIT_AS just too small to
 * map the control and the data file together (though each alone fits,
 * which building them needs), shmbus_channel_create() says ENOMEM, yet
 * it had linked the channel in place: a second create with
 * SHMBUS_CREATE_EXCL then says EEXIST for a channel nobody made.  Every
 * limit from a few pages short of the ring to a little past it is tried,
 * each in a child of its own; each create must give a channel, or fail
 * and leave the directory empty.
 */
static long vm_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = -1;

	if (f) {
		if (fscanf(f, "%ld", &pages) != 1)
			pages = -1;
		fclose(f);
	}
	return pages * sysconf(_SC_PAGESIZE);
}

static int create_under_limit(void *arg)
{
	long extra = *(long *)arg;
	struct shmbus_channel_attr a;
	struct rlimit r;
	shmbus_channel *c;
	char cmd[256];

	attr(&a, 64 << 20);
	r.rlim_cur = r.rlim_max = (rlim_t)(vm_bytes() + (64 << 20) +
					   extra * sysconf(_SC_PAGESIZE));
	if (setrlimit(RLIMIT_AS, &r))
		return 4;
	c = shmbus_channel_create(dir, "ch", &a, SHMBUS_CREATE_EXCL);
	if (c)
		return 0;	/* no limit to test here: the files stay */
	snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 0", dir);
	return system(cmd) == 0 ? 1 : 2;
}

Test(layout, a_create_that_fails_for_memory_leaves_no_channel, .init = setup,
     .fini = teardown)
{
	int failed = 0, left = 0;

	for (long extra = -16; extra <= 64; extra++) {
		char cmd[256];
		int rc = th_wait(th_spawn(create_under_limit, &extra));

		cr_assert(rc <= 2, "child: %d", rc);
		failed += rc != 0;
		if (rc == 2)
			left++;
		snprintf(cmd, sizeof(cmd), "rm -f %s/ch %s/.ch.*", dir, dir);
		cr_assert_eq(system(cmd), 0);
	}
	cr_assert_gt(failed, 0, "no limit made the create fail");
	cr_expect_eq(left, 0, "%d of %d failed creates left the channel in place",
		     left, failed);
}

/* The daemon's look at its words through a mapping whose page holding
 * them is read-only: any store faults. */
static int looks_at_the_daemons_words(void *arg)
{
	shmbus_channel *ch = arg;
	long page = sysconf(_SC_PAGESIZE);
	uintptr_t p = (uintptr_t)ch->daemon & ~(uintptr_t)(page - 1);

	/* Die by the signal itself, not by a sanitizer's SEGV handler. */
	signal(SIGSEGV, SIG_DFL);
	if (mprotect((void *)p, (size_t)page, PROT_READ))
		return 2;
	sb_repl_flags(ch, 0, 0);		/* at each journal sync */
	sb_jnl_persisted(ch, 0, true);
	sb_jnl_oldest(ch, 0, 65536, SHMBUS_JKEEP_RULE);	/* 10 times a second */
	sb_jnl_state(ch, 0, 0);
	sb_repl_flags_put(ch, SHMBUS_ACK_PERSISTED, SHMBUS_REPL_JOURNAL);
	sb_repl_epoch(ch, 3);
	return 0;
}

/* The line of shmbusd's area that holds the fence is read by every
 * claim: what shmbusd does often (a journal's sync looks at the
 * replication flags, its retention says why the oldest segment stays)
 * writes it only when a word there changes, or every producer would
 * take the line back after each. */
Test(layout, the_fences_line_is_written_only_when_a_word_on_it_changes,
     .init = setup, .fini = teardown)
{
	struct shmbus_channel_attr a;
	shmbus_channel *ch;
	int st;

	attr(&a, 1u << 16);
	ch = shmbus_channel_create(dir, "ch", &a, 0);
	cr_assert(ch, "%s", shmbus_strerror(errno));
	sb_jnl_setup(ch, "/journal", 16, true);
	sb_repl_epoch(ch, 3);
	sb_jnl_oldest(ch, 0, 65536, SHMBUS_JKEEP_RULE);
	st = th_wait(th_spawn(looks_at_the_daemons_words, ch));
	cr_assert_eq(st, 0, "the words unchanged were stored again (%d: "
		     "SIGSEGV is %d)", st, 128 + SIGSEGV);
	shmbus_channel_close(ch);
}
