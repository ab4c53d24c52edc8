/*
 * hold-at-exit: runs a program under ptrace and holds it at its exit for a while, so that tests
 * get a process that survives SIGKILL for a few seconds (its pidfd stays unreadable until the
 * hold ends), as a process stuck in the kernel would.
 *
 *   hold-at-exit [--hold-ms N] [--ready-fd FD] -- PROGRAM [ARGS...]
 *   hold-at-exit [--hold-ms N] [--ready-fd FD] --attach PID
 *
 * The child seizes nothing itself: it waits on a pipe until this process has PTRACE_SEIZEd it
 * (with PTRACE_O_TRACEEXIT and PTRACE_O_TRACEEXEC), then execs PROGRAM (searched in PATH).
 * Right after the exec, the tracee's pid is printed on stdout as one line (and, with
 * --ready-fd, the same line is written to FD, which is then closed). Signals sent to the
 * tracee are passed on to it; group stops keep their job-control meaning (PTRACE_LISTEN).
 * When the tracee reaches its exit stop (PTRACE_EVENT_EXIT: it exits or was killed, SIGKILL
 * included), it is held there --hold-ms milliseconds (default 3000), then released and reaped.
 * Only the main thread is traced: a multi-threaded program (QEMU) loses its other threads at
 * once, but the process does not end before its main thread does.
 *
 * With --attach PID, a running process (say a QEMU that berthd started, so that berthd stays
 * its parent and watches it) is seized instead (PTRACE_SEIZE with PTRACE_O_TRACEEXIT, which
 * does not stop it); its pid is printed once it is seized. The exit code is then the tracee's
 * as the tracer sees it (its real parent reaps it).
 *
 * Exit status: the tracee's exit code, 128 + signal if a signal ended it, 127 if PROGRAM could
 * not be run, 125 on a usage or ptrace error.
 *
 * In the build: tests/helpers/meson.build defines hold_at_exit_exe; tests that need it get its
 * path in the environment variable HOLD_AT_EXIT.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void
usage(void)
{
    fprintf(stderr, "usage: hold-at-exit [--hold-ms N] [--ready-fd FD] -- PROGRAM [ARGS...]\n"
                    "       hold-at-exit [--hold-ms N] [--ready-fd FD] --attach PID\n");
    exit(125);
}

static long
parse_number(const char *s)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || !end || *end || end == s || v < 0) {
        usage();
    }
    return v;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static pid_t
wait_tracee(pid_t pid, int *status)
{
    pid_t r;

    do {
        r = waitpid(pid, status, __WALL);
    } while (r < 0 && errno == EINTR);
    return r;
}

/* Forks PROGRAM (@argv) seized from its first instruction; its pid, or -1. */
static pid_t
spawn_seized(char **argv, int ready_fd)
{
    int go[2];
    char ch = 0;
    pid_t pid;

    if (pipe2(go, O_CLOEXEC) < 0) {
        perror("hold-at-exit: pipe");
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        perror("hold-at-exit: fork");
        return -1;
    }
    if (pid == 0) {
        close(go[1]);
        if (ready_fd >= 0) {
            close(ready_fd);
        }
        /* Wait until the parent has seized us: EOF on the pipe. */
        while (read(go[0], &ch, 1) < 0 && errno == EINTR) {
        }
        execvp(argv[0], argv);
        fprintf(stderr, "hold-at-exit: cannot run '%s': %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(go[0]);
    if (ptrace(PTRACE_SEIZE, pid, NULL,
               (void *) (long) (PTRACE_O_TRACEEXIT | PTRACE_O_TRACEEXEC)) < 0) {
        perror("hold-at-exit: PTRACE_SEIZE");
        kill(pid, SIGKILL);
        return -1;
    }
    close(go[1]);
    return pid;
}

/* Says the tracee is ready: its pid on stdout and, once, on @ready_fd. */
static void
announce(pid_t pid, int *ready_fd)
{
    char line[32];
    int len = snprintf(line, sizeof line, "%d\n", (int) pid);

    fputs(line, stdout);
    fflush(stdout);
    if (*ready_fd >= 0) {
        if (write(*ready_fd, line, (size_t) len) < 0) {
            perror("hold-at-exit: ready fd");
        }
        close(*ready_fd);
        *ready_fd = -1;
    }
}

int
main(int argc, char **argv)
{
    long hold_ms = 3000;
    long attach = 0;
    int ready_fd = -1;
    int argi = 1;
    int execed = 0;
    pid_t pid = -1;

    for (; argi < argc; argi++) {
        if (strcmp(argv[argi], "--") == 0) {
            argi++;
            break;
        } else if (strcmp(argv[argi], "--hold-ms") == 0 && argi + 1 < argc) {
            hold_ms = parse_number(argv[++argi]);
        } else if (strcmp(argv[argi], "--ready-fd") == 0 && argi + 1 < argc) {
            ready_fd = (int) parse_number(argv[++argi]);
        } else if (strcmp(argv[argi], "--attach") == 0 && argi + 1 < argc) {
            attach = parse_number(argv[++argi]);
        } else {
            usage();
        }
    }
    if (attach > 0) {
        if (argi < argc) {
            usage();
        }
        pid = (pid_t) attach;
        if (ptrace(PTRACE_SEIZE, pid, NULL, (void *) (long) PTRACE_O_TRACEEXIT) < 0) {
            perror("hold-at-exit: PTRACE_SEIZE");
            return 125;
        }
        execed = 1;
        announce(pid, &ready_fd);
    } else if (argi >= argc) {
        usage();
    } else {
        pid = spawn_seized(argv + argi, ready_fd);
        if (pid < 0) {
            return 125;
        }
    }

    for (;;) {
        int status = 0;
        int sig;
        int event;

        if (wait_tracee(pid, &status) < 0) {
            perror("hold-at-exit: waitpid");
            return 125;
        }
        if (WIFEXITED(status)) {
            return WEXITSTATUS(status);
        }
        if (WIFSIGNALED(status)) {
            return 128 + WTERMSIG(status);
        }
        if (!WIFSTOPPED(status)) {
            continue;
        }
        sig = WSTOPSIG(status);
        event = status >> 16;
        if (event == PTRACE_EVENT_EXEC) {
            execed = 1;
            announce(pid, &ready_fd);
            ptrace(PTRACE_CONT, pid, NULL, NULL);
        } else if (event == PTRACE_EVENT_EXIT) {
            if (execed) { /* not when the exec failed */
                sleep_ms(hold_ms);
            }
            ptrace(PTRACE_CONT, pid, NULL, NULL);
        } else if (event == PTRACE_EVENT_STOP) {
            /* A group stop: stay stopped until SIGCONT, as without a tracer. */
            if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
                ptrace(PTRACE_LISTEN, pid, NULL, NULL);
            } else {
                ptrace(PTRACE_CONT, pid, NULL, NULL);
            }
        } else {
            /* A signal on its way to the tracee: deliver it. */
            ptrace(PTRACE_CONT, pid, NULL, (void *) (long) sig);
        }
    }
}
