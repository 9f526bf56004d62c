/* SPDX-License-Identifier: MIT */
/*
 * test_config.c - every kind of wrong line in a shmbusd config is reported
 * as "file:line: reason" and stops the daemon (exit 2), before it touches
 * anything.  Runs the real binary ($SHMBUSD) with -t, and once without.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/contract.h"

static const char *shmbusd_path(void)
{
	const char *p = getenv("SHMBUSD");

	return p && *p ? p : "build/shmbusd";
}

/* Runs shmbusd on `text` in the file dir/name; returns its exit code and
 * its stderr in out. */
static int run_named(const char *dir, const char *name, const char *text,
		     bool check_only, char *out, size_t cap)
{
	char conf[192], err[128];
	FILE *f;
	pid_t pid;
	size_t n;
	int rc;

	snprintf(conf, sizeof(conf), "%s/%s", dir, name);
	snprintf(err, sizeof(err), "%s/stderr", dir);
	f = fopen(conf, "w");
	cr_assert(f);
	fputs(text, f);
	fclose(f);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		dup2(fd, 2);
		dup2(fd, 1);
		execl(shmbusd_path(), "shmbusd", "-c", conf,
		      check_only ? "-t" : NULL, (char *)NULL);
		_exit(127);
	}
	rc = th_wait(pid);
	f = fopen(err, "r");
	cr_assert(f);
	n = fread(out, 1, cap - 1, f);
	out[n] = 0;
	fclose(f);
	return rc;
}

static int run(const char *dir, const char *text, bool check_only,
	       char *out, size_t cap)
{
	return run_named(dir, "bad.conf", text, check_only, out, cap);
}

struct bad {
	const char *text;
	int line;
	const char *reason;
};

