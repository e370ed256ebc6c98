/* Mutations: the idempotency table of compare-and-write across an engine restart. */
#include "engine_int.h"
#include "helpers.h"

#define MiB (1024u * 1024u)

struct ikeys {
	size_t n;
	bool want_found;
	uint64_t want_cid, want_seq;
};

static uint64_t be64_at(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) {
		v = v << 8 | p[i];
	}
	return v;
}

static int ikeys_fn(void *arg, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct ikeys *c = arg;
	(void)v;
	cr_assert_eq(klen, 17);
	/* stamp, family and object; keys written before session 8 hold the stamp alone */
	cr_assert(vlen == 24 || vlen == 8, "'I' value of %zu bytes", vlen);
	c->n++;
	if (be64_at(k + 1) == c->want_cid && be64_at(k + 9) == c->want_seq) {
		c->want_found = true;
	}
	return 0;
}

/* The number of persisted idempotency keys; *found: whether (cid, seq) is one of them. */
static size_t ikeys(struct tctx *t, uint64_t cid, uint64_t seq, bool *found)
{
	struct ikeys c = {.want_cid = cid, .want_seq = seq};
	cr_assert_eq(bd_index_scan_raw(bd_engine_index(t->e), "I", 1, ikeys_fn, &c), 0);
	if (found) {
		*found = c.want_found;
	}
	return c.n;
}

/* CAW of one block of object 0 (layer 1) with (cid, seq): compare fill cmpv, write fill datav. */
static int caw(struct tctx *t, uint64_t cid, uint64_t seq, int cmpv, int datav, uint64_t *mis)
{
	uint8_t *cmp = t_buf(4096, cmpv), *data = t_buf(4096, datav);
	struct bd_req q = t_req(1, NULL, 0, 0, 0, 4096);
	q.client_id = cid;
	q.seq = seq;
	struct twait w = {.r = t->r};
	bd_compare_and_write(t->e, &q, cmp, data, mis, t_cb, &w);
	int rc = t_wait(t, &w);
	free(cmp);
	free(data);
	return rc;
}

Test(mutate, caw_result_survives_restart)
{
	struct tctx t;
	t_open(&t, 16 * MiB);
	uint64_t mis = 99;
	bool found;
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 4096, 0x01), 0);
	cr_assert_eq(caw(&t, 77, 1, 0x01, 0x02, &mis), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x02), 0);
	/* A miscompare writes nothing and persists nothing. */
	cr_assert_eq(caw(&t, 77, 2, 0x01, 0x03, &mis), BD_ERR_MISCOMPARE);
	cr_assert_eq(ikeys(&t, 77, 1, &found), 1);
	cr_assert(found, "the successful CAW is persisted");
	cr_assert_eq(ikeys(&t, 77, 2, &found), 1);
	cr_assert_not(found, "the miscompare is not persisted");

	t_reopen(&t);
	/* The retry of the applied CAW (its reply lost) compares stale data: answered success
	 * from the persisted table, nothing compared or written. */
	uint64_t used = t_used(&t);
	mis = 99;
	cr_assert_eq(caw(&t, 77, 1, 0x01, 0x04, &mis), 0);
	cr_assert_eq(mis, 0);
	cr_assert_eq(t_used(&t), used);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x02), 0, "the retry was not applied");
	/* A new request with the same stale compare data miscompares. */
	cr_assert_eq(caw(&t, 77, 3, 0x01, 0x04, &mis), BD_ERR_MISCOMPARE);
	cr_assert_eq(mis, 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x02), 0);
	/* The retry of the earlier miscompare is evaluated again: with compare data that matches
	 * now it succeeds (it was not persisted, as success or otherwise). */
	cr_assert_eq(caw(&t, 77, 2, 0x02, 0x05, &mis), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x05), 0);

	/* And that one survives a second restart too; the first is still known. */
	t_reopen(&t);
	cr_assert_eq(ikeys(&t, 77, 2, &found), 2);
	cr_assert(found);
	cr_assert_eq(caw(&t, 77, 2, 0x02, 0x06, &mis), 0);
	cr_assert_eq(caw(&t, 77, 1, 0x01, 0x06, &mis), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x05), 0);
	cr_assert_eq(caw(&t, 78, 1, 0x02, 0x06, &mis), BD_ERR_MISCOMPARE);
	t_close(&t);
}

