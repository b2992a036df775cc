/* maptool anon | mprotect FILE (issue 14):
 *   anon      executable anonymous memory, as a JIT makes it: not drift;
 *   mprotect  map FILE readable, then add PROT_EXEC with mprotect(). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "anon") == 0) {
		unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return perror("mmap"), 1;
		p[0] = 0xc3; /* ret */
		if (mprotect(p, 4096, PROT_READ | PROT_EXEC))
			return perror("mprotect"), 1;
		void *rwx = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (rwx == MAP_FAILED)
			return perror("mmap rwx"), 1;
		((void (*)(void))p)();
		printf("jit ok\n");
		return 0;
	}
	if (argc >= 3 && strcmp(argv[1], "mprotect") == 0) {
		int fd = open(argv[2], O_RDONLY);
		if (fd < 0)
			return perror("open"), 1;
		void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED)
			return perror("mmap"), 1;
		if (mprotect(p, 4096, PROT_READ | PROT_EXEC))
			return perror("mprotect"), 1;
		printf("mprotect ok\n");
		return 0;
	}
	fprintf(stderr, "usage: maptool anon | mprotect FILE\n");
	return 2;
}
