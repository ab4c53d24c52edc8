/* Guest-side helper for bench-virtiofs-guest: file create + stat + unlink cycles per second. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * Built static without GLib on purpose: it runs in the benchmark guest's initramfs world,
 * which has no shared libraries of its own.
 * usage: vfs-meta-bench DIR SECONDS   prints "META <cycles per second>"
 */

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIR SECONDS\n", argv[0]);
        return 2;
    }
    int dir = open(argv[1], O_RDONLY | O_DIRECTORY);
    double seconds = atof(argv[2]);
    if (dir < 0 || seconds <= 0) {
        perror(argv[1]);
        return 1;
    }
    double start = now();
    double end = start + seconds;
    unsigned long cycles = 0;
    char name[32];

    while (now() < end) {
        for (int i = 0; i < 16; i++) {
            struct stat st;
            snprintf(name, sizeof(name), "m%lu", cycles);
            int fd = openat(dir, name, O_CREAT | O_EXCL | O_WRONLY, 0644);
            if (fd < 0 || close(fd) < 0 || fstatat(dir, name, &st, 0) < 0 ||
                unlinkat(dir, name, 0) < 0) {
                perror(name);
                return 1;
            }
            cycles++;
        }
    }
    printf("META %.1f\n", (double)cycles / (now() - start));
    return 0;
}
