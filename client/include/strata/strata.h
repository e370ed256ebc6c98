/**
 * @file strata.h
 * @brief libstrata: the client library every gateway and tool uses to reach a Strata cluster.
 *
 * A cluster handle talks to strata-meta for the cluster map and volume catalog, and directly to
 * the strata-blockd nodes for data. Placement is computed locally from the map: object i of a
 * volume lives in placement group hash(family, i) mod pg_count, whose primary is the first up
 * node by weighted rendezvous hashing. Reads and writes go to the primary, whatever the clone
 * depth.
 *
 * Threads: by default each cluster owns one I/O thread running an io_uring reactor. Every
 * function here is thread-safe and may be called from any thread. Completion callbacks run on
 * the cluster's I/O thread; they must not block, and may issue further async calls. The
 * synchronous wrappers must not be called from a callback.
 *
 * Poll mode (strata_connect_flags with STRATA_CONNECT_POLL) has no I/O thread: the caller
 * turns the loop with strata_poll(), and callbacks run inside it, on the caller's thread. A
 * request then never crosses threads, which saves two wakeups per I/O. A poll-mode cluster
 * and its volumes are used by one thread at a time; the synchronous wrappers turn the loop
 * themselves (from inside a callback they return -EDEADLK).
 *
 * Ownership: buffers passed to async calls belong to the caller and must stay valid until the
 * callback runs. Errors are negative errno values: -ENOENT unknown volume, -EROFS write to a
 * read-only open, -EINVAL out of range, -ENOSPC out of space, -EIO/-EILSEQ unreadable data,
 * -EILSEQ also for a compare-and-write miscompare (see strata_aio_compare_and_write).
 *
 * No data is cached on the client: a completed write is visible to every other opener of the
 * volume, on any host, which is what live migration on a shared volume needs.
 */
#ifndef STRATA_STRATA_H
#define STRATA_STRATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STRATA_API __attribute__((visibility("default")))

typedef struct strata_cluster strata_cluster;
typedef struct strata_volume strata_volume;

/** Completion callback: err is 0 or a negative errno. Runs on the cluster's I/O thread. */
typedef void (*strata_cb)(void *cb_arg, int err);

/** Open flags. */
#define STRATA_OPEN_RDONLY 0x1 /**< refuse writes even if the volume is writable */

/** Write flags. */
#define STRATA_WRITE_FUA     0x1 /**< durable on every replica before the callback */
#define STRATA_ZERO_MAY_TRIM 0x2 /**< write_zeroes may deallocate (NBD without NO_HOLE) */

/** Block status flags of one extent. */
#define STRATA_EXTENT_HOLE 0x1 /**< unallocated: reads as zeros, no space used */
#define STRATA_EXTENT_ZERO 0x2 /**< reads as zeros */

struct strata_extent {
	uint64_t offset;
	uint64_t length;
	uint32_t flags; /**< STRATA_EXTENT_* */
};

/**
 * Connect to strata-meta at "HOST:PORT" (NULL: $STRATA_META, else 127.0.0.1:7700), fetch the
 * cluster map and start the I/O thread. Returns 0 and *out, or a negative errno.
 */
STRATA_API int strata_connect(const char *meta_addr, strata_cluster **out);

/** Connect flag: no I/O thread; the caller runs completions with strata_poll(). */
#define STRATA_CONNECT_POLL 0x1

/** strata_connect with flags (STRATA_CONNECT_*). Returns 0 and *out, or a negative errno. */
STRATA_API int strata_connect_flags(const char *meta_addr, unsigned flags, strata_cluster **out);

/**
 * Poll mode only: submit what is queued, wait up to timeout_ms (0: not at all, -1: until one
 * completes) and run every completion that is ready; callbacks run here. Returns the number
 * of completions run (0 on timeout), -EINVAL for a threaded cluster, -EDEADLK from a callback.
 */
STRATA_API int strata_poll(strata_cluster *c, int timeout_ms);

/** Close every volume still open, stop the I/O thread and free the handle. */
STRATA_API void strata_disconnect(strata_cluster *c);

/** The cluster map epoch this client currently routes by. */
STRATA_API uint64_t strata_map_epoch(strata_cluster *c);

