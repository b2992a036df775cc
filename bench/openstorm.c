/* openstorm: open()+read()+close() one small file N times and print the wall
 * time in seconds on stdout. driftwatch attaches only to exec/fork/exit
 * tracepoints, so this is the control: its overhead should be noise.
 *
 *   openstorm N FILE */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: openstorm N FILE\n");
		return 2;
	}
	long n = strtol(argv[1], NULL, 10);
	char buf[4096];
	struct timespec t0, t1;
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
	printf("%.6f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}
