/* SPDX-License-Identifier: MIT */
/*
 * failover_fixture.c - etcd, the forwarders, the logging publisher and
 * the checks of the failover tests and benchmark (failover_fixture.h).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "failover_fixture.h"
#include "helpers.h"
#include "shmbus/layout.h"
#include "../daemon/etcd.h"

/* ---------------------------------------------------------------- etcd */

pid_t etcd_pid;
int etcd_port;
char etcd_dir[64];

int tcp_to_port(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && connect(fd, (void *)&a, sizeof(a)) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

static int tcp_to_etcd(void)
{
	return tcp_to_port(etcd_port);
}

/* An etcd member `name` with its data in dir (its log in dir.log),
 * clients on port and peers on port + 1, of the cluster "NAME=URL,...";
 * its pid.  A data directory that holds a member already restarts it
 * (etcd then ignores the initial-cluster flags). */
static pid_t etcd_spawn(const char *name, const char *dir, int port,
			const char *cluster)
{
	char client[64], peer[64], log[128];
	pid_t pid;

	snprintf(client, sizeof(client), "http://127.0.0.1:%d", port);
	snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", port + 1);
	snprintf(log, sizeof(log), "%s.log", dir);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		dup2(out, 1);
		dup2(out, 2);
		execlp("etcd", "etcd", "--name", name, "--data-dir", dir,
		       "--listen-client-urls", client,
		       "--advertise-client-urls", client,
		       "--listen-peer-urls", peer,
		       "--initial-advertise-peer-urls", peer,
		       "--initial-cluster", cluster,
		       "--initial-cluster-token", "shmbus-test",
		       "--initial-cluster-state", "new", (char *)NULL);
		_exit(127);
	}
	return pid;
}

void etcd_start(void)
{
	char cluster[96];
	int fd;

	if (!etcd_dir[0]) {
		/* In memory: etcd syncs every write, and a disk shared with
		 * the rest of the machine makes that take up to seconds.
		 * With SHMBUS_TEST_PREFIX, under its name as the pair's
		 * files are: another run's cleanup of its own names
		 * (shmbus-test-*) must not take this one's etcd away. */
		snprintf(etcd_dir, sizeof(etcd_dir),
			 "/dev/shm/shmbus-%s-etcd-XXXXXX",
			 pair_prefix() ? pair_prefix() : "test");
		cr_assert(mkdtemp(etcd_dir));
		/* A block of 16 ports per test process (the single etcd's
		 * two, a cluster's six from +10): tests running at once have
		 * neighbouring pids, and must not share a port.  Below the
		 * ephemeral range (32768 up), which the pair's and the
		 * forwarders' own connections take ports from. */
		etcd_port = 10000 + (getpid() % 1400) * 16;
	}
	snprintf(cluster, sizeof(cluster), "t=http://127.0.0.1:%d",
		 etcd_port + 1);
	etcd_pid = etcd_spawn("t", etcd_dir, etcd_port, cluster);
	for (int i = 0; i < 1500; i++) {
		fd = tcp_to_etcd();
		if (fd >= 0) {
			close(fd);
			usleep(300000);	/* its gateway, and a leader */
			return;
		}
		if (waitpid(etcd_pid, NULL, WNOHANG) == etcd_pid) {
			etcd_pid = 0;
			cr_assert_fail("etcd exited at start (see %s.log)",
				       etcd_dir);
		}
		usleep(10000);
	}
	cr_assert_fail("etcd did not come up in 15 s (is etcd-server "
		       "installed? see %s.log)", etcd_dir);
}

void etcd_kill(void)
{
	if (etcd_pid > 0) {
		kill(etcd_pid, SIGKILL);
		waitpid(etcd_pid, NULL, 0);
	}
	etcd_pid = 0;
}

/* ---------------------------------------------------- the forwarders */


struct fwd fw[2];