static const struct bad cases[] = {
	{ "[bus]\nname = x\nfrobnicate = 3\n", 3,
	  "unknown key 'frobnicate' in [bus]" },
	{ "[bus]\n[channels a]\n", 2, "unknown section [channels a]" },
	{ "[bus]\n[channel a]\ncapacity = 3000\n", 3,
	  "capacity 3000 is not a power of two" },
	{ "[bus]\n[channel a]\ncapacity = lots\n", 3,
	  "capacity: 'lots': expected a number" },
	{ "[channel a]\ncapacity = 4K\nmax_msg = 1M\n", 3,
	  "max_msg 1048576 is too large for capacity 4096" },
	{ "[channel a]\npolicy = fifo\n", 2,
	  "policy: 'fifo': expected block or overwrite" },
	{ "[channel a]\nproducers = many\n", 2,
	  "producers: 'many': expected single or multi" },
	{ "[channel a]\nnuma_node = 99\n", 2,
	  "numa_node: NUMA node 99 does not exist on this machine" },
	{ "[channel a]\nsubscribe = user:no-such-user-here\n", 2,
	  "subscribe: unknown user 'no-such-user-here'" },
	{ "[channel a]\npublish = group:no-such-group\n", 2,
	  "publish: unknown group 'no-such-group'" },
	{ "[channel a]\npublish = everybody\n", 2,
	  "publish: 'everybody': expected user:NAME" },
	{ "[channel a]\nmode = 0999\n", 2,
	  "mode: '0999': expected an octal mode" },
	{ "[channel a]\nmode = 0400\n", 2,
	  "mode: '0400': the owner needs read and write" },
	{ "[channel a]\n\n[channel a]\n", 3, "channel 'a' is defined twice" },
	{ "[channel ../etc]\n", 1, "'../etc': a channel name is" },
	{ "[bus]\nthis line has no equals sign\n", 2, "syntax error" },
	{ "name = x\n", 1, "'name' outside any section" },
	{ "[bus]\nname = .hidden\n", 2,
	  "name: '.hidden': a name may not start with '.'" },
	{ "[bus]\nreap_interval_ms = 500\n", 2,
	  "reap_interval_ms: '500': expected 1 to 100" },
	{ "[bus]\nsocket = relative.sock\n", 2,
	  "socket: 'relative.sock': expected an absolute path" },
	{ "[bus]\nlog_level = chatty\n", 2, "log_level: 'chatty'" },
	{ "[bus]\nremove_on_exit = maybe\n", 2,
	  "remove_on_exit: 'maybe': expected yes or no" },
	{ "[bus]\nmax_channels = 0\n", 2, "max_channels: '0'" },
	{ "[bus]\nmax_clients_per_uid = 0\n", 2,
	  "max_clients_per_uid: '0': expected 1 to 1000000" },
	{ "[bus]\nmax_clients = 100\nmax_clients_per_uid = 200\n", 3,
	  "max_clients_per_uid: 200 is more than the 94 places" },
	{ "[bus]\nreserved_clients = -1\n", 2,
	  "reserved_clients: '-1': expected a number" },
	{ "[bus]\nreserved_clients = 64\nmax_clients = 64\n", 2,
	  "reserved_clients: 64 leaves no place for other users" },
	{ "[bus]\nidle_timeout_ms = 5\n", 2,
	  "idle_timeout_ms: '5': expected 10 to 3600000" },
	{ "[bus]\nidle_timeout_ms = 2s\n", 2,
	  "idle_timeout_ms: '2s': unexpected 's'" },
	{ "[channel a]\ncapacity =\n", 2, "capacity: a value is required" },
	/* One [bus], one [defaults], each key once, and a [bus] at all. */
	{ "[bus]\nname = a\n[channel x]\n[bus]\nname = b\n", 4,
	  "a second [bus] section (the first is on line 1)" },
	{ "[bus]\n[defaults]\nsubscribe = *\n[defaults]\n", 4,
	  "a second [defaults] section (the first is on line 2)" },
	{ "[bus]\nname = a\nmax_clients = 10\nname = b\n", 4,
	  "name: set twice in this section (first on line 2)" },
	{ "[bus]\n[channel x]\ncapacity = 4K\npolicy = block\n"
	  "capacity = 8K\n", 5,
	  "capacity: set twice in this section (first on line 3)" },
	{ "[bus]\n[defaults]\npublish = *\npublish = none\n", 4,
	  "publish: set twice in this section" },
	{ "; only channels\n[channel x]\ncapacity = 4K\n", 2,
	  "no [bus] section" },
	{ "", 1, "no [bus] section (the file has no section at all)" },
	{ "; nothing but comments\n# here\n", 1, "no [bus] section" },
	/* The library's rule, in its words. */
	{ "[bus]\n[channel a]\ncapacity = 32G\n", 3,
	  "capacity 34359738368 (32 GiB) is more than 16 GiB" },
	{ "[bus]\n[channel a]\ncapacity = 64K\nmax_msg = 32737\n", 4,
	  "at most 32736 (capacity/2 - 32)" },
	/* Consumer groups, one line per channel. */
	{ "[bus]\n[channel a]\nconsumer_groups = .bad\n", 3,
	  "consumer_groups: '.bad': a group name is 1 to 63" },
	{ "[bus]\n[channel a]\nconsumer_groups = w mode=fanout\n", 3,
	  "mode='fanout': expected shared, keyed or single_active" },
	{ "[bus]\n[channel a]\nconsumer_groups = w window=100\n", 3,
	  "group 'w': window must be a power of two" },
	{ "[bus]\n[channel a]\nconsumer_groups = w lanes\n", 3,
	  "'lanes': expected key=value" },
	{ "[bus]\n[channel a]\nconsumer_groups = w x; w mode=keyed\n", 3,
	  "'x': expected key=value" },
	{ "[bus]\n[channel a]\nconsumer_groups = w; w\n", 3,
	  "group 'w' named twice" },
	{ "[bus]\n[channel a]\nconsumer_groups = w lease_ms=99999999999\n", 3,
	  "lease_ms='99999999999': expected a number" },
	{ "[bus]\n[channel a]\nconsumer_groups = w color=red\n", 3,
	  "'color': unknown group setting" },
	{ "[channel a]\nconsumer_groups = w dead_letter=d\n[channel d]\n", 1,
	  "group w's dead_letter 'd' is a single-producer channel" },
	/* The journal's keys. */
	{ "[bus]\n[channel a]\njournal = maybe\n", 3,
	  "journal: 'maybe': expected yes or no" },
	{ "[bus]\n[channel a]\njournal = on\njournal_fsync = always\n", 4,
	  "'always': batch, interval or none" },
	{ "[bus]\n[channel a]\ncapacity = 1M\njournal = on\n"
	  "journal_segment = 512K\n", 5,
	  "journal_segment: a power of two from 64K to 1G, and at least the "
	  "capacity" },
	{ "[bus]\n[channel a]\njournal = on\njournal_segment = 100K\n", 4,
	  "journal_segment: a power of two" },
	{ "[bus]\n[channel a]\ncapacity = 2G\njournal = on\n", 4,
	  "journal = on needs a capacity of at most 1G" },
	{ "[bus]\n[channel a]\njournal = on\n"
	  "journal_retain_ms = 9223372036854775808\n", 4,
	  "'9223372036854775808': too large (at most 2^53 ms)" },
	{ "[bus]\n[channel a]\nacknowledge = persisted\n", 2,
	  "acknowledge = persisted needs journal = on" },
	{ "[bus]\n[channel a]\njournal = on\njournal_fsync = none\n"
	  "acknowledge = persisted\n", 3,
	  "needs journal_fsync batch or interval" },
	{ "[bus]\n[channel a]\njournal = on\nacknowledge = disk\n", 4,
	  "'disk': local or persisted" },
	{ "[bus]\n[channel a]\njournal = on\njournal_fsync_ms = 0\n", 4,
	  "journal_fsync_ms: '0': expected 1 to 60000" },
	{ "[bus]\njournal_min_free = lots\n", 2,
	  "journal_min_free: 'lots'" },
	{ "[bus]\n[replication]\nrole = primary\nlisten = 1.2.3.4:5\n"
	  "peer = 1.2.3.5:5\nkey_file = /k\n[channel a]\n"
	  "replicate = both_persisted\n", 7,
	  "replicate = standby_persisted or both_persisted needs journal = on" },
	{ "[bus]\n[replication]\nrole = primary\nlisten = 1.2.3.4:5\n"
	  "peer = 1.2.3.5:5\nkey_file = /k\n[channel a]\njournal = on\n"
	  "journal_fsync = none\nreplicate = standby_persisted\n", 8,
	  "needs journal_fsync batch or interval (with none" },
	{ "[bus]\n[replication]\nrole = primary\nlisten = 1.2.3.4:5\n"
	  "peer = 1.2.3.5:5\nkey_file = /k\nsync_timeout_ms = 100\n"
	  "[channel a]\njournal = on\njournal_fsync = interval\n"
	  "journal_fsync_ms = 60\nreplicate = both_persisted\n", 9,
	  "journal_fsync_ms at most half of sync_timeout_ms" },
	/* [replication] cpus. */
	{ "[bus]\n[replication]\ncpus = x\n", 3,
	  "cpus: 'x': a list of CPU numbers and ranges (0-3,8) below 1024" },
	{ "[bus]\n[replication]\ncpus = 1-0\n", 3, "'1-0': a list of CPU" },
	{ "[bus]\n[replication]\ncpus = 0,\n", 3, "'0,': a list of CPU" },
	{ "[bus]\n[replication]\ncpus = 0-\n", 3, "'0-': a list of CPU" },
	{ "[bus]\n[replication]\ncpus = 4096\n", 3, "'4096': a list of CPU" },
	{ "[bus]\n[replication]\ncpus = 0,1023\n", 3,
	  "'0,1023': CPU 1023 is not one this process may run on" },
	{ "[bus]\n[channel a]\nreplicate = persisted\n", 3,
	  "'persisted': off, local, received, applied, standby_persisted or "
	  "both_persisted" },
	/* Text after a header: not a key of the section it opens. */
	{ "[bus]\n[channel a] capacity = 1G\n", 2,
	  "text after the section's header" },
	/* A journal_segment that will not do is named by its own line. */
	{ "[bus]\n[channel a]\ncapacity = 64K\njournal_segment = 100K\n"
	  "journal = on\n", 4,
	  "channel 'a': journal_segment: a power of two from 64K to 1G" },
	/* Groups the library would refuse to make at start. */
	{ "[bus]\n[channel a]\npolicy = overwrite\n"
	  "consumer_groups = g mode=keyed\n", 2,
	  "channel 'a': group g: keyed and single_active groups need "
	  "policy = block" },
	{ "[bus]\n[channel a]\npolicy = overwrite\n"
	  "consumer_groups = g mode=shared; h mode=single_active\n", 2,
	  "group h: keyed and single_active groups need policy = block" },
	/* A key file that will not do: a config error, before anything. */
	{ "[bus]\n[replication]\nrole = primary\nlisten = 127.0.0.1:1\n"
	  "peer = 127.0.0.1:2\nkey_file = /nonexistent/key\n", 2,
	  "[replication] key file /nonexistent/key: No such file or "
	  "directory" },
};

