/* SPDX-License-Identifier: MIT */
/*
 * test_group_daemon.c - consumer groups under shmbusd: groups made from
 * the config, joining under the subscribe rule, the daemon taking back a
 * dead member's leases by itself, dead-lettering for members that cannot
 * publish, and a kill -9 and restart of the daemon that the group
 * survives at its acknowledged position.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/channel.h"
#include "daemon_fixture.h"
#include "shmbus/group.h"

static const char *const conf =
	"[defaults]\nsubscribe = *\n"
	"[channel jobs]\ncapacity = 64K\nmax_msg = 256\n"
	"consumer_groups = work mode=shared window=64 lease_ms=30000 "
	"max_deliveries=2 dead_letter=dlq; ordered mode=keyed lanes=4\n"
	"[channel dlq]\ncapacity = 16K\nproducers = multi\n"
	"[channel victim]\ncapacity = 16K\nproducers = multi\n"
	"[channel closed]\ncapacity = 16K\nsubscribe = uid:0\n";

static void setup_groups(void)
{
	setup_with(conf);
}

TestSuite(group_daemon, .init = setup_groups, .fini = teardown,
	  .timeout = 60);

static shmbus_group *join_bus(shmbus_bus **bus, shmbus_channel **ch,
			      const char *chan, const char *group,
			      const char *member,
			      enum shmbus_group_mode mode)
{
	struct shmbus_group_attr ga;
	shmbus_group *g;

	*ch = open_role(bus, chan, SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(*ch, "open %s: %s", chan, strerror(errno));
	shmbus_group_attr_init(&ga);
	ga.mode = mode;
	g = shmbus_group_join(*ch, group, member, &ga);
	cr_assert(g, "join %s: %s", group, strerror(errno));
	return g;
}

static void publish_n(uint64_t first, uint64_t n)
{
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "jobs", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p;

	cr_assert(ch);
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	for (uint64_t i = first; i < first + n; i++)
		cr_assert_eq(shmbus_publish(p, &i, sizeof(i)), 0);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(group_daemon, the_config_makes_groups_with_its_settings)
{
	struct shmbus_group_stats st;
	char path[256];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_group *g;

	snprintf(path, sizeof(path), "%s/.jobs@work.group", d.dir);
	cr_assert_eq(access(path, F_OK), 0, "made at start");
	snprintf(path, sizeof(path), "%s/.jobs@ordered.group", d.dir);
	cr_assert_eq(access(path, F_OK), 0, "made at start");
	/* The member asks for defaults; the config's settings win. */
	g = join_bus(&bus, &ch, "jobs", "work", "w", SHMBUS_GROUP_SHARED);
	shmbus_group_stats(g, &st);
	cr_assert_eq(st.window, 64);
	shmbus_group_leave(g);
	/* A mode other than the configured one: refused. */
	{
		struct shmbus_group_attr ga;

		shmbus_group_attr_init(&ga);
		ga.mode = SHMBUS_GROUP_SHARED;
		cr_assert_null(shmbus_group_join(ch, "ordered", "x", &ga));
		cr_assert_eq(errno, EEXIST);
	}
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

static int join_as_nobody(void *arg)
{
	shmbus_bus *bus;
	shmbus_channel *ch;

	(void)arg;
	if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
	    setresuid(65534, 65534, 65534))
		return 2;
	/* "closed" lets only uid 0 subscribe, so nobody cannot open it to
	 * subscribe, nor join a group of it. */
	bus = shmbus_connect(d.sock);
	if (!bus)
		return 3;
	ch = shmbus_bus_open(bus, "closed", SHMBUS_ROLE_SUBSCRIBE);
	if (ch || errno != EACCES)
		return 4;
	/* "jobs" lets everyone in. */
	ch = shmbus_bus_open(bus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	if (!ch)
		return 5;
	if (!shmbus_group_join(ch, "work", "nobody", NULL))
		return 6;
	return 0;
}

Test(group_daemon, joining_follows_the_subscribe_rule)
{
	chmod(d.dir, 0777);
	cr_assert_eq(th_wait(th_spawn(join_as_nobody, NULL)), 0);
}

