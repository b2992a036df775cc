/* getppidstorm: N getppid() system calls, then the wall time and the CPU
 * time (user+sys) in seconds on stdout.
 *
 *   getppidstorm N
 *
 * The control for the tax on syscalls no sensor needs: any syscall
 * tracepoint sends every syscall of the node through the kernel's slower
 * traced path, and a program on the raw sys_exit tracepoint runs for each. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void)
{
	struct rusage self;
	getrusage(RUSAGE_SELF, &self);
	return self.ru_utime.tv_sec + self.ru_stime.tv_sec + (self.ru_utime.tv_usec + self.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: getppidstorm N\n");
		return 2;
	}
	long n = strtol(argv[1], NULL, 10);
	struct timespec t0, t1;
	double c0 = cpu_seconds();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid); /* not glibc's getppid(): no caching, always a syscall */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.6f %.6f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, cpu_seconds() - c0);
	return 0;
}
