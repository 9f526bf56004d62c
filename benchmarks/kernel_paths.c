/* SPDX-License-Identifier: MIT */
/*
 * kernel_paths.c - bench_latency's baselines through the kernel: pipes, a
 * Unix socketpair, POSIX message queues and ZeroMQ over ipc://.  Each
 * message is written from and read into one buffer whose contents do not
 * matter; every call that fails ends the process (the measurement then
 * reports the failure).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "transport.h"

static uint8_t msgbuf[MAX_SIZE];
static int fds[4];		/* pipe: a->b r,w ; b->a r,w */

/* ---- pipes and unix sockets: fds[0..1] a->b, fds[2..3] b->a ---- */

static int pipe_setup(void)
{
	return pipe(fds) || pipe(fds + 2) ? -errno : 0;
}

static int unix_setup(void)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
		return -errno;
	/* The same slots as the pipes: a reads fds[2], writes fds[1]. */
	fds[0] = sv[1];
	fds[3] = sv[1];
	fds[1] = sv[0];
	fds[2] = sv[0];
	return 0;
}

static void full_io(int fd, size_t size, int wr)
{
	size_t done = 0;

	while (done < size) {
		ssize_t n = wr ? write(fd, msgbuf + done, size - done)
			       : read(fd, msgbuf + done, size - done);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			_exit(9);
		}
		done += (size_t)n;
	}
}

static void fd_echo(size_t size)
{
	full_io(fds[0], size, 0);
	full_io(fds[3], size, 1);
}

static void fd_ping(size_t size)
{
	full_io(fds[1], size, 1);
	full_io(fds[2], size, 0);
}

static void fd_close(void)
{
	for (int i = 0; i < 4; i++)
		close(fds[i]);
}

/* ---- POSIX message queues: mqs[0] a->b, mqs[1] b->a ---- */

static char mq_names[2][64];
static mqd_t mqs[2];

static int mq_setup(void)
{
	struct mq_attr at = { .mq_maxmsg = 8, .mq_msgsize = MAX_SIZE };

	for (int i = 0; i < 2; i++) {
		snprintf(mq_names[i], sizeof(mq_names[i]), "/shmbus-bench-%d-%d",
			 (int)getpid(), i);
		mq_unlink(mq_names[i]);
		mqs[i] = mq_open(mq_names[i], O_RDWR | O_CREAT | O_EXCL, 0600,
				 &at);
		if (mqs[i] == (mqd_t)-1)
			return -errno;
	}
	return 0;
}

static void mq_echo(size_t size)
{
	if (mq_receive(mqs[0], (char *)msgbuf, MAX_SIZE, NULL) < 0 ||
	    mq_send(mqs[1], (char *)msgbuf, size, 0) < 0)
		_exit(9);
}

static void mq_ping(size_t size)
{
	if (mq_send(mqs[0], (char *)msgbuf, size, 0) < 0 ||
	    mq_receive(mqs[1], (char *)msgbuf, MAX_SIZE, NULL) < 0)
		_exit(9);
}

static void mq_close_all(void)
{
	mq_close(mqs[0]);
	mq_close(mqs[1]);
	mq_unlink(mq_names[0]);
	mq_unlink(mq_names[1]);
}

/* ---- ZeroMQ: one PAIR socket over ipc://, a context per process ---- */

static void *zctx, *zsock;
static char zaddr[96];

static int zmq_setup(void)
{
	snprintf(zaddr, sizeof(zaddr), "ipc:///tmp/shmbus-bench-%d.zmq",
		 (int)getpid());
	return 0;
}

static int zmq_open_end(int bind)
{
	zctx = zmq_ctx_new();
	zsock = zctx ? zmq_socket(zctx, ZMQ_PAIR) : NULL;
	if (!zsock)
		return -1;
	return bind ? zmq_bind(zsock, zaddr) : zmq_connect(zsock, zaddr);
}

static int zmq_child_open(void)
{
	return zmq_open_end(1);
}

static int zmq_parent_open(void)
{
	int rc = zmq_open_end(0);

	usleep(100000);		/* the connection is made asynchronously */
	return rc;
}

static void zmq_echo(size_t size)
{
	if (zmq_recv(zsock, msgbuf, MAX_SIZE, 0) < 0 ||
	    zmq_send(zsock, msgbuf, size, 0) < 0)
		_exit(9);
}

static void zmq_ping(size_t size)
{
	if (zmq_send(zsock, msgbuf, size, 0) < 0 ||
	    zmq_recv(zsock, msgbuf, MAX_SIZE, 0) < 0)
		_exit(9);
}

static void zmq_close_all(void)
{
	int zero = 0;

	zmq_setsockopt(zsock, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_close(zsock);
	zmq_ctx_term(zctx);
	/* libzmq leaves the binding end's socket file behind: remove it
	 * (both ends try; one gets ENOENT). */
	unlink(zaddr + strlen("ipc://"));
}

const struct transport T_PIPE = { "pipe", pipe_setup, tr_nop, tr_nop, fd_echo,
				  fd_ping, fd_close };
const struct transport T_UNIX = { "unix", unix_setup, tr_nop, tr_nop, fd_echo,
				  fd_ping, fd_close };
const struct transport T_MQ = { "mq", mq_setup, tr_nop, tr_nop, mq_echo,
				mq_ping, mq_close_all };
const struct transport T_ZMQ = { "zmq", zmq_setup, zmq_child_open,
				 zmq_parent_open, zmq_echo, zmq_ping,
				 zmq_close_all };
