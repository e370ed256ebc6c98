/*
 * `used` of `strata volume info`: the bytes of data blocks referenced by the volume's own
 * layers (head, snapshots, hidden deleted snapshots; meta names them in VolumeInfo.layers),
 * as stored on the PGs' primaries. Each up blockd answers LAYER_USAGE for the PGs it is the
 * primary of at the map's epoch, so the sum over the up nodes counts each PG once; a block
 * shared by two of the layers (a copy-up) counts once. Inherited data (a clone's parent, what
 * the head reads through its snapshots) is not the volume's own and is not counted; blocks
 * merely unallocated, or explicitly zeroed, take no space and are not counted either.
 *
 * A node that is up in the map but does not answer is left out (the figure is then partial and
 * the caller says so) rather than waited for; a node whose map epoch differs makes the caller
 * read the map again and retry, which settles within a heartbeat or two.
 *
 * On demand, so it costs one index scan of those layers on every node: an admin command, not
 * something `volume ls` does for every volume.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "blockd.pb-c.h"
#include "common/net.h"
#include "common/rpc.h"
#include "internal.h"
#include "meta.pb-c.h"

int cli_layer_usage(const Strata__Meta__ClusterMap *m, uint32_t pool_id, uint64_t family,
		    const uint64_t *layers, size_t nlayers, uint64_t *bytes, uint32_t *missing,
		    char *why, size_t whylen)
{
	*bytes = 0;
	*missing = 0;
	why[0] = '\0';
	int retry = 0;
	for (size_t i = 0; i < m->n_nodes; i++) {
		const Strata__Meta__Node *n = m->nodes[i];
		if (n->state != STRATA__META__NODE_STATE__NODE_UP || nlayers == 0) {
			continue;
		}
		int fd = st_tcp_connect(n->addr, 3000);
		if (fd < 0) {
			/* Up in the map but not answering (about to be marked down): count without
			 * it rather than wait up to 5 s; the caller says the figure is partial. */
			snprintf(why, whylen, "node %u (%s): %s", n->id, n->addr, strerror(-fd));
			(*missing)++;
			continue;
		}
		Strata__Blockd__LayerUsageRequest q = STRATA__BLOCKD__LAYER_USAGE_REQUEST__INIT;
		q.pool_id = pool_id;
		q.family = family;
		q.layers = (uint64_t *)layers;
		q.n_layers = nlayers;
		q.map_epoch = m->epoch;
		struct st_frame reply;
		memset(&reply, 0, sizeof(reply));
		char err[256] = "";
		int rc = st_rpc_call(fd, STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_LAYER_USAGE, 0,
				     &q.base, NULL, 0, &reply, err, sizeof(err));
		close(fd);
		if (rc < 0) {
			st_frame_release(&reply);
		}
		if (rc == -ESTALE || rc == -EAGAIN) {
			/* The node's map is not ours: ask again with a fresh one. */
			snprintf(why, whylen, "node %u: map epoch differs", n->id);
			retry = -EAGAIN;
			continue;
		}
		if (rc < 0) {
			snprintf(why, whylen, "node %u (%s): %s", n->id, n->addr,
				 err[0] ? err : strerror(-rc));
			if (rc == -ECONNRESET || rc == -ECONNREFUSED || rc == -EPIPE) {
				(*missing)++;
				continue;
			}
			return rc;
		}
		Strata__Blockd__LayerUsageReply *r = strata__blockd__layer_usage_reply__unpack(
			NULL, reply.hdr.hdr_len, reply.msg ? reply.msg : (uint8_t *)"");
		st_frame_release(&reply);
		if (r == NULL) {
			snprintf(why, whylen, "node %u: undecodable LAYER_USAGE reply", n->id);
			return -EBADMSG;
		}
		*bytes += r->bytes;
		strata__blockd__layer_usage_reply__free_unpacked(r, NULL);
	}
	return retry;
}
