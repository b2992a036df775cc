/* openstorm: N rounds of open()+read()+close() of one small file, or with -w
 * of open(O_WRONLY|O_CREAT|O_TRUNC)+write()+close() cycling through FILES
 * distinct names in DIR, and print the wall time and the CPU time (user+sys)
 * in seconds on stdout.
 *
 *   openstorm [-t PID] N FILE              read-heavy
 *   openstorm [-t PID] -w [-f FILES] N DIR write-heavy
 *
 * -t PID joins PID's mount namespace first (the caller moves this process
 * into the container's cgroups), so the files are the container's. Reads must
 * cost nothing noticeable; writes pay the file sensor (write opens are folded
 * per file in the kernel, so only the first round of each name is an event). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void)
{
	struct rusage self;
	getrusage(RUSAGE_SELF, &self);
	return self.ru_utime.tv_sec + self.ru_stime.tv_sec + (self.ru_utime.tv_usec + self.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what)
{
	fprintf(stderr, "openstorm: %s: %s\n", what, strerror(errno));
	exit(2);
}

int main(int argc, char **argv)
{
	const char *target = NULL;
	int write_mode = 0;
	long files = 1000;
	int opt;
	while ((opt = getopt(argc, argv, "t:wf:")) != -1) {
		if (opt == 't')
			target = optarg;
		else if (opt == 'w')
			write_mode = 1;
		else if (opt == 'f')
			files = strtol(optarg, NULL, 10);
		else
			return 2;
	}
	if (argc - optind != 2 || files < 1) {
		fprintf(stderr, "usage: openstorm [-t PID] [-w [-f FILES]] N FILE|DIR\n");
		return 2;
	}
	long n = strtol(argv[optind], NULL, 10);
	const char *arg = argv[optind + 1];
	if (target) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%s/ns/mnt", target);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNS))
			die(path);
		close(fd);
	}
	char buf[4096] = "driftwatch";
	char name[512];
	struct timespec t0, t1;
	double c0 = cpu_seconds();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		if (write_mode) {
			snprintf(name, sizeof(name), "%s/f%ld", arg, i % files);
			int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (fd < 0 || write(fd, buf, 100) < 0)
				die(name);
			close(fd);
		} else {
			int fd = open(arg, O_RDONLY);
			if (fd < 0 || read(fd, buf, sizeof(buf)) < 0)
				die(arg);
			close(fd);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.6f %.6f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, cpu_seconds() - c0);
	return 0;
}
