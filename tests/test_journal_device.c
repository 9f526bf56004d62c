/* SPDX-License-Identifier: MIT */
/*
 * test_journal_device.c - the journal on a filesystem that fills up, and
 * on a device that fails its writes (an ext4 image on a loop device with
 * holes under a segment's blocks): acknowledgements at `persisted` stop
 * while the journal cannot write, resume once it can, and a restart never
 * acknowledges what a failed fdatasync() did not write.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"
#include "../lib/contract.h"
#include "../lib/journal.h"
#include "journal_fixture.h"

TestSuite(journal_device, .init = jnl_setup, .fini = jnl_fini,
	  .timeout = 120);

/* The journal's directory on a tmpfs of `size` (mount's words) at
 * d.dir/fs: mnt, the suite runs as root. */
static void journal_on_tmpfs(const char *size)
{
	snprintf(mnt, sizeof(mnt), "%s/fs", d.dir);
	cr_assert_eq(mkdir(mnt, 0755), 0);
	cr_assert_eq(mount("tmpfs", mnt, "tmpfs", 0, size), 0,
		     "mount a tmpfs (%s; the suite runs as root): %s", size,
		     strerror(errno));
	snprintf(jdir, sizeof(jdir), "%s", mnt);
}

/* Fills the tmpfs with up to `kib` KiB in mnt/filler (until it is full),
 * whose path goes in filler (256 bytes). */
static void fill_tmpfs(char *filler, int kib)
{
	int fd;

	snprintf(filler, 256, "%s/filler", mnt);
	fd = open(filler, O_WRONLY | O_CREAT, 0600);
	cr_assert(fd >= 0);
	for (int i = 0; i < kib; i++) {
		uint8_t k[1024] = { 1 };

		if (write(fd, k, sizeof(k)) != (ssize_t)sizeof(k))
			break;
	}
	close(fd);
}

Test(journal_device, a_full_disk_stops_persisted_acks_until_space_returns)
{
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	char filler[256];

	journal_on_tmpfs("size=4m");
	conf_with("acknowledge = persisted\njournal_segment = 64K\n",
		  "journal_min_free = 1M\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 10);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	/* Leave less than 1 MiB free. */
	fill_tmpfs(filler, 3400);
	for (int i = 0; i < 200; i++) {
		sb_jnl_read(ch, &v);
		if (v.state & SHMBUS_JNL_DISK_FULL)
			break;
		usleep(10000);
	}
	cr_assert(v.state & SHMBUS_JNL_DISK_FULL, "reported");
	cr_assert(log_has("below journal_min_free"));
	publish_range(p, 10, 10);
	cr_assert_eq(shmbus_pub_sync(p, 300000000), -ETIMEDOUT,
		     "never acknowledged as persisted while full");
	unlink(filler);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0, "resumes by itself");
	sb_jnl_read(ch, &v);
	cr_assert_eq(v.state & SHMBUS_JNL_DISK_FULL, 0);
	close_pub(bus, ch, p);
	replay_check(ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE), 0, 0,
		     20);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* --------------------------------------------- a device that fails writes */

static char img[200];

static void sh(const char *cmd)
{
	int rc = system(cmd);

	cr_assert(rc == 0, "%s: exit status %d", cmd, rc);
}

/*
 * An ext4 filesystem at mnt on a loop device (mounted with -o loop, so
 * that the device goes with its last mount, whatever happens to the
 * test), its image on a small tmpfs at `lower`: holes punched in the
 * image under a file's blocks, with that tmpfs full, make the device
 * fail the writes that reach them, and fdatasync() report it.  Skipped
 * only where no loop device can be made.
 */
static void failing_fs_up(void)
{
	char cmd[640];
	int lc = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	int n = lc >= 0 ? ioctl(lc, LOOP_CTL_GET_FREE) : -1;

	if (lc >= 0)
		close(lc);
	if (n < 0)
		cr_skip_test("no loop device can be made here (/dev/loop-"
			     "control: %s)", strerror(errno));
	snprintf(lower, sizeof(lower), "%s/lower", d.dir);
	snprintf(mnt, sizeof(mnt), "%s/fs", d.dir);
	snprintf(img, sizeof(img), "%s/img", lower);
	cr_assert_eq(mkdir(lower, 0755), 0);
	cr_assert_eq(mkdir(mnt, 0755), 0);
	cr_assert_eq(mount("tmpfs", lower, "tmpfs", 0, "size=24m"), 0,
		     "mount a 24 MiB tmpfs (the suite runs as root): %s",
		     strerror(errno));
	/* No ext4 journal, inode tables made now: nothing but the files'
	 * data is written once it is mounted. */
	snprintf(cmd, sizeof(cmd), "truncate -s 16M %s && mkfs.ext4 -q -F "
		 "-b 4096 -O ^has_journal -E lazy_itable_init=0,nodiscard %s",
		 img, img);
	sh(cmd);
	snprintf(cmd, sizeof(cmd), "mount -o loop %s %s", img, mnt);
	sh(cmd);
	snprintf(jdir, sizeof(jdir), "%s/jnl", mnt);
}