/* A member that takes one message, tells the parent, and waits to die. */
static int hold_one(void *arg)
{
	int *pipefd = arg;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_group *g;
	struct shmbus_group_msg m;
	uint64_t buf;

	ch = open_role(&bus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	g = ch ? shmbus_group_join(ch, "work", "holder", NULL) : NULL;
	if (!g)
		return 2;
	for (int i = 0; i < 5000; i++) {
		if (shmbus_group_read(g, &buf, sizeof(buf), &m) == 8) {
			if (write(pipefd[1], &buf, sizeof(buf)) != 8)
				return 3;
			pause();
		}
		usleep(1000);
	}
	return 4;
}

/*
 * The daemon, alone, takes back what a killed member held (at its death,
 * not at the 30 s term); and after the daemon itself is killed and
 * restarted the group carries on at its acknowledged position.
 */
Test(group_daemon, a_dead_members_lease_returns_and_the_group_survives_a_daemon_restart)
{
	struct shmbus_group_stats st, st2;
	int pipefd[2];
	uint64_t held, buf;
	struct shmbus_group_msg m;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_group *g;
	pid_t holder;
	int got = 0;

	cr_assert_eq(pipe(pipefd), 0);
	publish_n(0, 10);
	holder = th_spawn(hold_one, pipefd);
	cr_assert_eq(read(pipefd[0], &held, sizeof(held)), 8);
	g = join_bus(&bus, &ch, "jobs", "work", "w", SHMBUS_GROUP_SHARED);
	/* Everything else, acked one by one. */
	while (shmbus_group_read(g, &buf, sizeof(buf), &m) == 8) {
		cr_assert_neq(buf, held);
		cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
		got++;
	}
	cr_assert_eq(got, 9);
	shmbus_group_stats(g, &st);
	cr_assert_eq(st.in_flight, 1);
	/* The daemon dies; the group does not need it. */
	kill(d.pid, SIGKILL);
	cr_assert_eq(th_wait(d.pid), 128 + SIGKILL);
	kill(holder, SIGKILL);
	th_wait(holder);
	start_daemon();
	/* The new daemon releases the dead member's lease by itself: this
	 * process only reads the group's counters. */
	for (int i = 0; i < 500; i++) {
		shmbus_group_stats(g, &st2);
		if (st2.released)
			break;
		usleep(2000);
	}
	cr_assert_eq(st2.released, 1, "released within a second");
	cr_assert_eq(st2.floor, st.floor, "the floor stayed where it was");
	cr_assert_eq(shmbus_group_read(g, &buf, sizeof(buf), &m), 8);
	cr_assert_eq(buf, held);
	cr_assert_eq(m.deliveries, 2);
	cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	shmbus_group_stats(g, &st2);
	cr_assert_eq(st2.floor, st2.head, "all acknowledged");
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

static int count_dl(const struct shmbus_msg *msg, void *arg)
{
	uint64_t v;

	memcpy(&v, msg->data, 8);
	cr_assert_eq(v, 3);
	(*(int *)arg)++;
	return 0;
}

/* Reads messages 0-5 as a member: acknowledges all but 3, which it nacks
 * until it is dead-lettered (counted in *got from the dead-letter
 * channel's subscriber sub). */
static void poison_third(shmbus_group *g, shmbus_sub *sub, int *got,
			 int *acked)
{
	struct shmbus_group_msg m;
	uint64_t buf;

	for (int i = 0; i < 3000 && (!*got || *acked < 5); i++) {
		if (shmbus_group_read(g, &buf, sizeof(buf), &m) == 8) {
			if (buf == 3)
				shmbus_group_nack(g, &m.lease, 0);
			else if (shmbus_group_ack(g, &m.lease) == 0)
				(*acked)++;
		}
		shmbus_poll(sub, count_dl, got, 0);
		usleep(500);
	}
}

/* A member opened through the daemon cannot publish to the dead-letter
 * channel; the daemon does it. */
Test(group_daemon, the_daemon_dead_letters_poison_messages)
{
	struct shmbus_group_stats st;
	shmbus_channel *ch, *dl;
	shmbus_bus *bus, *bus2;
	shmbus_group *g;
	shmbus_sub *sub;
	int got = 0, acked = 0;

	dl = open_role(&bus2, "dlq", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(dl);
	sub = shmbus_sub_open(dl, NULL);
	g = join_bus(&bus, &ch, "jobs", "work", "w", SHMBUS_GROUP_SHARED);
	publish_n(0, 6);
	poison_third(g, sub, &got, &acked);
	cr_assert_eq(acked, 5);
	cr_assert_eq(got, 1, "message 3 in the dead-letter channel, once");
	shmbus_group_stats(g, &st);
	cr_assert_eq(st.dead_lettered, 1);
	for (int i = 0; i < 200 && st.floor != st.head; i++) {
		usleep(5000);
		shmbus_group_stats(g, &st);
	}
	cr_assert_eq(st.floor, st.head);
	/* The dead-letter channel deleted, and made again by a reload: the
	 * next poison message goes to the new one, not the deleted file. */
	shmbus_sub_close(sub);
	shmbus_channel_close(dl);
	shmbus_disconnect(bus2);
	cr_assert_eq(shmbus_bus_delete(bus, "dlq"), 0);
	kill(d.pid, SIGHUP);
	dl = NULL;
	for (int i = 0; i < 300 && !dl; i++) {
		dl = open_role(&bus2, "dlq", SHMBUS_ROLE_SUBSCRIBE);
		if (!dl) {
			shmbus_disconnect(bus2);
			usleep(10000);
		}
	}
	cr_assert(dl, "the reload did not make dlq again");
	sub = shmbus_sub_open(dl, NULL);
	got = acked = 0;
	publish_n(0, 6);
	poison_third(g, sub, &got, &acked);
	cr_assert_eq(got, 1, "the second poison message is not in the new "
		     "dead-letter channel");
	shmbus_group_leave(g);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_channel_close(dl);
	shmbus_disconnect(bus);
	shmbus_disconnect(bus2);
}

/* A process that can write the dead-letter channel's files (a producer of
 * it, or root through the paths; a subscriber holds the producer slots
 * read-only) fakes a claim of its own, live, that never hands over.  The
 * daemon's dead letter gives up instead of waiting behind it for ever,
 * and its reaper goes on repairing every channel. */
Test(group_daemon, a_claim_faked_on_the_dead_letter_channel_stalls_no_repair)
{
	struct shmbus_prod_slot *fake;
	struct shmbus_prod_line *h;
	shmbus_channel *ch, *dl, *vch;
	shmbus_bus *bus, *bus2, *bus3;
	shmbus_group *g;
	shmbus_sub *sub;
	uint64_t at;
	int got = 0, acked = 0, status;
	pid_t dead;

	dl = open_role(&bus2, "dlq", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(dl);
	sub = shmbus_sub_open(dl, NULL);
	h = th_map_pline(d.dir, "dlq");
	cr_assert(h);
	fake = th_map_prods(d.dir, "dlq");
	cr_assert(fake);
	fake += SHMBUS_MAX_PRODUCERS - 1;
	at = __atomic_load_n(&h->handoff, __ATOMIC_ACQUIRE);
	cr_assert_eq(at, __atomic_load_n(&h->head, __ATOMIC_ACQUIRE));
	__atomic_store_n(&fake->claim_end, at + 24, __ATOMIC_RELAXED);
	__atomic_store_n(&fake->claim_pos, at, __ATOMIC_RELEASE);
	__atomic_store_n(&fake->owner, (uint64_t)getpid() << 32 |
			 SHMBUS_SLOT_ACTIVE, __ATOMIC_RELEASE);
	__atomic_store_n(&h->head, at + 24, __ATOMIC_RELEASE);
	g = join_bus(&bus, &ch, "jobs", "work", "w", SHMBUS_GROUP_SHARED);
	publish_n(0, 6);
	poison_third(g, sub, &got, &acked);
	cr_assert_eq(acked, 5);
	cr_assert_eq(got, 0);
	/* The reaper still repairs: a subscriber of another channel killed
	 * has its slot back within a scan or two. */
	vch = open_role(&bus3, "victim", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(vch);
	dead = fork();
	cr_assert_geq(dead, 0);
	if (dead == 0) {
		shmbus_sub *s = shmbus_sub_open(vch, NULL);

		if (!s)
			_exit(1);
		pause();
	}
	for (int i = 0; i < 200; i++) {
		bool held = false;

		for (uint32_t j = 0; j < SHMBUS_MAX_SUBSCRIBERS; j++)
			held |= (uint32_t)(__atomic_load_n(&vch->subs[j].owner,
				__ATOMIC_ACQUIRE) >> 32) == (uint32_t)dead;
		if (held)
			break;
		usleep(5000);
	}
	kill(dead, SIGKILL);
	cr_assert_eq(waitpid(dead, &status, 0), dead);
	for (int i = 0; i < 400; i++) {
		bool held = false;

		for (uint32_t j = 0; j < SHMBUS_MAX_SUBSCRIBERS; j++)
			held |= (uint32_t)(__atomic_load_n(&vch->subs[j].owner,
				__ATOMIC_ACQUIRE) >> 32) == (uint32_t)dead;
		if (!held)
			break;
		cr_assert_lt(i, 399, "the dead subscriber's slot was never "
			     "given back: the reaper is stuck");
		usleep(5000);
	}
	/* The fake claim gone (its process "died": the slot let go and the
	 * hand-off helped past it), the poison message goes out. */
	__atomic_store_n(&fake->owner, (uint64_t)99999999 << 32 |
			 SHMBUS_SLOT_ACTIVE, __ATOMIC_RELEASE);
	for (int i = 0; i < 400 && !got; i++) {
		shmbus_poll(sub, count_dl, &got, 0);
		usleep(5000);
	}
	cr_assert_eq(got, 1, "the poison message went out once the "
		     "channel moved again");
	shmbus_group_leave(g);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_channel_close(dl);
	shmbus_channel_close(vch);
	shmbus_disconnect(bus);
	shmbus_disconnect(bus2);
	shmbus_disconnect(bus3);
}

/* A member may write the group's file, dead-letter name included: the
 * daemon copies poison messages where the config says, never where the
 * file says, which would be publishing with the daemon's rights. */
Test(group_daemon, a_rewritten_dead_letter_name_is_not_obeyed)
{
	shmbus_channel *ch, *dl, *vc;
	shmbus_bus *bus, *bus2, *bus3;
	struct shmbus_group_hdr *gh;
	shmbus_sub *sub, *vsub;
	shmbus_group *g;
	char path[256];
	int got = 0, stolen = 0, acked = 0, fd;

	dl = open_role(&bus2, "dlq", SHMBUS_ROLE_SUBSCRIBE);
	vc = open_role(&bus3, "victim", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(dl && vc);
	sub = shmbus_sub_open(dl, NULL);
	vsub = shmbus_sub_open(vc, NULL);
	g = join_bus(&bus, &ch, "jobs", "work", "w", SHMBUS_GROUP_SHARED);
	snprintf(path, sizeof(path), "%s/.jobs@work.group", d.dir);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0);
	gh = mmap(NULL, sizeof(*gh), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		  0);
	cr_assert(gh != MAP_FAILED);
	snprintf(gh->dead_letter, sizeof(gh->dead_letter), "victim");
	publish_n(0, 6);
	poison_third(g, sub, &got, &acked);
	usleep(100000);
	shmbus_poll(vsub, count_dl, &stolen, 0);
	cr_assert_eq(acked, 5);
	cr_assert_eq(got, 1, "message 3 in the configured channel, once");
	cr_assert_eq(stolen, 0, "copied where the group's file said");
	cr_assert(log_has("its file names dead-letter channel victim, the "
			  "config dlq"));
	munmap(gh, sizeof(*gh));
	close(fd);
	shmbus_group_leave(g);
	shmbus_sub_close(sub);
	shmbus_sub_close(vsub);
	shmbus_channel_close(ch);
	shmbus_channel_close(dl);
	shmbus_channel_close(vc);
	shmbus_disconnect(bus);
	shmbus_disconnect(bus2);
	shmbus_disconnect(bus3);
}

/* A group made through the socket cannot name a dead-letter channel: the
 * daemon would publish there on its behalf. */
Test(group_daemon, the_socket_cannot_name_a_dead_letter_channel)
{
	struct shmbus_group_attr ga;
	shmbus_channel *ch;
	shmbus_bus *bus;

	ch = open_role(&bus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	shmbus_group_attr_init(&ga);
	ga.dead_letter = "victim";
	cr_assert_null(shmbus_group_join(ch, "adhoc", "w", &ga));
	cr_assert_eq(errno, EPERM, "%s", strerror(errno));
	cr_assert(log_has("may not name a dead-letter channel for group "
			  "adhoc"));
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* A group holds its slot, and a block channel's producers, until it is
 * deleted: through the daemon, by an administrator, never under a live
 * member; a configured group is made again at the next reload. */
/* The channel's slots held by groups, as its file says. */
static unsigned group_slots_of(const char *name)
{
	shmbus_channel *ch = shmbus_channel_open(d.dir, name);
	unsigned n = 0;

	cr_assert(ch);
	for (uint32_t i = 0; i < ch->nslots; i++)
		n += owner_state(__atomic_load_n(&ch->subs[i].owner,
						 __ATOMIC_RELAXED)) ==
		     SHMBUS_SLOT_GROUP;
	shmbus_channel_close(ch);
	return n;
}

static unsigned group_slots(void)
{
	return group_slots_of("jobs");
}

Test(group_daemon, an_admin_deletes_a_group_and_its_hold_on_the_channel)
{
	unsigned before;
	const char *bin = getenv("SHMBUSCTL");
	char path[256], cmd[512];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_group *g;

	g = join_bus(&bus, &ch, "jobs", "tmp", "w", SHMBUS_GROUP_SHARED);
	before = group_slots();
	cr_assert_eq(shmbus_group_delete(ch, "tmp"), -EBUSY,
		     "deleted under a live member");
	shmbus_group_leave(g);
	cr_assert_eq(shmbus_group_delete(ch, "tmp"), 0);
	cr_assert_eq(shmbus_group_delete(ch, "tmp"), -ENOENT);
	snprintf(path, sizeof(path), "%s/.jobs@tmp.group", d.dir);
	cr_assert_neq(access(path, F_OK), 0, "the group's file stays");
	cr_assert_eq(group_slots() + 1, before,
		     "the group's slot is still held");
	cr_assert(log_has("jobs: group tmp deleted by pid"));
	/* A configured one, with shmbusctl: the log says it comes back. */
	snprintf(cmd, sizeof(cmd), "%s -b %s delete-group jobs ordered "
		 ">/dev/null", bin && *bin ? bin : "build/tools/shmbusctl",
		 d.sock);
	cr_assert_eq(system(cmd), 0);
	cr_assert(log_has("group ordered deleted by pid"));
	cr_assert(log_has("the config names it: it is made again"));
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/*
 * A handle of a channel that an admin deleted and made again under its
 * name since: a join or a group deletion through it is refused with
 * ESTALE, and nothing is done to the new channel (a group made there
 * would hold a subscriber slot, and a block channel's producers, until
 * deleted; a deletion would drop another channel's group).
 */
Test(group_daemon, a_handle_older_than_its_channel_joins_and_deletes_nothing)
{
	struct shmbus_channel_attr a;
	struct shmbus_group_attr ga;
	shmbus_channel *old, *now;
	shmbus_group *g;
	shmbus_bus *bus = shmbus_connect(d.sock);
	char path[256];

	cr_assert(bus);
	shmbus_channel_attr_init(&a);
	a.capacity = 16384;
	cr_assert_eq(shmbus_bus_create(bus, "again", &a), 0);
	old = shmbus_bus_open(bus, "again", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(old);
	shmbus_group_attr_init(&ga);
	g = shmbus_group_join(old, "kept", "w", &ga);
	cr_assert(g, "%s", strerror(errno));
	shmbus_group_leave(g);
	cr_assert_eq(shmbus_bus_delete(bus, "again"), 0);
	cr_assert_eq(shmbus_bus_create(bus, "again", &a), 0);
	now = shmbus_bus_open(bus, "again", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(now);
	g = shmbus_group_join(now, "kept", "w", &ga);
	cr_assert(g, "%s", strerror(errno));
	shmbus_group_leave(g);

	errno = 0;
	cr_assert_null(shmbus_group_join(old, "fresh", "w", &ga));
	cr_assert_eq(errno, ESTALE, "%s", strerror(errno));
	cr_assert(strstr(shmbus_bus_strerror(bus, ESTALE),
			 "deleted and made again"), "%s",
		  shmbus_bus_strerror(bus, ESTALE));
	snprintf(path, sizeof(path), "%s/.again@fresh.group", d.dir);
	cr_assert_neq(access(path, F_OK), 0, "a group made on the new one");
	cr_assert_eq(group_slots_of("again"), 1, "only kept holds a slot");
	cr_assert_eq(shmbus_group_delete(old, "kept"), -ESTALE);
	snprintf(path, sizeof(path), "%s/.again@kept.group", d.dir);
	cr_assert_eq(access(path, F_OK), 0, "the new one's group deleted");
	cr_assert_eq(group_slots_of("again"), 1);

	/* The new handle's requests are the new channel's. */
	cr_assert_eq(shmbus_group_delete(now, "kept"), 0);
	cr_assert_eq(group_slots_of("again"), 0);
	shmbus_channel_close(old);
	shmbus_channel_close(now);
	cr_assert_eq(shmbus_bus_delete(bus, "again"), 0);
	shmbus_disconnect(bus);
}

/* Copies file `from` to a new file `to` (0660), as a leftover would be. */
static void copy_file(const char *from, const char *to)
{
	char buf[4096];
	ssize_t n;
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0660);

	cr_assert(in >= 0 && out >= 0, "%s: %s", to, strerror(errno));
	while ((n = read(in, buf, sizeof(buf))) > 0)
		cr_assert_eq(write(out, buf, (size_t)n), n);
	cr_assert_eq(n, 0);
	close(in);
	close(out);
}

/*
 * A delete cut short (a kill -9 after the channel's files went, before
 * its groups' files did) leaves a group's file of a channel deleted.  A
 * channel made again under that name joins and deletes its groups: the
 * leftover, another channel's, is not handed out as one of them.
 */
Test(group_daemon, a_group_file_left_by_a_delete_cut_short_is_no_new_group)
{
	struct shmbus_channel_attr a;
	struct shmbus_group_attr ga;
	shmbus_bus *bus = shmbus_connect(d.sock);
	shmbus_channel *ch;
	shmbus_group *g;
	char from[256], to[256];

	cr_assert(bus);
	shmbus_channel_attr_init(&a);
	a.capacity = 16384;
	shmbus_group_attr_init(&ga);
	/* The leftover: a group's file of another channel, under the name. */
	cr_assert_eq(shmbus_bus_create(bus, "before", &a), 0);
	ch = shmbus_bus_open(bus, "before", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	g = shmbus_group_join(ch, "g", "w", &ga);
	cr_assert(g, "%s", strerror(errno));
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	snprintf(from, sizeof(from), "%s/.before@g.group", d.dir);
	snprintf(to, sizeof(to), "%s/.anew@g.group", d.dir);
	copy_file(from, to);

	cr_assert_eq(shmbus_bus_create(bus, "anew", &a), 0);
	ch = shmbus_bus_open(bus, "anew", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	g = shmbus_group_join(ch, "g", "w", &ga);
	cr_assert(g, "the leftover was handed out: %s", strerror(errno));
	shmbus_group_leave(g);
	cr_assert_eq(group_slots_of("anew"), 1);
	cr_assert(log_has("anew: group g: a file of a channel of that name "
			  "deleted before"));
	cr_assert_eq(shmbus_group_delete(ch, "g"), 0);
	cr_assert_eq(group_slots_of("anew"), 0);
	shmbus_channel_close(ch);
	cr_assert_eq(shmbus_bus_delete(bus, "anew"), 0);
	cr_assert_eq(shmbus_bus_delete(bus, "before"), 0);
	shmbus_disconnect(bus);
}

/* A member cuts the group's file short (the daemon hands it writable):
 * the daemon gives it back its size at its next scan, so that an honest
 * member polling afterwards reads damage (an error), not a SIGBUS. */
static int poll_after_cut(void *arg)
{
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_group *g = join_bus(&bus, &ch, "jobs", "work", "honest",
				   SHMBUS_GROUP_SHARED);
	struct shmbus_group_msg m;
	uint8_t buf[64];
	int rc = 0;

	(void)arg;
	/* Told by the parent once the file was cut and mended. */
	kill(getpid(), SIGSTOP);
	for (int i = 0; i < 10; i++)
		rc = (int)shmbus_group_read(g, buf, sizeof(buf), &m);
	return rc < 0 ? 0 : 1;
}

Test(group_daemon, a_group_file_cut_short_is_mended_and_kills_no_member)
{
	char path[512];
	struct stat st;
	int fd, wst;
	pid_t p;

	publish_n(0, 10);
	p = th_spawn(poll_after_cut, NULL);
	cr_assert_eq(waitpid(p, &wst, WUNTRACED), p);
	cr_assert(WIFSTOPPED(wst));
	snprintf(path, sizeof(path), "%s/.jobs@work.group", d.dir);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0, "%s", path);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(ftruncate(fd, 0), 0);
	for (int i = 0; i < 3000 && !log_has("its file was cut short"); i++)
		usleep(1000);
	cr_assert(log_has("group work: its file was cut short by a member"));
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_gt(st.st_size, 0, "the size was not given back");
	close(fd);
	kill(p, SIGCONT);
	cr_assert_eq(th_wait(p), 0, "the honest member died or read a "
		     "message from a damaged group");
}

/* Forty groups, each with a dead-letter channel of its own: the daemon
 * has a publisher for each, and every poison message is sent (one left
 * unsent would hold its group's floor, silently). */
#define MANY_DL 40

static void setup_many_dl(void)
{
	static char body[MANY_DL * 200 + 64];
	size_t n = 0;

	n += (size_t)snprintf(body + n, sizeof(body) - n,
			      "max_channels = 128\n[defaults]\nsubscribe = *\n");
	for (int i = 0; i < MANY_DL; i++)
		n += (size_t)snprintf(body + n, sizeof(body) - n,
				      "[channel c%d]\ncapacity = 16K\n"
				      "consumer_groups = w mode=shared "
				      "max_deliveries=1 dead_letter=d%d\n"
				      "[channel d%d]\ncapacity = 16K\n"
				      "producers = multi\n", i, i, i);
	setup_with(body);
}

/* A suite of its own: the group_daemon suite's init would start a second
 * daemon, which no fini stops. */
Test(group_daemon_many, every_dead_letter_channel_gets_its_poison,
     .init = setup_many_dl, .fini = teardown)
{
	shmbus_bus *bus = shmbus_connect(d.sock);
	shmbus_group *g[MANY_DL];
	shmbus_channel *ch[MANY_DL], *dl[MANY_DL];
	struct shmbus_group_attr ga;
	struct shmbus_group_msg m;
	char name[16];
	uint64_t v = 7;
	int left = MANY_DL;

	cr_assert(bus);
	shmbus_group_attr_init(&ga);
	for (int i = 0; i < MANY_DL; i++) {
		shmbus_pub *p;

		shmbus_channel *pc;

		snprintf(name, sizeof(name), "c%d", i);
		ch[i] = shmbus_bus_open(bus, name, SHMBUS_ROLE_SUBSCRIBE);
		cr_assert(ch[i], "%s: %s", name, strerror(errno));
		g[i] = shmbus_group_join(ch[i], "w", "m", &ga);
		cr_assert(g[i], "join %s: %s", name, strerror(errno));
		pc = shmbus_bus_open(bus, name, SHMBUS_ROLE_PUBLISH);
		p = pc ? shmbus_pub_open(pc, NULL) : NULL;
		cr_assert(p, "publish %s: %s", name, strerror(errno));
		cr_assert_eq(shmbus_publish(p, &v, sizeof(v)), 0);
		shmbus_pub_close(p);
		shmbus_channel_close(pc);
		cr_assert_eq(shmbus_group_read(g[i], &v, sizeof(v), &m), 8);
		cr_assert_eq(shmbus_group_nack(g[i], &m.lease, 0), 0);
		snprintf(name, sizeof(name), "d%d", i);
		dl[i] = shmbus_bus_open(bus, name, SHMBUS_ROLE_SUBSCRIBE);
		cr_assert(dl[i], "%s: %s", name, strerror(errno));
	}
	for (int t = 0; t < 1000 && left; t++) {
		left = 0;
		for (int i = 0; i < MANY_DL; i++) {
			struct shmbus_channel_info in;

			/* Its next take finds the message delivered
			 * max_deliveries times: poison, for the daemon. */
			cr_assert_eq(shmbus_group_read(g[i], &v, sizeof(v),
						       &m), -EAGAIN);
			cr_assert_eq(shmbus_channel_info(dl[i], &in), 0);
			left += in.published == 0;
		}
		usleep(5000);
	}
	cr_assert_eq(left, 0, "%d of %d dead-letter channels never got their "
		     "poison message", left, MANY_DL);
	for (int i = 0; i < MANY_DL; i++) {
		shmbus_group_leave(g[i]);
		shmbus_channel_close(ch[i]);
		shmbus_channel_close(dl[i]);
	}
	shmbus_disconnect(bus);
}

/* The daemon's mappings of channel `name`'s files. */
static unsigned daemon_maps_of(const char *name)
{
	char path[64], line[1024], ctl[512], data[512];
	unsigned n = 0;
	FILE *f;

	snprintf(ctl, sizeof(ctl), "%s/%s", d.dir, name);
	snprintf(data, sizeof(data), "%s/.%s.", d.dir, name);
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)d.pid);
	f = fopen(path, "r");
	cr_assert(f);
	while (fgets(line, sizeof(line), f)) {
		char *at = strchr(line, '/');
		size_t k = strlen(ctl);

		n += at && (!strncmp(at, data, strlen(data)) ||
			    (!strncmp(at, ctl, k) &&
			     (at[k] == '\n' || at[k] == ' ')));
	}
	fclose(f);
	return n;
}

/* A dead-letter channel deleted once no group names it any more (its
 * group deleted first): the daemon's publisher on it, looked at only
 * when a group's maintenance asks for it, kept the deleted ring mapped
 * (its memory taken) for the daemon's life.  It lets go once the
 * deletion is seen. */
Test(group_daemon, a_deleted_dead_letter_channel_is_let_go)
{
	shmbus_channel *ch, *dl;
	shmbus_bus *bus, *bus2;
	shmbus_group *g;
	shmbus_sub *sub;
	int got = 0, acked = 0;
	unsigned held = 0;

	dl = open_role(&bus2, "dlq", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(dl);
	sub = shmbus_sub_open(dl, NULL);
	g = join_bus(&bus, &ch, "jobs", "work", "w", SHMBUS_GROUP_SHARED);
	publish_n(0, 6);
	poison_third(g, sub, &got, &acked);
	cr_assert_eq(got, 1);
	shmbus_sub_close(sub);
	shmbus_channel_close(dl);
	shmbus_disconnect(bus2);
	shmbus_group_leave(g);
	cr_assert_eq(shmbus_group_delete(ch, "work"), 0);
	cr_assert_geq(daemon_maps_of("dlq"), 2);
	cr_assert_eq(shmbus_bus_delete(bus, "dlq"), 0);
	for (int i = 0; i < 200 && (held = daemon_maps_of("dlq")); i++)
		usleep(10000);
	cr_assert_eq(held, 0, "the daemon still maps %u of the deleted "
		     "dead-letter channel's files", held);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}
