/*
 * bench-supervise.c: the measuring half of scripts/bench-supervise, compiled
 * by it at run time (gcc -O2). Each mode is one measurement; the bash script
 * runs them for every supervisor, interleaved, and aggregates.
 *
 *   spawntime RUNS CMD...            wall time of fork+exec(CMD) + waitpid,
 *                                    stdio on /dev/null; one line per run (ns)
 *   sigchild FIFO                    (the supervised child) blocks SIGUSR1 and
 *                                    SIGTERM, writes 0 to FIFO when ready, then
 *                                    per SIGUSR1 writes CLOCK_MONOTONIC (ns)
 *                                    right after sigwaitinfo returns
 *   latency N FIFO -- ARGV...        starts ARGV (unshare ... SUP ... sigchild
 *                                    FIFO), finds the namespace's PID 1 (the
 *                                    supervisor), lets it settle (20 ms and one
 *                                    unmeasured signal), sends SIGUSR1 N times,
 *                                    2 ms apart, one at a time; one line per
 *                                    signal: child's timestamp - send
 *                                    timestamp (ns)
 *   touch N FIFO -- ARGV...          started and settled as for latency; the
 *                                    kB of the supervisor's memory that N
 *                                    forwarded signals touch ("Referenced"
 *                                    after clear_refs): code, then all
 *   orphans N FIFO READY             (the supervised child) double-forks N
 *                                    orphans that block reading FIFO, creates
 *                                    READY, and waits for SIGTERM
 *   reap MODE N FIFO READY -- ARGV   starts ARGV (unshare ... SUP ... orphans
 *                                    N FIFO READY); when READY exists it makes
 *                                    all N orphans exit at once (closes the
 *                                    FIFO's only writer) and prints the ns
 *                                    until the kernel has none of them left,
 *                                    i.e. the supervisor reaped them all.
 *                                    MODE "stopped": the supervisor is
 *                                    SIGSTOPped first, the clock starts at its
 *                                    SIGCONT once all N are zombies (reaping
 *                                    alone); MODE "live": the clock starts when
 *                                    the orphans are released (exit + reap)
 *   rss ARGV...                      starts ARGV (unshare ... SUP ... sleep 30),
 *                                    prints the supervisor's VmRSS and RssAnon
 *                                    (kB) after RSS_DELAY_MS (default 500) ms
 *
 * "None left" is read from the host with kill(pid, 0), which succeeds on a
 * zombie and fails with ESRCH once it is reaped; host pids are not reused
 * within a round (the allocator is cyclic).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(long ns) {
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* The kernel's struct sigaction on x86-64, for the raw system call. */
struct ksigaction {
    unsigned long handler, flags, restorer, mask;
};

/* fork + exec with a clean start: empty signal mask and every signal at
   SIG_DFL, set through the raw system calls (glibc will not touch its
   internal signals 32 and 33, and its posix_spawn leaves them SIG_IGN in
   the child, which every descendant would inherit). */
static pid_t spawn(char **argv, int quiet) {
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        unsigned long none = 0;
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
        struct ksigaction dfl = {0, 0, 0, 0};
        for (int sig = 1; sig <= 64; sig++)
            if (sig != SIGKILL && sig != SIGSTOP)
                syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
        if (quiet) {
            int null = open("/dev/null", O_RDWR);
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            if (null > 2)
                close(null);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* The first child of `pid` (unshare's only child: the namespace's PID 1). */
static pid_t first_child(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    int64_t deadline = now_ns() + 5000000000LL;
    for (;;) {
        FILE *f = fopen(path, "r");
        int c = 0;
        if (f) {
            if (fscanf(f, "%d", &c) != 1)
                c = 0;
            fclose(f);
        }
        if (c > 0)
            return c;
        if (now_ns() > deadline) {
            fprintf(stderr, "no child of %d after 5 s\n", pid);
            exit(2);
        }
        sleep_ns(1000000);
    }
}

/* The supervisor's own status line `field` (e.g. "State:"), or "". */
static void status_field(pid_t pid, const char *field, char *out, size_t n) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, strlen(field)) == 0) {
            char *v = line + strlen(field);
            while (*v == ' ' || *v == '\t')
                v++;
            v[strcspn(v, "\n")] = 0;
            snprintf(out, n, "%s", v);
            break;
        }
    }
    fclose(f);
}

