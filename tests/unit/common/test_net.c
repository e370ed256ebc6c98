#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/net.h"

Test(net, parse_ipv4)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;

	cr_assert_eq(st_parse_hostport("127.0.0.1:7700", &ss, &len), 0);
	cr_assert_eq(len, sizeof(struct sockaddr_in));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	cr_assert_eq(sin->sin_family, AF_INET);
	cr_assert_eq(ntohs(sin->sin_port), 7700);
	cr_assert_eq(ntohl(sin->sin_addr.s_addr), 0x7f000001u);

	cr_assert_eq(st_parse_hostport("0.0.0.0:0", &ss, &len), 0);
	cr_assert_eq(st_parse_hostport("10.1.2.3:65535", &ss, &len), 0);
	cr_assert_eq(ntohs(sin->sin_port), 65535);
}

Test(net, parse_ipv6)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;

	cr_assert_eq(st_parse_hostport("[::1]:7700", &ss, &len), 0);
	cr_assert_eq(len, sizeof(struct sockaddr_in6));
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	cr_assert_eq(sin6->sin6_family, AF_INET6);
	cr_assert_eq(ntohs(sin6->sin6_port), 7700);
	cr_assert(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
	cr_assert_eq(st_parse_hostport("[fe80::1:2]:1", &ss, &len), 0);
	cr_assert_eq(st_parse_hostport("[::ffff:10.0.0.1]:80", &ss, &len), 0);
}

Test(net, parse_bad)
{
	static const char *bad[] = {
		"",
		"127.0.0.1",
		"127.0.0.1:",
		":7700",
		"127.0.0.1:65536",
		"127.0.0.1:99999999",
		"127.0.0.1:-1",
		"127.0.0.1:+1",
		"127.0.0.1:77x",
		"127.0.0.1:7700 ",
		"127.0.0.256:7700",
		"127.0.0:7700",
		"localhost:7700",
		"::1:7700",
		"[::1]",
		"[::1]7700",
		"[::1]:",
		"[]:7700",
		"[::1:7700",
		"[127.0.0.1]:7700",
		"[::g]:7700",
		"1.2.3.4:5:6",
	};
	struct sockaddr_storage ss;
	socklen_t len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_expect_eq(st_parse_hostport(bad[i], &ss, &len), -EINVAL, "'%s'", bad[i]);
	}
	cr_expect_eq(st_tcp_listen("nope", 1), -EINVAL);
	cr_expect_eq(st_tcp_connect("nope", 100), -EINVAL);
}

static void exchange(const char *listen_on, const char *connect_fmt)
{
	char addr[64], buf[100000], got[sizeof(buf)];
	int lfd, cfd, sfd, port;

	lfd = st_tcp_listen(listen_on, 16);
	if (lfd == -EAFNOSUPPORT || lfd == -EADDRNOTAVAIL) {
		cr_skip_test("%s not available here", listen_on);
	}
	cr_assert_geq(lfd, 0, "listen: %s", strerror(-lfd));
	port = st_socket_port(lfd);
	cr_assert_gt(port, 0);

	snprintf(addr, sizeof(addr), connect_fmt, port);
	cfd = st_tcp_connect(addr, 2000);
	cr_assert_geq(cfd, 0, "connect: %s", strerror(-cfd));
	sfd = accept(lfd, NULL, NULL);
	cr_assert_geq(sfd, 0);

	/* Bigger than a socket buffer would hold in one go on some systems, so the loops loop. */
	for (size_t i = 0; i < sizeof(buf); i++) {
		buf[i] = (char)(i * 7);
	}
	cr_assert_eq(st_write_full(cfd, "ping", 4), 0);
	cr_assert_eq(st_read_full(sfd, got, 4), 0);
	cr_assert_eq(memcmp(got, "ping", 4), 0);
	cr_assert_eq(st_write_full(sfd, buf, sizeof(buf)), 0);
	cr_assert_eq(st_read_full(cfd, got, sizeof(got)), 0);
	cr_assert_eq(memcmp(got, buf, sizeof(buf)), 0);

	/* EOF before the requested length is -ECONNRESET. */
	cr_assert_eq(st_write_full(sfd, "ab", 2), 0);
	close(sfd);
	cr_assert_eq(st_read_full(cfd, got, 10), -ECONNRESET);

	close(cfd);
	close(lfd);
}

Test(net, listen_connect_exchange_ipv4)
{
	exchange("127.0.0.1:0", "127.0.0.1:%d");
}

Test(net, listen_connect_exchange_ipv6)
{
	exchange("[::1]:0", "[::1]:%d");
}

Test(net, connect_refused)
{
	int lfd = st_tcp_listen("127.0.0.1:0", 1), port, fd;
	char addr[64];

	cr_assert_geq(lfd, 0);
	port = st_socket_port(lfd);
	close(lfd); /* nothing listens on port now */
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	fd = st_tcp_connect(addr, 1000);
	cr_assert_eq(fd, -ECONNREFUSED, "got %d", fd);
}

Test(net, connected_socket_is_blocking_with_nodelay)
{
	int lfd = st_tcp_listen("127.0.0.1:0", 1), fd, one = 0;
	socklen_t len = sizeof(one);
	char addr[64];

	cr_assert_geq(lfd, 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", st_socket_port(lfd));
	fd = st_tcp_connect(addr, 1000);
	cr_assert_geq(fd, 0);
	cr_assert_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, &len), 0);
	cr_assert_neq(one, 0);
	cr_assert_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	close(fd);
	close(lfd);
}