Test(config, each_bad_line_is_reported_with_file_and_line)
{
	const char *dir = th_mkdir();
	char out[4096], want[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = run(dir, cases[i].text, true, out, sizeof(out));

		snprintf(want, sizeof(want), "%s/bad.conf:%d: ", dir,
			 cases[i].line);
		cr_expect_eq(rc, 2, "case %zu: exit %d", i, rc);
		cr_expect(strstr(out, want), "case %zu: no '%s' in: %s", i,
			  want, out);
		cr_expect(strstr(out, cases[i].reason),
			  "case %zu: no '%s' in: %s", i, cases[i].reason, out);
	}
	th_rmdir(dir);
}

/* The bus's name taken from the file's name follows the rule of the name
 * key; a group whose name and its channel's are too long for its file's
 * name is refused by the check, not at start. */
Test(config, names_made_from_other_names_follow_the_rules)
{
	const char *dir = th_mkdir();
	char out[4096], text[512], chan[181], group[61];

	cr_assert_eq(run_named(dir, "bad name.conf", "[bus]\n", true, out,
			       sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "bad name.conf:1: [bus] has no name, and the "
			 "file's name up to its first dot is no bus name: "
			 "'bad name': only letters"), "%s", out);
	cr_assert_eq(run_named(dir, ".hidden.conf", "[bus]\n", true, out,
			       sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "expected a name of 1 to 63"), "%s", out);
	cr_assert_eq(run_named(dir, "good-name.x.conf", "[bus]\n", true, out,
			       sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "ok (bus good-name, 0 channels)"), "%s", out);
	memset(chan, 'c', 180);
	chan[180] = 0;
	memset(group, 'g', 60);
	group[60] = 0;
	snprintf(text, sizeof(text), "[bus]\n[channel %s]\n"
		 "consumer_groups = %s\n", chan, group);
	cr_assert_eq(run(dir, text, true, out, sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "bad.conf:2: channel 'ccc"), "%s", out);
	cr_assert(strstr(out, "its name and the channel's are 240 bytes "
			 "together, at most 235"), "%s", out);
	group[55] = 0;
	snprintf(text, sizeof(text), "[bus]\n[channel %s]\n"
		 "consumer_groups = %s\n", chan, group);
	cr_assert_eq(run(dir, text, true, out, sizeof(out)), 0, "%s", out);
	th_rmdir(dir);
}

