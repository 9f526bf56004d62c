/* SPDX-License-Identifier: MIT */
/*
 * fuzz_control.c - control-protocol requests as shmbusd parses them.
 *
 * The daemon's own objects (all but main.o) are linked in: a request goes
 * through sbd_control_serve(), which reads one datagram from a client's
 * socket, checks it and dispatches it, exactly as the daemon's loop does.
 * The client's socket here is one end of a SOCK_SEQPACKET socketpair; the
 * harness writes the fuzzed datagrams into the other end and reads every
 * reply back (closing any descriptor it carries).
 *
 * The input is a sequence of requests (at most MAX_REQ):
 *
 *   u8  who   bits 0-2: the client's identity (see ids[]: root, the
 *             daemon's user, a publisher, an admin by gid, anyone else);
 *             bit 7: pad the datagram past SHMBUS_CTL_MAX (oversized)
 *   u16 len   then len bytes of datagram (header and body)
 *
 * The daemon runs on a private directory in /dev/shm with two configured
 * channels ("feed", "multi"); requests may create (up to max_channels 4,
 * files of at most FSIZE_MAX bytes: RLIMIT_FSIZE keeps a fuzzed capacity
 * from filling /dev/shm), open, describe, list and delete.  After each
 * input every channel a request created is deleted and the configured
 * ones are restored, so inputs do not depend on one another.
 *
 * Checked: every request gets exactly one reply, well-formed (magic,
 * version, type | REPLY, the request's id, len matching the datagram, a
 * status from docs/protocol.md's table); an OPEN that succeeds passes two
 * descriptors, nothing else passes any; the directory holds nothing but
 * channel files afterwards.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../daemon/shmbusd.h"
#include "fuzz.h"

/* main.c's, which is not linked. */
struct sbd_state sbd;

#define MAX_REQ		32
#define FSIZE_MAX	(4u << 20)
#define SELF_UID	999u

static const struct {
	uid_t uid;
	gid_t gids[3];
	int ngids;
} ids[8] = {
	{ 0, { 0 }, 1 },		/* root */
	{ SELF_UID, { 999 }, 1 },	/* the daemon's own user */
	{ 1000, { 1000, 20 }, 2 },	/* may publish on "feed" */
	{ 1001, { 1001 }, 1 },		/* admin by uid */
	{ 1002, { 1002, 2001 }, 2 },	/* admin by gid */
	{ 65534, { 65534 }, 1 },	/* nobody */
	{ 1003, { 1003, 20, 2002 }, 3 },
	{ 4000000000u, { 4000000000u }, 1 },
};

static int sv[2] = { -1, -1 };
static struct sbd_client *client;
static struct sbd_chan_conf confs[2];
static bool ready;

static void reset(void);

static void set_rule(struct sbd_rule *r, const char *text)
{
	char err[256];

	FUZZ_CHECK(sbd_rule_parse(text, r, err, sizeof(err)) == 0);
}

static void conf_chan(struct sbd_chan_conf *cc, const char *name,
		      enum shmbus_policy pol, enum shmbus_producers prod,
		      const char *pub, const char *sub)
{
	memset(cc, 0, sizeof(*cc));
	snprintf(cc->name, sizeof(cc->name), "%s", name);
	shmbus_channel_attr_init(&cc->attr);
	cc->attr.capacity = 4096;
	cc->attr.max_msg = 1024;
	cc->attr.policy = pol;
	cc->attr.producers = prod;
	cc->owner = cc->group = -1;
	set_rule(&cc->pub, pub);
	set_rule(&cc->sub, sub);
	cc->pub_set = cc->sub_set = true;
}

void fuzz_control_cleanup(void)
{
	if (!ready)
		return;
	fuzz_rmdir(sbd.conf.shm_dir);
	ready = false;
}

