// SPDX-License-Identifier: MIT
//
// cxx_headers.cc - the installed headers as a C++ program sees them.  The
// Makefile compiles each header alone (g++ -std=c++11 -Wall -Wextra
// -Werror -pedantic, -include), then this program, which includes them
// all, links the installed archive (libshmbus.a, C linkage) and checks
// that the library it runs is the one its header describes.
#include <shmbus.h>
#include <shmbus/layout.h>
#include <shmbus/protocol.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

static_assert(sizeof(shmbus_hdr) == SHMBUS_HDR_SIZE, "layout.h in C++");
static_assert(sizeof(shmbus_ctl_hdr) == 24, "protocol.h in C++");

int main()
{
	char want[32];
	shmbus_channel_attr ca;
	shmbus_sub_attr sa;

	std::snprintf(want, sizeof(want), "%d.%d.%d", SHMBUS_VERSION_MAJOR,
		      SHMBUS_VERSION_MINOR, SHMBUS_VERSION_PATCH);
	if (std::strcmp(shmbus_version(), want) != 0) {
		std::fprintf(stderr, "shmbus_version() %s, header %s\n",
			     shmbus_version(), want);
		return 1;
	}
	shmbus_channel_attr_init(&ca);
	shmbus_sub_attr_init(&sa);
	if (ca.capacity != (UINT64_C(1) << 20) || sa.spin_ns != 20000 ||
	    sa.wait != SHMBUS_WAIT_SPIN || sa.start != SHMBUS_START_NEWEST) {
		std::fprintf(stderr, "attribute defaults\n");
		return 1;
	}
	if (shmbus_channel_open("/nonexistent-shmbus-dir", "x") != nullptr ||
	    errno != ENOENT) {
		std::fprintf(stderr, "channel_open: %s\n",
			     shmbus_strerror(errno));
		return 1;
	}
	std::printf("cxx_headers: the headers compile as C++11; libshmbus %s\n",
		    shmbus_version());
	return 0;
}