static void *fwd_main(void *arg)
{
	struct fwd *f = arg;
	struct pollfd p[1 + 2 * 16];
	int a[16], b[16], n = 0;

	while (!atomic_load(&f->stop)) {
		int k = 1;

		p[0] = (struct pollfd){ f->lfd, POLLIN, 0 };
		for (int i = 0; i < n; i++) {
			p[k++] = (struct pollfd){ a[i], POLLIN, 0 };
			p[k++] = (struct pollfd){ b[i], POLLIN, 0 };
		}
		if (poll(p, (nfds_t)k, 20) < 0)
			continue;
		if (atomic_load(&f->cut)) {
			/* Cut: every connection dropped, new ones refused. */
			for (int i = 0; i < n; i++) {
				close(a[i]);
				close(b[i]);
			}
			n = 0;
		}
		if (p[0].revents & POLLIN) {
			int c = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
			int t = c >= 0 && !atomic_load(&f->cut) && n < 16 ?
					tcp_to_port(f->port) : -1;

			if (t < 0) {
				if (c >= 0)
					close(c);
			} else {
				a[n] = c;
				b[n] = t;
				n++;
				continue;	/* polled afresh */
			}
		}
		for (int i = 0, j = 1; i < n; i++, j += 2) {
			char buf[65536];
			bool dead = false;

			for (int s = 0; s < 2 && !dead; s++) {
				int from = s ? b[i] : a[i], to = s ? a[i] : b[i];
				ssize_t r;

				if (!(p[j + s].revents & (POLLIN | POLLHUP |
							   POLLERR)))
					continue;
				r = read(from, buf, sizeof(buf));
				if (r > 0 && !s && atomic_load(&f->delay_ms))
					usleep((useconds_t)atomic_load(
						       &f->delay_ms) * 1000);
				if (r <= 0 ||
				    send(to, buf, (size_t)r, MSG_NOSIGNAL) != r)
					dead = true;
			}
			if (dead) {
				close(a[i]);
				close(b[i]);
				a[i] = a[n - 1];
				b[i] = b[n - 1];
				n--;
				break;	/* the poll set changed */
			}
		}
	}
	for (int i = 0; i < n; i++) {
		close(a[i]);
		close(b[i]);
	}
	return NULL;
}

void fwd_start_to(struct fwd *f, const char *path, int port)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	snprintf(f->path, sizeof(f->path), "%s", path);
	f->port = port;
	unlink(f->path);
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", f->path);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(f->lfd >= 0);
	cr_assert_eq(bind(f->lfd, (void *)&un, sizeof(un)), 0);
	cr_assert_eq(listen(f->lfd, 64), 0);
	chmod(f->path, 0666);
	atomic_store(&f->cut, false);
	atomic_store(&f->delay_ms, 0);
	atomic_store(&f->stop, false);
	cr_assert_eq(pthread_create(&f->th, NULL, fwd_main, f), 0);
}

void fwd_start(struct fwd *f, char tag)
{
	char path[108];

	snprintf(path, sizeof(path), "%s-%c.sock", etcd_dir, tag);
	fwd_start_to(f, path, etcd_port);
}

void fwd_stop(struct fwd *f)
{
	if (!f->path[0])
		return;
	atomic_store(&f->stop, true);
	pthread_join(f->th, NULL);
	close(f->lfd);
	unlink(f->path);
	f->path[0] = 0;
}

int arbiter_key(const char *suffix, struct etcd_kv *kv)
{
	char url[64], why[128], key[96];
	struct etcd *e;
	int rc;

	memset(kv, 0, sizeof(*kv));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", etcd_port);
	snprintf(key, sizeof(key), "%s/%s", fo_prefix, suffix);
	e = etcd_open(url, 1000, why, sizeof(why));
	cr_assert(e, "%s", why);
	rc = etcd_get(e, key, kv);
	etcd_close(e);
	return rc;
}

bool sync_record_is_rev(const char *want, int64_t *rev)
{
	struct etcd_kv kv;
	bool is = arbiter_key("sync", &kv) == 0 && kv.found &&
		  !strncmp(kv.value, want, strlen(want));

	*rev = kv.found ? kv.mod_rev : 0;
	return is;
}

bool leader_key_held(void)
{
	struct etcd_kv kv;

	return arbiter_key("leader", &kv) != 0 || kv.found;
}

