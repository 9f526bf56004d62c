/* SPDX-License-Identifier: MIT */
/*
 * test_hostile_peer.c - peers that hold the key and misbehave.  A standby
 * shmbusd linked to a "primary" that says what no primary says: a restart
 * position near 2^64, an unaligned one in a new epoch, records whose
 * sequence numbers go back; each is refused with a log line, and the
 * standby's ring, its epoch history and its shutdown stay sound.  A
 * primary shmbusd whose "standby" links again and again without getting
 * further: it falls out of sync all the same.  The tests speak the
 * protocol with shmbusd's own frames and proof (daemon/wire.c,
 * daemon/tcp.c), over loopback.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../daemon/repl.h"
#include "../lib/contract.h"
#include "daemon_fixture.h"
#include "helpers.h"
#include "shmbus/layout.h"

#define CAP (1u << 20)

static char state[64], addr[64];
static int lfd = -1;

/* A daemon of `role` for channel "sp", whose peer is us: we listen at
 * addr (lfd) for a standby's link; a primary listens at paddr. */
static char paddr[64];

static void pair_with_us(const char *role)
{
	char conf[1024], key[128], why[256];
	int port = 20000 + (int)(getpid() % 10000) * 2, fd;

	snprintf(state, sizeof(state), "%s", th_mkdir());
	snprintf(key, sizeof(key), "%s/key", state);
	fd = open(key, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "0123456789abcdef0123456789abcdef", 32), 32);
	close(fd);
	/* Ours first: a standby connects to it; and the daemon's, free as
	 * far as we can tell. */
	for (;; port += 2) {
		int probe;

		cr_assert_lt(port, 60000, "no free port: %s", why);
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
		snprintf(paddr, sizeof(paddr), "127.0.0.1:%d", port + 1);
		if (sbd_tcp.listen(paddr, &probe, why, sizeof(why)))
			continue;
		close(probe);
		if (sbd_tcp.listen(addr, &lfd, why, sizeof(why)) == 0)
			break;
	}
	cr_assert_eq(rw_key_load(key, why, sizeof(why)), 0, "%s", why);
	snprintf(conf, sizeof(conf),
		 "[replication]\nrole = %s\nlisten = %s\n"
		 "peer = %s\nkey_file = %s\nstate_dir = %s/state\n"
		 "sync_timeout_ms = 1000\n"
		 "[channel sp]\ncapacity = 1M\nmax_msg = 4K\n"
		 "replicate = applied\n", role, paddr, addr, key, state);
	setup_with(conf);
}

static void standby_setup(void)
{
	pair_with_us("standby");
}

static void primary_setup(void)
{
	pair_with_us("primary");
}

static void standby_fini(void)
{
	teardown();
	if (lfd >= 0)
		close(lfd);
	lfd = -1;
	th_rmdir(state);
}

TestSuite(hostile_primary, .init = standby_setup, .fini = standby_fini,
	  .timeout = 60);

/* Accepts the standby's link and proves the key: its hello's epoch, end
 * and channel id come back. */
static struct sbd_link *link_up(struct rw_hello *hi, uint64_t *chan)
{
	struct sbd_link *l;
	struct rw_hdr h;
	char why[256];

