/* openstorm: open()+read()+close() one small file N times and print the wall
 * time and the CPU time (user+sys) in seconds on stdout. driftwatch attaches
 * only to exec/fork/exit tracepoints, so this is the control: its overhead
 * should be noise.
 *
 *   openstorm N FILE */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* utime+stime of this process and its reaped children: the workload's own CPU,
 * including what the eBPF programs cost in its context (they run in the
 * workload's syscalls), but not time lost waiting for a CPU. */
static double cpu_seconds(void)
{
	struct rusage self, kids;
	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	return self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec + kids.ru_stime.tv_sec +
	       (self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: openstorm N FILE\n");
		return 2;
	}
	long n = strtol(argv[1], NULL, 10);
	char buf[4096];
	struct timespec t0, t1;
	double c0 = cpu_seconds();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		int fd = open(argv[2], O_RDONLY);
		if (fd < 0 || read(fd, buf, sizeof(buf)) < 0) {
			fprintf(stderr, "openstorm: %s: %s\n", argv[2], strerror(errno));
			return 2;
		}
		close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.6f %.6f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, cpu_seconds() - c0);
	return 0;
}
