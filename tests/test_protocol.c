/* SPDX-License-Identifier: MIT */
/*
 * test_protocol.c - the control protocol spoken raw to a real shmbusd: random
 * bytes, truncated, oversized, wrong magic and version, inconsistent
 * lengths, bad names and roles, unknown types.  Each gets its error reply,
 * and the daemon goes on serving everyone.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"

#include "shmbus/journal.h"
#include "shmbus/protocol.h"
#include "../lib/channel.h"
#include "../lib/contract.h"
#include "../lib/journal.h"

static int count_rows(const struct shmbus_bus_channel *c, void *arg)
{
	(void)c;
	++*(int *)arg;
	return 0;
}

/* Sends raw bytes; returns the reply's status (or 1 if none came). */
static int raw_call(int fd, const void *buf, size_t len)
{
	struct shmbus_ctl_hdr h;
	uint8_t rep[SHMBUS_CTL_MAX];
	struct timeval tv = { .tv_sec = 2 };
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(send(fd, buf, len, 0), (ssize_t)len);
	n = recv(fd, rep, sizeof(rep), 0);
	if (n < (ssize_t)sizeof(h))
		return 1;
	memcpy(&h, rep, sizeof(h));
	cr_assert_eq(h.magic, SHMBUS_CTL_MAGIC);
	return h.status;
}

static void hdr(uint8_t *buf, uint16_t type, uint32_t len)
{
	struct shmbus_ctl_hdr h = {
		.magic = SHMBUS_CTL_MAGIC, .version = SHMBUS_CTL_VERSION,
		.type = type, .id = 9, .len = len,
	};

	memcpy(buf, &h, sizeof(h));
}

Test(protocol, malformed_requests_get_errors, .init = setup, .fini = teardown)
{
	static uint8_t buf[70000];
	struct shmbus_ctl_open op = { .role = SHMBUS_CTL_ROLE_SUB };
	const size_t H = sizeof(struct shmbus_ctl_hdr);
	int fd = raw_connect(), rows = 0;
	shmbus_bus *bus;
	unsigned seed = 42;

	/* Random bytes of many lengths. */
	for (int i = 0; i < 300; i++) {
		size_t len = 1 + (size_t)rand_r(&seed) % 600;

		for (size_t j = 0; j < len; j++)
			buf[j] = (uint8_t)rand_r(&seed);
		cr_assert_lt(raw_call(fd, buf, len), 0);
	}
	/* Truncated: less than a header, and an empty datagram (not the
	 * peer closing). */
	hdr(buf, SHMBUS_CTL_HELLO, 0);
	cr_assert_eq(raw_call(fd, buf, 10), -EBADMSG);
	cr_assert_eq(raw_call(fd, buf, 0), -EBADMSG);
	/* Oversized: more than the protocol allows. */
	hdr(buf, SHMBUS_CTL_LIST, sizeof(buf) - H);
	cr_assert_eq(raw_call(fd, buf, sizeof(buf)), -EMSGSIZE);
	/* Wrong version, wrong magic. */
	hdr(buf, SHMBUS_CTL_HELLO, 0);
	((struct shmbus_ctl_hdr *)buf)->version = 99;
	cr_assert_eq(raw_call(fd, buf, H), -EPROTONOSUPPORT);
	hdr(buf, SHMBUS_CTL_HELLO, 0);
	((struct shmbus_ctl_hdr *)buf)->magic = 0x12345678;
	cr_assert_eq(raw_call(fd, buf, H), -EPROTO);
	/* The header's length disagrees with the datagram. */
	hdr(buf, SHMBUS_CTL_OPEN, 1000);
	cr_assert_eq(raw_call(fd, buf, H + 10), -EBADMSG);
	/* A body of the wrong size for its type. */
	hdr(buf, SHMBUS_CTL_OPEN, 10);
	cr_assert_eq(raw_call(fd, buf, H + 10), -EBADMSG);
	/* A name without its NUL, a path in a name, an unknown role. */
	memset(op.name, 'a', sizeof(op.name));
	hdr(buf, SHMBUS_CTL_OPEN, sizeof(op));
	memcpy(buf + H, &op, sizeof(op));
	cr_assert_eq(raw_call(fd, buf, H + sizeof(op)), -EINVAL);
	memset(op.name, 0, sizeof(op.name));
	strcpy(op.name, "../../etc/passwd");
	memcpy(buf + H, &op, sizeof(op));
	cr_assert_eq(raw_call(fd, buf, H + sizeof(op)), -EINVAL);
	strcpy(op.name, "blk");
	op.role = 77;
	memcpy(buf + H, &op, sizeof(op));
	cr_assert_eq(raw_call(fd, buf, H + sizeof(op)), -EINVAL);
	/* An unknown request type. */
	hdr(buf, 0x7777, 0);
	cr_assert_eq(raw_call(fd, buf, H), -EOPNOTSUPP);
	/* The same connection still works. */
	hdr(buf, SHMBUS_CTL_HELLO, 0);
	cr_assert_eq(raw_call(fd, buf, H), 0);
	close(fd);

	/* And the daemon serves everyone else. */
	cr_assert_eq(waitpid(d.pid, NULL, WNOHANG), 0, "shmbusd died");
	bus = shmbus_connect(d.sock);
	cr_assert(bus);
	cr_assert_eq(shmbus_bus_list(bus, count_rows, &rows), 4);
	shmbus_disconnect(bus);
	cr_assert(log_has("bad magic"));
	cr_assert(log_has("oversized request"));
}

