/* execstorm: fork+exec a program N times, one at a time, and print the wall time
 * and the CPU time (this process + children, user+sys) in seconds on stdout.
 *
 *   execstorm [-t PID] [-q] N PROG [ARG...]
 *
 * -q sends the children's stdout to /dev/null (programs that print, e.g. the
 * test image's dynamically linked hello-dyn).
 * -t PID joins PID's pid and mount namespaces first (like runc exec, minus the
 * seccomp/capability setup), so every child is a container process that runs
 * PROG from the container's root. Why not run this binary inside the container
 * with runc exec: it would be a non-image executable, i.e. drift, and driftwatch
 * marks the children of a drifted process (ancestor drift) as interesting, so
 * even /bin/true would reach userspace. Entering from the host keeps the parent
 * untracked, like an image binary (make, sh) that runs many commands.
 * The caller moves this process into the container's cgroups beforehand.
 *
 * Built with gcc -static so it needs nothing from the host at run time. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "execstorm: %s: %s\n", what, strerror(errno));
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
	const char *target = NULL;
	int opt, quiet = 0;
	while ((opt = getopt(argc, argv, "+t:q")) != -1) {
		if (opt == 't')
			target = optarg;
		else if (opt == 'q')
			quiet = 1;
		else
			return 2;
	}
	if (argc - optind < 2) {
		fprintf(stderr, "usage: execstorm [-t PID] [-q] N PROG [ARG...]\n");
		return 2;
	}
	long n = strtol(argv[optind], NULL, 10);
	char **child_argv = &argv[optind + 1];
	char *envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };

	if (target) {
		/* Open both before entering the mount namespace: /proc changes under us. */
		int pidns = open_ns(target, "pid"), mntns = open_ns(target, "mnt");
		if (setns(pidns, CLONE_NEWPID)) /* applies to our children */
			die("setns pid");
		if (setns(mntns, CLONE_NEWNS)) /* also moves our root and cwd to the container's */
			die("setns mnt");
		close(pidns);
		close(mntns);
	}

	int devnull = quiet ? open("/dev/null", O_WRONLY | O_CLOEXEC) : -1;
	if (quiet && devnull < 0)
		die("/dev/null");

	struct timespec t0, t1;
	double c0 = cpu_seconds();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long failed = 0;
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			if (quiet && dup2(devnull, 1) < 0)
				_exit(126);
			execve(child_argv[0], child_argv, envp);
			_exit(127);
		}
		int status;
		while (waitpid(pid, &status, 0) < 0)
			if (errno != EINTR)
				die("waitpid");
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.6f %.6f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, cpu_seconds() - c0);
	if (failed) {
		fprintf(stderr, "execstorm: %ld of %ld children failed (e.g. %s missing?)\n", failed, n,
			child_argv[0]);
		return 1;
	}
	return 0;
}