static void setup(void)
{
	struct rlimit fsize = { FSIZE_MAX, FSIZE_MAX };
	const char *dir = fuzz_mkdir("control");

	/* A fuzzed CREATE may ask for 16 GiB: ftruncate() fails with EFBIG
	 * instead of filling /dev/shm (and SIGXFSZ must not kill us). */
	signal(SIGXFSZ, SIG_IGN);
	FUZZ_CHECK(setrlimit(RLIMIT_FSIZE, &fsize) == 0);
	sbd_log_setup(-1, false);	/* below SBD_ERR: silent */
	snprintf(sbd.conf.shm_dir, sizeof(sbd.conf.shm_dir), "%s", dir);
	free((void *)dir);
	snprintf(sbd.conf.bus, sizeof(sbd.conf.bus), "fuzz");
	sbd.conf.max_channels = 4;
	sbd.conf.max_clients = 16;
	sbd.conf.reap_ms = 20;
	set_rule(&sbd.conf.admins, "uid:1001 gid:2001");
	set_rule(&sbd.conf.def_pub, "none");
	set_rule(&sbd.conf.def_sub, "*");
	sbd.self_uid = SELF_UID;
	sbd.self_pid = getpid();
	sbd.listen_fd = sbd.epoll_fd = -1;
	rcu_register_thread();
	FUZZ_CHECK(sbd_registry_init() == 0);
	conf_chan(&confs[0], "feed", SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER,
		  "uid:1000", "*");
	conf_chan(&confs[1], "multi", SHMBUS_OVERWRITE, SHMBUS_MULTI_PRODUCER,
		  "gid:20", "gid:2002 uid:1000");
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
			      sv) == 0);
	client = calloc(1, sizeof(*client));
	FUZZ_CHECK(client != NULL);
	client->fd = sv[0];
	client->pid = getpid();
	sbd_client_add(client);
	sbd.nclients = 1;
	ready = true;
	atexit(fuzz_control_cleanup);
	reset();
}

/* Whether a request made a group of channel `name` (its file). */
static bool has_groups(const char *name)
{
	size_t n = strlen(name);
	struct dirent *e;
	bool yes = false;
	DIR *d = opendir(sbd.conf.shm_dir);

	FUZZ_CHECK(d != NULL);
	while (!yes && (e = readdir(d)))
		yes = e->d_name[0] == '.' && !strncmp(e->d_name + 1, name, n) &&
		      e->d_name[n + 1] == '@';
	closedir(d);
	return yes;
}

/* Deletes what requests created (the two channels too, made again, when
 * a request made a group of them: a group holds a slot of its channel),
 * restores what they deleted. */
static void reset(void)
{
	struct cds_lfht_iter it;
	struct sbd_chan *c;
	bool removed = false;
	DIR *d;
	struct dirent *e;

	rcu_read_lock();
	cds_lfht_for_each_entry(sbd_chans(), &it, c, node) {
		if ((!strcmp(c->name, "feed") || !strcmp(c->name, "multi")) &&
		    !has_groups(c->name))
			continue;
		shmbus_channel_unlink(sbd.conf.shm_dir, c->name);
		sbd_chan_remove(c);
		removed = true;
	}
	rcu_read_unlock();
	if (removed)
		rcu_barrier();	/* their mappings and descriptors are gone */
	for (int i = 0; i < 2; i++) {
		rcu_read_lock();
		c = sbd_chan_find(confs[i].name);
		rcu_read_unlock();
		if (!c)
			FUZZ_CHECK(sbd_channel_setup(&confs[i], true) == 0);
	}
	client->nopen = 0;
	/* Nothing but the two channels' four files: a failed request left
	 * no temporary file behind. */
	d = opendir(sbd.conf.shm_dir);
	FUZZ_CHECK(d != NULL);
	while ((e = readdir(d))) {
		const char *n = e->d_name;

		if (!strcmp(n, ".") || !strcmp(n, "..") ||
		    !strcmp(n, "feed") || !strcmp(n, "multi") ||
		    !strncmp(n, ".feed.", 6) || !strncmp(n, ".multi.", 7))
			continue;
		fprintf(stderr, "left in %s: %s\n", sbd.conf.shm_dir, n);
		FUZZ_CHECK(!"a file left behind");
	}
	closedir(d);
}

