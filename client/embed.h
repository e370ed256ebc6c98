/*
 * libstrata for in-tree daemons that run their own io_uring reactor (strata-nbd,
 * strata-iscsi): the cluster shares the daemon's reactor instead of starting an I/O thread, so
 * a request and its completion never cross threads.
 *
 *   daemon thread: st_reactor_run(r) --> protocol callbacks --strata_aio_*--> local post
 *                  --> libstrata sends to blockd --> reply CQE --> libstrata callback
 *                  --> daemon callback (same thread, same reactor turn or the next)
 *
 * Rules for a cluster made here:
 *  - Every libstrata call is made on the thread that runs r.
 *  - Completion callbacks run on that thread, inside st_reactor_run.
 *  - The synchronous wrappers (strata_read, strata_flush, ...) work only while r is not
 *    running (they turn r themselves, e.g. to flush at shutdown); inside a callback they
 *    return -EDEADLK. strata_open and the catalog calls talk to meta on their own connection
 *    and may be called anywhere.
 *  - strata_disconnect runs with r not running and before r is destroyed.
 */
#ifndef STRATA_CLIENT_EMBED_H
#define STRATA_CLIENT_EMBED_H

#include "common/reactor.h"
#include "strata/strata.h"

/* Like strata_connect, on reactor r. Returns 0 and *out, or a negative errno. */
int strata_connect_reactor(struct st_reactor *r, const char *meta_addr, strata_cluster **out);

#endif