/* A config that is not a regular file is refused at once: a device whose
 * lines never end (/dev/zero) does not keep the check reading, a FIFO
 * does not keep it waiting for a writer. */
Test(config, a_config_that_is_no_file_is_refused_at_once)
{
	const char *dir = th_mkdir();
	char fifo[128];
	const char *paths[] = { "/dev/zero", "/dev/null", fifo };

	snprintf(fifo, sizeof(fifo), "%s/fifo.conf", dir);
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	for (size_t i = 0; i < 3; i++) {
		pid_t pid = fork();
		int64_t t0 = (int64_t)th_now_ns();

		cr_assert(pid >= 0);
		if (pid == 0) {
			int fd = open("/dev/null", O_WRONLY);

			dup2(fd, 2);
			alarm(5);
			execl(shmbusd_path(), "shmbusd", "-t", "-c", paths[i],
			      (char *)NULL);
			_exit(127);
		}
		cr_assert_eq(th_wait(pid), 2, "%s", paths[i]);
		cr_assert_lt((int64_t)th_now_ns() - t0, 2000000000, "%s",
			     paths[i]);
	}
	/* Nor does a key file that is a FIFO. */
	{
		char text[512], out[1024];
		int64_t t0 = (int64_t)th_now_ns();

		snprintf(text, sizeof(text), "[bus]\n[replication]\n"
			 "role = primary\nlisten = 127.0.0.1:1\n"
			 "peer = 127.0.0.1:2\nkey_file = %s\n", fifo);
		cr_assert_eq(run(dir, text, true, out, sizeof(out)), 2, "%s",
			     out);
		cr_assert(strstr(out, "not a regular file"), "%s", out);
		cr_assert_lt((int64_t)th_now_ns() - t0, 2000000000);
	}
	th_rmdir(dir);
}

Test(config, a_long_line_is_an_error_not_two_lines)
{
	const char *dir = th_mkdir();
	char text[1024], out[4096], want[256];

	snprintf(text, sizeof(text), "[bus]\nname = %0400d\n", 7);
	cr_assert_eq(run(dir, text, true, out, sizeof(out)), 2);
	snprintf(want, sizeof(want), "%s/bad.conf:2: line too long", dir);
	cr_assert(strstr(out, want), "%s", out);
	th_rmdir(dir);
}