static bool status_ok(int32_t s)
{
	static const int errs[] = { 0, EBADMSG, EMSGSIZE, EPROTO,
				    EPROTONOSUPPORT, EOPNOTSUPP, EINVAL,
				    ENOENT, EEXIST, ENOSPC, EACCES,
				    /* GROUP: a stale handle's, one it may
				     * not make, one with a live member or
				     * being deleted */
				    ESTALE, EPERM, EBUSY, EIDRM,
				    /* a CREATE that the system refuses */
				    EFBIG, ENOMEM, ENAMETOOLONG, EMFILE,
				    /* OPEN to publish on a standby's ring */
				    EROFS };

	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
		if (s == -errs[i])
			return true;
	return false;
}

/* Whether a successful reply to request `q` (body after it in req, n
 * bytes in all) passes descriptors: two, the same or a pair. */
static bool passes_fds(const struct shmbus_ctl_hdr *q, const uint8_t *req,
		       size_t n)
{
	struct shmbus_ctl_group g;
	struct shmbus_ctl_journal j;
	const uint8_t *body = req + sizeof(*q);

	switch (q->type) {
	case SHMBUS_CTL_OPEN:
		return true;
	case SHMBUS_CTL_GROUP:	/* a join; a deletion passes none */
		FUZZ_CHECK(n >= sizeof(*q) + SHMBUS_CTL_GROUP_V2_LEN);
		memcpy(&g, body, SHMBUS_CTL_GROUP_V2_LEN);
		return g.flags != SHMBUS_CTL_GROUP_DELETE;
	case SHMBUS_CTL_JOURNAL:	/* a segment or its index */
		FUZZ_CHECK(n >= sizeof(*q) + sizeof(j));
		memcpy(&j, body, sizeof(j));
		return j.what != SHMBUS_CTL_JNL_LIST;
	default:
		return false;
	}
}

/* Reads the reply to `req` (n bytes sent), if any, and checks it. */
static void take_reply(const uint8_t *req, size_t n)
{
	static uint8_t buf[SHMBUS_CTL_MAX + 1];
	struct shmbus_ctl_hdr h, q = { 0 };
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	union {
		struct cmsghdr c;
		char b[CMSG_SPACE(8 * sizeof(int))];
	} ctl;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *c;
	int nfds = 0;
	ssize_t got = recvmsg(sv[1], &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	FUZZ_CHECK(got >= 0 || errno == EAGAIN);
	if (got < 0)
		return;
	for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) /
					       sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
			FUZZ_CHECK(fcntl(fd, F_GETFD) >= 0);
			close(fd);
			nfds++;
		}
	}
	FUZZ_CHECK(!(m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)));
	FUZZ_CHECK((size_t)got >= sizeof(h));
	memcpy(&h, buf, sizeof(h));
	if (n >= sizeof(q))
		memcpy(&q, req, sizeof(q));
	/* The request's version if the daemon speaks it, else its own. */
	FUZZ_CHECK(h.magic == SHMBUS_CTL_MAGIC && h.reserved == 0 &&
		   h.version == (q.version >= SHMBUS_CTL_VERSION_MIN &&
				 q.version <= SHMBUS_CTL_VERSION ?
				 q.version : SHMBUS_CTL_VERSION));
	FUZZ_CHECK(h.len == (size_t)got - sizeof(h));
	FUZZ_CHECK(status_ok(h.status));
	/* A refusal carries nothing, or (version 2) a reason: printable
	 * text ending with its NUL, within SHMBUS_CTL_REASON. */
	if (h.status != 0 && h.len) {
		const char *why = (const char *)buf + sizeof(h);

		FUZZ_CHECK(h.version >= 2 && h.len >= 2 &&
			   h.len <= SHMBUS_CTL_REASON &&
			   strnlen(why, h.len) == h.len - 1);
		for (uint32_t i = 0; i + 1 < h.len; i++)
			FUZZ_CHECK((unsigned char)why[i] >= 0x20 &&
				   why[i] != 0x7f);
	}
	FUZZ_CHECK(h.type & SHMBUS_CTL_REPLY);
	if (h.status == 0) {
		/* Only a well-formed request succeeds: its header is echoed. */
		FUZZ_CHECK(h.type == (q.type | SHMBUS_CTL_REPLY) &&
			   h.id == q.id);
		FUZZ_CHECK(nfds == (passes_fds(&q, req, n) ? 2 : 0));
	} else {
		FUZZ_CHECK(nfds == 0);
	}
	if (h.status == 0 && q.type == SHMBUS_CTL_LIST) {
		struct shmbus_ctl_list l;

		FUZZ_CHECK(h.len >= sizeof(l));
		memcpy(&l, buf + sizeof(h), sizeof(l));
		FUZZ_CHECK(l.count <= SHMBUS_CTL_LIST_PAGE &&
			   h.len == sizeof(l) + l.count *
					   sizeof(struct shmbus_ctl_entry) &&
			   l.total <= sbd.conf.max_channels + 2u);
	}
}

