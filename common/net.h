/* TCP helpers: "HOST:PORT" parsing, listening and connecting sockets. */
#ifndef STRATA_COMMON_NET_H
#define STRATA_COMMON_NET_H

#include <stdint.h>
#include <netinet/in.h>

/* Parse "127.0.0.1:7700" (IPv4, or "[::1]:7700"). Returns 0 or -EINVAL. */
int st_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
	__attribute__((nonnull));

/* Listening socket with SO_REUSEADDR, non-blocking off. Returns fd or -errno. */
int st_tcp_listen(const char *hostport, int backlog) __attribute__((nonnull));

/* The port a bound socket got (for tests that listen on :0). */
int st_socket_port(int fd);

/* Blocking connect with TCP_NODELAY; timeout_ms bounds the connect. Returns fd or -errno. */
int st_tcp_connect(const char *hostport, int timeout_ms) __attribute__((nonnull));

/* Full-length blocking I/O helpers. Return 0, or -errno (-ECONNRESET on EOF). */
int st_write_full(int fd, const void *buf, size_t len) __attribute__((nonnull));
int st_read_full(int fd, void *buf, size_t len) __attribute__((nonnull));

#endif
