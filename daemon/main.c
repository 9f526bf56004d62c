/* SPDX-License-Identifier: MIT */
/*
 * main.c - shmbusd: the supervisor of one bus.
 *
 *   shmbusd [-c FILE | -b BUS] [-d SHM_DIR] [-S SOCKET] [-s] [-v] [-t]
 *
 * Starts in the foreground (a service manager daemonises; see
 * docs/shmbusd.service.in).  One instance per bus: an flock()ed lock file
 * next to the socket makes a second one refuse to start.  Signal handlers
 * only set a flag and write a byte to a pipe; the main loop acts on them.
 *
 * Under systemd (Type=notify) it says READY=1 once it serves (channels set
 * up and adopted, socket listening), RELOADING=1 then READY=1 around a
 * reload, STOPPING=1 at SIGTERM, with a STATUS= line each time.
 * sd_notify() does nothing when $NOTIFY_SOCKET is not set.
 *
 * Exit codes: 0 stopped cleanly, 1 could not start, 2 bad usage or
 * configuration.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl.h"

struct sbd_state sbd;

/* The kernel runs a handler on any thread that does not block the signal,
 * so the flags are atomics, not volatile sig_atomic_t (which C defines only
 * for a handler and the code it interrupted, on one thread).  Lock-free
 * atomics are async-signal-safe.  Relaxed: no edge, each flag is all the
 * handler tells; the pipe wakes the loop, which reads it. */
static atomic_int got_term, got_hup;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal flags are lock free");
static int sig_pipe[2] = { -1, -1 };

static void on_signal(int sig)
{
	int saved = errno;

	atomic_store_explicit(sig == SIGHUP ? &got_hup : &got_term, 1,
			      memory_order_relaxed);
	/* Wakes epoll_wait(); a full pipe already will. */
	if (write(sig_pipe[1], "s", 1) < 0) {
		/* nothing to do in a handler */
	}
	errno = saved;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmbusd [-c FILE | -b BUS] [-d SHM_DIR] [-S SOCKET] "
		"[-s] [-v] [-t]\n"
		"       shmbusd --help | --version\n"
		"  -c FILE    configuration (default /etc/shmbus/BUS.conf)\n"
		"  -b BUS     the bus to serve (default: default)\n"
		"  -d DIR     channel directory, overrides shm_dir\n"
		"  -S PATH    control socket, overrides socket\n"
		"  -s         log to syslog instead of stderr\n"
		"  -v         log at debug level\n"
		"  -t         check the configuration and exit\n"
		"Exit: 0 stopped cleanly, 1 could not start, 2 bad usage or "
		"configuration.\n");
}

/* mkdir -p for the socket's directory and the shm dir.  created (if not
 * NULL, PATH_MAX bytes) gets the topmost level this call made, or "". */
static int mkdirs(const char *path, mode_t mode, char *created)
{
	char buf[PATH_MAX];

	if (created)
		created[0] = 0;
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1;; p++) {
		bool last = !*p;

		if (*p != '/' && !last)
			continue;
		*p = 0;
		if (mkdir(buf, mode) == 0) {
			if (created && !created[0])
				snprintf(created, PATH_MAX, "%s", buf);
		} else if (errno != EEXIST) {
			return -errno;
		}
		if (last)
			return 0;
		*p = '/';
	}
}

/* shm_dir's lock file (lock_shm_dir()). */
#define SHM_LOCK ".shmbusd.lock"

/* remove_on_exit: the shm_dir goes if this daemon made it and it is now
 * empty, and so do the empty levels above it that it made (up to
 * `created`).  rmdir() removes only an empty directory, so a foreign file,
 * or a channel set aside as corrupt, keeps it. */
static void remove_shm_dir(const char *created)
{
	char p[PATH_MAX + sizeof(SHM_LOCK) + 1];
	size_t top = strlen(created);

	/* Its lock file, still held (lock_shm_dir()): a daemon waiting for
	 * it finds it unlinked and looks again. */
	snprintf(p, sizeof(p), "%s/%s", sbd.conf.shm_dir, SHM_LOCK);
	unlink(p);
	snprintf(p, sizeof(p), "%s", sbd.conf.shm_dir);
	for (;;) {
		size_t n = strlen(p);
		char *slash;

		while (n > 1 && p[n - 1] == '/')
			p[--n] = 0;
		if (n < top)
			return;
		if (rmdir(p) < 0) {
			sbd_log(SBD_NOTICE, errno, "%s: left in place", p);
			return;
		}
		sbd_log(SBD_INFO, 0, "%s: removed (remove_on_exit)", p);
		slash = strrchr(p, '/');
		if (n == top || !slash || slash == p)
			return;
		*slash = 0;
	}
}