/**
 * Open "pool/vol" (read-write unless STRATA_OPEN_RDONLY, or a template) or "pool/vol@snap"
 * (read-only). Returns 0 and *out, or -ENOENT, -EINVAL (bad spec), a network errno.
 */
STRATA_API int strata_open(strata_cluster *c, const char *spec, int flags, strata_volume **out);

/**
 * Wait for in-flight I/O to complete, then free the handle. Returns 0 or a negative errno:
 * -EBUSY (handle kept) when called from a callback of a threadless cluster while other
 * requests of the volume are still in flight, since they could only finish after it returns.
 */
STRATA_API int strata_close(strata_volume *v);

/** Size in bytes. Changes when the volume is resized (see strata_on_resize). */
STRATA_API uint64_t strata_size(strata_volume *v);
STRATA_API uint32_t strata_object_size(strata_volume *v);
STRATA_API bool strata_read_only(strata_volume *v);
/** A stable 64-bit id for the volume (SCSI NAA designators derive from it). */
STRATA_API uint64_t strata_volume_id(strata_volume *v);

/** Called on the I/O thread after a resize seen in a map or catalog update. */
STRATA_API void strata_on_resize(strata_volume *v, void (*fn)(void *arg, uint64_t new_size),
				 void *arg);

/* Asynchronous I/O. Each returns 0 if queued (cb will run exactly once) or a negative errno if
 * the request was refused up front (cb will not run). Requests spanning objects are split and
 * the results merged transparently. */
STRATA_API int strata_aio_read(strata_volume *v, uint64_t off, size_t len, void *buf, strata_cb cb,
			       void *cb_arg);
STRATA_API int strata_aio_write(strata_volume *v, uint64_t off, size_t len, const void *buf,
				unsigned flags, strata_cb cb, void *cb_arg);
/** Make durable every write this process completed on v, on every node that holds one. */
STRATA_API int strata_aio_flush(strata_volume *v, strata_cb cb, void *cb_arg);
STRATA_API int strata_aio_trim(strata_volume *v, uint64_t off, size_t len, strata_cb cb,
			       void *cb_arg);
STRATA_API int strata_aio_write_zeroes(strata_volume *v, uint64_t off, size_t len, unsigned flags,
				       strata_cb cb, void *cb_arg);
/**
 * Describe [off, off+len) as up to max extents in ext[], in order, contiguous from off; *n gets
 * the count (it may cover less than len if max is reached).
 */
STRATA_API int strata_aio_block_status(strata_volume *v, uint64_t off, size_t len,
				       struct strata_extent *ext, size_t max, size_t *n,
				       strata_cb cb, void *cb_arg);
/**
 * Atomically: if [off, off+len) equals cmp, write data there. On a miscompare cb gets -EILSEQ
 * and *miscompare_off (if not NULL) the byte offset, relative to off, of the first difference.
 * len must not cross an object boundary.
 */
STRATA_API int strata_aio_compare_and_write(strata_volume *v, uint64_t off, size_t len,
					    const void *cmp, const void *data,
					    uint64_t *miscompare_off, strata_cb cb, void *cb_arg);

/* Synchronous wrappers: same semantics, return the callback's err. */
STRATA_API int strata_read(strata_volume *v, uint64_t off, size_t len, void *buf);
STRATA_API int strata_write(strata_volume *v, uint64_t off, size_t len, const void *buf,
			    unsigned flags);
STRATA_API int strata_flush(strata_volume *v);
STRATA_API int strata_trim(strata_volume *v, uint64_t off, size_t len);
STRATA_API int strata_write_zeroes(strata_volume *v, uint64_t off, size_t len, unsigned flags);
STRATA_API int strata_block_status(strata_volume *v, uint64_t off, size_t len,
				   struct strata_extent *ext, size_t max, size_t *n);
STRATA_API int strata_compare_and_write(strata_volume *v, uint64_t off, size_t len, const void *cmp,
					const void *data, uint64_t *miscompare_off);

/** List volume specs ("pool/vol") for NBD_OPT_LIST / SendTargets. *out is malloc'd strings
 * in a malloc'd array; free with strata_free_list. */
STRATA_API int strata_list_volumes(strata_cluster *c, char ***out, size_t *n);
STRATA_API void strata_free_list(char **list, size_t n);

#ifdef __cplusplus
}
#endif
#endif
