/*
 * strata-blockd: registered read buffers (iobuf.c). Reply buffers for READs come from a
 * process-wide arena that every engine registers with its io_uring, so a read into one is a
 * READ_FIXED (no per-op page pinning). Buffers outside the arena work everywhere too.
 */
#ifndef STRATA_BLOCKD_IOBUF_H
#define STRATA_BLOCKD_IOBUF_H

#include <stddef.h>
#include <sys/uio.h>

#define BD_IOBUF_CLASSES 2
#define BD_IOBUF_SMALL   4096u
#define BD_IOBUF_SMALL_N 1024u
#define BD_IOBUF_LARGE   (128u * 1024)
#define BD_IOBUF_LARGE_N 32u

/* A 4 KiB-aligned buffer of len bytes: an arena slot when one fits and is free, else the
 * heap. NULL only when the heap is out of memory. Release with bd_iobuf_free. */
void *bd_iobuf_alloc(size_t len);
void bd_iobuf_free(void *p); /* either kind; NULL is fine */

/* The registered buffer index whose range holds [p, p+len), or -1 (not in the arena). */
int bd_iobuf_index(const void *p, size_t len);

/* The arena's iovecs, for io_uring registration (index = class). 0 or -ENOMEM. */
int bd_iobuf_iovecs(struct iovec iov[BD_IOBUF_CLASSES]);

/* Free slots of class c (tests). */
size_t bd_iobuf_free_slots(int c);

#endif