/* The supervisor has blocked its signals (so it will not drop a signal sent
   to it as PID 1): SIGUSR2 and SIGWINCH blocked, which unshare never does. */
static void wait_blocked(pid_t pid) {
    char v[64];
    int64_t deadline = now_ns() + 5000000000LL;
    for (;;) {
        status_field(pid, "SigBlk:", v, sizeof v);
        unsigned long long m = strtoull(v, NULL, 16);
        if ((m & (1ULL << (SIGUSR2 - 1))) && (m & (1ULL << (SIGWINCH - 1))))
            return;
        status_field(pid, "SigCgt:", v, sizeof v);
        m = strtoull(v, NULL, 16);
        if (m & (1ULL << (SIGUSR1 - 1)))
            return; /* handler-based supervisors (tini, dumb-init) */
        if (now_ns() > deadline)
            return;
        sleep_ns(1000000);
    }
}

static int wait_exit(pid_t pid, int seconds) {
    int64_t deadline = now_ns() + (int64_t)seconds * 1000000000;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (now_ns() > deadline) {
            kill(pid, SIGKILL); /* unshare --kill-child takes PID 1 with it */
            waitpid(pid, &st, 0);
            return -1;
        }
        sleep_ns(2000000);
    }
}

static int mode_spawntime(int argc, char **argv) {
    if (argc < 2)
        return 64;
    int runs = atoi(argv[0]);
    for (int i = 0; i < runs; i++) {
        int64_t t0 = now_ns();
        pid_t pid = spawn(argv + 1, 1);
        int st;
        waitpid(pid, &st, 0);
        int64_t t1 = now_ns();
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "%s: status %d\n", argv[1], st);
            return 1;
        }
        printf("%lld\n", (long long)(t1 - t0));
    }
    return 0;
}

static int mode_sigchild(int argc, char **argv) {
    if (argc < 1)
        return 64;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int fd = open(argv[0], O_WRONLY);
    if (fd < 0)
        die(argv[0]);
    int64_t zero = 0;
    if (write(fd, &zero, 8) != 8)
        die("write");
    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        int64_t t = now_ns();
        if (sig == SIGUSR1) {
            if (write(fd, &t, 8) != 8)
                die("write");
        } else if (sig > 0) {
            return 0;
        }
    }
}

static int read_ts(int fd, int64_t *ts, int timeout_ms) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1)
        return -1;
    return read(fd, ts, 8) == 8 ? 0 : -1;
}

/* A supervisor forwarding to `sigchild`, started and settled: ARGV started,
   the child ready, the supervisor's signals blocked, then SETTLE_MS for the
   supervisor to finish starting (pgboot gives back its startup pages after
   spawning; a signal sent meanwhile would time that, not forwarding) and
   one signal forwarded unmeasured (whatever a first forward pages in). */
#define SETTLE_MS 20
struct forwarding {
    pid_t top, sup;
    int fd;
    const char *fifo;
};

static int forward_one(struct forwarding *f, int64_t *took) {
    int64_t ts, t0 = now_ns();
    kill(f->sup, SIGUSR1);
    if (read_ts(f->fd, &ts, 2000) != 0)
        return -1;
    *took = ts - t0;
    return 0;
}

/* Reads "N FIFO -- ARGV..." and starts ARGV; 0, or the mode's exit code. */
static int start_forwarding(struct forwarding *f, int *n, int argc, char **argv) {
    if (argc < 4 || strcmp(argv[2], "--") != 0)
        return 64;
    *n = atoi(argv[0]);
    const char *fifo = argv[1];
    argv += 3;
    f->fifo = fifo;
    unlink(fifo);
    if (mkfifo(fifo, 0600) != 0)
        die("mkfifo");
    f->fd = open(fifo, O_RDWR | O_CLOEXEC);
    if (f->fd < 0)
        die(fifo);
    f->top = spawn(argv, 0);
    f->sup = first_child(f->top);
    int64_t ts;
    if (read_ts(f->fd, &ts, 10000) != 0) {
        fprintf(stderr, "the child never became ready\n");
        kill(f->top, SIGKILL);
        return 1;
    }
    wait_blocked(f->sup);
    sleep_ns(SETTLE_MS * 1000000L);
    if (forward_one(f, &ts) != 0) {
        fprintf(stderr, "the warm-up signal was lost\n");
        kill(f->top, SIGKILL);
        return 1;
    }
    sleep_ns(2000000);
    return 0;
}

