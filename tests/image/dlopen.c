/* dwdlopen LIB [SYMBOL]: dlopen() a shared object (issue 14: a library that
 * reaches executable memory without execve), then call SYMBOL if given. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: dwdlopen LIB [SYMBOL]\n");
		return 2;
	}
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h) {
		fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
		return 1;
	}
	if (argc > 2) {
		int (*f)(void) = (int (*)(void))dlsym(h, argv[2]);
		if (!f) {
			fprintf(stderr, "dlsym %s: %s\n", argv[2], dlerror());
			return 1;
		}
		printf("%s=%d\n", argv[2], f());
	} else {
		printf("loaded\n");
	}
	return 0;
}
