/* SPDX-License-Identifier: MIT */
/*
 * test_arbiter.c - the arbiter's client (daemon/etcd.c) and leader thread
 * (daemon/leader.c) when etcd's gateway misbehaves (docs/failover.md).
 *
 * The etcd_client suite speaks to the client alone through a gateway of
 * its own in this process, which answers each request with a canned text
 * or never.  The arbiter suite runs the failover tests' pair and etcd
 * (failover_fixture.h), one host reaching etcd through tests/etcd_liar.py
 * instead of its forwarder: a gateway that forwards to the real etcd but
 * answers late, or with a field changed, as its rules say.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "failover_fixture.h"
#include "repl_fixture.h"
#include "shmbus/layout.h"
#include "../daemon/etcd.h"

/* ------------------------------------------------ a gateway in-process */

/* Answers every request on a Unix socket with `answer` (a JSON text, as
 * a 200), or never (NULL: the connection is held open until the end). */
static struct {
	char path[108];
	int lfd;
	const char *answer;
	atomic_bool stop;
	pthread_t th;
} gw;

/* Reads one request (its headers, then Content-Length bytes). */
static void read_request(int fd)
{
	char buf[8192], *end;
	size_t n = 0, need = 0;

	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);

		if (r <= 0)
			return;
		n += (size_t)r;
		buf[n] = 0;
		end = strstr(buf, "\r\n\r\n");
		if (end && !need) {
			char *cl = strcasestr(buf, "Content-Length:");

			need = (size_t)(end + 4 - buf) +
			       (cl ? strtoul(cl + 15, NULL, 10) : 0);
		}
		if (need && n >= need)
			return;
		if (n == sizeof(buf) - 1)
			return;
	}
}

static void *gw_main(void *arg)
{
	int held[16], nheld = 0;

	(void)arg;
	while (!atomic_load(&gw.stop)) {
		struct pollfd p = { gw.lfd, POLLIN, 0 };
		char head[160];
		int fd;

		if (poll(&p, 1, 20) <= 0)
			continue;
		fd = accept4(gw.lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		read_request(fd);
		if (!gw.answer) {
			if (nheld < 16)
				held[nheld++] = fd;
			else
				close(fd);
			continue;
		}
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: "
			 "application/json\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n", strlen(gw.answer));
		if (send(fd, head, strlen(head), MSG_NOSIGNAL) < 0 ||
		    send(fd, gw.answer, strlen(gw.answer), MSG_NOSIGNAL) < 0) {
			/* the client gave up: nothing to do */
		}
		close(fd);
	}
	while (nheld)
		close(held[--nheld]);
	return NULL;
}

/* The gateway, answering `answer` (NULL: never); a client of it, whose
 * requests time out after 200 ms. */
static struct etcd *gw_start(const char *answer)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	char url[160], why[128];
	struct etcd *e;

	snprintf(gw.path, sizeof(gw.path), "/tmp/shmbus-test-gw-%d.sock",
		 getpid());
	unlink(gw.path);
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", gw.path);
	gw.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(gw.lfd >= 0);
	cr_assert_eq(bind(gw.lfd, (void *)&un, sizeof(un)), 0);
	cr_assert_eq(listen(gw.lfd, 16), 0);
	gw.answer = answer;
	atomic_store(&gw.stop, false);
	cr_assert_eq(pthread_create(&gw.th, NULL, gw_main, NULL), 0);
	snprintf(url, sizeof(url), "unix:%s", gw.path);
	e = etcd_open(url, 200, why, sizeof(why));
	cr_assert(e, "%s", why);
	return e;
}

static void gw_fini(void)
{
	if (!gw.path[0])
		return;
	atomic_store(&gw.stop, true);
	pthread_join(gw.th, NULL);
	close(gw.lfd);
	unlink(gw.path);
	gw.path[0] = 0;
}

TestSuite(etcd_client, .fini = gw_fini, .timeout = 30);

/* A gateway that takes the request and never answers: the request may
 * have been applied, which -ETIMEDOUT says (and the log's strerror()). */
Test(etcd_client, a_request_without_an_answer_times_out)
{
	struct etcd *e = gw_start(NULL);
	struct etcd_kv kv;

	cr_assert_eq(etcd_get(e, "/k", &kv), -ETIMEDOUT);
	etcd_close(e);
}

/* Nobody listening: the request was never made. */
Test(etcd_client, a_gateway_not_listening_refuses)
{
	struct etcd *e = gw_start("{}");
	struct etcd_kv kv;

	gw_fini();
	cr_assert_eq(etcd_get(e, "/k", &kv), -ECONNREFUSED);
	etcd_close(e);
}

