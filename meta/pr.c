/*
 * SCSI persistent reservation records, kept for strata-iscsi so that every gateway serving a
 * volume sees one state.
 *
 *   gateway A --PR_UPDATE{spec, expected_version, record}--> meta: version == expected?
 *   gateway B --PR_GET{spec, known_version}---------------->       yes: store, version + 1
 *                                                                  no:  -EAGAIN, B reloads
 *
 * Meta does not interpret the record: the gateway decides a PR OUT on the state it loaded and
 * meta only serialises the decisions by compare-and-swap on `version`. Two gateways racing on
 * one volume therefore both decide on the newest state; the loser reloads and decides again.
 *
 * Records live only in RocksDB (key 'R' + be64 volume + be64 layer), not in memory: a get is a
 * RocksDB point lookup (memtable or block cache), cheap next to the RPC around it, and there
 * is no memory state to keep in step with disk. An update is one synced WriteBatch, like every
 * other catalog change. Versions only grow, even when a record becomes empty, so a gateway's
 * "unchanged since version N" is never fooled by a record that went away and came back.
 *
 * Gateways do not poll this per command: every successful update moves the in-memory pr_seq
 * and server.c holds the PR_UPDATE reply until every gateway's PR_WATCH has acknowledged it
 * (prwatch.c), so a gateway reloads (PR_GET) only after a change, yet a reservation committed
 * through one gateway fences the very next command through any other.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "internal.h"

#define PR_MAX_REGS     256
#define PR_MAX_PORT_LEN 512

static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8) {
		p[i] = (uint8_t)v;
	}
}

/* The record key of spec: 'R' + volume id + (snapshot layer id or 0). */
static int pr_key(struct md_catalog *cat, const char *spec, uint8_t key[17])
{
	struct md_volume *v;
	struct md_layer *l;
	bool ro;
	int rc = md_volume_open(cat, spec, &v, &l, &ro);
	if (rc < 0) {
		return rc;
	}
	key[0] = 'R';
	be64(key + 1, v->id);
	be64(key + 9, strchr(spec, '@') ? l->id : 0);
	return 0;
}

/* The stored record (NULL if none) for key. Returns 0 or -errno. */
static int pr_load(struct md_catalog *cat, const uint8_t key[17], Strata__Meta__PrRecord **out)
{
	char *val;
	size_t vlen;
	*out = NULL;
	int rc = md_catalog_get(cat, key, 17, &val, &vlen);
	if (rc < 0 || val == NULL) {
		return rc;
	}
	*out = strata__meta__pr_record__unpack(NULL, vlen, (const uint8_t *)val);
	rocksdb_free(val);
	if (*out == NULL) {
		return md_fail(cat, -EUCLEAN, "corrupt reservation record");
	}
	return 0;
}

int md_pr_get(struct md_catalog *cat, const char *spec, uint64_t known_version, uint64_t *version,
	      Strata__Meta__PrRecord **out)
{
	uint8_t key[17];
	Strata__Meta__PrRecord *r;
	int rc = pr_key(cat, spec, key);
	*out = NULL;
	*version = 0;
	if (rc < 0 || (rc = pr_load(cat, key, &r)) < 0) {
		return rc;
	}
	if (r == NULL) {
		return 0;
	}
	*version = r->version;
	if (r->version == known_version) {
		strata__meta__pr_record__free_unpacked(r, NULL);
	} else {
		*out = r;
	}
	return 0;
}

static int pr_validate(struct md_catalog *cat, const Strata__Meta__PrRecord *r)
{
	if (r->n_regs > PR_MAX_REGS) {
		return md_fail(cat, -EINVAL, "%zu registrations (at most %d)", r->n_regs,
			       PR_MAX_REGS);
	}
	for (size_t i = 0; i < r->n_regs; i++) {
		const Strata__Meta__PrRegistration *g = r->regs[i];
		if (g->initiator_port[0] == '\0' || strlen(g->initiator_port) > PR_MAX_PORT_LEN ||
		    strlen(g->target_port) > PR_MAX_PORT_LEN) {
			return md_fail(cat, -EINVAL, "registration %zu: bad port name", i);
		}
	}
	if (strlen(r->spc2_holder) > PR_MAX_PORT_LEN || r->type > 15) {
		return md_fail(cat, -EINVAL, "bad reservation holder or type");
	}
	return 0;
}

int md_pr_update(struct md_catalog *cat, const char *spec, uint64_t expected,
		 const Strata__Meta__PrRecord *rec, uint64_t *version)
{
	uint8_t key[17];
	Strata__Meta__PrRecord *cur;
	int rc = pr_key(cat, spec, key);
	if (rc < 0 || (rc = pr_validate(cat, rec)) < 0 || (rc = pr_load(cat, key, &cur)) < 0) {
		return rc;
	}
	uint64_t have = cur ? cur->version : 0;
	if (cur) {
		strata__meta__pr_record__free_unpacked(cur, NULL);
	}
	*version = have;
	if (have != expected) {
		return md_fail(cat, -EAGAIN,
			       "reservation state of %s changed (version %llu, not %llu)", spec,
			       (unsigned long long)have, (unsigned long long)expected);
	}
	Strata__Meta__PrRecord m = *rec;
	m.version = have + 1;
	size_t len = protobuf_c_message_get_packed_size(&m.base);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf == NULL) {
		return -ENOMEM;
	}
	protobuf_c_message_pack(&m.base, buf);
	struct rocksdb_writebatch_t *b = md_batch();
	rocksdb_writebatch_put(b, (const char *)key, sizeof(key), (const char *)buf, len);
	free(buf);
	if ((rc = md_commit(cat, b)) < 0) {
		return rc;
	}
	*version = have + 1;
	return 0;
}