/* A replica applies a successful compare-and-write as a plain write flagged caw_done: it
 * persists the (client_id, seq) too, so after a failover and a restart of that replica the
 * client's retry of the compare-and-write is answered as applied, not compared again. */
Test(mutate, replica_records_the_caw_it_applies)
{
	struct tctx t;
	t_open(&t, 16 * MiB);
	uint64_t mis = 99;
	bool found;
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 4096, 0x01), 0);
	struct bd_req q = t_req(1, NULL, 0, 0, 0, 4096);
	q.client_id = 88;
	q.seq = 5;
	q.caw_done = true;
	uint8_t *data = t_buf(4096, 0x02);
	cr_assert_eq(t_write_q(&t, &q, data), 0);
	free(data);
	cr_assert_eq(ikeys(&t, 88, 5, &found), 1);
	cr_assert(found, "the replica persisted the compare-and-write's outcome");
	/* A plain write with an id persists nothing. */
	q.seq = 6;
	q.caw_done = false;
	data = t_buf(4096, 0x03);
	cr_assert_eq(t_write_q(&t, &q, data), 0);
	free(data);
	cr_assert_eq(ikeys(&t, 88, 6, &found), 1);
	cr_assert_not(found);

	t_reopen(&t);
	/* The retry (stale compare data 0x01) is answered success and changes nothing. */
	cr_assert_eq(caw(&t, 88, 5, 0x01, 0x04, &mis), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x03), 0, "the retry was not applied");
	t_close(&t);
}

Test(mutate, evicted_entries_lose_their_keys)
{
	struct tctx t;
	t_open(&t, 16 * MiB);
	uint64_t mis;
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 4096, 0x01), 0);
	cr_assert_eq(caw(&t, 77, 1, 0x01, 0x02, &mis), 0);
	cr_assert_eq(ikeys(&t, 77, 1, NULL), 1);
	/* IDEM_CAP more requests with ids (trims of an unwritten object: cheap) wrap the ring
	 * and evict the CAW's entry; its key goes in the next commit. */
	struct bd_req q = t_req(1, NULL, 0, 9, 0, 4096);
	q.client_id = 5;
	for (uint64_t i = 0; i < IDEM_CAP; i++) {
		q.seq = i + 1;
		struct twait w = {.r = t.r};
		bd_trim(t.e, &q, t_cb, &w);
		cr_assert_eq(t_wait(&t, &w), 0);
	}
	cr_assert_eq(ikeys(&t, 77, 1, NULL), 0, "the evicted entry's key is deleted");
	t_close(&t);
}