/* A client of two endpoints: the gateway answering `answer` (NULL:
 * never), then a socket nobody listens on. */
static struct etcd *two_endpoints(const char *answer)
{
	char url[300], why[128], none[108];
	struct etcd *e = gw_start(answer);

	etcd_close(e);
	snprintf(none, sizeof(none), "/tmp/shmbus-test-gw-%d-none.sock",
		 getpid());
	unlink(none);
	snprintf(url, sizeof(url), "unix:%s,unix:%s", gw.path, none);
	e = etcd_open(url, 200, why, sizeof(why));
	cr_assert(e, "%s", why);
	return e;
}

/* Through two_endpoints(answer): a transaction and a put say `rc` (the
 * first endpoint's outcome, not sent to the second); a read goes on to
 * the second, which refuses. */
static void not_sent_again(const char *answer, int rc)
{
	struct etcd *two = two_endpoints(answer);
	struct etcd_kv kv;
	bool won = true;

	cr_assert_eq(etcd_create_if(two, "/k", "v", 0, "/g", 0, "x", &won,
				    &kv), rc);
	cr_assert_eq(etcd_put_if(two, "/k", "v", 0, 0, &won), rc);
	cr_assert_eq(etcd_get(two, "/k", &kv), -ECONNREFUSED);
	etcd_close(two);
}

/* Two endpoints, the first taking requests and never answering, the
 * second not listening.  A transaction that timed out on the first may
 * have been applied there: it is not sent to the second (whose answer,
 * to a copy, would say the opposite of what happened), and says
 * -ETIMEDOUT; a read goes on to the second (-ECONNREFUSED, the last
 * endpoint's). */
Test(etcd_client, a_transaction_timed_out_is_not_sent_to_the_next_endpoint)
{
	not_sent_again(NULL, -ETIMEDOUT);
}

/* An answer that is not etcd's (a proxy's error page) came from a server
 * the transaction reached: it is not sent to the next endpoint either
 * (-EPROTO, not the next endpoint's refusal); a read is. */
Test(etcd_client, a_transaction_answered_by_a_proxys_page_is_not_sent_again)
{
	not_sent_again("<html>502 Bad Gateway</html>", -EPROTO);
}

/* A keepalive's TTL is checked as etcd could answer it: a number of
 * seconds, 0 (the lease is gone) to etcd's longest lease, about our
 * lease. */
