/* TCP helpers. Addresses are numeric only: no resolver in the daemons' start-up path. */
#include "common/net.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Parse a decimal port 0..65535 that must end the string. Returns the port or -EINVAL. */
static int parse_port(const char *s)
{
	int port = 0, digits = 0;

	for (; *s >= '0' && *s <= '9'; s++) {
		port = port * 10 + (*s - '0');
		if (++digits > 5 || port > 65535) {
			return -EINVAL;
		}
	}
	if (digits == 0 || *s != '\0') {
		return -EINVAL;
	}
	return port;
}

/* Returns 0 or -EINVAL. "a.b.c.d:port" or "[v6]:port"; port 0 is allowed (listen on any). */
int st_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon, *end;
	size_t hlen;
	int port;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		end = strchr(s, ']');
		if (end == NULL || end[1] != ':') {
			return -EINVAL;
		}
		hlen = (size_t)(end - (s + 1));
		if (hlen == 0 || hlen >= sizeof(host)) {
			return -EINVAL;
		}
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		port = parse_port(end + 2);
		if (port < 0 || inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
			return -EINVAL;
		}
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
		return 0;
	}

	struct sockaddr_in *sin = (struct sockaddr_in *)ss;

	colon = strchr(s, ':');
	if (colon == NULL || strchr(colon + 1, ':') != NULL) {
		return -EINVAL; /* bare IPv6 without brackets is ambiguous */
	}
	hlen = (size_t)(colon - s);
	if (hlen == 0 || hlen >= sizeof(host)) {
		return -EINVAL;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	port = parse_port(colon + 1);
	if (port < 0 || inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
		return -EINVAL;
	}
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	*len = sizeof(*sin);
	return 0;
}

/* Returns a listening fd (blocking, close-on-exec) or -errno. */
int st_tcp_listen(const char *hostport, int backlog)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1, rc;

	rc = st_parse_hostport(hostport, &ss, &len);
	if (rc < 0) {
		return rc;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -errno;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, backlog) < 0) {
		rc = -errno;
		goto close_fd;
	}
	return fd;

close_fd:
	close(fd);
	return rc;
}

/* Returns the local port of a bound socket, or -errno. */
int st_socket_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		return -errno;
	}
	if (ss.ss_family == AF_INET) {
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	if (ss.ss_family == AF_INET6) {
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	return -EAFNOSUPPORT;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Returns a connected, blocking fd with TCP_NODELAY, or -errno (-ETIMEDOUT when timeout_ms
 * runs out; timeout_ms <= 0 waits as long as the kernel does). The connect is made
 * non-blocking only so poll can bound it; EINTR restarts poll with the time that is left.
 */
int st_tcp_connect(const char *hostport, int timeout_ms)
{
	struct sockaddr_storage ss;
	socklen_t len, elen;
	int fd, one = 1, rc, err, flags;
	int64_t deadline = now_ms() + timeout_ms;

	rc = st_parse_hostport(hostport, &ss, &len);
	if (rc < 0) {
		return rc;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		return -errno;
	}
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
		rc = -errno;
		goto close_fd;
	}
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		if (errno != EINPROGRESS) {
			rc = -errno;
			goto close_fd;
		}
		for (;;) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			int wait = -1;

			if (timeout_ms > 0) {
				int64_t left = deadline - now_ms();
				wait = left > 0 ? (int)left : 0;
			}
			rc = poll(&pfd, 1, wait);
			if (rc > 0) {
				break;
			}
			if (rc == 0) {
				rc = -ETIMEDOUT;
				goto close_fd;
			}
			if (errno != EINTR) {
				rc = -errno;
				goto close_fd;
			}
		}
		elen = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0) {
			rc = -errno;
			goto close_fd;
		}
		if (err != 0) {
			rc = -err;
			goto close_fd;
		}
	}
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		rc = -errno;
		goto close_fd;
	}
	return fd;

close_fd:
	close(fd);
	return rc;
}

/*
 * Fills un with the abstract name for ss ("\0strata:HOST:PORT", HOST in inet_ntop form so the
 * listener's getsockname() and a client's parsed address agree). Returns 0, or -EADDRNOTAVAIL
 * for a wildcard address, which names no one host.
 */