Test(mutate, open_prunes_keys_beyond_the_table)
{
	struct tctx t;
	t_open(&t, 16 * MiB);
	enum { EXTRA = 5, N = IDEM_CAP + EXTRA };
	uint8_t(*keys)[17] = calloc(N, 17);
	uint8_t(*vals)[8] = calloc(N, 8);
	struct bd_xkv *kv = calloc(N, sizeof(*kv));
	cr_assert(keys && vals && kv);
	for (uint32_t i = 0; i < N; i++) {
		/* Stamps 1..N; the seq order is the reverse, so pruning must go by stamp. */
		uint64_t seq = N - i, stamp = i + 1;
		keys[i][0] = 'I';
		for (int b = 0; b < 8; b++) {
			keys[i][1 + b] = (uint8_t)(40ull >> (56 - 8 * b));
			keys[i][9 + b] = (uint8_t)(seq >> (56 - 8 * b));
			vals[i][b] = (uint8_t)(stamp >> (56 - 8 * b));
		}
		kv[i] = (struct bd_xkv){keys[i], 17, vals[i], 8};
	}
	cr_assert_eq(bd_engine_put_raw(t.e, kv, N, false), 0);
	free(keys);
	free(vals);
	free(kv);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 4096, 0x01), 0);
	t_reopen(&t);
	bool found;
	cr_assert_eq(ikeys(&t, 40, N, &found), IDEM_CAP);
	cr_assert_not(found, "the oldest stamp is pruned");
	cr_assert_eq(ikeys(&t, 40, 1, &found), IDEM_CAP);
	cr_assert(found, "the newest stamp is kept");
	uint64_t mis;
	/* Loaded entries answer success; pruned ones are forgotten (evaluated again). */
	cr_assert_eq(caw(&t, 40, 1, 0x07, 0x08, &mis), 0);
	cr_assert_eq(caw(&t, 40, EXTRA + 1, 0x07, 0x08, &mis), 0);
	cr_assert_eq(caw(&t, 40, N, 0x07, 0x08, &mis), BD_ERR_MISCOMPARE);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x01), 0);
	/* A new success is stamped after every loaded key. The table is full: the new entries
	 * of (40, N) and (41, 1) evicted the two oldest loaded ones, whose keys went. */
	cr_assert_eq(caw(&t, 41, 1, 0x01, 0x02, &mis), 0);
	t_reopen(&t);
	cr_assert_eq(ikeys(&t, 41, 1, &found), IDEM_CAP - 1);
	cr_assert(found);
	cr_assert_eq(ikeys(&t, 40, IDEM_CAP, &found), IDEM_CAP - 1);
	cr_assert_not(found, "the oldest loaded entry was evicted");
	cr_assert_eq(caw(&t, 40, 1, 0x01, 0x03, &mis), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x02), 0);
	t_close(&t);
}

static bool all_objects(void *arg, uint64_t family, uint64_t object)
{
	(void)arg, (void)family, (void)object;
	return true;
}

static bool object_1_only(void *arg, uint64_t family, uint64_t object)
{
	(void)arg;
	return family == 1 && object == 1;
}

/* Recovery hands a member the source's outcomes (recovery.c): a member rebuilt by backfill,
 * which holds the data but not the outcome, answers a retry instead of miscomparing. */
Test(mutate, recovery_carries_compare_and_write_outcomes)
{
	struct tctx src, dst;
	t_open(&src, 16 * MiB);
	t_open(&dst, 16 * MiB);
	uint64_t mis;
	cr_assert_eq(t_write(&src, 1, NULL, 0, 0, 0, 4096, 0x01), 0);
	cr_assert_eq(caw(&src, 77, 1, 0x01, 0x02, &mis), 0);
	/* The destination got the data, as a backfill copies it, but not the outcome. */
	cr_assert_eq(t_write(&dst, 1, NULL, 0, 0, 0, 4096, 0x02), 0);
	cr_assert_eq(caw(&dst, 77, 5, 0x01, 0x02, &mis), BD_ERR_MISCOMPARE,
		     "without the outcome a retry is evaluated again");

	struct bd_idem_done *done = NULL;
	long n = bd_idem_export(src.e, object_1_only, NULL, &done);
	cr_assert_eq(n, 0, "object 0's outcome exported for a PG without it");
	free(done);
	n = bd_idem_export(src.e, all_objects, NULL, &done);
	cr_assert_eq(n, 1);
	cr_assert(done[0].client_id == 77 && done[0].seq == 1 && done[0].family == 1 &&
		  done[0].object == 0);

	bd_idem_import(dst.e, done, (size_t)n);
	cr_assert_eq(bd_engine_commit_batch(dst.e, false), 0);
	free(done);
	cr_assert_eq(caw(&dst, 77, 1, 0x01, 0x03, &mis), 0, "the retry is answered, not applied");
	cr_assert_eq(t_check(&dst, 1, NULL, 0, 0, 0, 4096, 0x02), 0);
	bool found;
	cr_assert_eq(ikeys(&dst, 77, 1, &found), 1);
	cr_assert(found, "the imported outcome is persisted");
	t_reopen(&dst);
	cr_assert_eq(caw(&dst, 77, 1, 0x01, 0x03, &mis), 0, "and answered after a restart");
	cr_assert_eq(t_check(&dst, 1, NULL, 0, 0, 0, 4096, 0x02), 0);
	t_close(&src);
	t_close(&dst);
}
