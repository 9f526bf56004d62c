/* SPDX-License-Identifier: MIT */
/*
 * test_dirs.c - shmbusd keeps its bus only in directories no other user
 * controls: a shm_dir (or the socket's directory) made first by another
 * user, writable by others, or a symbolic link makes the daemon refuse to
 * start with a line that names it, before it serves or adopts anything.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"

/* Writes a config whose shm_dir is `shm` (and whose socket stays in the
 * test's directory), runs the daemon, and returns its exit code. */
static int run_with_shm_dir(const char *shm)
{
	char body[512];

	snprintf(body, sizeof(body), "shm_dir = %s\n[defaults]\n"
		 "subscribe = *\n[channel ch]\ncapacity = 8K\n", shm);
	write_conf(body);
	return th_wait(spawn_daemon());
}

static void prepare(void)
{
	snprintf(d.dir, sizeof(d.dir), "%s", th_mkdir());
	chmod(d.dir, 0755);
	snprintf(d.conf, sizeof(d.conf), "%s/bus.conf", d.dir);
	snprintf(d.sock, sizeof(d.sock), "%s/bus.sock", d.dir);
	snprintf(d.log, sizeof(d.log), "%s/daemon.log", d.dir);
}

static void cleanup(void)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d.dir);
	cr_expect_eq(system(cmd), 0);
}

Test(dirs, a_shm_dir_made_by_another_user_is_refused, .init = prepare,
     .fini = cleanup, .timeout = 30)
{
	char shm[128], planted[160];
	FILE *f;

	if (geteuid() != 0)
		cr_skip_test("needs root to give a directory away");
	snprintf(shm, sizeof(shm), "%s/squat", d.dir);
	cr_assert_eq(mkdir(shm, 0755), 0);
	cr_assert_eq(chown(shm, 65534, 65534), 0);
	snprintf(planted, sizeof(planted), "%s/evil", shm);
	f = fopen(planted, "w");
	cr_assert(f);
	fclose(f);
	cr_assert_neq(run_with_shm_dir(shm), 0, "served a squatted shm_dir");
	cr_assert(log_has("owned by another user"), "no reason logged");
	/* Nothing was created or adopted in it. */
	snprintf(planted, sizeof(planted), "%s/ch", shm);
	cr_assert_neq(access(planted, F_OK), 0);
}

Test(dirs, a_shm_dir_writable_by_others_or_a_link_is_refused,
     .init = prepare, .fini = cleanup, .timeout = 30)
{
	char shm[128], link[256];

	snprintf(shm, sizeof(shm), "%s/open", d.dir);
	cr_assert_eq(mkdir(shm, 0755), 0);
	cr_assert_eq(chmod(shm, 0777), 0);
	cr_assert_neq(run_with_shm_dir(shm), 0);
	cr_assert(log_has("writable by other users"));

	cr_assert_eq(chmod(shm, 0755), 0);
	snprintf(link, sizeof(link), "%s/link", d.dir);
	cr_assert_eq(symlink(shm, link), 0);
	cr_assert_neq(run_with_shm_dir(link), 0);
	cr_assert(log_has("not a directory"));

	/* The same directory, as it should be: served. */
	snprintf(link, sizeof(link), "shm_dir = %s\n[defaults]\n"
		 "subscribe = *\n[channel ch]\ncapacity = 8K\n", shm);
	write_conf(link);
	start_daemon();
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
}

/* A config with a replicated channel whose state_dir is `state`; runs the
 * daemon (a primary without its peer, which starts alone) and returns
 * its exit code, or -1 if it started (it is then stopped). */
static int run_with_state_dir(const char *state)
{
	char body[1024], key[160];
	FILE *f;
	pid_t pid;

	snprintf(key, sizeof(key), "%s/key", d.dir);
	f = fopen(key, "w");
	cr_assert(f);
	fprintf(f, "0123456789abcdef0123456789abcdef\n");
	fclose(f);
	chmod(key, 0600);
	snprintf(body, sizeof(body), "[replication]\nrole = primary\n"
		 "listen = 127.0.0.1:%d\npeer = 127.0.0.1:%d\nkey_file = %s\n"
		 "state_dir = %s\n[channel ch]\ncapacity = 8K\n"
		 "replicate = local\n", 20000 + getpid() % 20000,
		 20001 + getpid() % 20000, key, state);
	write_conf(body);
	pid = spawn_daemon();
	for (int i = 0; i < 100; i++) {
		int st;
		shmbus_bus *b;

		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
		b = shmbus_connect(d.sock);
		if (b) {
			shmbus_disconnect(b);
			break;
		}
		usleep(20000);
	}
	kill(pid, SIGTERM);
	th_wait(pid);
	return -1;
}

