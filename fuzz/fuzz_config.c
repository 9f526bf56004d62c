/* SPDX-License-Identifier: MIT */
/*
 * fuzz_config.c - configuration files as shmbusd reads them.
 *
 * The input is the text of an INI file.  It is written to a memfd and read
 * by sbd_conf_load() through /proc/self/fd, the path shmbusd takes at start
 * and on SIGHUP (daemon/config.c, with libinih).  Checked: a file is
 * either refused with a message ("file:line: reason") and nothing kept, or
 * accepted with every value in range: names valid, capacities powers of
 * two from 4 KiB to 16 GiB, max_msg within the capacity's limit and not 0,
 * modes within 0777, rules of at most SBD_RULE_MAX entries, no more
 * channels than max_channels.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../daemon/shmbusd.h"
#include "shmbus/layout.h"
#include "fuzz.h"

static int conf_fd = -1;
static char conf_path[64];

void fuzz_config_cleanup(void)
{
	if (conf_fd >= 0)
		close(conf_fd);
	conf_fd = -1;
}

/* 1..max of [A-Za-z0-9._-], not starting with '.': a channel's name
 * and a bus's (docs/shmbusd.md). */
static bool name_ok(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);

	if (n == 0 || n > max || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			    "0123456789._-", s[i]))
			return false;
	return true;
}

static void check_rule(const struct sbd_rule *r)
{
	static const gid_t gids[] = { 0, 20, 1000 };

	FUZZ_CHECK(r->n <= SBD_RULE_MAX);
	FUZZ_CHECK(strnlen(r->text, sizeof(r->text)) < sizeof(r->text));
	sbd_rule_allows(r, 1000, gids, 3);
}

static void check_conf(const struct sbd_conf *c)
{
	FUZZ_CHECK(name_ok(c->bus, 63));
	FUZZ_CHECK(c->shm_dir[0] == '/' && c->socket[0] == '/');
	FUZZ_CHECK(strnlen(c->socket, sizeof(c->socket)) < sizeof(c->socket));
	FUZZ_CHECK(c->socket_mode <= 0777);
	FUZZ_CHECK(c->max_channels >= 1 && c->max_clients >= 1);
	FUZZ_CHECK(c->reap_ms >= 1 && c->reap_ms <= 100);
	FUZZ_CHECK(c->log_level >= SBD_ERR && c->log_level <= SBD_DEBUG);
	FUZZ_CHECK(c->nchans <= c->max_channels);
	check_rule(&c->admins);
	check_rule(&c->def_pub);
	check_rule(&c->def_sub);
	for (size_t i = 0; i < c->nchans; i++) {
		const struct sbd_chan_conf *cc = &c->chans[i];
		uint64_t cap = cc->attr.capacity;
		uint64_t lim = cap / 2 - SHMBUS_REC_HDR - 2 * SHMBUS_REC_ALIGN;

		FUZZ_CHECK(name_ok(cc->name, 200));
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(cc->name, c->chans[j].name) != 0);
		FUZZ_CHECK(cap >= SHMBUS_MIN_CAPACITY &&
			   cap <= SHMBUS_MAX_CAPACITY && !(cap & (cap - 1)));
		FUZZ_CHECK(cc->attr.max_msg > 0 && cc->attr.max_msg <= lim &&
			   cc->attr.max_msg <= SHMBUS_MAX_MSG_LIMIT);
		FUZZ_CHECK(cc->attr.policy == SHMBUS_BLOCK ||
			   cc->attr.policy == SHMBUS_OVERWRITE);
		FUZZ_CHECK(cc->attr.producers == SHMBUS_SINGLE_PRODUCER ||
			   cc->attr.producers == SHMBUS_MULTI_PRODUCER);
		FUZZ_CHECK(cc->attr.numa_node >= -1);
		FUZZ_CHECK(cc->attr.mode <= 0777 &&
			   (cc->attr.mode & 0600) == 0600);
		FUZZ_CHECK(cc->owner >= -1 && cc->group >= -1);
		check_rule(&cc->pub);
		check_rule(&cc->sub);
	}
}

int fuzz_config_one(const uint8_t *data, size_t size)
{
	static struct sbd_conf c;

	if (conf_fd < 0) {
		sbd_log_setup(-1, false);
		conf_fd = memfd_create("shmbus-fuzz.conf", MFD_CLOEXEC);
		FUZZ_CHECK(conf_fd >= 0);
		snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d",
			 conf_fd);
	}
	FUZZ_CHECK(ftruncate(conf_fd, 0) == 0);
	FUZZ_CHECK(size == 0 ||
		   pwrite(conf_fd, data, size, 0) == (ssize_t)size);
	if (sbd_conf_load(conf_path, &c) == 0) {
		check_conf(&c);
		sbd_conf_free(&c);
	} else {
		/* Refused: a reason, and nothing kept. */
		FUZZ_CHECK(c.err[0] && strnlen(c.err, sizeof(c.err)) <
					       sizeof(c.err));
		FUZZ_CHECK(c.chans == NULL && c.nchans == 0);
	}
	return 0;
}

#ifndef SHMBUS_FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_config_one(data, size);
}
#endif
