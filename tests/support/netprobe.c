/* netprobe: the TCP and UDP ends of tests/e2e_quarantine.rs, built static at
 * test time and copied into the test containers (busybox nc has no UDP).
 *
 *   netprobe serve PORT          TCP and UDP on PORT (IPv4 and IPv6): answers "pong"
 *   netprobe tcp HOST PORT MS    connect, send "ping", print the answer; exit 1 when
 *                                nothing comes back within MS milliseconds
 *   netprobe udp HOST PORT MS    the same over UDP
 *   netprobe stream HOST PORT    a UDP datagram every 200 us until a send fails, then
 *                                print the CLOCK_MONOTONIC nanoseconds of that failure
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int die(const char *what)
{
	fprintf(stderr, "netprobe: %s: %s\n", what, strerror(errno));
	return 1;
}

/* HOST PORT as a sockaddr (IPv4 or IPv6 literal). */
static socklen_t addr_of(const char *host, const char *port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(atoi(port));
		return sizeof(*a4);
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(atoi(port));
		return sizeof(*a6);
	}
	fprintf(stderr, "netprobe: %s is not an IP address\n", host);
	exit(2);
}

static int wait_for(int fd, short events, int ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	return poll(&p, 1, ms) == 1 && (p.revents & events);
}

static int client(int type, const char *host, const char *port, int ms)
{
	struct sockaddr_storage ss;
	socklen_t len = addr_of(host, port, &ss);
	char buf[64];
	int fd = socket(ss.ss_family, type | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return die("socket");
	if (connect(fd, (struct sockaddr *)&ss, len) && errno != EINPROGRESS)
		return die("connect");
	if (type == SOCK_STREAM) {
		int err = 0;
		socklen_t el = sizeof(err);
		if (!wait_for(fd, POLLOUT, ms)) {
			fprintf(stderr, "netprobe: connect: no answer in %d ms\n", ms);
			return 1;
		}
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			errno = err;
			return die("connect");
		}
	}
	if (send(fd, "ping", 4, 0) != 4)
		return die("send");
	if (!wait_for(fd, POLLIN, ms)) {
		fprintf(stderr, "netprobe: no answer in %d ms\n", ms);
		return 1;
	}
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return die("recv");
	buf[n] = 0;
	printf("%s\n", buf);
	return 0;
}

static int listener(int type, int port)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any };
	int off = 0, on = 1;
	int fd = socket(AF_INET6, type, 0);
	if (fd < 0)
		exit(die("socket"));
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
		exit(die("bind"));
	if (type == SOCK_STREAM && listen(fd, 64))
		exit(die("listen"));
	return fd;
}

static __attribute__((noreturn)) void serve(int port)
{
	struct pollfd p[2] = { { .fd = listener(SOCK_STREAM, port), .events = POLLIN },
			       { .fd = listener(SOCK_DGRAM, port), .events = POLLIN } };
	char buf[64];
	for (;;) {
		if (poll(p, 2, -1) < 0)
			continue;
		if (p[0].revents & POLLIN) {
			int c = accept(p[0].fd, NULL, NULL);
			if (c >= 0) {
				struct timeval tv = { .tv_sec = 1 };
				setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
				if (recv(c, buf, sizeof(buf), 0) > 0)
					send(c, "pong", 4, MSG_NOSIGNAL);
				close(c);
			}
		}
		if (p[1].revents & POLLIN) {
			struct sockaddr_storage from;
			socklen_t fl = sizeof(from);
			if (recvfrom(p[1].fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl) > 0)
				sendto(p[1].fd, "pong", 4, 0, (struct sockaddr *)&from, fl);
		}
	}
}

static int stream(const char *host, const char *port)
{
	struct sockaddr_storage ss;
	socklen_t len = addr_of(host, port, &ss);
	struct timespec gap = { .tv_nsec = 200000 }, now;
	int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len))
		return die("socket");
	for (long i = 0; i < 30L * 5000; i++) {
		if (send(fd, "tick", 4, 0) != 4) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			printf("%lld %s\n", (long long)now.tv_sec * 1000000000LL + now.tv_nsec, strerror(errno));
			return 0;
		}
		nanosleep(&gap, NULL);
	}
	fprintf(stderr, "netprobe: every send for 30 s went out\n");
	return 1;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 3 && !strcmp(argv[1], "serve"))
		serve(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "tcp"))
		return client(SOCK_STREAM, argv[2], argv[3], atoi(argv[4]));
	if (argc == 5 && !strcmp(argv[1], "udp"))
		return client(SOCK_DGRAM, argv[2], argv[3], atoi(argv[4]));
	if (argc == 4 && !strcmp(argv[1], "stream"))
		return stream(argv[2], argv[3]);
	fprintf(stderr, "usage: netprobe serve PORT | tcp|udp HOST PORT MS | stream HOST PORT\n");
	return 2;
}
