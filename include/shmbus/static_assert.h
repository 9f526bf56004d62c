/* SPDX-License-Identifier: MIT */
/*
 * shmbus/static_assert.h - SHMBUS_STATIC_ASSERT, for the format headers
 * (layout.h, protocol.h) that pin their offsets and sizes: C11's
 * _Static_assert is C++11's static_assert, so they compile as either.
 */
#ifndef SHMBUS_STATIC_ASSERT_H
#define SHMBUS_STATIC_ASSERT_H

#ifdef __cplusplus
#define SHMBUS_STATIC_ASSERT(e, msg) static_assert(e, msg)
#else
#define SHMBUS_STATIC_ASSERT(e, msg) _Static_assert(e, msg)
#endif

#endif /* SHMBUS_STATIC_ASSERT_H */