/* Every client takes a descriptor and every channel three: asks for what
 * max_clients and max_channels need, up to the hard limit. */
static void raise_fd_limit(void)
{
	rlim_t want = (rlim_t)sbd.conf.max_clients +
		      3 * (rlim_t)sbd.conf.max_channels + 64;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ?
			      rl.rlim_max : want;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
		sbd_log(SBD_WARN, 0, "the descriptor limit (%llu) is below "
			"what max_clients and max_channels need (%llu): "
			"clients will be refused before max_clients",
			(unsigned long long)rl.rlim_cur,
			(unsigned long long)want);
}

/*
 * Opens (creating it) the lock file `name` in directory dfd, mode 0600:
 * flock() needs no more than a read-only descriptor, so a lock file other
 * users could open would let any of them take the lock before the daemon
 * (or wait for it and take it as the daemon stops) and keep every later
 * daemon from starting.  One made readable by an older shmbusd is made
 * 0600.  One with another name too (a hard link another user made in a
 * sticky directory, where fs.protected_hardlinks is off) is another
 * file: refused, never written nor chmodded.  Returns its fd, or -1
 * (logged).
 */
static int open_lock_file(int dfd, const char *name, const char *shown)
{
	struct stat st;
	int fd = openat(dfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
				   O_NONBLOCK, 0600);

	if (fd < 0) {
		sbd_log(SBD_ERR, errno, "%s", shown);
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
	    (st.st_uid != 0 && st.st_uid != geteuid()) ||
	    ((st.st_mode & 0077) && fchmod(fd, 0600) < 0)) {
		sbd_log(SBD_ERR, 0, "%s: refused: not a regular file of root "
			"or the daemon's user, of one name, that only its owner "
			"may open", shown);
		close(fd);
		return -1;
	}
	return fd;
}

/* One daemon per bus.  Returns the lock's fd, or -1 (reported). */
static int take_lock(void)
{
	char path[PATH_MAX + 8], dir[PATH_MAX], pid[32];
	char *slash;
	ssize_t n;
	int fd;

	snprintf(dir, sizeof(dir), "%s", sbd.conf.socket);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (mkdirs(dir, 0755, NULL) < 0) {
			sbd_log(SBD_ERR, errno, "%s", dir);
			return -1;
		}
		if (sbd_dir_is_ours(dir) < 0)
			return -1;
	}
	snprintf(path, sizeof(path), "%s.lock", sbd.conf.socket);
	fd = open_lock_file(AT_FDCWD, path, path);
	if (fd < 0)
		return -1;
	/* A holder that is gone (a zombie whose other threads are still
	 * exiting after a kill -9) lets go of the lock within moments:
	 * waited for, up to 2 s, so that a restart at once does not fail. */
	for (int i = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; i++) {
		long holder;

		n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		pid[strcspn(pid, "\n")] = 0;
		holder = strtol(pid, NULL, 10);
		if (i < 200 && holder > 0 && holder <= INT32_MAX &&
		    sb_pid_gone((uint32_t)holder)) {
			usleep(10000);
			continue;
		}
		sbd_log(SBD_ERR, 0, "bus '%s' is already served by shmbusd "
			"pid %s (lock %s held)", sbd.conf.bus,
			pid[0] ? pid : "?", path);
		close(fd);
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		sbd_log(SBD_WARN, errno, "%s", path);
	return fd;
}

/* One daemon per shm_dir as well: a second one given another socket
 * (-S) would adopt the same channels and run a second journal writer on
 * the same journals.  An flock() on shm_dir/SHM_LOCK, held until exit
 * (not on the directory itself, which every user who may list it could
 * open and lock).  Returns its fd, or -1 (reported). */