int fuzz_control_one(const uint8_t *data, size_t size)
{
	static uint8_t dgram[SHMBUS_CTL_MAX + 64];
	struct fuzz_in in = { data, size };

	if (!ready)
		setup();
	for (int r = 0; r < MAX_REQ && in.n; r++) {
		uint8_t who = fuzz_u8(&in);
		size_t n = fuzz_u16(&in);

		n = n < in.n ? n : in.n;
		memcpy(dgram, in.p, n);
		in.p += n;
		in.n -= n;
		if (who & 0x80) {
			memset(dgram + n, 0, sizeof(dgram) - n);
			n = SHMBUS_CTL_MAX + 1;
		}
		client->uid = ids[who & 7].uid;
		client->ngids = ids[who & 7].ngids;
		memcpy(client->gids, ids[who & 7].gids,
		       sizeof(ids[0].gids));
		FUZZ_CHECK(send(sv[1], dgram, n, MSG_DONTWAIT) == (ssize_t)n);
		/* Every datagram, an empty one too, is a request the
		 * connection outlives (the peer has not closed). */
		FUZZ_CHECK(sbd_control_serve(client));
		take_reply(dgram, n);
		/* One reply per request, not more. */
		FUZZ_CHECK(recv(sv[1], dgram, 1, MSG_DONTWAIT | MSG_PEEK) < 0 &&
			   errno == EAGAIN);
	}
	reset();
	return 0;
}

#ifndef SHMBUS_FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_control_one(data, size);
}

/* ---------------------------------------------------------- seed corpus */

/* Appends one request: who, u16 length, header, body. */
static void req(struct seed *sd, unsigned who, unsigned type,
		const void *body, uint32_t len)
{
	struct shmbus_ctl_hdr h = {
		.magic = SHMBUS_CTL_MAGIC, .version = SHMBUS_CTL_VERSION,
		.type = (uint16_t)type, .id = (uint32_t)sd->n, .len = len,
	};
	size_t n = sizeof(h) + len;

	FUZZ_CHECK(sd->n + 3 + n <= sizeof(sd->b));
	sd->b[sd->n++] = (uint8_t)who;
	sd->b[sd->n++] = (uint8_t)n;
	sd->b[sd->n++] = (uint8_t)(n >> 8);
	memcpy(sd->b + sd->n, &h, sizeof(h));
	if (len)
		memcpy(sd->b + sd->n + sizeof(h), body, len);
	sd->n += n;
}

