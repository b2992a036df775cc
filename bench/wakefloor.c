/* wakefloor: sleeps on a timer every INTERVAL_MS milliseconds and, with
 * BYTES, writes BYTES bytes of text lines to stdout in one write() each time
 * it wakes; nothing else until SIGINT or SIGTERM. On SIGUSR1 it prints (a
 * line on stderr) how many times it has woken so far, the CPU its writes took
 * (ns) and the bytes written, so a caller reads them for a window together
 * with the CPU of that window.
 *
 *   wakefloor INTERVAL_MS [BYTES]
 *
 * The floor under the agent's CPU per finding: the events thread wakes once
 * per sensor.wake_interval_ms while findings keep coming (the latency bound),
 * and each wakeup costs a timer, a switch out and back in, whatever work it
 * then does; and each look writes its findings' lines to stdout in one write,
 * a pipe under a container runtime. overhead.sh runs this beside a storm
 * without the agent (mode "floor"), stdout a pipe copied by cat as the
 * agent's is, and reads its CPU from schedstat: the cost of one wakeup and of
 * a byte written on this host under that storm. Same calls as the agent's
 * (ppoll, write). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop, report;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		report = 1;
	else
		stop = 1;
}

static long long thread_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3 || atol(argv[1]) <= 0 || (argc == 3 && atol(argv[2]) < 0)) {
		fprintf(stderr, "usage: wakefloor INTERVAL_MS [BYTES]\n");
		return 2;
	}
	long ms = atol(argv[1]);
	size_t bytes = argc == 3 ? (size_t)atol(argv[2]) : 0;
	char *buf = NULL;
	if (bytes) {
		buf = malloc(bytes);
		if (!buf)
			return 1;
		/* Lines the length of a finding's (~1.9 KB), so a reader that
		 * splits lines does what it does with the agent's. */
		memset(buf, 'x', bytes);
		for (size_t i = 1900; i < bytes; i += 1900)
			buf[i] = '\n';
		buf[bytes - 1] = '\n';
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	unsigned long woke = 0;
	long long write_ns = 0, written = 0;
	while (!stop) {
		/* A signal ends the sleep early (EINTR): that is no timer wakeup. */
		if (ppoll(NULL, 0, &ts, NULL) == 0) {
			woke++;
			if (bytes) {
				long long t0 = thread_ns();
				size_t off = 0;
				while (off < bytes) {
					ssize_t n = write(1, buf + off, bytes - off);
					if (n < 0 && errno == EINTR)
						continue;
					if (n <= 0)
						return 1;
					off += (size_t)n;
				}
				write_ns += thread_ns() - t0;
				written += (long long)bytes;
			}
		}
		if (report) {
			report = 0;
			fprintf(stderr, "%lu %lld %lld\n", woke, write_ns, written);
		}
	}
	return 0;
}
