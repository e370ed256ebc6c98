/* TCP helpers: "HOST:PORT" parsing, listening and connecting sockets. */
#ifndef STRATA_COMMON_NET_H
#define STRATA_COMMON_NET_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

/* Parse "127.0.0.1:7700" (IPv4, or "[::1]:7700"). Returns 0 or -EINVAL. */
int st_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
	__attribute__((nonnull));

/* 1 when hostport names no one host (0.0.0.0 or [::]), 0 when it does, -EINVAL if malformed. */
int st_hostport_is_wildcard(const char *hostport) __attribute__((nonnull));

/* "HOST:PORT" (IPv4) or "[HOST]:PORT" (IPv6) for ss. Returns 0 or -errno. */
int st_format_sockaddr(const struct sockaddr_storage *ss, char *out, size_t cap)
	__attribute__((nonnull));

/* Listening socket with SO_REUSEADDR, non-blocking off. Returns fd or -errno. */
int st_tcp_listen(const char *hostport, int backlog) __attribute__((nonnull));

/* The port a bound socket got (for tests that listen on :0). */
int st_socket_port(int fd);

/* Blocking connect with TCP_NODELAY; timeout_ms bounds the connect. Returns fd or -errno. */
int st_tcp_connect(const char *hostport, int timeout_ms) __attribute__((nonnull));

/*
 * Same-host fast path. A TCP listener bound to a specific address gets a twin: an abstract
 * AF_UNIX socket named "strata:HOST:PORT" after that address. Abstract names live in the
 * network namespace, so a client that finds the twin is on the host (and in the namespace) that
 * owns HOST:PORT; it then talks over the Unix socket, which costs the kernel about half of what
 * a loopback TCP round trip costs. Setting STRATA_TRANSPORT=tcp in a client's environment turns
 * the fast path off.
 */
/* Returns a listening fd for tcp_fd's twin, -EADDRNOTAVAIL for a wildcard address, or -errno. */
int st_local_listen(int tcp_fd, int backlog);
/*
 * A twin named after hostport rather than after a bound socket: for a daemon that listens on a
 * wildcard address and advertises a specific one (strata-blockd --advertise), so that same-host
 * clients dialing the advertised address still find it. Returns a listening fd, -EADDRNOTAVAIL
 * for a wildcard hostport, or -errno.
 */
int st_local_listen_at(const char *hostport, int backlog) __attribute__((nonnull));
/* Returns a connected blocking fd, or -errno (-ENOENT: no twin, or the fast path is off). */
int st_local_connect(const char *hostport) __attribute__((nonnull));
/* True when fd is an AF_UNIX socket. */
int st_is_local(int fd);

/* Full-length blocking I/O helpers. Return 0, or -errno (-ECONNRESET on EOF). */
int st_write_full(int fd, const void *buf, size_t len) __attribute__((nonnull));
int st_read_full(int fd, void *buf, size_t len) __attribute__((nonnull));

#endif
