/*
 * Payload buffers: 4 KiB-aligned (O_DIRECT can use them as they are), from a per-thread cache.
 *
 * Every write that reaches blockd arrives in one of these, and every read reply a client
 * decodes. posix_memalign is the slow path of glibc's allocator: the aligned chunk is carved
 * out of a larger one and the remainders are freed back, and the bins then want consolidating.
 * Measured in blockd at 4k randwrite QD32, it was 6-8% of the reactor thread. So a freed
 * buffer of a common size class (a power of two from 4 KiB to 128 KiB) waits on its thread's
 * free list for the next allocation of that class; larger or odd ones go to free() at once.
 *
 * Every buffer is an ordinary posix_memalign allocation, so free() on a cached one is still
 * correct (it just leaves the cache), and a buffer may be freed on another thread than the one
 * that made it. Each thread keeps at most PAYLOAD_CACHE_DEPTH buffers per class, released when
 * the thread exits.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/frame.h"

#define PAYLOAD_MIN_SHIFT   12 /* 4 KiB */
#define PAYLOAD_CLASSES     6  /* 4 KiB .. 128 KiB */
#define PAYLOAD_CACHE_DEPTH 64

struct payload_cache {
	void *free[PAYLOAD_CLASSES][PAYLOAD_CACHE_DEPTH];
	unsigned n[PAYLOAD_CLASSES];
};

static _Thread_local struct payload_cache *tls_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_release(void *arg)
{
	struct payload_cache *c = arg;
	for (unsigned k = 0; k < PAYLOAD_CLASSES; k++) {
		for (unsigned i = 0; i < c->n[k]; i++) {
			free(c->free[k][i]);
		}
	}
	free(c);
}

static void cache_key_init(void)
{
	(void)pthread_key_create(&cache_key, cache_release);
}

static struct payload_cache *cache_get(void)
{
	if (tls_cache == NULL) {
		(void)pthread_once(&cache_once, cache_key_init);
		struct payload_cache *c = calloc(1, sizeof(*c));
		if (c == NULL || pthread_setspecific(cache_key, c) != 0) {
			free(c);
			return NULL;
		}
		tls_cache = c;
	}
	return tls_cache;
}

/* The class whose size is the smallest power of two >= len, or -1 beyond the largest. */
static int class_of(size_t len)
{
	for (int k = 0; k < PAYLOAD_CLASSES; k++) {
		if (len <= ((size_t)1 << (PAYLOAD_MIN_SHIFT + k))) {
			return k;
		}
	}
	return -1;
}

void *st_payload_alloc(size_t len)
{
	void *p = NULL;
	size_t rounded = (len + ST_FRAME_PAYLOAD_ALIGN - 1) & ~(size_t)(ST_FRAME_PAYLOAD_ALIGN - 1);
	int k = class_of(rounded); /* len 0 too: class 0 */

	if (k >= 0) {
		struct payload_cache *c = cache_get();
		if (c != NULL && c->n[k] > 0) {
			return c->free[k][--c->n[k]];
		}
		rounded = (size_t)1 << (PAYLOAD_MIN_SHIFT + k);
	}
	if (posix_memalign(&p, ST_FRAME_PAYLOAD_ALIGN, rounded) != 0) {
		return NULL;
	}
	return p;
}

void st_payload_free(void *p)
{
	if (p == NULL) {
		return;
	}
	/* The usable size is at least what was asked: a class no larger than it fits. */
	size_t have = malloc_usable_size(p);
	int k = -1;
	for (int i = PAYLOAD_CLASSES - 1; i >= 0; i--) {
		if (have >= ((size_t)1 << (PAYLOAD_MIN_SHIFT + i))) {
			k = i;
			break;
		}
	}
	struct payload_cache *c =
		k >= 0 && have < ((size_t)2 << (PAYLOAD_MIN_SHIFT + k)) ? cache_get() : NULL;
	if (c != NULL && c->n[k] < PAYLOAD_CACHE_DEPTH) {
		c->free[k][c->n[k]++] = p;
		return;
	}
	free(p);
}