static int lock_shm_dir(void)
{
	char shown[PATH_MAX + sizeof(SHM_LOCK) + 1];

	snprintf(shown, sizeof(shown), "%s/%s", sbd.conf.shm_dir, SHM_LOCK);
	for (int i = 0;; i++) {
		int dfd = open(sbd.conf.shm_dir, O_RDONLY | O_DIRECTORY |
						 O_NOFOLLOW | O_CLOEXEC);
		int fd = dfd < 0 ? -1 : open_lock_file(dfd, SHM_LOCK, shown);
		struct stat held, now;

		if (dfd < 0)
			sbd_log(SBD_ERR, errno, "%s", sbd.conf.shm_dir);
		if (dfd >= 0)
			close(dfd);
		if (fd < 0)
			return -1;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			/* Still the lock file of that name: a daemon that
			 * removed the directory at exit (remove_on_exit)
			 * let go of the lock of one nobody else would
			 * find. */
			if (fstat(fd, &held) == 0 && held.st_nlink > 0 &&
			    lstat(shown, &now) == 0 &&
			    held.st_dev == now.st_dev &&
			    held.st_ino == now.st_ino)
				return fd;
		} else if (errno != EWOULDBLOCK || i >= 20) {
			sbd_log(SBD_ERR, errno == EWOULDBLOCK ? 0 : errno,
				"shm_dir %s is served by another shmbusd (its "
				"lock is held): one daemon serves a bus's "
				"directory, whatever its socket",
				sbd.conf.shm_dir);
			close(fd);
			return -1;
		}
		close(fd);
		if (i >= 20) {
			sbd_log(SBD_ERR, 0, "shm_dir %s keeps being removed "
				"and made again", sbd.conf.shm_dir);
			return -1;
		}
		/* A daemon killed a moment ago lets go of both its locks as
		 * its descriptors close, the socket's (take_lock()) perhaps
		 * first; one removing the directory is made again below. */
		usleep(10000);
		if (mkdirs(sbd.conf.shm_dir, 0755, NULL) < 0) {
			sbd_log(SBD_ERR, errno, "%s", sbd.conf.shm_dir);
			return -1;
		}
	}
}

static int setup_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	sigset_t hup;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&hup);
	sigaddset(&hup, SIGHUP);
	sigprocmask(SIG_UNBLOCK, &hup, NULL);	/* blocked since main()'s start */
	return sbd_faults_setup();
}

static void remove_channels(void)
{
	struct cds_lfht_iter it;
	struct sbd_chan *c;

	rcu_read_lock();
	cds_lfht_for_each_entry(sbd_chans(), &it, c, node)
		shmbus_channel_unlink(sbd.conf.shm_dir, c->name);
	rcu_read_unlock();
}

static void drop_all_clients(void)
{
	struct cds_lfht_iter it;
	struct sbd_client *cl;

	rcu_read_lock();
	cds_lfht_for_each_entry(sbd_clients(), &it, cl, node)
		sbd_control_drop(cl);
	rcu_read_unlock();
}

/* Tells systemd that the bus is served (nothing without NOTIFY_SOCKET). */
static void notify_ready(void)
{
	sd_notifyf(0, "READY=1\nSTATUS=serving bus '%s': %lu channels in %s, "
		   "socket %s", sbd.conf.bus, sbd_chan_count(),
		   sbd.conf.shm_dir, sbd.conf.socket);
}

/* New connections are accepted, and idle ones closed, after a batch of
 * events is handled: either may close a client whose event is still
 * further down in the batch. */