Test(etcd_client, a_keepalive_ttl_out_of_range_is_refused)
{
	static const struct {
		const char *answer;
		int rc;
		int64_t left;
	} cases[] = {
		{ "{\"result\":{\"ID\":\"7\",\"TTL\":\"3\"}}", 0, 3 },
		{ "{\"result\":{\"ID\":\"7\"}}", 0, 0 },
		{ "{\"result\":{\"ID\":\"7\",\"TTL\":\"9000000000\"}}", 0,
		  9000000000LL },
		{ "{\"result\":{\"ID\":\"7\",\"TTL\":\"10000000000\"}}",
		  -EPROTO, 0 },
		{ "{\"result\":{\"ID\":\"7\",\"TTL\":\"-5\"}}", -EPROTO, 0 },
		{ "{\"result\":{\"ID\":\"7\",\"TTL\":\"x\"}}", -EPROTO, 0 },
		{ "{\"result\":{\"ID\":\"8\",\"TTL\":\"3\"}}", -EPROTO, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct etcd *e = gw_start(cases[i].answer);
		int64_t left = -1;

		cr_assert_eq(etcd_lease_keepalive(e, 7, &left), cases[i].rc,
			     "%s", cases[i].answer);
		cr_assert_eq(left, cases[i].left, "%s", cases[i].answer);
		etcd_close(e);
		gw_fini();
	}
}

/* A grant says the TTL etcd gave, which may not be the one asked. */
Test(etcd_client, a_grant_says_the_ttl_granted)
{
	struct etcd *e = gw_start("{\"ID\":\"5\",\"TTL\":\"2\"}");
	int64_t id = 0, ttl = 0;

	cr_assert_eq(etcd_lease_grant(e, 1, &id, &ttl), 0);
	cr_assert_eq(id, 5);
	cr_assert_eq(ttl, 2);
	etcd_close(e);
}

/* ------------------------------------------ the pair behind a liar */

static pid_t liar_pid[2];
static char liar_rules_path[2][96];

/* The liar's socket for host h (0: A, 1: B): its forwarder's path. */
static void liar_sock(int h, char *path, size_t n)
{
	snprintf(path, n, "%s-%c.sock", etcd_dir, h ? 'b' : 'a');
}

/* Host h's liar's rules from now on (a JSON list, etcd_liar.py). */
static void liar_rules(int h, const char *json)
{
	char tmp[112];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.w", liar_rules_path[h]);
	f = fopen(tmp, "w");
	cr_assert(f);
	fputs(json, f);
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(rename(tmp, liar_rules_path[h]), 0);
}

/* Whether host h's liar has applied all its rules (each one's "count",
 * as etcd_liar.py writes it back, down to 0), waiting at most ms. */
static bool liar_spent(int h, int ms)
{
	for (int i = 0; i <= ms / 10; i++) {
		char buf[4096];
		FILE *f = fopen(liar_rules_path[h], "r");
		size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		bool left = !n;

		if (f)
			fclose(f);
		buf[n] = 0;
		for (char *p = buf; (p = strstr(p, "\"count\":")); p++)
			left |= strtol(p + 8, NULL, 10) > 0;
		if (!left)
			return true;
		usleep(10000);
	}
	return false;
}

/* Host h reaches etcd through a liar from now on, with no rule yet: its
 * forwarder stops (its connections drop), the liar takes its socket. */
static void liar_start(int h)
{
	char port[16], path[108];
	struct stat st;

	snprintf(liar_rules_path[h], sizeof(liar_rules_path[h]),
		 "/dev/shm/shmbus-test-liar-%d-%c.json", getpid(),
		 h ? 'b' : 'a');
	liar_rules(h, "[]");
	fwd_stop(&fw[h]);
	liar_sock(h, path, sizeof(path));
	snprintf(port, sizeof(port), "%d", etcd_port);
	liar_pid[h] = fork();
	cr_assert(liar_pid[h] >= 0);
	if (liar_pid[h] == 0) {
		/* Gone with the test, whatever ends it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execlp("python3", "python3", "tests/etcd_liar.py", path, port,
		       liar_rules_path[h], (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			return;
		cr_assert_eq(waitpid(liar_pid[h], NULL, WNOHANG), 0,
			     "tests/etcd_liar.py exited");
		usleep(10000);
	}
	cr_assert_fail("tests/etcd_liar.py did not come up in 10 s");
}

/* Each host's second etcd endpoint (ETCD_DIR-a2.sock, -b2.sock), a
 * forwarder to the same etcd, if a test lists two. */
static struct fwd fw2[2];

static void liar_fini(void)
{
	fwd_stop(&fw2[0]);
	fwd_stop(&fw2[1]);
	for (int h = 0; h < 2; h++) {
		char path[108];

		if (liar_pid[h] > 0) {
			kill(liar_pid[h], SIGKILL);
			waitpid(liar_pid[h], NULL, 0);
			liar_pid[h] = 0;
			liar_sock(h, path, sizeof(path));
			unlink(path);
		}
		if (liar_rules_path[h][0]) {
			unlink(liar_rules_path[h]);
			liar_rules_path[h][0] = 0;
		}
	}
	fo_fini();
}

TestSuite(arbiter, .init = fo_setup, .fini = liar_fini, .timeout = 120);

/* A keepalive answered with a TTL far past the term (past etcd's own
 * bound, and past what the term's arithmetic holds in nanoseconds): the
 * answer is refused, the renewal tried again, and the primary neither
 * crashes (UBSan) nor sets its term in the past and fences itself. */
Test(arbiter, a_keepalive_answer_with_a_huge_ttl_fences_nothing)
{
	pid_t pub = fo_start(FO_CHANS, extra, 100, false);

	liar_start(0);
	liar_rules(0, "[{\"path\": \"/v3/lease/keepalive\", \"action\": "
		   "\"set\", \"field\": \"result.TTL\", \"value\": "
		   "\"10000000000\", \"count\": 1}]");
	/* Renewed every third of the term: the lie is told within one. */
	cr_assert(liar_spent(0, 2 * TTL_MS), "no keepalive in two terms");
	usleep(200000);		/* the watchdog looks every 5 ms */
	fo_stop(pub);
	cr_assert(!host_log_wait(&A, "runtime error", 0), "UBSan: see %s",
		  A.log);
	cr_assert(is_primary(&A), "a keepalive's huge TTL fenced the primary");
}

/* A gateway that grants a shorter lease than asked (1 s of TTL_MS's 2):
 * the primary's terms are the lease's, from the first one on (it
 * acknowledged for 1.5 s on a lease of 1), and the log says so once. */
Test(arbiter, a_lease_granted_shorter_than_asked_bounds_the_term)
{
	struct shmbus_ctl_repl_reply r;
	int most = 0;
	pid_t pub;

	liar_start(0);
	liar_rules(0, "[{\"path\": \"/v3/lease/grant\", \"action\": "
		   "\"set\", \"field\": \"TTL\", \"value\": \"1\"}]");
	pub = fo_start(FO_CHANS, extra, 100, false);
	/* What it may acknowledge for, over two of the lease's terms. */
	for (int i = 0; i < 100; i++) {
		const char *p;
		int left;

		cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
		p = strstr(r.text, "may acknowledge for ");
		cr_assert(p, "%s", r.text);
		left = atoi(p + 20);
		if (left > most)
			most = left;
		usleep(20000);
	}
	fo_stop(pub);
	cr_assert_leq(most, 750, "it acknowledged %d ms ahead on a lease of "
		      "1 s", most);
	cr_assert(host_log_wait(&A, "etcd granted a lease of 1 s for the 2 s "
				"asked", 0));
	cr_assert(is_primary(&A));
}

/* PREFIX/sync = value, by hand (an operator, a script, a restore). */
static void put_sync(const char *value)
{
	char url[64], why[128], key[96];
	struct etcd *e;
	bool won = false;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", etcd_port);
	snprintf(key, sizeof(key), "%s/sync", fo_prefix);
	e = etcd_open(url, 1000, why, sizeof(why));
	cr_assert(e, "%s", why);
	cr_assert_eq(etcd_put_if(e, key, value, 0, 0, &won), 0);
	cr_assert(won);
	etcd_close(e);
}

/* The sync record overwritten by hand while the primary holds the key
 * and its standby is in sync: the primary writes it again as it should
 * read (it compares at each renewal), so that the standby, in sync all
 * along, takes over when the primary dies. */
Test(arbiter, a_sync_record_written_behind_the_primary_is_written_again)
{
	int ms;

	fo_stop(fo_start(FO_CHANS, extra, 100, false));
	put_sync("in sync, trust me");
	cr_assert(host_log_wait(&A, "unreadable sync record 'in sync, trust "
				"me'", 2 * TTL_MS), "not seen in two terms");
	cr_assert(wait_record("in 1 ", TTL_MS), "not written again");
	host_kill(&A, SIGKILL);
	ms = wait_for(is_primary, &B, 3 * TTL_MS);
	cr_assert_geq(ms, 0, "the standby in sync did not take over");
}

/* A standby whose sync record does not parse says so (not "no sync
 * record"), and does not take over. */
Test(arbiter, a_standby_says_its_sync_record_is_unreadable)
{
	fo_stop(fo_start(FO_CHANS, extra, 100, false));
	host_kill(&A, SIGKILL);
	put_sync("in sync, trust me");
	cr_assert(host_log_wait(&B, "(unreadable sync record 'in sync, trust "
				"me')", 3 * TTL_MS));
	cr_assert(!is_primary(&B));
}

/* The record is read strictly: the primary's "in 1 A ..." with a word
 * after its last field is unreadable, not "in 1 A ..." (the standby in
 * sync took over on it), nor is "out E ID /force" a record of ID. */
Test(arbiter, a_sync_record_with_a_word_after_its_fields_is_unreadable)
{
	struct etcd_kv kv;
	char v[sizeof(kv.value) + 8];

	fo_stop(fo_start(FO_CHANS, extra, 100, false));
	cr_assert(wait_record("in 1 ", 3000));
	cr_assert_eq(arbiter_key("sync", &kv), 0);
	cr_assert(kv.found);
	host_kill(&A, SIGKILL);
	snprintf(v, sizeof(v), "%s zz", kv.value);
	put_sync(v);
	cr_assert(host_log_wait(&B, "unreadable sync record", 3 * TTL_MS),
		  "B read '%s'", v);
	cr_assert(!is_primary(&B));
}

/*
 * A switchover whose new primary's transaction (the leader key, and "out
 * NEWEPOCH B" in the sync record) etcd applies but answers after the
 * client's timeout (a quarter of the term: a slow fsync).  B cannot tell
 * it from a transaction never made: it reads the key, finds it its own,
 * and gives it up as a promotion that did not happen, the record put
 * back first; then refuses.  A takes the key back at once and goes on.
 * (The key left under a lease nobody renewed, and the record naming B's
 * epoch, kept A out: no primary until that lease ran out and B promoted
 * itself.)
 */
Test(arbiter, a_switchover_whose_key_transaction_is_answered_late)
{
	struct shmbus_ctl_repl_reply r;
	int rc, ms;

	fo_stop(fo_start(FO_CHANS, extra, 100, false));
	cr_assert(wait_record("in 1 ", 3000));
	liar_start(1);
	liar_rules(1, "[{\"path\": \"/v3/kv/txn\", \"action\": "
		   "\"delay_answer\", \"ms\": 1500, \"count\": 1}]");
	rc = host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r);
	cr_assert_neq(rc, 0, "the switchover went through: %s", r.text);
	cr_assert(strstr(r.text, "given up again"), "%s", r.text);
	ms = wait_for(is_primary, &A, TTL_MS);
	cr_assert_geq(ms, 0, "A did not take the key back within a term");
	cr_assert(host_log_wait(&B, "the sync record is 'in 1 ", 0),
		  "B did not put the sync record back");
	cr_assert(wait_record("in 1 ", TTL_MS), "A did not record B in sync");
	/* B, which heard A all along, stands by behind it. */
	cr_assert_geq(wait_for(is_standby_linked, &B, TTL_MS), 0);
	cr_assert(is_primary(&A) && !is_primary(&B));
}

/*
 * The runbook's "the standby will not promote": the primary died after
 * recording its standby out of sync; `promote --force` on the standby
 * fails (etcd applies its transaction but answers late), and the
 * operator brings the old primary back instead.  The forced promotion
 * that failed has no effect: the old primary takes its key back, and the
 * standby, never recorded in sync, does not promote itself.  (The record
 * it left named its new epoch as its own, which kept the old primary out
 * and let the standby promote by itself once its stray lease ran out.)
 */
Test(arbiter, a_failed_forced_promotion_has_no_effect)
{
	struct shmbus_ctl_repl_reply r;
	pid_t pub;
	int rc;

	pub = fo_start(FO_CHANS, extra, 100, false);
	host_pause(&B);
	cr_assert(wait_record("out 1 ", 5000), "B not recorded out of sync");
	fo_stop(pub);
	host_kill(&A, SIGKILL);
	kill(B.pid, SIGCONT);
	cr_assert(host_log_wait(&B, "not recorded in sync", 3 * TTL_MS));
	liar_start(1);
	liar_rules(1, "[{\"path\": \"/v3/kv/txn\", \"action\": "
		   "\"delay_answer\", \"ms\": 1500, \"count\": 1}]");
	rc = host_ctl(&B, SHMBUS_REPL_OP_PROMOTE, SHMBUS_REPL_FORCE, &r);
	cr_assert_neq(rc, 0, "the forced promotion went through: %s", r.text);
	cr_assert(strstr(r.text, "given up again"), "%s", r.text);
	cr_assert(sync_record_is("out 1 "), "the record was not put back");
	host_start(&A);
	cr_assert_geq(wait_for(is_primary, &A, 3 * TTL_MS), 0,
		      "the old primary did not take its key back");
	/* Past the term of the lease B's claim was granted. */
	cr_assert_geq(wait_for(is_standby_linked, &B, 2 * TTL_MS), 0);
	usleep(TTL_MS * 1000);
	cr_assert(is_primary(&A) && !is_primary(&B));
	cr_assert(!host_log_wait(&B, "took the leader key and is primary", 0),
		  "B promoted itself");
}

/* The runbook's "the standby will not promote" to the point where the
 * operator runs promote --force on B: A recorded B out of sync ("out 1
 * A"), then died; B says it is not recorded in sync.  B reaches etcd
 * through a liar from here on. */
static void out_of_sync_standby_alone(void)
{
	pid_t pub = fo_start(FO_CHANS, extra, 100, false);

	host_pause(&B);
	cr_assert(wait_record("out 1 ", 5000), "B not recorded out of sync");
	fo_stop(pub);
	host_kill(&A, SIGKILL);
	kill(B.pid, SIGCONT);
	cr_assert(host_log_wait(&B, "not recorded in sync", 3 * TTL_MS));
	liar_start(1);
}

/* B's promote --force fails (its answer does not say `not_said`), and B,
 * never recorded in sync, does not promote itself in the three terms
 * after (past the lease its claim was granted). */
static void forced_promotion_fails_for_good(const char *not_said)
{
	struct shmbus_ctl_repl_reply r;
	int rc = host_ctl(&B, SHMBUS_REPL_OP_PROMOTE, SHMBUS_REPL_FORCE, &r);

	cr_assert_neq(rc, 0, "the forced promotion went through: %s", r.text);
	cr_assert(!strstr(r.text, not_said), "%s", r.text);
	usleep(3 * TTL_MS * 1000);
	cr_assert(!is_primary(&B), "B, never recorded in sync, promoted "
		  "itself after a forced promotion that failed");
	cr_assert(!host_log_wait(&B, "took the leader key and is primary", 0),
		  "B promoted itself");
}

/*
 * B lists two gateways (as docs/failover.md's example lists three).  The
 * first applies the forced promotion's key transaction and answers it
 * late; the client must not send the same transaction to the second
 * (whose compare fails on B's own key, under the lease just granted: a
 * claim that read as "held by another host", revoked, and left "out 2 B"
 * in the record, which let B promote itself later, never recorded in
 * sync).  The promotion fails, and B stays a standby.
 */
Test(arbiter, a_forced_promotion_timed_out_on_one_endpoint_has_no_effect)
{
	char path[108];

	snprintf(extra, sizeof(extra),
		 "arbiter = etcd\netcd_endpoints = unix:%s-{host}.sock,"
		 "unix:%s-{host}2.sock\nlease_ttl_ms = %d\narbiter_prefix = %s\n",
		 etcd_dir, etcd_dir, TTL_MS, fo_prefix);
	snprintf(path, sizeof(path), "%s-a2.sock", etcd_dir);
	fwd_start_to(&fw2[0], path, etcd_port);
	snprintf(path, sizeof(path), "%s-b2.sock", etcd_dir);
	fwd_start_to(&fw2[1], path, etcd_port);
	out_of_sync_standby_alone();
	liar_rules(1, "[{\"path\": \"/v3/kv/txn\", \"action\": "
		   "\"delay_answer\", \"ms\": 1500, \"count\": 1}]");
	forced_promotion_fails_for_good("held by");
}

/*
 * A forced promotion that etcd applied, after which etcd answers B
 * nothing for longer than a term (its revoke applied, its reads late):
 * the record says "out 2 B force", and B is killed before etcd answers
 * again.  Restarted, B knows nothing of the claim; the record names its
 * epoch but, forced, does not say it holds everything: B does not
 * promote itself (it did, reading "out 2 B" as its own promotion).
 */
Test(arbiter, a_forced_claim_left_in_etcd_does_not_promote_after_a_restart)
{
	struct shmbus_ctl_repl_reply r;
	int rc;

	out_of_sync_standby_alone();
	liar_rules(1, "[{\"path\": \"/v3/kv/txn\", \"action\": "
		   "\"delay_answer\", \"ms\": 1500, \"count\": 1},"
		   "{\"after\": 0, \"action\": \"hang\", \"ms\": 1000, "
		   "\"count\": 100000}]");
	rc = host_ctl(&B, SHMBUS_REPL_OP_PROMOTE, SHMBUS_REPL_FORCE, &r);
	cr_assert_neq(rc, 0, "the forced promotion went through: %s", r.text);
	cr_assert(sync_record_is("out 2 "), "the claim was not left in etcd");
	host_kill(&B, SIGKILL);
	liar_rules(1, "[]");
	host_start(&B);
	usleep(3 * TTL_MS * 1000);
	cr_assert(!is_primary(&B), "B, never recorded in sync, promoted "
		  "itself after a restart");
	cr_assert(host_log_wait(&B, "not recorded in sync", 0));
}

/*
 * The forced promotion's key transaction is held up on its way (a
 * gateway slow to pass it on) and lands after B read the key free and
 * asked etcd to revoke the lease, a revoke that got no answer and was not
 * applied.  B must not take the revoke as done (it cleared its stray
 * flag, said "the leader key was not taken", and the transaction then
 * took the key under the live lease and wrote "out 2 B": B promoted
 * itself, never recorded in sync).
 */
Test(arbiter, a_claim_landing_after_an_unconfirmed_revoke_has_no_effect)
{
	out_of_sync_standby_alone();
	liar_rules(1, "[{\"path\": \"/v3/kv/txn\", \"action\": "
		   "\"delay_forward\", \"ms\": 1500, \"count\": 1},"
		   "{\"path\": \"/v3/lease/revoke\", \"action\": \"hang\", "
		   "\"ms\": 1000, \"count\": 1}]");
	forced_promotion_fails_for_good("was not taken");
}
