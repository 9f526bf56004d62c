/* SPDX-License-Identifier: MIT */
/*
 * busstat_watch.c - busstat -w: a full-screen view of the channels,
 * refreshed every interval and sorted by lag, the worst channel (and any
 * broken one) highlighted.  The only part of busstat that needs curses.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <curses.h>

#include "busstat.h"

static int by_lag(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	if (x->err != y->err)		/* broken channels first */
		return x->err ? -1 : 1;
	if (x->lag_bytes != y->lag_bytes)
		return x->lag_bytes > y->lag_bytes ? -1 : 1;
	return strcmp(x->name, y->name);
}

static volatile sig_atomic_t got_winch;

/* SIGWINCH: the loop redraws (the handler only notes it). */
static void on_winch(int sig)
{
	(void)sig;
	got_winch = 1;
}

/* One screen of the -w view: rows sorted by lag, each line cut to the
 * terminal's width, as many as its height allows.  Returns the exit
 * status the rows call for. */
static int draw(const char *dir, const struct row *rows, int n, double dt)
{
	static char where[TEXT_PATH];
	char line[1536], a[16], b[16], c[16], d[16], name[TEXT_MAX];
	int status = 0, room = LINES - 3;
	int fit = n <= room ? n : room - 1;	/* and a line for the rest */

	erase();
	snprintf(line, sizeof(line), "busstat %s  %d channels  rates over "
		 "%.2f s  (sorted by lag; q quits)", text(dir, where), n, dt);
	mvaddnstr(0, 0, line, COLS);
	snprintf(line, sizeof(line), "%-20s %-9s %6s %3s %3s %8s %8s %8s %8s",
		 "CHANNEL", "POLICY", "CAP", "PUB", "SUB", "MSG/S", "LAGMSG",
		 "LAGB", "LOST");
	attron(A_REVERSE);
	mvaddnstr(2, 0, line, COLS);
	attroff(A_REVERSE);
	for (int i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		int hot = r->err || (i == 0 && r->lag_bytes > 0);

		if (r->err)
			status = EXIT_BADCH;
		if (i >= fit)
			continue;
		if (r->err)
			snprintf(line, sizeof(line), "%-20s %s",
				 text(r->name, name), err_word(r->err));
		else
			snprintf(line, sizeof(line),
				 "%-20s %-9s %6s %3u %3u %8s %8s %8s %8llu",
				 text(r->name, name),
				 r->in.policy == SHMBUS_OVERWRITE ? "overwrite"
								  : "block",
				 human_bytes(a, sizeof(a),
					     (double)r->in.capacity),
				 r->pubs, r->subs,
				 human(b, sizeof(b), r->msg_rate),
				 human(c, sizeof(c), (double)r->lag_msgs),
				 human_bytes(d, sizeof(d),
					     (double)r->lag_bytes),
				 (unsigned long long)r->lost);
		if (hot)
			attron(A_BOLD | A_STANDOUT);
		mvaddnstr(3 + i, 0, line, COLS);
		if (hot)
			attroff(A_BOLD | A_STANDOUT);
	}
	if (fit < n && fit >= 0) {
		snprintf(line, sizeof(line), "... %d more (a taller terminal "
			 "shows them)", n - fit);
		mvaddnstr(3 + fit, 0, line, COLS);
	}
	refresh();
	return status;
}

/*
 * busstat -w: a full-screen view refreshed every interval, sorted by lag,
 * the worst channel (and any broken one) highlighted; q quits.  A resize
 * redraws at once, at the new size.
 */
int watch(const char *dir, double interval)
{
	static struct rows rows[2];
	struct sigaction sa = { .sa_handler = on_winch };
	const char *term = getenv("TERM");
	int n_prev, n = 0, k = 0, status = 0;
	struct row *shown = NULL;
	double t_prev, dt = 0;
	SCREEN *scr;

	if (!term || !*term) {
		fprintf(stderr, "busstat: -w needs a terminal, and TERM is "
			"not set (--json or a plain INTERVAL work without "
			"one)\n");
		return EXIT_FAIL;
	}
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		fprintf(stderr, "busstat: -w needs a terminal on its standard "
			"input and output\n");
		return EXIT_FAIL;
	}
	/* The first sample, before the screen is taken: a missing bus is
	 * reported as in the other modes. */
	n_prev = sample_all(dir, &rows[1]);
	if (n_prev < 0) {
		fprintf(stderr, "busstat: %s: %s\n", dir, strerror(-n_prev));
		return EXIT_FAIL;
	}
	t_prev = now_s();
	scr = newterm(NULL, stdout, stdin);
	if (!scr) {
		fprintf(stderr, "busstat: -w: cannot drive a terminal of type "
			"'%s'\n", term);
		return EXIT_FAIL;
	}
	/* Ours, not curses's: no SA_RESTART, so that getch() returns at
	 * once and the loop redraws. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGWINCH, &sa, NULL);
	cbreak();
	noecho();
	curs_set(0);
	usleep((useconds_t)(FIRST_SAMPLE_S * 1e6));
	for (;; k++) {
		struct row *cur, *prev;
		double t, next;

		n = sample_all(dir, &rows[k % 2]);
		cur = rows[k % 2].r;
		prev = rows[(k + 1) % 2].r;
		t = now_s();
		if (n < 0) {
			endwin();
			delscreen(scr);
			fprintf(stderr, "busstat: %s: %s\n", dir, strerror(-n));
			return EXIT_FAIL;
		}
		dt = t - t_prev;
		rates(cur, n, prev, n_prev, dt);
		/* rates() matches by name, so the sort does not matter. */
		if (n > 1)
			qsort(cur, (size_t)n, sizeof(*cur), by_lag);
		shown = cur;
		status = draw(dir, shown, n, dt);
		n_prev = n;
		t_prev = t;
		next = t + interval;
		for (;;) {
			double left = next - now_s();
			int ch;

			if (left <= 0)
				break;
			timeout((int)(left * 1000) + 1);
			ch = getch();
			if (got_winch) {
				struct winsize ws;

				got_winch = 0;
				if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 &&
				    ws.ws_row && ws.ws_col)
					resizeterm(ws.ws_row, ws.ws_col);
				ch = KEY_RESIZE;
			}
			if (ch == KEY_RESIZE) {
				clearok(curscr, TRUE);
				draw(dir, shown, n, dt);
			} else if (ch == 'q' || ch == 'Q') {
				goto out;
			}
		}
	}
out:
	endwin();
	delscreen(scr);
	return status;
}