bool sync_record_is(const char *want)
{
	int64_t rev;

	return sync_record_is_rev(want, &rev);
}

bool wait_record(const char *want, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (sync_record_is(want))
			return true;
		usleep(10000);
	}
	return false;
}

/* ----------------------------------------------------------- the pair */

char extra[512];

char fo_prefix[64];
char df_mnt[160];	/* a small file system mounted for a test */

void fo_arbiter(const char *prefix)
{
	snprintf(fo_prefix, sizeof(fo_prefix), "%s", prefix);
	snprintf(extra, sizeof(extra),
		 "arbiter = etcd\netcd_endpoints = unix:%s-{host}.sock\n"
		 "lease_ttl_ms = %d\narbiter_prefix = %s\n",
		 etcd_dir, TTL_MS, fo_prefix);
}

void fo_setup(void)
{
	char prefix[64];

	/* A peer (a daemon, etcd) that closes while a forwarder writes to
	 * it must not kill the test process. */
	signal(SIGPIPE, SIG_IGN);
	etcd_start();
	fwd_start(&fw[0], 'a');
	fwd_start(&fw[1], 'b');
	snprintf(prefix, sizeof(prefix), "/shmbus/t%d", getpid());
	fo_arbiter(prefix);
}

void fo_fini(void)
{
	uint64_t n;

	splitbrain_stop(&n);
	char cmd[160];

	if (df_mnt[0]) {
		if (B.pid > 0)
			host_kill(&B, SIGKILL);
		umount2(df_mnt, MNT_DETACH);
		df_mnt[0] = 0;
	}
	pair_teardown();
	cluster_stop();
	fwd_stop(&fw[0]);
	fwd_stop(&fw[1]);
	etcd_kill();
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s.log", etcd_dir, etcd_dir);
	if (system(cmd)) {
		/* nothing more to do */
	}
	etcd_dir[0] = 0;
}




struct log *lg;
unsigned fo_pace_us = 200;

int sync_publisher(void *arg)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 0 };
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, "fo", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[64];

	(void)arg;
	if (!pub)
		return 2;
	for (uint64_t i = atomic_load(&lg->next); !atomic_load(&lg->stop); i++) {
		int rc;

		th_msg_fill(msg, sizeof(msg), 1, i);
		rc = shmbus_publish(pub, msg, sizeof(msg));
		if (rc == 0)
			atomic_store(&lg->next, i + 1);
		if (rc == -EROFS) {
			atomic_store(&lg->refused, 1);
			break;
		}
		if (rc)
			return 3;
		rc = shmbus_pub_sync(pub, lg->sync_ns ? lg->sync_ns
						       : 200000000);
		if (rc == 0) {
			/* Everything this producer committed so far. */
			atomic_store(&lg->acked, i + 1);
			if (lg->pace_us)
				usleep(lg->pace_us);
		} else if (rc == -EROFS) {
			atomic_store(&lg->refused, 1);
			break;
		} else if (rc == -ETIMEDOUT) {
			/* Unknown, and not counted: the next success will
			 * cover it (a machine busy with two tests at once
			 * takes more than the bound now and then). */
		} else {
			/* Degraded (the standby out of sync): committed
			 * here, not acknowledged at the channel's level, so
			 * not counted; the next success covers it. */
			usleep(1000);
		}
	}
	return 0;
}

void wait_acked(uint64_t n, int ms)
{
	for (int i = 0; i < ms && atomic_load(&lg->acked) < n; i++)
		usleep(1000);
	cr_assert_geq(atomic_load(&lg->acked), n, "%lu of %lu messages "
		      "acknowledged after %d ms (next %lu, refused %d)",
		      (unsigned long)atomic_load(&lg->acked), (unsigned long)n,
		      ms, (unsigned long)atomic_load(&lg->next),
		      atomic_load(&lg->refused));
}

