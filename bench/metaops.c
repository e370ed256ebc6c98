/*
 * metaops: latency of metadata operations on strata-meta over loopback.
 *
 * For a 1 GiB and a 1 TiB thin volume in a fresh pool, time COUNT snapshot creates, then
 * COUNT clone creates of the first snapshot, each one blocking request/reply (so every sample
 * includes meta's synced RocksDB write). Both sizes must give the same figures within noise:
 * these operations are O(1) in the volume size.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/flags.h"
#include "common/net.h"
#include "common/rpc.h"
#include "internal.h"
#include "meta.pb-c.h"

#define MT(x) STRATA__META__META_MSG_TYPE__META_##x

static int rpc(int fd, uint16_t type, const ProtobufCMessage *m, const char *what)
{
	struct st_frame reply;
	char err[512] = "";
	int rc = st_rpc_call(fd, type, 0, m, NULL, 0, &reply, err, sizeof(err));
	if (rc == 0) {
		st_frame_release(&reply);
		return 0;
	}
	fprintf(stderr, "strata-bench: %s: %s\n", what, err[0] ? err : strerror(-rc));
	return rc;
}

static void report(const char *op, const char *vol, double *s, size_t n, int json, int *first)
{
	struct bench_stats st;
	bench_stats_compute(s, n, &st);
	if (json) {
		printf("%s{\"op\":\"%s\",\"volume\":\"%s\",\"count\":%zu,\"median_us\":%.1f,"
		       "\"p99_us\":%.1f,\"mean_us\":%.1f,\"min_us\":%.1f,\"max_us\":%.1f}",
		       *first ? "" : ",", op, vol, st.n, st.median_us, st.p99_us, st.mean_us,
		       st.min_us, st.max_us);
		*first = 0;
	} else {
		printf("%-16s %-6s %6zu %10.3f %10.3f %10.3f %10.3f\n", op, vol, st.n,
		       st.median_us / 1000, st.p99_us / 1000, st.mean_us / 1000, st.max_us / 1000);
	}
}

int bench_metaops(int argc, char **argv)
{
	const char *meta = getenv("STRATA_META");
	int64_t count = 1000;
	bool json = false, keep = false;
	int npos = 0;
	const struct st_flag flags[] = {
		{"meta", ST_FLAG_STRING, &meta, "HOST:PORT",
		 "strata-meta address (else $STRATA_META, else 127.0.0.1:7700)"},
		{"count", ST_FLAG_INT, &count, "N", "operations per measurement (default 1000)"},
		{"json", ST_FLAG_BOOL, &json, NULL, "print JSON"},
		{"keep", ST_FLAG_BOOL, &keep, NULL, "leave the bench pool's volumes in place"},
		{NULL, 0, NULL, NULL, NULL},
	};
	int rc = st_flags_parse("strata-bench metaops [--meta HOST:PORT] [--count N] [--json]",
				flags, argc, argv, &npos);
	if (rc != 0) {
		return rc > 0 ? 0 : 2;
	}
	if (meta == NULL || meta[0] == '\0') {
		meta = "127.0.0.1:7700";
	}
	if (count < 1 || count > 1000000 || npos != 0) {
		fprintf(stderr, "strata-bench: --count must be 1 to 1000000\n");
		return 2;
	}
	int fd = st_tcp_connect(meta, 3000);
	if (fd < 0) {
		fprintf(stderr, "strata-bench: cannot reach strata-meta at %s: %s\n", meta,
			strerror(-fd));
		return 1;
	}
	double *samples = calloc((size_t)count, sizeof(double));
	if (samples == NULL) {
		close(fd);
		return 1;
	}
	char pool[64];
	snprintf(pool, sizeof(pool), "bench-%d-%ld", (int)getpid(), (long)bench_now_us());
	Strata__Meta__PoolCreateReq pc = STRATA__META__POOL_CREATE_REQ__INIT;
	pc.name = pool;
	pc.replicas = 1;
	int status = 1, first = 1;
	if (rpc(fd, MT(POOL_CREATE), &pc.base, "pool create") < 0) {
		goto out;
	}
	if (json) {
		printf("{\"scenario\":\"metaops\",\"meta\":\"%s\",\"results\":[", meta);
	} else {
		printf("metaops: %lld operations each, meta %s, pool %s\n", (long long)count, meta,
		       pool);
		printf("%-16s %-6s %6s %10s %10s %10s %10s\n", "OPERATION", "VOLUME", "COUNT",
		       "MEDIAN_MS", "P99_MS", "MEAN_MS", "MAX_MS");
	}
	static const struct {
		const char *label;
		uint64_t size;
	} vols[] = {{"1GiB", 1ull << 30}, {"1TiB", 1ull << 40}};
	for (size_t vi = 0; vi < 2; vi++) {
		char vname[32], sname[32], cname[48];
		snprintf(vname, sizeof(vname), "vol-%s", vols[vi].label);
		Strata__Meta__VolumeCreateReq vc = STRATA__META__VOLUME_CREATE_REQ__INIT;
		vc.pool = pool;
		vc.name = vname;
		vc.size = vols[vi].size;
		if (rpc(fd, MT(VOLUME_CREATE), &vc.base, "volume create") < 0) {
			goto out;
		}
		Strata__Meta__VolumeRef ref = STRATA__META__VOLUME_REF__INIT;
		ref.pool = pool;
		ref.name = vname;
		ref.snap = sname;
		for (int64_t i = 0; i < count; i++) {
			snprintf(sname, sizeof(sname), "s%lld", (long long)i);
			double t0 = bench_now_us();
			if (rpc(fd, MT(SNAP_CREATE), &ref.base, "snap create") < 0) {
				goto out;
			}
			samples[i] = bench_now_us() - t0;
		}
		report("snapshot-create", vols[vi].label, samples, (size_t)count, json, &first);
		Strata__Meta__CloneReq cr = STRATA__META__CLONE_REQ__INIT;
		cr.pool = pool;
		cr.name = vname;
		cr.snap = "s0";
		cr.dst_pool = pool;
		cr.dst_name = cname;
		for (int64_t i = 0; i < count; i++) {
			snprintf(cname, sizeof(cname), "clone-%s-%lld", vols[vi].label,
				 (long long)i);
			double t0 = bench_now_us();
			if (rpc(fd, MT(CLONE), &cr.base, "clone") < 0) {
				goto out;
			}
			samples[i] = bench_now_us() - t0;
		}
		report("clone-create", vols[vi].label, samples, (size_t)count, json, &first);
		if (!keep) {
			Strata__Meta__VolumeRef rm = STRATA__META__VOLUME_REF__INIT;
			rm.pool = pool;
			rm.name = cname;
			for (int64_t i = 0; i < count; i++) {
				snprintf(cname, sizeof(cname), "clone-%s-%lld", vols[vi].label,
					 (long long)i);
				if (rpc(fd, MT(VOLUME_REMOVE), &rm.base, "clone remove") < 0) {
					goto out;
				}
			}
			rm.name = vname;
			if (rpc(fd, MT(VOLUME_REMOVE), &rm.base, "volume remove") < 0) {
				goto out;
			}
		}
	}
	if (json) {
		printf("]}\n");
	}
	status = 0;
out:
	free(samples);
	close(fd);
	return status;
}
