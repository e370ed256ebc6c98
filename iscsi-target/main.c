/*
 * strata-iscsi: iSCSI target (RFC 7143) serving Strata volumes as SBC-3 LUNs.
 *
 *   strata-iscsi --meta HOST:PORT --listen 127.0.0.1:3260 [--iqn-prefix P] [--config FILE]
 *
 * One reactor thread runs every connection, and libstrata shares it (client/embed.h): a task
 * goes from the initiator's socket to blockd's and back without changing threads.
 * SIGINT/SIGTERM stop the reactor from a signal-waiting thread.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/embed.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/net.h"
#include "internal.h"

static void *signal_thread(void *arg)
{
	struct st_reactor *r = arg;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigwait(&set, &sig) == 0) {
		st_info("signal %d: stopping", sig);
		st_reactor_stop(r);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *meta = NULL, *listen_addr = "127.0.0.1:3260";
	const char *prefix = "iqn.2026-11.io.strata", *config = NULL, *level = "info";
	int64_t block_size = 512, pr_cache_ms = 0;
	const struct st_flag flags[] = {
		{"meta", ST_FLAG_STRING, &meta, "HOST:PORT",
		 "strata-meta address (default $STRATA_META)"},
		{"listen", ST_FLAG_STRING, &listen_addr, "HOST:PORT", "portal to listen on"},
		{"iqn-prefix", ST_FLAG_STRING, &prefix, "IQN", "target names are IQN:<pool>.<vol>"},
		{"config", ST_FLAG_STRING, &config, "FILE", "CHAP credentials and ACLs"},
		{"block-size", ST_FLAG_INT, &block_size, "BYTES",
		 "logical block size: 512 or 4096"},
		{"pr-cache-ms", ST_FLAG_INT, &pr_cache_ms, "MS",
		 "also trust cached reservation state for MS ms without the watch (0: only while "
		 "meta's PR watch is healthy; ask meta before every command otherwise)"},
		{"log-level", ST_FLAG_STRING, &level, "LEVEL", "debug, info, warn or error"},
		{NULL, 0, NULL, NULL, NULL},
	};
	static struct isc_config cfg;
	struct st_reactor *r = NULL;
	strata_cluster *cl = NULL;
	pthread_t sigthr;
	sigset_t set;
	int npos, rc, lfd, lvl;

	rc = st_flags_parse("strata-iscsi [flags]", flags, argc, argv, &npos);
	if (rc)
		return rc > 0 ? 0 : 2;
	lvl = st_log_parse_level(level);
	st_log_init("iscsi", lvl < 0 ? ST_LOG_INFO : (enum st_log_level)lvl);
	cfg.meta = meta;
	cfg.iqn_prefix = prefix;
	cfg.listen = listen_addr;
	if (block_size != 512 && block_size != 4096) {
		fprintf(stderr, "strata-iscsi: --block-size must be 512 or 4096\n");
		return 2;
	}
	cfg.block_size = (uint32_t)block_size;
	if (pr_cache_ms < 0 || pr_cache_ms > 60000) {
		fprintf(stderr, "strata-iscsi: --pr-cache-ms must be 0 to 60000\n");
		return 2;
	}
	isc_pr_init(meta, (unsigned)pr_cache_ms);
	if (config && isc_config_load(&cfg, config))
		return 1;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = st_reactor_create(&r, 1024);
	if (rc) {
		st_error("reactor: %s", strerror(-rc));
		return 1;
	}
	rc = strata_connect_reactor(r, meta, &cl);
	if (rc) {
		st_error("connect to meta %s: %s", meta ? meta : "(default)", strerror(-rc));
		goto err_reactor;
	}
	isc_target_init(&cfg, cl);
	rc = isc_pr_watch_start(r);
	if (rc)
		st_warn("reservation watch: %s; retrying in the background", strerror(-rc));
	lfd = st_tcp_listen(listen_addr, 128);
	if (lfd < 0) {
		st_error("listen %s: %s", listen_addr, strerror(-lfd));
		goto err_cluster;
	}
	isc_server_start(r, lfd, listen_addr);
	pthread_create(&sigthr, NULL, signal_thread, r);
	st_info("listening on %s, targets %s:<pool>.<volume>", listen_addr, prefix);
	rc = st_reactor_run(r);
	pthread_kill(sigthr, SIGTERM);
	pthread_join(sigthr, NULL);
	/* Before libstrata goes: the turns below would otherwise still dispatch the commands
	 * that initiators keep sending, into a cluster being freed. */
	isc_server_stop();
	close(lfd);
	isc_pr_watch_stop();
	/* libstrata first: its requests fail over to the sessions' completions, which the
	 * reactor's teardown then runs. */
	strata_disconnect(cl);
	st_reactor_destroy(r);
	return rc ? 1 : 0;

err_cluster:
	isc_pr_watch_stop();
	strata_disconnect(cl);
err_reactor:
	st_reactor_destroy(r);
	return 1;
}