/* state_dir holds what a host must never lose or take from someone else
 * (its epoch history, its id, its rings' identities): a symbolic link
 * put there in place of the history is not written through (the daemon
 * appended its epoch line to whatever file it named, creating it if
 * needed), and a state_dir another user owns or may write to, where
 * anyone could put such a link, is refused like a shm_dir. */
Test(dirs, a_state_dir_link_is_not_written_through, .init = prepare,
     .fini = cleanup, .timeout = 30)
{
	char state[128], target[160], link[192];

	snprintf(state, sizeof(state), "%s/state", d.dir);
	cr_assert_eq(mkdir(state, 0700), 0);
	snprintf(target, sizeof(target), "%s/elsewhere", d.dir);
	snprintf(link, sizeof(link), "%s/epochs", state);
	cr_assert_eq(symlink(target, link), 0);
	cr_assert_geq(run_with_state_dir(state), 1,
		      "served with state_dir/epochs a symbolic link");
	cr_assert_neq(access(target, F_OK), 0,
		      "the history was written through the link");
	cr_assert(log_has("epochs"), "no line names the history");
}

Test(dirs, a_state_dir_of_another_user_or_writable_by_others_is_refused,
     .init = prepare, .fini = cleanup, .timeout = 30)
{
	char state[128];

	snprintf(state, sizeof(state), "%s/open", d.dir);
	cr_assert_eq(mkdir(state, 0700), 0);
	cr_assert_eq(chmod(state, 0777), 0);
	cr_assert_geq(run_with_state_dir(state), 1,
		      "served a state_dir anyone may write to");
	cr_assert(log_has("writable by other users"));
	if (geteuid() == 0) {
		cr_assert_eq(chmod(state, 0700), 0);
		cr_assert_eq(chown(state, 65534, 65534), 0);
		cr_assert_geq(run_with_state_dir(state), 1,
			      "served a state_dir of another user");
		cr_assert(log_has("owned by another user"));
		cr_assert_eq(chown(state, 0, 0), 0);
	}
	/* As it should be: served. */
	cr_assert_eq(run_with_state_dir(state), -1, "see %s", d.log);
}

/* A link another user put in place of a level of state_dir (in a
 * directory of theirs) is refused before anything is made where it
 * leads (state_dir was made there, then refused). */
Test(dirs, a_state_dir_below_another_users_link_makes_nothing,
     .init = prepare, .fini = cleanup, .timeout = 30)
{
	char theirs[128], victim[128], link[160], state[192];

	if (geteuid() != 0)
		cr_skip_test("needs root to give a directory to uid 65534");
	snprintf(victim, sizeof(victim), "%s/victim", d.dir);
	cr_assert_eq(mkdir(victim, 0755), 0);
	snprintf(theirs, sizeof(theirs), "%s/theirs", d.dir);
	cr_assert_eq(mkdir(theirs, 0755), 0);
	cr_assert_eq(chown(theirs, 65534, 65534), 0);
	snprintf(link, sizeof(link), "%s/lnk", theirs);
	cr_assert_eq(symlink(victim, link), 0);
	cr_assert_eq(lchown(link, 65534, 65534), 0);
	snprintf(state, sizeof(state), "%s/state", link);
	cr_assert_geq(run_with_state_dir(state), 1,
		      "served a state_dir below another user's link");
	cr_assert(log_has("theirs: refused: owned by another user"));
	snprintf(state, sizeof(state), "%s/state", victim);
	cr_assert_neq(access(state, F_OK), 0, "%s made", state);
}

/* A state_dir reached through a symbolic link to a directory of its own
 * (to a data volume, say) is served: the rule holds where it resolves. */
Test(dirs, a_state_dir_reached_through_a_link_is_served, .init = prepare,
     .fini = cleanup, .timeout = 30)
{
	char real[128], link[128], state[160], epochs[192];

	snprintf(real, sizeof(real), "%s/volume", d.dir);
	cr_assert_eq(mkdir(real, 0700), 0);
	snprintf(link, sizeof(link), "%s/persist", d.dir);
	cr_assert_eq(symlink(real, link), 0);
	snprintf(state, sizeof(state), "%s/state", link);
	cr_assert_eq(run_with_state_dir(state), -1, "refused: see %s",
		     d.log);
	snprintf(epochs, sizeof(epochs), "%s/state/epochs", real);
	cr_assert_eq(access(epochs, F_OK), 0, "no history in %s", real);
}
