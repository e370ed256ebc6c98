/*
 * strata-blockd: the storage node. One reactor thread owns the engine, the RPC server and the
 * meta session.
 *
 *   strata-blockd --listen 127.0.0.1:7800 --data /var/strata/d0 --size 10G [--meta HOST:PORT]
 *   strata-blockd --listen 0.0.0.0:7800 --advertise 10.0.0.5:7800 ...   (a wildcard listener
 *                 must say which address peers and clients reach it at)
 *   strata-blockd --fsck --data /var/strata/d0     (exit 0 clean, 1 problems found)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/flags.h"
#include "common/log.h"
#include "common/net.h"
#include "common/reactor.h"
#include "common/size.h"
#include "internal.h"

static struct st_reactor *g_reactor;

static void on_signal(int sig)
{
	(void)sig;
	if (g_reactor != NULL) {
		st_reactor_stop(g_reactor);
	}
}

static void print_report(const struct bd_fsck_report *r, bool data)
{
	printf("lists: %lu (undecodable %lu)\n", (unsigned long)r->lists,
	       (unsigned long)r->bad_lists);
	printf("referenced blocks: %lu, references: %lu\n", (unsigned long)r->referenced,
	       (unsigned long)r->references);
	printf("persisted allocated: %lu (%s)\n", (unsigned long)r->persisted,
	       r->bitmap_checked ? "clean close: checked"
				 : "not a clean close: stale by design, not checked");
	printf("leaked (allocated, unreferenced): %lu\n", (unsigned long)r->leaked);
	printf("missing (referenced, not allocated): %lu\n", (unsigned long)r->missing);
	printf("out of range references: %lu\n", (unsigned long)r->out_of_range);
	printf("double references: %lu\n", (unsigned long)r->double_refs);
	if (data) {
		printf("checksum errors: %lu\n", (unsigned long)r->checksum_errors);
	}
}

static int run_fsck(struct bd_engine_opts *eo, bool verify)
{
	struct st_reactor *r;
	int rc = st_reactor_create(&r, 0);
	if (rc < 0) {
		fprintf(stderr, "strata-blockd: reactor: %s\n", strerror(-rc));
		return 2;
	}
	struct bd_engine *e;
	eo->fsck_only = true;
	rc = bd_engine_open(r, eo, &e);
	if (rc < 0) {
		fprintf(stderr, "strata-blockd: open: %s\n", strerror(-rc));
		st_reactor_destroy(r);
		return 2;
	}
	struct bd_fsck_report rep = *bd_engine_fsck_report(e);
	if (verify) {
		rc = bd_engine_verify_data(e, &rep);
	}
	print_report(&rep, verify);
	bool clean = rc == 0 && rep.bad_lists == 0 && rep.leaked == 0 && rep.missing == 0 &&
		     rep.out_of_range == 0 && rep.double_refs == 0 && rep.checksum_errors == 0;
	printf("fsck: %s\n", clean ? "clean" : "PROBLEMS FOUND");
	bd_engine_close(e);
	st_reactor_destroy(r);
	return clean ? 0 : 1;
}

/*
 * The address a node registers is the one every peer and client dials, so it must name this
 * host: a wildcard (0.0.0.0, [::]) would send them to themselves. Refused before anything
 * starts, with the fix in the message. Returns 0 or -EINVAL (reported).
 */