/* As a power loss leaves it: what the device holds, not the cache. */
static void remount(void)
{
	char cmd[640];

	cr_assert_eq(umount2(mnt, 0), 0, "umount %s: %s", mnt,
		     strerror(errno));
	snprintf(cmd, sizeof(cmd), "mount -o loop %s %s", img, mnt);
	sh(cmd);
}

/* Punches the image's blocks under [off, end) of the file at path. */
static void punch_under(const char *path, uint64_t off, uint64_t end)
{
	struct {
		struct fiemap fm;
		struct fiemap_extent ext[64];
	} m;
	int fd = open(path, O_RDONLY), ifd = open(img, O_RDWR);
	uint64_t punched = 0;

	cr_assert(fd >= 0 && ifd >= 0);
	memset(&m, 0, sizeof(m));
	m.fm.fm_length = ~0ULL;
	m.fm.fm_flags = FIEMAP_FLAG_SYNC;
	m.fm.fm_extent_count = 64;
	cr_assert_eq(ioctl(fd, FS_IOC_FIEMAP, &m.fm), 0, "fiemap: %s",
		     strerror(errno));
	for (unsigned i = 0; i < m.fm.fm_mapped_extents; i++) {
		struct fiemap_extent *e = &m.fm.fm_extents[i];
		uint64_t a = e->fe_logical, b = a + e->fe_length;

		a = a < off ? off : a;
		b = b > end ? end : b;
		if (a >= b)
			continue;
		cr_assert_eq(fallocate(ifd, FALLOC_FL_PUNCH_HOLE |
					    FALLOC_FL_KEEP_SIZE,
				       (off_t)(e->fe_physical +
					       (a - e->fe_logical)),
				       (off_t)(b - a)), 0);
		punched += b - a;
	}
	cr_assert_gt(punched, 0);
	close(fd);
	close(ifd);
}

/* The tmpfs under the image full (the punched blocks cannot be had back:
 * the device fails writes there), or not. */
static void lower_full(bool full)
{
	static uint8_t k[65536];
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/filler", lower);
	if (!full) {
		cr_assert_eq(unlink(path), 0);
		return;
	}
	memset(k, 0x5a, sizeof(k));
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	cr_assert(fd >= 0);
	while (write(fd, k, sizeof(k)) > 0)
		;
	while (write(fd, k, 4096) > 0)
		;
	close(fd);
}

/* The messages the journal holds (read from the files). */
static uint64_t messages_in_journal(void)
{
	struct recs *rs = malloc(sizeof(*rs));
	uint64_t n = 0;

	cr_assert(rs);
	read_all(rs);
	for (size_t i = 0; i < rs->n; i++)
		n += rs->type[i] == SHMBUS_REC_MSG;
	free(rs);
	return n;
}

/*
 * acknowledge = persisted, fsync batch, on the failing device: messages
 * written from a page of their own on are not acknowledged (the sync
 * fails, shmbus_pub_sync() times out), and the daemon is then killed
 * while its agent waits to retry.  Returns how many messages were
 * published; the daemon is gone, the channel and producer still open.
 */
static uint64_t sync_fails_then_killed(shmbus_channel **ch, shmbus_bus **bus,
				       shmbus_pub **p)
{
	static const uint8_t z[4096];
	struct sb_jnl_view v;
	uint64_t n = 20, room, off, base;
	char seg[512];

	failing_fs_up();
	conf_with("acknowledge = persisted\njournal_segment = 64K\n",
		  "journal_min_free = 4K\n");
	start_daemon();
	*ch = open_pub(bus, p);
	publish_range(*p, 0, n);
	wait_written(*ch, 10);
	/* Records that end at a page's end: the next ones start a page of
	 * their own, which the device fails from its first byte (the loop
	 * driver takes a write that fails part way for a success). */
	sb_jnl_read(*ch, &v);
	room = 4096 - ((SHMBUS_JSEG_HDR + v.written) & 4095);
	if (room < 16)
		room += 4096;
	if (room <= 16 + 2048) {
		cr_assert_eq(shmbus_publish(*p, z, room - 16), 0);
		n++;
	} else {
		uint64_t a = (room / 2) & ~(uint64_t)7;

		cr_assert_eq(shmbus_publish(*p, z, a - 16), 0);
		cr_assert_eq(shmbus_publish(*p, z, room - a - 16), 0);
		n += 2;
	}
	cr_assert_eq(shmbus_pub_sync(*p, 5000000000), 0);
	sb_jnl_read(*ch, &v);
	base = v.written & ~(uint64_t)0xffff;
	off = SHMBUS_JSEG_HDR + (v.written - base);
	cr_assert_eq(off % 4096, 0);
	snprintf(seg, sizeof(seg), "%s/%016llx.seg", cdir,
		 (unsigned long long)base);
	punch_under(seg, off, SHMBUS_JSEG_HDR + 0x10000);
	lower_full(true);
	publish_range(*p, n, 40);	/* within this segment */
	n += 40;
	cr_assert_eq(shmbus_pub_sync(*p, 1000000000), -ETIMEDOUT,
		     "acknowledged while fdatasync() fails");
	sb_jnl_read(*ch, &v);
	cr_assert_lt(v.persisted, v.written, "written, not persisted");
	/* Between a failed sync and its retry. */
	pause_daemon();
	kill(d.pid, SIGKILL);
	th_wait(d.pid);
	d.pid = 0;
	return n;
}

