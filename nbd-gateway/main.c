/*
 * strata-nbd: an NBD server whose exports are Strata volumes.
 *
 *   strata-nbd --meta HOST:PORT --listen 127.0.0.1:10809
 *              [--tls-cert F --tls-key F [--tls-ca F] [--tls require|optional]]
 *
 * One io_uring reactor thread owns every socket, and libstrata shares it (client/embed.h): a
 * request goes from the client's socket to blockd's and back without changing threads.
 * SIGINT/SIGTERM stop the reactor, then every open export is flushed (acknowledged writes are
 * already on blockd; the flush makes them durable), so a restart loses nothing a client was
 * told was written.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/flags.h"
#include "common/log.h"
#include "client/embed.h"
#include "common/reactor.h"
#include "internal.h"

static struct st_reactor *g_reactor;

static void on_signal(int sig)
{
	(void)sig;
	if (g_reactor != NULL) {
		st_reactor_stop(g_reactor); /* an atomic store and an eventfd write */
	}
}

int main(int argc, char **argv)
{
	const char *meta = NULL, *listen = "127.0.0.1:10809", *cert = NULL, *key = NULL, *ca = NULL,
		   *tls = NULL, *level = "info";
	int64_t max_inflight = 128;
	const struct st_flag flags[] = {
		{"meta", ST_FLAG_STRING, &meta, "HOST:PORT",
		 "strata-meta address (default $STRATA_META or 127.0.0.1:7700)"},
		{"listen", ST_FLAG_STRING, &listen, "HOST:PORT",
		 "listen address (default 127.0.0.1:10809)"},
		{"tls-cert", ST_FLAG_STRING, &cert, "FILE",
		 "server certificate (PEM); enables STARTTLS"},
		{"tls-key", ST_FLAG_STRING, &key, "FILE", "server private key (PEM)"},
		{"tls-ca", ST_FLAG_STRING, &ca, "FILE",
		 "CA (PEM) that client certificates must chain to"},
		{"tls", ST_FLAG_STRING, &tls, "require|optional",
		 "TLS policy when a certificate is given (default require)"},
		{"max-inflight", ST_FLAG_INT, &max_inflight, "N",
		 "requests in flight per connection (default 128)"},
		{"log-level", ST_FLAG_STRING, &level, "LEVEL", "debug, info, warn or error"},
		{NULL, 0, NULL, NULL, NULL},
	};
	struct nbd_server_config cfg = {0};
	struct nbd_server *srv = NULL;
	strata_cluster *cluster = NULL;
	struct sigaction sa;
	int npos, ret, lvl;

	ret = st_flags_parse("strata-nbd --meta HOST:PORT [--listen HOST:PORT] [TLS options]",
			     flags, argc, argv, &npos);
	if (ret != 0) {
		return ret > 0 ? 0 : 2;
	}
	lvl = st_log_parse_level(level);
	if (lvl < 0 || npos != 0 || max_inflight < 1 || max_inflight > 4096) {
		fprintf(stderr, "strata-nbd: bad arguments (see --help)\n");
		return 2;
	}
	st_log_init("nbd", (enum st_log_level)lvl);

	cfg.listen = listen;
	cfg.meta = meta;
	cfg.max_inflight = (unsigned)max_inflight;
	if ((cert == NULL) != (key == NULL)) {
		st_error("--tls-cert and --tls-key go together");
		return 2;
	}
	if (cert != NULL) {
		if (tls == NULL || strcmp(tls, "require") == 0) {
			cfg.tls_mode = NBD_TLS_REQUIRE;
		} else if (strcmp(tls, "optional") == 0) {
			cfg.tls_mode = NBD_TLS_OPTIONAL;
		} else {
			st_error("--tls must be require or optional");
			return 2;
		}
		ret = nbd_tls_create(&cfg.tls, cert, key, ca);
		if (ret < 0) {
			return 1;
		}
	} else if (tls != NULL || ca != NULL) {
		st_error("--tls and --tls-ca need --tls-cert and --tls-key");
		return 2;
	}

	ret = st_reactor_create(&g_reactor, 1024);
	if (ret < 0) {
		st_error("reactor: %s", strerror(-ret));
		goto out_tls;
	}
	ret = strata_connect_reactor(g_reactor, meta, &cluster);
	if (ret < 0) {
		st_error("connect to meta %s: %s", meta ? meta : "(default)", strerror(-ret));
		goto out_tls;
	}
	ret = nbd_server_create(&srv, g_reactor, cluster, &cfg);
	if (ret < 0) {
		st_error("listen on %s: %s", listen, strerror(-ret));
		goto out_cluster;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	st_info("listening on %s (port %d)%s", listen, nbd_server_port(srv),
		cfg.tls_mode == NBD_TLS_REQUIRE    ? ", TLS required"
		: cfg.tls_mode == NBD_TLS_OPTIONAL ? ", TLS optional"
						   : "");

	ret = st_reactor_run(g_reactor);
	if (ret < 0) {
		st_error("reactor: %s", strerror(-ret));
	}
	st_info("shutting down");
	nbd_server_shutdown(srv);
	/* Connections are not torn down one by one: the process is exiting, and every write a
	 * client saw acknowledged is on blockd and now flushed. */
out_cluster:
	strata_disconnect(cluster);
out_tls:
	nbd_tls_destroy(cfg.tls);
	return ret < 0 ? 1 : 0;
}
