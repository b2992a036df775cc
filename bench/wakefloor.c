/* wakefloor: sleeps on a timer every INTERVAL_MS milliseconds and does
 * nothing else until SIGINT or SIGTERM. On SIGUSR1 it prints (a line on
 * stdout) how many times it has woken so far, so a caller reads the wakeups
 * of a window together with the CPU of that window.
 *
 *   wakefloor INTERVAL_MS
 *
 * The floor under the agent's CPU per finding: the events thread wakes once
 * per sensor.wake_interval_ms while findings keep coming (the latency bound),
 * and each wakeup costs a timer, a switch out and back in, whatever work it
 * then does. overhead.sh runs this beside a storm without the agent (mode
 * "floor") and reads its CPU from schedstat: the cost of one such wakeup on
 * this host under that storm. Same call as the agent's sleep (ppoll). */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile sig_atomic_t stop, report;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		report = 1;
	else
		stop = 1;
}

int main(int argc, char **argv)
{
	if (argc != 2 || atol(argv[1]) <= 0) {
		fprintf(stderr, "usage: wakefloor INTERVAL_MS\n");
		return 2;
	}
	long ms = atol(argv[1]);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	unsigned long woke = 0;
	while (!stop) {
		/* A signal ends the sleep early (EINTR): that is no timer wakeup. */
		if (ppoll(NULL, 0, &ts, NULL) == 0)
			woke++;
		if (report) {
			report = 0;
			printf("%lu\n", woke);
			fflush(stdout);
		}
	}
	return 0;
}