/* The device works again: a daemon started on it acknowledges the n
 * messages published, and after a remount (the page cache dropped, as by
 * a power loss) the device holds all n. */
static void all_on_the_device_once_it_works(shmbus_channel *ch,
					    shmbus_bus *bus, shmbus_pub *p,
					    uint64_t n)
{
	uint64_t got;

	lower_full(false);
	start_daemon();
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	stop_daemon();
	close_pub(bus, ch, p);
	remount();
	got = messages_in_journal();
	cr_assert_eq(got, n, "%llu messages acknowledged, %llu on disk",
		     (unsigned long long)n, (unsigned long long)got);
}

/* The pages a failed sync could not write are still in the page cache,
 * clean: a restarted daemon that read them back and synced them on a new
 * descriptor (which hears nothing of the old error) would acknowledge
 * them while the device never had them.  It writes them again first. */
Test(journal_device, a_failed_sync_is_not_acknowledged_after_a_restart)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t n = sync_fails_then_killed(&ch, &bus, &p);

	all_on_the_device_once_it_works(ch, bus, p, n);
}

/* The device still fails when the daemon starts again: recovery's sync of
 * what it wrote again fails, the journal does not start (nothing is
 * acknowledged), and the log says which file and why, in the system's
 * words.  Started again once the device works, the journal has it all. */
Test(journal_device, a_sync_failing_at_start_is_said_and_acknowledges_nothing)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t n = sync_fails_then_killed(&ch, &bus, &p);
	char line[512];

	start_daemon();
	cr_assert_eq(shmbus_pub_sync(p, 300000000), -ETIMEDOUT);
	cr_assert(log_has("journal not started"));
	snprintf(line, sizeof(line), "journal: syncing %s/", cdir);
	cr_assert(log_has(line), "not said: %s...", line);
	cr_assert(log_has(".seg: Input/output error") ||
		  log_has(".seg: No space left on device"), "the reason");
	cr_assert(!log_has("no free subscriber"), "shmbus's words for it");
	stop_daemon();
	all_on_the_device_once_it_works(ch, bus, p, n);
}

/* A segment larger than the journal's filesystem (each is made in full
 * when it is begun): the start says which segment, where, and the
 * system's reason, not the library's gloss of ENOSPC (a subscriber slot,
 * the shm directory), which sends the operator to the wrong place. */
Test(journal_device, a_segment_that_does_not_fit_is_said_with_its_path)
{
	char want[512];

	journal_on_tmpfs("size=1m");
	conf_with("journal_segment = 4M\n", "journal_min_free = 0\n");
	start_daemon();
	cr_assert(log_has("journal not started"));
	snprintf(want, sizeof(want), "cannot be made or opened in %s/j: %s",
		 mnt, strerror(ENOSPC));
	cr_assert(log_has(want), "the log does not say: %s", want);
	cr_assert(!log_has("subscriber or producer slot"),
		  "ENOSPC of the disk said as a slot");
}

/* A segment that cannot be made when the journal rolls to it (the disk
 * filled up meanwhile, journal_min_free 0): the agent retries, a block
 * channel's producers wait, and the log names the segment it could not
 * make and the system's reason.  Once there is room, it goes on with
 * nothing lost. */
Test(journal_device, a_roll_that_cannot_make_its_segment_names_it)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	char filler[256], want[512];
	uint64_t i;
	int rc = 0;

	journal_on_tmpfs("size=400k");
	conf_with("acknowledge = persisted\njournal_segment = 64K\n",
		  "journal_min_free = 0\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 10);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	/* The spare for 0x10000 is made: the one after it does not fit. */
	fill_tmpfs(filler, 4000);
	/* Past the end of the second segment, a lap: producers wait. */
	for (i = 10; i < 2000; i++) {
		uint8_t buf[2048];
		int spins = 0;

		th_msg_fill(buf, len_of(i), 1, i);
		while ((rc = shmbus_publish(p, buf, len_of(i))) == -EAGAIN &&
		       spins++ < 500)
			usleep(1000);
		if (rc)
			break;
	}
	cr_assert_eq(rc, -EAGAIN, "producers wait for the journal");
	snprintf(want, sizeof(want), "journal: %s/j/0000000000020000.seg: %s "
		 "at 131072; retrying", mnt, strerror(ENOSPC));
	for (int t = 0; t < 200 && !log_has(want); t++)
		usleep(10000);
	cr_assert(log_has(want), "the log does not say: %s", want);
	unlink(filler);
	publish_range(p, i, 100);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0, "resumes by itself");
	close_pub(bus, ch, p);
	replay_check(ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE), 0, 0,
		     i + 100);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}