Test(net, listen_twice_reuseaddr_still_conflicts)
{
	int a = st_tcp_listen("127.0.0.1:0", 1), b;
	char addr[64];

	cr_assert_geq(a, 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", st_socket_port(a));
	b = st_tcp_listen(addr, 1);
	cr_assert_eq(b, -EADDRINUSE);
	close(a);
}

Test(net, write_to_pipe_and_closed_peer)
{
	int p[2];
	char got[5];

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(st_write_full(p[1], "hello", 5), 0);
	cr_assert_eq(st_read_full(p[0], got, 5), 0);
	cr_assert_eq(memcmp(got, "hello", 5), 0);
	close(p[1]);
	cr_assert_eq(st_read_full(p[0], got, 1), -ECONNRESET);
	close(p[0]);
}

/* The same-host twin: named after the TCP listener's bound address, found by a client that
 * dials that address, absent for wildcard listeners, and off under STRATA_TRANSPORT=tcp. */
Test(net, local_twin_of_a_tcp_listener)
{
	int lfd = st_tcp_listen("127.0.0.1:0", 8);
	cr_assert_geq(lfd, 0);
	int port = st_socket_port(lfd);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);

	cr_assert_eq(st_local_connect(addr), -ENOENT, "no twin yet");
	int ufd = st_local_listen(lfd, 8);
	cr_assert_geq(ufd, 0);
	int cfd = st_local_connect(addr);
	cr_assert_geq(cfd, 0);
	cr_assert(st_is_local(cfd));
	int afd = accept(ufd, NULL, NULL);
	cr_assert_geq(afd, 0);
	cr_assert_eq(st_write_full(cfd, "ping", 4), 0);
	char buf[4];
	cr_assert_eq(st_read_full(afd, buf, 4), 0);
	cr_assert_eq(memcmp(buf, "ping", 4), 0);

	/* Another port's name is not ours. */
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port == 65535 ? 1 : port + 1);
	cr_assert_eq(st_local_connect(addr), -ENOENT);

	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	setenv("STRATA_TRANSPORT", "tcp", 1);
	cr_assert_eq(st_local_connect(addr), -ENOENT, "fast path off");
	unsetenv("STRATA_TRANSPORT");
	int tfd = st_tcp_connect(addr, 1000);
	cr_assert_geq(tfd, 0);
	cr_assert(!st_is_local(tfd));

	close(tfd);
	close(afd);
	close(cfd);
	close(ufd);
	close(lfd);
	cr_assert_eq(st_local_connect(addr), -ENOENT, "the name goes with the socket");
}

/* A socket bound to the wildcard address, never listening: no server on any interface. */
Test(net, no_local_twin_for_a_wildcard_listener)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(st_local_listen(fd, 8), -EADDRNOTAVAIL);
	close(fd);
	cr_assert_eq(st_local_listen_at("0.0.0.0:7800", 8), -EADDRNOTAVAIL);
	cr_assert_eq(st_local_listen_at("[::]:7800", 8), -EADDRNOTAVAIL);
	cr_assert_eq(st_local_listen_at("nohost", 8), -EINVAL);
}

/* A twin named after an address (strata-blockd --advertise) is found by a client dialing it. */
Test(net, local_twin_of_an_advertised_address)
{
	int lfd = st_tcp_listen("127.0.0.1:0", 8);
	cr_assert_geq(lfd, 0);
	char addr[64];
	/* A name no socket is bound to: a port on 127.0.0.9 that nothing here listens on. */
	snprintf(addr, sizeof(addr), "127.0.0.9:%d", st_socket_port(lfd));
	close(lfd);
	cr_assert_eq(st_local_connect(addr), -ENOENT);
	int ufd = st_local_listen_at(addr, 8);
	cr_assert_geq(ufd, 0);
	cr_assert_eq(st_local_listen_at(addr, 8), -EADDRINUSE, "one name, one twin");
	int cfd = st_local_connect(addr);
	cr_assert_geq(cfd, 0);
	cr_assert(st_is_local(cfd));
	close(cfd);
	close(ufd);
	cr_assert_eq(st_local_connect(addr), -ENOENT);
}

Test(net, wildcard_addresses)
{
	cr_assert_eq(st_hostport_is_wildcard("0.0.0.0:7800"), 1);
	cr_assert_eq(st_hostport_is_wildcard("[::]:7800"), 1);
	cr_assert_eq(st_hostport_is_wildcard("127.0.0.1:7800"), 0);
	cr_assert_eq(st_hostport_is_wildcard("10.1.2.3:0"), 0);
	cr_assert_eq(st_hostport_is_wildcard("[::1]:7800"), 0);
	cr_assert_eq(st_hostport_is_wildcard("localhost:7800"), -EINVAL);
	cr_assert_eq(st_hostport_is_wildcard("0.0.0.0"), -EINVAL);
}

Test(net, format_sockaddr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char out[64];

	cr_assert_eq(st_parse_hostport("10.1.2.3:3260", &ss, &len), 0);
	cr_assert_eq(st_format_sockaddr(&ss, out, sizeof(out)), 0);
	cr_assert_str_eq(out, "10.1.2.3:3260");
	cr_assert_eq(st_parse_hostport("[fe80::1]:3260", &ss, &len), 0);
	cr_assert_eq(st_format_sockaddr(&ss, out, sizeof(out)), 0);
	cr_assert_str_eq(out, "[fe80::1]:3260");
	cr_assert_eq(st_format_sockaddr(&ss, out, 8), -ENAMETOOLONG);
}