static int local_name(const struct sockaddr_storage *ss, struct sockaddr_un *un, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN];
	int port, n;

	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		if (in->sin_addr.s_addr == htonl(INADDR_ANY) ||
		    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)) == NULL) {
			return -EADDRNOTAVAIL;
		}
		port = ntohs(in->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ||
		    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) == NULL) {
			return -EADDRNOTAVAIL;
		}
		port = ntohs(in6->sin6_port);
	} else {
		return -EAFNOSUPPORT;
	}
	/* sun_path[0] stays '\0': the abstract namespace. The name is not NUL-terminated. */
	n = snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, "strata:%s:%d", host, port);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
	return 0;
}

/* A fresh AF_UNIX stream socket, and in un the abstract name for ss. Returns fd or -errno. */
static int local_socket(const struct sockaddr_storage *ss, struct sockaddr_un *un, socklen_t *ulen)
{
	int fd, rc = local_name(ss, un, ulen);

	if (rc < 0) {
		return rc;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return fd < 0 ? -errno : fd;
}

int st_local_listen(int tcp_fd, int backlog)
{
	struct sockaddr_storage ss;
	struct sockaddr_un un;
	socklen_t len = sizeof(ss), ulen;
	int fd, rc;

	if (getsockname(tcp_fd, (struct sockaddr *)&ss, &len) < 0) {
		return -errno;
	}
	fd = local_socket(&ss, &un, &ulen);
	if (fd < 0) {
		return fd;
	}
	if (bind(fd, (struct sockaddr *)&un, ulen) < 0 || listen(fd, backlog) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int st_local_listen_at(const char *hostport, int backlog)
{
	struct sockaddr_storage ss;
	struct sockaddr_un un;
	socklen_t len, ulen;
	int fd, rc;

	rc = st_parse_hostport(hostport, &ss, &len);
	if (rc < 0) {
		return rc;
	}
	fd = local_socket(&ss, &un, &ulen);
	if (fd < 0) {
		return fd;
	}
	if (bind(fd, (struct sockaddr *)&un, ulen) < 0 || listen(fd, backlog) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int st_hostport_is_wildcard(const char *hostport)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int rc = st_parse_hostport(hostport, &ss, &len);

	if (rc < 0) {
		return rc;
	}
	if (ss.ss_family == AF_INET) {
		return ((const struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_ANY);
	}
	return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&ss)->sin6_addr);
}

int st_format_sockaddr(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN];
	int n;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)) == NULL) {
			return -errno;
		}
		n = snprintf(out, cap, "%s:%d", host, ntohs(in->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) == NULL) {
			return -errno;
		}
		n = snprintf(out, cap, "[%s]:%d", host, ntohs(in6->sin6_port));
	} else {
		return -EAFNOSUPPORT;
	}
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int st_local_connect(const char *hostport)
{
	const char *transport = getenv("STRATA_TRANSPORT");
	struct sockaddr_storage ss;
	struct sockaddr_un un;
	socklen_t len, ulen;
	int fd, rc;

	if (transport != NULL && strcmp(transport, "tcp") == 0) {
		return -ENOENT;
	}
	rc = st_parse_hostport(hostport, &ss, &len);
	if (rc < 0) {
		return rc;
	}
	fd = local_socket(&ss, &un, &ulen);
	if (fd < 0) {
		return fd;
	}
	/* A Unix connect never waits for the peer: it succeeds, or fails at once (ECONNREFUSED
	 * when no one has the name, EAGAIN when the backlog is full). */
	if (connect(fd, (struct sockaddr *)&un, ulen) < 0) {
		rc = errno == ECONNREFUSED ? -ENOENT : -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int st_is_local(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	return getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_UNIX;
}

/*
 * Returns 0 or -errno. Uses send(MSG_NOSIGNAL) so a dead peer is -EPIPE rather than SIGPIPE,
 * and falls back to write(2) for pipes and files.
 */
int st_write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	int is_sock = 1;

	while (len > 0) {
		ssize_t n = is_sock ? send(fd, p, len, MSG_NOSIGNAL) : write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			if (errno == ENOTSOCK && is_sock) {
				is_sock = 0;
				continue;
			}
			return -errno;
		}
		if (n == 0) {
			return -EIO;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Returns 0, -ECONNRESET if the peer closed before len bytes arrived, or -errno. */
int st_read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -errno;
		}
		if (n == 0) {
			return -ECONNRESET;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