static void stop_forwarding(struct forwarding *f) {
    kill(f->sup, SIGTERM);
    wait_exit(f->top, 5);
    unlink(f->fifo);
}

static int mode_latency(int argc, char **argv) {
    struct forwarding f;
    int n, rc = start_forwarding(&f, &n, argc, argv);
    if (rc != 0)
        return rc;
    int lost = 0;
    for (int i = 0; i < n; i++) {
        int64_t took;
        if (forward_one(&f, &took) != 0) {
            lost++;
            continue;
        }
        printf("%lld\n", (long long)took);
        sleep_ns(2000000);
    }
    stop_forwarding(&f);
    if (lost)
        fprintf(stderr, "%d signals lost\n", lost);
    return lost ? 1 : 0;
}

/* The supervisor's pages that forwarding touches: its referenced bits are
   cleared (writing 1 to /proc/PID/clear_refs), N signals forwarded, then
   the "Referenced" kB of its smaps summed: code (executable mappings) and
   all. What a signal costs after the kernel has run something else is
   mostly these pages' TLB and cache misses. */
static int mode_touch(int argc, char **argv) {
    struct forwarding f;
    int n, rc = start_forwarding(&f, &n, argc, argv);
    if (rc != 0)
        return rc;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", f.sup);
    int c = open(path, O_WRONLY);
    if (c < 0 || write(c, "1", 1) != 1)
        die(path);
    close(c);
    for (int i = 0; i < n; i++) {
        int64_t took;
        if (forward_one(&f, &took) != 0) {
            fprintf(stderr, "a signal was lost\n");
            stop_forwarding(&f);
            return 1;
        }
        sleep_ns(2000000);
    }
    snprintf(path, sizeof path, "/proc/%d/smaps", f.sup);
    FILE *sm = fopen(path, "r");
    if (!sm)
        die(path);
    char line[512], perms[8] = "";
    long code = 0, all = 0;
    while (fgets(line, sizeof line, sm)) {
        unsigned long a, b;
        long kb;
        if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3)
            continue;
        if (sscanf(line, "Referenced: %ld kB", &kb) == 1) {
            all += kb;
            if (strchr(perms, 'x'))
                code += kb;
        }
    }
    fclose(sm);
    stop_forwarding(&f);
    printf("%ld\t%ld\n", code, all);
    return 0;
}

static volatile sig_atomic_t term;
static void on_term(int sig) {
    (void)sig;
    term = 1;
}

static int mode_orphans(int argc, char **argv) {
    if (argc < 3)
        return 64;
    int n = atoi(argv[0]);
    prctl(PR_SET_NAME, "bench-orphans");
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0)
        die(argv[1]);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0)
            die("fork");
        if (p == 0) {
            pid_t q = fork();
            if (q == 0) {
                prctl(PR_SET_NAME, "bench-orphan");
                char c;
                while (read(fd, &c, 1) > 0) {
                }
                _exit(0);
            }
            _exit(q < 0 ? 1 : 0);
        }
        int st;
        waitpid(p, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "orphan %d not started\n", i);
            return 1;
        }
    }
    close(fd);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int r = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (r < 0)
        die(argv[2]);
    close(r);
    for (int i = 0; i < 600 && !term; i++)
        sleep_ns(100000000);
    return 0;
}

/* The host pids of the supervisor's children named bench-orphan. */
static int orphan_pids(pid_t sup, pid_t *out, int max, int want_zombie) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", sup, sup);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0, pid;
    while (n < max && fscanf(f, "%d", &pid) == 1) {
        char sp[64], buf[512];
        snprintf(sp, sizeof sp, "/proc/%d/stat", pid);
        int s = open(sp, O_RDONLY);
        if (s < 0)
            continue;
        ssize_t len = read(s, buf, sizeof buf - 1);
        close(s);
        if (len <= 0)
            continue;
        buf[len] = 0;
        char *name = strchr(buf, '(');
        char *end = strrchr(buf, ')');
        if (!name || !end)
            continue;
        if (strncmp(name + 1, "bench-orphan)", 13) != 0)
            continue;
        if (want_zombie && end[2] != 'Z')
            continue;
        out[n++] = pid;
    }
    fclose(f);
    return n;
}

