/* Tiny static binary that is a regular file (not a busybox symlink). */
#include <stdio.h>
int main(void) {
    puts("hello");
    return 0;
}
