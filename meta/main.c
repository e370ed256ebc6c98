/* strata-meta: the cluster catalog service. One reactor thread owns the catalog. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/flags.h"
#include "common/log.h"
#include "common/reactor.h"
#include "internal.h"

static struct st_reactor *g_reactor;

static void on_signal(int sig)
{
	(void)sig;
	if (g_reactor != NULL) {
		st_reactor_stop(g_reactor);
	}
}

int main(int argc, char **argv)
{
	const char *listen = "127.0.0.1:7700";
	const char *data = NULL;
	const char *level = "info";
	int64_t down_out = MD_DEFAULT_DOWN_OUT;
	int64_t watch_timeout = 30;
	uint64_t min_free = MD_MIN_FREE;
	int64_t full_ratio = 0; /* not given: the catalog's, else MD_FULL_RATIO */
	int npos = 0;
	const struct st_flag flags[] = {
		{"listen", ST_FLAG_STRING, &listen, "HOST:PORT",
		 "address to serve on (default 127.0.0.1:7700; port 0 picks a free one)"},
		{"data", ST_FLAG_STRING, &data, "DIR", "catalog directory (RocksDB), required"},
		{"down-out-interval", ST_FLAG_INT, &down_out, "SEC",
		 "seconds a down node stays in the map before it is marked out (default 600)"},
		{"watch-timeout", ST_FLAG_INT, &watch_timeout, "SEC",
		 "longest a MAP_WATCH is held before it is answered with the current map (default "
		 "30)"},
		{"min-free", ST_FLAG_SIZE, &min_free, "SIZE",
		 "refuse new pools, volumes, snapshots and clones with ENOSPC while the catalog's "
		 "file system has less than SIZE available, and every catalog change below a "
		 "quarter of it (default 64M, 0: off)"},
		{"full-ratio", ST_FLAG_INT, &full_ratio, "PCT",
		 "a node with PCT % of its capacity used is marked full: writes to its PGs are "
		 "refused with ENOSPC until it is below PCT - 2 % (100: off). Kept in the catalog, "
		 "as `strata config set full-ratio` sets it at run time; default 95"},
		{"log-level", ST_FLAG_STRING, &level, "LEVEL", "debug, info, warn or error"},
		{NULL, 0, NULL, NULL, NULL},
	};
	const char *usage = "strata-meta --data DIR [--listen HOST:PORT] [--down-out-interval SEC]";
	int rc = st_flags_parse(usage, flags, argc, argv, &npos);
	if (rc != 0) {
		return rc > 0 ? 0 : 2;
	}
	int lvl = st_log_parse_level(level);
	if (lvl < 0) {
		fprintf(stderr, "strata-meta: invalid --log-level '%s'\n", level);
		return 2;
	}
	st_log_init("meta", (enum st_log_level)lvl);
	if (data == NULL || npos != 0 || down_out < 0 || watch_timeout <= 0 || full_ratio < 0 ||
	    full_ratio > 100) {
		fprintf(stderr, "strata-meta: %s\n",
			data == NULL ? "--data DIR is required" : "invalid arguments (see --help)");
		return 2;
	}

	struct md_catalog *cat;
	if ((rc = md_catalog_open(data, &cat)) < 0) {
		fprintf(stderr, "strata-meta: cannot open catalog %s: %s\n", data, strerror(-rc));
		return 1;
	}
	md_catalog_set_min_free(cat, min_free);
	if (full_ratio != 0 && md_set_full_ratio(cat, (unsigned)full_ratio) < 0) {
		fprintf(stderr, "strata-meta: --full-ratio: %s\n", md_catalog_error(cat));
		rc = -EINVAL;
		goto out_catalog;
	}
	if ((rc = st_reactor_create(&g_reactor, 0)) < 0) {
		fprintf(stderr, "strata-meta: io_uring: %s\n", strerror(-rc));
		goto out_catalog;
	}
	struct md_server *srv;
	struct md_server_config cfg = {.listen = listen,
				       .down_out_s = (uint64_t)down_out,
				       .watch_timeout_ms = (uint64_t)watch_timeout * 1000};
	if ((rc = md_server_start(g_reactor, cat, &cfg, &srv)) < 0) {
		fprintf(stderr, "strata-meta: cannot listen on %s: %s\n", listen, strerror(-rc));
		goto out_reactor;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	/* Tests and scripts read the bound port from this line. */
	st_info("listening on %s port %d, catalog %s, epoch %llu", listen, md_server_port(srv),
		data, (unsigned long long)md_catalog_epoch(cat));
	rc = st_reactor_run(g_reactor);
	st_info("shutting down");
	md_server_stop(srv);
	st_reactor_destroy(g_reactor); /* delivers the cancelled timers to the server */
	md_server_free(srv);
	goto out_catalog;
out_reactor:
	st_reactor_destroy(g_reactor);
out_catalog:
	md_catalog_close(cat);
	return rc < 0 ? 1 : 0;
}
