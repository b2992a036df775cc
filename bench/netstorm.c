/* netstorm: N rounds of listen() + connect() + UDP bind() on loopback, and
 * print the wall time and the CPU time (user+sys) in seconds on stdout.
 *
 *   netstorm [-t PID] [-p PORTS] N
 *
 * -t PID joins PID's network and mount namespaces first (the caller moves this
 * process into the container's cgroups), so the sockets are a container's and
 * all traffic stays on the container's own loopback. Ports cycle through
 * PORTS distinct values (default 1000) from 20000: the first round of each
 * port reaches userspace, repeats are folded in the kernel.
 *
 * Built with gcc -static. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "netstorm: %s: %s\n", what, strerror(errno));
	exit(2);
}

static int open_ns(const char *pid, const char *ns)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%s/ns/%s", pid, ns);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die(path);
	return fd;
}

static double cpu_seconds(void)
{
	struct rusage r;
	getrusage(RUSAGE_SELF, &r);
	return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
	const char *target = NULL;
	long ports = 1000;
	int opt;
	while ((opt = getopt(argc, argv, "t:p:")) != -1) {
		if (opt == 't')
			target = optarg;
		else if (opt == 'p')
			ports = strtol(optarg, NULL, 10);
		else
			return 2;
	}
	if (argc - optind < 1 || ports < 1) {
		fprintf(stderr, "usage: netstorm [-t PID] [-p PORTS] N\n");
		return 2;
	}
	long n = strtol(argv[optind], NULL, 10);
	if (target) {
		int netns = open_ns(target, "net"), mntns = open_ns(target, "mnt");
		if (setns(netns, CLONE_NEWNET))
			die("setns net");
		if (setns(mntns, CLONE_NEWNS))
			die("setns mnt");
		close(netns);
		close(mntns);
	}
	/* A fresh network namespace may have lo down: bring it up is not our job;
	 * connect() and bind() still run their syscalls, which is what we measure. */
	struct timespec t0, t1;
	double c0 = cpu_seconds();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(20000 + i % ports)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int s = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, (struct sockaddr *)&a, sizeof(a)) == 0)
			listen(s, 1);
		close(s);
		s = socket(AF_INET, SOCK_STREAM, 0);
		connect(s, (struct sockaddr *)&a, sizeof(a)); /* refused: nothing listens */
		close(s);
		s = socket(AF_INET, SOCK_DGRAM, 0);
		bind(s, (struct sockaddr *)&a, sizeof(a));
		close(s);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.6f %.6f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, cpu_seconds() - c0);
	return 0;
}