static void loop(void)
{
	struct epoll_event evs[64];

	while (!atomic_load_explicit(&got_term, memory_order_relaxed)) {
		int n = epoll_wait(sbd.epoll_fd, evs, 64,
				   sbd_control_expire());
		bool incoming = false;

		if (n < 0 && errno != EINTR) {
			sbd_log(SBD_ERR, errno, "epoll_wait");
			return;
		}
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;

			if (p == &sbd.listen_fd) {
				incoming = true;
			} else if (p == sig_pipe) {
				char junk[64];

				while (read(sig_pipe[0], junk, sizeof(junk)) > 0)
					;
			} else {
				struct sbd_client *cl = p;
				bool alive = true;

				if (evs[i].events & EPOLLIN)
					alive = sbd_control_serve(cl);
				else if (evs[i].events &
					 (EPOLLHUP | EPOLLRDHUP | EPOLLERR))
					alive = false;
				if (!alive)
					sbd_control_drop(cl);
			}
		}
		if (incoming)
			sbd_control_accept();
		if (atomic_exchange_explicit(&got_hup, 0,
					     memory_order_relaxed)) {
			struct timespec now;

			clock_gettime(CLOCK_MONOTONIC, &now);
			sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\n"
				   "STATUS=reloading %s", (unsigned long long)
				   now.tv_sec * 1000000 + (unsigned long long)
				   now.tv_nsec / 1000, sbd.conf.path);
			sbd_reload();
			notify_ready();
		}
	}
}

