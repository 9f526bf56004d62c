/* SPDX-License-Identifier: MIT */
/*
 * test_busstat.c - the busstat binary against channels with known counts:
 * the figures it reports are exactly those, a corrupt channel beside
 * healthy ones is flagged with its own exit code, and a missing bus or
 * channel is reported.  $BUSSTAT names the binary (set by make test).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/wait.h>

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

/* Runs busstat with `args`; returns its exit code, output in out. */
static int busstat(char *out, size_t len, const char *fmt, ...)
{
	const char *bin = getenv("BUSSTAT") ? getenv("BUSSTAT")
					    : "build/tools/busstat";
	char args[512], cmd[1024];
	va_list ap;
	size_t n;
	FILE *p;
	int st;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", bin, args);
	p = popen(cmd, "r");
	cr_assert(p, "popen: %s", strerror(errno));
	n = fread(out, 1, len - 1, p);
	out[n] = 0;
	st = pclose(p);
	cr_assert(WIFEXITED(st), "busstat died: %s", cmd);
	return WEXITSTATUS(st);
}

/* The number after "key": in a JSON text, starting at `from`. */
static long long json_num(const char *js, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(js, pat);
	cr_assert(p, "no %s in %s", key, js);
	return strtoll(p + strlen(pat), NULL, 10);
}

Test(busstat, reports_exact_counts_and_lag, .init = setup, .fini = teardown)
{
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	shmbus_sub *s = shmbus_sub_open(ch, NULL);
	static char out[65536];
	char buf[16];

	for (int i = 0; i < 100; i++)
		cr_assert_eq(shmbus_publish(p, "0123456789", 10), 0);
	for (int i = 0; i < 30; i++)
		cr_assert_eq(shmbus_read(s, buf, sizeof(buf), NULL), 10);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0, "%s", out);
	cr_assert_eq(json_num(out, "messages_published"), 100);
	cr_assert_eq(json_num(out, "bytes_published"), 1000);
	cr_assert_eq(json_num(out, "subscribers"), 1);
	cr_assert_eq(json_num(out, "publishers"), 1);
	cr_assert_eq(json_num(out, "max_lag_messages"), 70);
	cr_assert_eq(json_num(out, "max_lag_bytes"), 70 * 32);
	cr_assert_eq(json_num(out, "messages_lost"), 0);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch --json", dir), 0);
	cr_assert_eq(json_num(out, "delivered"), 30);
	cr_assert_eq(json_num(out, "lag_messages"), 70);
	cr_assert_eq(json_num(out, "pid"), getpid());
	cr_assert(strstr(out, "\"alive\":true"));

	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch", dir), 0);
	cr_assert(strstr(out, "alive"), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0);
	cr_assert(strstr(out, "CHANNEL") && strstr(out, "block"), "%s", out);

	shmbus_sub_close(s);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
}

Test(busstat, corrupt_channel_is_flagged, .init = setup, .fini = teardown)
{
	static char out[65536];
	struct shmbus_channel_attr a;
	shmbus_channel *good, *bad;
	uint8_t *raw;
	size_t len;
	char path[128];
	FILE *f;

	shmbus_channel_attr_init(&a);
	a.capacity = 8192;
	a.max_msg = 256;
	good = shmbus_channel_create(dir, "good", &a, 0);
	bad = th_create(dir, 8192, 256, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
	cr_assert(good && bad);
	raw = th_map_channel(dir, &len);	/* "ch" */
	cr_assert(raw);
	memset(raw + 8, 0xee, 64);		/* version, sizes... */
	snprintf(path, sizeof(path), "%s/junk", dir);
	f = fopen(path, "w");
	fputs("not a channel\n", f);
	fclose(f);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 3, "%s", out);
	cr_assert(strstr(out, "good") && strstr(out, "block"), "%s", out);
	cr_assert(strstr(out, "incompatible") || strstr(out, "corrupt"), "%s", out);
	cr_assert(strstr(out, "not-a-channel"), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 3);
	cr_assert(strstr(out, "\"name\":\"good\",\"status\":\"ok\""), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch", dir), 3);
	munmap(raw, len);
	shmbus_channel_close(good);
	shmbus_channel_close(bad);
}

Test(busstat, missing_bus_and_channel, .init = setup, .fini = teardown)
{
	static char out[4096];

	cr_assert_eq(busstat(out, sizeof(out), "-d %s/nope", dir), 2, "%s", out);
	cr_assert(strstr(out, "No such file"), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c nope", dir), 2);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s bogus", dir), 1);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0);
}