	cr_assert_eq(sbd_tcp.accept(lfd, &l), 0);
	cr_assert_eq(rw_auth_server(&sbd_tcp, l, "test", 2000, why,
				    sizeof(why)), 0, "%s", why);
	cr_assert_eq(rw_recv_frame(&sbd_tcp, l, &h, hi, sizeof(*hi), 2000,
				   why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(h.type, RW_HELLO);
	*chan = h.chan;
	return l;
}

static void send_frame(struct sbd_link *l, uint16_t type, uint64_t epoch,
		       uint64_t chan, uint64_t pos, const void *body,
		       size_t len)
{
	struct iovec iov = { (void *)body, len };
	struct rw_hdr h;

	rw_seal(&h, type, epoch, chan, pos, &iov, 1);
	cr_assert_eq(sbd_tcp.send(l, &h, &iov, 1, 2000), 0);
}

static void accept_tagged(struct sbd_link *l, uint64_t epoch,
			  uint64_t chan, uint64_t pos, uint32_t restart,
			  uint64_t tag)
{
	struct rw_accept acc = { .restart = restart, .tag = tag };

	send_frame(l, RW_ACCEPT, epoch, chan, pos, &acc, sizeof(acc));
}

static void accept_at(struct sbd_link *l, uint64_t epoch, uint64_t chan,
		      uint64_t pos, uint32_t restart)
{
	accept_tagged(l, epoch, chan, pos, restart, 0);
}

/* Whether the standby dropped the link: its next read ends. */
static bool dropped(struct sbd_link *l)
{
	struct rw_hdr h;
	uint8_t buf[64];
	char why[256];

	for (;;) {
		int rc = rw_recv_frame(&sbd_tcp, l, &h, buf, sizeof(buf), 3000,
				       why, sizeof(why));

		if (rc == -ETIMEDOUT)
			return false;
		if (rc)
			return true;
	}
}

static bool log_wait(const char *what)
{
	for (int i = 0; i < 300; i++) {
		if (log_has(what))
			return true;
		usleep(10000);
	}
	return false;
}

static uint64_t name_hash(const char *name)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * UINT64_C(0x100000001b3);
	return h;
}

static uint64_t chan_of_sp;

/* A gap to just below 2^64: every sum the standby makes with it would
 * wrap (its wait for room, the segment index, the padding). */
Test(hostile_primary, a_restart_position_near_2_64_is_refused)
{
	struct rw_hello hi;
	struct sbd_link *l;
	uint64_t chan;

	l = link_up(&hi, &chan);
	accept_at(l, hi.epoch > 0 ? hi.epoch : 1, chan,
		  UINT64_MAX - 7, RW_RESTART_GAP);
	cr_assert(dropped(l), "the standby kept the link");
	sbd_tcp.close(l);
	cr_assert(log_wait("out of range"));
	/* And it still stops (a linker looping on the position would
	 * not): teardown() checks the exit. */
}

/* A newer epoch whose start is not a record boundary: refused before the
 * epoch is recorded, so the history stays loadable across a restart. */
Test(hostile_primary, a_refused_acceptance_leaves_no_epoch_behind)
{
	char path[128], buf[256] = "";
	struct rw_hello hi;
	struct sbd_link *l;
	uint64_t chan;
	FILE *f;

	l = link_up(&hi, &chan);
	accept_at(l, hi.epoch + 5, chan, hi.end + 4, RW_RESTART_NONE);
	cr_assert(dropped(l));
	sbd_tcp.close(l);
	cr_assert(log_wait("refused"));
	snprintf(path, sizeof(path), "%s/state/epochs", state);
	f = fopen(path, "r");
	if (f) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);

		buf[n] = 0;
		fclose(f);
	}
	snprintf(path, sizeof(path), "%llu sp",
		 (unsigned long long)(hi.epoch + 5));
	cr_assert_null(strstr(buf, path), "recorded: %s", buf);
	/* Restarted, it loads its history and links again. */
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	start_daemon();
	l = link_up(&hi, &chan);
	sbd_tcp.close(l);
}

/* The history file's text (at most n - 1 bytes). */
static void read_history(char *buf, size_t n)
{
	char path[128];
	FILE *f;

	buf[0] = 0;
	snprintf(path, sizeof(path), "%s/state/epochs", state);
	f = fopen(path, "r");
	if (f) {
		size_t k = fread(buf, 1, n - 1, f);

		buf[k] = 0;
		fclose(f);
	}
}

/*
 * Two hosts primary at one epoch (each promoted by force while they were
 * apart): this standby followed promotion T1 at epoch 1, and a primary
 * at epoch 1 by promotion T2 offers to ship to it.  Its records of epoch
 * 1 are not that primary's, so it drops the link and records nothing;
 * matched by the epoch alone, it would take that primary's records after
 * its own.  The standby's hello names the tag it recorded.
 */
