/* memexec FILE [ARGS...]
 * Copies FILE into an anonymous memfd ("payload", MFD_CLOEXEC) and fexecve()s it
 * with argv = [FILE, ARGS...]. Used to exercise fileless-execution detection.
 * Built static so it runs in the busybox-only test image. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: memexec FILE [ARGS...]\n");
        return 2;
    }
    int src = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (src < 0) {
        fprintf(stderr, "memexec: open %s: %s\n", argv[1], strerror(errno));
        return 127;
    }
    int mfd = (int)syscall(SYS_memfd_create, "payload", MFD_CLOEXEC);
    if (mfd < 0) {
        fprintf(stderr, "memexec: memfd_create: %s\n", strerror(errno));
        return 127;
    }
    char buf[65536];
    for (;;) {
        ssize_t n = read(src, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "memexec: read: %s\n", strerror(errno));
            return 127;
        }
        if (n == 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(mfd, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR) continue;
                fprintf(stderr, "memexec: write: %s\n", strerror(errno));
                return 127;
            }
            off += w;
        }
    }
    close(src);
    /* argv[1..] becomes the new program's argv; argv[0] stays the source path so
     * multi-call binaries such as busybox pick the right applet by basename. */
    fexecve(mfd, argv + 1, environ);
    fprintf(stderr, "memexec: fexecve: %s\n", strerror(errno));
    return 127;
}
