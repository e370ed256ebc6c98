/* Blocking catalog calls to strata-meta for the scenarios that build volumes, snapshots and
 * clones. Metadata only: none of these touch data. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/net.h"
#include "common/rpc.h"
#include "internal.h"
#include "meta.pb-c.h"

#define MT(x) STRATA__META__META_MSG_TYPE__META_##x

static int call(int fd, uint16_t type, const ProtobufCMessage *m, const char *what,
		const char *name)
{
	struct st_frame reply;
	char err[512] = "";
	int rc = st_rpc_call(fd, type, 0, m, NULL, 0, &reply, err, sizeof(err));
	if (rc == 0) {
		st_frame_release(&reply);
		return 0;
	}
	fprintf(stderr, "strata-bench: %s %s: %s\n", what, name, err[0] ? err : strerror(-rc));
	return rc;
}

/* Returns a connected fd or a negative errno. */
int bench_meta_connect(const char *meta)
{
	int fd = st_tcp_connect(meta, 3000);
	if (fd < 0) {
		fprintf(stderr, "strata-bench: cannot reach strata-meta at %s: %s\n", meta,
			strerror(-fd));
	}
	return fd;
}

int bench_meta_pool_create(int fd, const char *pool, int replicas)
{
	Strata__Meta__PoolCreateReq r = STRATA__META__POOL_CREATE_REQ__INIT;
	r.name = (char *)pool;
	r.replicas = (uint32_t)replicas;
	return call(fd, MT(POOL_CREATE), &r.base, "pool create", pool);
}

int bench_meta_volume_create(int fd, const char *pool, const char *name, uint64_t size)
{
	Strata__Meta__VolumeCreateReq r = STRATA__META__VOLUME_CREATE_REQ__INIT;
	r.pool = (char *)pool;
	r.name = (char *)name;
	r.size = size;
	return call(fd, MT(VOLUME_CREATE), &r.base, "volume create", name);
}

int bench_meta_volume_remove(int fd, const char *pool, const char *name)
{
	Strata__Meta__VolumeRef r = STRATA__META__VOLUME_REF__INIT;
	r.pool = (char *)pool;
	r.name = (char *)name;
	return call(fd, MT(VOLUME_REMOVE), &r.base, "volume remove", name);
}

int bench_meta_snap_create(int fd, const char *pool, const char *name, const char *snap)
{
	Strata__Meta__VolumeRef r = STRATA__META__VOLUME_REF__INIT;
	r.pool = (char *)pool;
	r.name = (char *)name;
	r.snap = (char *)snap;
	return call(fd, MT(SNAP_CREATE), &r.base, "snapshot create", name);
}

int bench_meta_clone(int fd, const char *pool, const char *name, const char *snap, const char *dst)
{
	Strata__Meta__CloneReq r = STRATA__META__CLONE_REQ__INIT;
	r.pool = (char *)pool;
	r.name = (char *)name;
	r.snap = (char *)snap;
	r.dst_pool = (char *)pool;
	r.dst_name = (char *)dst;
	return call(fd, MT(CLONE), &r.base, "clone", dst);
}

int bench_meta_template_set(int fd, const char *pool, const char *name)
{
	Strata__Meta__TemplateSetReq r = STRATA__META__TEMPLATE_SET_REQ__INIT;
	r.pool = (char *)pool;
	r.name = (char *)name;
	r.mark = true;
	return call(fd, MT(TEMPLATE_SET), &r.base, "template set", name);
}
