/*
 * RPC connections on the reactor, and a blocking client for tools.
 *
 *   st_server --accept--> st_conn --frames--> ops->on_frame(conn, frame)
 *                                  <--st_conn_send(type|REPLY, req_id, status, msg, payload)
 *   st_client: st_conn + a table of outstanding req_id -> (cb, cb_arg), for async callers.
 *   st_rpc_call(): one blocking request/reply on a plain fd (CLI, tests, start-up paths).
 *
 * A frame with a bad magic, crc or length closes only that connection (logged with the peer
 * address and the reason); the server and its other connections carry on.
 * All st_conn/st_server/st_client functions run on the reactor thread.
 */
#ifndef STRATA_COMMON_RPC_H
#define STRATA_COMMON_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "common/frame.h"
#include "common/reactor.h"

struct st_conn;

struct st_conn_ops {
	/* A whole frame arrived. The callee takes ownership of f's buffers (st_frame_release). */
	void (*on_frame)(struct st_conn *c, struct st_frame *f, void *arg);
	/* The connection closed: err is 0 on orderly EOF, else a negative errno. Called once; the
	 * conn is freed right after it returns. */
	void (*on_close)(struct st_conn *c, int err, void *arg);
};

/* Wrap a connected socket. Returns NULL on ENOMEM (fd is then closed). */
struct st_conn *st_conn_new(struct st_reactor *r, int fd, const struct st_conn_ops *ops, void *arg,
			    uint32_t max_payload) __attribute__((nonnull(1, 3)));

/*
 * Queue one frame. msg may be NULL (empty message). payload is referenced, not copied, until
 * the bytes are on the wire; then done(done_arg) runs (also if the connection closes first).
 * Returns 0, or -ENOTCONN if the conn is closing, -ENOMEM, -EMSGSIZE. On an error done does
 * not run: the caller still owns payload.
 */
int st_conn_send(struct st_conn *c, uint16_t type, uint64_t req_id, int32_t status, uint8_t flags,
		 const ProtobufCMessage *msg, const void *payload, size_t payload_len,
		 void (*done)(void *), void *done_arg) __attribute__((nonnull(1)));

/* As st_conn_send, with the message already packed (msg is copied; it may be freed on return). */
int st_conn_send_packed(struct st_conn *c, uint16_t type, uint64_t req_id, int32_t status,
			uint8_t flags, const void *msg, size_t msg_len, const void *payload,
			size_t payload_len, void (*done)(void *), void *done_arg)
	__attribute__((nonnull(1)));

/* Reply with a negative errno and a human-readable message (an ErrorReply body). */
int st_conn_send_error(struct st_conn *c, uint16_t req_type, uint64_t req_id, int32_t status,
		       const char *fmt, ...) __attribute__((nonnull(1, 5), format(printf, 5, 6)));

/*
 * Start an orderly close: stop reading, let frames already queued reach the peer (for at most
 * 10 s), then on_close runs once in-flight I/O has drained. Safe to call from on_frame.
 */
void st_conn_close(struct st_conn *c) __attribute__((nonnull));
const char *st_conn_peer(const struct st_conn *c) __attribute__((nonnull)); /* "127.0.0.1:5555" */
void st_conn_set_arg(struct st_conn *c, void *arg) __attribute__((nonnull(1)));

/* Listening server: each accepted socket becomes an st_conn with these ops. */
struct st_server;
int st_server_start(struct st_reactor *r, const char *hostport, const struct st_conn_ops *ops,
		    void *arg, uint32_t max_payload, struct st_server **out)
	__attribute__((nonnull(1, 2, 3, 6)));
/*
 * Also accept same-host clients on the Unix twin of hostport (common/net.h), an address the
 * server is reached at but did not bind: a wildcard listener's advertised address. Returns 0
 * (also when the twin of the bound address already has that name), or -errno; a server without
 * it still serves over TCP.
 */
int st_server_add_local(struct st_server *s, const char *hostport) __attribute__((nonnull));
int st_server_port(const struct st_server *s) __attribute__((nonnull));
/* Stops accepting; existing conns live on. s is freed on a later loop turn (or by
 * st_reactor_destroy, which also frees a server that was never stopped). */
void st_server_stop(struct st_server *s);

/*
 * Async client. Replies are matched by req_id. cb gets err = 0 or a negative errno (the reply's
 * status, or -ECONNRESET if the connection died first); reply is valid only during cb and may be
 * NULL on error; the callee may steal reply->payload by setting it to NULL.
 */
typedef void (*st_client_cb)(void *cb_arg, int err, struct st_frame *reply);
struct st_client;
int st_client_connect(struct st_reactor *r, const char *hostport, struct st_client **out)
	__attribute__((nonnull));
int st_client_call(struct st_client *cl, uint16_t type, uint8_t flags, const ProtobufCMessage *msg,
		   const void *payload, size_t payload_len, st_client_cb cb, void *cb_arg)
	__attribute__((nonnull(1)));
/*
 * Fails every outstanding call with -ECANCELED (calls already failed by a dead connection got
 * -ECONNRESET), then frees the client. Must be called once for every connected client, also
 * after its connection died or its reactor was destroyed.
 */
void st_client_close(struct st_client *cl);
bool st_client_alive(const struct st_client *cl);

/*
 * Blocking request/reply on fd. On success returns the reply status (0 or negative errno) and
 * fills *reply (release with st_frame_release). On a transport failure returns -errno and
 * *reply is empty. If the status is negative and the body is an ErrorReply, errbuf receives its
 * message.
 */
int st_rpc_call(int fd, uint16_t type, uint8_t flags, const ProtobufCMessage *msg,
		const void *payload, size_t payload_len, struct st_frame *reply, char *errbuf,
		size_t errlen) __attribute__((nonnull(7)));

/* Pack a protobuf message into a malloc'd buffer (NULL msg -> empty). Returns 0 or -ENOMEM. */
int st_pack_msg(const ProtobufCMessage *msg, uint8_t **out, size_t *len)
	__attribute__((nonnull(2, 3)));

#endif