static void name_req(struct seed *sd, unsigned who, unsigned type,
		     const char *name)
{
	struct shmbus_ctl_name q = { { 0 } };

	snprintf(q.name, sizeof(q.name), "%s", name);
	req(sd, who, type, &q, sizeof(q));
}

static void open_req(struct seed *sd, unsigned who, unsigned type,
		     uint32_t role, const char *name)
{
	struct shmbus_ctl_open q = { .role = role };

	snprintf(q.name, sizeof(q.name), "%s", name);
	req(sd, who, type, &q, sizeof(q));
}

static void create_req(struct seed *sd, unsigned who, const char *name,
		       uint64_t cap, uint32_t max_msg, uint32_t policy,
		       uint32_t producers)
{
	struct shmbus_ctl_create q = {
		.capacity = cap, .max_msg = max_msg, .policy = policy,
		.producers = producers, .numa_node = -1, .mode = 0640,
	};

	snprintf(q.name, sizeof(q.name), "%s", name);
	req(sd, who, SHMBUS_CTL_CREATE, &q, sizeof(q));
}

static void write_seed(const char *dir, const char *name, struct seed *sd)
{
	fuzz_write_seed(dir, name, sd->b, sd->n);
	sd->n = 0;
}

/* SHMBUS_FUZZ_SEEDS=dir: writes the seed corpus there and exits (make
 * fuzz-seeds): each request type alone, then sequences. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("SHMBUS_FUZZ_SEEDS");
	static struct seed sd;
	struct shmbus_ctl_list list = { 0 };
	struct shmbus_ctl_hdr bad = {
		.magic = SHMBUS_CTL_MAGIC, .version = SHMBUS_CTL_VERSION,
		.type = SHMBUS_CTL_HELLO,
	};
	struct shmbus_ctl_group grp = { .mode = 0 };

	(void)argc;
	(void)argv;
	if (!dir)
		return 0;
	req(&sd, 5, SHMBUS_CTL_HELLO, NULL, 0);
	write_seed(dir, "hello", &sd);
	open_req(&sd, 2, SHMBUS_CTL_OPEN, SHMBUS_CTL_ROLE_PUB, "feed");
	open_req(&sd, 5, SHMBUS_CTL_OPEN, SHMBUS_CTL_ROLE_SUB, "feed");
	write_seed(dir, "open", &sd);
	open_req(&sd, 6, SHMBUS_CTL_ATTACH, SHMBUS_CTL_ROLE_SUB, "multi");
	open_req(&sd, 5, SHMBUS_CTL_ATTACH, SHMBUS_CTL_ROLE_PUB, "multi");
	write_seed(dir, "attach", &sd);
	create_req(&sd, 3, "new", 4096, 512, SHMBUS_BLOCK,
		   SHMBUS_SINGLE_PRODUCER);
	write_seed(dir, "create", &sd);
	name_req(&sd, 0, SHMBUS_CTL_DELETE, "multi");
	write_seed(dir, "delete", &sd);
	req(&sd, 5, SHMBUS_CTL_LIST, &list, sizeof(list));
	write_seed(dir, "list", &sd);
	name_req(&sd, 5, SHMBUS_CTL_DESCRIBE, "feed");
	write_seed(dir, "describe", &sd);
	/* a group joined, by a handle of another channel, deleted */
	strcpy(grp.channel, "feed");
	strcpy(grp.group, "g");
	req(&sd, 0, SHMBUS_CTL_GROUP, &grp, sizeof(grp));
	grp.data_id = 1;
	req(&sd, 5, SHMBUS_CTL_GROUP, &grp, sizeof(grp));
	grp.flags = SHMBUS_CTL_GROUP_DELETE;
	req(&sd, 0, SHMBUS_CTL_GROUP, &grp, sizeof(grp));
	grp.data_id = 0;
	req(&sd, 0, SHMBUS_CTL_GROUP, &grp, sizeof(grp));
	write_seed(dir, "group", &sd);
	/* the same in version 2, without data_id */
	grp.flags = 0;
	for (int i = 0; i < 2; i++) {
		uint16_t v2 = 2;
		size_t at = sd.n;

		req(&sd, 5, SHMBUS_CTL_GROUP, &grp, SHMBUS_CTL_GROUP_V2_LEN);
		memcpy(sd.b + at + 3 + offsetof(struct shmbus_ctl_hdr, version),
		       &v2, sizeof(v2));
		grp.flags = SHMBUS_CTL_GROUP_DELETE;
	}
	write_seed(dir, "group_v2", &sd);
	/* a channel's life: created by an admin (by gid), opened, listed,
	 * described, refused to others, deleted, gone */
	create_req(&sd, 4, "life", 8192, 100, SHMBUS_OVERWRITE,
		   SHMBUS_MULTI_PRODUCER);
	create_req(&sd, 4, "life", 8192, 100, SHMBUS_OVERWRITE,
		   SHMBUS_MULTI_PRODUCER);
	create_req(&sd, 5, "other", 4096, 100, SHMBUS_BLOCK,
		   SHMBUS_SINGLE_PRODUCER);
	open_req(&sd, 1, SHMBUS_CTL_OPEN, SHMBUS_CTL_ROLE_PUB, "life");
	open_req(&sd, 5, SHMBUS_CTL_OPEN, SHMBUS_CTL_ROLE_SUB, "life");
	open_req(&sd, 5, SHMBUS_CTL_OPEN, SHMBUS_CTL_ROLE_PUB, "life");
	req(&sd, 5, SHMBUS_CTL_LIST, &list, sizeof(list));
	name_req(&sd, 5, SHMBUS_CTL_DESCRIBE, "life");
	name_req(&sd, 5, SHMBUS_CTL_DELETE, "life");
	name_req(&sd, 3, SHMBUS_CTL_DELETE, "life");
	name_req(&sd, 3, SHMBUS_CTL_DESCRIBE, "life");
	write_seed(dir, "life", &sd);
	/* max_channels, geometry the library refuses, bad names */
	create_req(&sd, 0, "a", 4096, 64, 0, 0);
	create_req(&sd, 0, "b", 4096, 64, 0, 0);
	create_req(&sd, 0, "c", 4096, 64, 0, 0);
	create_req(&sd, 0, "d", 3000, 64, 0, 0);
	create_req(&sd, 0, "e", 4096, 4000, 0, 0);
	create_req(&sd, 0, "f", UINT64_C(1) << 34, 64, 0, 0);
	create_req(&sd, 0, ".hidden", 4096, 64, 0, 0);
	name_req(&sd, 0, SHMBUS_CTL_DESCRIBE, "../etc");
	write_seed(dir, "limits", &sd);
	/* malformed: bad magic, version, reserved, a body too short, an
	 * unknown type, a reply's type, truncated, oversized, empty */
	bad.magic = 0x12345678;
	req(&sd, 5, SHMBUS_CTL_HELLO, NULL, 0);
	memcpy(sd.b + 3, &bad, sizeof(bad));
	bad.magic = SHMBUS_CTL_MAGIC;
	bad.version = 99;
	req(&sd, 5, SHMBUS_CTL_HELLO, NULL, 0);
	memcpy(sd.b + sd.n - sizeof(bad), &bad, sizeof(bad));
	req(&sd, 5, SHMBUS_CTL_DESCRIBE, "x", 1);
	req(&sd, 5, 9, NULL, 0);
	req(&sd, 5, SHMBUS_CTL_HELLO | SHMBUS_CTL_REPLY, NULL, 0);
	sd.b[sd.n++] = 5;
	sd.b[sd.n++] = 10;
	sd.b[sd.n++] = 0;
	memcpy(sd.b + sd.n, &bad, 10);
	sd.n += 10;
	req(&sd, 0x85, SHMBUS_CTL_HELLO, NULL, 0);
	write_seed(dir, "malformed", &sd);
	exit(0);
}
#endif
