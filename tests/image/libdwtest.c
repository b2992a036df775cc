/* A tiny shared object for the loader tests (issue 14): mapped, preloaded
 * and dlopen()ed from the image (quiet) and as a dropped copy (drift). With
 * DW_MARKER set, its constructor creates that file: proof that its code ran
 * (protect mode must stop it before). */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void dw_mark(void)
{
	const char *p = getenv("DW_MARKER");
	if (p) {
		int fd = open(p, O_CREAT | O_WRONLY, 0644);
		if (fd >= 0)
			close(fd);
	}
}

int dw_answer(void)
{
	return 42;
}