/*
 * Well-formed requests that are refused (a replication request on a
 * daemon without [replication]: -EOPNOTSUPP; an open of a damaged
 * channel: -EBADMSG) are answers, not malformed requests: nothing is
 * logged as malformed, and the connection that made them is one that
 * completed requests.
 */
Test(protocol, a_refused_request_is_not_a_malformed_one, .init = setup,
     .fini = teardown)
{
	struct shmbus_ctl_repl_reply r;
	shmbus_channel *ch;
	char path[160];
	shmbus_bus *bus = shmbus_connect(d.sock);

	cr_assert(bus);
	cr_assert_eq(sb_bus_repl(bus, SHMBUS_REPL_OP_STATUS, 0, &r),
		     -EOPNOTSUPP);
	snprintf(path, sizeof(path), "%s/tiny", d.dir);
	cr_assert_eq(truncate(path, 4096), 0);
	ch = shmbus_bus_open(bus, "tiny", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert_null(ch);
	cr_assert_eq(errno, EBADMSG, "%s", strerror(errno));
	cr_assert_eq(sb_bus_repl(bus, SHMBUS_REPL_OP_STATUS, 0, &r),
		     -EOPNOTSUPP, "the connection was closed");
	shmbus_disconnect(bus);
	cr_assert_not(log_has("unknown request type"));
	cr_assert_not(log_has("wrong body size"));
}

/* JOURNAL LIST pages: a journal of more segments than one answer holds
 * (SHMBUS_CTL_JNL_MAX) is listed whole through shmbusd, each page asked
 * from the last base answered + SHMBUS_JSEG_MIN, and a page asked from a
 * base starts at the first segment at or past it. */
Test(protocol, a_journal_of_many_segments_is_listed_page_by_page)
{
	const size_t n = 2 * SHMBUS_CTL_JNL_MAX + 100;
	char jdir[64], cdir[128], path[200], conf[512];
	struct sb_jreader r;
	uint64_t *bases, page[SHMBUS_CTL_JNL_MAX];
	shmbus_bus *bus;
	size_t k = 0;

	snprintf(jdir, sizeof(jdir), "%s", th_mkdir());
	snprintf(cdir, sizeof(cdir), "%s/c", jdir);
	cr_assert_eq(mkdir(cdir, 0700), 0);
	for (size_t i = 0; i < n; i++) {
		int fd;

		cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir,
					  i * SHMBUS_JSEG_MIN), 0);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		cr_assert(fd >= 0);
		close(fd);
	}
	snprintf(conf, sizeof(conf), "journal_dir = %s\n[defaults]\n"
		 "subscribe = *\n[channel c]\ncapacity = 64K\n", jdir);
	setup_with(conf);
	bus = shmbus_connect(d.sock);
	cr_assert(bus);
	memset(&r, 0, sizeof(r));
	r.bus = bus;
	snprintf(r.chan, sizeof(r.chan), "c");
	{ int rc_ = sb_jreader_list(&r, &bases, &k); cr_assert_eq(rc_, 0, "rc %d k %zu", rc_, k); }
	cr_assert_eq(k, n, "listed %zu segments of %zu", k, n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(bases[i], i * SHMBUS_JSEG_MIN, "segment %zu", i);
	free(bases);
	/* From a base that is no segment's: the next one on. */
	cr_assert_eq(unlink(path), 0);	/* the newest */
	cr_assert_eq(sb_bus_journal(bus, "c", SHMBUS_CTL_JNL_LIST,
				    (n - 1) * SHMBUS_JSEG_MIN, page,
				    SHMBUS_CTL_JNL_MAX, &k), 0);
	cr_assert_eq(k, 0);
	cr_assert_eq(sb_bus_journal(bus, "c", SHMBUS_CTL_JNL_LIST,
				    (n - 150) * SHMBUS_JSEG_MIN, page,
				    SHMBUS_CTL_JNL_MAX, &k), 0);
	cr_assert_eq(k, 149);
	cr_assert_eq(page[0], (n - 150) * SHMBUS_JSEG_MIN);
	shmbus_disconnect(bus);
	teardown();
	th_rmdir(cdir);
	th_rmdir(jdir);
}

