/* Curves drawn with gnuplot, written like checkpoints: into a new file beside the target,
 * checked (gnuplot's exit status, then a complete PNG: gnuplot exits 0 after a failed write),
 * then renamed over it; on any failure the previous file stays.
 *
 * No file name ever reaches gnuplot: it is started without a shell (posix_spawnp), reads its
 * script on stdin and draws on its stdout, which is the new file's descriptor. A name with
 * quotes, newlines, backslashes, `system(...)`, backticks or a leading '|' is never parsed as
 * gnuplot code or as a command, whatever its bytes. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "cli.h"

extern char **environ;

#define MAX_PNG ((off_t)256 << 20) /* a plot this large is not one of ours */

static int on_path(const char *prog) {
    const char *path = getenv("PATH");
    if (!path) path = "/usr/bin:/bin";
    char buf[1024];
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        snprintf(buf, sizeof buf, "%.*s/%s", (int)n, n ? p : ".", prog);
        if (access(buf, X_OK) == 0) return 1;
        p += n;
        if (*p == ':') ++p;
    }
    return 0;
}

int cli_gnuplot_ready(int cmd, const char *path) {
    if (on_path("gnuplot")) return 1;
    if (path)
        cli_warn(cmd, "gnuplot is not installed (Debian: gnuplot-nox): --plot %s will not be drawn",
                 path);
    return 0;
}

/* ---- checking the PNG --------------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Whether the n bytes are a complete PNG; *why says what is wrong when not. */
static int png_complete(const unsigned char *p, size_t n, const char **why) {
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n == 0) return *why = "the file is empty", 0;
    if (n < 8 || memcmp(p, signature, 8) != 0) return *why = "it is not a PNG", 0;
    for (size_t at = 8; at + 12 <= n;) {
        uint32_t len = be32(p + at);
        if (len > n - at - 12) return *why = "a chunk runs past the end of the file", 0;
        const unsigned char *type = p + at + 4;
        uLong crc = crc32(crc32(0L, Z_NULL, 0), type, (uInt)len + 4);
        if (crc != be32(type + 4 + len)) return *why = "a chunk's CRC does not match", 0;
        if (at == 8 && memcmp(type, "IHDR", 4) != 0) return *why = "it does not start with IHDR", 0;
        at += 12 + (size_t)len;
        if (memcmp(type, "IEND", 4) == 0)
            return at == n ? 1 : (*why = "there are bytes after its IEND chunk", 0);
    }
    *why = "it ends before its IEND chunk (cut short: a full disk?)";
    return 0;
}

/* The new file's bytes, checked as a PNG. */
static int check_png(int fd, const char **why) {
    struct stat sb;
    if (fstat(fd, &sb) != 0) return *why = strerror(errno), 0;
    if (sb.st_size > MAX_PNG) return *why = "it is larger than 256 MiB", 0;
    size_t n = (size_t)sb.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) return *why = "out of memory", 0;
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, buf + got, n - got, (off_t)got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    int ok = got == n ? png_complete(buf, n, why) : (*why = "it cannot be read back", 0);
    free(buf);
    return ok;
}

/* ---- running gnuplot ---------------------------------------------------------------------- */

/* Writes all of text to fd; 0, or -1 (a gnuplot that died early closes the pipe). */
static int write_all(int fd, const char *text) {
    for (size_t n = strlen(text), done = 0; done < n;) {
        ssize_t k = write(fd, text + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -1;
        done += (size_t)k;
    }
    return 0;
}

/* gnuplot with stdin from the script and stdout into out_fd; its wait status, or -1 with errno
 * when it could not start. */
static int run_gnuplot(const char *script, int out_fd) {
    int pipe_fd[2];
    if (pipe(pipe_fd) != 0) return -1;
    fcntl(pipe_fd[0], F_SETFD, FD_CLOEXEC); /* gnuplot gets it as stdin only */
    fcntl(pipe_fd[1], F_SETFD, FD_CLOEXEC); /* and must see the end of its script */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipe_fd[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    /* -d: no gnuplotrc or ~/.gnuplot, which could redirect the output elsewhere. */
    char *argv[] = {"gnuplot", "-d", NULL};
    pid_t pid;
    int err = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipe_fd[0]);
    if (err) {
        close(pipe_fd[1]);
        errno = err;
        return -1;
    }
    struct sigaction ignore, old;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &old);
    write_all(pipe_fd[1], "set terminal pngcairo size 1100,450 noenhanced font 'sans,10'\n");
    write_all(pipe_fd[1], script);
    write_all(pipe_fd[1], "\n");
    close(pipe_fd[1]);
    sigaction(SIGPIPE, &old, NULL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return status;
}

int cli_gnuplot(int cmd, const char *script, const char *path) {
    bp_file *a = bp_file_open(path, NULL);
    if (!a) return cli_lib_fail(cmd, "--plot");
    int fd = fileno(bp_file_stream(a));
    fflush(NULL);
    int status = run_gnuplot(script, fd);
    const char *why = NULL;
    char detail[96] = "";
    if (status == -1)
        snprintf(detail, sizeof detail, "gnuplot could not start: %s", strerror(errno));
    else if (WIFSIGNALED(status))
        snprintf(detail, sizeof detail, "gnuplot was killed by signal %d", WTERMSIG(status));
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        snprintf(detail, sizeof detail, "gnuplot failed (exit status %d)", WEXITSTATUS(status));
    else if (!check_png(fd, &why))
        snprintf(detail, sizeof detail, "gnuplot wrote no complete PNG: %s", why);
    if (detail[0]) {
        bp_file_abort(a);
        return cli_fail(cmd, "--plot: %s; %s is unchanged", detail, path);
    }
    if (bp_file_commit(a) != BP_OK) return cli_lib_fail(cmd, "--plot");
    fprintf(stderr, "plot written to %s\n", path);
    return 0;
}

/* ---- the training curves ------------------------------------------------------------------ */

int cli_plot_history(int cmd, const cli_history *h, const char *path, int accuracy) {
    if (h->n == 0 || !on_path("gnuplot")) return 0; /* said at the start */
    char *s = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&s, &size);
    if (!f) return cli_fail(cmd, "out of memory");
    int has_val = 0;
    fprintf(f, "set datafile missing '?'\n$d << EOD\n");
    for (int i = 0; i < h->n; ++i) {
        const cli_epoch_row *r = &h->rows[i];
        has_val |= r->has_val;
        double m = accuracy ? 100.0 * r->val_metric : r->val_metric;
        if (r->has_val)
            fprintf(f, "%d %.6g %.6g %.6g\n", r->epoch, r->train_loss, r->val_loss, m);
        else
            fprintf(f, "%d %.6g ? ?\n", r->epoch, r->train_loss);
    }
    fprintf(f,
            "EOD\nset grid\nset xlabel 'epoch'\nset key top right\n%s%sset title 'loss'\nplot $d "
            "using 1:2 with linespoints title 'train'",
            h->n <= 20 ? "set xtics 1\n" : "", has_val ? "set multiplot layout 1,2\n" : "");
    if (has_val)
        fprintf(f,
                ", $d using 1:3 with linespoints title 'validation'\n"
                "set title 'validation %s'\nplot $d using 1:4 with linespoints notitle\n"
                "unset multiplot\n",
                accuracy ? "accuracy (%)" : "MSE");
    fclose(f);
    int rc = cli_gnuplot(cmd, s, path);
    free(s);
    return rc;
}
