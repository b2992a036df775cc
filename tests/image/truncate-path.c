/* truncate(2) by path: busybox's truncate applet opens the file and calls
 * ftruncate, so the path-only syscall needs its own tool. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: truncate-path PATH LENGTH\n");
        return 2;
    }
    if (truncate(argv[1], atol(argv[2])) != 0) {
        perror("truncate");
        return 1;
    }
    return 0;
}