/* GROUP's body by version: without data_id (608 bytes) in versions 1 and
 * 2, with it (616) from 3 on; a data_id not the channel's (a handle of a
 * channel deleted and made again since) is refused, a join as a deletion,
 * and 0 means whichever channel the name leads to. */
Test(protocol, a_group_request_is_sized_by_its_version, .init = setup,
     .fini = teardown)
{
	static uint8_t buf[1024];
	const size_t H = sizeof(struct shmbus_ctl_hdr);
	struct shmbus_ctl_group g = { .channel = "blk", .group = "g" };
	shmbus_channel *ch = shmbus_channel_open(d.dir, "blk");
	uint64_t id;
	int fd = raw_connect();
	struct {
		uint16_t version;
		uint32_t len;
		uint64_t data_id;
		uint32_t flags;
		int status;
	} cases[] = {
		{ 2, SHMBUS_CTL_GROUP_V2_LEN, 0, 0, 0 },
		{ 1, SHMBUS_CTL_GROUP_V2_LEN, 0, 0, 0 },
		{ 3, SHMBUS_CTL_GROUP_V2_LEN, 0, 0, -EBADMSG },
		{ 2, sizeof(g), 0, 0, -EBADMSG },
		{ 3, sizeof(g), 0, 0, 0 },
		{ 3, sizeof(g), 1, 0, 0 },	/* 1: the channel's id */
		{ 3, sizeof(g), 2, 0, -ESTALE },	/* 2: another */
		{ 3, sizeof(g), 2, SHMBUS_CTL_GROUP_DELETE, -ESTALE },
		{ 3, sizeof(g), 1, SHMBUS_CTL_GROUP_DELETE, 0 },
		{ 3, sizeof(g), 1, SHMBUS_CTL_GROUP_DELETE, -ENOENT },
		/* After a stale request, one of version 2: its data_id is
		 * not the last request's left over. */
		{ 3, sizeof(g), 2, 0, -ESTALE },
		{ 2, SHMBUS_CTL_GROUP_V2_LEN, 0, 0, 0 },
	};

	cr_assert(ch);
	id = sb_channel_data_id(ch);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct shmbus_ctl_hdr *h = (struct shmbus_ctl_hdr *)buf;

		g.data_id = cases[i].data_id == 1 ? id :
			    cases[i].data_id == 2 ? id ^ 1 : 0;
		g.flags = cases[i].flags;
		hdr(buf, SHMBUS_CTL_GROUP, cases[i].len);
		h->version = cases[i].version;
		memcpy(buf + H, &g, cases[i].len);
		cr_expect_eq(raw_call(fd, buf, H + cases[i].len),
			     cases[i].status, "case %zu", i);
	}
	close(fd);
	shmbus_channel_close(ch);
}