/* Until every pid in `pids` is gone (reaped); ns since `t0`. */
static int64_t until_gone(pid_t *pids, int n, int64_t t0) {
    int i = 0;
    int64_t deadline = t0 + 60000000000LL;
    while (i < n) {
        if (kill(pids[i], 0) == -1 && errno == ESRCH) {
            i++;
            continue;
        }
        if (now_ns() > deadline)
            return -1;
        sleep_ns(50000);
    }
    return now_ns() - t0;
}

static int mode_reap(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[4], "--") != 0)
        return 64;
    int stopped = strcmp(argv[0], "stopped") == 0;
    int n = atoi(argv[1]);
    const char *fifo = argv[2], *ready = argv[3];
    unlink(fifo);
    unlink(ready);
    if (mkfifo(fifo, 0600) != 0)
        die("mkfifo");
    int wfd = open(fifo, O_RDWR | O_CLOEXEC);
    if (wfd < 0)
        die(fifo);
    pid_t top = spawn(argv + 5, 0);
    pid_t sup = first_child(top);
    struct stat sb;
    int64_t deadline = now_ns() + 120000000000LL;
    while (stat(ready, &sb) != 0) {
        if (now_ns() > deadline || waitpid(top, NULL, WNOHANG) == top) {
            fprintf(stderr, "the orphans never became ready\n");
            kill(top, SIGKILL);
            return 1;
        }
        sleep_ns(5000000);
    }
    pid_t *pids = calloc(n + 16, sizeof(pid_t));
    int got = orphan_pids(sup, pids, n + 16, 0);
    if (got != n) {
        fprintf(stderr, "expected %d orphans under the supervisor, found %d\n", n, got);
        kill(top, SIGKILL);
        return 1;
    }
    int64_t took;
    if (stopped) {
        kill(sup, SIGSTOP);
        char st[64];
        do {
            sleep_ns(1000000);
            status_field(sup, "State:", st, sizeof st);
        } while (st[0] != 'T');
        close(wfd);
        deadline = now_ns() + 60000000000LL;
        while ((got = orphan_pids(sup, pids, n + 16, 1)) != n) {
            if (now_ns() > deadline) {
                fprintf(stderr, "only %d of %d orphans became zombies\n", got, n);
                kill(sup, SIGCONT);
                kill(top, SIGKILL);
                return 1;
            }
            sleep_ns(10000000);
        }
        int64_t t0 = now_ns();
        kill(sup, SIGCONT);
        took = until_gone(pids, n, t0);
    } else {
        int64_t t0 = now_ns();
        close(wfd);
        took = until_gone(pids, n, t0);
    }
    kill(sup, SIGTERM);
    wait_exit(top, 10);
    unlink(fifo);
    unlink(ready);
    if (took < 0) {
        fprintf(stderr, "orphans left after 60 s\n");
        return 1;
    }
    printf("%lld\n", (long long)took);
    return 0;
}

static int mode_rss(int argc, char **argv) {
    if (argc < 1)
        return 64;
    pid_t top = spawn(argv, 0);
    pid_t sup = first_child(top);
    const char *d = getenv("RSS_DELAY_MS");
    long ms = d ? strtol(d, NULL, 10) : 500;
    sleep_ns((int64_t)(ms > 0 ? ms : 500) * 1000000);
    char v[64], a[64];
    status_field(sup, "VmRSS:", v, sizeof v);
    status_field(sup, "RssAnon:", a, sizeof a);
    printf("%ld\t%ld\n", strtol(v, NULL, 10), strtol(a, NULL, 10));
    kill(top, SIGKILL);
    wait_exit(top, 5);
    return v[0] ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s spawntime|sigchild|latency|touch|orphans|reap|rss ...\n", argv[0]);
        return 64;
    }
    const char *m = argv[1];
    argc -= 2;
    argv += 2;
    if (!strcmp(m, "spawntime"))
        return mode_spawntime(argc, argv);
    if (!strcmp(m, "sigchild"))
        return mode_sigchild(argc, argv);
    if (!strcmp(m, "latency"))
        return mode_latency(argc, argv);
    if (!strcmp(m, "touch"))
        return mode_touch(argc, argv);
    if (!strcmp(m, "orphans"))
        return mode_orphans(argc, argv);
    if (!strcmp(m, "reap"))
        return mode_reap(argc, argv);
    if (!strcmp(m, "rss"))
        return mode_rss(argc, argv);
    fprintf(stderr, "unknown mode %s\n", m);
    return 64;
}