/* A header after a form feed, vertical tab or carriage return opens its
 * section (inih skips any white space; so do we), and a NUL byte, which
 * would hide the rest of its line, is an error naming the line. */
Test(config, odd_bytes_before_a_header_or_in_a_line)
{
	static const char ff[] = "[bus]\n[channel a]\ncapacity = 64K\n"
				 "\f[channel b]\npolicy = overwrite\n"
				 "\v[channel c]\n\r[channel d]\n";
	static const char nul[] = "[bus]\n\0max_clients = 5\n";
	const char *dir = th_mkdir();
	char out[4096], want[256], path[128];
	FILE *f;

	cr_assert_eq(run(dir, ff, true, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "4 channels"), "%s", out);
	/* Spaces inside the brackets, as ever. */
	cr_assert_eq(run(dir, "[ bus ]\n[ channel a ]\ncapacity = 8K\n", true,
			 out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "1 channel)"), "%s", out);
	snprintf(path, sizeof(path), "%s/nul.conf", dir);
	f = fopen(path, "w");
	cr_assert(f);
	cr_assert_eq(fwrite(nul, 1, sizeof(nul) - 1, f), sizeof(nul) - 1);
	fclose(f);
	{
		char cmd[512];

		snprintf(cmd, sizeof(cmd), "%s -t -c %s > %s/out 2>&1",
			 shmbusd_path(), path, dir);
		cr_assert_eq(WEXITSTATUS(system(cmd)), 2);
		snprintf(cmd, sizeof(cmd), "%s/out", dir);
		f = fopen(cmd, "r");
		cr_assert(f);
		out[fread(out, 1, sizeof(out) - 1, f)] = 0;
		fclose(f);
	}
	snprintf(want, sizeof(want), "nul.conf:2: a NUL byte in the line");
	cr_assert(strstr(out, want), "%s", out);
	th_rmdir(dir);
}

Test(config, a_bad_config_stops_the_daemon_before_anything)
{
	const char *dir = th_mkdir();
	char text[512], out[4096];

	/* Not -t: the daemon itself refuses, and creates nothing. */
	snprintf(text, sizeof(text),
		 "[bus]\nshm_dir = %s/shm\nsocket = %s/s.sock\n"
		 "[channel a]\ncapacity = 4K\n[channel b]\npolicy = fast\n",
		 dir, dir);
	cr_assert_eq(run(dir, text, false, out, sizeof(out)), 2);
	cr_assert(strstr(out, "bad.conf:7: policy"), "%s", out);
	{
		char p[128];

		snprintf(p, sizeof(p), "%s/shm", dir);
		cr_assert_eq(access(p, F_OK), -1, "created the shm dir");
		snprintf(p, sizeof(p), "%s/s.sock", dir);
		cr_assert_eq(access(p, F_OK), -1, "made a socket");
	}
	th_rmdir(dir);
}

Test(config, a_good_config_passes_the_check)
{
	const char *dir = th_mkdir();
	char out[4096];

	cr_assert_eq(run(dir, "; a comment\n[bus]\nname = ok\nadmins = uid:0 "
			      "group:root\nmax_clients_per_uid = 32\n"
			      "reserved_clients = 8\nidle_timeout_ms = 2000\n"
			      "[defaults]\nsubscribe = *\n"
			      "publish = none\n[channel a]\n[channel b]\n"
			      "capacity = 2M\nmax_msg = 64KiB\n"
			      "policy = overwrite\nproducers = multi\n"
			      "numa_node = 0\nmode = 0640\nowner = root\n"
			      "group = root\npublish = user:root uid:0, gid:0\n"
			      "journal = on\njournal_fsync = interval\n"
			      "journal_fsync_ms = 5\njournal_fsync_bytes = 64K\n"
			      "journal_segment = 4M\njournal_retain_ms = 60000\n"
			      "journal_retain_bytes = 1G\n"
			      "acknowledge = persisted\n",
		     true, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "ok (bus ok, 2 channels)"), "%s", out);
	th_rmdir(dir);
}

/* The same key in two sections is two keys; the largest max_msg the rule
 * allows is accepted, and a small channel needs no max_msg. */
Test(config, the_same_key_in_two_sections_and_the_size_rule)
{
	const char *dir = th_mkdir();
	char out[4096];

	cr_assert_eq(run(dir, "[bus]\n[defaults]\npublish = *\n"
			      "[channel a]\npublish = *\ncapacity = 64K\n"
			      "max_msg = 32736\n[channel b]\npublish = *\n"
			      "capacity = 4K\n",
		     true, out, sizeof(out)), 0, "%s", out);
	th_rmdir(dir);
}