void log_open(void)
{
	uint64_t n;

	splitbrain_stop(&n);	/* a test that opens the log again */
	splitbrain_start();
	lg = mmap(NULL, sizeof(*lg), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(lg != MAP_FAILED);
	lg->pace_us = fo_pace_us;
}

/* Whether h is a primary now, by its channel's fence and flags (not
 * fenced, not a standby). */
pid_t fo_start(const char *chans, const char *ext, uint64_t n, bool watch)
{
	pid_t pub;

	log_open();
	pair_setup(chans, ext);
	if (watch)
		watch_b();
	cr_assert(host_log_wait(&A, "holds the leader key", 10000));
	pub = th_spawn(sync_publisher, NULL);
	wait_acked(n, 30000);
	cr_assert(wait_record("in ", 5000), "recorded in sync");
	return pub;
}

uint64_t fo_stop(pid_t pub)
{
	atomic_store(&lg->stop, 1);
	waitpid(pub, NULL, 0);
	return atomic_load(&lg->acked);
}

bool is_primary(const struct host *h)
{
	struct sb_repl_view v;

	host_view(h, "fo", &v);
	return !(v.flags & SHMBUS_REPL_STANDBY) &&
	       v.fence == SHMBUS_FENCE_OPEN;
}

/* A subscriber on B from the start (opened before any message), to read
 * what B holds after a failover: on a new primary a subscriber that asks
 * for the oldest record starts where its replication cursor is. */
shmbus_channel *bch;
shmbus_sub *bsub;

void watch_b(void)
{
	struct shmbus_sub_attr sa;

	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	bch = host_map(&B, "fo");
	cr_assert(bch);
	bsub = shmbus_sub_open(bch, &sa);
	cr_assert(bsub);
}

/* Every acknowledged message 0..acked-1 is on B, in order, once (and
 * nothing after a gap). */
void assert_b_has_acked(uint64_t acked)
{
	uint8_t buf[256];
	uint64_t next = 0;

	for (;;) {
		ssize_t n = shmbus_read(bsub, buf, sizeof(buf), NULL);
		uint64_t seq;
		uint32_t id;

		if (n == -EAGAIN)
			break;
		cr_assert_geq(n, 0, "read: %zd", n);
		cr_assert_eq(th_msg_check(buf, (size_t)n, &id, &seq), 0);
		cr_assert_eq(seq, next, "message %lu where %lu was due",
			     (unsigned long)seq, (unsigned long)next);
		next++;
	}
	cr_assert_geq(next, acked, "B holds %lu messages, %lu acknowledged",
		      (unsigned long)next, (unsigned long)acked);
	shmbus_sub_close(bsub);
	shmbus_channel_close(bch);
	bsub = NULL;
	bch = NULL;
}

/* Waits until cond(h) for at most ms; the time it took (ms), or -1. */
int wait_for(bool (*cond)(const struct host *), const struct host *h,
		    int ms)
{
	uint64_t t0 = th_now_ns();

	while (th_now_ns() - t0 < (uint64_t)ms * 1000000) {
		if (cond(h))
			return (int)((th_now_ns() - t0) / 1000000);
		usleep(5000);
	}
	return -1;
}

bool is_standby_linked(const struct host *h)
{
	struct sb_repl_view v;

	host_view(h, "fo", &v);
	return (v.flags & SHMBUS_REPL_STANDBY) && (v.flags & SHMBUS_REPL_LINK);
}

/* ------------------------------------------- a three-member etcd cluster */


pid_t member_pid[MEMBERS];
struct fwd fwc[2][MEMBERS];

int member_port(int k)
{
	return etcd_port + 10 + 2 * k;	/* its peer port is the next one */
}

void cluster_start(void)
{
	char cluster[512] = "";
	size_t o = 0;

	for (int k = 0; k < MEMBERS; k++)
		o += (size_t)snprintf(cluster + o, sizeof(cluster) - o,
				      "%sm%d=http://127.0.0.1:%d", k ? "," : "",
				      k, member_port(k) + 1);
	for (int k = 0; k < MEMBERS; k++) {
		char name[16], dir[96];

		snprintf(name, sizeof(name), "m%d", k);
		snprintf(dir, sizeof(dir), "%s-m%d", etcd_dir, k);
		member_pid[k] = etcd_spawn(name, dir, member_port(k), cluster);
	}
	for (int k = 0; k < MEMBERS; k++) {
		int fd = -1;

		for (int i = 0; i < 1500 && fd < 0; i++) {
			fd = tcp_to_port(member_port(k));
			if (fd < 0)
				usleep(10000);
		}
		cr_assert_geq(fd, 0, "etcd member %d did not come up", k);
		close(fd);
	}
	usleep(1500000);	/* a leader elected */
	for (int h = 0; h < 2; h++)
		for (int k = 0; k < MEMBERS; k++) {
			char path[108];

			snprintf(path, sizeof(path), "%s-c%d-%c.sock", etcd_dir,
				 k, h ? 'b' : 'a');
			fwd_start_to(&fwc[h][k], path, member_port(k));
		}
}

void cluster_stop(void)
{
	char cmd[200];

	for (int h = 0; h < 2; h++)
		for (int k = 0; k < MEMBERS; k++)
			fwd_stop(&fwc[h][k]);
	for (int k = 0; k < MEMBERS; k++)
		if (member_pid[k] > 0) {
			kill(member_pid[k], SIGKILL);
			waitpid(member_pid[k], NULL, 0);
			member_pid[k] = 0;
		}
	snprintf(cmd, sizeof(cmd), "rm -rf %s-m* ", etcd_dir);
	if (system(cmd)) {
		/* nothing more to do */
	}
}

/* The member that leads the cluster now (its index), from a member's
 * /v3/maintenance/status through the gateway; -1 if none answers. */
int cluster_leader(void)
{
	for (int k = 0; k < MEMBERS; k++) {
		static const char req[] =
			"POST /v3/maintenance/status HTTP/1.0\r\n"
			"Content-Type: application/json\r\n"
			"Content-Length: 2\r\n\r\n{}";
		char buf[4096], *p, *q;
		unsigned long long leader, me;
		size_t n = 0;
		ssize_t r;
		int fd = member_pid[k] > 0 ? tcp_to_port(member_port(k)) : -1;

		if (fd < 0 || send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) !=
				      (ssize_t)sizeof(req) - 1) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		while (n < sizeof(buf) - 1 &&
		       (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
			n += (size_t)r;
		close(fd);
		buf[n] = 0;
		p = strstr(buf, "\"leader\":\"");
		q = strstr(buf, "\"member_id\":\"");
		if (!p || !q)
			continue;
		leader = strtoull(p + 10, NULL, 10);
		me = strtoull(q + 13, NULL, 10);
		if (leader == me)
			return k;
	}
	return -1;
}

/* ------------------------------------------------- the split-brain watch */

static pthread_t sb_th;
static atomic_bool sb_on;
static _Atomic uint64_t sb_both, sb_samples;

/* Whether h's channel "fo" takes writes now, and at which epoch; false
 * if it cannot be mapped (not made yet, or being made again). */
static bool takes_writes(const struct host *h, uint64_t *epoch)
{
	shmbus_channel *ch = shmbus_channel_open_ro(h->dir, "fo");
	struct sb_repl_view v;

	if (!ch)
		return false;
	sb_repl_read(ch, &v);
	shmbus_channel_close(ch);
	*epoch = v.epoch;
	return !(v.flags & SHMBUS_REPL_STANDBY) &&
	       v.fence == SHMBUS_FENCE_OPEN;
}

static void *sb_main(void *arg)
{
	(void)arg;
	while (atomic_load(&sb_on)) {
		uint64_t ea, eb;

		if (takes_writes(&A, &ea) && takes_writes(&B, &eb) && ea == eb)
			atomic_fetch_add(&sb_both, 1);
		atomic_fetch_add(&sb_samples, 1);
		usleep(2000);
	}
	return NULL;
}

void splitbrain_start(void)
{
	atomic_store(&sb_both, 0);
	atomic_store(&sb_samples, 0);
	atomic_store(&sb_on, true);
	cr_assert_eq(pthread_create(&sb_th, NULL, sb_main, NULL), 0);
}

uint64_t splitbrain_stop(uint64_t *samples)
{
	if (atomic_exchange(&sb_on, false))
		pthread_join(sb_th, NULL);
	*samples = atomic_load(&sb_samples);
	return atomic_load(&sb_both);
}