int main(int argc, char **argv)
{
	const char *conf = NULL, *bus = "default", *dir = NULL, *sock = NULL;
	char defconf[PATH_MAX], shm_made[PATH_MAX] = "";
	bool check_only = false, use_syslog = false, verbose = false;
	struct epoll_event ev = { .events = EPOLLIN };
	bool rcu = false, registry = false, reaper = false;
	int opt, lock_fd = -1, dir_fd = -1, rc = 1;

	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	sigset_t hup;

	/* A SIGHUP before its handler is in place (the lock may take
	 * seconds after a crash) waits for it, rather than ending the
	 * daemon: setup_signals() lets it in. */
	sigemptyset(&hup);
	sigaddset(&hup, SIGHUP);
	sigprocmask(SIG_BLOCK, &hup, NULL);

	while ((opt = getopt_long(argc, argv, "c:b:d:S:svth", opts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'c': conf = optarg; break;
		case 'b': bus = optarg; break;
		case 'd': dir = optarg; break;
		case 'S': sock = optarg; break;
		case 's': use_syslog = true; break;
		case 'v': verbose = true; break;
		case 't': check_only = true; break;
		case 'h': usage(stdout); return 0;
		case 'V':
			printf("shmbusd (shmbus) %s\n", shmbus_version());
			return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (!conf) {
		snprintf(defconf, sizeof(defconf), "/etc/shmbus/%s.conf", bus);
		conf = defconf;
	}
	if (sbd_conf_load(conf, &sbd.conf)) {
		fprintf(stderr, "shmbusd: %s\n", sbd.conf.err);
		return 2;
	}
	if (dir)
		snprintf(sbd.conf.shm_dir, sizeof(sbd.conf.shm_dir), "%s", dir);
	if (sock) {
		if (strlen(sock) >= sizeof(sbd.conf.socket)) {
			fprintf(stderr, "shmbusd: -S: path too long\n");
			return 2;
		}
		if (sock[0] != '/') {
			fprintf(stderr, "shmbusd: -S %s: not an absolute path\n",
				sock);
			return 2;
		}
		snprintf(sbd.conf.socket, sizeof(sbd.conf.socket), "%s", sock);
	}
	if (sbd.conf.repl.line) {
		/* Read again when replication starts; a key file that will
		 * not do is a config error, said by -t too. */
		char why[PATH_MAX + 128];

		if (rw_key_load(sbd.conf.repl.key_file, why, sizeof(why))) {
			fprintf(stderr, "shmbusd: %s:%d: [replication] %s\n",
				conf, sbd.conf.repl.line, why);
			sbd_conf_free(&sbd.conf);
			return 2;
		}
	}
	if (check_only) {
		printf("%s: ok (bus %s, %zu channel%s)\n", conf, sbd.conf.bus,
		       sbd.conf.nchans, sbd.conf.nchans == 1 ? "" : "s");
		return 0;
	}
	sbd.opt_verbose = verbose;
	sbd.opt_syslog = use_syslog;
	sbd_log_setup(verbose ? SBD_DEBUG : sbd.conf.log_level,
		      use_syslog || sbd.conf.syslog);
	sbd.self_uid = geteuid();
	sbd.self_pid = getpid();
	sbd.listen_fd = sbd.epoll_fd = -1;
	umask(0);
	lock_fd = take_lock();
	if (lock_fd < 0)
		goto out;
	sb_channel_no_prefault();
	raise_fd_limit();
	if (mkdirs(sbd.conf.shm_dir, 0755, shm_made) < 0) {
		sbd_log(SBD_ERR, errno, "%s", sbd.conf.shm_dir);
		goto out;
	}
	if (sbd_dir_is_ours(sbd.conf.shm_dir) < 0)
		goto out;
	dir_fd = lock_shm_dir();
	if (dir_fd < 0)
		goto out;
	rcu_register_thread();
	rcu = true;
	if (sbd_registry_init() || setup_signals()) {
		sbd_log(SBD_ERR, ENOMEM, "start");
		goto out;
	}
	registry = true;
	for (size_t i = 0; i < sbd.conf.nchans; i++) {
		int crc = sbd_channel_setup(&sbd.conf.chans[i], true);

		if (crc < 0) {
			sbd_log(SBD_ERR, -crc, "%s: cannot set up channel; "
				"stopping", sbd.conf.chans[i].name);
			goto out;
		}
	}
	sbd_channel_adopt_dir();
	if (sbd_journal_start()) {
		sbd_log(SBD_ERR, ENOMEM, "journal");
		goto out;
	}
	/* Processes that died while no daemon watched. */
	sbd_reap_once();
	/* Before the socket: a standby's channels are fenced before anyone
	 * can be handed them. */
	if (sbd_repl_start()) {
		sbd_log(SBD_ERR, 0, "replication could not start; stopping");
		goto out;
	}
	sbd.listen_fd = sbd_control_listen();
	if (sbd.listen_fd < 0) {
		sbd_log(SBD_ERR, sbd.listen_fd, "%s", sbd.conf.socket);
		goto out;
	}
	sbd_busfile_publish();
	sbd.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (sbd.epoll_fd < 0) {
		sbd_log(SBD_ERR, errno, "epoll");
		goto out;
	}
	ev.data.ptr = &sbd.listen_fd;
	epoll_ctl(sbd.epoll_fd, EPOLL_CTL_ADD, sbd.listen_fd, &ev);
	ev.data.ptr = sig_pipe;
	epoll_ctl(sbd.epoll_fd, EPOLL_CTL_ADD, sig_pipe[0], &ev);
	if (sbd_reaper_start()) {
		sbd_log(SBD_ERR, errno, "reaper");
		goto out;
	}
	reaper = true;
	sbd_log(SBD_NOTICE, 0, "serving bus '%s': %lu channels in %s, socket "
		"%s, pid %d", sbd.conf.bus, sbd_chan_count(), sbd.conf.shm_dir,
		sbd.conf.socket, (int)sbd.self_pid);
	notify_ready();

	loop();

	sd_notify(0, "STOPPING=1\nSTATUS=stopping");
	sbd_log(SBD_NOTICE, 0, "stopping%s", sbd.conf.remove_on_exit ?
		" (removing the channels: remove_on_exit)" : "");
	rc = 0;
out:
	/* One way out, from a failed start too: what was set up is undone,
	 * in reverse.  Channels and the shm_dir are removed only after a
	 * clean run with remove_on_exit. */
	if (sbd.listen_fd >= 0) {
		close(sbd.listen_fd);
		unlink(sbd.conf.socket);
	}
	sbd_repl_stop();
	sbd_journal_stop();
	if (registry)
		drop_all_clients();
	if (reaper)
		sbd_reaper_stop();
	sbd_groups_close();
	if (rc == 0 && sbd.conf.remove_on_exit)
		remove_channels();
	if (registry)
		sbd_registry_fini();
	if (rc == 0 && sbd.conf.remove_on_exit && shm_made[0])
		remove_shm_dir(shm_made);
	if (sbd.epoll_fd >= 0)
		close(sbd.epoll_fd);
	if (sbd.refused || sbd.evicted || sbd.timed_out)
		sbd_log(SBD_NOTICE, 0, "connections refused: %lu, evicted: %lu, "
			"closed as idle: %lu", sbd.refused, sbd.evicted,
			sbd.timed_out);
	if (rcu)
		rcu_unregister_thread();
	sbd_conf_free(&sbd.conf);
	if (dir_fd >= 0)
		close(dir_fd);
	if (lock_fd >= 0)
		close(lock_fd);
	return rc;
}