static int check_addresses(const char *listen, const char *advertise, bool with_meta)
{
	int wild = st_hostport_is_wildcard(listen);
	if (wild < 0) {
		fprintf(stderr, "strata-blockd: --listen %s: not IPV4:PORT or [IPV6]:PORT\n",
			listen);
		return -EINVAL;
	}
	if (advertise == NULL) {
		if (wild && with_meta) {
			fprintf(stderr,
				"strata-blockd: --listen %s is a wildcard address, which peers and "
				"clients cannot dial: give --advertise HOST:PORT, the address they "
				"reach this node at\n",
				listen);
			return -EINVAL;
		}
		return 0;
	}
	int awild = st_hostport_is_wildcard(advertise);
	if (awild < 0) {
		fprintf(stderr, "strata-blockd: --advertise %s: not IPV4:PORT or [IPV6]:PORT\n",
			advertise);
		return -EINVAL;
	}
	if (awild) {
		fprintf(stderr,
			"strata-blockd: --advertise %s is a wildcard address: give the address "
			"peers and clients reach this node at\n",
			advertise);
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *usage =
		"usage: strata-blockd --listen HOST:PORT [--advertise HOST:PORT] "
		"--data PATH [--size 10G] [--meta HOST:PORT] [--db DIR] [--fsck [--verify]]";
	const char *listen = "127.0.0.1:7800", *data = NULL, *db = NULL, *meta = NULL;
	const char *advertise = NULL;
	const char *level = "info";
	uint64_t size = 10ull << 30, cache = 65536, prewrite = BD_PREWRITE_AHEAD;
	uint64_t defrag_runs = BD_DEFRAG_RUNS, defrag_shared = BD_DEFRAG_SHARED;
	uint64_t min_free = BD_MIN_FREE;
	uint64_t submit_batch = st_reactor_submit_batch_from_env(ST_REACTOR_SUBMIT_BATCH);
	uint64_t spin_us = st_reactor_spin_from_env(BD_SPIN_US);
	bool fsck = false, verify = false, verify_inline = false, commit_inline = false;
	bool no_bg_defrag = false;
	bool plain_io = false, ack_after_commit = false;
	const struct st_flag flags[] = {
		{"meta", ST_FLAG_STRING, &meta, "HOST:PORT", "strata-meta to register with"},
		{"listen", ST_FLAG_STRING, &listen, "HOST:PORT",
		 "RPC address (default 127.0.0.1:7800)"},
		{"advertise", ST_FLAG_STRING, &advertise, "HOST:PORT",
		 "the address peers and clients reach this node at, registered with meta "
		 "(default: the --listen address; required when that is 0.0.0.0 or [::]; "
		 "port 0: the port listened on)"},
		{"data", ST_FLAG_STRING, &data, "PATH",
		 "data file (created sparse) or block device"},
		{"size", ST_FLAG_SIZE, &size, "SIZE", "size of a new data file (default 10G)"},
		{"db", ST_FLAG_STRING, &db, "DIR", "RocksDB index directory (default PATH.db)"},
		{"cache-entries", ST_FLAG_SIZE, &cache, "N",
		 "extent list cache entries (default 65536)"},
		{"fsck", ST_FLAG_BOOL, &fsck, NULL,
		 "check the index against the allocator and exit"},
		{"verify", ST_FLAG_BOOL, &verify, NULL,
		 "with --fsck: also read and check every block"},
		{"verify-inline", ST_FLAG_BOOL, &verify_inline, NULL,
		 "check read checksums on the I/O thread (default: on a worker thread)"},
		{"commit-inline", ST_FLAG_BOOL, &commit_inline, NULL,
		 "write index commits on the I/O thread (default: a pipelined committer thread)"},
		{"submit-batch", ST_FLAG_SIZE, &submit_batch, "N",
		 "submit I/O once N requests are queued, 0: once per loop turn "
		 "(default $STRATA_SUBMIT_BATCH, else 4)"},
		{"spin-us", ST_FLAG_SIZE, &spin_us, "N",
		 "poll for completions up to N microseconds before sleeping, at low load "
		 "(default $STRATA_SPIN_US, else 0: sleep at once; see ARCHITECTURE, session 12)"},
		{"prewrite-ahead", ST_FLAG_SIZE, &prewrite, "SIZE",
		 "on a sparse data file, keep this much free space written ahead of allocation "
		 "(default 64M, 0: off)"},
		{"defrag-runs", ST_FLAG_SIZE, &defrag_runs, "N",
		 "rewrite a 256 KiB segment read whole into one run when it lies in more than N "
		 "(default 8, 0: off)"},
		{"defrag-shared", ST_FLAG_SIZE, &defrag_shared, "N",
		 "such a rewrite may copy up to N of the segment's 64 blocks that snapshots or "
		 "clones still share (default 16, 0: only segments that share nothing)"},
		{"no-background-defrag", ST_FLAG_BOOL, &no_bg_defrag, NULL,
		 "rewrite scattered segments only when a read covers them, not while idle too"},
		{"min-free", ST_FLAG_SIZE, &min_free, "SIZE",
		 "refuse writes with ENOSPC while the file system of the index or of a data file "
		 "has less than SIZE available, keeping it for the index (default 64M, 0: off)"},
		{"ack-after-commit", ST_FLAG_BOOL, &ack_after_commit, NULL,
		 "no reply journal: reply to a write only after its index commit (default: "
		 "journal the commit, reply, then commit)"},
		{"plain-io", ST_FLAG_BOOL, &plain_io, NULL,
		 "no io_uring registered file and read buffers (default: registered)"},
		{"log-level", ST_FLAG_STRING, &level, "LEVEL", "debug, info, warn or error"},
		{NULL, 0, NULL, NULL, NULL},
	};
	int npos = 0;
	int rc = st_flags_parse(usage, flags, argc, argv, &npos);
	if (rc == 1) {
		return 0;
	}
	if (rc < 0 || npos > 0 || data == NULL) {
		if (rc == 0) {
			fprintf(stderr, "strata-blockd: --data is required\n");
		}
		st_flags_usage(usage, flags);
		return 2;
	}
	int lv = st_log_parse_level(level);
	if (lv < 0) {
		fprintf(stderr, "strata-blockd: bad --log-level %s\n", level);
		return 2;
	}
	st_log_init("blockd", (enum st_log_level)lv);
	if (!fsck && check_addresses(listen, advertise, meta != NULL) < 0) {
		return 2;
	}
	struct bd_engine_opts eo = {
		.data_path = data,
		.db_path = db,
		.size = size,
		.cache_entries = (size_t)cache,
		.plain_io = plain_io,
		.prewrite_ahead = prewrite,
		.journal = !ack_after_commit,
		.defrag_runs = defrag_runs > BD_SEG_BLOCKS ? BD_SEG_BLOCKS : (uint32_t)defrag_runs,
		.defrag_shared =
			defrag_shared > BD_SEG_BLOCKS ? BD_SEG_BLOCKS : (uint32_t)defrag_shared,
		.defrag_background = !no_bg_defrag,
		.min_free = min_free,
	};
	if (fsck) {
		return run_fsck(&eo, verify);
	}

	signal(SIGPIPE, SIG_IGN);
	if ((rc = st_reactor_create(&g_reactor, 1024)) < 0) {
		st_error("reactor: %s", strerror(-rc));
		return 1;
	}
	st_reactor_set_submit_batch(g_reactor, submit_batch > ST_REACTOR_SUBMIT_BATCH_MAX
						       ? ST_REACTOR_SUBMIT_BATCH_MAX
						       : (unsigned)submit_batch);
	st_reactor_set_spin_us(g_reactor, spin_us > 1000 ? 1000 : (unsigned)spin_us);
	struct bd_engine *e = NULL;
	if ((rc = bd_engine_open(g_reactor, &eo, &e)) < 0) {
		st_error("engine open %s: %s", data, strerror(-rc));
		goto out_reactor;
	}
	if (!verify_inline && (rc = bd_engine_start_verifier(e)) < 0) {
		st_error("verifier thread: %s", strerror(-rc));
		goto out_engine;
	}
	if (!commit_inline && (rc = bd_engine_start_committer(e, false)) < 0) {
		st_error("committer thread: %s", strerror(-rc));
		goto out_engine;
	}
	const struct bd_fsck_report *rep = bd_engine_fsck_report(e);
	struct bd_space sp;
	bd_engine_space(e, &sp);
	char sz[32], used[32];
	st_info("data %s: %s, %s used, %lu lists; rebuild: %lu leaked blocks reclaimed, %lu "
		"missing, %lu double references",
		data, st_format_size(sp.total_blocks * BD_BLOCK, sz, sizeof(sz)),
		st_format_size(sp.used_blocks * BD_BLOCK, used, sizeof(used)),
		(unsigned long)sp.lists, (unsigned long)rep->leaked, (unsigned long)rep->missing,
		(unsigned long)rep->double_refs);
	struct bd_service *svc = NULL;
	struct bd_service_opts so = {.listen = listen, .advertise = advertise, .meta = meta};
	if ((rc = bd_service_start(g_reactor, e, &so, &svc)) < 0) {
		st_error("listen %s: %s", listen, strerror(-rc));
		goto out_engine;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	st_info("listening on %s port %d", listen, bd_service_port(svc));
	rc = st_reactor_run(g_reactor);
	st_info("shutting down");
	/* Stop first (nothing re-arms), then let the reactor cancel and complete every op still
	 * in flight while its owners are alive, and only then free them. */
	bd_service_stop(svc);
	bd_engine_stop_prewriter(e);
	bd_engine_stop_verifier(e); /* their last posts run in st_reactor_destroy */
	bd_engine_stop_listers(e);  /* the same */
	bd_engine_stop_committer(e);
	bd_engine_settle(e); /* groups still gathered or sealed commit while the ring exists */
	st_reactor_destroy(g_reactor);
	bd_engine_forget_reactor(e);
	/* The ring's last completions may have gathered another group: commit it while the
	 * service (whose connections are closed now: replies are dropped) still exists. */
	bd_engine_settle(e);
	bd_service_free(svc);
	bd_engine_close(e);
	return rc < 0 ? 1 : 0;
out_engine:
	st_reactor_destroy(g_reactor);
	bd_engine_forget_reactor(e);
	bd_engine_close(e);
	return 1;
out_reactor:
	st_reactor_destroy(g_reactor);
	return rc < 0 ? 1 : 0;
}
