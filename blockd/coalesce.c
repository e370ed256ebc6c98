/*
 * Data-write coalescing: the data writes that one reactor turn starts, and that land side by
 * side in the data file, go to the kernel as one writev.
 *
 * Why. Every write is redirected to newly allocated blocks, and the allocator hands them out
 * next-fit from a cursor (alloc.c), so the 4 KiB writes of the requests one turn parses get
 * consecutive blocks. The kernel's cost of an O_DIRECT write is mostly per call, not per byte:
 * measured with fio on this machine's ext4 (io_uring, O_DIRECT, sequential offsets), 4 KiB
 * writes cost 8.7 us of CPU each whether submitted 1 or 8 per io_uring_enter (the block
 * layer's plug merges the requests, but each still walks ext4_file_write_iter, iomap and bio
 * set-up), against 1.3 us per 4 KiB written as 32 KiB writes. That per-call cost was the
 * largest item of blockd's reactor (io_write 14% of its samples under 4 KiB random writes).
 *
 * What. bd_write_phase queues each sub-write here instead of starting it; the first one of a
 * turn posts wc_flush, which runs after the turn's completions (st_reactor_post), sorts the
 * queue by file offset and starts one writev per run of adjacent sub-writes (at most WC_IOV
 * buffers each; a lone sub-write goes out as before). At queue depth 1 nothing else is queued
 * and the write leaves in the same turn, after the callbacks of that turn.
 *
 * Completion gives each sub-write its share of the result, in file order, through the same
 * bd_op_io_done as a write of its own. A merged write that failed or came back short is not
 * split into errors the sub-writes might not have had alone: every sub-write it did not cover
 * completely is submitted again on its own, and its own result decides. A sub-write's blocks
 * are reserved for its op alone, so rewriting them is safe.
 */
#include <errno.h>
#include <stdlib.h>

#include "engine_int.h"
#include "internal.h"

#define WC_IOV   64         /* sub-writes per writev */
#define WC_BYTES (8u << 20) /* bytes per writev (a result fits an int) */

struct bd_wmerge {
	struct st_io io;
	struct bd_engine *e;
	struct bd_wmerge *next; /* free list */
	uint32_t n;
	struct op_sub *subs[WC_IOV];
	struct iovec iov[WC_IOV];
};

static void wc_flush(void *arg);

/* A sub-write on its own: the path every write took before coalescing. */
static void wc_single(struct bd_engine *e, struct op_sub *s)
{
	st_reactor_writev(e->r, &s->io, e->fd, &s->iov, 1, s->off, bd_op_io_done, s);
}

void bd_wc_queue(struct bd_engine *e, struct op_sub *s, uint64_t off)
{
	s->off = off;
	if (e->wc_n == e->wc_cap) {
		size_t nc = e->wc_cap ? e->wc_cap * 2 : 64;
		struct op_sub **nq = realloc(e->wc_q, nc * sizeof(*nq));
		if (nq == NULL) {
			wc_single(e, s);
			return;
		}
		e->wc_q = nq;
		e->wc_cap = nc;
	}
	if (e->wc_n == 0 && st_reactor_post(e->r, wc_flush, e) < 0) {
		wc_single(e, s);
		return;
	}
	e->wc_q[e->wc_n++] = s;
}

static int by_offset(const void *a, const void *b)
{
	const struct op_sub *x = *(const struct op_sub *const *)a;
	const struct op_sub *y = *(const struct op_sub *const *)b;
	return x->off < y->off ? -1 : x->off > y->off;
}

static struct bd_wmerge *wm_get(struct bd_engine *e)
{
	struct bd_wmerge *m = e->wc_free;
	if (m != NULL) {
		e->wc_free = m->next;
		return m;
	}
	return malloc(sizeof(*m));
}

static void wm_put(struct bd_engine *e, struct bd_wmerge *m)
{
	m->next = e->wc_free;
	e->wc_free = m;
}

static void wc_done(void *arg, int res)
{
	struct bd_wmerge *m = arg;
	struct bd_engine *e = m->e;
	uint32_t n = m->n;
	struct op_sub *subs[WC_IOV];
	for (uint32_t i = 0; i < n; i++) {
		subs[i] = m->subs[i];
	}
	wm_put(e, m); /* before the callbacks, which may start writes or close the engine */
	/* In file order: sub-writes the result covers complete; the rest go out alone. The
	 * callbacks may complete (and free) an op, so nothing is read from a sub after its
	 * callback. */
	size_t left = res > 0 ? (size_t)res : 0;
	for (uint32_t i = 0; i < n; i++) {
		struct op_sub *s = subs[i];
		size_t len = s->iov.iov_len;
		if (left >= len) {
			left -= len;
			bd_op_io_done(s, (int)len);
		} else if (e->r == NULL) {
			bd_op_io_done(s, res < 0 ? res : -EIO);
		} else {
			left = 0;
			wc_single(e, s);
		}
	}
}

/* Start the queued sub-writes: one writev per run of adjacent ones. */
static void wc_flush(void *arg)
{
	struct bd_engine *e = arg;
	size_t n = e->wc_n;
	e->wc_n = 0;
	if (n == 0) {
		return;
	}
	if (e->r == NULL) {
		/* The ring went away with writes queued (shutdown): they were never started. */
		for (size_t i = 0; i < n; i++) {
			bd_op_io_done(e->wc_q[i], -ESHUTDOWN);
		}
		return;
	}
	if (n > 1) {
		qsort(e->wc_q, n, sizeof(*e->wc_q), by_offset);
	}
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		uint64_t end = e->wc_q[i]->off + e->wc_q[i]->iov.iov_len;
		while (j < n && j - i < WC_IOV && e->wc_q[j]->off == end &&
		       end + e->wc_q[j]->iov.iov_len - e->wc_q[i]->off <= WC_BYTES) {
			end += e->wc_q[j]->iov.iov_len;
			j++;
		}
		struct bd_wmerge *m = j - i > 1 ? wm_get(e) : NULL;
		if (m == NULL) {
			for (size_t k = i; k < j; k++) {
				wc_single(e, e->wc_q[k]);
			}
			e->wc_writes += j - i;
		} else {
			m->e = e;
			m->n = (uint32_t)(j - i);
			for (size_t k = i; k < j; k++) {
				m->subs[k - i] = e->wc_q[k];
				m->iov[k - i] = e->wc_q[k]->iov;
			}
			st_reactor_writev(e->r, &m->io, e->fd, m->iov, (int)m->n, e->wc_q[i]->off,
					  wc_done, m);
			e->wc_writes++;
		}
		e->wc_subs += j - i;
		i = j;
	}
}

void bd_wc_free(struct bd_engine *e)
{
	struct bd_wmerge *m;
	while ((m = e->wc_free) != NULL) {
		e->wc_free = m->next;
		free(m);
	}
	free(e->wc_q);
	e->wc_q = NULL;
	e->wc_n = e->wc_cap = 0;
}
