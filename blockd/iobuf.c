/*
 * strata-blockd: the registered read buffers.
 *
 * A READ's data goes from the device into a buffer that is then sent to the client. With a
 * plain O_DIRECT read the kernel pins (get_user_pages) and unpins that buffer's pages on every
 * op; with io_uring's registered buffers it pins them once, at registration, and a
 * READ_FIXED names the buffer by index. The reply buffers therefore come from one arena,
 * registered with every engine's ring:
 *
 *   class 0: BD_IOBUF_SMALL_N slots of 4 KiB     (the 4 KiB random read)
 *   class 1: BD_IOBUF_LARGE_N slots of 128 KiB   (anything up to 128 KiB)
 *
 * Each class is one iovec (buffer index 0 and 1), each slot a free-stack entry. A request
 * larger than a slot, or made while its class is empty, gets an ordinary aligned heap buffer
 * and a plain readv: the arena is a fast path, never a limit. bd_iobuf_free tells the two
 * kinds apart by address. The arena is process-wide and made once; alloc and free take a
 * mutex (uncontended: blockd allocates and frees on its reactor thread).
 *
 * Pinned memory counts against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK; 8 MiB in
 * all stays within Debian's default limit, and when registration is refused anyway the
 * engine logs it once and reads with readv.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/frame.h"
#include "iobuf.h"

struct iobuf_class {
	size_t slot;    /* bytes per slot */
	size_t n;       /* slots */
	uint8_t *base;  /* n * slot bytes, page aligned */
	uint32_t *free; /* stack of free slot numbers */
	size_t nfree;
};

static struct iobuf_class classes[BD_IOBUF_CLASSES] = {
	{.slot = BD_IOBUF_SMALL, .n = BD_IOBUF_SMALL_N},
	{.slot = BD_IOBUF_LARGE, .n = BD_IOBUF_LARGE_N},
};
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool ready;

static void arena_init(void)
{
	for (size_t c = 0; c < BD_IOBUF_CLASSES; c++) {
		struct iobuf_class *k = &classes[c];
		void *p = NULL;
		if (posix_memalign(&p, 4096, k->slot * k->n) != 0) {
			return;
		}
		k->base = p;
		k->free = malloc(k->n * sizeof(*k->free));
		if (!k->free) {
			return;
		}
		for (size_t i = 0; i < k->n; i++) {
			k->free[i] = (uint32_t)(k->n - 1 - i); /* slot 0 on top */
		}
		k->nfree = k->n;
	}
	ready = true;
}

int bd_iobuf_iovecs(struct iovec iov[BD_IOBUF_CLASSES])
{
	pthread_once(&once, arena_init);
	if (!ready) {
		return -ENOMEM;
	}
	for (size_t c = 0; c < BD_IOBUF_CLASSES; c++) {
		iov[c].iov_base = classes[c].base;
		iov[c].iov_len = classes[c].slot * classes[c].n;
	}
	return 0;
}

void *bd_iobuf_alloc(size_t len)
{
	pthread_once(&once, arena_init);
	if (ready && len > 0) {
		struct iobuf_class *k = len <= BD_IOBUF_SMALL   ? &classes[0]
					: len <= BD_IOBUF_LARGE ? &classes[1]
								: NULL;
		if (k) {
			void *p = NULL;
			pthread_mutex_lock(&lock);
			if (k->nfree > 0) {
				p = k->base + (size_t)k->free[--k->nfree] * k->slot;
			}
			pthread_mutex_unlock(&lock);
			if (p) {
				return p;
			}
		}
	}
	return st_payload_alloc(len);
}

/* The class whose region holds p, or -1 (a heap buffer, or NULL). */
static int class_of(const void *p)
{
	const uint8_t *b = p;
	for (int c = 0; c < BD_IOBUF_CLASSES; c++) {
		const struct iobuf_class *k = &classes[c];
		if (b && k->base && b >= k->base && b < k->base + k->slot * k->n) {
			return c;
		}
	}
	return -1;
}

void bd_iobuf_free(void *p)
{
	int c = class_of(p);
	if (c < 0) {
		free(p);
		return;
	}
	struct iobuf_class *k = &classes[c];
	pthread_mutex_lock(&lock);
	k->free[k->nfree++] = (uint32_t)(((uint8_t *)p - k->base) / k->slot);
	pthread_mutex_unlock(&lock);
}

int bd_iobuf_index(const void *p, size_t len)
{
	int c = class_of(p);
	if (c < 0 || (const uint8_t *)p + len > classes[c].base + classes[c].slot * classes[c].n) {
		return -1;
	}
	return c;
}

size_t bd_iobuf_free_slots(int c)
{
	pthread_mutex_lock(&lock);
	size_t n = c >= 0 && c < BD_IOBUF_CLASSES ? classes[c].nfree : 0;
	pthread_mutex_unlock(&lock);
	return n;
}
