/* SPDX-License-Identifier: MIT */
/*
 * memcg.c - how much more memory this process's memory cgroup lets it
 * take.  A tmpfs page is charged to the cgroup of the process that
 * allocates it, and a charge past the limit made inside a system call
 * (posix_fallocate() building a ring) runs the cgroup's OOM killer
 * rather than failing: a ring larger than the room left is refused before
 * it is built (-ENOMEM), not paid for with the process.
 *
 * The room is the least, over the cgroup and each of its ancestors, of
 * limit - usage + page cache (which the kernel reclaims before it kills); cgroup v2 at /sys/fs/cgroup, v1's memory controller at
 * /sys/fs/cgroup/memory.  Files that are not there (another layout, a
 * namespace whose root is elsewhere) say nothing: no limit.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "contract.h"

/* The first number in file dir/name (after `key` and a space, if key),
 * or UINT64_MAX: none, or "max". */
static uint64_t read_num(const char *dir, const char *name, const char *key)
{
	char path[4096 + 64], line[256];
	uint64_t v = UINT64_MAX;
	size_t kl = key ? strlen(key) : 0;
	FILE *f;

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    (int)sizeof(path))
		return UINT64_MAX;
	f = fopen(path, "re");
	if (!f)
		return UINT64_MAX;
	while (fgets(line, sizeof(line), f)) {
		char *end;
		unsigned long long n;

		if (key && (strncmp(line, key, kl) || line[kl] != ' '))
			continue;
		n = strtoull(line + (key ? kl + 1 : 0), &end, 10);
		if (end != line + (key ? kl + 1 : 0))
			v = (uint64_t)n;
		break;
	}
	fclose(f);
	return v;
}

/* The room one level gives, or UINT64_MAX if it sets no limit. */
static uint64_t level_room(const char *dir, bool v2)
{
	uint64_t lim = read_num(dir, v2 ? "memory.max" : "memory.limit_in_bytes",
				NULL);
	uint64_t use, cache, act;

	if (lim == UINT64_MAX || lim >= (UINT64_C(1) << 62))
		return UINT64_MAX;
	use = read_num(dir, v2 ? "memory.current" : "memory.usage_in_bytes",
		       NULL);
	if (use == UINT64_MAX)
		return UINT64_MAX;
	/* The page cache, which the kernel reclaims before it kills
	 * (tmpfs pages are on the anonymous lists, not these). */
	cache = read_num(dir, "memory.stat",
			 v2 ? "inactive_file" : "total_inactive_file");
	act = read_num(dir, "memory.stat",
		       v2 ? "active_file" : "total_active_file");
	if (cache == UINT64_MAX)
		cache = 0;
	if (act != UINT64_MAX)
		cache += act;
	return (lim > use ? lim - use : 0) + cache;
}

uint64_t sb_memcg_room(void)
{
	return sb_memcg_room_at("/proc/self/cgroup", "/sys/fs/cgroup",
				"/sys/fs/cgroup/memory");
}

uint64_t sb_memcg_room_at(const char *cgroup_file, const char *v2_root,
			  const char *v1_root)
{
	char line[4096], dir[4096 + 32];
	uint64_t room = UINT64_MAX;
	bool v2 = false, found = false;
	char *path = NULL;
	FILE *f = fopen(cgroup_file, "re");

	if (!f)
		return UINT64_MAX;
	/* "ID:CONTROLLERS:PATH": v1's memory line wins over v2's "0::". */
	while (fgets(line, sizeof(line), f)) {
		char *c = strchr(line, ':'), *p = c ? strchr(c + 1, ':') : NULL;
		bool mem;

		if (!p)
			continue;
		*p++ = 0;
		p[strcspn(p, "\n")] = 0;
		mem = strstr(c + 1, "memory") != NULL;
		/* v2: "0::PATH" (the second colon is the one zeroed). */
		if (mem || (!found && c == line + 1 && line[0] == '0' &&
			    c[1] == 0)) {
			free(path);
			path = strdup(p);
			v2 = !mem;
			found = true;
			if (mem)
				break;
		}
	}
	fclose(f);
	if (!path)
		return UINT64_MAX;
	for (;;) {
		uint64_t r;
		char *slash;

		snprintf(dir, sizeof(dir), "%s%s", v2 ? v2_root : v1_root,
			 path);
		r = level_room(dir, v2);
		if (r < room)
			room = r;
		/* Up to the top level too: in a cgroup namespace, the
		 * container's own limit is there. */
		if (!path[0] || !strcmp(path, "/"))
			break;
		slash = strrchr(path, '/');
		if (!slash)
			break;
		*slash = 0;
	}
	free(path);
	return room;
}
