/*
 * Exports: one strata_volume per export name per process, shared by every connection.
 *
 *   nbd_server.exports --> [ "p/v" refs=3 vol ] --> [ "p/v@s" refs=1 vol ]
 *
 * Sharing the handle is what makes CAN_MULTI_CONN truthful: libstrata tracks, per open
 * volume, which blockd nodes hold unflushed writes, so a FLUSH on any connection flushes the
 * writes completed on all of them. Opens and closes run on the reactor thread (synchronous
 * metadata calls to strata-meta during the handshake; never in the data path).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"

struct nbd_export {
	LIST_ENTRY(nbd_export) link;
	struct nbd_server *srv;
	char *name;
	strata_volume *vol;
	unsigned refs;
};

/* Returns 0 and a referenced export, or a negative errno (-ENOENT unknown volume). */
int nbd_export_open(struct nbd_server *srv, const char *name, struct nbd_export **out)
{
	struct nbd_export *e;
	int ret;

	LIST_FOREACH(e, &srv->exports, link)
	{
		if (strcmp(e->name, name) == 0) {
			e->refs++;
			*out = e;
			return 0;
		}
	}
	if (name[0] == '\0') {
		return -ENOENT; /* no default export */
	}
	e = calloc(1, sizeof(*e));
	if (e == NULL) {
		return -ENOMEM;
	}
	e->name = strdup(name);
	if (e->name == NULL) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = strata_open(srv->cluster, name, 0, &e->vol);
	if (ret < 0) {
		goto err_name;
	}
	e->srv = srv;
	e->refs = 1;
	LIST_INSERT_HEAD(&srv->exports, e, link);
	st_debug("opened export %s (%llu bytes%s)", name, (unsigned long long)strata_size(e->vol),
		 strata_read_only(e->vol) ? ", read-only" : "");
	*out = e;
	return 0;

err_name:
	free(e->name);
err_free:
	free(e);
	return ret;
}

/*
 * Drop a reference; the last one closes the volume. Exports are shared only while in use:
 * a later open sees the catalog as it is then (a volume marked as a template since, say, must
 * come back read-only), at the price of a strata-meta round trip per first open.
 */
void nbd_export_put(struct nbd_export *e)
{
	int ret;

	if (e == NULL || --e->refs > 0) {
		return;
	}
	LIST_REMOVE(e, link);
	ret = strata_close(e->vol);
	if (ret < 0) {
		st_warn("closing export %s: %s", e->name, strerror(-ret));
	}
	st_debug("closed export %s", e->name);
	free(e->name);
	free(e);
}

struct strata_volume *nbd_export_volume(struct nbd_export *e)
{
	return e->vol;
}

uint64_t nbd_export_size(struct nbd_export *e)
{
	return strata_size(e->vol);
}

bool nbd_export_read_only(struct nbd_export *e)
{
	return strata_read_only(e->vol);
}

/*
 * At shutdown: every acknowledged write is already on blockd; make it durable too. A flush
 * turns the reactor, so a connection may close meanwhile and drop an export's last reference:
 * the export being flushed and the next one are held, so neither is freed under the walk.
 */
void nbd_export_flush_all(struct nbd_server *srv)
{
	struct nbd_export *e = LIST_FIRST(&srv->exports);

	if (e != NULL) {
		e->refs++;
	}
	while (e != NULL) {
		int ret = strata_flush(e->vol);

		if (ret < 0) {
			st_warn("flush of %s at shutdown: %s", e->name, strerror(-ret));
		}
		struct nbd_export *next = LIST_NEXT(e, link);
		if (next != NULL) {
			next->refs++;
		}
		nbd_export_put(e);
		e = next;
	}
}