Test(hostile_primary, a_primary_at_our_epoch_by_another_promotion_is_refused)
{
	const uint64_t t1 = 0x1111222233334444u, t2 = 0x5555666677778888u;
	struct rw_hello hi;
	struct sbd_link *l;
	struct rw_hdr h;
	uint64_t chan;
	char buf[512] = "", why[256];

	l = link_up(&hi, &chan);
	cr_assert_eq(hi.epoch, 0);
	accept_tagged(l, 1, chan, hi.end, RW_RESTART_NONE, t1);
	for (int i = 0; i < 300 && !strstr(buf, "1 sp 0 "); i++) {
		usleep(10000);
		read_history(buf, sizeof(buf));
	}
	cr_assert_str_eq(buf, "1 sp 0 1111222233334444\n");
	sbd_tcp.close(l);
	l = link_up(&hi, &chan);
	cr_assert_eq(hi.epoch, 1);
	cr_assert_eq(hi.tag, t1, "hello tag %llx",
		     (unsigned long long)hi.tag);
	accept_tagged(l, 1, chan, hi.end, RW_RESTART_NONE, t2);
	cr_assert(dropped(l), "the standby kept the link");
	sbd_tcp.close(l);
	cr_assert(log_wait("by another promotion (5555666677778888) than "
			   "the one this host followed (1111222233334444)"));
	read_history(buf, sizeof(buf));
	cr_assert_str_eq(buf, "1 sp 0 1111222233334444\n");
	/* The promotion it followed is linked again: a ping is answered. */
	l = link_up(&hi, &chan);
	accept_tagged(l, 1, chan, hi.end, RW_RESTART_NONE, t1);
	send_frame(l, RW_PING, 1, chan, hi.end, NULL, 0);
	cr_assert_eq(rw_recv_frame(&sbd_tcp, l, &h, buf, sizeof(buf), 2000,
				   why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(h.type, RW_ACK, "type %u", h.type);
	sbd_tcp.close(l);
}

/* Records made by a ring of the same geometry: frames a real primary
 * would send for positions [0, *len). */
static uint8_t *records(const char *dir, int n, size_t *len)
{
	shmbus_channel *ch = th_create(dir, CAP, 4096, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	struct shmbus_channel_info in;
	uint8_t msg[40] = { 7 }, *data;
	size_t dlen;

	cr_assert(p);
	for (int i = 0; i < n; i++)
		cr_assert_eq(shmbus_publish(p, msg, sizeof(msg)), 0);
	shmbus_channel_info(ch, &in);
	*len = in.head;
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	data = th_map_data(dir, &dlen);
	cr_assert(data && *len < dlen);
	return data;
}

/* The next frame's sequence numbers go back below the last frame's:
 * applied, the standby's subscribers would take the new records for old
 * ones. */
Test(hostile_primary, sequence_numbers_that_go_back_are_refused)
{
	const char *dir = th_mkdir();
	struct shmbus_channel_info in;
	struct rw_hello hi;
	struct sbd_link *l;
	shmbus_channel *sb;
	uint64_t chan, epoch;
	size_t len;
	uint8_t *data = records(dir, 10, &len);
	char why[256];
	struct rw_hdr h;
	struct rw_ack ack;

	l = link_up(&hi, &chan);
	epoch = hi.epoch > 0 ? hi.epoch : 1;
	cr_assert_eq(hi.end, 0);
	accept_at(l, epoch, chan, 0, RW_RESTART_NONE);
	send_frame(l, RW_DATA, epoch, chan, 0, data, len);
	cr_assert_eq(rw_recv_frame(&sbd_tcp, l, &h, &ack, sizeof(ack), 3000,
				   why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(h.type, RW_ACK);
	/* The same ten records again, at the standby's end: their lap
	 * tags fit there, their numbers do not. */
	send_frame(l, RW_DATA, epoch, chan, len, data, len);
	cr_assert(dropped(l));
	sbd_tcp.close(l);
	cr_assert(log_wait("at the frame's start, after"));
	sb = shmbus_channel_open(d.dir, "sp");
	cr_assert(sb);
	shmbus_channel_info(sb, &in);
	cr_assert_eq(in.head, len, "the standby applied the frame");
	shmbus_channel_close(sb);
	th_rmdir(dir);
}

/*
 * A primary whose frames change epoch on a live link (a jump to just below
 * 2^62): no primary does (its epoch is fixed while it ships, and the
 * acceptance's is recorded before the first record).  Refused, a ping
 * and records alike, and nothing recorded: taken, the epoch would be this
 * host's from then on, and it would refuse its real primary as older.
 */
Test(hostile_primary, a_frame_of_another_epoch_on_the_link_is_refused)
{
	const char *dir = th_mkdir();
	const uint64_t far = RW_EPOCH_MAX - 1;
	struct rw_hello hi;
	struct rw_hdr h;
	struct rw_ack ack;
	struct sbd_link *l;
	uint64_t chan;
	size_t len;
	uint8_t *data = records(dir, 4, &len);
	char why[256], buf[512];

	l = link_up(&hi, &chan);
	cr_assert_eq(hi.epoch, 0);
	accept_at(l, 1, chan, 0, RW_RESTART_NONE);
	send_frame(l, RW_PING, 1, chan, 0, NULL, 0);
	cr_assert_eq(rw_recv_frame(&sbd_tcp, l, &h, &ack, sizeof(ack), 3000,
				   why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(h.type, RW_ACK);
	send_frame(l, RW_DATA, far, chan, 0, data, len);
	cr_assert(dropped(l), "the standby kept the link");
	sbd_tcp.close(l);
	cr_assert(log_wait("a frame of epoch 4611686018427387903 on a link "
			   "of epoch 1"));
	/* A ping of the next epoch, likewise. */
	l = link_up(&hi, &chan);
	cr_assert_eq(hi.epoch, 1, "the standby's epoch is %llu",
		     (unsigned long long)hi.epoch);
	accept_at(l, 1, chan, hi.end, RW_RESTART_NONE);
	send_frame(l, RW_PING, 2, chan, hi.end, NULL, 0);
	cr_assert(dropped(l), "the standby kept the link");
	sbd_tcp.close(l);
	read_history(buf, sizeof(buf));
	cr_assert_str_eq(buf, "1 sp 0\n");
	/* Its primary of epoch 1 is still its primary. */
	l = link_up(&hi, &chan);
	cr_assert_eq(hi.epoch, 1);
	cr_assert_eq(hi.end, 0, "records of the refused frame applied");
	accept_at(l, 1, chan, 0, RW_RESTART_NONE);
	send_frame(l, RW_DATA, 1, chan, 0, data, len);
	cr_assert_eq(rw_recv_frame(&sbd_tcp, l, &h, &ack, sizeof(ack), 3000,
				   why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(h.type, RW_ACK);
	cr_assert_eq(ack.applied, len);
	sbd_tcp.close(l);
	th_rmdir(dir);
}

/*
 * A switchover's promote whose hello names the last epoch an epoch may be
 * (2^62 - 1, which the hello check lets by): the next one would be 2^62,
 * which every peer refuses in every frame, and which this host's own
 * history refuses at its next start.  The standby refuses, says why, and
 * stays standby; its history stays loadable.
 */
Test(hostile_primary, a_promotion_past_the_last_epoch_is_refused)
{
	struct rw_hello hi = { .layout_version = SHMBUS_LAYOUT_VERSION,
			       .purpose = RW_FOR_PROMOTE,
			       .epoch = RW_EPOCH_MAX - 1 };
	struct rw_promote pr = { .n = 1 };
	struct sbd_link *l = NULL;
	struct rw_hdr h;
	char why[512], buf[512], body[RW_REASON];
	int rc;

	snprintf(hi.bus, sizeof(hi.bus), "test");
	/* The linker's first link, taken: its next waits for us below. */
	{
		struct rw_hello mine;

		sbd_tcp.close(link_up(&mine, &chan_of_sp));
	}
	pr.e[0].chan = name_hash("sp");
	pr.e[0].end = 0;
	for (int i = 0; i < 200 && sbd_tcp.connect(paddr, 2000, &l); i++)
		usleep(10000);
	cr_assert(l, "cannot reach the standby at %s", paddr);
	cr_assert_eq(rw_auth_client(&sbd_tcp, l, "test", 2000, why,
				    sizeof(why)), 0, "%s", why);
	send_frame(l, RW_HELLO, 0, 0, 0, &hi, sizeof(hi));
	send_frame(l, RW_PROMOTE, 0, 0, 0, &pr, sizeof(pr));
	rc = rw_recv_frame(&sbd_tcp, l, &h, body, sizeof(body), 5000, why,
			   sizeof(why));
	sbd_tcp.close(l);
	cr_assert_eq(rc, -ECONNREFUSED, "rc %d, type %u: %s", rc,
		     rc ? 0 : h.type, why);
	cr_assert(strstr(why, "past the last one an epoch may be"), "%s", why);
	cr_assert(log_wait("switchover asked by 127.0.0.1:"));
	read_history(buf, sizeof(buf));
	cr_assert_str_eq(buf, "");
	/* Still a standby: it links to us; and it starts again. */
	sbd_tcp.close(link_up(&hi, &chan_of_sp));
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	start_daemon();
	sbd_tcp.close(link_up(&hi, &chan_of_sp));
}

/* ------------------------------------------------ a flapping standby */

TestSuite(flapping_standby, .init = primary_setup, .fini = standby_fini,
	  .timeout = 60);

/* A hello of sp's standby holding [0, end) at epoch 1, and a link to the
 * primary that proved the key, ready for it. */
static struct sbd_link *standby_hello(struct rw_hello *hi, uint64_t end)
{
	struct sbd_link *l = NULL;
	char why[256];

	*hi = (struct rw_hello){ .layout_version = SHMBUS_LAYOUT_VERSION,
				 .capacity = CAP, .max_msg = 4096,
				 .purpose = RW_FOR_LINK, .epoch = 1,
				 .end = end };
	hi->flags = sb_channel_flags(SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
	snprintf(hi->bus, sizeof(hi->bus), "test");
	snprintf(hi->channel, sizeof(hi->channel), "sp");
	for (int i = 0; i < 200 && sbd_tcp.connect(paddr, 2000, &l); i++)
		usleep(10000);
	cr_assert(l, "cannot reach the primary at %s", paddr);
	cr_assert_eq(rw_auth_client(&sbd_tcp, l, "test", 2000, why,
				    sizeof(why)), 0, "%s", why);
	return l;
}

/* Says hello as sp's standby holding [0, end) at epoch 1, begun by the
 * promotion `tag`: the primary's answer (its header, and its body into
 * body, at most n bytes). */
static struct sbd_link *hello_tagged(uint64_t end, uint64_t tag,
				     struct rw_hdr *h, void *body, size_t n,
				     char *why, size_t wn)
{
	struct rw_hello hi;
	struct sbd_link *l = standby_hello(&hi, end);
	int rc;

	hi.tag = tag;
	send_frame(l, RW_HELLO, 1, name_hash("sp"), end, &hi, sizeof(hi));
	why[0] = 0;
	rc = rw_recv_frame(&sbd_tcp, l, h, body, n, 2000, why, wn);
	if (rc)
		h->type = 0;	/* refused: the reason is in why */
	return l;
}

/* Links to the primary as sp's standby holding [0, end) at epoch 1; the
 * acceptance's position comes back. */
static struct sbd_link *link_to_primary(uint64_t end, uint64_t *from)
{
	struct rw_accept acc;
	struct rw_hdr h;
	char why[512];
	struct sbd_link *l = hello_tagged(end, 0, &h, &acc, sizeof(acc), why,
					  sizeof(why));

	cr_assert_eq(h.type, RW_ACCEPT, "%s", why);
	*from = h.pos;
	return l;
}

static void publish_n(int n)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint8_t msg[40] = { 9 };

	ch = open_role(&bus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", strerror(errno));
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	for (int i = 0; i < n; i++)
		cr_assert_eq(shmbus_publish(p, msg, sizeof(msg)), 0);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* In sync once it has everything; then it links again every 100 ms,
 * never acknowledging what came since: a link is not progress. */
Test(flapping_standby, links_without_progress_do_not_keep_it_in_sync)
{
	struct rw_ack ack = { 0 };
	struct sbd_link *l;
	struct rw_hdr h;
	uint8_t *buf = malloc(CAP);
	uint64_t from, end = 0;
	char why[256];
	int i;

	cr_assert(buf);
	publish_n(10);
	l = link_to_primary(0, &from);
	cr_assert_eq(from, 0);
	/* Everything it is sent, acknowledged, until the primary says it
	 * is in sync. */
	for (i = 0; i < 300 && !log_has("sp: standby in sync"); i++) {
		int rc = rw_recv_frame(&sbd_tcp, l, &h, buf, CAP, 10, why,
				       sizeof(why));

		if (rc == -ETIMEDOUT)
			continue;
		cr_assert_eq(rc, 0, "%s", why);
		if (h.type == RW_DATA)
			end = h.pos + h.len;
		ack.received = ack.applied = end;
		send_frame(l, RW_ACK, 1, name_hash("sp"), 0, &ack,
			   sizeof(ack));
	}
	cr_assert(log_has("sp: standby in sync"));
	sbd_tcp.close(l);
	publish_n(10);
	for (i = 0; i < 40 && !log_has("sp: standby out of sync"); i++) {
		l = link_to_primary(end, &from);
		cr_assert_eq(from, end);
		usleep(100000);
		sbd_tcp.close(l);
	}
	cr_assert(log_has("sp: standby out of sync (no progress"),
		  "linked %d times in %d ms and still in sync", i, i * 100);
	free(buf);
}

/* The primary's bad-frame count for sp, from its header. */
static uint64_t bad_frames(void)
{
	shmbus_channel *ch = shmbus_channel_open(d.dir, "sp");
	struct sb_repl_view v;

	cr_assert(ch);
	sb_repl_read(ch, &v);
	shmbus_channel_close(ch);
	return v.bad;
}

/* Links as sp's standby from 0, takes what is shipped up to `head`, and
 * acknowledges it all (received, applied). */
static struct sbd_link *link_caught_up(uint64_t head, uint8_t *buf)
{
	struct rw_ack ack = { 0 };
	struct sbd_link *l;
	struct rw_hdr h;
	uint64_t from, end = 0;
	char why[256];

	l = link_to_primary(0, &from);
	cr_assert_eq(from, 0);
	while (end < head) {
		cr_assert_eq(rw_recv_frame(&sbd_tcp, l, &h, buf, CAP, 3000, why,
					   sizeof(why)), 0, "%s", why);
		if (h.type == RW_DATA)
			end = h.pos + h.len;
	}
	cr_assert_eq(end, head);
	ack.received = ack.applied = end;
	send_frame(l, RW_ACK, 1, name_hash("sp"), 0, &ack, sizeof(ack));
	return l;
}

/*
 * A standby that proved the key and then acknowledges what no standby
 * says: a position past what was shipped, one going back (received, or
 * applied), another channel's, another epoch's (older, newer), persisted
 * past applied, applied past received.  Each drops the link, counted as
 * a bad frame, and moves nothing: the primary's header keeps what the
 * last good acknowledgement said.  A standby that behaves then links.
 */
Test(flapping_standby, acknowledgements_with_wrong_meanings_are_refused)
{
	struct {
		uint64_t epoch, chan, received, applied, persisted;
		const char *what;
	} bad[] = {
		{ 1, 0, 8, 0, 0, "past what was shipped" },
		{ 1, 0, 0, 0, 0, "received going back" },
		{ 1, 0, 0, 0, 0, "applied going back" },
		{ 1, 1, 0, 0, 0, "another channel" },
		{ 0, 0, 0, 0, 0, "an older epoch" },
		{ 2, 0, 0, 0, 0, "a newer epoch" },
		{ 1, 0, 0, 0, 8, "persisted past applied" },
		{ 1, 0, 0, 8, 0, "applied past received" },
	};
	shmbus_channel *ch;
	struct sb_repl_view v;
	uint8_t *buf = malloc(CAP);
	uint64_t head, was;

	cr_assert(buf);
	publish_n(10);
	ch = shmbus_channel_open(d.dir, "sp");
	cr_assert(ch);
	sb_repl_read(ch, &v);
	head = v.head;
	cr_assert_gt(head, 16);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sbd_link *l = link_caught_up(head, buf);
		struct rw_ack ack = { head, head, 0 };

		/* What the good acknowledgement said has arrived. */
		for (int k = 0; k < 300; k++) {
			sb_repl_read(ch, &v);
			if (v.applied == head)
				break;
			usleep(10000);
		}
		cr_assert_eq(v.applied, head);
		was = bad_frames();
		if (i == 0)
			ack.received = ack.applied = head + bad[i].received;
		else if (i == 1)
			ack.received = ack.applied = head - 8;
		else if (i == 2)
			ack.applied = head - 8;
		else if (i == 6)
			ack.persisted = head + 8;
		else if (i == 7)
			ack.received = head - 8;
		send_frame(l, RW_ACK, bad[i].epoch,
			   name_hash("sp") ^ bad[i].chan, 0, &ack,
			   sizeof(ack));
		cr_assert(dropped(l), "%s: the primary kept the link",
			  bad[i].what);
		sbd_tcp.close(l);
		for (int k = 0; k < 300 && bad_frames() == was; k++)
			usleep(10000);
		cr_assert_eq(bad_frames(), was + 1, "%s: not counted",
			     bad[i].what);
		sb_repl_read(ch, &v);
		cr_assert_eq(v.received, head, "%s", bad[i].what);
		cr_assert_eq(v.applied, head, "%s", bad[i].what);
		cr_assert_leq(v.watermark, head, "%s", bad[i].what);
	}
	sbd_tcp.close(link_caught_up(head, buf));
	shmbus_channel_close(ch);
	free(buf);
}

/* A standby of another format version (a previous release's, one short
 * of ours) proves the key and says hello: the primary refuses the link
 * and says which version, rather than read a hello of another shape. */
Test(flapping_standby, a_standby_of_another_frame_version_is_refused)
{
	struct rw_hello hi;
	struct sbd_link *l = standby_hello(&hi, 0);
	struct iovec iov = { &hi, sizeof(hi) };
	struct rw_hdr h;
	char line[64];

	rw_seal(&h, RW_HELLO, 1, name_hash("sp"), 0, &iov, 1);
	h.version = RW_VERSION - 1;
	cr_assert_eq(sbd_tcp.send(l, &h, &iov, 1, 2000), 0);
	cr_assert(dropped(l), "the primary kept the link");
	sbd_tcp.close(l);
	snprintf(line, sizeof(line), "frame version %u (this is %u)",
		 RW_VERSION - 1, RW_VERSION);
	cr_assert(log_wait(line), "no log line with '%s'", line);
}

/* How many lines of the daemon's log hold `what`. */
static int log_lines(const char *what)
{
	char line[2048];
	FILE *f = fopen(d.log, "r");
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, what) != NULL;
	fclose(f);
	return n;
}

/* A standby that links again and again, as fast as it can: the
 * primary's log says so a few times a second, not at every link. */
Test(flapping_standby, links_in_a_burst_do_not_fill_the_log)
{
	uint64_t from;
	int lines;

	publish_n(3);
	for (int i = 0; i < 60; i++) {
		struct sbd_link *l = link_to_primary(0, &from);

		sbd_tcp.close(l);
	}
	/* A second later, the next says how many were left out (once the
	 * daemon's thread gets to say it: a loaded or sanitized daemon may
	 * take more than the link's round trip). */
	usleep(1100000);
	sbd_tcp.close(link_to_primary(0, &from));
	for (int i = 0; i < 500 &&
			!log_has("more link events since the last line");
	     i++)
		usleep(10000);
	lines = log_lines("sp: standby 127.0.0.1:");
	cr_assert_geq(lines, 2, "no link said");
	cr_assert_leq(lines, 8 * 3, "%d lines for 61 links", lines);
	cr_assert(log_has("more link events since the last line"));
}

/* A connection to the primary's listener from 127.0.0.2 (a host other
 * than the peer's), holding a handshake's place: it says nothing. */
static int stranger(void)
{
	struct sockaddr_in me = { .sin_family = AF_INET }, to = me;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0);
	inet_pton(AF_INET, "127.0.0.2", &me.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
	to.sin_port = htons((uint16_t)atoi(strchr(paddr, ':') + 1));
	cr_assert_eq(bind(fd, (struct sockaddr *)&me, sizeof(me)), 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&to, sizeof(to)), 0,
		     "%s", strerror(errno));
	return fd;
}

/* Strangers (no key) holding every handshake's place they can get do not
 * keep the standby from linking: the peer's host has places of its own. */
Test(flapping_standby, strangers_holding_handshakes_do_not_keep_the_standby_out)
{
	struct sbd_link *l;
	uint64_t from;
	int s[24];

	for (int i = 0; i < 24; i++)
		s[i] = stranger();
	/* Some were refused: the others hold every place they may. */
	for (int i = 0; i < 200 && !log_has("handshakes at once already");
	     i++)
		usleep(10000);
	cr_assert(log_has("handshakes at once already"));
	publish_n(3);
	l = link_to_primary(0, &from);
	cr_assert_eq(from, 0);
	sbd_tcp.close(l);
	for (int i = 0; i < 24; i++)
		close(s[i]);
}

/*
 * The primary's side of two hosts primary at one epoch: a standby whose
 * epoch 1 was begun by another promotion than the primary's is refused,
 * with a reason that says so, before any record is shipped; one that
 * names the primary's own promotion, or none (a history written before
 * promotions had tags), is accepted and told the tag.
 */
Test(flapping_standby, a_standby_of_our_epoch_by_another_promotion_is_refused)
{
	struct rw_accept acc;
	struct rw_hdr h;
	struct sbd_link *l;
	char buf[RW_REASON + 1], hist[256], why[512];
	unsigned long long tag = 0;

	read_history(hist, sizeof(hist));
	cr_assert_eq(sscanf(hist, "1 sp 0 %16llx\n", &tag), 1, "%s", hist);
	cr_assert_neq(tag, 0);
	l = hello_tagged(0, tag ^ 1, &h, buf, RW_REASON, why, sizeof(why));
	cr_assert_neq(h.type, RW_ACCEPT, "accepted");
	cr_assert(strstr(why, "refused by the peer: sp: the standby's epoch 1 "
			 "was begun by another promotion"), "%s", why);
	cr_assert(strstr(why, "its ring must be rebuilt"), "%s", why);
	sbd_tcp.close(l);
	l = hello_tagged(0, tag, &h, &acc, sizeof(acc), why, sizeof(why));
	cr_assert_eq(h.type, RW_ACCEPT, "%s", why);
	cr_assert_eq(acc.tag, tag);
	sbd_tcp.close(l);
	l = hello_tagged(0, 0, &h, &acc, sizeof(acc), why, sizeof(why));
	cr_assert_eq(h.type, RW_ACCEPT, "%s", why);
	sbd_tcp.close(l);
}

/*
 * The epoch history, damaged while the daemon was stopped: the daemon
 * refuses to start and says which line, except for a last line without
 * its newline (an append a crash cut short), which it cuts off.  Never
 * a history silently shortened or an epoch read wrong.
 */
TestSuite(damaged_history, .init = primary_setup, .fini = standby_fini,
	  .timeout = 60);

static void put_history(const char *text, size_t len)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/state/epochs", state);
	fd = open(path, O_WRONLY | O_TRUNC);
	cr_assert(fd >= 0, "%s", path);
	cr_assert_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
}

/* Stopped, given `text` as its history, started again: whether it runs. */
static bool starts_with_history(const char *text, size_t len)
{
	int st;

	if (d.pid > 0) {
		kill(d.pid, SIGTERM);
		cr_assert_eq(th_wait(d.pid), 0);
		d.pid = 0;
	}
	put_history(text, len);
	d.pid = spawn_daemon();
	for (int i = 0; i < 3000; i++) {
		if (waitpid(d.pid, &st, WNOHANG) == d.pid) {
			d.pid = 0;
			return false;
		}
		if (access(d.sock, F_OK) == 0 && log_has("replication:"))
			break;
		usleep(1000);
	}
	usleep(100000);
	if (waitpid(d.pid, &st, WNOHANG) == d.pid) {
		d.pid = 0;
		return false;
	}
	return true;
}

Test(damaged_history, a_nul_byte_stops_the_daemon)
{
	static const char first[] = "\0 sp 0\n1 sp 0\n2 sp 4096\n";
	static const char inside[] = "1 sp 0\n2 s\0p 4096\n3 sp 8192\n";

	cr_assert_not(starts_with_history(first, sizeof(first) - 1));
	cr_assert(log_has("a NUL byte at offset 0"));
	cr_assert_not(starts_with_history(inside, sizeof(inside) - 1));
	cr_assert(log_has("a NUL byte at offset 10"));
}

Test(damaged_history, numbers_out_of_range_stop_the_daemon)
{
	static const char *bad[] = {
		"-1 sp 8\n", "18446744073709551615 sp 8\n",
		"99999999999999999999999 sp 8\n", "0x10 sp 8\n",
		"1 sp -8\n", "1 sp 4611686018427387904\n", "0 sp 8\n",
		"1  sp 8\n", "1 sp 8 \n", "1 sp 12\n", "+1 sp 8\n",
		/* Tags: 16 lowercase hex digits, not 0, nothing after. */
		"1 sp 8 0000000000000000\n", "1 sp 8 00000000000000a\n",
		"1 sp 8 00000000000000A1\n", "1 sp 8 00000000000000a1 \n",
		"1 sp 8 00000000000000a12\n", "1 sp 8  00000000000000a1\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_not(starts_with_history(bad[i], strlen(bad[i])),
			      "started with the history '%s'", bad[i]);
	cr_assert(log_has("the history is damaged"));
}

/* One promotion begins an epoch: two tags for one epoch are damage (a
 * history pieced together from two hosts'); lines without a tag (written
 * before promotions had one) and tagged ones load together. */
Test(damaged_history, one_epoch_with_two_tags_stops_the_daemon)
{
	static const char two[] = "1 sp 0 1111111111111111\n"
				  "1 other 0 2222222222222222\n";
	static const char mixed[] = "1 other 0\n1 sp 0 1111111111111111\n"
				    "2 sp 4096 2222222222222222\n";

	cr_assert_not(starts_with_history(two, sizeof(two) - 1));
	cr_assert(log_has("epochs:2: epoch 1 with a tag other than its "
			  "earlier lines'"));
	cr_assert(starts_with_history(mixed, sizeof(mixed) - 1));
}

Test(damaged_history, a_last_line_cut_short_is_cut_off)
{
	static const char torn[] = "1 sp 0\n2 sp 4096\n3 sp";
	char path[128], buf[64];
	ssize_t n;
	int fd;

	cr_assert(starts_with_history(torn, sizeof(torn) - 1));
	cr_assert(log_has("its last 4 bytes, after line 2, are an append a "
			  "crash cut short"));
	snprintf(path, sizeof(path), "%s/state/epochs", state);
	fd = open(path, O_RDONLY);
	cr_assert(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	cr_assert_geq(n, 16);
	buf[n] = 0;
	cr_assert_eq(strncmp(buf, "1 sp 0\n2 sp 4096\n", 17), 0, "%s", buf);
}

/* An append a crash cut short on a filesystem that leaves NUL bytes
 * where its data did not reach the disk: cut off like any torn append. */
Test(damaged_history, a_tail_of_nul_bytes_is_cut_off)
{
	static const char torn[] = "1 sp 0\n2 sp 4096\n\0\0\0\0\0\0";

	cr_assert(starts_with_history(torn, sizeof(torn) - 1));
	cr_assert(log_has("its last 6 bytes, after line 2"));
}

/* A history that parses but does not record the epoch the ring's data file
 * names (emptied, replaced by another host's, or a digit changed): the
 * daemon refuses to start and says which channel and epoch, rather than
 * link, promote or refuse by an epoch that is not its own. */
Test(damaged_history, a_history_without_the_rings_epoch_stops_the_daemon)
{
	static const char two[] = "1 sp 0\n2 sp 4096\n";
	static const char other[] = "1 sp 0\n5 sp 4096\n";

	/* At epoch 2 (a primary goes on at its newest). */
	cr_assert(starts_with_history(two, sizeof(two) - 1));
	cr_assert_not(starts_with_history("", 0), "started with no history");
	cr_assert(log_has("sp: its ring was written at epoch 2, which"));
	cr_assert_not(starts_with_history(other, sizeof(other) - 1),
		      "started with a history where 2 became 5");
	/* The right one back: it starts. */
	cr_assert(starts_with_history(two, sizeof(two) - 1));
}