/* One rule for sizes, shared by the config file and shmbusctl. */
Test(config, sizes_have_one_rule)
{
	static const struct {
		const char *s;
		int rc;
		uint64_t v;
	} sizes[] = {
		{ "0", 0, 0 }, { "4096", 0, 4096 }, { "64K", 0, 65536 },
		{ "64k", 0, 65536 }, { "64KiB", 0, 65536 },
		{ "64kib", 0, 65536 }, { "1M", 0, 1u << 20 },
		{ "2G", 0, UINT64_C(2) << 30 },
		{ "18446744073709551615", 0, UINT64_MAX },
		{ "18446744073709551616", -ERANGE, 0 },
		{ "17179869184G", -ERANGE, 0 },	/* 2^34 G = 2^64 */
		{ "17179869183G", 0, UINT64_C(17179869183) << 30 },
		{ "", -EINVAL, 0 }, { "K", -EINVAL, 0 }, { "-1", -EINVAL, 0 },
		{ "+1", -EINVAL, 0 }, { " 1", -EINVAL, 0 }, { "1 ", -EINVAL, 0 },
		{ "1T", -EINVAL, 0 }, { "1KB", -EINVAL, 0 },
		{ "1Ki", -EINVAL, 0 }, { "1KiBs", -EINVAL, 0 },
		{ "0x10", -EINVAL, 0 },
	};

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t v = 12345;
		int rc = sb_parse_size(sizes[i].s, &v);

		cr_assert_eq(rc, sizes[i].rc, "'%s': %d", sizes[i].s, rc);
		cr_assert_eq(v, rc ? 12345 : sizes[i].v, "'%s'", sizes[i].s);
	}
}

/*
 * A channel's name as long as a line allows (inih keeps only the first 49
 * bytes of a section's name): two channels whose names share far more
 * than that are two, each with its own keys (a max_msg only the larger
 * capacity allows would be refused on the other).
 */
Test(config, long_channel_names_in_section_headers)
{
	const char *dir = th_mkdir();
	char text[1024], a[160], b[160], out[4096];

	memset(a, 'a', 150);
	a[150] = 0;
	memcpy(b, a, sizeof(b));
	b[149] = 'b';
	snprintf(text, sizeof(text), "[bus]\n[defaults]\npublish = *\n"
		 "[channel %s]\ncapacity = 4K\nmax_msg = 2016\n"
		 "[channel %s]\ncapacity = 64K\nmax_msg = 32736\n", a, b);
	cr_assert_eq(run(dir, text, true, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "2 channels"), "%s", out);
	th_rmdir(dir);
}

/* A bus replicates at most 64 channels (a promotion names them all in one
 * frame): the 65th is a config error, so that a reload, which checks the
 * same way, cannot accept what the next start would refuse. */
Test(config, at_most_64_channels_are_replicated)
{
	const char *dir = th_mkdir();
	char text[8192], out[4096], want[256], key[192];
	int len, rc, fd;

	snprintf(key, sizeof(key), "%s/key", dir);
	fd = open(key, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "0123456789abcdefghijklmnopqrstuvwxyz", 36),
		     36);
	close(fd);

	for (int nrepl = 64; nrepl <= 65; nrepl++) {
		len = snprintf(text, sizeof(text), "[bus]\n[replication]\n"
			       "role = primary\nlisten = 127.0.0.1:1\n"
			       "peer = 127.0.0.1:2\nkey_file = %s\n", key);
		for (int i = 0; i < nrepl; i++)
			len += snprintf(text + len, sizeof(text) - len,
					"[channel c%d]\nreplicate = local\n", i);
		cr_assert_lt(len, (int)sizeof(text));
		rc = run(dir, text, true, out, sizeof(out));
		if (nrepl == 64) {
			cr_expect_eq(rc, 0, "64 channels: exit %d: %s", rc, out);
			continue;
		}
		/* The 65th channel's header: six lines, then two a channel. */
		snprintf(want, sizeof(want), "%s/bad.conf:%d: channel 'c64': "
			 "more than 64 replicated channels", dir, 7 + 2 * 64);
		cr_expect_eq(rc, 2, "65 channels: exit %d", rc);
		cr_expect(strstr(out, want), "no '%s' in: %s", want, out);
	}
	unlink(key);
	th_rmdir(dir);
}
